//! The generation store: `NAME.ver`, `NAME.N[.gz]`, `NAME.N.md5`, and the
//! crash-safe commit of a new generation.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use std::fmt;

use archive_format::{
    CompressedWriter, Compression, DIFF_MAGIC, DiffHeader, FrameCompression, Limits, read_full,
};

use crate::digest::DigestFormat;
use crate::error::ArchiveContext;

use crate::error::IoContext;
use crate::progress::{Notice, Progress};
use crate::{Error, Result};

/// The files of one backup name: `NAME` is a path prefix such as
/// `/var/backup/db`, and the generations live beside it as `db.ver`,
/// `db.1`, `db.1.digest` (or the original's `db.1.md5`, `db.2.gz`), ….
///
/// ```
/// use blockdiff_core::{DigestFormat, GenerationStore};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// assert_eq!(store.current_generation()?, None);
/// assert!(store.digest_path(2, DigestFormat::V2).ends_with("db.2.digest"));
/// assert!(store.digest_path(2, DigestFormat::Legacy).ends_with("db.2.md5"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct GenerationStore {
    name: PathBuf,
}

/// How a generation's diff is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiffFormat {
    /// The original blockdiff's stream (`NAME.N`, or `NAME.N.gz` gzipped),
    /// with a legacy MD5 digest (`NAME.N.md5`).
    Legacy(Compression),
    /// The v2 file (`NAME.N`): checked, framed, zstd-compressed, indexed,
    /// with a v2 digest (`NAME.N.digest`).
    V2 {
        /// Frame payload compression.
        compression: FrameCompression,
        /// zstd level.
        level: i32,
    },
}

impl Default for DiffFormat {
    fn default() -> Self {
        DiffFormat::V2 {
            compression: FrameCompression::Zstd,
            level: 1,
        }
    }
}

impl DiffFormat {
    /// The digest format that goes with it.
    pub fn digest_format(self) -> DigestFormat {
        match self {
            DiffFormat::Legacy(_) => DigestFormat::Legacy,
            DiffFormat::V2 { .. } => DigestFormat::V2,
        }
    }

    fn suffix(self) -> &'static str {
        match self {
            DiffFormat::Legacy(c) => c.suffix(),
            DiffFormat::V2 { .. } => "",
        }
    }

    /// Reads the format of a diff file from its name and first bytes.
    pub fn detect(path: &Path) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "gz") {
            return Ok(DiffFormat::Legacy(Compression::Gzip));
        }
        let mut head = [0u8; archive_format::V2_HEADER_LEN];
        let file = File::open(path).ctx(path, "open")?;
        let got = read_full(&mut &file, &mut head).ctx(path, "read")?;
        if got >= 8 && head[..8] == DIFF_MAGIC {
            if got < head.len() {
                return Err(Error::Archive {
                    path: path.to_owned(),
                    source: archive_format::ArchiveError::Truncated {
                        what: "the v2 header",
                        offset: 0,
                        got: got as u64,
                        need: head.len() as u64,
                    },
                });
            }
            let h = DiffHeader::decode(&head, &Limits::default()).in_file(path)?;
            return Ok(DiffFormat::V2 {
                compression: h.compression,
                level: h.level.into(),
            });
        }
        Ok(DiffFormat::Legacy(Compression::None))
    }
}

impl fmt::Display for DiffFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiffFormat::Legacy(Compression::None) => f.write_str("legacy"),
            DiffFormat::Legacy(Compression::Gzip) => f.write_str("legacy+gzip"),
            DiffFormat::V2 {
                compression: FrameCompression::None,
                ..
            } => f.write_str("v2"),
            DiffFormat::V2 { level, .. } => write!(f, "v2+zstd-{level}"),
        }
    }
}

/// The diff file of one generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffLocation {
    /// Its path.
    pub path: PathBuf,
    /// Its format, from its name and first bytes.
    pub format: DiffFormat,
}

impl GenerationStore {
    /// The store whose files start with `name`.
    pub fn new(name: impl Into<PathBuf>) -> Self {
        GenerationStore { name: name.into() }
    }

