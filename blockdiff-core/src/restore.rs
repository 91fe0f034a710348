//! Restore: replay a chain of generations onto a file or block device,
//! writing every block once, and check it against the digest.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use archive_format::{LegacyReader, SkipRead};

use crate::block::{BlockSize, hash_block};
use crate::digest::DigestFile;
use crate::error::{ArchiveContext, IoContext};
use crate::progress::Progress;
use crate::store::{DiffFile, GenerationStore};
use crate::{Error, Result};

/// How a chain is restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The generation to restore; `None` for the last committed one.
    pub generation: Option<u64>,
    /// Check every block against the generation's digest (on by default).
    /// Without it a truncated or corrupt legacy diff goes unnoticed.
    pub verify: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            generation: None,
            verify: true,
        }
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreReport {
    /// The generation restored (0 for a single stream).
    pub generation: u64,
    /// Size of the restored image in bytes.
    pub source_size: u64,
    /// Blocks written (or left as holes).
    pub blocks: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// All-zero blocks left as holes in a sparse target file.
    pub holes: u64,
    /// Whether every block was checked against the digest.
    pub verified: bool,
}

/// A validated plan to restore one generation: the chain K..1 newest first,
/// its block size, and the digest of K.
///
/// Executing it reads generation K, then K-1, … 1, and writes each block
/// only from the newest generation that has it: restoring generation 30
/// writes as much as restoring generation 1. On plain files the blocks a
/// newer generation already provided are skipped by seeking, so older
/// generations cost only their record headers.
///
/// ```
/// use blockdiff_core::{BackupOptions, GenerationStore, NoProgress, RestoreOptions, RestorePlan, backup};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// let mut image = vec![1u8; 50_000];
/// backup(&store, &image[..], "image".as_ref(), &BackupOptions::default(), &mut NoProgress)?;
/// image[20_000] = 2;
/// backup(&store, &image[..], "image".as_ref(), &BackupOptions::default(), &mut NoProgress)?;
///
/// let plan = RestorePlan::new(&store, &RestoreOptions::default())?;
/// assert_eq!(plan.generation(), 2);
/// let target = dir.path().join("restored.img");
/// let report = plan.execute(&target, &mut NoProgress)?;
/// assert_eq!(report.source_size, 50_000);
/// assert_eq!(std::fs::read(&target)?, image);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct RestorePlan {
    generation: u64,
    chain: Vec<(u64, DiffFile)>,
    block_size: BlockSize,
    digest: Option<DigestFile>,
}

fn open_diff(diff: &DiffFile) -> Result<LegacyReader<Box<dyn SkipRead + Send>>> {
    let file = File::open(&diff.path).ctx(&diff.path, "open")?;
    LegacyReader::new(diff.compression.reader(file)).in_file(&diff.path)
}

impl RestorePlan {
    /// Checks that generations 1..=K and the digest of K exist and agree,
    /// before anything is written.
    pub fn new(store: &GenerationStore, options: &RestoreOptions) -> Result<Self> {
        let ver = store.ver_path();
        let current = store
            .current_generation()?
            .ok_or_else(|| Error::MissingGeneration {
                path: ver.clone(),
                generation: options.generation.unwrap_or(1),
                reason: "there is no backup under this name (no .ver file)".into(),
            })?;
        let generation = options.generation.unwrap_or(current);
        if generation == 0 || generation > current {
            return Err(Error::MissingGeneration {
                path: store.diff_path(generation, Default::default()),
                generation,
                reason: format!("it is not committed: {} says {current}", ver.display()),
            });
        }
        let mut chain = Vec::new();
        for g in (1..=generation).rev() {
            let diff = store.find_diff(g).map_err(|e| match e {
                Error::MissingGeneration { path, generation: missing, .. } => Error::MissingGeneration {
                    path,
                    generation: missing,
                    reason: format!("restoring generation {generation} needs every generation from 1 to {generation}"),
                },
                other => other,
            })?;
            chain.push((g, diff));
        }
        let digest = if options.verify {
            let path = store.digest_path(generation);
            Some(DigestFile::open(&path).map_err(|e| match e {
                Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => Error::MissingGeneration {
                    path: path.clone(),
                    generation,
                    reason: "its digest checks the restore (restore without checking with --no-verify)".into(),
                },
                other => other,
            })?)
        } else {
            None
        };
        let mut block_size = digest.as_ref().map(|d| d.block_size());
        for (_, diff) in &chain {
            let bs = BlockSize::new(open_diff(diff)?.block_size())?;
            match block_size {
                None => block_size = Some(bs),
                Some(expected) if expected != bs => {
                    return Err(Error::Chain {
                        path: diff.path.clone(),
                        detail: format!(
                            "block size is {bs} but the chain up to generation {generation} uses {expected}; a chain keeps one block size"
                        ),
                    });
                }
                Some(_) => {}
            }
        }
        Ok(RestorePlan {
            generation,
            chain,
            block_size: block_size.unwrap_or_default(),
            digest,
        })
    }

