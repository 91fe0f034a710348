//! Reading a sealed file: by offset ([`SealedFile`], for restore and the
//! object store's ranged reads) or front to back ([`SealedReader`], for a
//! stream).

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ring::aead::{Aad, LessSafeKey};

use super::header::{SEALED_HEADER_LEN, SealedContent, SealedHeader, TAG_LEN};
use super::keys::ChainKeys;
use super::nonce;
use crate::error::{ArchiveError, Result};
use crate::v2::{ReadAt, fill_at};

thread_local! {
    /// The ciphertext buffer of [`SealedFile`] reads on this thread.
    static SCRATCH: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

fn sealed_err(path: &Path, offset: u64, detail: impl Into<String>) -> ArchiveError {
    ArchiveError::Sealed {
        path: path.to_owned(),
        offset,
        detail: detail.into(),
    }
}

fn to_io(e: ArchiveError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Checks that a header is the one the caller expects: the content, and
/// the generation when the caller knows it (from the file's name).
fn check_expected(
    header: &SealedHeader,
    keys: &ChainKeys,
    content: SealedContent,
    generation: Option<u64>,
    path: &Path,
) -> Result<()> {
    keys.check(header, path)?;
    if header.content != content {
        return Err(sealed_err(
            path,
            12,
            format!(
                "holds {}, not {} (a file put in another's place)",
                header.content.name(),
                content.name()
            ),
        ));
    }
    if let Some(g) = generation
        && header.generation != g
    {
        return Err(sealed_err(
            path,
            64,
            format!(
                "holds generation {} of its chain, not generation {g} (a generation put in another's place)",
                header.generation
            ),
        ));
    }
    Ok(())
}

impl SealedHeader {
    /// Reads and checks the header of a file read by offset: `Ok(None)`
    /// for a file that does not start with the sealed magic (a plain
    /// file). Tells a reader which chain, and so which keys, a file needs.
    pub fn read_at<R: ReadAt + ?Sized>(inner: &R, path: &Path) -> Result<Option<Self>> {
        read_header_at(inner, path)
    }
}

/// Reads the header of a file read by offset, if it is a sealed file:
/// `Ok(None)` for a file that does not start with the sealed magic.
fn read_header_at<R: ReadAt + ?Sized>(inner: &R, path: &Path) -> Result<Option<SealedHeader>> {
    let io_err = |source| ArchiveError::FileIo {
        path: path.to_owned(),
        op: "read",
        source,
    };
    let len = inner.size().map_err(io_err)?;
    let mut head = vec![0u8; SEALED_HEADER_LEN.min(usize::try_from(len).unwrap_or(usize::MAX))];
    fill_at(inner, &mut head, 0).map_err(io_err)?;
    if !super::is_sealed(&head) {
        return Ok(None);
    }
    SealedHeader::parse(&head, path).map(Some)
}

/// A sealed file read by offset: implements [`ReadAt`] over the plaintext,
/// so that [`DiffFile`](crate::DiffFile) and [`DigestFile`](crate::DigestFile)
/// read it as they read a plain file. Each read decrypts and authenticates
/// the segments it covers; the last one decrypted is kept for the next read.
/// Damage, a moved segment or a cut is an [`io::Error`] of kind
/// `InvalidData` wrapping the [`ArchiveError`] that names the file and offset.
pub struct SealedFile<R> {
    inner: R,
    path: PathBuf,
    header: SealedHeader,
    aad: [u8; SEALED_HEADER_LEN],
    key: LessSafeKey,
    segment_size: u64,
    segments: u64,
    plain_len: u64,
    last: Mutex<Option<(u64, Vec<u8>)>>,
}

impl<R: ReadAt> SealedFile<R> {
    /// Opens a sealed file of `keys`' chain expected to hold `content` of
    /// `generation` (when known). Checks the header, that the file is of
    /// this chain and key, what it holds, and authenticates its last
    /// segment, so that a file cut short is refused here.
    pub fn open(
        inner: R,
        keys: &ChainKeys,
        content: SealedContent,
        generation: Option<u64>,
        path: impl Into<PathBuf>,
    ) -> Result<Self> {
        let path = path.into();
        let Some(header) = read_header_at(&inner, &path)? else {
            return Err(sealed_err(
                &path,
                0,
                "is not encrypted, but its chain is (a plain file put in an encrypted chain's place)",
            ));
        };
        check_expected(&header, keys, content, generation, &path)?;
        let len = inner.size().map_err(|source| ArchiveError::FileIo {
            path: path.clone(),
            op: "stat",
            source,
        })?;
        let segment_size = u64::from(header.segment_size);
        let stride = segment_size + TAG_LEN as u64;
        let body = len - SEALED_HEADER_LEN as u64;
        if body < TAG_LEN as u64 {
            return Err(sealed_err(
                &path,
                len,
                "cut short: no final segment after the header",
            ));
        }
        let segments = body.div_ceil(stride);
        let last_len = body - (segments - 1) * stride;
        if last_len < TAG_LEN as u64 || (segments > 1 && last_len == TAG_LEN as u64) {
            return Err(sealed_err(
                &path,
                len,
                format!(
                    "cut short: the file ends {last_len} bytes into segment {}",
                    segments - 1
                ),
            ));
        }
        let plain_len = (segments - 1) * segment_size + (last_len - TAG_LEN as u64);
        let file = SealedFile {
            key: keys.file_key(&header),
            aad: header.encode(),
            inner,
            path,
            header,
            segment_size,
            segments,
            plain_len,
            last: Mutex::new(None),
        };
        // Authenticate the last segment now, so that a cut is refused here.
        let mut probe = [0u8; 1];
        file.read_plain(&mut probe, plain_len.saturating_sub(1), true)?;
        Ok(file)
    }

    /// The file's header.
    pub fn header(&self) -> &SealedHeader {
        &self.header
    }

    /// The plaintext's length.
    pub fn plain_len(&self) -> u64 {
        self.plain_len
    }

    fn cipher_len(&self, segment: u64) -> u64 {
        if segment + 1 == self.segments {
            self.plain_len - segment * self.segment_size + TAG_LEN as u64
        } else {
            self.segment_size + TAG_LEN as u64
        }
    }

    fn segment_offset(&self, segment: u64) -> u64 {
        SEALED_HEADER_LEN as u64 + segment * (self.segment_size + TAG_LEN as u64)
    }

    /// Decrypts segments `first..` held in `cipher` (read from their
    /// offset) in place; the plaintext of segment `first + i` is at
    /// `i * stride`.
    fn open_segments(&self, first: u64, cipher: &mut [u8]) -> Result<()> {
        let stride = (self.segment_size + TAG_LEN as u64) as usize;
        for (segment, chunk) in (first..).zip(cipher.chunks_mut(stride)) {
            let last = segment + 1 == self.segments;
            // A failed open may overwrite its input: keep the last
            // segment's ciphertext to tell a cut from damage.
            let mut copy = if last { chunk.to_vec() } else { Vec::new() };
            if self
                .key
                .open_in_place(nonce(segment, last), Aad::from(&self.aad[..]), chunk)
                .is_err()
            {
                let cut = last
                    && self
                        .key
                        .open_in_place(nonce(segment, false), Aad::from(&self.aad[..]), &mut copy)
                        .is_ok();
                let err = if cut {
                    sealed_err(
                        &self.path,
                        self.segment_offset(segment),
                        format!(
                            "cut short: segment {segment} is not the file's last, and the file ends after it"
                        ),
                    )
                } else {
                    ArchiveError::Tampered {
                        path: self.path.clone(),
                        segment,
                        offset: self.segment_offset(segment),
                    }
                };
                return Err(err);
            }
        }
        Ok(())
    }
}

impl<R: ReadAt> SealedFile<R> {
    /// Reads plaintext at `offset`; `always` reads the last segment of an
    /// empty file too (to authenticate it).
    fn read_plain(&self, buf: &mut [u8], offset: u64, always: bool) -> Result<usize> {
        if self.plain_len == 0 && always {
            let mut cipher = vec![0u8; TAG_LEN];
            self.read_cipher(&mut cipher, self.segment_offset(0))?;
            self.open_segments(0, &mut cipher)?;
            return Ok(0);
        }
        if offset >= self.plain_len || buf.is_empty() {
            return Ok(0);
        }
        let end = (offset + buf.len() as u64).min(self.plain_len);
        let first = offset / self.segment_size;
        let last = (end - 1) / self.segment_size;
        let n = (end - offset) as usize;
        if first == last
            && let Ok(cached) = self.last.lock()
            && let Some((index, plain)) = cached.as_ref()
            && *index == first
        {
            let at = (offset - first * self.segment_size) as usize;
            buf[..n].copy_from_slice(&plain[at..at + n]);
            return Ok(n);
        }
        // One segment at a time through a buffer per thread, kept between
        // reads: it stays in the core's cache, where a buffer of the whole
        // read would not, and costs no page faults.
        SCRATCH.with(|scratch| {
            let mut cipher = scratch.take();
            let done = self.fill_from(&mut cipher, buf, offset, end, first, last);
            scratch.replace(cipher);
            done
        })?;
        Ok(n)
    }

    /// Reads and opens segments `first..=last` one by one in `cipher`,
    /// copying plaintext `[offset, end)` to `buf`; keeps the last
    /// segment's plaintext for the next read.
    fn fill_from(
        &self,
        cipher: &mut Vec<u8>,
        buf: &mut [u8],
        offset: u64,
        end: u64,
        first: u64,
        last: u64,
    ) -> Result<()> {
        let mut out = 0usize;
        for segment in first..=last {
            let len = self.cipher_len(segment) as usize;
            cipher.clear();
            cipher.resize(len, 0);
            self.read_cipher(cipher, self.segment_offset(segment))?;
            self.open_segments(segment, cipher)?;
            let seg_start = segment * self.segment_size;
            let from = offset.max(seg_start);
            let to = end.min(seg_start + (len - TAG_LEN) as u64);
            let take = (to - from) as usize;
            let at = (from - seg_start) as usize;
            buf[out..out + take].copy_from_slice(&cipher[at..at + take]);
            out += take;
        }
        if let Ok(mut cached) = self.last.lock() {
            let plain_end = self.cipher_len(last) as usize - TAG_LEN;
            let mut keep = cached.take().map(|(_, v)| v).unwrap_or_default();
            keep.clear();
            keep.extend_from_slice(&cipher[..plain_end]);
            *cached = Some((last, keep));
        }
        Ok(())
    }

    fn read_cipher(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        fill_at(&self.inner, buf, offset).map_err(|source| ArchiveError::FileIo {
            path: self.path.clone(),
            op: "read",
            source,
        })
    }
}

impl<R: ReadAt> ReadAt for SealedFile<R> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.read_plain(buf, offset, false).map_err(to_io)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.plain_len)
    }
}