    /// The `NAME` prefix.
    pub fn name(&self) -> &Path {
        &self.name
    }

    fn with_suffix(&self, suffix: &str) -> PathBuf {
        let mut s = self.name.clone().into_os_string();
        s.push(suffix);
        PathBuf::from(s)
    }

    /// The directory that holds the files.
    pub fn dir(&self) -> PathBuf {
        match self.name.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    /// `NAME.ver`.
    pub fn ver_path(&self) -> PathBuf {
        self.with_suffix(".ver")
    }

    /// `NAME.N.meta.json`: facts about how generation N was made (its
    /// source, snapshot, freeze window, the database's binary-log position),
    /// a flat JSON object of strings. Not part of the generation's data: a
    /// restore does not need it.
    pub fn metadata_path(&self, generation: u64) -> PathBuf {
        self.with_suffix(&format!(".{generation}.meta.json"))
    }

    /// Writes generation `generation`'s metadata atomically (temporary
    /// file, fsync, rename, directory fsync).
    pub fn write_metadata(
        &self,
        generation: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        let path = self.metadata_path(generation);
        let tmp = self.with_suffix(&format!(".{generation}.meta.json.tmp"));
        let mut text = serde_json::to_string_pretty(metadata).unwrap_or_default();
        text.push('\n');
        let mut file = File::create(&tmp).ctx(&tmp, "create")?;
        file.write_all(text.as_bytes()).ctx(&tmp, "write")?;
        file.sync_all().ctx(&tmp, "fsync")?;
        drop(file);
        fs::rename(&tmp, &path).ctx(&path, "rename into place")?;
        sync_dir(&self.dir())
    }

    /// Generation `generation`'s metadata, or `None` if it has none (made
    /// by the original tool, or by a run that stopped after its commit).
    pub fn read_metadata(&self, generation: u64) -> Result<Option<BTreeMap<String, String>>> {
        let path = self.metadata_path(generation);
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(&path, "read"),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::BadMetadata {
                path,
                detail: e.to_string(),
            })
    }

