//! Restore: replay a chain of generations onto a file or block device,
//! writing every block once, and check it against the digest.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use archive_format::{
    BlockHash, BlockSize, Compression, DIFF_MAGIC, DiffFile, DigestFile, DigestFormat, ExtentKind,
    Frame, FrameDecompressor, HashAlgorithm, LegacyReader, RecordHeader, SkipRead, StreamReader,
    data_len, read_full,
};

use crate::block::BlockHasher;
use crate::error::{ArchiveContext, IoContext};
use crate::ordered;
use crate::progress::{Notice, Progress};
use crate::store::{DiffFormat, DiffLocation, GenerationStore};
use crate::{Error, Result};

mod block_set;
mod target;
mod vectored;
mod window;

use block_set::BlockSet;
use target::Target;
use window::OutputWindow;

/// How a chain is restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The generation to restore; `None` for the last committed one.
    pub generation: Option<u64>,
    /// Check every block against the generation's digest (on by default).
    /// Without it a truncated or corrupt legacy diff goes unnoticed.
    pub verify: bool,
    /// The operator confirms that the source really shrank: a legacy
    /// digest of generation K listing fewer blocks than generation K−1's
    /// is then trusted. Without it (and without a `source_size` in
    /// generation K's metadata that agrees) such a chain is refused, since
    /// a digest cut short (the original tool wrote it without fsync) looks
    /// exactly like this and would restore a short image.
    pub source_shrank: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            generation: None,
            verify: true,
            source_shrank: false,
        }
    }
}

/// What a restore (or a verification) did.
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
    /// v2 frames read and checked.
    pub frames_read: u64,
    /// v2 frames not needed, so not read.
    pub frames_skipped: u64,
}

/// The generations of a chain, newest first.
#[derive(Debug)]
enum Chain {
    Legacy(Vec<DiffLocation>),
    V2(Vec<(DiffLocation, DiffFile<File>)>),
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
    generation: u64,
    chain: Chain,
    block_size: BlockSize,
    hash: HashAlgorithm,
    /// Exact source size, when the chain says (v2), or generation K's
    /// metadata does (`source_size`, both formats).
    source_size: Option<u64>,
    digest: Option<DigestFile>,
    /// The store's `NAME`: a restore never writes over one of its files.
    store: GenerationStore,
    /// The source size from generation K's metadata, when it has one.
    metadata_size: Option<u64>,
    /// Notices found while planning, given to the progress when the plan
    /// runs.
    notices: Vec<Notice>,
    /// Threads that read, decompress and hash the chain; 0 is one per core.
    threads: usize,
}

fn open_legacy(diff: &DiffLocation) -> Result<LegacyReader<Box<dyn SkipRead + Send>>> {
    let file = File::open(&diff.path).ctx(&diff.path, "open")?;
    let compression = match diff.format {
        DiffFormat::Legacy(c) => c,
        DiffFormat::V2 { .. } => Compression::None,
    };
    LegacyReader::new(compression.reader(file)).in_file(&diff.path)
}

