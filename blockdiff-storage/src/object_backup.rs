//! A backup into an [`ObjectChain`]: lock, stream the diff and the digest
//! up as objects of generation N, then replace `NAME.ver`.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use archive_format::{CompressedWriter, DiffFile, DigestFile};
use blockdiff_core::{
    BackupOptions, BackupReport, DiffFormat, DumpOptions, DumpReport, DumpSource, Error,
    GenerationSource, HashAlgorithm, Notice, PendingBackup, PreviousFormat, Progress, Result,
    SealedContent, StoreWriter, back_up_prepared, resolve_format,
};
use serde::{Deserialize, Serialize};

use crate::ObjectWriter;
use crate::digest_cache::CacheWriter;
use crate::object_chain::{DIFF_FORMAT_KEY, DIGEST_HASH_KEY, ObjectChain, core_error, format_name};

/// Who writes a chain: the content of its `NAME.lock` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockHolder {
    /// The host name of the machine that runs the backup.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// When it started, in seconds since the Unix epoch.
    pub started: u64,
    /// A random value of this run, to tell two runs apart.
    pub run: String,
}

impl LockHolder {
    /// Whether it names a run on this host.
    pub fn is_this_host(&self) -> bool {
        self.host == host_name()
    }
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "host {}, pid {}, started at {} (Unix time)",
            self.host, self.pid, self.started
        )
    }
}

/// How a backup takes a chain's lock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockOptions {
    /// Take the lock over even when `NAME.lock` names a run on another host
    /// (which must be dead: two writers would damage the chain).
    pub break_lock: bool,
    /// Wait for another run on this host that holds the lock, rather than
    /// fail at once (a run on another host, named by `NAME.lock`, is
    /// still reported at once: its end cannot be waited for here).
    pub wait: bool,
}

/// The local host's name.
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The lock of a chain on an object store, held until dropped: a local
/// `flock` (one writer on this host) and the `NAME.lock` object naming this
/// run (one writer across hosts). Dropping it removes the object if it
/// still names this run.
#[derive(Debug)]
pub struct ObjectLock {
    chain: ObjectChain,
    holder: LockHolder,
    _local: File,
}

impl ObjectLock {
    /// Takes the lock of `chain`.
    pub fn take(chain: &ObjectChain, options: &LockOptions) -> Result<ObjectLock> {
        let local = local_lock(chain, options.wait)?;
        let key = chain.lock_key();
        let display = PathBuf::from(chain.storage().describe(&key));
        let host = host_name();
        if let Some(text) = chain
            .storage()
            .read_small(&key, 64 << 10)
            .map_err(core_error)?
        {
            let other: Option<LockHolder> = serde_json::from_slice(&text).ok();
            // A lock of this host whose run is gone (the local lock was
            // free) is stale; another host's is reported.
            let same_host = other.as_ref().is_some_and(|o| o.host == host);
            if !same_host && !options.break_lock {
                let holder = match other {
                    Some(o) => o.to_string(),
                    None => "an unreadable lock object".into(),
                };
                return Err(Error::Locked {
                    path: display,
                    holder: format!(
                        "{holder}; if that run is dead, take the lock over with --break-lock"
                    ),
                });
            }
        }
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let holder = LockHolder {
            host,
            pid: std::process::id(),
            started,
            run: random_hex(),
        };
        let text = serde_json::to_vec_pretty(&holder).unwrap_or_default();
        chain.storage().put(&key, &text).map_err(core_error)?;
        // Without conditional writes two hosts may have written at once:
        // the one whose run is not read back lost.
        let back = chain
            .storage()
            .read_small(&key, 64 << 10)
            .map_err(core_error)?;
        let back: Option<LockHolder> = back.and_then(|b| serde_json::from_slice(&b).ok());
        if back.as_ref() != Some(&holder) {
            return Err(Error::Locked {
                path: display,
                holder: back.map_or_else(|| "a run that removed it".into(), |b| b.to_string()),
            });
        }
        Ok(ObjectLock {
            chain: chain.clone(),
            holder,
            _local: local,
        })
    }