/// A sealed file read front to back, from a pipe or a download: implements
/// [`Read`] over the plaintext. It needs one byte of look-ahead to know
/// which segment is the last; an input that ends without a final segment
/// is an error, as is any damage.
pub struct SealedReader<R> {
    inner: R,
    path: PathBuf,
    aad: [u8; SEALED_HEADER_LEN],
    key: LessSafeKey,
    segment_size: usize,
    buf: Vec<u8>,
    pos: usize,
    plain_end: usize,
    segment: u64,
    offset: u64,
    pending: Option<u8>,
    done: bool,
}

impl<R: Read> SealedReader<R> {
    /// Reads the header at the start of `inner`: `Ok(None)` with the bytes
    /// read when it is not a sealed file (the caller reads it as plain).
    pub fn read_header(inner: &mut R, path: &Path) -> Result<(Option<SealedHeader>, Vec<u8>)> {
        let mut head = vec![0u8; SEALED_HEADER_LEN];
        let got = read_full(inner, &mut head).map_err(|source| ArchiveError::FileIo {
            path: path.to_owned(),
            op: "read",
            source,
        })?;
        head.truncate(got);
        if !super::is_sealed(&head) {
            return Ok((None, head));
        }
        let header = SealedHeader::parse(&head, path)?;
        Ok((Some(header), head))
    }

