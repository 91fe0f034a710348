//! Generation K of a chain read at any offset, without restoring it: the
//! [`GenerationReader`] behind `blockdiff-mount` and `blockdiff-nbd`.

mod block_map;
mod frame_cache;

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use archive_format::{
    BlockHash, DiffFile, DigestFile, ExtentKind, Frame, FrameDecompressor, ReadAt, data_len,
    fill_at,
};

use crate::block::HashFn;
use crate::error::ArchiveContext;
use crate::generation_source::{DiffBytes, GenerationSource};
use crate::restore::{Chain, PlanParts, open_legacy};
use crate::store::{DiffFormat, DiffLocation};
use crate::{Error, RestoreOptions, RestorePlan, Result};

use block_map::{BlockMap, BlockMapBuilder, Place};
use frame_cache::{FrameCache, LoadedFrame};

/// Most runs of blocks a reader keeps (about 50 bytes each): a chain whose
/// generations changed more separate places than this is refused with a
/// message rather than opened with gigabytes of map.
pub const MAX_RUNS: usize = 1 << 22;

/// How a [`GenerationReader`] is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderOptions {
    /// The generation to read; `None` for the last committed one.
    pub generation: Option<u64>,
    /// Most bytes of decompressed v2 frames kept for the reads nearby.
    pub cache_bytes: usize,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            generation: None,
            cache_bytes: 64 << 20,
        }
    }
}

/// The diffs of the chain, newest first.
enum Diffs {
    V2(Vec<(DiffLocation, DiffFile<DiffBytes>)>),
    /// Uncompressed legacy streams, read by offset.
    Legacy(Vec<(DiffLocation, DiffBytes)>),
}

/// Generation K of a chain, read at any offset from any thread: each read
/// finds, for every block it covers, the newest generation ≤ K that has it
/// (from the v2 indexes, or for a legacy chain from one scan of its
/// streams), reads it from there (compressed v2 frames are decompressed
/// once and kept in a bounded cache; from a frame stored uncompressed in a
/// local store only the block is read) and checks it against generation K's digest before
/// any byte of it is returned. A block that does not match is an error
/// naming the diff and the offset, and only the reads that touch that block
/// fail.
///
/// Memory is proportional to the number of separate runs of changed blocks
/// in the chain (a v2 index is in memory anyway), not to the volume's size;
/// see [`MAX_RUNS`].
///
/// ```
/// use blockdiff_core::{BackupOptions, DumpSource, GenerationReader, GenerationStore, NoProgress, ReaderOptions, backup};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// let mut image = vec![7u8; 100_000];
/// backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
/// image[70_000..70_010].fill(9);
/// backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
///
/// let first = GenerationReader::open(&store, &ReaderOptions { generation: Some(1), ..ReaderOptions::default() })?;
/// let second = GenerationReader::open(&store, &ReaderOptions::default())?;
/// assert_eq!(second.size(), 100_000);
/// let mut buf = [0u8; 20];
/// assert_eq!(second.read_at(&mut buf, 69_995)?, 20);
/// assert_eq!(&buf[..], &image[69_995..70_015]);
/// first.read_at(&mut buf, 69_995)?;
/// assert_eq!(buf, [7u8; 20]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct GenerationReader {
    generation: u64,
    size: u64,
    block_size: u32,
    map: BlockMap,
    diffs: Diffs,
    digest: Mutex<DigestFile>,
    digest_path: PathBuf,
    hasher: HashFn,
    /// The hash of an all-zero block, and of the last block if it is short.
    zero_hash: BlockHash,
    zero_hash_last: BlockHash,
    frames: FrameCache,
    /// Blocks of v2 frames stored uncompressed are read one by one rather
    /// than with their whole frame: the chain is on a local file system
    /// (from an object store each read is a ranged request, and a frame is
    /// better one).
    blocks_in_place: bool,
}

impl std::fmt::Debug for GenerationReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationReader")
            .field("generation", &self.generation)
            .field("size", &self.size)
            .field("block_size", &self.block_size)
            .field("runs", &self.map.len())
            .finish_non_exhaustive()
    }
}