    /// Who holds it: this run.
    pub fn holder(&self) -> &LockHolder {
        &self.holder
    }
}

impl Drop for ObjectLock {
    fn drop(&mut self) {
        let key = self.chain.lock_key();
        let ours = self
            .chain
            .storage()
            .read_small(&key, 64 << 10)
            .ok()
            .flatten()
            .and_then(|b| serde_json::from_slice::<LockHolder>(&b).ok())
            .is_some_and(|h| h == self.holder);
        if ours {
            let _ = self.chain.storage().delete(&key);
        }
    }
}

fn random_hex() -> String {
    let mut buf = [0u8; 16];
    if let Ok(mut f) = File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    let seed = format!("{:?} {} {:?}", SystemTime::now(), std::process::id(), buf);
    blake3::hash(seed.as_bytes()).to_hex()[..32].to_owned()
}

/// Who `chain`'s lock object names, if there is one: `Some` of a holder
/// whose text is not a lock's is a holder unknown (on another host).
pub(crate) fn read_holder(chain: &ObjectChain) -> Result<Option<LockHolder>> {
    let text = chain
        .storage()
        .read_small(&chain.lock_key(), 64 << 10)
        .map_err(core_error)?;
    Ok(text.map(|text| {
        serde_json::from_slice(&text).unwrap_or_else(|_| LockHolder {
            host: "(an unreadable lock object)".into(),
            pid: 0,
            started: 0,
            run: String::new(),
        })
    }))
}

/// The local lock: `CACHE/<chain>.lock`, flocked (waiting for it when
/// `wait`).
pub(crate) fn local_lock(chain: &ObjectChain, wait: bool) -> Result<File> {
    let dir = chain.cache().dir();
    let parent = dir.parent().unwrap_or(dir);
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|source| Error::Io {
            path: parent.to_owned(),
            op: "create cache directory",
            source,
        })?;
    let mut path = dir.as_os_str().to_owned();
    path.push(".lock");
    let path = PathBuf::from(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|source| Error::Io {
            path: path.clone(),
            op: "open lock file",
            source,
        })?;
    if wait {
        return match file.lock() {
            Ok(()) => Ok(file),
            Err(source) => Err(Error::Io {
                path,
                op: "lock",
                source,
            }),
        };
    }
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked {
            path: PathBuf::from(chain.storage().describe(&chain.lock_key())),
            holder: format!("another run on this host ({})", path.display()),
        }),
        Err(fs::TryLockError::Error(source)) => Err(Error::Io {
            path,
            op: "lock",
            source,
        }),
    }
}

/// The digest's writer: up to the object store and into the local cache at
/// once, hashed.
struct DigestTee {
    object: Option<Box<dyn ObjectWriter>>,
    cache: CacheWriter,
}

impl Write for DigestTee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(object) = self.object.as_mut() else {
            return Err(io::Error::other("the digest was already finished"));
        };
        object.write_all(buf)?;
        self.cache
            .write_all(buf)
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A backup of an object chain, prepared: the chain locked, the format
/// chosen, the previous digest in the local cache, the new generation's
/// objects being uploaded. [`commit`](Self::commit) makes it current;
/// dropping it first aborts the uploads and leaves `NAME.ver` as it was.
pub struct ObjectBackup {
    _lock: ObjectLock,
    chain: ObjectChain,
    generation: u64,
    format: DiffFormat,
    previous_digest: Option<PathBuf>,
    dump: DumpOptions,
    /// Sealed first when the chain is encrypted, so that the object and
    /// the cached digest hold only sealed bytes.
    diff: Option<CompressedWriter<StoreWriter<Box<dyn ObjectWriter>>>>,
    digest: Option<StoreWriter<DigestTee>>,
    /// Objects finished but not yet committed: removed if the commit does
    /// not happen.
    finished: Vec<String>,
    committed: bool,
}