    /// Reads the rest of a sealed file whose header was read by
    /// [`read_header`](Self::read_header), checking it as
    /// [`SealedFile::open`] does.
    pub fn new(
        inner: R,
        header: &SealedHeader,
        keys: &ChainKeys,
        content: SealedContent,
        generation: Option<u64>,
        path: impl Into<PathBuf>,
    ) -> Result<Self> {
        let path = path.into();
        check_expected(header, keys, content, generation, &path)?;
        let segment_size = header.segment_size as usize;
        Ok(SealedReader {
            inner,
            path,
            aad: header.encode(),
            key: keys.file_key(header),
            segment_size,
            buf: Vec::with_capacity(segment_size + TAG_LEN),
            pos: 0,
            plain_end: 0,
            segment: 0,
            offset: SEALED_HEADER_LEN as u64,
            pending: None,
            done: false,
        })
    }

    fn fill(&mut self) -> io::Result<()> {
        let stride = self.segment_size + TAG_LEN;
        self.buf.clear();
        self.buf.resize(stride, 0);
        let mut got = 0;
        if let Some(b) = self.pending.take() {
            self.buf[0] = b;
            got = 1;
        }
        got += read_full(&mut self.inner, &mut self.buf[got..])?;
        let mut last = got < stride;
        if !last {
            let mut one = [0u8; 1];
            if read_full(&mut self.inner, &mut one)? == 0 {
                last = true;
            } else {
                self.pending = Some(one[0]);
            }
        }
        self.buf.truncate(got);
        let at = self.offset;
        // A failed open may overwrite its input: keep the last segment's
        // ciphertext to tell a cut from damage.
        let mut copy = if last { self.buf.clone() } else { Vec::new() };
        if got < TAG_LEN || (last && got == TAG_LEN && self.segment > 0) {
            return Err(to_io(sealed_err(
                &self.path,
                at + got as u64,
                format!(
                    "cut short: the input ends {got} bytes into segment {}",
                    self.segment
                ),
            )));
        }
        if self
            .key
            .open_in_place(
                nonce(self.segment, last),
                Aad::from(&self.aad[..]),
                &mut self.buf,
            )
            .is_err()
        {
            let cut = last
                && self
                    .key
                    .open_in_place(
                        nonce(self.segment, false),
                        Aad::from(&self.aad[..]),
                        &mut copy,
                    )
                    .is_ok();
            return Err(to_io(if cut {
                sealed_err(
                    &self.path,
                    at,
                    format!(
                        "cut short: segment {} is not the last, and the input ends after it",
                        self.segment
                    ),
                )
            } else {
                ArchiveError::Tampered {
                    path: self.path.clone(),
                    segment: self.segment,
                    offset: at,
                }
            }));
        }
        self.pos = 0;
        self.plain_end = got - TAG_LEN;
        self.offset += got as u64;
        self.segment += 1;
        self.done = last;
        Ok(())
    }
}

impl<R: Read> Read for SealedReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.plain_end {
            if self.done || out.is_empty() {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = out.len().min(self.plain_end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn read_full<R: Read + ?Sized>(r: &mut R, mut buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while !buf.is_empty() {
        match r.read(buf) {
            Ok(0) => break,
            Ok(n) => {
                got += n;
                buf = &mut buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}
