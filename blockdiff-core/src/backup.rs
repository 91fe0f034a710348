//! One backup run: lock, dump against the previous digest, commit.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use archive_format::{DiffFile, DigestFile, DigestWriter, LegacyReader};

use crate::dump::{DumpOptions, DumpReport, DumpSource, FormatSink, dump};
use crate::error::{ArchiveContext, IoContext};
use crate::progress::Progress;
use crate::resolve::{PreviousFormat, resolve_format};
use crate::store::{DiffFormat, GenerationStore, PendingGeneration, StoreLock};
use crate::{Error, Result};

/// How a backup runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupOptions {
    /// The dump's options: block size and hash of a new chain, threads. The
    /// generation number is set by the store.
    pub dump: DumpOptions,
    /// The diff format. `None` follows the chain (a new chain is v2 with
    /// zstd level 1); a format other than the chain's is refused, since a
    /// chain keeps one format.
    pub format: Option<DiffFormat>,
}

/// What a backup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The generation committed.
    pub generation: u64,
    /// The diff format written.
    pub format: DiffFormat,
    /// The dump's figures.
    pub dump: DumpReport,
    /// Bytes of the diff file on disk.
    pub diff_bytes: u64,
}

/// The format a backup of `store` writes: the chain's, unless `requested`
/// says otherwise for a new chain ([`resolve_format`]).
fn choose_format(
    store: &GenerationStore,
    current: Option<u64>,
    requested: Option<DiffFormat>,
) -> Result<DiffFormat> {
    let last = match current.filter(|&n| n > 0) {
        Some(current) => Some(store.find_diff(current)?),
        None => None,
    };
    resolve_format(requested, last.as_ref().map(PreviousFormat::Diff))
}

/// A backup prepared and not yet committed, wherever it is written: a
/// local store ([`PreparedBackup`]) or an object store (the
/// `blockdiff-storage` crate). The dump fills its [`writers`](Self::writers)
/// here or on a remote host; [`commit`](Self::commit) makes the generation
/// current; dropping it first leaves every committed generation as it was.
pub trait PendingBackup {
    /// The generation being written.
    fn generation(&self) -> u64;
    /// The diff format to write.
    fn format(&self) -> DiffFormat;
    /// The dump's options, with the generation number set.
    fn dump_options(&self) -> &DumpOptions;
    /// The previous generation's digest (a local file), which an
    /// incremental dump reads; `None` for a chain's first generation.
    fn previous_digest(&self) -> Option<&Path>;
    /// The previous generation's digest, opened (its plaintext, for an
    /// encrypted chain); `None` for a chain's first generation.
    fn open_previous_digest(&self) -> Result<Option<DigestFile>> {
        match self.previous_digest() {
            Some(path) => Ok(Some(DigestFile::open(path)?)),
            None => Ok(None),
        }
    }
    /// Where the diff and the digest go once committed (for messages).
    fn paths(&self) -> (PathBuf, PathBuf);
    /// The diff's writer (compressing a gzipped legacy diff) and the
    /// digest's writer.
    fn writers(&mut self) -> (&mut dyn Write, &mut dyn Write);
    /// Commits the generation; `dump` is what the dump that filled it
    /// reported, `facts` go to its metadata.
    fn commit(
        self: Box<Self>,
        dump: DumpReport,
        facts: &BTreeMap<String, String>,
        progress: &mut dyn Progress,
    ) -> Result<BackupReport>;
}

/// Dumps `source` into `prepared` (against its previous digest) and
/// commits it: the part of [`backup_with_metadata`] that does not depend
/// on where the chain is kept.
pub fn back_up_prepared<R: Read + Send>(
    prepared: Box<dyn PendingBackup + '_>,
    source: DumpSource<R>,
    facts: &BTreeMap<String, String>,
    progress: &mut dyn Progress,
) -> Result<BackupReport> {
    back_up_prepared_with(prepared, source, facts, progress, |_, _| {})
}