impl std::fmt::Debug for ObjectBackup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBackup")
            .field("chain", &self.chain)
            .field("generation", &self.generation)
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl ObjectBackup {
    /// Takes the chain's lock, finishes or undoes a fold a killed prune
    /// left, removes what an interrupted run left (objects of generations
    /// after the committed one), brings the
    /// previous digest into the cache (downloading it only when the cached
    /// copy is missing or not the committed one), and starts the uploads of
    /// the next generation.
    pub fn prepare(
        chain: &ObjectChain,
        options: &BackupOptions,
        lock: &LockOptions,
        progress: &mut dyn Progress,
    ) -> Result<Self> {
        let lock = ObjectLock::take(chain, lock)?;
        // A prune killed mid-fold: finished or undone before anything else.
        crate::object_fold::recover_interrupted_fold(chain, progress)?;
        let current = chain.current_generation()?.unwrap_or(0);
        let generation = current + 1;
        // The previous generation's metadata, read once: its digest's
        // BLAKE3 and its diff's format (no GET of the diff itself).
        let metadata = match current {
            0 => None,
            n => chain.read_metadata(n).ok().flatten(),
        };
        let previous_diff = match current {
            0 => None,
            n => Some(chain.diff_with_metadata(n, metadata.as_ref())?),
        };
        let format = resolve_format(
            options.format,
            previous_diff.as_ref().map(PreviousFormat::Diff),
        )?;
        let previous_digest = match current {
            0 => None,
            n => {
                let (path, _) = chain
                    .digest_with_metadata(n, metadata.as_ref())
                    .map_err(|e| match e {
                        Error::MissingGeneration { path, .. } => Error::MissingGeneration {
                            path,
                            generation: n,
                            reason: "its digest is needed for an incremental backup".into(),
                        },
                        other => other,
                    })?;
                let recorded = metadata
                    .as_ref()
                    .is_some_and(|m| m.contains_key(DIGEST_HASH_KEY));
                // Opening it also checks an encrypted chain's key.
                check_previous_digest(chain, n, &path, recorded)?;
                Some(path)
            }
        };
        let mut dump = DumpOptions {
            generation,
            ..options.dump.clone()
        };
        if let Some(enc) = chain.encryption() {
            if let DiffFormat::Legacy(_) = format {
                return Err(Error::InvalidOption(format!(
                    "{}: the original blockdiff's format cannot be encrypted; an encrypted chain is v2",
                    chain.name().display()
                )));
            }
            if current == 0 {
                enc.start_chain()?;
            }
            // Its blocks are hashed with keyed BLAKE3, the key derived from
            // the chain key.
            dump.hash = HashAlgorithm::Blake3Keyed;
            dump.hash_key = enc.block_hash_key();
        }
        let mut leftovers = chain.generation_keys()?;
        leftovers.retain(|&g, _| g > current);
        for keys in leftovers.values() {
            progress.at_step("backup:remove-interrupted");
            for key in keys {
                chain.storage().delete(key).map_err(core_error)?;
                progress.notice(Notice::RemovedLeftover {
                    path: PathBuf::from(chain.storage().describe(key)),
                });
            }
        }
        // Multipart uploads of a killed run hold parts that no object
        // shows: abort them, under the lock (no other writer is at work).
        let aborted = chain
            .storage()
            .abort_incomplete_uploads(&chain.key("."))
            .map_err(core_error)?;
        if aborted > 0 {
            progress.notice(Notice::AbortedUploads {
                chain: chain.name().to_owned(),
                count: aborted,
            });
        }
        let diff_key = chain.diff_key(generation, format);
        let digest_key = chain.digest_key(generation, format.digest_format());
        let diff = StoreWriter::new(
            chain.encryption(),
            chain.storage().writer(&diff_key).map_err(core_error)?,
            SealedContent::Diff,
            generation,
            &chain.diff_path(generation, format),
        )?;
        let digest = StoreWriter::new(
            chain.encryption(),
            DigestTee {
                object: Some(chain.storage().writer(&digest_key).map_err(core_error)?),
                cache: chain.cache().writer(&digest_key)?,
            },
            SealedContent::Digest,
            generation,
            &PathBuf::from(chain.storage().describe(&digest_key)),
        )?;
        progress.at_step("backup:begun");
        Ok(ObjectBackup {
            _lock: lock,
            chain: chain.clone(),
            generation,
            format,
            previous_digest,
            dump,
            diff: Some(format.stream_compression().writer(diff)),
            digest: Some(digest),
            finished: Vec::new(),
            committed: false,
        })
    }

    /// The generation being written.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The diff format to write.
    pub fn format(&self) -> DiffFormat {
        self.format
    }

    /// The dump's options, with the generation number set.
    pub fn dump_options(&self) -> &DumpOptions {
        &self.dump
    }

    /// The previous generation's digest (its cached copy).
    pub fn previous_digest(&self) -> Option<&Path> {
        self.previous_digest.as_deref()
    }

    /// Where the diff and the digest go (for messages).
    pub fn paths(&self) -> (PathBuf, PathBuf) {
        (
            self.chain.diff_path(self.generation, self.format),
            PathBuf::from(
                self.chain.storage().describe(
                    &self
                        .chain
                        .digest_key(self.generation, self.format.digest_format()),
                ),
            ),
        )
    }

    /// The diff's writer (compressing a gzipped legacy diff) and the
    /// digest's writer.
    pub fn writers(&mut self) -> (&mut dyn Write, &mut dyn Write) {
        // Both live until `commit`, which consumes the backup.
        (
            self.diff.as_mut().expect("writers live until commit"),
            self.digest.as_mut().expect("writers live until commit"),
        )
    }

    /// Completes the uploads of the diff and the digest, writes the
    /// generation's metadata, then replaces `NAME.ver`: the commit point.
    /// Steps ([`Progress::at_step`]): `backup:upload-diff`,
    /// `backup:upload-digest`, `backup:write-meta`, `backup:write-ver`.
    pub fn commit(
        mut self,
        dump: DumpReport,
        facts: &BTreeMap<String, String>,
        progress: &mut dyn Progress,
    ) -> Result<BackupReport> {
        let chain = self.chain.clone();
        let g = self.generation;
        let diff_key = chain.diff_key(g, self.format);
        let digest_key = chain.digest_key(g, self.format.digest_format());

        progress.at_step("backup:upload-diff");
        let diff = self
            .diff
            .take()
            .ok_or_else(|| finished_twice(&chain, &diff_key))?;
        let object = diff
            .finish()
            .and_then(StoreWriter::finish)
            .map_err(|source| Error::Io {
                path: PathBuf::from(chain.storage().describe(&diff_key)),
                op: "upload",
                source,
            })?;
        let diff_bytes = object.finish().map_err(core_error)?;
        self.finished.push(diff_key);

        progress.at_step("backup:upload-digest");
        let mut digest = self
            .digest
            .take()
            .ok_or_else(|| finished_twice(&chain, &digest_key))?
            .finish()
            .map_err(|source| Error::Io {
                path: PathBuf::from(chain.storage().describe(&digest_key)),
                op: "upload",
                source,
            })?;
        let object = digest
            .object
            .take()
            .ok_or_else(|| finished_twice(&chain, &digest_key))?;
        object.finish().map_err(core_error)?;
        self.finished.push(digest_key.clone());
        let digest_hash = digest.cache.hash();

        progress.at_step("backup:write-meta");
        let mut metadata = facts.clone();
        metadata.insert("source_size".into(), dump.source_bytes.to_string());
        metadata.insert("block_size".into(), dump.block_size.to_string());
        metadata.insert(DIGEST_HASH_KEY.into(), digest_hash);
        metadata.insert(DIFF_FORMAT_KEY.into(), format_name(self.format));
        self.finished.push(chain.metadata_key(g));
        chain.write_metadata(g, &metadata)?;

        progress.at_step("backup:write-ver");
        chain
            .storage()
            .put(&chain.ver_key(), format!("{g}\n").as_bytes())
            .map_err(core_error)?;
        // From here the generation is current: nothing may remove it.
        self.committed = true;
        // The cache is only a cache: a failure here loses a download.
        if digest.cache.commit().is_ok() {
            let _ = chain.cache().retain_only(&digest_key);
        }
        Ok(BackupReport {
            generation: g,
            format: self.format,
            dump,
            diff_bytes,
        })
    }
}

