//! Delta restore: an existing file or block device brought to generation K
//! by writing only the blocks that differ from it.
//!
//! The target is read and hashed on every core (with the polite-I/O
//! settings of a dump) and compared with generation K's digest; each
//! differing range is read from the chain through a [`GenerationReader`]
//! (every block checked against the digest before it is returned) and
//! written in place; the target is synced and, unless asked not to, read
//! and compared once more. An interrupted run leaves the target partly
//! written and says so; running it again writes what still differs.

use std::path::Path;

use crate::dump::{DumpOptions, DumpSource};
use crate::generation_reader::GenerationReader;
use crate::generation_source::GenerationSource;
use crate::info::compare_reading_with;
use crate::progress::Progress;
use crate::{Error, Result};

use super::in_place::InPlaceTarget;
use super::{RestoreOptions, RestorePlan};

/// The steps of a delta restore, in order, as given to
/// [`Progress::at_step`]: the target compared with the digest, the first
/// differing range written, the last one written (before the sync), the
/// target synced.
pub const DELTA_STEPS: [&str; 4] = [
    "delta:compared",
    "delta:wrote-first",
    "delta:written",
    "delta:synced",
];

/// Bytes read from the chain and written to the target at a time (and
/// between two [`Progress::should_stop`] checks).
const WRITE_PIECE: usize = 1 << 20;

/// Decompressed frames a delta restore keeps for the reads nearby: a
/// differing range is read in order, so little is needed.
const FRAME_CACHE: usize = 16 << 20;

/// How a delta restore runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeltaRestoreOptions {
    /// The generation to restore; `None` for the last committed one.
    pub generation: Option<u64>,
    /// Threads that read and hash the target; 0 is one per core.
    pub threads: usize,
    /// Read the whole target again at the end and compare it with the
    /// digest (on by default).
    pub verify: bool,
    /// Write to a block device even when the kernel reports it in use
    /// (mounted, or held by another program).
    pub force: bool,
    /// A regular file of another size is made the generation's size
    /// (without it, it is refused).
    pub resize: bool,
    /// Most bytes per second read from the target, as
    /// [`DumpOptions::max_rate`].
    pub max_rate: Option<u64>,
    /// Drop what was read of the target from the page cache, as
    /// [`DumpOptions::drop_cache`].
    pub drop_cache: bool,
    /// As [`RestoreOptions::source_shrank`].
    pub source_shrank: bool,
}

impl Default for DeltaRestoreOptions {
    fn default() -> Self {
        DeltaRestoreOptions {
            generation: None,
            threads: 0,
            verify: true,
            force: false,
            resize: false,
            max_rate: None,
            drop_cache: false,
            source_shrank: false,
        }
    }
}

/// What a delta restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct DeltaRestoreReport {
    /// The generation restored.
    pub generation: u64,
    /// Its size in bytes.
    pub source_size: u64,
    /// Bytes of the target read and hashed to find what differs (the
    /// verification's reading not counted).
    pub bytes_compared: u64,
    /// Separate ranges that differed.
    pub ranges: u64,
    /// Bytes written: the blocks that differed.
    pub bytes_written: u64,
    /// Whether the whole target was read again and found equal to the
    /// generation.
    pub verified: bool,
}