fn chain_error(path: &Path, detail: String) -> Error {
    Error::Chain {
        path: path.to_owned(),
        detail,
    }
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
                path: store.diff_path(generation, DiffFormat::Legacy(Compression::None)),
                generation,
                reason: format!("it is not committed: {} says {current}", ver.display()),
            });
        }
        let mut diffs = Vec::new();
        for g in (1..=generation).rev() {
            let diff = store.find_diff(g).map_err(|e| match e {
                Error::MissingGeneration { path, generation: missing, .. } => Error::MissingGeneration {
                    path,
                    generation: missing,
                    reason: format!("restoring generation {generation} needs every generation from 1 to {generation}"),
                },
                other => other,
            })?;
            diffs.push(diff);
        }
        let newest_format = diffs[0].format.digest_format();
        if let Some(other) = diffs
            .iter()
            .find(|d| d.format.digest_format() != newest_format)
        {
            return Err(chain_error(
                &other.path,
                format!(
                    "is {} but generation {generation} ({}) is {}: a chain keeps one format (is one of them damaged or cut short?)",
                    other.format,
                    diffs[0].path.display(),
                    diffs[0].format
                ),
            ));
        }
        let digest = if options.verify {
            let (path, _) = store.find_digest(generation).map_err(|e| match e {
                Error::MissingGeneration { path, .. } => Error::MissingGeneration {
                    path,
                    generation,
                    reason:
                        "its digest checks the restore (restore without checking with --no-verify)"
                            .into(),
                },
                other => other,
            })?;
            Some(DigestFile::open(&path)?)
        } else {
            None
        };
        let mut plan = match newest_format {
            DigestFormat::Legacy => Self::legacy_chain(generation, diffs, digest)?,
            DigestFormat::V2 => Self::v2_chain(generation, diffs, digest)?,
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
        plan.store = store.clone();
        plan.check_size(store, options)?;
        Ok(plan)
    }

    /// Checks the size of generation K against what else the store says:
    /// the `source_size` of its metadata (both formats), and for a legacy
    /// digest, which records no size, generation K−1's digest.
    fn check_size(&mut self, store: &GenerationStore, options: &RestoreOptions) -> Result<()> {
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
        diffs: Vec<DiffLocation>,
        digest: Option<DigestFile>,
    ) -> Result<Self> {
        let mut block_size = digest.as_ref().map(archive_format::DigestFile::block_size);
        for diff in &diffs {
            let bs = BlockSize::new(open_legacy(diff)?.block_size())?;
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
            store: GenerationStore::new(""),
            metadata_size: None,
            notices: Vec::new(),
            threads: 0,
        })
    }

    fn v2_chain(
        generation: u64,
        diffs: Vec<DiffLocation>,
        digest: Option<DigestFile>,
    ) -> Result<Self> {
        let mut chain = Vec::with_capacity(diffs.len());
        for (loc, g) in diffs.into_iter().zip((1..=generation).rev()) {
            let file = File::open(&loc.path).ctx(&loc.path, "open")?;
            let diff = DiffFile::open(file).in_file(&loc.path)?;
            if diff.header().generation != g {
                return Err(chain_error(
                    &loc.path,
                    format!(
                        "says it is generation {}, not {g}",
                        diff.header().generation
                    ),
                ));
            }
            chain.push((loc, diff));
        }
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
            // The parent of generation g is generation g-1, next in the list.
            let parent = chain
                .get(i + 1)
                .map_or([0; 32], |(_, p)| p.summary().fingerprint);
            if h.parent != parent {
                return Err(chain_error(
                    &loc.path,
                    format!(
                        "its parent fingerprint does not match generation {}'s digest: it belongs to another chain",
                        h.generation.saturating_sub(1)
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
            store: GenerationStore::new(""),
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
    fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            n => n,
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
        for notice in self.notices.drain(..) {
            progress.notice(notice);
        }
        refuse_store_target(Some(&self.store), target)?;
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
    fn size_authority(&self) -> PathBuf {
        match (&self.digest, &self.chain) {
            (Some(d), _) => d.path().to_owned(),
            (None, Chain::Legacy(_)) if self.metadata_size.is_some() => {
                self.store.metadata_path(self.generation)
            }
            (None, Chain::V2(diffs)) => diffs[0].0.path.clone(),
            (None, Chain::Legacy(diffs)) => diffs[0].path.clone(),
        }
    }

    /// Replays the chain newest first into `out`. With `check_all`, every
    /// block of every generation is read and checked, needed or not.
    fn replay(
        &mut self,
        out: &mut Target,
        check_all: bool,
        progress: &mut dyn Progress,
    ) -> Result<RestoreReport> {
        let block_count = self.block_count();
        let authority = self.size_authority();
        let hasher = BlockHasher::new(self.hash, self.block_size);
        let verified = self.digest.is_some();
        let threads = self.worker_threads();
        let mut replay = Replay {
            block_size: self.block_size,
            block_count,
            check_all,
            threads,
            hasher: &hasher,
            checker: BlockChecker {
                digest: self.digest.as_mut(),
                hasher: &hasher,
            },
            written: BlockSet::new(),
            report: RestoreReport {
                generation: self.generation,
                verified,
                ..RestoreReport::default()
            },
            end: 0,
            out,
            progress,
        };
        match &self.chain {
            Chain::Legacy(diffs) => replay.legacy(diffs, &authority)?,
            Chain::V2(diffs) => replay.v2(diffs)?,
        }
        let Replay {
            written,
            mut report,
            end,
            ..
        } = replay;
        if let Some(n) = block_count
            && (self.digest.is_some() || self.source_size.is_some())
        {
            let (count, first) = written.missing_below(n);
            if count > 0 {
                return Err(Error::MissingBlocks {
                    digest: authority,
                    count,
                    first_offset: self.block_size.offset_of(first),
                });
            }
        }
        if let (Chain::Legacy(_), Some(size)) = (&self.chain, self.metadata_size)
            && end != size
        {
            return Err(chain_error(
                &self.store.metadata_path(self.generation),
                format!(
                    "says generation {}'s source was {size} bytes, but the chain restores {end}; nothing was written",
                    self.generation
                ),
            ));
        }
        report.source_size = self.source_size.unwrap_or(end);
        Ok(report)
    }
}

/// Refuses a restore target that is a file of a store: one of the files of
/// `store` (by name in its directory, or by device and inode, so a hard
/// link or another spelling is caught), or any file named like a store's
/// (`X.ver`, `X.N`, `X.N.gz`, `X.N.md5`, `X.N.digest`, `X.N.meta.json`,
/// `X.lock`) beside an `X.ver` or `X.1`.
fn refuse_store_target(store: Option<&GenerationStore>, target: &Path) -> Result<()> {
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
    if s == b"ver" || s == b"lock" {
        return true;
    }
    let digits = s.iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0
        && matches!(
            &s[digits..],
            b"" | b".gz" | b".md5" | b".digest" | b".meta.json"
        )
}

/// Checks restored blocks against the digest of the generation restored.
struct BlockChecker<'a> {
    digest: Option<&'a mut DigestFile>,
    hasher: &'a BlockHasher,
}

impl BlockChecker<'_> {
    fn check(&mut self, index: u64, data: &[u8], from: &Path, stream_offset: u64) -> Result<()> {
        if self.digest.is_none() {
            return Ok(());
        }
        let hash = self.hasher.hash(data).0;
        self.check_hash(index, Some(&hash), from, stream_offset)
    }

    /// Checks block `index`, whose hash a worker computed (`None`: it was
    /// not, which no digest matches).
    fn check_hash(
        &mut self,
        index: u64,
        hash: Option<&BlockHash>,
        from: &Path,
        stream_offset: u64,
    ) -> Result<()> {
        let Some(digest) = self.digest.as_deref_mut() else {
            return Ok(());
        };
        if digest.entry(index)?.as_ref() != hash {
            return Err(Error::Mismatch {
                path: from.to_owned(),
                block_offset: index * u64::from(digest.block_size().get()),
                stream_offset,
                digest: digest.path().to_owned(),
            });
        }
        Ok(())
    }
}

/// Most bytes of block data in one batch of legacy records handed to a
/// hashing thread (at least one record).
const LEGACY_BATCH_BYTES: usize = 1 << 20;

/// Most records in one batch: with tiny blocks, the records' descriptions
/// and hashes stay small too.
const LEGACY_BATCH_RECORDS: usize = 4096;

/// Most blocks of one v2 frame hashed on a worker. A frame may hold 64 MiB
/// of blocks of a few bytes (a crafted chain): hashes for all of them would
/// take far more memory than the frame, so the blocks of such a frame are
/// hashed by the writer as it checks them, as one thread would.
const FRAME_HASHES: usize = 1 << 16;

/// Job buffers in flight per worker thread: one being worked on, one
/// waiting (in the queue, or for an earlier job to be written).
const JOBS_PER_THREAD: usize = 2;

/// Job buffers in flight per worker thread for a v2 chain whose frames
/// all span at most [`SHORT_FRAME_SPAN`] (what the dump writes): the
/// workers run further ahead of the writer, whose writes stall now and
/// then (dirty-page throttling). Measured on a 30-generation chain of
/// 1 GiB, cold cache, median of 4: generation 30 took 1.40-1.49 s with 2
/// jobs per thread, 1.26-1.42 s with 8 and 1.31 s with 16; generation 1
/// was unchanged. A job then holds about 1 MiB of frames (at most 64
/// small ones, 4 MiB), so memory stays in the tens of MiB.
const JOBS_PER_THREAD_SHORT_FRAMES: usize = 8;

/// The longest frame span, in bytes of the target, that lets a v2 replay
/// keep [`JOBS_PER_THREAD_SHORT_FRAMES`] jobs per thread in flight.
const SHORT_FRAME_SPAN: u64 = 1 << 20;

/// The state of one replay: what is written, checked and counted. The
/// chain is read on worker threads ([`ordered::run`]); everything here
/// stays on the calling thread.
struct Replay<'a, 'p> {
    block_size: BlockSize,
    block_count: Option<u64>,
    check_all: bool,
    threads: usize,
    hasher: &'a BlockHasher,
    checker: BlockChecker<'a>,
    /// The blocks taken so far, marked when the job that provides them is
    /// planned: which generation provides a block depends only on the
    /// chain's indexes (v2) or record headers (legacy), never on the data.
    written: BlockSet,
    report: RestoreReport,
    /// End of the last byte written (legacy: the restored size).
    end: u64,
    out: &'a mut Target,
    progress: &'p mut dyn Progress,
}

/// A range of blocks a v2 frame provides, in the order it is written.
#[derive(Debug, Clone, Copy)]
enum FrameOp {
    /// Blocks `first..end` of a data extent, whose bytes start at `at` in
    /// the frame's payload.
    Data { first: u64, end: u64, at: usize },
    /// Blocks `first..end` of a zero extent.
    Zero { first: u64, end: u64 },
}

/// Frames planned into one job (read, decompressed and hashed by one
/// worker, written in order): small frames, as a long chain's newer
/// generations hold, are taken together, so that the handing of a job to
/// a worker and back is paid once per stretch of frames rather than per
/// frame.
#[derive(Default)]
struct FrameJob {
    frames: Vec<PlannedFrame>,
    /// How many of `frames` are planned.
    used: usize,
}

/// What planning the next frame of a job gave.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Planned,
    /// A large frame, left for the next job.
    Later,
    Done,
}

/// Frames per job, at most.
const FRAMES_PER_JOB: usize = 64;

/// The largest frame (bytes of data it holds) that may share a job: a
/// larger one is always the first of its job, so that a job's buffers hold
/// at most one large frame and [`FRAMES_PER_JOB`] − 1 small ones.
const SMALL_FRAME: usize = 64 << 10;

/// One v2 frame to read: planned on the calling thread, read,
/// decompressed and hashed on a worker, written on the calling thread.
#[derive(Default)]
struct PlannedFrame {
    /// Index in the chain (newest first) of the generation, and the frame.
    diff: usize,
    frame: usize,
    /// Bytes of data the frame holds (its data extents).
    raw: usize,
    /// The window of the target it is planned for (see `OutputWindow`).
    window: u64,
    /// What the frame provides (empty for a frame read only to be checked).
    ops: Vec<FrameOp>,
    /// The frame, read and decompressed.
    frame_data: Frame,
    /// With a digest: the hashes of the data blocks of `ops`, in order,
    /// when the worker computed them (`hashed`).
    hashes: Vec<BlockHash>,
    hashed: bool,
    /// Why the frame could not be read.
    error: Option<Error>,
}

/// A worker's own buffers for reading frames.
#[derive(Default)]
struct FrameReader {
    raw: Vec<u8>,
    decompressor: FrameDecompressor,
}

/// One record of a [`RecordBatch`].
#[derive(Debug, Clone, Copy)]
struct BatchRecord {
    /// Index in the chain (newest first) of the generation.
    diff: usize,
    header: RecordHeader,
    index: u64,
    /// Where its data is in the batch's `data`.
    start: usize,
    len: usize,
}

/// Consecutive legacy records to write: read on the calling thread, hashed
/// on a worker, written on the calling thread.
#[derive(Default)]
struct RecordBatch {
    records: Vec<BatchRecord>,
    /// The records' data, one after the other.
    data: Vec<u8>,
    /// With a digest: the hash of each record's data.
    hashes: Vec<BlockHash>,
    /// What stopped the reading after these records.
    error: Option<Error>,
}

/// Reads a legacy chain newest first, record by record, into batches.
struct LegacyBatches<'d> {
    diffs: &'d [DiffLocation],
    authority: &'d Path,
    block_size: BlockSize,
    block_count: Option<u64>,
    check_all: bool,
    /// The diff being read (its index is `next_diff - 1`).
    reader: Option<LegacyReader<Box<dyn SkipRead + Send>>>,
    next_diff: usize,
    /// One record's data, as read.
    block: Vec<u8>,
    done: bool,
}