fn finished_twice(chain: &ObjectChain, key: &str) -> Error {
    Error::Io {
        path: PathBuf::from(chain.storage().describe(key)),
        op: "upload",
        source: io::Error::other("the upload was already finished or failed"),
    }
}

impl Drop for ObjectBackup {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Dropping the writers aborts their uploads.
        self.diff = None;
        self.digest = None;
        // Objects already complete are not named by NAME.ver; the next run
        // would remove them too.
        for key in &self.finished {
            let _ = self.chain.storage().delete(key);
        }
    }
}

/// Checks that the cached digest of generation `n` is the one its
/// generation committed: with a hash `recorded` in its metadata, the fetch
/// from the cache already did; without one (a chain copied into the bucket by another
/// tool), against the diff's fingerprint and block size.
fn check_previous_digest(chain: &ObjectChain, n: u64, path: &Path, recorded: bool) -> Result<()> {
    let digest = chain.open_cached_digest(n, path)?;
    if recorded {
        return Ok(());
    }
    let diff = chain.find_diff(n)?;
    if let DiffFormat::V2 { .. } = diff.format {
        let bytes = chain.open_diff(&diff)?;
        let v2 = DiffFile::open(bytes).map_err(|source| Error::Archive {
            path: diff.path.clone(),
            source,
        })?;
        if v2.header().block_size != digest.block_size().get()
            || digest.fingerprint() != Some(v2.summary().fingerprint)
        {
            return Err(Error::CorruptDigest {
                path: path.to_owned(),
                offset: 0,
                detail: format!(
                    "the digest of generation {n} does not match {}; it cannot be built on",
                    diff.path.display()
                ),
            });
        }
    }
    Ok(())
}