/// Brings the existing file or block device `target` to generation
/// `options.generation` of the chain in `source`, writing only the blocks
/// that differ, each checked against the generation's digest before it is
/// written.
///
/// The chain is checked as a restore checks it before the target is
/// opened. Refused, before anything is written: a target that does not
/// exist, a symbolic link (except root's or one's own to a block device),
/// a file of a backup, a file with other hard links, a block device in use
/// (mounted; unless [`force`](DeltaRestoreOptions::force)), a device
/// smaller than the generation, and a file of another size (unless
/// [`resize`](DeltaRestoreOptions::resize)). A device larger than the
/// generation keeps its bytes past the generation's end.
///
/// Once a block is written a failure is [`Error::PartlyRestored`]: the
/// target is neither what it was nor the generation, and running the
/// restore again completes it. A target that still differs after the
/// restore is [`Error::TargetDiffers`]. Steps: [`DELTA_STEPS`].
///
/// ```
/// use blockdiff_core::{BackupOptions, DeltaRestoreOptions, DumpSource, GenerationStore, NoProgress, backup, restore_delta};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("disk"));
/// let image: Vec<u8> = (0..1u32 << 20).map(|i| (i % 251) as u8).collect();
/// backup(&store, DumpSource::from_bytes(&image, "disk"), &BackupOptions::default(), &mut NoProgress)?;
///
/// // The disk is damaged in one place: only that block is written back.
/// let disk = dir.path().join("vda.img");
/// let mut damaged = image.clone();
/// damaged[500_000..500_100].fill(0xff);
/// std::fs::write(&disk, &damaged)?;
/// let report = restore_delta(&store, &disk, &DeltaRestoreOptions::default(), &mut NoProgress)?;
/// assert_eq!(report.bytes_written, 16 << 10); // one block of the default size
/// assert!(report.verified);
/// assert_eq!(std::fs::read(&disk)?, image);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn restore_delta(
    source: &dyn GenerationSource,
    target: &Path,
    options: &DeltaRestoreOptions,
    progress: &mut dyn Progress,
) -> Result<DeltaRestoreReport> {
    let reading = DumpOptions {
        threads: options.threads,
        max_rate: options.max_rate,
        drop_cache: options.drop_cache,
        ..DumpOptions::default()
    };
    reading.validate()?;
    let mut plan = RestorePlan::new(
        source,
        &RestoreOptions {
            generation: options.generation,
            verify: true,
            source_shrank: options.source_shrank,
        },
    )?;
    plan.prepare_target(target, progress)?;
    let generation = plan.generation();
    let chain = GenerationReader::from_parts(plan.into_parts(), FRAME_CACHE)?;
    let size = chain.size();
    let mut out = InPlaceTarget::open(target, options.force)?;
    out.fit(size, options.resize, &format!("generation {generation}"))?;
    let mut report = DeltaRestoreReport {
        generation,
        source_size: size,
        ..DeltaRestoreReport::default()
    };
    let differing = compare(source, generation, &out, size, &reading, progress)?;
    report.bytes_compared = size;
    report.ranges = differing.len() as u64;
    progress.at_step(DELTA_STEPS[0]);
    if let Err(e) = write_ranges(&chain, &out, &differing, &mut report, progress) {
        return Err(match report.bytes_written {
            0 => e,
            written => Error::PartlyRestored {
                path: target.to_owned(),
                generation,
                written,
                source: Box::new(e),
            },
        });
    }
    progress.at_step(DELTA_STEPS[2]);
    out.sync().map_err(|e| match report.bytes_written {
        0 => e,
        written => Error::PartlyRestored {
            path: target.to_owned(),
            generation,
            written,
            source: Box::new(e),
        },
    })?;
    progress.at_step(DELTA_STEPS[3]);
    if options.verify {
        let left = compare(source, generation, &out, size, &reading, progress)?;
        if let Some(&(offset, _)) = left.first() {
            return Err(Error::TargetDiffers {
                path: target.to_owned(),
                generation,
                offset,
            });
        }
        report.verified = true;
    }
    Ok(report)
}

