//! Where a restore, a verify or `info` reads a chain from: the
//! [`GenerationSource`] seam, which the local [`GenerationStore`]
//! implements and an object store (the `blockdiff-storage` crate) does too.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use archive_format::{DigestFile, DigestFormat, ReadAt, SkipRead};

use crate::Result;
use crate::block::BlockHashKey;
use crate::encryption::ChainEncryption;
use crate::error::IoContext;
use crate::store::{DiffFormat, DiffLocation, GenerationStore};

/// A diff's bytes, read at any offset from any thread: a local file, or an
/// object read by ranged requests.
pub type DiffBytes = Arc<dyn ReadAt + Send + Sync>;

/// The committed generations of one chain, as a restore reads them.
///
/// Names ([`name`](Self::name), the paths of [`DiffLocation`]s) are for
/// messages and may be URLs (`s3://bucket/prefix/db.3`); digests are always
/// local files ([`find_digest`](Self::find_digest)), which an object store
/// keeps in its local cache.
pub trait GenerationSource: Send + Sync {
    /// The chain's `NAME`, as the user gave it.
    fn name(&self) -> &Path;

    /// `NAME.ver`, for messages.
    fn ver_path(&self) -> PathBuf;

    /// The last committed generation; `None` when nothing was committed.
    fn current_generation(&self) -> Result<Option<u64>>;

    /// `NAME.N` or `NAME.N.gz`, for messages.
    fn diff_path(&self, generation: u64, format: DiffFormat) -> PathBuf;

    /// `NAME.N.meta.json`, for messages.
    fn metadata_path(&self, generation: u64) -> PathBuf;

    /// The diff of generation `generation` and its format.
    fn find_diff(&self, generation: u64) -> Result<DiffLocation>;

    /// A local file holding generation `generation`'s digest, and its
    /// format.
    fn find_digest(&self, generation: u64) -> Result<(PathBuf, DigestFormat)>;

    /// Generation `generation`'s metadata, `None` if it has none.
    fn read_metadata(&self, generation: u64) -> Result<Option<BTreeMap<String, String>>>;

    /// Opens a diff that [`find_diff`](Self::find_diff) found.
    fn open_diff(&self, diff: &DiffLocation) -> Result<DiffBytes>;

    /// The size in bytes of generation `generation`'s digest.
    fn digest_size(&self, generation: u64) -> Result<u64> {
        let (path, _) = self.find_digest(generation)?;
        Ok(std::fs::metadata(&path).ctx(&path, "stat")?.len())
    }

    /// When a diff was last modified, where the store keeps that (a legacy
    /// diff records no time of its own).
    fn diff_modified(&self, _diff: &DiffLocation) -> Option<SystemTime> {
        None
    }

    /// The size of the reads with which a diff is read in order (a legacy
    /// stream): small for a local file, several MiB for an object store,
    /// where each read is a request.
    fn stream_read_size(&self) -> usize {
        256 << 10
    }

    /// The local store, when the chain is one: a restore refuses to write
    /// over its files.
    fn local_store(&self) -> Option<&GenerationStore> {
        None
    }

    /// Opens generation `generation`'s digest (its plaintext, for an
    /// encrypted chain).
    fn open_digest(&self, generation: u64) -> Result<DigestFile> {
        let (path, _) = self.find_digest(generation)?;
        Ok(DigestFile::open(&path)?)
    }

    /// The key of the chain's block hashes when it is encrypted, once a
    /// file of it was opened.
    fn block_hash_key(&self) -> Option<BlockHashKey> {
        None
    }
}