/// [`back_up_prepared`], with the dump's options adjusted by `adjust` once
/// the chain is locked: it is given the generation being written and the
/// options (a run that reads only tracked changes sets
/// [`DumpOptions::tracked`] there, once it knows which generation the
/// changes are relative to).
pub fn back_up_prepared_with<R: Read + Send>(
    mut prepared: Box<dyn PendingBackup + '_>,
    source: DumpSource<R>,
    facts: &BTreeMap<String, String>,
    progress: &mut dyn Progress,
    adjust: impl FnOnce(u64, &mut DumpOptions),
) -> Result<BackupReport> {
    let mut previous = match prepared.open_previous_digest()? {
        Some(digest) => Some(digest.into_reader()?),
        None => None,
    };
    let format = prepared.format();
    let mut dump_options = prepared.dump_options().clone();
    adjust(prepared.generation(), &mut dump_options);
    let (diff_path, digest_path) = prepared.paths();
    let report = {
        let (diff, digest) = prepared.writers();
        let mut digest = DigestWriter::new(digest, &digest_path);
        // A gzipped legacy diff: `diff` compresses.
        let mut sink = FormatSink::new(format, diff, &diff_path);
        dump(
            source,
            previous.as_mut(),
            &mut sink,
            &mut digest,
            &dump_options,
            progress,
        )?
    };
    if let Some(reason) = progress.before_commit() {
        return Err(Error::Stopped { reason });
    }
    prepared.commit(report, facts, progress)
}

impl PendingBackup for PreparedBackup {
    fn generation(&self) -> u64 {
        PreparedBackup::generation(self)
    }
    fn format(&self) -> DiffFormat {
        PreparedBackup::format(self)
    }
    fn dump_options(&self) -> &DumpOptions {
        PreparedBackup::dump_options(self)
    }
    fn previous_digest(&self) -> Option<&Path> {
        PreparedBackup::previous_digest(self)
    }
    fn open_previous_digest(&self) -> Result<Option<DigestFile>> {
        PreparedBackup::open_previous_digest(self)
    }
    fn paths(&self) -> (PathBuf, PathBuf) {
        let (a, b) = PreparedBackup::paths(self);
        (a.to_owned(), b.to_owned())
    }
    fn writers(&mut self) -> (&mut dyn Write, &mut dyn Write) {
        PreparedBackup::writers(self)
    }
    fn commit(
        self: Box<Self>,
        dump: DumpReport,
        facts: &BTreeMap<String, String>,
        progress: &mut dyn Progress,
    ) -> Result<BackupReport> {
        PreparedBackup::commit(*self, dump, facts, progress)
    }
}

/// The first half of a backup: the store is locked, the format chosen,
/// the new generation's files created and the previous digest found. The
/// dump may then run here ([`backup`] does that) or elsewhere, such as on a
/// remote host whose stream is copied into [`PreparedBackup::writers`];
/// [`PreparedBackup::commit`] makes the generation current. Dropping it
/// uncommitted removes everything it wrote.
#[derive(Debug)]
pub struct PreparedBackup {
    // Held until the commit is done (or the backup dropped).
    _lock: StoreLock,
    pending: PendingGeneration,
    format: DiffFormat,
    previous_digest: Option<PathBuf>,
    /// The previous generation, whose digest that is.
    previous: Option<u64>,
    store: GenerationStore,
    dump: DumpOptions,
}

impl PreparedBackup {
    /// Takes the store's lock (failing at once if another run holds it),
    /// chooses the format and starts the next generation.
    pub fn prepare(
        store: &GenerationStore,
        options: &BackupOptions,
        progress: &mut dyn Progress,
    ) -> Result<Self> {
        store.check_name()?;
        let lock = store.lock()?;
        let current = store.current_generation()?;
        let format = choose_format(store, current, options.format)?;
        let previous_digest = match current.filter(|&n| n > 0) {
            Some(n) => {
                let path = store
                    .find_digest(n)
                    .map_err(|e| match e {
                        Error::MissingGeneration { path, .. } => Error::MissingGeneration {
                            path,
                            generation: n,
                            reason: "its digest is needed for an incremental backup".into(),
                        },
                        other => other,
                    })?
                    .0;
                check_previous_digest(store, n, &path)?;
                Some(path)
            }
            None => None,
        };
        let pending = store.begin(&lock, format, progress)?;
        let mut dump = DumpOptions {
            generation: pending.generation(),
            ..options.dump.clone()
        };
        // An encrypted chain's blocks are hashed with keyed BLAKE3, its key
        // derived from the chain key (known once `begin` made or checked
        // it).
        if let Some(enc) = store.encryption() {
            dump.hash = archive_format::HashAlgorithm::Blake3Keyed;
            dump.hash_key = enc.block_hash_key();
        }
        Ok(PreparedBackup {
            _lock: lock,
            pending,
            format,
            previous_digest,
            previous: current.filter(|&n| n > 0),
            store: store.clone(),
            dump,
        })
    }