/// The byte ranges of the target's first `size` bytes that differ from
/// generation `generation`.
fn compare(
    source: &dyn GenerationSource,
    generation: u64,
    out: &InPlaceTarget,
    size: u64,
    reading: &DumpOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<(u64, u64)>> {
    let read = DumpSource::from_file(out.reader()?, out.path())?.limited(size);
    let comparison = compare_reading_with(source, Some(generation), read, reading, progress)?;
    Ok(clip(comparison.differing, size))
}

/// Writes each range's bytes of the generation, a piece at a time.
fn write_ranges(
    chain: &GenerationReader,
    out: &InPlaceTarget,
    ranges: &[(u64, u64)],
    report: &mut DeltaRestoreReport,
    progress: &mut dyn Progress,
) -> Result<()> {
    let mut buf = vec![0u8; WRITE_PIECE];
    for &(start, end) in ranges {
        let mut at = start;
        while at < end {
            if let Some(reason) = progress.should_stop() {
                return Err(Error::RestoreStopped {
                    path: out.path().to_owned(),
                    reason,
                    state: if report.bytes_written == 0 {
                        "the target is as it was"
                    } else {
                        "it is partly written"
                    },
                });
            }
            let n = (end - at).min(WRITE_PIECE as u64) as usize;
            read_exact_at(chain, &mut buf[..n], at, out.path())?;
            out.write_at(at, &buf[..n])?;
            if report.bytes_written == 0 {
                progress.at_step(DELTA_STEPS[1]);
            }
            report.bytes_written += n as u64;
            progress.advance(n as u64);
            at += n as u64;
        }
    }
    Ok(())
}

/// Fills `buf` from the generation at `offset` (inside its size).
fn read_exact_at(
    chain: &GenerationReader,
    buf: &mut [u8],
    offset: u64,
    target: &Path,
) -> Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let got = chain.read_at(&mut buf[done..], offset + done as u64)?;
        if got == 0 {
            return Err(Error::Chain {
                path: target.to_owned(),
                detail: format!(
                    "generation {} ended at offset {}, inside the {} bytes it was to give at {offset}",
                    chain.generation(),
                    offset + done as u64,
                    buf.len()
                ),
            });
        }
        done += got;
    }
    Ok(())
}

/// How a [`DeltaTarget`] is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaTargetOptions {
    /// As [`DeltaRestoreOptions::force`].
    pub force: bool,
    /// As [`DeltaRestoreOptions::resize`].
    pub resize: bool,
    /// A missing regular file is created (mode 0600) and every block of
    /// the generation that is not all zeros differs from it: a full
    /// restore through the same path.
    pub create: bool,
}

/// An existing file or device being brought to a generation that is known
/// here only by its digest: the blocks come from elsewhere (the agent's
/// side of a restore over ssh, where the chain is on the backup host).
///
/// [`differing`](Self::differing) lists the ranges that differ from the
/// digest; [`write_checked`](Self::write_checked) writes blocks after
/// checking each against the digest, so that nothing that is not the
/// generation's is ever written; [`sync`](Self::sync) and a second
/// [`differing`](Self::differing) finish the work.
pub struct DeltaTarget {
    out: InPlaceTarget,
    digest_path: std::path::PathBuf,
    digest: archive_format::DigestFile,
    hash_key: Option<crate::BlockHashKey>,
    hash: crate::HashFn,
    block_size: u64,
    size: u64,
    created: bool,
    bytes_written: u64,
}

impl std::fmt::Debug for DeltaTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaTarget")
            .field("target", &self.out.path())
            .field("digest", &self.digest_path)
            .field("size", &self.size)
            .field("bytes_written", &self.bytes_written)
            .finish_non_exhaustive()
    }
}

impl DeltaTarget {
    /// Opens `target` (under the rules of [`restore_delta`]) to be
    /// brought to the generation whose digest is the file `digest` (with
    /// `hash_key` for an encrypted chain's keyed hashes) and whose image
    /// is `size` bytes. The size is checked against the digest's.
    pub fn open(
        target: &Path,
        digest: &Path,
        hash_key: Option<crate::BlockHashKey>,
        size: u64,
        options: &DeltaTargetOptions,
    ) -> Result<DeltaTarget> {
        let file = archive_format::DigestFile::open(digest)?;
        let spec = *file.spec();
        let hash = crate::HashFn::with_key(spec.algorithm, hash_key.as_ref()).ok_or_else(|| {
            Error::InvalidOption(format!(
                "the digest's hash {} and the key given do not go together",
                spec.algorithm
            ))
        })?;
        let block_size = u64::from(spec.block_size.get());
        let fits = match file.source_size() {
            Some(recorded) if recorded != archive_format::UNKNOWN_SIZE => recorded == size,
            _ => file.entries() == size.div_ceil(block_size),
        };
        if !fits {
            return Err(Error::Chain {
                path: digest.to_owned(),
                detail: format!(
                    "describes an image of another size than the {size} bytes asked for ({} blocks of {block_size})",
                    file.entries()
                ),
            });
        }
        let (mut out, created) =
            InPlaceTarget::open_or_create(target, options.force, options.create)?;
        out.fit(size, options.resize || created, "the generation")?;
        Ok(DeltaTarget {
            out,
            digest_path: digest.to_owned(),
            digest: file,
            hash_key,
            hash,
            block_size,
            size,
            created,
            bytes_written: 0,
        })
    }

