//! The digest sidecar: one hash per block of the source.
//!
//! - Legacy (the original's `NAME.N.md5`): a u32 little-endian block size,
//!   then the 16-byte MD5 of every block.
//! - v2 (`NAME.N.digest`): a 64-byte checked header (magic, version,
//!   algorithm, block size, source size, generation), the hashes (16 bytes
//!   for MD5, 32 for BLAKE3), and a 56-byte trailer with the entry count,
//!   the source size and a BLAKE3 fingerprint of the whole digest, which
//!   the next generation's diff names as its parent.
//!
//! `FORMAT.md` beside the crate specifies every byte (§3.3, §5). Unlike a diff
//! stream's, the errors name the digest file: readers and writers are given
//! its path ([`ArchiveError::CorruptDigest`], [`ArchiveError::FileIo`]).

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::v2::{ReadAt, fill_at};
use crate::{
    ArchiveError, BlockHash, BlockSize, Fingerprint, HashAlgorithm, Limits, Result, UNKNOWN_SIZE,
    read_full,
};

/// The two digest formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DigestFormat {
    /// The original's: block size, then MD5s.
    Legacy,
    /// Checked header, hashes, fingerprint trailer.
    V2,
}

/// First 8 bytes of a v2 digest.
pub const DIGEST_MAGIC: [u8; 8] = *b"\x89BDG\r\n\x1a\n";
const V2_HEADER_LEN: usize = 64;
const V2_TRAILER_LEN: usize = 56;
const V2_END_MAGIC: [u8; 4] = *b"BDG\n";
const LEGACY_HEADER_LEN: usize = 4;
const FINGERPRINT_TAG: &[u8; 20] = b"blockdiff digest v2\0";

/// What a digest describes: everything its header holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestSpec {
    /// Legacy or v2.
    pub format: DigestFormat,
    /// The hash algorithm (always MD5 for legacy).
    pub algorithm: HashAlgorithm,
    /// The block size.
    pub block_size: BlockSize,
    /// The generation (0 in a legacy digest, which does not say).
    pub generation: u64,
    /// The source size if known when the header was written, else
    /// [`UNKNOWN_SIZE`] (a legacy digest never says).
    pub source_size: u64,
}

impl DigestSpec {
    /// A legacy MD5 digest of blocks of `block_size`.
    pub fn legacy(block_size: BlockSize) -> Self {
        DigestSpec {
            format: DigestFormat::Legacy,
            algorithm: HashAlgorithm::Md5,
            block_size,
            generation: 0,
            source_size: UNKNOWN_SIZE,
        }
    }

    fn header_len(&self) -> usize {
        match self.format {
            DigestFormat::Legacy => LEGACY_HEADER_LEN,
            DigestFormat::V2 => V2_HEADER_LEN,
        }
    }

    fn hash_len(&self) -> usize {
        self.algorithm.len()
    }

    fn encode_header(&self) -> Vec<u8> {
        match self.format {
            DigestFormat::Legacy => self.block_size.get().to_le_bytes().to_vec(),
            DigestFormat::V2 => {
                let mut b = vec![0u8; V2_HEADER_LEN];
                b[0..8].copy_from_slice(&DIGEST_MAGIC);
                b[8..10].copy_from_slice(&2u16.to_le_bytes());
                b[10..12].copy_from_slice(&(V2_HEADER_LEN as u16).to_le_bytes());
                b[12..16].copy_from_slice(&self.block_size.get().to_le_bytes());
                b[16..24].copy_from_slice(&self.source_size.to_le_bytes());
                b[24..32].copy_from_slice(&self.generation.to_le_bytes());
                b[32] = self.algorithm.id();
                b[33] = self.algorithm.len() as u8;
                let crc = crc32fast::hash(&b[..60]);
                b[60..64].copy_from_slice(&crc.to_le_bytes());
                b
            }
        }
    }

