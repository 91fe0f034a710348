//! A restore's plan: the chain of generations K..1 to replay, checked
//! before anything is written (every generation there, one format, one
//! block size, parent fingerprints that link, a digest and sizes that
//! agree); the two ways to run it, [`RestorePlan::execute`] and
//! [`RestorePlan::verify`] (the replay itself is `replay`'s); and the
//! targets a restore refuses to write over.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use archive_format::{BlockSize, Compression, DiffFile, DigestFile, DigestFormat, HashAlgorithm};

use crate::block::BlockHashKey;
use crate::generation_source::{DiffBytes, GenerationSource};
use crate::progress::{Notice, Progress};
use crate::store::{DiffFormat, DiffLocation, GenerationStore};
use crate::{Error, Result};

use super::chain_walk::{chain_generations, walk_chain};
use super::legacy_batches::open_legacy;
use super::target::{self, Target};
use super::{RestoreOptions, RestoreReport};

/// The generations of a chain, newest first.
pub(crate) enum Chain {
    /// Legacy diffs, read record by record.
    Legacy(Vec<(DiffLocation, DiffBytes)>),
    /// v2 diffs, opened (their index and summary read).
    V2(Vec<(DiffLocation, DiffFile<DiffBytes>)>),
}

impl std::fmt::Debug for Chain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, diffs): (&str, Vec<&DiffLocation>) = match self {
            Chain::Legacy(d) => ("Legacy", d.iter().map(|(l, _)| l).collect()),
            Chain::V2(d) => ("V2", d.iter().map(|(l, _)| l).collect()),
        };
        f.debug_tuple(kind).field(&diffs).finish()
    }
}

/// A validated plan to restore one generation: the chain K..1 newest first,
/// its block size, and the digest of K.
///
/// Executing it reads generation K, then K-1, … 1, and writes each block
/// only from the newest generation that has it: restoring generation 30
/// writes as much as restoring generation 1. Legacy diffs are read record by
/// record, seeking past blocks a newer generation provided; v2 diffs are
/// read through their index, and a frame none of whose blocks is needed is
/// not read at all. A v2 chain whose fingerprints do not link is refused
/// before anything is written.
///
/// The work runs on every core ([`with_threads`](Self::with_threads)): the
/// calling thread decides from the indexes (v2) or reads in order (legacy)
/// which blocks each frame or batch of records provides; worker threads
/// read, decompress and hash them; the calling thread checks the hashes
/// against the digest and writes the blocks in that same order, with at
/// most two frames or batches per worker in flight. The image, the report
/// and the first error are the same with any thread count.
///
/// ```
/// use blockdiff_core::{BackupOptions, DumpSource, GenerationStore, NoProgress, RestoreOptions, RestorePlan, backup};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// let mut image = vec![1u8; 50_000];
/// backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
/// image[20_000] = 2;
/// backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
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
    pub(super) generation: u64,
    pub(super) chain: Chain,
    pub(super) block_size: BlockSize,
    pub(super) hash: HashAlgorithm,
    /// The key of keyed block hashes (an encrypted chain's), from the
    /// store.
    pub(super) hash_key: Option<BlockHashKey>,
    /// Exact source size, when the chain says (v2), or generation K's
    /// metadata does (`source_size`, both formats).
    pub(super) source_size: Option<u64>,
    pub(super) digest: Option<DigestFile>,
    /// The local store read: a restore never writes over one of its
    /// files.
    pub(super) store: Option<GenerationStore>,
    /// `NAME.K.meta.json`, for messages.
    pub(super) metadata_path: PathBuf,
    /// The size of the reads of a legacy diff
    /// ([`GenerationSource::stream_read_size`]).
    pub(super) stream_read_size: usize,
    /// The source size from generation K's metadata, when it has one.
    pub(super) metadata_size: Option<u64>,
    /// Notices found while planning, given to the progress when the plan
    /// runs.
    notices: Vec<Notice>,
    /// Threads that read, decompress and hash the chain; 0 is one per core.
    threads: usize,
}

