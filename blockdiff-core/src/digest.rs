//! The digest sidecar: a u32 little-endian block size, then the 16-byte MD5
//! of every block of the source, in order.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use archive_format::{Limits, read_full};

use crate::block::{BlockHash, BlockSize, HASH_LEN};
use crate::error::IoContext;
use crate::{Error, Result};

/// Length of the digest header (the block size).
const HEADER_LEN: u64 = 4;

fn parse_header(path: &Path, hdr: &[u8], got: usize) -> Result<BlockSize> {
    if got < HEADER_LEN as usize {
        return Err(Error::CorruptDigest {
            path: path.to_owned(),
            offset: 0,
            detail: format!("file is {got} bytes, too short for the 4-byte block size"),
        });
    }
    let raw = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
    Limits::default()
        .check_block_size(u64::from(raw), 0)
        .map_err(|e| Error::CorruptDigest {
            path: path.to_owned(),
            offset: 0,
            detail: e.to_string(),
        })?;
    BlockSize::new(raw)
}

/// Checks that a digest of `len` bytes is 4 + 16·n bytes long.
fn check_length(path: &Path, len: u64) -> Result<u64> {
    let body = len.saturating_sub(HEADER_LEN);
    let rem = body % HASH_LEN as u64;
    if len >= HEADER_LEN && rem != 0 {
        return Err(Error::CorruptDigest {
            path: path.to_owned(),
            offset: len - rem,
            detail: format!(
                "length {len} is not 4 + 16·n: the last entry is cut after {rem} of 16 bytes (truncated file?)"
            ),
        });
    }
    Ok(body / HASH_LEN as u64)
}

/// Reads a digest sidecar front to back, as a dump compares against the
/// previous generation.
///
/// ```
/// use blockdiff_core::{BlockSize, DigestReader, DigestWriter, hash_block};
///
/// let mut w = DigestWriter::with_block_size(Vec::new(), "example.md5", BlockSize::new(4)?)?;
/// w.push(&hash_block(b"abcd"))?;
/// let bytes = w.finish()?;
/// assert_eq!(bytes.len(), 4 + 16);
///
/// let mut r = DigestReader::new(&bytes[..], "example.md5")?;
/// assert_eq!(r.block_size().get(), 4);
/// assert_eq!(r.next_entry()?, Some(hash_block(b"abcd")));
/// assert_eq!(r.next_entry()?, None);
/// # Ok::<(), blockdiff_core::Error>(())
/// ```
#[derive(Debug)]
pub struct DigestReader<R> {
    inner: R,
    path: PathBuf,
    block_size: BlockSize,
    next: u64,
    entries: Option<u64>,
}

impl DigestReader<BufReader<File>> {
    /// Opens a digest file, checking its header and that its length is
    /// 4 + 16·n bytes.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).ctx(path, "open digest")?;
        let meta = file.metadata().ctx(path, "stat digest")?;
        let entries = if meta.is_file() {
            Some(check_length(path, meta.len())?)
        } else {
            None
        };
        let mut r = DigestReader::new(BufReader::with_capacity(64 << 10, file), path)?;
        r.entries = entries;
        Ok(r)
    }
}

impl<R: Read> DigestReader<R> {
    /// Reads the header from a stream; `path` names it in errors.
    pub fn new(mut inner: R, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let mut hdr = [0u8; 4];
        let got = read_full(&mut inner, &mut hdr).ctx(&path, "read digest")?;
        let block_size = parse_header(&path, &hdr, got)?;
        Ok(DigestReader {
            inner,
            path,
            block_size,
            next: 0,
            entries: None,
        })
    }

    /// The block size the digest was made with.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// The number of entries, when the digest is a file of known length.
    pub fn entries(&self) -> Option<u64> {
        self.entries
    }

    /// The file the digest is read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the next entry, or `None` at the end. An entry cut short is an
    /// error naming its offset.
    pub fn next_entry(&mut self) -> Result<Option<BlockHash>> {
        let mut h = [0u8; HASH_LEN];
        let got = read_full(&mut self.inner, &mut h).ctx(&self.path, "read digest")?;
        let offset = HEADER_LEN + self.next * HASH_LEN as u64;
        match got {
            0 => Ok(None),
            HASH_LEN => {
                self.next += 1;
                Ok(Some(h))
            }
            _ => Err(Error::CorruptDigest {
                path: self.path.clone(),
                offset,
                detail: format!(
                    "entry {} is cut after {got} of 16 bytes (truncated file?)",
                    self.next
                ),
            }),
        }
    }
}

/// Writes a digest sidecar. The header is written by
/// [`begin`](Self::begin) once the block size is known; call
/// [`finish`](Self::finish) to flush.
#[derive(Debug)]
pub struct DigestWriter<W: Write> {
    inner: W,
    path: PathBuf,
    begun: bool,
    entries: u64,
}

impl<W: Write> DigestWriter<W> {
    /// A writer to `inner`; `path` names it in errors. Nothing is written
    /// until [`begin`](Self::begin).
    pub fn new(inner: W, path: impl Into<PathBuf>) -> Self {
        DigestWriter {
            inner,
            path: path.into(),
            begun: false,
            entries: 0,
        }
    }