    fn fingerprint_hasher(&self) -> blake3::Hasher {
        let mut h = blake3::Hasher::new();
        h.update(FINGERPRINT_TAG);
        h.update(&self.block_size.get().to_le_bytes());
        h.update(&[self.algorithm.id()]);
        h.update(&self.generation.to_le_bytes());
        h
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn corrupt(path: &Path, offset: u64, detail: impl Into<String>) -> ArchiveError {
    ArchiveError::CorruptDigest {
        path: path.to_owned(),
        offset,
        detail: detail.into(),
    }
}

/// Attaches the digest's path and an operation to an I/O error.
trait IoContext<T> {
    fn ctx(self, path: impl Into<PathBuf>, op: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>, op: &'static str) -> Result<T> {
        self.map_err(|source| ArchiveError::FileIo {
            path: path.into(),
            op,
            source,
        })
    }
}

/// A writer used against the format's rules.
fn invalid_write(path: &Path, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::InvalidDigestWrite {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Parses a digest's header from its first bytes (`head` holds what the
/// file has of its first 64 bytes).
fn parse_header(path: &Path, head: &[u8]) -> Result<DigestSpec> {
    if head.len() >= 8 && head[..8] == DIGEST_MAGIC {
        if head.len() < V2_HEADER_LEN {
            return Err(corrupt(
                path,
                0,
                format!("file is {} bytes, too short for the v2 header", head.len()),
            ));
        }
        let h = &head[..V2_HEADER_LEN];
        let stored = u32_at(h, 60);
        let computed = crc32fast::hash(&h[..60]);
        if stored != computed {
            return Err(corrupt(
                path,
                0,
                format!("header CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"),
            ));
        }
        let version = u16::from_le_bytes([h[8], h[9]]);
        if version != 2 || u16::from_le_bytes([h[10], h[11]]) != V2_HEADER_LEN as u16 {
            return Err(corrupt(
                path,
                8,
                format!("digest version {version} is not supported"),
            ));
        }
        if h[34..60].iter().any(|&x| x != 0) {
            return Err(corrupt(path, 34, "reserved header bytes are not zero"));
        }
        let raw_bs = u32_at(h, 12);
        Limits::default()
            .check_block_size(u64::from(raw_bs), 12)
            .map_err(|e| corrupt(path, 12, e.to_string()))?;
        let algorithm = HashAlgorithm::from_id(h[32])
            .ok_or_else(|| corrupt(path, 32, format!("unknown hash algorithm {}", h[32])))?;
        if usize::from(h[33]) != algorithm.len() {
            return Err(corrupt(
                path,
                33,
                format!("hash length {} does not fit {algorithm}", h[33]),
            ));
        }
        return Ok(DigestSpec {
            format: DigestFormat::V2,
            algorithm,
            block_size: BlockSize::new(raw_bs)?,
            generation: u64_at(h, 24),
            source_size: u64_at(h, 16),
        });
    }
    if head.len() < LEGACY_HEADER_LEN {
        return Err(corrupt(
            path,
            0,
            format!(
                "file is {} bytes, too short for the 4-byte block size",
                head.len()
            ),
        ));
    }
    let raw = u32_at(head, 0);
    Limits::default()
        .check_block_size(u64::from(raw), 0)
        .map_err(|e| corrupt(path, 0, e.to_string()))?;
    Ok(DigestSpec::legacy(BlockSize::new(raw)?))
}

/// The v2 trailer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trailer {
    entries: u64,
    source_size: u64,
    fingerprint: Fingerprint,
}

fn parse_trailer(path: &Path, t: &[u8], offset: u64, spec: &DigestSpec) -> Result<Trailer> {
    if t[52..56] != V2_END_MAGIC {
        return Err(corrupt(
            path,
            offset,
            "no end marker: the digest is truncated or was never finished",
        ));
    }
    let stored = u32_at(t, 48);
    let computed = crc32fast::hash(&t[..48]);
    if stored != computed {
        return Err(corrupt(
            path,
            offset,
            format!("trailer CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"),
        ));
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(&t[16..48]);
    let trailer = Trailer {
        entries: u64_at(t, 0),
        source_size: u64_at(t, 8),
        fingerprint,
    };
    if spec.block_size.blocks_in(trailer.source_size) != trailer.entries {
        return Err(corrupt(
            path,
            offset,
            format!(
                "{} entries do not fit a source of {} bytes",
                trailer.entries, trailer.source_size
            ),
        ));
    }
    if spec.source_size != UNKNOWN_SIZE && spec.source_size != trailer.source_size {
        return Err(corrupt(
            path,
            offset + 8,
            format!(
                "source size {} differs from the header's {}",
                trailer.source_size, spec.source_size
            ),
        ));
    }
    Ok(trailer)
}

/// Checks that a digest file's length fits its header (and trailer), and
/// returns the number of entries and the trailer of a v2 digest.
fn check_file(
    path: &Path,
    file: &(dyn ReadAt + Send + Sync),
    spec: &DigestSpec,
    len: u64,
) -> Result<(u64, Option<Trailer>)> {
    let h = spec.hash_len() as u64;
    let head = spec.header_len() as u64;
    match spec.format {
        DigestFormat::Legacy => {
            let rem = len.saturating_sub(head) % h;
            if rem != 0 {
                return Err(corrupt(
                    path,
                    len - rem,
                    format!(
                        "length {len} is not 4 + 16·n: the last entry is cut after {rem} of 16 bytes (truncated file?)"
                    ),
                ));
            }
            // Saturating: a file that grew between its stat and its first
            // read may be shorter than the header it was parsed from.
            Ok((len.saturating_sub(head) / h, None))
        }
        DigestFormat::V2 => {
            if len < head + V2_TRAILER_LEN as u64 {
                return Err(corrupt(
                    path,
                    len,
                    "no trailer: the digest is truncated or was never finished",
                ));
            }
            let mut t = [0u8; V2_TRAILER_LEN];
            let at = len - V2_TRAILER_LEN as u64;
            fill_at(file, &mut t, at).ctx(path, "read digest")?;
            let trailer = parse_trailer(path, &t, at, spec)?;
            if trailer
                .entries
                .checked_mul(h)
                .and_then(|b| b.checked_add(head + V2_TRAILER_LEN as u64))
                != Some(len)
            {
                return Err(corrupt(
                    path,
                    at,
                    format!(
                        "the trailer lists {} entries but the file holds {} bytes of them (truncated file?)",
                        trailer.entries,
                        len - head - V2_TRAILER_LEN as u64
                    ),
                ));
            }
            Ok((trailer.entries, Some(trailer)))
        }
    }
}

/// Reads a digest sidecar (legacy or v2) front to back, as a dump compares
/// against the previous generation. A v2 digest's fingerprint is checked
/// when its end is reached ([`finish`](Self::finish) reads to it).
///
/// ```
/// use archive_format::{BlockHash, BlockSize, DigestReader, DigestSpec, DigestWriter};
///
/// // The MD5 of the one block, "abcd" (hashing is the caller's: in
/// // blockdiff-core, `hash_block`). MD5 fills the first 16 bytes.
/// let mut md5: BlockHash = [0; 32];
/// md5[..16].copy_from_slice(&[
///     0xe2, 0xfc, 0x71, 0x4c, 0x47, 0x27, 0xee, 0x93,
///     0x95, 0xf3, 0x24, 0xcd, 0x2e, 0x7f, 0x33, 0x1f,
/// ]);
///
/// let mut w = DigestWriter::new(Vec::new(), "example.md5");
/// w.begin(&DigestSpec::legacy(BlockSize::new(4)?))?;
/// w.push(&md5)?;
/// w.end(4)?;
/// let bytes = w.into_inner();
/// assert_eq!(bytes.len(), 4 + 16);
///
/// let mut r = DigestReader::new(&bytes[..], "example.md5")?;
/// assert_eq!(r.block_size().get(), 4);
/// assert_eq!(r.next_entry()?, Some(md5));
/// assert_eq!(r.next_entry()?, None);
/// # Ok::<(), archive_format::ArchiveError>(())
/// ```
#[derive(Debug)]
pub struct DigestReader<R> {
    inner: R,
    path: PathBuf,
    spec: DigestSpec,
    buf: Vec<u8>,
    start: usize,
    /// Stream offset of `buf[start]`.
    offset: u64,
    next: u64,
    entries: Option<u64>,
    trailer: Option<Trailer>,
    hasher: blake3::Hasher,
    done: bool,
}

impl DigestReader<BufReader<File>> {
    /// Opens a digest file and checks its header, its length and (v2) its
    /// trailer.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).ctx(path, "open digest")?;
        let meta = file.metadata().ctx(path, "stat digest")?;
        let mut head = [0u8; V2_HEADER_LEN];
        let got = FileExt::read_at(&file, &mut head, 0).ctx(path, "read digest")?;
        let got = if got < head.len() && meta.is_file() {
            let n = (meta.len() as usize).min(head.len());
            file.read_exact_at(&mut head[..n], 0)
                .ctx(path, "read digest")?;
            n
        } else {
            got
        };
        let spec = parse_header(path, &head[..got])?;
        let (entries, trailer) = if meta.is_file() {
            let (n, t) = check_file(path, &file, &spec, meta.len())?;
            (Some(n), t)
        } else {
            (None, None)
        };
        let mut r = DigestReader::new(BufReader::with_capacity(256 << 10, file), path)?;
        r.entries = entries;
        r.trailer = trailer;
        Ok(r)
    }
}

impl<R: Read> DigestReader<R> {
    /// Reads the header from a stream; `path` names it in errors.
    pub fn new(mut inner: R, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let mut buf = vec![0u8; V2_HEADER_LEN];
        let got = read_full(&mut inner, &mut buf).ctx(&path, "read digest")?;
        buf.truncate(got);
        let spec = parse_header(&path, &buf)?;
        let start = spec.header_len();
        Ok(DigestReader {
            inner,
            hasher: spec.fingerprint_hasher(),
            path,
            spec,
            buf,
            start,
            offset: start as u64,
            next: 0,
            entries: None,
            trailer: None,
            done: false,
        })
    }

    /// The block size the digest was made with.
    pub fn block_size(&self) -> BlockSize {
        self.spec.block_size
    }

    /// The hash algorithm.
    pub fn algorithm(&self) -> HashAlgorithm {
        self.spec.algorithm
    }

    /// What the header says.
    pub fn spec(&self) -> &DigestSpec {
        &self.spec
    }

    /// The number of entries, when the digest is a file of known length.
    pub fn entries(&self) -> Option<u64> {
        self.entries
    }

    /// The v2 fingerprint stored in the trailer, when opened from a file
    /// (checked against the content by [`finish`](Self::finish)).
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.trailer.map(|t| t.fingerprint)
    }

    /// The source size a v2 trailer records.
    pub fn source_size(&self) -> Option<u64> {
        self.trailer.map(|t| t.source_size)
    }

    /// The file the digest is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes `n` bytes available from `start`, unless the stream ends first.
    fn fill(&mut self, n: usize) -> Result<usize> {
        if self.start > (64 << 10) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        while self.buf.len() - self.start < n {
            let have = self.buf.len();
            let want = (n - (have - self.start)).max(64 << 10);
            self.buf.resize(have + want, 0);
            let got =
                read_full(&mut self.inner, &mut self.buf[have..]).ctx(&self.path, "read digest")?;
            self.buf.truncate(have + got);
            if got < want {
                break;
            }
        }
        Ok(self.buf.len() - self.start)
    }

    /// Reads the next entry, or `None` at the end. An entry cut short, or
    /// (v2) a trailer that does not match the content, is an error naming
    /// its offset.
    pub fn next_entry(&mut self) -> Result<Option<BlockHash>> {
        if self.done {
            return Ok(None);
        }
        let h = self.spec.hash_len();
        let tail = match self.spec.format {
            DigestFormat::Legacy => 0,
            DigestFormat::V2 => V2_TRAILER_LEN,
        };
        let avail = self.fill(h + tail)?;
        if avail >= h + tail {
            let mut out = [0u8; 32];
            out[..h].copy_from_slice(&self.buf[self.start..self.start + h]);
            self.hasher.update(&out[..h]);
            self.start += h;
            self.offset += h as u64;
            self.next += 1;
            return Ok(Some(out));
        }
        if avail == tail {
            self.done = true;
            if self.spec.format == DigestFormat::V2 {
                self.check_trailer()?;
            }
            return Ok(None);
        }
        Err(corrupt(
            &self.path,
            self.offset,
            match self.spec.format {
                DigestFormat::Legacy => format!(
                    "entry {} is cut after {avail} of {h} bytes (truncated file?)",
                    self.next
                ),
                DigestFormat::V2 => format!(
                    "entry {} or the trailer is cut short (truncated file?)",
                    self.next
                ),
            },
        ))
    }

    fn check_trailer(&mut self) -> Result<()> {
        let t = self.buf[self.start..self.start + V2_TRAILER_LEN].to_vec();
        let trailer = parse_trailer(&self.path, &t, self.offset, &self.spec)?;
        if trailer.entries != self.next {
            return Err(corrupt(
                &self.path,
                self.offset,
                format!(
                    "the trailer lists {} entries but {} precede it",
                    trailer.entries, self.next
                ),
            ));
        }
        let mut hasher = self.hasher.clone();
        hasher.update(&trailer.source_size.to_le_bytes());
        if *hasher.finalize().as_bytes() != trailer.fingerprint {
            return Err(corrupt(
                &self.path,
                self.offset + 16,
                "fingerprint does not match the entries: the digest is damaged",
            ));
        }
        if self.trailer.is_some_and(|known| known != trailer) {
            return Err(corrupt(
                &self.path,
                self.offset,
                "the trailer changed while it was read",
            ));
        }
        self.trailer = Some(trailer);
        Ok(())
    }

    /// Reads the remaining entries to the end, checking the length and (v2)
    /// the fingerprint.
    pub fn finish(&mut self) -> Result<()> {
        while self.next_entry()?.is_some() {}
        Ok(())
    }
}

/// Writes a digest sidecar. [`begin`](Self::begin) writes the header,
/// [`push`](Self::push) one hash per block, [`end`](Self::end) the trailer
/// (v2) and flushes, returning the fingerprint.
#[derive(Debug)]
pub struct DigestWriter<W: Write> {
    inner: W,
    path: PathBuf,
    spec: Option<DigestSpec>,
    hasher: Option<blake3::Hasher>,
    entries: u64,
}

impl<W: Write> DigestWriter<W> {
    /// A writer to `inner`; `path` names it in errors. Nothing is written
    /// until [`begin`](Self::begin).
    pub fn new(inner: W, path: impl Into<PathBuf>) -> Self {
        DigestWriter {
            inner,
            path: path.into(),
            spec: None,
            hasher: None,
            entries: 0,
        }
    }

    /// Writes the header. Called once, before the first entry.
    pub fn begin(&mut self, spec: &DigestSpec) -> Result<()> {
        if self.spec.is_some() {
            return Err(invalid_write(&self.path, "digest header written twice"));
        }
        if spec.format == DigestFormat::Legacy && spec.algorithm != HashAlgorithm::Md5 {
            return Err(ArchiveError::InvalidValue {
                detail: "a legacy digest holds MD5 hashes only".into(),
            });
        }
        self.spec = Some(*spec);
        self.hasher = (spec.format == DigestFormat::V2).then(|| spec.fingerprint_hasher());
        self.inner
            .write_all(&spec.encode_header())
            .ctx(&self.path, "write digest")
    }

    /// Appends one block's hash.
    pub fn push(&mut self, hash: &BlockHash) -> Result<()> {
        let Some(spec) = &self.spec else {
            return Err(invalid_write(&self.path, "digest entry before its header"));
        };
        let bytes = &hash[..spec.hash_len()];
        if let Some(h) = self.hasher.as_mut() {
            h.update(bytes);
        }
        self.entries += 1;
        self.inner.write_all(bytes).ctx(&self.path, "write digest")
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Writes the trailer of a v2 digest for a source of `source_size`
    /// bytes, flushes, and returns the fingerprint (`None` for legacy).
    pub fn end(&mut self, source_size: u64) -> Result<Option<Fingerprint>> {
        let Some(spec) = self.spec else {
            return Err(invalid_write(&self.path, "digest ended before its header"));
        };
        if spec.block_size.blocks_in(source_size) != self.entries {
            return Err(invalid_write(
                &self.path,
                format!(
                    "{} entries do not fit a source of {source_size} bytes",
                    self.entries
                ),
            ));
        }
        let fingerprint = match self.hasher.take() {
            Some(mut h) => {
                h.update(&source_size.to_le_bytes());
                let fp = *h.finalize().as_bytes();
                let mut t = [0u8; V2_TRAILER_LEN];
                t[0..8].copy_from_slice(&self.entries.to_le_bytes());
                t[8..16].copy_from_slice(&source_size.to_le_bytes());
                t[16..48].copy_from_slice(&fp);
                let crc = crc32fast::hash(&t[..48]);
                t[48..52].copy_from_slice(&crc.to_le_bytes());
                t[52..56].copy_from_slice(&V2_END_MAGIC);
                self.inner.write_all(&t).ctx(&self.path, "write digest")?;
                Some(fp)
            }
            None => None,
        };
        self.inner.flush().ctx(&self.path, "write digest")?;
        Ok(fingerprint)
    }

    /// Returns the underlying writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

/// Random access to a digest file (legacy or v2) by block index, as restore
/// checks blocks in the order the generations provide them.
///
/// It reads the file in windows of 4096 entries with positional reads, so
/// memory stays small at any source size.
pub struct DigestFile {
    file: Box<dyn ReadAt + Send + Sync>,
    path: PathBuf,
    spec: DigestSpec,
    entries: u64,
    trailer: Option<Trailer>,
    window_first: u64,
    window: Vec<u8>,
}

const WINDOW_ENTRIES: u64 = 4096;

impl DigestFile {
    /// Opens and checks a digest file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).ctx(path, "open digest")?;
        Self::from_read_at(Box::new(file), path)
    }

    /// Opens and checks a digest read by offset from `file`: a sealed
    /// digest's plaintext ([`SealedFile`](crate::SealedFile)), or bytes in
    /// memory. `path` names it in errors.
    pub fn from_read_at(
        file: Box<dyn ReadAt + Send + Sync>,
        path: impl Into<PathBuf>,
    ) -> Result<Self> {
        let path = path.into();
        let len = file.size().ctx(&path, "stat digest")?;
        let mut head = vec![
            0u8;
            usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(V2_HEADER_LEN)
        ];
        fill_at(&*file, &mut head, 0).ctx(&path, "read digest")?;
        let spec = parse_header(&path, &head)?;
        let (entries, trailer) = check_file(&path, &*file, &spec, len)?;
        Ok(DigestFile {
            file,
            path,
            spec,
            entries,
            trailer,
            window_first: 0,
            window: Vec::new(),
        })
    }

    /// What the header says.
    pub fn spec(&self) -> &DigestSpec {
        &self.spec
    }

    /// The block size the digest was made with.
    pub fn block_size(&self) -> BlockSize {
        self.spec.block_size
    }

    /// How many blocks the digest lists.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// The v2 fingerprint from the trailer.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        self.trailer.map(|t| t.fingerprint)
    }

    /// The source size from a v2 trailer.
    pub fn source_size(&self) -> Option<u64> {
        self.trailer.map(|t| t.source_size)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hash of block `index`, or `None` beyond the last block.
    pub fn entry(&mut self, index: u64) -> Result<Option<BlockHash>> {
        if index >= self.entries {
            return Ok(None);
        }
        let h = self.spec.hash_len();
        let in_window = index >= self.window_first
            && (index - self.window_first) < (self.window.len() / h) as u64;
        if !in_window {
            let first = index - index % WINDOW_ENTRIES;
            let count = WINDOW_ENTRIES.min(self.entries - first);
            self.window.resize(count as usize * h, 0);
            let offset = self.spec.header_len() as u64 + first * h as u64;
            fill_at(&*self.file, &mut self.window, offset).ctx(&self.path, "read digest")?;
            self.window_first = first;
        }
        let at = (index - self.window_first) as usize * h;
        let mut out = [0u8; 32];
        out[..h].copy_from_slice(&self.window[at..at + h]);
        Ok(Some(out))
    }

    /// Reads the whole digest and checks its fingerprint (v2; a legacy
    /// digest has none, and this only reads it).
    pub fn verify(&self) -> Result<()> {
        let whole = ReadAtStream {
            file: &*self.file,
            pos: 0,
        };
        let mut r = DigestReader::new(BufReader::with_capacity(256 << 10, whole), &self.path)?;
        r.finish()
    }
}

impl DigestFile {
    /// The digest read front to back, as an incremental dump reads the
    /// previous one, with the length and trailer this file checked (so
    /// that its fingerprint is known before the end is reached).
    pub fn into_reader(self) -> Result<DigestReader<Box<dyn Read + Send>>> {
        let (entries, trailer, path) = (self.entries, self.trailer, self.path.clone());
        let mut r = DigestReader::new(self.into_raw(), path)?;
        r.entries = Some(entries);
        r.trailer = trailer;
        Ok(r)
    }

    /// The digest's bytes front to back (a sealed digest's plaintext), to
    /// copy it.
    pub fn into_raw(self) -> Box<dyn Read + Send> {
        Box::new(BufReader::with_capacity(
            256 << 10,
            ReadAtStream {
                file: self.file,
                pos: 0,
            },
        ))
    }
}

impl std::fmt::Debug for DigestFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DigestFile")
            .field("path", &self.path)
            .field("spec", &self.spec)
            .field("entries", &self.entries)
            .finish_non_exhaustive()
    }
}

/// A file read by offset, read front to back.
struct ReadAtStream<F> {
    file: F,
    pos: u64,
}

impl<F: ReadAt> Read for ReadAtStream<F> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests;