impl LegacyBatches<'_> {
    /// Fills `batch` (emptied first) with the next records to write, and
    /// returns whether there is anything to do with it.
    fn next_batch(&mut self, batch: &mut RecordBatch, written: &mut BlockSet) -> bool {
        batch.records.clear();
        batch.data.clear();
        batch.error = None;
        if self.done {
            return false;
        }
        if let Err(e) = self.fill(batch, written) {
            batch.error = Some(e);
            self.done = true;
        }
        !batch.records.is_empty() || batch.error.is_some()
    }

    fn fill(&mut self, batch: &mut RecordBatch, written: &mut BlockSet) -> Result<()> {
        let bs = self.block_size;
        while batch.data.len() < LEGACY_BATCH_BYTES && batch.records.len() < LEGACY_BATCH_RECORDS {
            let Some(reader) = self.reader.as_mut() else {
                let Some(diff) = self.diffs.get(self.next_diff) else {
                    self.done = true;
                    return Ok(());
                };
                self.reader = Some(open_legacy(diff)?);
                self.next_diff += 1;
                continue;
            };
            let i = self.next_diff - 1;
            let diff = &self.diffs[i];
            let Some(rec) = reader.next_record().in_file(&diff.path)? else {
                self.reader = None;
                continue;
            };
            let index = rec.block_offset / u64::from(bs.get());
            let beyond = self.block_count.is_some_and(|n| index >= n);
            if beyond && i == 0 {
                // Diff K holds only blocks of generation K's source: a
                // block beyond the digest's count means the digest
                // (legacy: no size) is short.
                return Err(chain_error(
                    self.authority,
                    format!(
                        "lists {} blocks, but {} holds the block at offset {} (record at stream offset {}): the digest is cut short or of another run; nothing was written",
                        self.block_count.unwrap_or(0),
                        diff.path.display(),
                        rec.block_offset,
                        rec.stream_offset
                    ),
                ));
            }
            if beyond || written.contains(index) {
                if self.check_all {
                    reader.read_data(&mut self.block).in_file(&diff.path)?;
                } else {
                    // A newer generation has it, or the source shrank.
                    reader.skip_data().in_file(&diff.path)?;
                }
                continue;
            }
            let len = reader.read_data(&mut self.block).in_file(&diff.path)?;
            if let Some(n) = self.block_count
                && len < bs.bytes()
                && index + 1 != n
            {
                return Err(chain_error(
                    &diff.path,
                    format!(
                        "record at stream offset {}: short block at offset {} is not the source's last block",
                        rec.stream_offset, rec.block_offset
                    ),
                ));
            }
            batch.records.push(BatchRecord {
                diff: i,
                header: rec,
                index,
                start: batch.data.len(),
                len,
            });
            batch.data.extend_from_slice(&self.block);
            written.insert(index);
        }
        Ok(())
    }
}