/// What a checked plan knows, for a reader of the generation at random
/// ([`GenerationReader`](crate::GenerationReader)).
pub(crate) struct PlanParts {
    pub(crate) generation: u64,
    pub(crate) chain: Chain,
    pub(crate) block_size: BlockSize,
    pub(crate) hash: HashAlgorithm,
    pub(crate) hash_key: Option<BlockHashKey>,
    /// Exact source size when the chain (v2) or the metadata says.
    pub(crate) source_size: Option<u64>,
    pub(crate) digest: Option<DigestFile>,
    pub(crate) stream_read_size: usize,
    /// The chain is a local store's files, where a small positional read
    /// is cheap (from an object store each read is a ranged request).
    pub(crate) local: bool,
}

/// Generations for a message, newest first: `9, 7, 3` (the first and
/// last few of a long list).
pub(crate) fn list_generations(held: &[u64]) -> String {
    let show = |g: &[u64]| g.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
    if held.len() <= 12 {
        show(held)
    } else {
        format!(
            "{}, \u{2026}, {} ({} in all)",
            show(&held[..6]),
            show(&held[held.len() - 3..]),
            held.len()
        )
    }
}

/// An [`Error::Chain`]: `path` does not belong in the chain, for `detail`.
pub(super) fn chain_error(path: &Path, detail: String) -> Error {
    Error::Chain {
        path: path.to_owned(),
        detail,
    }
}