impl GenerationSource for GenerationStore {
    fn name(&self) -> &Path {
        GenerationStore::name(self)
    }
    fn ver_path(&self) -> PathBuf {
        GenerationStore::ver_path(self)
    }
    fn current_generation(&self) -> Result<Option<u64>> {
        GenerationStore::current_generation(self)
    }
    fn diff_path(&self, generation: u64, format: DiffFormat) -> PathBuf {
        GenerationStore::diff_path(self, generation, format)
    }
    fn metadata_path(&self, generation: u64) -> PathBuf {
        GenerationStore::metadata_path(self, generation)
    }
    fn find_diff(&self, generation: u64) -> Result<DiffLocation> {
        GenerationStore::find_diff(self, generation)
    }
    fn find_digest(&self, generation: u64) -> Result<(PathBuf, DigestFormat)> {
        GenerationStore::find_digest(self, generation)
    }
    fn read_metadata(&self, generation: u64) -> Result<Option<BTreeMap<String, String>>> {
        GenerationStore::read_metadata(self, generation)
    }
    fn open_diff(&self, diff: &DiffLocation) -> Result<DiffBytes> {
        Ok(Arc::from(self.open_read_at(
            &diff.path,
            archive_format::SealedContent::Diff,
            diff.generation,
        )?))
    }
    fn diff_modified(&self, diff: &DiffLocation) -> Option<SystemTime> {
        std::fs::metadata(&diff.path)
            .and_then(|m| m.modified())
            .ok()
    }
    fn local_store(&self) -> Option<&GenerationStore> {
        Some(self)
    }
    fn open_digest(&self, generation: u64) -> Result<DigestFile> {
        GenerationStore::open_digest(self, generation)
    }
    fn block_hash_key(&self) -> Option<BlockHashKey> {
        self.encryption().and_then(ChainEncryption::block_hash_key)
    }
}

/// A [`DiffBytes`] read in order, in reads of a fixed size; skipping moves
/// the position without reading.
pub(crate) struct DiffStream {
    bytes: DiffBytes,
    /// Offset of `buf[0]`.
    pos: u64,
    buf: Vec<u8>,
    start: usize,
    read_size: usize,
}

impl DiffStream {
    pub(crate) fn new(bytes: DiffBytes, read_size: usize) -> Self {
        DiffStream {
            bytes,
            pos: 0,
            buf: Vec::new(),
            start: 0,
            read_size: read_size.max(4096),
        }
    }
}

impl Read for DiffStream {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.buf.len() {
            self.pos += self.buf.len() as u64;
            self.start = 0;
            // A large read goes straight to the caller's buffer.
            if out.len() >= self.read_size {
                self.buf.clear();
                let n = self.bytes.read_at(out, self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            self.buf.resize(self.read_size, 0);
            let n = self.bytes.read_at(&mut self.buf, self.pos)?;
            self.buf.truncate(n);
            if n == 0 {
                return Ok(0);
            }
        }
        let n = out.len().min(self.buf.len() - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

impl SkipRead for DiffStream {
    fn skip_bytes(&mut self, n: u64) -> io::Result<u64> {
        let buffered = (self.buf.len() - self.start) as u64;
        if n <= buffered {
            self.start += n as usize;
            return Ok(n);
        }
        let end = self.bytes.size()?;
        let here = self.pos + self.buf.len() as u64;
        let step = (n - buffered).min(end.saturating_sub(here));
        self.pos = here + step;
        self.buf.clear();
        self.start = 0;
        Ok(buffered + step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_reads_and_skips_across_its_reads() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let bytes: DiffBytes = Arc::new(data.clone());
        let mut s = DiffStream::new(bytes, 4096);
        let mut got = vec![0u8; 10];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, data[..10]);
        assert_eq!(s.skip_bytes(5000).unwrap(), 5000);
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, data[5010..5020]);
        assert_eq!(s.skip_bytes(10).unwrap(), 10);
        let mut big = vec![0u8; 8192];
        s.read_exact(&mut big).unwrap();
        assert_eq!(big, data[5030..5030 + 8192]);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, data[5030 + 8192..]);
        assert_eq!(s.skip_bytes(10).unwrap(), 0);
    }

    #[test]
    fn skipping_past_the_end_stops_at_it() {
        let bytes: DiffBytes = Arc::new(vec![7u8; 10_000]);
        let mut s = DiffStream::new(bytes, 4096);
        let mut one = [0u8; 1];
        s.read_exact(&mut one).unwrap();
        assert_eq!(s.skip_bytes(1_000_000).unwrap(), 9_999);
        assert_eq!(s.read(&mut one).unwrap(), 0);
    }
}