impl Replay<'_, '_> {
    /// The jobs that circulate between the calling thread and the workers.
    fn spares<J: Default>(&self, per_thread: usize) -> Vec<J> {
        (0..self.threads.max(1) * per_thread)
            .map(|_| J::default())
            .collect()
    }

    /// A legacy chain: its records are read in order on this thread
    /// (the stream may be gzip), hashed on the workers, checked and
    /// written here in order.
    fn legacy(&mut self, diffs: &[DiffLocation], authority: &Path) -> Result<()> {
        let mut batches = LegacyBatches {
            diffs,
            authority,
            block_size: self.block_size,
            block_count: self.block_count,
            check_all: self.check_all,
            reader: None,
            next_diff: 0,
            block: Vec::with_capacity(self.block_size.bytes()),
            done: false,
        };
        let checking = self.checker.digest.is_some();
        // Without a digest there is nothing to hash: all on this thread.
        let threads = if checking { self.threads } else { 1 };
        let hasher = self.hasher;
        let spares = self.spares(JOBS_PER_THREAD);
        let Replay {
            checker,
            written,
            report,
            end,
            out,
            progress,
            ..
        } = self;
        ordered::run(
            threads,
            spares,
            |batch: &mut RecordBatch| batches.next_batch(batch, written),
            || (),
            |(), batch| {
                batch.hashes.clear();
                if checking {
                    let data = &batch.data;
                    let hash = |r: &BatchRecord| hasher.hash(&data[r.start..r.start + r.len]).0;
                    batch.hashes.extend(batch.records.iter().map(hash));
                }
            },
            |batch| {
                for (k, r) in batch.records.iter().enumerate() {
                    let data = &batch.data[r.start..r.start + r.len];
                    let path = &diffs[r.diff].path;
                    checker.check_hash(
                        r.index,
                        batch.hashes.get(k),
                        path,
                        r.header.stream_offset,
                    )?;
                    out.put(r.header.block_offset, data, report, &mut **progress)?;
                    *end = (*end).max(r.header.block_offset + data.len() as u64);
                    progress.advance(data.len() as u64);
                }
                batch.error.take().map_or(Ok(()), Err)
            },
        )
    }