    /// A writer whose header is written at once.
    pub fn with_block_size(
        inner: W,
        path: impl Into<PathBuf>,
        block_size: BlockSize,
    ) -> Result<Self> {
        let mut w = Self::new(inner, path);
        w.begin(block_size)?;
        Ok(w)
    }

    /// Writes the header. Called once, before the first entry.
    pub fn begin(&mut self, block_size: BlockSize) -> Result<()> {
        if self.begun {
            return Err(Error::InvalidOption(format!(
                "{}: digest header written twice",
                self.path.display()
            )));
        }
        self.begun = true;
        self.inner
            .write_all(&block_size.get().to_le_bytes())
            .ctx(&self.path, "write digest")
    }

    /// Appends one block's hash.
    pub fn push(&mut self, hash: &BlockHash) -> Result<()> {
        if !self.begun {
            return Err(Error::InvalidOption(format!(
                "{}: digest entry before its header",
                self.path.display()
            )));
        }
        self.entries += 1;
        self.inner.write_all(hash).ctx(&self.path, "write digest")
    }

    /// Entries written so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(mut self) -> Result<W> {
        self.inner.flush().ctx(&self.path, "write digest")?;
        Ok(self.inner)
    }
}

/// Random access to a digest file by block index, as restore checks blocks
/// in the order the generations provide them.
///
/// It reads the file in windows of 64 KiB with positional reads, so memory
/// stays small at any source size.
#[derive(Debug)]
pub struct DigestFile {
    file: File,
    path: PathBuf,
    block_size: BlockSize,
    entries: u64,
    window_first: u64,
    window: Vec<u8>,
}

const WINDOW_ENTRIES: u64 = 4096;

impl DigestFile {
    /// Opens and checks a digest file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).ctx(path, "open digest")?;
        let len = file.metadata().ctx(path, "stat digest")?.len();
        let mut hdr = [0u8; 4];
        let got = file.read_at(&mut hdr, 0).ctx(path, "read digest")?;
        let block_size = parse_header(path, &hdr, got.min(len as usize))?;
        let entries = check_length(path, len)?;
        Ok(DigestFile {
            file,
            path: path.to_owned(),
            block_size,
            entries,
            window_first: 0,
            window: Vec::new(),
        })
    }

    /// The block size the digest was made with.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// How many blocks the digest lists.
    pub fn entries(&self) -> u64 {
        self.entries
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
        let in_window = index >= self.window_first
            && (index - self.window_first) < (self.window.len() / HASH_LEN) as u64;
        if !in_window {
            let first = index - index % WINDOW_ENTRIES;
            let count = WINDOW_ENTRIES.min(self.entries - first);
            self.window.resize(count as usize * HASH_LEN, 0);
            let offset = HEADER_LEN + first * HASH_LEN as u64;
            self.file
                .read_exact_at(&mut self.window, offset)
                .ctx(&self.path, "read digest")?;
            self.window_first = first;
        }
        let at = (index - self.window_first) as usize * HASH_LEN;
        let mut h = [0u8; HASH_LEN];
        h.copy_from_slice(&self.window[at..at + HASH_LEN]);
        Ok(Some(h))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::hash_block;

    fn sample(n: usize) -> Vec<u8> {
        let mut w =
            DigestWriter::with_block_size(Vec::new(), "t.md5", BlockSize::new(8).unwrap()).unwrap();
        for i in 0..n {
            w.push(&hash_block(&i.to_le_bytes())).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn truncated_file_is_reported_with_offset() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.md5");
        let mut bytes = sample(3);
        bytes.truncate(bytes.len() - 5);
        std::fs::write(&p, &bytes).unwrap();
        let e = DigestReader::open(&p).unwrap_err().to_string();
        assert!(
            e.contains("x.md5") && e.contains("offset 36") && e.contains("not 4 + 16·n"),
            "{e}"
        );
        let e = DigestFile::open(&p).unwrap_err().to_string();
        assert!(e.contains("offset 36"), "{e}");
        std::fs::write(&p, [1u8, 0]).unwrap();
        let e = DigestReader::open(&p).unwrap_err().to_string();
        assert!(e.contains("too short"), "{e}");
        std::fs::write(&p, [0u8; 4]).unwrap();
        let e = DigestReader::open(&p).unwrap_err().to_string();
        assert!(e.contains("invalid block size 0"), "{e}");
    }

    #[test]
    fn stream_cut_inside_entry() {
        let bytes = sample(2);
        let mut r = DigestReader::new(&bytes[..bytes.len() - 1], "s").unwrap();
        assert!(r.next_entry().unwrap().is_some());
        let e = r.next_entry().unwrap_err().to_string();
        assert!(e.contains("offset 20") && e.contains("entry 1"), "{e}");
    }

    #[test]
    fn random_access_across_windows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.md5");
        let n = WINDOW_ENTRIES as usize * 2 + 7;
        std::fs::write(&p, sample(n)).unwrap();
        let mut d = DigestFile::open(&p).unwrap();
        assert_eq!(d.entries(), n as u64);
        assert_eq!(d.block_size().get(), 8);
        for i in [n - 1, 0, 4096, 4095, 8198, 3] {
            assert_eq!(
                d.entry(i as u64).unwrap(),
                Some(hash_block(&i.to_le_bytes())),
                "entry {i}"
            );
        }
        assert_eq!(d.entry(n as u64).unwrap(), None);
    }
}