thread_local! {
    static DECOMPRESSOR: RefCell<FrameDecompressor> = RefCell::new(FrameDecompressor::default());
}

impl GenerationReader {
    /// Opens generation `options.generation` of the chain in `source`:
    /// the chain is checked as a restore checks it before anything is read
    /// (every generation there, one format and block size, fingerprints
    /// that link, the digest of K), and its map built.
    pub fn open(source: &dyn GenerationSource, options: &ReaderOptions) -> Result<Self> {
        let plan = RestorePlan::new(
            source,
            &RestoreOptions {
                generation: options.generation,
                ..RestoreOptions::default()
            },
        )?;
        Self::from_parts(plan.into_parts(), options.cache_bytes)
    }

    /// Generation `parts.generation` read from the chain in `parts`: the
    /// whole chain for [`open`](Self::open); for a fold, only the diffs
    /// being folded together, whose blocks (the [`runs`](Self::runs)) are
    /// then all this reader is asked for.
    pub(crate) fn from_parts(parts: PlanParts, cache_bytes: usize) -> Result<Self> {
        let PlanParts {
            generation,
            chain,
            block_size,
            hash,
            hash_key,
            source_size,
            digest,
            stream_read_size,
            local,
        } = parts;
        let Some(digest) = digest else {
            return Err(Error::InvalidOption(
                "a generation is read at random only with its digest".into(),
            ));
        };
        let hasher = HashFn::with_key(hash, hash_key.as_ref()).ok_or_else(|| Error::Chain {
            path: digest.path().to_owned(),
            detail: format!(
                "holds {hash} hashes, which need the chain's key (an encrypted chain opened without it?)"
            ),
        })?;
        let bs = block_size.get();
        let mut builder = BlockMapBuilder::default();
        let too_many = |path: &Path| Error::Chain {
            path: path.to_owned(),
            detail: format!(
                "the chain up to generation {generation} changed more than {MAX_RUNS} separate runs of blocks: too many to read it at random in bounded memory; restore it with blockdiff-restore"
            ),
        };
        let (diffs, size) = match chain {
            Chain::V2(diffs) => {
                for (d, (loc, diff)) in diffs.iter().enumerate() {
                    let gen_size = diff.summary().source_size;
                    for f in 0..diff.frames().len() {
                        let mut at = 0u64;
                        for e in diff.frame_extents(f) {
                            let place = match e.kind {
                                ExtentKind::Zero => Place::Zero,
                                ExtentKind::Data => Place::Data {
                                    diff: d as u32,
                                    unit: f as u32,
                                    at,
                                    stride: u64::from(bs),
                                },
                            };
                            builder.add(e.first_block, e.end_block(), place);
                            if builder.len() > MAX_RUNS {
                                return Err(too_many(&loc.path));
                            }
                            if e.kind == ExtentKind::Data {
                                at += data_len(e.first_block, u64::from(e.blocks), bs, gen_size);
                            }
                        }
                    }
                }
                (Diffs::V2(diffs), source_size.unwrap_or(0))
            }
            Chain::Legacy(diffs) => {
                for (d, (loc, bytes)) in diffs.iter().enumerate() {
                    if let DiffFormat::Legacy(archive_format::Compression::Gzip) = loc.format {
                        return Err(Error::Chain {
                            path: loc.path.clone(),
                            detail: "is gzip-compressed (the original tool's -z): a gzip stream cannot be read at random; restore the generation with blockdiff-restore instead".into(),
                        });
                    }
                    let mut reader = open_legacy(loc, bytes, stream_read_size)?;
                    while let Some(record) = reader.next_record().in_file(&loc.path)? {
                        let block = record.block_offset / u64::from(bs);
                        builder.add(
                            block,
                            block + 1,
                            Place::Data {
                                diff: d as u32,
                                unit: 0,
                                at: record.stream_offset + archive_format::RECORD_HEADER_LEN,
                                stride: u64::from(bs) + archive_format::RECORD_HEADER_LEN,
                            },
                        );
                        // Consecutive records join into one run: count
                        // what is kept, not what was read.
                        if builder.len() > MAX_RUNS {
                            return Err(too_many(&loc.path));
                        }
                        reader.skip_data().in_file(&loc.path)?;
                    }
                }
                (Diffs::Legacy(diffs), 0)
            }
        };
        let map = builder.build();
        let entries = digest.entries();
        let digest_path = digest.path().to_owned();
        let mut reader = GenerationReader {
            generation,
            size,
            block_size: bs,
            map,
            diffs,
            digest: Mutex::new(digest),
            digest_path,
            zero_hash: hasher.hash(&vec![0u8; bs as usize]),
            zero_hash_last: [0; 32],
            hasher,
            frames: FrameCache::new(cache_bytes),
            blocks_in_place: local,
        };
        if let Diffs::Legacy(_) = reader.diffs {
            reader.size = match source_size {
                Some(size) => size,
                None => reader.legacy_size(entries)?,
            };
        }
        let last_len = reader.size % u64::from(bs);
        reader.zero_hash_last = if last_len == 0 {
            reader.zero_hash
        } else {
            reader.hasher.hash(&vec![0u8; last_len as usize])
        };
        Ok(reader)
    }