    /// A v2 chain: which frames to read and which of their blocks to take
    /// is decided here from the indexes, in order (window by window of the
    /// target when there is more than one generation, see
    /// `OutputWindow`); the frames are read, decompressed and hashed on
    /// the workers, several small ones per job; their blocks are checked
    /// and written here in the same order.
    fn v2(&mut self, diffs: &[(DiffLocation, DiffFile<File>)]) -> Result<()> {
        let n = self.block_count.unwrap_or(0);
        let bs = self.block_size;
        let check_all = self.check_all;
        let checking = self.checker.digest.is_some();
        let hasher = self.hasher;
        let zero_block = vec![0u8; bs.bytes()];
        let zero_hash = hasher.hash(&zero_block).0;
        let mut skipped = 0u64;
        // With more than one generation the target is assembled a window
        // at a time (see `OutputWindow`): every generation's frames for
        // the window, newest first, then the next window. One generation
        // is written as its frames come, from one window that is the
        // whole target.
        let windowed = diffs.len() > 1;
        // The longest frame's span: the window's size, and how many jobs
        // may be in flight.
        let frame_blocks = diffs
            .iter()
            .flat_map(|(_, diff)| {
                (0..diff.frames().len()).map(|i| {
                    let extents = diff.frame_extents(i);
                    let first = extents.first().map_or(0, |e| e.first_block);
                    extents
                        .last()
                        .map_or(0, archive_format::Extent::end_block)
                        .saturating_sub(first)
                })
            })
            .max()
            .unwrap_or(0);
        let short_frames = frame_blocks.saturating_mul(bs.bytes() as u64) <= SHORT_FRAME_SPAN;
        let spares = self.spares(if short_frames {
            JOBS_PER_THREAD_SHORT_FRAMES
        } else {
            JOBS_PER_THREAD
        });
        let mut window_out = OutputWindow::new(bs.bytes(), frame_blocks);
        let window_blocks = if windowed {
            window_out.blocks()
        } else {
            u64::MAX
        };
        // The window being planned; the generation and frame looked at in
        // it; for each generation, its first frame not yet planned to its
        // end (a frame that reaches past a window is looked at again in
        // the next), and whether that frame was read already.
        let mut window = 0u64;
        let (mut next_diff, mut next_frame) = (0usize, 0usize);
        let mut first_unfinished = vec![0usize; diffs.len()];
        let mut straddler_read = vec![false; diffs.len()];
        let Replay {
            threads,
            checker,
            written,
            report,
            end,
            out,
            progress,
            ..
        } = self;
        // Plans the next frame into `job` (`Next::Planned`), unless it is
        // larger than `SMALL_FRAME` and `small_only` (`Next::Later`: it is
        // left for the next job), or there is none left.
        let mut next = |job: &mut PlannedFrame, small_only: bool| -> Next {
            loop {
                let w0 = window.saturating_mul(window_blocks);
                // The last window takes whatever lies beyond: frames past
                // the restored size are still looked at (to be checked).
                let last_window = w0.saturating_add(window_blocks) >= n;
                let w1 = if last_window {
                    u64::MAX
                } else {
                    w0 + window_blocks
                };
                let Some((_, diff)) = diffs.get(next_diff) else {
                    if last_window {
                        return Next::Done;
                    }
                    // On to the next window that a frame starts in (not
                    // window by window over a large, sparse target), at
                    // most the last.
                    let first_left = diffs
                        .iter()
                        .zip(&first_unfinished)
                        .filter(|((_, diff), i)| **i < diff.frames().len())
                        .map(|((_, diff), &i)| {
                            diff.frame_extents(i).first().map_or(0, |e| e.first_block)
                        })
                        .min()
                        .unwrap_or(u64::MAX);
                    let last = n.saturating_sub(1) / window_blocks;
                    window = (window + 1).max(first_left / window_blocks).min(last);
                    (next_diff, next_frame) = (0, first_unfinished[0]);
                    continue;
                };
                let starts_here = next_frame < diff.frames().len()
                    && diff
                        .frame_extents(next_frame)
                        .first()
                        .is_none_or(|e| e.first_block < w1);
                if !starts_here {
                    next_diff += 1;
                    next_frame = first_unfinished.get(next_diff).copied().unwrap_or(0);
                    continue;
                }
                let i = next_frame;
                let extents = diff.frame_extents(i);
                let size = diff.summary().source_size;
                let raw = extents
                    .iter()
                    .filter(|e| e.kind == ExtentKind::Data)
                    .map(|e| data_len(e.first_block, u64::from(e.blocks), bs.get(), size) as usize)
                    .fold(0, usize::saturating_add);
                if small_only && raw > SMALL_FRAME {
                    return Next::Later;
                }
                next_frame += 1;
                let finished = extents.last().is_none_or(|e| e.end_block() <= w1);
                let read_before = straddler_read[next_diff];
                if finished {
                    first_unfinished[next_diff] = i + 1;
                    straddler_read[next_diff] = false;
                }
                job.ops.clear();
                job.raw = raw;
                let mut at = 0usize;
                for e in extents {
                    let from = e.first_block.max(w0);
                    let to = e.end_block().min(n).min(w1);
                    for (g0, g1) in written.gaps(from, to.max(from)) {
                        job.ops.push(match e.kind {
                            ExtentKind::Zero => FrameOp::Zero { first: g0, end: g1 },
                            ExtentKind::Data => FrameOp::Data {
                                first: g0,
                                end: g1,
                                at: at
                                    + data_len(e.first_block, g0 - e.first_block, bs.get(), size)
                                        as usize,
                            },
                        });
                        written.insert_run(g0, g1);
                    }
                    if e.kind == ExtentKind::Data {
                        at += data_len(e.first_block, u64::from(e.blocks), bs.get(), size) as usize;
                    }
                }
                if job.ops.is_empty() {
                    // Nothing to take here: read it only to check it
                    // (once), or count it as skipped.
                    if !finished || read_before {
                        continue;
                    }
                    if !check_all {
                        skipped += 1;
                        continue;
                    }
                } else if !finished {
                    straddler_read[next_diff] = true;
                }
                (job.diff, job.frame, job.window, job.error) = (next_diff, i, window, None);
                return Next::Planned;
            }
        };
        let plan = |job: &mut FrameJob| -> bool {
            job.used = 0;
            while job.used < FRAMES_PER_JOB {
                if job.frames.len() == job.used {
                    job.frames.push(PlannedFrame::default());
                }
                let frame = &mut job.frames[job.used];
                // Only the first frame of a job may be large.
                if next(frame, job.used > 0) != Next::Planned {
                    break;
                }
                job.used += 1;
                if frame.raw > SMALL_FRAME {
                    break;
                }
            }
            job.used > 0
        };
        let read_one = |reader: &mut FrameReader, job: &mut PlannedFrame| {
            job.hashes.clear();
            let (loc, diff) = &diffs[job.diff];
            let read = diff
                .read_frame_bytes(job.frame, &mut reader.raw)
                .and_then(|()| {
                    diff.decode_frame_bytes(
                        job.frame,
                        &reader.raw,
                        &mut job.frame_data,
                        &mut reader.decompressor,
                    )
                })
                .in_file(&loc.path);
            if let Err(e) = read {
                job.error = Some(e);
                return;
            }
            let blocks: u64 = job
                .ops
                .iter()
                .map(|op| match *op {
                    FrameOp::Data { first, end, .. } => end - first,
                    FrameOp::Zero { .. } => 0,
                })
                .sum();
            job.hashed = checking && blocks <= FRAME_HASHES as u64;
            if !job.hashed {
                return;
            }
            let size = diff.summary().source_size;
            for op in &job.ops {
                if let FrameOp::Data { first, end, mut at } = *op {
                    for b in first..end {
                        let len = data_len(b, 1, bs.get(), size) as usize;
                        let data = &job.frame_data.payload[at..at + len];
                        job.hashes.push(hasher.hash(data).0);
                        at += len;
                    }
                }
            }
        };
        let read = |reader: &mut FrameReader, job: &mut FrameJob| {
            for frame in &mut job.frames[..job.used] {
                read_one(reader, frame);
            }
        };
        // The data runs of the frame being written that go in the window:
        // first block, where in the payload, length.
        let mut held_runs: Vec<(u64, usize, usize)> = Vec::new();
        let mut write_one = |job: &mut PlannedFrame| -> Result<()> {
            held_runs.clear();
            if let Some(e) = job.error.take() {
                return Err(e);
            }
            report.frames_read += 1;
            if windowed {
                window_out.enter(job.window, out, report, &mut **progress)?;
            }
            let (loc, diff) = &diffs[job.diff];
            let size = diff.summary().source_size;
            let stream_offset = diff.frames()[job.frame].offset;
            let mut hashes = job.hashes.iter();
            for op in &job.ops {
                match *op {
                    FrameOp::Zero { first: g0, end: g1 } => {
                        // Checked block by block, each full one against
                        // the hash of a zero block, computed once. A fresh
                        // file leaves the run as a hole, with no step per
                        // block when nothing is checked (a crafted diff
                        // may claim 2^32 blocks).
                        if checker.digest.is_some() {
                            for b in g0..g1 {
                                let len = data_len(b, 1, bs.get(), size) as usize;
                                if len == zero_block.len() {
                                    let hash = Some(&zero_hash);
                                    checker.check_hash(b, hash, &loc.path, stream_offset)?;
                                } else {
                                    let data = &zero_block[..len];
                                    checker.check(b, data, &loc.path, stream_offset)?;
                                }
                            }
                        }
                        let bytes = data_len(g0, g1 - g0, bs.get(), size);
                        if out.sparse() {
                            report.blocks += g1 - g0;
                            report.holes += g1 - g0;
                        } else if windowed {
                            window_out.place_zeros(g0, bytes as usize);
                        } else {
                            for b in g0..g1 {
                                let len = data_len(b, 1, bs.get(), size) as usize;
                                let data = &zero_block[..len];
                                out.put(bs.offset_of(b), data, report, &mut **progress)?;
                            }
                        }
                        progress.advance(bytes);
                        let last = g1 - 1;
                        *end = (*end).max(bs.offset_of(last) + data_len(last, 1, bs.get(), size));
                    }
                    FrameOp::Data {
                        first,
                        end: last,
                        at,
                    } => {
                        // Every block of the run is checked, then the run
                        // is written at once.
                        let mut to = at;
                        for b in first..last {
                            let len = data_len(b, 1, bs.get(), size) as usize;
                            let data = &job.frame_data.payload[to..to + len];
                            to += len;
                            if job.hashed {
                                checker.check_hash(b, hashes.next(), &loc.path, stream_offset)?;
                            } else {
                                checker.check(b, data, &loc.path, stream_offset)?;
                            }
                        }
                        let offset = bs.offset_of(first);
                        let run = &job.frame_data.payload[at..to];
                        if windowed {
                            held_runs.push((first, at, run.len()));
                        } else {
                            out.put_run(offset, run, bs.bytes(), report, &mut **progress)?;
                        }
                        *end = (*end).max(offset + run.len() as u64);
                        progress.advance(run.len() as u64);
                    }
                }
            }
            // The frame's runs for the window: its payload is held by the
            // window until the window is written, or (past the window's
            // budget) the runs are copied in.
            if !held_runs.is_empty() {
                let payload = &mut job.frame_data.payload;
                match window_out.hold(payload) {
                    Some(frame) => {
                        for &(first, at, len) in &held_runs {
                            window_out.place_held(first, frame, at, len);
                        }
                    }
                    None => {
                        for &(first, at, len) in &held_runs {
                            window_out.place(first, &payload[at..at + len]);
                        }
                    }
                }
                held_runs.clear();
            }
            Ok(())
        };
        let write = |job: &mut FrameJob| -> Result<()> {
            job.frames[..job.used]
                .iter_mut()
                .try_for_each(&mut write_one)
        };
        ordered::run(*threads, spares, plan, FrameReader::default, read, write)?;
        window_out.flush(out, report, &mut **progress)?;
        report.frames_skipped += skipped;
        Ok(())
    }
}