    /// The generation's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the target did not exist and was created.
    pub fn created(&self) -> bool {
        self.created
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.bytes_written
    }

    /// Reads the target (as `reading` says: threads, polite I/O) and
    /// returns the byte ranges of its first [`size`](Self::size) bytes
    /// that differ from the digest.
    pub fn differing(
        &mut self,
        reading: &DumpOptions,
        progress: &mut dyn Progress,
    ) -> Result<Vec<(u64, u64)>> {
        let digest = archive_format::DigestFile::open(&self.digest_path)?;
        let read = DumpSource::from_file(self.out.reader()?, self.out.path())?.limited(self.size);
        let comparison = crate::info::compare_with_digest(
            digest,
            self.hash_key.clone(),
            read,
            reading,
            progress,
        )?;
        Ok(clip(comparison.differing, self.size))
    }

    /// Writes `data` at `offset` (a block boundary; whole blocks, the last
    /// one of the image may be short) once every block of it hashes to the
    /// digest's entry; a block that does not is an error and nothing of
    /// `data` is written.
    pub fn write_checked(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset.saturating_add(data.len() as u64);
        if !offset.is_multiple_of(self.block_size) || end > self.size {
            return Err(Error::Chain {
                path: self.out.path().to_owned(),
                detail: format!(
                    "{} bytes at offset {offset} are not whole blocks of the generation ({} bytes, blocks of {})",
                    data.len(),
                    self.size,
                    self.block_size
                ),
            });
        }
        let bs = self.block_size as usize;
        for (i, block) in data.chunks(bs).enumerate() {
            let index = offset / self.block_size + i as u64;
            let block_end = (index + 1).saturating_mul(self.block_size).min(self.size);
            let expected = self.digest.entry(index)?;
            let whole = block.len() as u64 == block_end - index * self.block_size;
            if !whole || expected != Some(self.hash.hash(block)) {
                return Err(Error::Chain {
                    path: self.digest_path.clone(),
                    detail: format!(
                        "the block at offset {} sent for {} does not match the digest; it was not written",
                        index * self.block_size,
                        self.out.path().display()
                    ),
                });
            }
        }
        self.out.write_at(offset, data)?;
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    /// Flushes what was written to stable storage.
    pub fn sync(&self) -> Result<()> {
        self.out.sync()
    }

    /// After a failure: a target this restore created and wrote nothing
    /// to is removed (a file of zeros the size of the generation would
    /// look like an image); any other is left as it is.
    pub fn abandon(self) -> Result<()> {
        if self.created && self.bytes_written == 0 {
            self.out.remove_created()?;
        }
        Ok(())
    }
}

/// `ranges` within `[0, size)`.
fn clip(ranges: Vec<(u64, u64)>, size: u64) -> Vec<(u64, u64)> {
    ranges
        .into_iter()
        .filter_map(|(start, end)| (start < size).then_some((start, end.min(size))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use crate::store::GenerationStore;
    use crate::{BackupOptions, DigestFormat, backup};
    use std::fs;

    const BS: usize = 16 << 10;

    fn image(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    /// A chain of two generations of a 1 MiB image (the second changes
    /// blocks 3 and 40), in `dir`; returns the store and both images.
    fn chain(dir: &Path) -> (GenerationStore, Vec<u8>, Vec<u8>) {
        let store = GenerationStore::new(dir.join("disk"));
        let first = image(1 << 20, 7);
        backup(
            &store,
            DumpSource::from_bytes(&first, "disk"),
            &BackupOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        let mut second = first.clone();
        second[3 * BS + 5..3 * BS + 900].fill(1);
        second[40 * BS..41 * BS].fill(0);
        backup(
            &store,
            DumpSource::from_bytes(&second, "disk"),
            &BackupOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        (store, first, second)
    }

    /// Records the steps and stops the run when one is reached.
    #[derive(Default)]
    struct StopAt {
        at: Option<&'static str>,
        steps: Vec<&'static str>,
        stop: bool,
        /// Run at a step: writes bytes into the target behind the
        /// restore's back.
        meddle: Option<(&'static str, std::path::PathBuf, u64)>,
    }

    impl Progress for StopAt {
        fn at_step(&mut self, step: &'static str) {
            self.steps.push(step);
            if self.at == Some(step) {
                self.stop = true;
            }
            if let Some((at, path, offset)) = &self.meddle
                && *at == step
            {
                use std::os::unix::fs::FileExt;
                let f = fs::OpenOptions::new().write(true).open(path).unwrap();
                f.write_all_at(b"meddled", *offset).unwrap();
            }
        }
        fn should_stop(&mut self) -> Option<String> {
            self.stop.then(|| "asked to stop".to_owned())
        }
    }

    #[test]
    fn only_the_damaged_blocks_are_written_and_the_target_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, second) = chain(dir.path());
        let target = dir.path().join("vda.img");
        let mut damaged = second.clone();
        damaged[0] ^= 1; // block 0
        damaged[10 * BS..12 * BS].fill(0xee); // blocks 10 and 11
        damaged[(1 << 20) - 1] ^= 0x80; // the last block
        fs::write(&target, &damaged).unwrap();
        let mut progress = StopAt::default();
        let report = restore_delta(
            &store,
            &target,
            &DeltaRestoreOptions::default(),
            &mut progress,
        )
        .unwrap();
        assert_eq!(fs::read(&target).unwrap(), second);
        assert_eq!(report.generation, 2);
        assert_eq!(report.source_size, 1 << 20);
        assert_eq!(report.bytes_written, 4 * BS as u64);
        assert_eq!(report.ranges, 3);
        assert!(report.verified);
        assert_eq!(progress.steps, DELTA_STEPS);
        // Nothing differs now: nothing is written.
        let again = restore_delta(
            &store,
            &target,
            &DeltaRestoreOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!((again.bytes_written, again.ranges), (0, 0));
    }

    #[test]
    fn an_older_generation_is_restored_over_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let (store, first, second) = chain(dir.path());
        let target = dir.path().join("vda.img");
        fs::write(&target, &second).unwrap();
        let options = DeltaRestoreOptions {
            generation: Some(1),
            threads: 3,
            ..DeltaRestoreOptions::default()
        };
        let report = restore_delta(&store, &target, &options, &mut NoProgress).unwrap();
        assert_eq!(fs::read(&target).unwrap(), first);
        assert_eq!(report.bytes_written, 2 * BS as u64);
    }

    #[test]
    fn a_file_of_another_size_is_refused_unless_resized() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, second) = chain(dir.path());
        let target = dir.path().join("vda.img");
        for len in [(1 << 20) - 100, (1 << 20) + 5 * BS + 3] {
            let mut other = second.clone();
            other.resize(len, 0x55);
            fs::write(&target, &other).unwrap();
            let err = restore_delta(
                &store,
                &target,
                &DeltaRestoreOptions::default(),
                &mut NoProgress,
            )
            .unwrap_err();
            assert!(err.to_string().contains("--resize"), "{err}");
            assert_eq!(fs::read(&target).unwrap(), other, "refused, so untouched");
            let options = DeltaRestoreOptions {
                resize: true,
                ..DeltaRestoreOptions::default()
            };
            restore_delta(&store, &target, &options, &mut NoProgress).unwrap();
            assert_eq!(fs::read(&target).unwrap(), second);
        }
    }

    #[test]
    fn targets_that_must_not_be_written_in_place_are_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (store, _, second) = chain(dir.path());
        let opts = DeltaRestoreOptions::default();
        let refused = |target: &Path| {
            let err = restore_delta(&store, target, &opts, &mut NoProgress).unwrap_err();
            assert!(matches!(err, Error::BadTarget { .. }), "{target:?}: {err}");
            err.to_string()
        };
        // Missing.
        assert!(refused(&dir.path().join("nothing")).contains("does not exist"));
        // A link, even to a file of the right size.
        let real = dir.path().join("real.img");
        fs::write(&real, &second).unwrap();
        let link = dir.path().join("link.img");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        refused(&link);
        // A file with another name (a backup's, perhaps).
        let other_name = dir.path().join("hard.img");
        fs::hard_link(&real, &other_name).unwrap();
        assert!(refused(&real).contains("hard links"));
        fs::remove_file(&other_name).unwrap();
        // The chain's own files.
        refused(&store.digest_path(2, DigestFormat::V2));
        refused(&store.ver_path());
        // A target that is refused is not touched (and keeps its mode).
        fs::set_permissions(&real, fs::Permissions::from_mode(0o640)).unwrap();
        restore_delta(&store, &real, &opts, &mut NoProgress).unwrap();
        assert_eq!(
            fs::metadata(&real).unwrap().permissions().mode() & 0o777,
            0o640
        );
    }

    #[test]
    fn a_stop_after_the_first_write_says_partly_restored_and_a_rerun_completes() {
        let dir = tempfile::tempdir().unwrap();
        let (store, first, second) = chain(dir.path());
        let target = dir.path().join("vda.img");
        // Differs from generation 1 in ranges far apart: more than one
        // piece is written.
        let mut damaged = first.clone();
        damaged[..2 * WRITE_PIECE.min(first.len() / 4)].fill(9);
        damaged[(1 << 20) - BS..].fill(9);
        fs::write(&target, &damaged).unwrap();
        let options = DeltaRestoreOptions {
            generation: Some(1),
            ..DeltaRestoreOptions::default()
        };
        let mut progress = StopAt {
            at: Some(DELTA_STEPS[1]),
            ..StopAt::default()
        };
        let err = restore_delta(&store, &target, &options, &mut progress).unwrap_err();
        assert!(
            matches!(err, Error::PartlyRestored { generation: 1, .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains("run the same restore again"),
            "{err}"
        );
        let partly = fs::read(&target).unwrap();
        assert_ne!(partly, first);
        assert_ne!(partly, damaged);
        let report = restore_delta(&store, &target, &options, &mut NoProgress).unwrap();
        assert!(report.bytes_written > 0);
        assert_eq!(fs::read(&target).unwrap(), first);
        drop(second);
    }

    #[test]
    fn a_stop_before_anything_is_written_leaves_the_target_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, second) = chain(dir.path());
        let target = dir.path().join("vda.img");
        let damaged = vec![3u8; second.len()];
        fs::write(&target, &damaged).unwrap();
        let mut progress = StopAt {
            at: Some(DELTA_STEPS[0]),
            ..StopAt::default()
        };
        let err = restore_delta(
            &store,
            &target,
            &DeltaRestoreOptions::default(),
            &mut progress,
        )
        .unwrap_err();
        assert!(err.to_string().contains("the target is as it was"), "{err}");
        assert_eq!(fs::read(&target).unwrap(), damaged);
    }

    #[test]
    fn a_write_behind_the_restores_back_is_found_by_the_verification() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, second) = chain(dir.path());
        let target = dir.path().join("vda.img");
        let mut damaged = second.clone();
        damaged[BS] ^= 1;
        fs::write(&target, &damaged).unwrap();
        let mut progress = StopAt {
            meddle: Some((DELTA_STEPS[3], target.clone(), 5 * BS as u64 + 10)),
            ..StopAt::default()
        };
        let err = restore_delta(
            &store,
            &target,
            &DeltaRestoreOptions::default(),
            &mut progress,
        )
        .unwrap_err();
        assert!(
            matches!(err, Error::TargetDiffers { generation: 2, offset, .. } if offset == 5 * BS as u64),
            "{err}"
        );
        // Without the verification, the same restore reports success.
        fs::write(&target, &damaged).unwrap();
        let mut progress = StopAt {
            meddle: Some((DELTA_STEPS[3], target.clone(), 5 * BS as u64 + 10)),
            ..StopAt::default()
        };
        let options = DeltaRestoreOptions {
            verify: false,
            ..DeltaRestoreOptions::default()
        };
        let report = restore_delta(&store, &target, &options, &mut progress).unwrap();
        assert!(!report.verified);
    }