    /// The generation being written.
    pub fn generation(&self) -> u64 {
        self.pending.generation()
    }

    /// The diff format to write.
    pub fn format(&self) -> DiffFormat {
        self.format
    }

    /// The dump's options, with the generation number set.
    pub fn dump_options(&self) -> &DumpOptions {
        &self.dump
    }

    /// The previous generation's digest, which an incremental dump reads;
    /// `None` for the first generation of a chain.
    pub fn previous_digest(&self) -> Option<&Path> {
        self.previous_digest.as_deref()
    }

    /// The previous generation's digest, opened (its plaintext, for an
    /// encrypted chain).
    pub fn open_previous_digest(&self) -> Result<Option<DigestFile>> {
        match self.previous {
            Some(n) => Ok(Some(self.store.open_digest(n)?)),
            None => Ok(None),
        }
    }

    /// Where the diff and the digest go once committed (for messages).
    pub fn paths(&self) -> (&Path, &Path) {
        (self.pending.diff_path(), self.pending.digest_path())
    }

    /// The diff's writer (compressing a gzipped legacy diff) and the
    /// digest's writer.
    pub fn writers(&mut self) -> (&mut dyn Write, &mut dyn Write) {
        let (diff, digest) = self.pending.writers();
        (diff, digest)
    }

    /// Commits the generation crash-safely; `dump` is what the dump that
    /// filled it reported, `facts` go to its metadata with the core's own
    /// `source_size` and `block_size` (see [`PendingGeneration::commit`] for the steps,
    /// each a [`Progress::at_step`]).
    pub fn commit(
        self,
        dump: DumpReport,
        facts: &BTreeMap<String, String>,
        progress: &mut dyn Progress,
    ) -> Result<BackupReport> {
        let diff_path = self.pending.diff_path().to_owned();
        let format = self.format;
        let mut metadata = facts.clone();
        metadata.insert("source_size".into(), dump.source_bytes.to_string());
        metadata.insert("block_size".into(), dump.block_size.to_string());
        let generation = self.pending.commit(&metadata, progress)?;
        let diff_bytes = std::fs::metadata(&diff_path).map(|m| m.len()).unwrap_or(0);
        Ok(BackupReport {
            generation,
            format,
            dump,
            diff_bytes,
        })
    }
}

/// Backs `source` up as the next generation of `store`.
///
/// Takes the store's lock (failing at once if another run holds it), dumps
/// against the previous generation's digest, and commits crash-safely. On
/// any error nothing of the new generation is left and every committed
/// generation is untouched.
///
/// ```
/// use blockdiff_core::{BackupOptions, DumpSource, GenerationStore, NoProgress, backup};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// let mut image = vec![7u8; 100_000];
/// let first = backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
/// assert_eq!((first.generation, first.dump.changed_blocks), (1, 7));
/// image[0] = 8;
/// let second = backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
/// assert_eq!((second.generation, second.dump.changed_blocks), (2, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn backup<R: Read + Send>(
    store: &GenerationStore,
    source: DumpSource<R>,
    options: &BackupOptions,
    progress: &mut dyn Progress,
) -> Result<BackupReport> {
    backup_with_metadata(store, source, options, &BTreeMap::new(), progress)
}

/// [`backup`], with `facts` known before the dump (the source, when it
/// started, …) written to the generation's `NAME.N.meta.json` by its
/// commit, beside the `source_size` and `block_size` the core records.
pub fn backup_with_metadata<R: Read + Send>(
    store: &GenerationStore,
    source: DumpSource<R>,
    options: &BackupOptions,
    facts: &BTreeMap<String, String>,
    progress: &mut dyn Progress,
) -> Result<BackupReport> {
    let prepared = PreparedBackup::prepare(store, options, progress)?;
    back_up_prepared(Box::new(prepared), source, facts, progress)
}