    /// The generation this plan restores.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The chain's block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// The number of blocks of the restored image, when the digest is used.
    pub fn block_count(&self) -> Option<u64> {
        self.digest.as_ref().map(DigestFile::entries)
    }

    /// Writes the image to `target`.
    ///
    /// A regular file is written as a new sparse file beside it and renamed
    /// over it at the end, so a failed restore leaves an existing file
    /// untouched. A block device is written in place, never past its end.
    pub fn execute(mut self, target: &Path, progress: &mut dyn Progress) -> Result<RestoreReport> {
        let mut out = Target::open(target, true)?;
        let bs = self.block_size;
        let block_count = self.block_count();
        if let (Some(n), Some(size)) = (block_count, out.device_size) {
            let need = if n == 0 { 0 } else { bs.offset_of(n - 1) + 1 };
            if size < need {
                return Err(Error::TargetTooSmall {
                    path: target.to_owned(),
                    need,
                    have: size,
                });
            }
        }
        let mut written = BlockSet::default();
        let mut report = RestoreReport {
            generation: self.generation,
            verified: self.digest.is_some(),
            ..RestoreReport::default()
        };
        let mut end = 0u64;
        let mut buf = Vec::with_capacity(bs.bytes());
        for (_, diff) in &self.chain {
            let mut reader = open_diff(diff)?;
            while let Some(rec) = reader.next_record().in_file(&diff.path)? {
                let index = rec.block_offset / u64::from(bs.get());
                let beyond = block_count.is_some_and(|n| index >= n);
                if beyond || written.contains(index) {
                    // A newer generation has it, or the source shrank.
                    reader.skip_data().in_file(&diff.path)?;
                    continue;
                }
                let len = reader.read_data(&mut buf).in_file(&diff.path)?;
                if let Some(n) = block_count
                    && len < bs.bytes()
                    && index + 1 != n
                {
                    return Err(Error::Chain {
                        path: diff.path.clone(),
                        detail: format!(
                            "record at stream offset {}: short block at offset {} is not the source's last block",
                            rec.stream_offset, rec.block_offset
                        ),
                    });
                }
                if let Some(digest) = self.digest.as_mut()
                    && digest.entry(index)? != Some(hash_block(&buf))
                {
                    return Err(Error::Mismatch {
                        path: diff.path.clone(),
                        block_offset: rec.block_offset,
                        stream_offset: rec.stream_offset,
                        digest: digest.path().to_owned(),
                    });
                }
                if out.write_block(rec.block_offset, &buf)? {
                    report.bytes_written += len as u64;
                } else {
                    report.holes += 1;
                }
                written.insert(index);
                report.blocks += 1;
                end = end.max(rec.block_offset + len as u64);
                progress.advance(len as u64);
            }
        }
        if let (Some(n), Some(digest)) = (block_count, self.digest.as_ref()) {
            let (count, first) = written.missing_below(n);
            if count > 0 {
                return Err(Error::MissingBlocks {
                    digest: digest.path().to_owned(),
                    count,
                    first_offset: bs.offset_of(first),
                });
            }
        }
        report.source_size = end;
        out.finish(end)?;
        Ok(report)
    }
}

/// Applies one diff stream to `target` in place, as the original
/// `blockdiff_merge` did: every record is written where it belongs. When the
/// stream ends with a short block, that block's end is the source's end and
/// a regular file target is cut there.
///
/// Nothing in a legacy stream reveals a stream truncated at a record
/// boundary; restore from a store ([`RestorePlan`]) checks against the
/// digest instead.
pub fn apply_stream<R: Read>(
    input: R,
    input_name: &Path,
    target: &Path,
    progress: &mut dyn Progress,
) -> Result<RestoreReport> {
    let mut reader = LegacyReader::new(input).in_file(input_name)?;
    let mut out = Target::open(target, false)?;
    let bs = reader.block_size() as usize;
    let mut buf = Vec::with_capacity(bs);
    let mut report = RestoreReport::default();
    let mut short_end = None;
    while let Some(rec) = reader.read_record(&mut buf).in_file(input_name)? {
        out.write_block(rec.block_offset, &buf)?;
        report.blocks += 1;
        report.bytes_written += buf.len() as u64;
        report.source_size = report.source_size.max(rec.block_offset + buf.len() as u64);
        if buf.len() < bs {
            short_end = Some(rec.block_offset + buf.len() as u64);
        }
        progress.advance(buf.len() as u64);
    }
    let current = out.current_len()?;
    let end = short_end.unwrap_or(current.max(report.source_size));
    report.source_size = end;
    out.finish(end)?;
    Ok(report)
}

/// The file or device a restore writes to.
struct Target {
    file: File,
    path: PathBuf,
    /// For a fresh file: the temporary name, renamed over `path` at the end.
    tmp: Option<PathBuf>,
    /// For a block device: its size.
    device_size: Option<u64>,
    finished: bool,
}