    /// `NAME.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.with_suffix(".lock")
    }

    /// `NAME.N.md5` (legacy) or `NAME.N.digest` (v2).
    pub fn digest_path(&self, generation: u64, format: DigestFormat) -> PathBuf {
        match format {
            DigestFormat::Legacy => self.with_suffix(&format!(".{generation}.md5")),
            DigestFormat::V2 => self.with_suffix(&format!(".{generation}.digest")),
        }
    }

    /// `NAME.N` or `NAME.N.gz`, by format.
    pub fn diff_path(&self, generation: u64, format: DiffFormat) -> PathBuf {
        self.with_suffix(&format!(".{generation}{}", format.suffix()))
    }

    /// The digest of a generation, whichever format exists; an error if
    /// neither or both do.
    pub fn find_digest(&self, generation: u64) -> Result<(PathBuf, DigestFormat)> {
        let mut found = Vec::new();
        for format in [DigestFormat::Legacy, DigestFormat::V2] {
            let path = self.digest_path(generation, format);
            match fs::symlink_metadata(&path) {
                Ok(_) => found.push((path, format)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(&path, "stat"),
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::MissingGeneration {
                path: self.digest_path(generation, DigestFormat::Legacy),
                generation,
                reason: "its digest (.md5 or .digest) does not exist".into(),
            }),
            _ => Err(Error::Chain {
                path: found[1].0.clone(),
                detail: format!(
                    "generation {generation} has both a .md5 and a .digest digest; remove the stray one"
                ),
            }),
        }
    }

    /// The last committed generation, from `NAME.ver`; `None` when there is
    /// no `NAME.ver` yet.
    pub fn current_generation(&self) -> Result<Option<u64>> {
        let path = self.ver_path();
        let mut text = Vec::new();
        match File::open(&path) {
            Ok(f) => {
                // A generation number is short: read at most 64 bytes.
                f.take(64).read_to_end(&mut text).ctx(&path, "read")?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(&path, "open"),
        }
        parse_version(&text)
            .map(Some)
            .ok_or_else(|| Error::BadVersionFile {
                path,
                content: String::from_utf8_lossy(&text[..text.len().min(40)]).into_owned(),
            })
    }

    /// The diff file of a generation: `NAME.N` or `NAME.N.gz`, whichever
    /// exists; an error if neither or both do.
    pub fn find_diff(&self, generation: u64) -> Result<DiffLocation> {
        let mut found = Vec::new();
        for compression in [Compression::None, Compression::Gzip] {
            let path = self.diff_path(generation, DiffFormat::Legacy(compression));
            match fs::symlink_metadata(&path) {
                Ok(_) => found.push(path),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(&path, "stat"),
            }
        }
        match found.len() {
            1 => {
                let path = found.remove(0);
                let format = DiffFormat::detect(&path)?;
                Ok(DiffLocation { path, format })
            }
            0 => Err(Error::MissingGeneration {
                path: self.diff_path(generation, DiffFormat::Legacy(Compression::None)),
                generation,
                reason: "neither it nor its .gz form exists".into(),
            }),
            _ => Err(Error::Chain {
                path: found[1].clone(),
                detail: format!(
                    "generation {generation} exists both plain and gzip-compressed; remove the one that is not the backup"
                ),
            }),
        }
    }

    /// Takes the store's lock, failing at once if another run holds it.
    pub fn lock(&self) -> Result<StoreLock> {
        let path = self.lock_path();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .ctx(&path, "open lock file")?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = (&file).take(200).read_to_string(&mut holder);
                let holder = holder.trim();
                return Err(Error::Locked {
                    path,
                    holder: if holder.is_empty() {
                        "holder unknown".into()
                    } else {
                        holder.to_owned()
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(e).ctx(&path, "lock"),
        }
        // Record who holds it, for the message a second run prints.
        file.set_len(0).ctx(&path, "write lock file")?;
        let _ = write!(file, "pid {}", std::process::id());
        Ok(StoreLock { _file: file, path })
    }

    /// Starts generation `current + 1` under `lock`: removes what an
    /// interrupted run may have left for it, and creates its temporary diff
    /// and digest files.
    pub fn begin(
        &self,
        lock: &StoreLock,
        format: DiffFormat,
        progress: &mut dyn Progress,
    ) -> Result<PendingGeneration> {
        if lock.path != self.lock_path() {
            return Err(Error::InvalidOption(format!(
                "{} is not the lock of {}",
                lock.path.display(),
                self.name.display()
            )));
        }
        let current = self.current_generation()?;
        let generation = current.unwrap_or(0) + 1;
        // Anything named after the next generation is uncommitted: a run
        // that died before updating NAME.ver left it.
        let diff_path = self.diff_path(generation, format);
        let digest_path = self.digest_path(generation, format.digest_format());
        let diff_tmp = tmp_path(&diff_path);
        let digest_tmp = tmp_path(&digest_path);
        let mut leftovers = vec![tmp_path(&self.ver_path())];
        for name in [
            self.diff_path(generation, DiffFormat::Legacy(Compression::None)),
            self.diff_path(generation, DiffFormat::Legacy(Compression::Gzip)),
            self.digest_path(generation, DigestFormat::Legacy),
            self.digest_path(generation, DigestFormat::V2),
        ] {
            leftovers.push(tmp_path(&name));
            leftovers.push(name);
        }
        for path in leftovers {
            match fs::remove_file(&path) {
                Ok(()) => progress.notice(Notice::RemovedLeftover { path }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).ctx(&path, "remove leftover"),
            }
        }
        let diff = create_new(&diff_tmp)?;
        let compression = match format {
            DiffFormat::Legacy(c) => c,
            DiffFormat::V2 { .. } => Compression::None,
        };
        let mut pending = PendingGeneration {
            store: self.clone(),
            generation,
            format,
            diff_path,
            digest_path,
            diff_tmp,
            digest_tmp,
            // Writes at least as large as the buffer (most v2 frames) go
            // to the file without a copy through it.
            diff: Some(compression.writer(BufWriter::with_capacity(128 << 10, diff))),
            digest: None,
            stage: Stage::Writing,
        };
        pending.digest = Some(BufWriter::with_capacity(
            256 << 10,
            create_new(&pending.digest_tmp)?,
        ));
        Ok(pending)
    }
}

/// Parses the text of a `.ver` file: decimal digits, then optional white
/// space.
pub fn parse_version(text: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(text).ok()?.trim_end();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .ctx(path, "create")
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(dir, "fsync directory")
}

/// The exclusive lock of a store, held until dropped. It is an advisory
/// `flock` on `NAME.lock`, released by the kernel if the process dies.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    path: PathBuf,
}

impl StoreLock {
    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The steps of a commit, in order. A failure at any of them leaves every
/// committed generation intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommitStep {
    /// Flush and fsync the temporary diff.
    SyncDiff,
    /// Flush and fsync the temporary digest.
    SyncDigest,
    /// Rename the diff into place.
    RenameDiff,
    /// Rename the digest into place.
    RenameDigest,
    /// Write and fsync `NAME.ver.tmp`.
    WriteVersion,
    /// Rename `NAME.ver.tmp` over `NAME.ver`: the commit point.
    RenameVersion,
    /// Fsync the directory, making the commit durable.
    SyncDirectory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Writing,
    Renamed,
    Committed,
}

/// A generation being written. Dropping it without
/// [`commit`](Self::commit) removes everything it wrote.
#[derive(Debug)]
pub struct PendingGeneration {
    store: GenerationStore,
    generation: u64,
    format: DiffFormat,
    diff_path: PathBuf,
    digest_path: PathBuf,
    diff_tmp: PathBuf,
    digest_tmp: PathBuf,
    diff: Option<CompressedWriter<BufWriter<File>>>,
    digest: Option<BufWriter<File>>,
    stage: Stage,
}

impl PendingGeneration {
    /// The generation number being written.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Where the diff will be once committed.
    pub fn diff_path(&self) -> &Path {
        &self.diff_path
    }

    /// Where the digest will be once committed.
    pub fn digest_path(&self) -> &Path {
        &self.digest_path
    }

    /// The format of the diff.
    pub fn format(&self) -> DiffFormat {
        self.format
    }

    /// The diff's writer (compressing as asked) and the digest's writer.
    pub fn writers(&mut self) -> (&mut CompressedWriter<BufWriter<File>>, &mut BufWriter<File>) {
        (
            self.diff.as_mut().expect("writers live until commit"),
            self.digest.as_mut().expect("writers live until commit"),
        )
    }

    /// Makes the generation durable and current: fsync both files, rename
    /// them into place, then replace `NAME.ver` by write-temp, fsync,
    /// rename and directory fsync. Returns the generation number.
    pub fn commit(mut self) -> Result<u64> {
        self.commit_steps(&mut |_| Ok(()))
    }

    /// The commit, calling `before` ahead of every step; an error from it
    /// aborts the commit there, as a failing disk would. The tests inject a
    /// failure at each step through it.
    fn commit_steps(
        &mut self,
        before: &mut dyn FnMut(CommitStep) -> io::Result<()>,
    ) -> Result<u64> {
        let dir = self.store.dir();
        let step =
            |s: CommitStep, path: &Path, before: &mut dyn FnMut(CommitStep) -> io::Result<()>| {
                before(s).ctx(path, "commit (injected failure)")
            };

        step(CommitStep::SyncDiff, &self.diff_tmp, before)?;
        let diff = self.diff.take().expect("writers live until commit");
        let file = diff
            .finish()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .ctx(&self.diff_tmp, "write")?;
        file.sync_all().ctx(&self.diff_tmp, "fsync")?;
        drop(file);

        step(CommitStep::SyncDigest, &self.digest_tmp, before)?;
        let digest = self.digest.take().expect("writers live until commit");
        let file = digest
            .into_inner()
            .map_err(|e| e.into_error())
            .ctx(&self.digest_tmp, "write")?;
        file.sync_all().ctx(&self.digest_tmp, "fsync")?;
        drop(file);

        self.stage = Stage::Renamed;
        step(CommitStep::RenameDiff, &self.diff_path, before)?;
        fs::rename(&self.diff_tmp, &self.diff_path).ctx(&self.diff_path, "rename into place")?;
        step(CommitStep::RenameDigest, &self.digest_path, before)?;
        fs::rename(&self.digest_tmp, &self.digest_path)
            .ctx(&self.digest_path, "rename into place")?;

        let ver = self.store.ver_path();
        let ver_tmp = tmp_path(&ver);
        step(CommitStep::WriteVersion, &ver_tmp, before)?;
        let result = (|| {
            // The renamed files must be durable before NAME.ver names them.
            sync_dir(&dir)?;
            let mut f = create_new(&ver_tmp)?;
            writeln!(f, "{}", self.generation).ctx(&ver_tmp, "write")?;
            f.sync_all().ctx(&ver_tmp, "fsync")
        })();
        if let Err(e) = result {
            let _ = fs::remove_file(&ver_tmp);
            return Err(e);
        }
        if let Err(e) = step(CommitStep::RenameVersion, &ver, before)
            .and_then(|()| fs::rename(&ver_tmp, &ver).ctx(&ver, "replace"))
        {
            let _ = fs::remove_file(&ver_tmp);
            return Err(e);
        }
        // From here the generation is current: nothing may remove it.
        self.stage = Stage::Committed;
        step(CommitStep::SyncDirectory, &dir, before)?;
        sync_dir(&dir)?;
        Ok(self.generation)
    }
}

impl Drop for PendingGeneration {
    fn drop(&mut self) {
        if self.stage == Stage::Committed {
            return;
        }
        // Close the files before removing them.
        self.diff = None;
        self.digest = None;
        let mut remove = vec![&self.diff_tmp, &self.digest_tmp];
        if self.stage == Stage::Renamed {
            remove.push(&self.diff_path);
            remove.push(&self.digest_path);
        }
        for path in remove {
            let _ = fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    #[test]
    fn version_parsing() {
        assert_eq!(parse_version(b"3\n"), Some(3));
        assert_eq!(parse_version(b"12"), Some(12));
        assert_eq!(parse_version(b"12 \r\n"), Some(12));
        assert_eq!(parse_version(b""), None);
        assert_eq!(parse_version(b"-1\n"), None);
        assert_eq!(parse_version(b"x\n"), None);
        assert_eq!(parse_version(b" 3\n"), None);
        assert_eq!(parse_version(b"99999999999999999999999\n"), None);
    }

    #[test]
    fn metadata_round_trips_and_bad_metadata_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        assert_eq!(store.read_metadata(1).unwrap(), None);
        let meta: BTreeMap<String, String> = [
            ("mysql.binlog_position", "1234"),
            ("freeze_window_seconds", "0.412"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        store.write_metadata(1, &meta).unwrap();
        assert_eq!(store.read_metadata(1).unwrap(), Some(meta));
        assert!(store.metadata_path(1).ends_with("db.1.meta.json"));
        fs::write(store.metadata_path(2), "[1, 2]").unwrap();
        let e = store.read_metadata(2).unwrap_err().to_string();
        assert!(e.contains("db.2.meta.json: not a metadata file"), "{e}");
    }

    #[test]
    fn bad_ver_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        fs::write(store.ver_path(), "three\n").unwrap();
        let e = store.current_generation().unwrap_err().to_string();
        assert!(
            e.contains("db.ver") && e.contains("not a generation number") && e.contains("three"),
            "{e}"
        );
    }

    #[test]
    fn second_lock_fails_at_once_and_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        let held = store.lock().unwrap();
        let e = store.lock().unwrap_err().to_string();
        assert!(
            e.contains("db.lock") && e.contains(&format!("pid {}", std::process::id())),
            "{e}"
        );
        drop(held);
        store.lock().unwrap();
    }

    #[test]
    fn find_diff_reports_missing_and_ambiguous() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        assert!(matches!(
            store.find_diff(1),
            Err(Error::MissingGeneration { generation: 1, .. })
        ));
        let gz = DiffFormat::Legacy(Compression::Gzip);
        fs::write(store.diff_path(1, gz), b"").unwrap();
        assert_eq!(store.find_diff(1).unwrap().format, gz);
        fs::write(
            store.diff_path(1, DiffFormat::Legacy(Compression::None)),
            b"",
        )
        .unwrap();
        assert!(matches!(store.find_diff(1), Err(Error::Chain { .. })));
    }

    /// Writes generation `current + 1` with the given diff and digest bytes,
    /// failing at `fail_at`. With `crash`, the pending generation is leaked
    /// instead of dropped, as when the process dies.
    fn attempt(store: &GenerationStore, fail_at: Option<CommitStep>, crash: bool) -> Result<u64> {
        let lock = store.lock()?;
        let mut pending = store.begin(
            &lock,
            DiffFormat::Legacy(Compression::None),
            &mut NoProgress,
        )?;
        let generation = pending.generation();
        let (diff, digest) = pending.writers();
        diff.write_all(format!("diff {generation}").as_bytes())
            .unwrap();
        digest
            .write_all(format!("digest {generation}").as_bytes())
            .unwrap();
        let mut inject = |s: CommitStep| {
            if Some(s) == fail_at {
                Err(io::Error::other(format!("injected at {s:?}")))
            } else {
                Ok(())
            }
        };
        let result = pending.commit_steps(&mut inject);
        if crash {
            // Die at the step: no clean-up runs, as after SIGKILL.
            std::mem::forget(pending);
        }
        result
    }

    fn committed_state(store: &GenerationStore, upto: u64) {
        assert_eq!(store.current_generation().unwrap(), Some(upto));
        for g in 1..=upto {
            let diff = fs::read(store.diff_path(g, DiffFormat::Legacy(Compression::None))).unwrap();
            assert_eq!(diff, format!("diff {g}").as_bytes());
            let digest = fs::read(store.digest_path(g, DigestFormat::Legacy)).unwrap();
            assert_eq!(digest, format!("digest {g}").as_bytes());
        }
    }

    const STEPS: [CommitStep; 7] = [
        CommitStep::SyncDiff,
        CommitStep::SyncDigest,
        CommitStep::RenameDiff,
        CommitStep::RenameDigest,
        CommitStep::WriteVersion,
        CommitStep::RenameVersion,
        CommitStep::SyncDirectory,
    ];

    #[test]
    fn failure_at_each_step_keeps_committed_generations() {
        for step in STEPS {
            let dir = tempfile::tempdir().unwrap();
            let store = GenerationStore::new(dir.path().join("db"));
            attempt(&store, None, false).unwrap();
            attempt(&store, None, false).unwrap();
            let result = attempt(&store, Some(step), false);
            assert!(result.is_err(), "{step:?}");
            if step == CommitStep::SyncDirectory {
                // The rename of NAME.ver happened: generation 3 is current
                // and its files stay, though the call reports the failure.
                committed_state(&store, 3);
                continue;
            }
            committed_state(&store, 2);
            // A failed run removes its outputs.
            let mut left: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            left.sort();
            assert_eq!(
                left,
                ["db.1", "db.1.md5", "db.2", "db.2.md5", "db.lock", "db.ver"],
                "{step:?}"
            );
            // And the next run succeeds.
            assert_eq!(attempt(&store, None, false).unwrap(), 3);
            committed_state(&store, 3);
        }
    }

    #[test]
    fn crash_at_each_step_keeps_committed_generations() {
        for step in STEPS {
            let dir = tempfile::tempdir().unwrap();
            let store = GenerationStore::new(dir.path().join("db"));
            attempt(&store, None, false).unwrap();
            let _ = attempt(&store, Some(step), true);
            let current = store.current_generation().unwrap().unwrap();
            assert_eq!(
                current,
                if step == CommitStep::SyncDirectory {
                    2
                } else {
                    1
                },
                "{step:?}"
            );
            committed_state(&store, current);
            // The next run cleans up and succeeds.
            assert_eq!(
                attempt(&store, None, false).unwrap(),
                current + 1,
                "{step:?}"
            );
            committed_state(&store, current + 1);
            let tmp: Vec<_> = fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|n| n.ends_with(".tmp"))
                .collect();
            assert!(tmp.is_empty(), "{step:?}: {tmp:?}");
        }
    }
}