/// Checks the digest of generation `n`, which the next generation builds
/// on, against the chain: its length and header, its block size against
/// generation `n`'s diff, and its size (v2: fingerprint and source size
/// against the diff's index; legacy: against the `source_size` of `n`'s
/// metadata, when it has one). Nothing may be built on a digest that does
/// not belong to its generation.
fn check_previous_digest(store: &GenerationStore, n: u64, path: &Path) -> Result<()> {
    let bad = |detail: String| Error::CorruptDigest {
        path: path.to_owned(),
        offset: 0,
        detail: format!(
            "{detail}; it cannot be built on: check the chain with 'blockdiff-restore --verify-only --from {name}', then run 'blockdiff-repair {name}' or start a new chain",
            name = store.name().display()
        ),
    };
    let digest = store.open_digest(n).map_err(|e| match e {
        // A wrong or missing key is not damage.
        e @ (Error::WrongKey { .. } | Error::Chain { .. }) => e,
        e => bad(e.to_string()),
    })?;
    let diff = store.find_diff(n)?;
    match diff.format {
        DiffFormat::Legacy(compression) => {
            let file = File::open(&diff.path).ctx(&diff.path, "open")?;
            let block_size = LegacyReader::new(compression.reader(file))
                .in_file(&diff.path)?
                .block_size();
            if block_size != digest.block_size().get() {
                return Err(bad(format!(
                    "its block size {} is not that of {} ({block_size})",
                    digest.block_size().get(),
                    diff.path.display()
                )));
            }
            if let Some(size) = store
                .read_metadata(n)
                .ok()
                .flatten()
                .and_then(|m| m.get("source_size").and_then(|s| s.parse::<u64>().ok()))
            {
                let want = size.div_ceil(u64::from(block_size));
                if digest.entries() != want {
                    return Err(bad(format!(
                        "it lists {} blocks but generation {n} was {size} bytes ({want} blocks of {block_size})",
                        digest.entries()
                    )));
                }
            }
        }
        DiffFormat::V2 { .. } => {
            let bytes = crate::GenerationSource::open_diff(store, &diff)?;
            let v2 = DiffFile::open(bytes).in_file(&diff.path)?;
            if v2.header().block_size != digest.block_size().get() {
                return Err(bad(format!(
                    "its block size {} is not that of {} ({})",
                    digest.block_size().get(),
                    diff.path.display(),
                    v2.header().block_size
                )));
            }
            if digest.fingerprint() != Some(v2.summary().fingerprint)
                || digest.source_size() != Some(v2.summary().source_size)
            {
                return Err(bad(format!(
                    "its fingerprint or source size does not match {}",
                    diff.path.display()
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoProgress;

    /// Stops after `chunks` chunks, or (with `None`) just before commit.
    struct StopAfter {
        chunks: Option<usize>,
        seen: usize,
    }

    impl Progress for StopAfter {
        fn should_stop(&mut self) -> Option<String> {
            self.seen += 1;
            match self.chunks {
                Some(n) if self.seen > n => Some("asked to stop".into()),
                _ => None,
            }
        }
        fn before_commit(&mut self) -> Option<String> {
            Some("snapshot overflowed".into())
        }
    }

    #[test]
    fn a_stopped_backup_commits_nothing_and_leaves_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        let image = vec![5u8; 3 << 20];
        backup(
            &store,
            DumpSource::from_bytes(&image, "image"),
            &BackupOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        let before: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        // Chunks of 1 MiB: three of them.
        let mut options = BackupOptions::default();
        options.dump.read_size = 1 << 20;
        for chunks in [Some(0), Some(1), None] {
            let mut progress = StopAfter { chunks, seen: 0 };
            let changed = vec![6u8; 3 << 20];
            let err = backup(
                &store,
                DumpSource::from_bytes(&changed, "image"),
                &options,
                &mut progress,
            )
            .unwrap_err();
            let want = if chunks.is_some() {
                "asked to stop"
            } else {
                "snapshot overflowed"
            };
            assert_eq!(
                err.to_string(),
                format!("stopped before the generation was committed: {want}")
            );
            assert_eq!(store.current_generation().unwrap(), Some(1));
            let mut after: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            after.sort();
            let mut b = before.clone();
            b.sort();
            assert_eq!(after, b, "files left by a run stopped at {chunks:?}");
        }
    }

    #[test]
    fn the_commit_records_source_size_and_block_size_with_the_callers_facts() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        let facts = [("source".to_owned(), "image".to_owned())].into();
        let image = vec![3u8; 100_000];
        backup_with_metadata(
            &store,
            DumpSource::from_bytes(&image, "image"),
            &BackupOptions::default(),
            &facts,
            &mut NoProgress,
        )
        .unwrap();
        let m = store.read_metadata(1).unwrap().unwrap();
        assert_eq!(m["source_size"], "100000");
        assert_eq!(m["block_size"], "16384");
        assert_eq!(m["source"], "image");
    }
}