impl Target {
    /// Opens `path`. With `fresh`, a regular file is written anew beside it
    /// (all-zero blocks become holes); without, it is updated in place.
    fn open(path: &Path, fresh: bool) -> Result<Target> {
        let meta = match fs::metadata(path) {
            Ok(m) => Some(m),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).ctx(path, "stat"),
        };
        if let Some(m) = &meta
            && m.file_type().is_block_device()
        {
            let mut file = OpenOptions::new()
                .write(true)
                .open(path)
                .ctx(path, "open device")?;
            let size = file.seek(SeekFrom::End(0)).ctx(path, "find device size")?;
            return Ok(Target {
                file,
                path: path.to_owned(),
                tmp: None,
                device_size: Some(size),
                finished: false,
            });
        }
        if let Some(m) = &meta
            && !m.is_file()
        {
            return Err(Error::InvalidOption(format!(
                "{}: restore target must be a regular file or a block device",
                path.display()
            )));
        }
        if fresh {
            let mut name = path.file_name().unwrap_or_default().to_owned();
            name.push(".blockdiff-partial");
            let tmp = path.with_file_name(name);
            let file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .ctx(&tmp, "create")?;
            return Ok(Target {
                file,
                path: path.to_owned(),
                tmp: Some(tmp),
                device_size: None,
                finished: false,
            });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .ctx(path, "open")?;
        Ok(Target {
            file,
            path: path.to_owned(),
            tmp: None,
            device_size: None,
            finished: false,
        })
    }

    fn write_path(&self) -> &Path {
        self.tmp.as_deref().unwrap_or(&self.path)
    }

    fn current_len(&self) -> Result<u64> {
        match self.device_size {
            Some(size) => Ok(size),
            None => Ok(self.file.metadata().ctx(self.write_path(), "stat")?.len()),
        }
    }

    /// Writes one block; returns false if it was left as a hole.
    fn write_block(&mut self, offset: u64, data: &[u8]) -> Result<bool> {
        let end = offset + data.len() as u64;
        if let Some(size) = self.device_size
            && end > size
        {
            return Err(Error::TargetTooSmall {
                path: self.path.clone(),
                need: end,
                have: size,
            });
        }
        if self.tmp.is_some() && data.iter().all(|&b| b == 0) {
            return Ok(false);
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|source| Error::Io {
                path: self.write_path().to_owned(),
                op: "write",
                source,
            })?;
        Ok(true)
    }

    /// Sets a file's size to `size`, syncs, and renames a fresh file into
    /// place.
    fn finish(mut self, size: u64) -> Result<()> {
        if self.device_size.is_none() {
            self.file.set_len(size).ctx(self.write_path(), "set size")?;
        }
        self.file.sync_all().ctx(self.write_path(), "fsync")?;
        if let Some(tmp) = &self.tmp {
            fs::rename(tmp, &self.path).ctx(&self.path, "rename restored image into place")?;
            if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .ctx(dir, "fsync directory")?;
            }
        }
        self.finished = true;
        Ok(())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let (false, Some(tmp)) = (self.finished, &self.tmp) {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// The set of block indexes already written: a bitmap stored sparsely, so
/// memory follows the blocks actually seen, whatever their offsets.
#[derive(Debug, Default)]
struct BlockSet {
    words: HashMap<u64, u64>,
}

impl BlockSet {
    fn contains(&self, index: u64) -> bool {
        self.words
            .get(&(index / 64))
            .is_some_and(|w| w & (1 << (index % 64)) != 0)
    }

    fn insert(&mut self, index: u64) {
        *self.words.entry(index / 64).or_default() |= 1 << (index % 64);
    }

    /// How many of the indexes `0..n` are absent, and the first of them.
    fn missing_below(&self, n: u64) -> (u64, u64) {
        let mut count = 0;
        let mut first = None;
        for w in 0..n.div_ceil(64) {
            let bits_here = (n - w * 64).min(64);
            let mask = if bits_here == 64 {
                u64::MAX
            } else {
                (1u64 << bits_here) - 1
            };
            let absent = !self.words.get(&w).copied().unwrap_or(0) & mask;
            if absent != 0 {
                count += u64::from(absent.count_ones());
                first.get_or_insert(w * 64 + u64::from(absent.trailing_zeros()));
            }
        }
        (count, first.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_set_counts_missing() {
        let mut s = BlockSet::default();
        for i in [0, 1, 2, 64, 65, 130] {
            s.insert(i);
        }
        assert!(s.contains(64) && !s.contains(3));
        assert_eq!(s.missing_below(3), (0, 0));
        assert_eq!(s.missing_below(4), (1, 3));
        assert_eq!(s.missing_below(131), (131 - 6, 3));
        s.insert(1 << 50);
        assert!(s.contains(1 << 50));
    }
}