/// Backs `source` up as the next generation of `chain`: the object-store
/// counterpart of [`blockdiff_core::backup_with_metadata`].
pub fn back_up_to_objects<R: Read + Send>(
    chain: &ObjectChain,
    source: DumpSource<R>,
    options: &BackupOptions,
    lock: &LockOptions,
    facts: &BTreeMap<String, String>,
    progress: &mut dyn Progress,
) -> Result<BackupReport> {
    let prepared = ObjectBackup::prepare(chain, options, lock, progress)?;
    back_up_prepared(Box::new(prepared), source, facts, progress)
}

impl PendingBackup for ObjectBackup {
    fn generation(&self) -> u64 {
        self.generation
    }
    fn format(&self) -> DiffFormat {
        self.format
    }
    fn dump_options(&self) -> &DumpOptions {
        &self.dump
    }
    fn previous_digest(&self) -> Option<&Path> {
        self.previous_digest.as_deref()
    }
    fn open_previous_digest(&self) -> Result<Option<DigestFile>> {
        match &self.previous_digest {
            Some(path) => Ok(Some(
                self.chain.open_cached_digest(self.generation - 1, path)?,
            )),
            None => Ok(None),
        }
    }
    fn paths(&self) -> (PathBuf, PathBuf) {
        ObjectBackup::paths(self)
    }
    fn writers(&mut self) -> (&mut dyn Write, &mut dyn Write) {
        ObjectBackup::writers(self)
    }
    fn commit(
        self: Box<Self>,
        dump: DumpReport,
        facts: &BTreeMap<String, String>,
        progress: &mut dyn Progress,
    ) -> Result<BackupReport> {
        ObjectBackup::commit(*self, dump, facts, progress)
    }
}