/// Applies one diff stream to `target` in place, as the original
/// `blockdiff_merge` did: every block is written where it belongs. The
/// stream's kind is recognised from its first bytes: a legacy stream, plain
/// or gzip-compressed, or a v2 diff (whose frames are CRC-checked before
/// they are written, and whose index gives the exact source size).
///
/// The target is opened only once the stream's header (and, for a legacy
/// stream, its first record) has been read: input that is not a diff
/// leaves the target as it was. A target that does not exist is written
/// as a new file (0600) through an anonymous temporary, as
/// [`RestorePlan::execute`] does, and appears only when complete; an
/// existing regular file is updated in place; the same targets are refused
/// (symbolic links, files of a store, new files under `/dev`).
///
/// When a legacy stream ends with a short block, that block's end is the
/// source's end and a regular file target is cut there. Nothing in a legacy
/// stream reveals a stream truncated at a record boundary; restore from a
/// store ([`RestorePlan`]) checks against the digest instead.
pub fn apply_stream<R: Read + Send>(
    mut input: R,
    input_name: &Path,
    target: &Path,
    progress: &mut dyn Progress,
) -> Result<RestoreReport> {
    refuse_store_target(None, target)?;
    let mut head = [0u8; 8];
    let got = read_full(&mut input, &mut head).ctx(input_name, "read")?;
    let whole = io::Cursor::new(head[..got].to_vec()).chain(input);
    let mut report = RestoreReport::default();
    if head[..got] == DIFF_MAGIC {
        let mut reader = StreamReader::new(whole).in_file(input_name)?;
        let mut out = Target::open(target, false)?;
        let (bs, header_size) = (reader.header().block_size, reader.header().source_size);
        let zero_block = vec![0u8; bs as usize];
        let mut frame = Frame::default();
        let mut last_end = 0u64;
        while reader.next_frame(&mut frame).in_file(input_name)? {
            let mut at = 0usize;
            for e in &frame.extents {
                if e.kind == ExtentKind::Zero && out.sparse() {
                    // Holes in a new file: no step per block.
                    let last = e.end_block() - 1;
                    let full = data_len(last, 1, bs, header_size).min(u64::from(bs));
                    report.blocks += u64::from(e.blocks);
                    report.holes += u64::from(e.blocks);
                    last_end = last_end.max(last * u64::from(bs) + full);
                    continue;
                }
                for b in e.first_block..e.end_block() {
                    let full = data_len(b, 1, bs, header_size) as usize;
                    let offset = b * u64::from(bs);
                    let data = match e.kind {
                        // A short last block of a source of unknown size
                        // takes what is left of the payload.
                        ExtentKind::Data => {
                            let len = full.min(frame.payload.len() - at);
                            at += len;
                            &frame.payload[at - len..at]
                        }
                        ExtentKind::Zero => &zero_block[..full.min(bs as usize)],
                    };
                    out.put(offset, data, &mut report, progress)?;
                    last_end = last_end.max(offset + data.len() as u64);
                    progress.advance(data.len() as u64);
                }
            }
        }
        let size = reader.summary().map_or(last_end, |s| s.source_size);
        report.source_size = size;
        out.finish(size, progress)?;
        return Ok(report);
    }
    let compression = Compression::detect(&head[..got]);
    let mut reader = LegacyReader::new(compression.reader(whole)).in_file(input_name)?;
    let bs = reader.block_size() as usize;
    let mut buf = Vec::with_capacity(bs);
    let mut short_end = None;
    let mut next = reader.read_record(&mut buf).in_file(input_name)?;
    let mut out = Target::open(target, false)?;
    while let Some(rec) = next {
        out.put(rec.block_offset, &buf, &mut report, progress)?;
        report.source_size = report.source_size.max(rec.block_offset + buf.len() as u64);
        if buf.len() < bs {
            short_end = Some(rec.block_offset + buf.len() as u64);
        }
        progress.advance(buf.len() as u64);
        next = reader.read_record(&mut buf).in_file(input_name)?;
    }
    let current = out.current_len()?;
    let end = short_end.unwrap_or(current.max(report.source_size));
    report.source_size = end;
    out.finish(end, progress)?;
    Ok(report)
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
        ] {
            assert!(is_store_suffix(s.as_bytes()), "{s}");
        }
        for s in ["", "img", "1x", "gz", "1.tmp", "v2"] {
            assert!(!is_store_suffix(s.as_bytes()), "{s}");
        }
    }
}