impl RestorePlan {
    /// Checks that generations 1..=K and the digest of K exist and agree,
    /// before anything is written. The chain is read from `store`: a
    /// [`GenerationStore`], or any other [`GenerationSource`] (an object
    /// store).
    pub fn new(store: &dyn GenerationSource, options: &RestoreOptions) -> Result<Self> {
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
                path: store.diff_path(generation, DiffFormat::Legacy(Compression::None)),
                generation,
                reason: format!("it is not committed: {} says {current}", ver.display()),
            });
        }
        let chain = walk_chain(store, generation).map_err(|e| match e {
            Error::MissingGeneration {
                path,
                generation: missing,
                reason,
            } if missing == generation => {
                Error::MissingGeneration {
                    path,
                    generation,
                    reason: match chain_generations(store, Some(current)) {
                        Ok(held) if !held.contains(&generation) => format!(
                            "it is not in the chain (a prune folded it into a newer one); the chain holds generations {}",
                            list_generations(&held)
                        ),
                        _ => reason,
                    },
                }
            }
            other => other,
        })?;
        let newest_format = match &chain {
            Chain::Legacy(_) => DigestFormat::Legacy,
            Chain::V2(_) => DigestFormat::V2,
        };
        let digest = if options.verify {
            let digest = store.open_digest(generation).map_err(|e| match e {
                Error::MissingGeneration { path, .. } => Error::MissingGeneration {
                    path,
                    generation,
                    reason:
                        "its digest checks the restore (restore without checking with --no-verify)"
                            .into(),
                },
                other => other,
            })?;
            Some(digest)
        } else {
            None
        };
        let mut plan = match chain {
            Chain::Legacy(diffs) => {
                Self::legacy_chain(generation, diffs, digest, store.stream_read_size())?
            }
            Chain::V2(diffs) => Self::v2_chain(generation, diffs, digest)?,
        };
        if let Some(d) = &plan.digest
            && d.spec().format != newest_format
        {
            return Err(chain_error(
                d.path(),
                format!(
                    "is a {:?} digest but the chain is {:?}",
                    d.spec().format,
                    newest_format
                ),
            ));
        }
        plan.hash = plan
            .digest
            .as_ref()
            .map_or(plan.hash, |d| d.spec().algorithm);
        plan.store = store.local_store().cloned();
        plan.hash_key = store.block_hash_key();
        plan.metadata_path = store.metadata_path(generation);
        plan.stream_read_size = store.stream_read_size();
        plan.check_size(store, options)?;
        Ok(plan)
    }

    /// Checks the size of generation K against what else the store says:
    /// the `source_size` of its metadata (both formats), and for a legacy
    /// digest, which records no size, generation K−1's digest.
    fn check_size(&mut self, store: &dyn GenerationSource, options: &RestoreOptions) -> Result<()> {
        let k = self.generation;
        let meta_path = store.metadata_path(k);
        self.metadata_size = match store.read_metadata(k) {
            Ok(Some(m)) => match m.get("source_size").map(|v| v.trim().parse::<u64>()) {
                Some(Ok(size)) => Some(size),
                Some(Err(_)) => {
                    self.notices.push(Notice::UnusableMetadata {
                        path: meta_path.clone(),
                        detail: "its source_size is not a number of bytes".into(),
                    });
                    None
                }
                None => None,
            },
            Ok(None) => None,
            Err(e) => {
                self.notices.push(Notice::UnusableMetadata {
                    path: meta_path.clone(),
                    detail: e.to_string(),
                });
                None
            }
        };
        let bs = self.block_size;
        match (&self.chain, self.metadata_size) {
            (Chain::V2(diffs), Some(size)) if Some(size) != self.source_size => {
                return Err(chain_error(
                    &meta_path,
                    format!(
                        "says generation {k}'s source was {size} bytes but {} says {}: one of them is damaged or of another run; nothing was written",
                        diffs[0].0.path.display(),
                        self.source_size.unwrap_or(0)
                    ),
                ));
            }
            (Chain::Legacy(_), Some(size)) => {
                if let Some(d) = &self.digest
                    && d.entries() != bs.blocks_in(size)
                {
                    return Err(chain_error(
                        d.path(),
                        format!(
                            "lists {} blocks of {bs} bytes but {} says the source was {size} bytes ({} blocks): the digest is cut short or damaged; nothing was written",
                            d.entries(),
                            meta_path.display(),
                            bs.blocks_in(size)
                        ),
                    ));
                }
                self.source_size = Some(size);
            }
            _ => {}
        }
        if let (Chain::Legacy(_), Some(d), None, false, true) = (
            &self.chain,
            &self.digest,
            self.metadata_size,
            options.source_shrank,
            k > 1,
        ) && let Ok((prev_path, DigestFormat::Legacy)) = store.find_digest(k - 1)
            // An unreadable older digest only loses this check; the
            // records of diff K are still checked against digest K.
            && let Ok(prev) = DigestFile::open(&prev_path)
            && prev.block_size() == bs
            && prev.entries() > d.entries()
        {
            return Err(chain_error(
                d.path(),
                format!(
                    "lists {} blocks, fewer than the {} of generation {} ({}): either the source shrank, or this digest was cut short (the original tool wrote digests without fsync). If the source really shrank, say so with --source-shrank; nothing was written",
                    d.entries(),
                    prev.entries(),
                    k - 1,
                    prev_path.display()
                ),
            ));
        }
        Ok(())
    }

    fn legacy_chain(
        generation: u64,
        diffs: Vec<(DiffLocation, DiffBytes)>,
        digest: Option<DigestFile>,
        read_size: usize,
    ) -> Result<Self> {
        let mut block_size = digest.as_ref().map(archive_format::DigestFile::block_size);
        for (diff, bytes) in &diffs {
            // The header only: a few bytes, not a whole read of the stream.
            let bs = BlockSize::new(open_legacy(diff, bytes, read_size.min(4096))?.block_size())?;
            match block_size {
                None => block_size = Some(bs),
                Some(expected) if expected != bs => {
                    return Err(chain_error(
                        &diff.path,
                        format!(
                            "block size is {bs} but the chain up to generation {generation} uses {expected}; a chain keeps one block size"
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(RestorePlan {
            generation,
            chain: Chain::Legacy(diffs),
            block_size: block_size.unwrap_or_default(),
            hash: HashAlgorithm::Md5,
            source_size: None,
            digest,
            hash_key: None,
            store: None,
            metadata_path: PathBuf::new(),
            stream_read_size: 256 << 10,
            metadata_size: None,
            notices: Vec::new(),
            threads: 0,
        })
    }

    /// Checks a v2 chain that [`walk_chain`] found.
    fn v2_chain(
        generation: u64,
        chain: Vec<(DiffLocation, DiffFile<DiffBytes>)>,
        digest: Option<DigestFile>,
    ) -> Result<Self> {
        let (newest_loc, newest) = &chain[0];
        let (bs, hash) = (newest.header().block_size, newest.header().hash);
        for (i, (loc, diff)) in chain.iter().enumerate() {
            let h = diff.header();
            if h.block_size != bs || h.hash != hash {
                return Err(chain_error(
                    &loc.path,
                    format!(
                        "uses block size {} and {}, but generation {generation} uses {bs} and {hash}: a chain keeps one block size and hash",
                        h.block_size, h.hash
                    ),
                ));
            }
            // The parent, next in the list (the walk followed the header's
            // parent generation), links by its digest's fingerprint.
            let parent = chain
                .get(i + 1)
                .map_or([0; 32], |(_, p)| p.summary().fingerprint);
            if h.parent != parent {
                return Err(chain_error(
                    &loc.path,
                    format!(
                        "its parent fingerprint does not match generation {}'s digest: it belongs to another chain",
                        h.parent_generation().unwrap_or(0)
                    ),
                ));
            }
        }
        let source_size = newest.summary().source_size;
        if let Some(d) = &digest {
            if d.spec().algorithm != hash {
                return Err(chain_error(
                    d.path(),
                    format!(
                        "holds {} hashes but {} says {hash}",
                        d.spec().algorithm,
                        newest_loc.path.display()
                    ),
                ));
            }
            if d.fingerprint() != Some(newest.summary().fingerprint) {
                return Err(chain_error(
                    d.path(),
                    format!(
                        "fingerprint does not match {}: the digest and diff are of different runs",
                        newest_loc.path.display()
                    ),
                ));
            }
            if d.source_size() != Some(source_size) {
                return Err(chain_error(
                    d.path(),
                    format!(
                        "describes another source size than {}",
                        newest_loc.path.display()
                    ),
                ));
            }
        }
        Ok(RestorePlan {
            generation,
            chain: Chain::V2(chain),
            block_size: BlockSize::new(bs)?,
            hash,
            source_size: Some(source_size),
            digest,
            hash_key: None,
            store: None,
            metadata_path: PathBuf::new(),
            stream_read_size: 256 << 10,
            metadata_size: None,
            notices: Vec::new(),
            threads: 0,
        })
    }

    /// Sets how many threads read, decompress and hash the chain while this
    /// thread checks and writes the blocks in order: 0 (the default) is one
    /// per core, 1 does everything on the calling thread. The result is
    /// the same whatever the count, errors included.
    ///
    /// A count above [`DumpOptions::max_threads`](crate::DumpOptions::max_threads)
    /// is [`Error::TooManyThreads`] (each thread keeps about two frames or
    /// 1 MiB batches of records in flight).
    pub fn with_threads(mut self, threads: usize) -> Result<Self> {
        let max = crate::DumpOptions::max_threads();
        if threads > max {
            return Err(Error::TooManyThreads {
                requested: threads,
                max,
            });
        }
        self.threads = threads;
        Ok(self)
    }

    /// The worker threads a replay starts.
    pub(super) fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
        }
    }

    /// The plan's parts, for a reader of the generation at random.
    pub(crate) fn into_parts(self) -> PlanParts {
        PlanParts {
            generation: self.generation,
            chain: self.chain,
            block_size: self.block_size,
            hash: self.hash,
            hash_key: self.hash_key,
            source_size: self.source_size,
            digest: self.digest,
            stream_read_size: self.stream_read_size,
            local: self.store.is_some(),
        }
    }

    /// The generation this plan restores.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The chain's block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// The number of blocks of the restored image, when known before
    /// reading the chain (a v2 chain, or with the digest).
    pub fn block_count(&self) -> Option<u64> {
        match (self.source_size, &self.digest) {
            (Some(size), _) => Some(self.block_size.blocks_in(size)),
            (None, Some(d)) => Some(d.entries()),
            (None, None) => None,
        }
    }

    /// Writes the image to `target`.
    ///
    /// A regular file is written as an anonymous temporary file in the
    /// target's directory (`O_TMPFILE`; elsewhere an unpredictable name
    /// created exclusively) and takes the target's name only when complete
    /// and synced, so a failed or killed restore leaves an existing file
    /// untouched and nothing beside it. A new file is created 0600; a file
    /// replaced keeps its owner, group and mode. A block device is written
    /// in place, never past its end, and must be large enough for the
    /// whole image. Refused: a target that is a symbolic link (except one
    /// owned by root or the user running the restore that resolves to a
    /// block device, as `/dev/VG/LV` does), one of the
    /// chain's own files (by name or by device and inode: a hard link is
    /// caught too) or any file that looks like a store's, and a new file
    /// under `/dev` (a missing device).
    ///
    /// Steps ([`Progress::at_step`]): `restore:write` (the first block
    /// written), `restore:sync` (before the fsync), `restore:rename-target`
    /// (before the temporary takes the target's name).
    pub fn execute(mut self, target: &Path, progress: &mut dyn Progress) -> Result<RestoreReport> {
        self.prepare_target(target, progress)?;
        let mut out = Target::open(target, true)?;
        if let (Some(n), Some(size)) = (self.block_count(), out.device_size) {
            let need = self.source_size.unwrap_or(if n == 0 {
                0
            } else {
                self.block_size.offset_of(n - 1) + 1
            });
            if size < need {
                return Err(Error::TargetTooSmall {
                    path: target.to_owned(),
                    need,
                    have: size,
                });
            }
        }
        let report = self.replay(&mut out, false, progress)?;
        out.finish(report.source_size, progress)?;
        Ok(report)
    }

    /// Before a target is written in place: gives the plan's notices to
    /// `progress` and refuses a target that is a file of a backup.
    pub(super) fn prepare_target(
        &mut self,
        target: &Path,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        for notice in self.notices.drain(..) {
            progress.notice(notice);
        }
        refuse_store_target(self.store.as_ref(), target)
    }

    /// Checks the chain without writing anything: every frame CRC and
    /// trailer of every generation (all frames, needed or not), the digest's
    /// fingerprint, and that the replayed content hashes to the digest of
    /// generation K.
    pub fn verify(mut self, progress: &mut dyn Progress) -> Result<RestoreReport> {
        for notice in self.notices.drain(..) {
            progress.notice(notice);
        }
        let Some(digest) = &self.digest else {
            return Err(Error::InvalidOption(
                "verification needs the digest of the generation".into(),
            ));
        };
        digest.verify()?;
        self.replay(&mut Target::discard(), true, progress)
    }

    /// The file that names the expected blocks of generation K, for
    /// messages: its digest, else (legacy) its metadata, else its diff.
    pub(super) fn size_authority(&self) -> PathBuf {
        match (&self.digest, &self.chain) {
            (Some(d), _) => d.path().to_owned(),
            (None, Chain::Legacy(_)) if self.metadata_size.is_some() => self.metadata_path.clone(),
            (None, Chain::V2(diffs)) => diffs[0].0.path.clone(),
            (None, Chain::Legacy(diffs)) => diffs[0].0.path.clone(),
        }
    }
}

/// Refuses a restore target that is a file of a store: one of the files of
/// `store` (by name in its directory, or by device and inode, so a hard
/// link or another spelling is caught), or any file named like a store's
/// (`X.ver`, `X.N`, `X.N.gz`, `X.N.md5`, `X.N.digest`, `X.N.meta.json`,
/// `X.lock`) beside an `X.ver` or `X.1`.
pub(super) fn refuse_store_target(store: Option<&GenerationStore>, target: &Path) -> Result<()> {
    let refuse = |what: String| {
        Err(Error::BadTarget {
            path: target.to_owned(),
            detail: format!(
                "{what}; a restore never writes over a backup's files: restore to another path"
            ),
        })
    };
    let Some(name) = target.file_name() else {
        return Ok(());
    };
    let target_dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    if let Some(store) = store
        && let Some(store_name) = store.name().file_name()
    {
        let mut prefix = store_name.to_owned();
        prefix.push(".");
        let prefix = prefix.as_encoded_bytes().to_vec();
        let same_dir = match (
            target::identity(&target_dir)?,
            target::identity(&store.dir())?,
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        if same_dir
            && let Some(rest) = name.as_encoded_bytes().strip_prefix(prefix.as_slice())
            && is_store_file_suffix(rest)
        {
            return refuse(format!(
                "is named like a file of the backup {}",
                store.name().display()
            ));
        }
        if let Some(id) = target::identity(target)?
            && let Ok(entries) = std::fs::read_dir(store.dir())
        {
            for entry in entries.flatten() {
                if entry.file_name().as_encoded_bytes().starts_with(&prefix)
                    && target::identity(&entry.path())? == Some(id)
                {
                    return refuse(format!(
                        "is {} of the backup {} (the same file)",
                        entry.path().display(),
                        store.name().display()
                    ));
                }
            }
        }
    }
    let bytes = name.as_encoded_bytes();
    for (i, _) in bytes.iter().enumerate().filter(|&(_, &c)| c == b'.') {
        if i == 0 || !is_store_suffix(&bytes[i + 1..]) {
            continue;
        }
        let base = target_dir.join(std::ffi::OsStr::from_bytes(&bytes[..i]));
        let candidate = GenerationStore::new(&base);
        if candidate.ver_path().exists()
            || candidate
                .diff_path(1, DiffFormat::Legacy(Compression::None))
                .exists()
            || candidate
                .diff_path(1, DiffFormat::Legacy(Compression::Gzip))
                .exists()
        {
            return refuse(format!(
                "looks like a file of the backup {}",
                base.display()
            ));
        }
    }
    Ok(())
}

/// Whether `s` is what follows `NAME.` in a store's file names, or in the
/// temporaries a run makes of them (`NAME.3.tmp`, `NAME.ver.tmp`). Other
/// files beside the store (`NAME.img`) are not the backup's.
fn is_store_file_suffix(s: &[u8]) -> bool {
    is_store_suffix(s) || s.strip_suffix(b".tmp").is_some_and(is_store_suffix)
}

/// Whether `s` is what follows `NAME.` in a store's file names.
fn is_store_suffix(s: &[u8]) -> bool {
    if s == b"ver" || s == b"lock" || s == b"fold" {
        return true;
    }
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0
        && matches!(
            &s[digits..],
            b"" | b".gz" | b".md5" | b".digest" | b".meta.json" | b".fold"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;
    use archive_format::{DiffHeader, DiffWriter, FrameBuilder, FrameCompression, FrameCompressor};

    /// A v2 generation 1 that claims a source of 2^60 bytes with block
    /// size 1, holding two blocks: a crafted file of a few hundred bytes.
    fn crafted_bomb(path: &Path) {
        let header = DiffHeader {
            block_size: 1,
            source_size: 1 << 60,
            generation: 1,
            hash: HashAlgorithm::Blake3,
            compression: FrameCompression::None,
            level: 0,
            created_secs: 0,
            created_nanos: 0,
            parent: [0; 32],
            folded_parent: 0,
        };
        let mut w = DiffWriter::new(Vec::new(), header).unwrap();
        let mut c = FrameCompressor::new(FrameCompression::None, 0).unwrap();
        let mut f = FrameBuilder::new();
        f.push_zero(0).unwrap();
        f.push_data(1, b"x").unwrap();
        let mut bytes = Vec::new();
        let meta = f.encode(&mut c, &mut bytes).unwrap();
        w.append_frame(&bytes, &meta).unwrap();
        let file = w.finish(1 << 60, [0; 32]).unwrap();
        assert!(file.len() < 512, "{} bytes", file.len());
        std::fs::write(path, file).unwrap();
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_crafted_huge_source_size_allocates_nothing() {
        // Issue 11, item 10: this aborted with a 2^57-byte allocation.
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        crafted_bomb(&store.diff_path(1, DiffFormat::Legacy(Compression::None)));
        std::fs::write(store.ver_path(), "1\n").unwrap();
        let options = RestoreOptions {
            verify: false,
            ..RestoreOptions::default()
        };
        let target = dir.path().join("restored");
        let plan = RestorePlan::new(&store, &options).unwrap();
        assert_eq!(plan.block_count(), Some(1 << 60));
        let err = plan.execute(&target, &mut NoProgress).unwrap_err();
        assert!(
            matches!(err, Error::MissingBlocks { count, .. } if count == (1 << 60) - 2),
            "{err}"
        );
        assert!(!target.exists(), "a failed restore leaves no target");
        assert_eq!(
            listing(dir.path()),
            ["db.1", "db.ver"],
            "and nothing beside it"
        );
    }

    #[test]
    fn without_o_tmpfile_the_named_temporary_never_outlives_the_restore() {
        target::WITHOUT_TMPFILE.with(|w| w.set(true));
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        let mut image: Vec<u8> = (0..40_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let options = crate::BackupOptions::default();
        let source = crate::DumpSource::from_bytes(&image, "image");
        crate::backup(&store, source, &options, &mut NoProgress).unwrap();
        image[100] ^= 1;
        let source = crate::DumpSource::from_bytes(&image, "image");
        crate::backup(&store, source, &options, &mut NoProgress).unwrap();
        let store_listing = listing(dir.path());
        let target = dir.path().join("restored");
        // Success: the target, and nothing else.
        let plan = RestorePlan::new(&store, &RestoreOptions::default()).unwrap();
        plan.execute(&target, &mut NoProgress).unwrap();
        assert!(std::fs::read(&target).unwrap() == image);
        let mut expected = store_listing.clone();
        expected.push("restored".into());
        expected.sort();
        assert_eq!(listing(dir.path()), expected);
        // A failure once the temporary exists (a damaged frame of
        // generation 2, found while replaying): the target as it was,
        // nothing beside it.
        std::fs::write(&target, b"old").unwrap();
        let diff2 = store.diff_path(2, DiffFormat::Legacy(Compression::None));
        let saved = std::fs::read(&diff2).unwrap();
        let mut damaged = saved.clone();
        damaged[160] ^= 0x40;
        std::fs::write(&diff2, &damaged).unwrap();
        let plan = RestorePlan::new(&store, &RestoreOptions::default()).unwrap();
        assert!(plan.execute(&target, &mut NoProgress).is_err());
        std::fs::write(&diff2, saved).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(listing(dir.path()), expected);
        // Stopped by a signal while writing: the same.
        struct Stop;
        impl Progress for Stop {
            fn should_stop(&mut self) -> Option<String> {
                Some("interrupted by SIGTERM".into())
            }
        }
        let plan = RestorePlan::new(&store, &RestoreOptions::default()).unwrap();
        let err = plan.execute(&target, &mut Stop).unwrap_err();
        assert!(matches!(err, Error::RestoreStopped { .. }), "{err}");
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(listing(dir.path()), expected);
        target::WITHOUT_TMPFILE.with(|w| w.set(false));
    }

    #[test]
    fn store_suffixes() {
        for s in [
            "ver",
            "lock",
            "1",
            "12.gz",
            "3.md5",
            "4.digest",
            "5.meta.json",
            "fold",
            "6.fold",
        ] {
            assert!(is_store_suffix(s.as_bytes()), "{s}");
        }
        for s in ["", "img", "1x", "gz", "1.tmp", "v2"] {
            assert!(!is_store_suffix(s.as_bytes()), "{s}");
        }
    }
}