    /// A legacy chain with no recorded size: its digest's blocks, the last
    /// one as long as the record that holds it.
    fn legacy_size(&self, entries: u64) -> Result<u64> {
        let bs = u64::from(self.block_size);
        let Some(last) = entries.checked_sub(1) else {
            return Ok(0);
        };
        let tail = match self.map.find(last).map(|r| r.place_of(last)) {
            Some(Place::Data { diff, at, .. }) => {
                let Diffs::Legacy(diffs) = &self.diffs else {
                    return Ok(entries * bs);
                };
                let (loc, bytes) = &diffs[diff as usize];
                let len = bytes.size().map_err(|source| Error::Io {
                    path: loc.path.clone(),
                    op: "stat",
                    source,
                })?;
                len.saturating_sub(at).min(bs)
            }
            _ => bs,
        };
        Ok(last * bs + tail)
    }

    /// The runs of blocks the chain's diffs hold, in block order: `(first,
    /// end, zero)`, `zero` when the newest diff that holds them recorded
    /// them as zero blocks.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (u64, u64, bool)> + '_ {
        self.map
            .runs()
            .iter()
            .map(|r| (r.first, r.end, r.place == Place::Zero))
    }

    /// The generation read.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The image's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The chain's block size.
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Reads up to `buf.len()` bytes of the image at `offset`; fewer only at
    /// the image's end (0 at or past it). Every block the read touches is
    /// checked against the digest first: an error names the diff (or the
    /// digest) and the block's offset, and no byte of the read is to be
    /// used.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        if offset >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let len = (self.size - offset).min(buf.len() as u64) as usize;
        let bs = u64::from(self.block_size);
        // Generation K's hashes of every block the read touches, taken
        // under one lock of the digest.
        let first = offset / bs;
        let expected = self.expected(first, (offset + len as u64 - 1) / bs + 1)?;
        let mut done = 0usize;
        let mut block_buf = Vec::new();
        while done < len {
            let pos = offset + done as u64;
            let block = pos / bs;
            let within = (pos % bs) as usize;
            let block_len = (self.size - block * bs).min(bs) as usize;
            let n = (block_len - within).min(len - done);
            let out = &mut buf[done..done + n];
            let expected = expected[(block - first) as usize];
            match self.map.find(block).map(|r| r.place_of(block)) {
                None | Some(Place::Zero) => {
                    let zero = if block_len as u64 == bs {
                        &self.zero_hash
                    } else {
                        &self.zero_hash_last
                    };
                    if *zero != expected {
                        return Err(self.mismatch(block, None));
                    }
                    out.fill(0);
                }
                Some(Place::Data { diff, unit, at, .. }) => match &self.diffs {
                    Diffs::V2(diffs) => {
                        let (loc, file) = &diffs[diff as usize];
                        // A frame stored uncompressed and not in the cache:
                        // only this block is read, and checked here (the
                        // frame's CRC covers the whole frame, which is not
                        // read).
                        if self.blocks_in_place && self.frames.peek((diff, unit)).is_none() {
                            block_buf.resize(block_len, 0);
                            let in_place = file
                                .read_stored_payload(unit as usize, at, &mut block_buf)
                                .in_file(&loc.path)?;
                            if in_place {
                                if self.hasher.hash(&block_buf) != expected {
                                    return Err(self.mismatch(block, Some((loc, file, unit))));
                                }
                                out.copy_from_slice(&block_buf[within..within + n]);
                                done += n;
                                continue;
                            }
                        }
                        let frame = self.frames.get((diff, unit), || {
                            load_frame(file, unit as usize, &loc.path, self.block_size)
                        })?;
                        let start = at as usize;
                        let Some(bytes) = frame.payload.get(start..start + block_len) else {
                            return Err(self.mismatch(block, Some((loc, file, unit))));
                        };
                        let slot = start / bs as usize;
                        if !frame.is_checked(slot) {
                            if self.hasher.hash(bytes) != expected {
                                return Err(self.mismatch(block, Some((loc, file, unit))));
                            }
                            frame.set_checked(slot);
                        }
                        out.copy_from_slice(&bytes[within..within + n]);
                    }
                    Diffs::Legacy(diffs) => {
                        let (loc, bytes) = &diffs[diff as usize];
                        block_buf.resize(block_len, 0);
                        fill_at(bytes.as_ref(), &mut block_buf, at).map_err(|source| {
                            Error::Io {
                                path: loc.path.clone(),
                                op: "read",
                                source,
                            }
                        })?;
                        if self.hasher.hash(&block_buf) != expected {
                            return Err(Error::Mismatch {
                                path: loc.path.clone(),
                                block_offset: block * bs,
                                stream_offset: at - archive_format::RECORD_HEADER_LEN,
                                digest: self.digest_path.clone(),
                            });
                        }
                        out.copy_from_slice(&block_buf[within..within + n]);
                    }
                },
            }
            done += n;
        }
        Ok(len)
    }

    /// Generation K's hashes of blocks `first..end`.
    fn expected(&self, first: u64, end: u64) -> Result<Vec<BlockHash>> {
        let mut digest = self.digest.lock().unwrap_or_else(PoisonError::into_inner);
        (first..end)
            .map(|block| {
                digest.entry(block)?.ok_or_else(|| Error::Chain {
                    path: self.digest_path.clone(),
                    detail: format!(
                        "lists fewer blocks than the image of generation {} has ({} bytes)",
                        self.generation, self.size
                    ),
                })
            })
            .collect()
    }

    /// A block that does not hash to the digest: from a v2 frame (named
    /// with its offset), or from no diff (a zero block or none).
    fn mismatch(
        &self,
        block: u64,
        from: Option<(&DiffLocation, &DiffFile<DiffBytes>, u32)>,
    ) -> Error {
        let block_offset = block * u64::from(self.block_size);
        match from {
            Some((loc, file, unit)) => Error::Mismatch {
                path: loc.path.clone(),
                block_offset,
                stream_offset: file.frames()[unit as usize].offset,
                digest: self.digest_path.clone(),
            },
            None => Error::Chain {
                path: self.digest_path.clone(),
                detail: format!(
                    "the block at offset {block_offset} is recorded as zero or in no generation up to {}, but the digest says otherwise: a diff is damaged or missing",
                    self.generation
                ),
            },
        }
    }
}

/// Reads, checks and decompresses frame `unit` of `file`.
fn load_frame(
    file: &DiffFile<DiffBytes>,
    unit: usize,
    path: &Path,
    block_size: u32,
) -> Result<LoadedFrame> {
    let mut frame = Frame::default();
    DECOMPRESSOR
        .with(|d| file.read_frame(unit, &mut frame, &mut d.borrow_mut()))
        .in_file(path)?;
    Ok(LoadedFrame::new(frame.payload, block_size))
}

impl ReadAt for GenerationReader {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        GenerationReader::read_at(self, buf, offset).map_err(io::Error::other)
    }

    fn size(&self) -> io::Result<u64> {
        Ok(self.size)
    }
}

#[cfg(test)]
mod tests;