    #[test]
    fn a_corrupt_block_in_the_chain_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _, second) = chain(dir.path());
        // Generation 2's diff holds blocks 3 and 40; damage its payload.
        let diff = dir.path().join("disk.2");
        let mut bytes = fs::read(&diff).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid - 8..mid + 8] {
            *b ^= 0x5a;
        }
        fs::write(&diff, &bytes).unwrap();
        let target = dir.path().join("vda.img");
        let mut damaged = second.clone();
        damaged[3 * BS..4 * BS].fill(0xcc);
        damaged[40 * BS..41 * BS].fill(0xcc);
        fs::write(&target, &damaged).unwrap();
        let err = restore_delta(
            &store,
            &target,
            &DeltaRestoreOptions::default(),
            &mut NoProgress,
        );
        assert!(err.is_err(), "a damaged diff must fail the restore");
        let now = fs::read(&target).unwrap();
        for block in [3, 40] {
            let got = &now[block * BS..(block + 1) * BS];
            assert!(
                got == &damaged[block * BS..(block + 1) * BS]
                    || got == &second[block * BS..(block + 1) * BS],
                "block {block} holds bytes that are neither the target's nor the generation's"
            );
        }
    }

    #[test]
    fn a_delta_target_writes_only_blocks_that_match_the_digest() {
        use crate::{GenerationReader, ReaderOptions};
        let dir = tempfile::tempdir().unwrap();
        let (store, _, second) = chain(dir.path());
        let digest = store.digest_path(2, DigestFormat::V2);
        let size = second.len() as u64;
        let target = dir.path().join("vda.img");
        let mut damaged = second.clone();
        damaged[7 * BS + 3] ^= 1;
        fs::write(&target, &damaged).unwrap();
        let options = DeltaTargetOptions::default();
        // The size must be the digest's.
        let err = DeltaTarget::open(&target, &digest, None, size - 1, &options).unwrap_err();
        assert!(err.to_string().contains("another size"), "{err}");
        let mut t = DeltaTarget::open(&target, &digest, None, size, &options).unwrap();
        let reading = DumpOptions::default();
        let ranges = t.differing(&reading, &mut NoProgress).unwrap();
        assert_eq!(ranges, [(7 * BS as u64, 8 * BS as u64)]);
        // Wrong bytes, a piece of a block, an unaligned offset: refused.
        let wrong = vec![0u8; BS];
        assert!(t.write_checked(7 * BS as u64, &wrong).is_err());
        assert!(
            t.write_checked(7 * BS as u64, &second[7 * BS..7 * BS + 100])
                .is_err()
        );
        assert!(
            t.write_checked(7 * BS as u64 + 1, &second[7 * BS + 1..8 * BS + 1])
                .is_err()
        );
        assert!(t.write_checked(size, &[]).is_ok());
        assert_eq!(
            fs::read(&target).unwrap(),
            damaged,
            "nothing refused was written"
        );
        // The generation's bytes: written.
        let reader = GenerationReader::open(&store, &ReaderOptions::default()).unwrap();
        let mut block = vec![0u8; BS];
        reader.read_at(&mut block, 7 * BS as u64).unwrap();
        t.write_checked(7 * BS as u64, &block).unwrap();
        t.sync().unwrap();
        assert_eq!(t.bytes_written(), BS as u64);
        assert!(t.differing(&reading, &mut NoProgress).unwrap().is_empty());
        assert_eq!(fs::read(&target).unwrap(), second);
        // A missing file is created only when asked, 0600, and then every
        // block differs.
        let fresh = dir.path().join("fresh.img");
        assert!(DeltaTarget::open(&fresh, &digest, None, size, &options).is_err());
        let create = DeltaTargetOptions {
            create: true,
            ..options
        };
        let mut t = DeltaTarget::open(&fresh, &digest, None, size, &create).unwrap();
        assert!(t.created());
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&fresh).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let ranges = t.differing(&reading, &mut NoProgress).unwrap();
        let differing: u64 = ranges.iter().map(|(a, b)| b - a).sum();
        // Block 40 of generation 2 is all zeros: it already matches.
        assert_eq!(differing, size - BS as u64);
    }
}
