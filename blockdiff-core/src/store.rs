//! The generation store: `NAME.ver`, `NAME.N[.gz]`, `NAME.N.md5`, and the
//! crash-safe commit of a new generation.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::fmt;

use archive_format::{
    CompressedWriter, Compression, DIFF_MAGIC, DiffHeader, DigestFile, DigestFormat,
    FrameCompression, Limits, ReadAt, SealedContent, read_full,
};

use crate::encryption::{ChainEncryption, StoreWriter, open_chain_file, unseal_chain_file};
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
    /// An encrypted chain's secret and keys: every file is then sealed.
    encryption: Option<ChainEncryption>,
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
    /// How the whole diff stream is compressed around what its sink writes
    /// ([`FormatSink`](crate::FormatSink)): gzip for a gzipped legacy
    /// diff, nothing otherwise (v2 compresses its frames itself).
    pub fn stream_compression(self) -> Compression {
        match self {
            DiffFormat::Legacy(c) => c,
            DiffFormat::V2 { .. } => Compression::None,
        }
    }

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
        Self::from_head(path, &head[..got])
    }

    /// The format of the diff `file` (named `path`), read by offset: its
    /// first bytes, plaintext when it is a sealed file opened with its key.
    pub fn from_read_at(path: &Path, file: &dyn ReadAt) -> Result<Self> {
        let len = file.size().map_err(|e| sealed_read_error(path, e))?;
        let mut head = vec![0u8; (archive_format::V2_HEADER_LEN as u64).min(len) as usize];
        archive_format::fill_at(file, &mut head, 0).map_err(|e| sealed_read_error(path, e))?;
        Self::from_head(path, &head)
    }

    /// The format of the diff named `path` whose first bytes are `head`
    /// (at least [`V2_HEADER_LEN`](archive_format::V2_HEADER_LEN) of them
    /// when the diff is that long): what [`detect`](Self::detect) decides
    /// once it has read them, for a diff that is not a local file.
    pub fn from_head(path: &Path, head: &[u8]) -> Result<Self> {
        if path.extension().is_some_and(|e| e == "gz") {
            return Ok(DiffFormat::Legacy(Compression::Gzip));
        }
        let got = head.len().min(archive_format::V2_HEADER_LEN);
        if archive_format::is_sealed(head) {
            return Err(Error::Chain {
                path: path.to_owned(),
                detail: "is an encrypted chain's file: give the chain's key (--key-file, --passphrase-file or BLOCKDIFF_PASSPHRASE)".into(),
            });
        }
        if got >= 8 && head[..8] == DIFF_MAGIC {
            if got < archive_format::V2_HEADER_LEN {
                return Err(Error::Archive {
                    path: path.to_owned(),
                    source: archive_format::ArchiveError::Truncated {
                        what: "the v2 header",
                        offset: 0,
                        got: got as u64,
                        need: archive_format::V2_HEADER_LEN as u64,
                    },
                });
            }
            let mut header = [0u8; archive_format::V2_HEADER_LEN];
            header.copy_from_slice(&head[..archive_format::V2_HEADER_LEN]);
            let h = DiffHeader::decode(&header, &Limits::default()).in_file(path)?;
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
    /// Its format, from its name and first bytes (an encrypted chain's:
    /// from its plaintext's).
    pub format: DiffFormat,
    /// The generation it holds.
    pub generation: u64,
    /// Whether it is sealed (an encrypted chain's).
    pub sealed: bool,
}

impl GenerationStore {
    /// The store whose files start with `name`.
    pub fn new(name: impl Into<PathBuf>) -> Self {
        GenerationStore {
            name: name.into(),
            encryption: None,
        }
    }

    /// The store of an encrypted chain: its files are sealed with the
    /// keys of `encryption` (a new chain is started encrypted), and a
    /// plain file in it is refused.
    pub fn with_encryption(mut self, encryption: ChainEncryption) -> Self {
        self.encryption = Some(encryption);
        self
    }

    /// The chain's encryption, when it was given.
    pub fn encryption(&self) -> Option<&ChainEncryption> {
        self.encryption.as_ref()
    }

    /// Opens a committed file of the chain to read by offset: sealed
    /// (checked, then decrypted as read) when the store is encrypted; a
    /// sealed file without a key, or a plain one with a key, is refused.
    pub(crate) fn open_read_at(
        &self,
        path: &Path,
        content: SealedContent,
        generation: u64,
    ) -> Result<Box<dyn ReadAt + Send + Sync>> {
        let file = open_nofollow(path).ctx(path, "open")?;
        open_chain_file(
            self.encryption.as_ref(),
            file,
            content,
            generation,
            path,
            &self.name,
        )
    }

    /// Opens generation `generation`'s digest.
    pub fn open_digest(&self, generation: u64) -> Result<DigestFile> {
        let (path, _) = self.find_digest(generation)?;
        let file = self.open_read_at(&path, SealedContent::Digest, generation)?;
        Ok(DigestFile::from_read_at(file, &path)?)
    }

    /// The `NAME` prefix.
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// Checks that `NAME` can name a store: its last component must be a
    /// visible file name, not empty, `.`, `..` or starting with a dot (the
    /// store's files would be hidden files of another directory, such as
    /// `/.ver` for `/`). `blockdiff-prune` refuses such names too.
    pub fn check_name(&self) -> Result<()> {
        let text = self.name.as_os_str().as_encoded_bytes();
        let last = text.rsplit(|&b| b == b'/').next().unwrap_or_default();
        let why = if last.is_empty() {
            Some("it ends with '/' and so names no file")
        } else if last == b"." || last == b".." {
            Some("it names a directory, not a file")
        } else if last.starts_with(b".") {
            Some("its file name starts with a dot (the backup's files would be hidden)")
        } else {
            None
        };
        match why {
            None => Ok(()),
            Some(why) => Err(Error::Chain {
                path: self.name.clone(),
                detail: format!(
                    "not a backup name: {why}; give a path prefix such as /var/backup/db"
                ),
            }),
        }
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

    /// `NAME.ver.tmp`: during a commit, the intent that vouches for the
    /// files of the generation it names (see [`PendingGeneration::commit`]).
    pub fn intent_path(&self) -> PathBuf {
        tmp_path(&self.ver_path())
    }

    /// `NAME.fold`: while a prune folds generations into a kept one, the
    /// intent that names them (see [`prune_generations`](crate::prune_generations)).
    pub fn fold_intent_path(&self) -> PathBuf {
        self.with_suffix(".fold")
    }

    /// `NAME.N.fold.tmp`: the new diff of generation N that a fold writes
    /// before it replaces `NAME.N`.
    pub fn fold_tmp_path(&self, generation: u64) -> PathBuf {
        self.with_suffix(&format!(".{generation}.fold.tmp"))
    }

    /// `NAME.N.meta.json`: facts about generation N, a flat JSON object of
    /// strings: always `source_size` (bytes) and `block_size`, written with
    /// the generation's commit, then how it was made (its source, snapshot,
    /// freeze window, the database's binary-log position), added by the
    /// tools after it. A restore does not need it.
    pub fn metadata_path(&self, generation: u64) -> PathBuf {
        self.with_suffix(&format!(".{generation}.meta.json"))
    }

    /// Adds `facts` to committed generation `generation`'s metadata (the
    /// keys the commit recorded, `source_size` and `block_size`, keep
    /// their values), atomically: a new temporary file, fsync, rename,
    /// directory fsync.
    pub fn add_metadata(&self, generation: u64, facts: &BTreeMap<String, String>) -> Result<()> {
        let mut metadata = self.read_metadata(generation)?.unwrap_or_default();
        for (k, v) in facts {
            if !CORE_METADATA_KEYS.contains(&k.as_str()) || !metadata.contains_key(k) {
                metadata.insert(k.clone(), v.clone());
            }
        }
        self.write_metadata(generation, &metadata)
    }

    /// Replaces generation `generation`'s metadata by `metadata`,
    /// atomically (a new temporary file, fsync, rename, directory fsync).
    /// [`add_metadata`](Self::add_metadata) keeps what the commit
    /// recorded; this does not.
    pub fn write_metadata(
        &self,
        generation: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        let path = self.metadata_path(generation);
        let tmp = tmp_path(&path);
        remove_if_present(&tmp)?;
        let written = (|| {
            let file = self.create_new(&tmp)?;
            let mut out = self.output(file, SealedContent::Metadata, generation, &tmp)?;
            out.write_all(metadata_text(metadata).as_bytes())
                .ctx(&tmp, "write")?;
            let file = out.finish().ctx(&tmp, "write")?;
            file.sync_all().ctx(&tmp, "fsync")?;
            drop(file);
            fs::rename(&tmp, &path).ctx(&path, "rename into place")
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written?;
        sync_dir(&self.dir())
    }

    /// Generation `generation`'s metadata, or `None` if it has none (made
    /// by the original tool or by an earlier version of this one).
    pub fn read_metadata(&self, generation: u64) -> Result<Option<BTreeMap<String, String>>> {
        let path = self.metadata_path(generation);
        let text = match open_nofollow(&path) {
            Ok(f) => {
                // Metadata is small: a bigger file is not one (and a sealed
                // one cut here fails as cut).
                let mut raw = Vec::new();
                f.take(2 << 20).read_to_end(&mut raw).ctx(&path, "read")?;
                unseal_chain_file(
                    self.encryption.as_ref(),
                    raw,
                    SealedContent::Metadata,
                    generation,
                    &path,
                    &self.name,
                    1 << 20,
                )?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).ctx(&path, "open"),
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
    /// neither or both do (naming the digest the chain's format has).
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
            0 => {
                // Name the digest of the chain's format: that of this
                // generation's diff, else of any other generation's.
                let others = self.generation_files().unwrap_or_default();
                let format = std::iter::once(generation)
                    .chain(others.into_keys())
                    .find_map(|g| self.find_diff(g).ok())
                    .map_or(DigestFormat::Legacy, |d| d.format.digest_format());
                Err(Error::MissingGeneration {
                    path: self.digest_path(generation, format),
                    generation,
                    reason: "its digest does not exist".into(),
                })
            }
            _ => Err(Error::Chain {
                path: found[1].0.clone(),
                detail: format!(
                    "generation {generation} has both a .md5 and a .digest digest; remove the stray one"
                ),
            }),
        }
    }

    /// The last committed generation, from `NAME.ver`; `None` when there is
    /// no `NAME.ver` yet. `NAME.ver` is not followed if it is a symbolic
    /// link (an error).
    pub fn current_generation(&self) -> Result<Option<u64>> {
        let path = self.ver_path();
        match read_small(&path)? {
            None => Ok(None),
            Some(text) => parse_version(&text)
                .map(Some)
                .ok_or_else(|| Error::BadVersionFile {
                    path,
                    content: String::from_utf8_lossy(&text[..text.len().min(40)]).into_owned(),
                }),
        }
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
                let format =
                    if self.encryption.is_some() || path.extension().is_none_or(|e| e != "gz") {
                        let file = self.open_read_at(&path, SealedContent::Diff, generation)?;
                        DiffFormat::from_read_at(&path, file.as_ref())?
                    } else {
                        DiffFormat::Legacy(Compression::Gzip)
                    };
                Ok(DiffLocation {
                    path,
                    format,
                    generation,
                    sealed: self.encryption.is_some(),
                })
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

    /// The files named like committed files of this store (`NAME.N`,
    /// `NAME.N.gz`, `NAME.N.md5`, `NAME.N.digest`, `NAME.N.meta.json`),
    /// by generation.
    pub fn generation_files(&self) -> Result<BTreeMap<u64, Vec<PathBuf>>> {
        let dir = self.dir();
        let stem = self.name.file_name().unwrap_or_default().as_encoded_bytes();
        let mut found: BTreeMap<u64, Vec<PathBuf>> = BTreeMap::new();
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(e).ctx(&dir, "read directory"),
        };
        for entry in entries {
            let entry = entry.ctx(&dir, "read directory")?;
            let file_name = entry.file_name();
            let Some(rest) = file_name.as_encoded_bytes().strip_prefix(stem) else {
                continue;
            };
            let Some(rest) = rest.strip_prefix(b".") else {
                continue;
            };
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            let (number, suffix) = rest.split_at(digits);
            if digits == 0 || !matches!(suffix, b"" | b".gz" | b".md5" | b".digest" | b".meta.json")
            {
                continue;
            }
            let Some(n) = std::str::from_utf8(number)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            // `rest` is ASCII here: digits and one of the suffixes.
            let suffix = format!(".{}", String::from_utf8_lossy(rest));
            found.entry(n).or_default().push(self.with_suffix(&suffix));
        }
        for files in found.values_mut() {
            files.sort();
        }
        Ok(found)
    }

    /// Takes the store's lock, failing at once if another run holds it.
    /// `NAME.lock` is created 0600 if missing; a symbolic link, a hard
    /// link or anything but a regular file there is refused, never
    /// written through.
    pub fn lock(&self) -> Result<StoreLock> {
        self.take_lock(false)
    }

    /// Takes the store's lock, waiting while another run holds it (as
    /// `prune --wait` does for a backup to finish); otherwise as
    /// [`lock`](Self::lock).
    pub fn lock_waiting(&self) -> Result<StoreLock> {
        self.take_lock(true)
    }

    fn take_lock(&self, wait: bool) -> Result<StoreLock> {
        self.check_name()?;
        let path = self.lock_path();
        let refuse = || {
            Error::Chain {
            path: path.clone(),
            detail: "the lock file is not a plain file of its own (a symbolic link, hard link or device was put there?); nothing was written: remove it if no backup is running".into(),
        }
        };
        let mut file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(self.file_mode())
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(refuse()),
            Err(e) => return Err(e).ctx(&path, "open lock file"),
        };
        let meta = file.metadata().ctx(&path, "stat lock file")?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(refuse());
        }
        if wait {
            file.lock().ctx(&path, "lock")?;
        }
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

    /// The mode of new files: 0600, or 0640 when the store's directory is
    /// setgid (an operator's backup group, which new files then get).
    fn file_mode(&self) -> u32 {
        match fs::metadata(self.dir()) {
            Ok(m) if m.mode() & 0o2000 != 0 => 0o640,
            _ => 0o600,
        }
    }

    /// A writer of a new file of the chain: sealed when it is encrypted.
    pub(crate) fn output<W: Write>(
        &self,
        inner: W,
        content: SealedContent,
        generation: u64,
        path: &Path,
    ) -> Result<StoreWriter<W>> {
        StoreWriter::new(self.encryption.as_ref(), inner, content, generation, path)
    }

    /// Makes the chain's keys known before its files are written: a new
    /// chain's are made, an existing chain's are read from its last
    /// generation's digest.
    fn prepare_keys(&self, current: u64, format: DiffFormat) -> Result<()> {
        let Some(enc) = &self.encryption else {
            return Ok(());
        };
        if let DiffFormat::Legacy(_) = format {
            return Err(Error::InvalidOption(format!(
                "{}: the original blockdiff's format cannot be encrypted; an encrypted chain is v2",
                self.name.display()
            )));
        }
        if current == 0 {
            enc.start_chain()?;
        } else {
            // Opening checks the key against the chain's.
            self.open_digest(current)?;
        }
        Ok(())
    }

    pub(crate) fn create_new(&self, path: &Path) -> Result<File> {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(self.file_mode())
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ctx(path, "create")
    }

    /// Starts generation `current + 1` under `lock`, after dealing with
    /// what an interrupted run left:
    ///
    /// - its temporaries (`NAME.K.tmp`, `NAME.K.gz.tmp`, `NAME.K.md5.tmp`,
    ///   `NAME.K.digest.tmp`, `NAME.K.meta.json.tmp`, `NAME.ver.tmp`, and
    ///   `NAME.C.meta.json.tmp` of the current generation C) are removed;
    /// - if `NAME.ver.tmp` names K = current + 1 and no file is named for
    ///   a later generation, the files of generation K are that run's
    ///   interrupted commit and are removed (the intent is removed last);
    /// - any other file named for a generation after the current one (or
    ///   any generation at all when there is no `NAME.ver`, or it says 0)
    ///   is not this tool's to remove: the run fails, naming them and
    ///   `blockdiff-repair`, and removes nothing.
    ///
    /// Then it creates the new generation's temporary diff and digest
    /// (step `backup:begun`: the store is locked and the run has begun).
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
        // A prune killed in a fold: finished or undone first.
        crate::fold::recover_interrupted_fold(self, progress)?;
        let current = self.current_generation()?.unwrap_or(0);
        let generation = current + 1;
        let intent_path = self.intent_path();
        let intent = match read_small(&intent_path) {
            Ok(Some(text)) => parse_version(&text),
            Ok(None) => None,
            // A link or anything else unreadable there vouches for nothing
            // (and is removed below: the name is a temporary's).
            Err(_) => None,
        };
        let mut beyond = self.generation_files()?;
        beyond.retain(|&g, _| g > current);
        // The intent vouches only for a store in the state its commit
        // leaves: nothing beyond generation K.
        if intent == Some(generation)
            && beyond.keys().all(|&g| g == generation)
            && let Some(files) = beyond.remove(&generation)
        {
            progress.at_step("backup:remove-interrupted");
            for path in files {
                remove_leftover(path, progress)?;
            }
        }
        if let Some((&first, files)) = beyond.iter().next() {
            let last = *beyond.keys().last().unwrap_or(&first);
            let which = if first == last {
                format!("generation {first}")
            } else {
                format!("generations {first}\u{2013}{last}")
            };
            let ver = self.ver_path();
            let state = if current == 0 {
                format!("has {which} but no {} (or it says 0)", file_name_of(&ver))
            } else {
                format!(
                    "has files of {which} beyond its last committed generation {current} ({}), left by a run of the original blockdiff_backup that was killed, or {} was rolled back",
                    file_name_of(&ver),
                    file_name_of(&ver)
                )
            };
            return Err(Error::Chain {
                path: files[0].clone(),
                detail: format!(
                    "chain {} {state}; nothing was removed: run 'blockdiff-repair {}' to rebuild {} from the generations that verify",
                    self.name.display(),
                    self.name.display(),
                    file_name_of(&ver)
                ),
            });
        }
        let diff_path = self.diff_path(generation, format);
        let digest_path = self.digest_path(generation, format.digest_format());
        let meta_path = self.metadata_path(generation);
        for path in self.temporaries(current) {
            remove_leftover(path, progress)?;
        }
        self.prepare_keys(current, format)?;
        let diff_tmp = tmp_path(&diff_path);
        let digest_tmp = tmp_path(&digest_path);
        let meta_tmp = tmp_path(&meta_path);
        let diff = self.create_new(&diff_tmp)?;
        // Writes at least as large as the buffer (most v2 frames) go to the
        // file without a copy through it.
        let diff = self.output(
            BufWriter::with_capacity(128 << 10, diff),
            SealedContent::Diff,
            generation,
            &diff_tmp,
        )?;
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
            meta_path,
            diff_tmp,
            digest_tmp,
            meta_tmp,
            diff: Some(compression.writer(diff)),
            digest: None,
            stage: Stage::Writing,
        };
        let digest = BufWriter::with_capacity(256 << 10, self.create_new(&pending.digest_tmp)?);
        pending.digest = Some(self.output(
            digest,
            SealedContent::Digest,
            generation,
            &pending.digest_tmp,
        )?);
        progress.at_step("backup:begun");
        Ok(pending)
    }

    /// Every temporary name a backup run can create when `current` is
    /// the last committed generation, the intent last.
    fn temporaries(&self, current: u64) -> Vec<PathBuf> {
        let next = current + 1;
        let mut names = vec![
            self.diff_path(next, DiffFormat::Legacy(Compression::None)),
            self.diff_path(next, DiffFormat::Legacy(Compression::Gzip)),
            self.digest_path(next, DigestFormat::Legacy),
            self.digest_path(next, DigestFormat::V2),
            self.metadata_path(next),
        ];
        if current > 0 {
            names.push(self.metadata_path(current));
        }
        let mut tmps: Vec<PathBuf> = names.iter().map(|p| tmp_path(p)).collect();
        tmps.push(self.intent_path());
        tmps
    }
}

/// The keys the commit records in every generation's metadata.
pub const CORE_METADATA_KEYS: [&str; 2] = ["source_size", "block_size"];

impl crate::repair::RepairableChain for GenerationStore {
    fn generation_files(&self) -> Result<BTreeMap<u64, Vec<PathBuf>>> {
        GenerationStore::generation_files(self)
    }

    /// A temporary, fsync, rename, directory fsync.
    fn replace_ver(&self, generation: u64, progress: &mut dyn Progress) -> Result<()> {
        let ver = self.ver_path();
        let tmp = self.intent_path();
        remove_if_present(&tmp)?;
        let result = (|| {
            let mut f = self.create_new(&tmp)?;
            writeln!(f, "{generation}").ctx(&tmp, "write")?;
            f.sync_all().ctx(&tmp, "fsync")?;
            drop(f);
            progress.at_step("repair:rename-ver");
            fs::rename(&tmp, &ver).ctx(&ver, "replace")
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result?;
        sync_dir(&self.dir())
    }
}

fn file_name_of(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn metadata_text(metadata: &BTreeMap<String, String>) -> String {
    let mut text = serde_json::to_string_pretty(metadata).unwrap_or_default();
    text.push('\n');
    text
}

/// Opens `path` for reading without following a symbolic link there.
pub(crate) fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
}

/// At most 64 bytes of a small file (`NAME.ver`, `NAME.ver.tmp`), not
/// following a link; `None` if it does not exist.
fn read_small(path: &Path) -> Result<Option<Vec<u8>>> {
    let mut text = Vec::new();
    match open_nofollow(path) {
        Ok(f) => {
            if !f.metadata().ctx(path, "stat")?.is_file() {
                return Err(Error::Chain {
                    path: path.to_owned(),
                    detail: "not a regular file".into(),
                });
            }
            f.take(64).read_to_end(&mut text).ctx(path, "read")?;
            Ok(Some(text))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx(path, "open"),
    }
}

pub(crate) fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).ctx(path, "remove leftover"),
    }
}

pub(crate) fn remove_leftover(path: PathBuf, progress: &mut dyn Progress) -> Result<()> {
    if remove_if_present(&path)? {
        progress.notice(Notice::RemovedLeftover { path });
    }
    Ok(())
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

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
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

/// The steps of a commit, in order. A failure, or kill -9, at any of them
/// leaves every committed generation intact; each is also a step of
/// [`Progress::at_step`], named `backup:…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CommitStep {
    /// Flush and fsync the temporary diff (`backup:sync-diff`).
    SyncDiff,
    /// Flush and fsync the temporary digest (`backup:sync-digest`).
    SyncDigest,
    /// Write and fsync the temporary metadata (`backup:write-meta`).
    WriteMetadata,
    /// Write and fsync the intent `NAME.ver.tmp`, naming the new
    /// generation, and fsync the directory (`backup:write-intent`).
    WriteIntent,
    /// Rename the diff into place (`backup:rename-diff`).
    RenameDiff,
    /// Rename the digest into place (`backup:rename-digest`).
    RenameDigest,
    /// Rename the metadata into place and fsync the directory
    /// (`backup:rename-meta`).
    RenameMetadata,
    /// Rename `NAME.ver.tmp` over `NAME.ver`: the commit point
    /// (`backup:rename-ver`).
    RenameVersion,
    /// Fsync the directory, making the commit durable (`backup:sync-dir`).
    SyncDirectory,
}

impl CommitStep {
    /// Every step, in order.
    pub const ALL: [CommitStep; 9] = [
        CommitStep::SyncDiff,
        CommitStep::SyncDigest,
        CommitStep::WriteMetadata,
        CommitStep::WriteIntent,
        CommitStep::RenameDiff,
        CommitStep::RenameDigest,
        CommitStep::RenameMetadata,
        CommitStep::RenameVersion,
        CommitStep::SyncDirectory,
    ];

    /// The step's name for [`Progress::at_step`].
    pub fn name(self) -> &'static str {
        match self {
            CommitStep::SyncDiff => "backup:sync-diff",
            CommitStep::SyncDigest => "backup:sync-digest",
            CommitStep::WriteMetadata => "backup:write-meta",
            CommitStep::WriteIntent => "backup:write-intent",
            CommitStep::RenameDiff => "backup:rename-diff",
            CommitStep::RenameDigest => "backup:rename-digest",
            CommitStep::RenameMetadata => "backup:rename-meta",
            CommitStep::RenameVersion => "backup:rename-ver",
            CommitStep::SyncDirectory => "backup:sync-dir",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Only temporaries exist.
    Writing,
    /// `NAME.ver.tmp` names this generation: files at its final names
    /// may exist and are ours.
    Intent,
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
    meta_path: PathBuf,
    diff_tmp: PathBuf,
    digest_tmp: PathBuf,
    meta_tmp: PathBuf,
    diff: Option<CompressedWriter<StoreWriter<BufWriter<File>>>>,
    digest: Option<StoreWriter<BufWriter<File>>>,
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
    pub fn writers(&mut self) -> (&mut dyn Write, &mut dyn Write) {
        (
            self.diff.as_mut().expect("writers live until commit"),
            self.digest.as_mut().expect("writers live until commit"),
        )
    }

    /// Makes the generation durable and current, with `metadata` as its
    /// `NAME.N.meta.json`: fsync the diff, digest and metadata
    /// temporaries; write the intent `NAME.ver.tmp` (the generation
    /// number) and fsync the directory; rename the three files into
    /// place and fsync the directory; rename `NAME.ver.tmp` over
    /// `NAME.ver` (the commit point) and fsync the directory. A run that
    /// stops before the commit point is undone by the next one, which the
    /// intent tells that the renamed files are its own. Returns the
    /// generation number.
    pub fn commit(
        mut self,
        metadata: &BTreeMap<String, String>,
        progress: &mut dyn Progress,
    ) -> Result<u64> {
        self.commit_steps(metadata, progress, &mut |_| Ok(()))
    }

    /// The commit, calling `before` ahead of every step; an error from it
    /// aborts the commit there, as a failing disk would. The tests inject a
    /// failure at each step through it.
    fn commit_steps(
        &mut self,
        metadata: &BTreeMap<String, String>,
        progress: &mut dyn Progress,
        before: &mut dyn FnMut(CommitStep) -> io::Result<()>,
    ) -> Result<u64> {
        let dir = self.store.dir();
        let mut step = |s: CommitStep, path: &Path| {
            progress.at_step(s.name());
            before(s).ctx(path, "commit (injected failure)")
        };

        step(CommitStep::SyncDiff, &self.diff_tmp)?;
        let diff = self.diff.take().expect("writers live until commit");
        let file = diff
            .finish()
            .and_then(StoreWriter::finish)
            .and_then(|w| w.into_inner().map_err(std::io::IntoInnerError::into_error))
            .ctx(&self.diff_tmp, "write")?;
        file.sync_all().ctx(&self.diff_tmp, "fsync")?;
        drop(file);

        step(CommitStep::SyncDigest, &self.digest_tmp)?;
        let digest = self.digest.take().expect("writers live until commit");
        let file = digest
            .finish()
            .and_then(|w| w.into_inner().map_err(std::io::IntoInnerError::into_error))
            .ctx(&self.digest_tmp, "write")?;
        file.sync_all().ctx(&self.digest_tmp, "fsync")?;
        drop(file);

        step(CommitStep::WriteMetadata, &self.meta_tmp)?;
        let file = self.store.create_new(&self.meta_tmp)?;
        let mut out = self.store.output(
            file,
            SealedContent::Metadata,
            self.generation,
            &self.meta_tmp,
        )?;
        out.write_all(metadata_text(metadata).as_bytes())
            .ctx(&self.meta_tmp, "write")?;
        let file = out.finish().ctx(&self.meta_tmp, "write")?;
        file.sync_all().ctx(&self.meta_tmp, "fsync")?;
        drop(file);

        let ver = self.store.ver_path();
        let intent = self.store.intent_path();
        step(CommitStep::WriteIntent, &intent)?;
        let mut f = self.store.create_new(&intent)?;
        // From here the files at the final names are this run's, and the
        // intent says so to the next run.
        self.stage = Stage::Intent;
        writeln!(f, "{}", self.generation).ctx(&intent, "write")?;
        f.sync_all().ctx(&intent, "fsync")?;
        drop(f);
        sync_dir(&dir)?;

        step(CommitStep::RenameDiff, &self.diff_path)?;
        fs::rename(&self.diff_tmp, &self.diff_path).ctx(&self.diff_path, "rename into place")?;
        step(CommitStep::RenameDigest, &self.digest_path)?;
        fs::rename(&self.digest_tmp, &self.digest_path)
            .ctx(&self.digest_path, "rename into place")?;
        step(CommitStep::RenameMetadata, &self.meta_path)?;
        fs::rename(&self.meta_tmp, &self.meta_path).ctx(&self.meta_path, "rename into place")?;
        // The renamed files must be durable before NAME.ver names them.
        sync_dir(&dir)?;

        step(CommitStep::RenameVersion, &ver)?;
        fs::rename(&intent, &ver).ctx(&ver, "replace")?;
        // From here the generation is current: nothing may remove it.
        self.stage = Stage::Committed;
        step(CommitStep::SyncDirectory, &dir)?;
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
        let mut all_removed = true;
        let mut remove = vec![&self.diff_tmp, &self.digest_tmp, &self.meta_tmp];
        if self.stage == Stage::Intent {
            remove.extend([&self.diff_path, &self.digest_path, &self.meta_path]);
        }
        for path in remove {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => all_removed = false,
                _ => {}
            }
        }
        // The intent goes last, and only once the files it vouches for
        // are gone: the next run finishes the job otherwise.
        if self.stage == Stage::Intent && all_removed {
            let _ = fs::remove_file(self.store.intent_path());
        }
    }
}

/// An I/O error reading a sealed file: its own error (damage, a cut) when
/// it carries one, else the I/O error with the path.
pub fn sealed_read_error(path: &Path, e: io::Error) -> Error {
    if !e
        .get_ref()
        .is_some_and(<dyn std::error::Error + Send + Sync>::is::<archive_format::ArchiveError>)
    {
        return Error::Io {
            path: path.to_owned(),
            op: "read",
            source: e,
        };
    }
    match e
        .into_inner()
        .map(<dyn std::error::Error + Send + Sync>::downcast::<archive_format::ArchiveError>)
    {
        Some(Ok(archive)) => Error::from(*archive),
        _ => Error::Io {
            path: path.to_owned(),
            op: "read",
            source: io::Error::other("unreadable sealed file"),
        },
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
        store.add_metadata(1, &meta).unwrap();
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
        let meta: BTreeMap<String, String> = [("n".to_owned(), generation.to_string())].into();
        let result = pending.commit_steps(&meta, &mut NoProgress, &mut inject);
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
            let meta = store.read_metadata(g).unwrap().unwrap();
            assert_eq!(meta["n"], g.to_string());
        }
    }

    const STEPS: [CommitStep; 9] = CommitStep::ALL;

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
                [
                    "db.1",
                    "db.1.md5",
                    "db.1.meta.json",
                    "db.2",
                    "db.2.md5",
                    "db.2.meta.json",
                    "db.lock",
                    "db.ver"
                ],
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

    #[test]
    fn begin_removes_only_what_an_intent_vouches_for() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        attempt(&store, None, false).unwrap();
        attempt(&store, None, false).unwrap();
        let names = |d: &Path| {
            let mut v: Vec<_> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            v.sort();
            v
        };
        // NAME.3 with no intent: reported, kept.
        fs::write(dir.path().join("db.3"), b"not ours").unwrap();
        let before = names(dir.path());
        let e = attempt(&store, None, false).unwrap_err().to_string();
        assert!(
            e.contains("db.3")
                && e.contains("beyond its last committed generation 2")
                && e.contains("nothing was removed")
                && e.contains("blockdiff-repair"),
            "{e}"
        );
        assert_eq!(names(dir.path()), before);
        assert_eq!(fs::read(dir.path().join("db.3")).unwrap(), b"not ours");
        // An intent for another generation vouches for nothing.
        fs::write(store.intent_path(), "4\n").unwrap();
        assert!(attempt(&store, None, false).is_err());
        assert_eq!(fs::read(dir.path().join("db.3")).unwrap(), b"not ours");
        // The intent for generation 3: an interrupted commit, removed.
        fs::write(store.intent_path(), "3\n").unwrap();
        assert_eq!(attempt(&store, None, false).unwrap(), 3);
        committed_state(&store, 3);
        // No NAME.ver (or 0) with generations: reported, never removed.
        for ver in [None, Some("0\n")] {
            match ver {
                None => fs::remove_file(store.ver_path()).unwrap(),
                Some(t) => fs::write(store.ver_path(), t).unwrap(),
            }
            let e = attempt(&store, None, false).unwrap_err().to_string();
            assert!(
                e.contains("has generations 1\u{2013}3 but no db.ver"),
                "{e}"
            );
            fs::write(store.ver_path(), "3\n").unwrap();
            committed_state(&store, 3);
            if ver.is_some() {
                continue;
            }
            fs::remove_file(store.ver_path()).unwrap();
        }
        // An intent for generation 4 with files of generation 5 too: the
        // store is not as a commit leaves it, and nothing is removed.
        fs::write(store.intent_path(), "4\n").unwrap();
        fs::write(dir.path().join("db.4"), b"interrupted").unwrap();
        fs::write(dir.path().join("db.5"), b"not ours").unwrap();
        let e = attempt(&store, None, false).unwrap_err().to_string();
        assert!(e.contains("generations 4\u{2013}5"), "{e}");
        assert!(dir.path().join("db.4").exists() && store.intent_path().exists());
        fs::remove_file(dir.path().join("db.5")).unwrap();
        assert_eq!(attempt(&store, None, false).unwrap(), 4);
        committed_state(&store, 4);
    }

    #[test]
    fn check_name_refuses_names_of_hidden_files() {
        for bad in [
            "/",
            "",
            "store/",
            "store/.",
            "store/..",
            ".",
            "..",
            "store/.db",
            ".db",
        ] {
            let e = GenerationStore::new(bad)
                .check_name()
                .unwrap_err()
                .to_string();
            assert!(e.contains("not a backup name"), "{bad:?}: {e}");
        }
        for good in ["db", "/var/backup/db", "store/db.2026", "./db"] {
            GenerationStore::new(good).check_name().unwrap();
        }
    }

    #[test]
    fn missing_digest_is_named_in_the_chains_format() {
        use crate::{BackupOptions, DumpSource, backup};
        let dir = tempfile::tempdir().unwrap();
        for (name, format, digest, other) in [
            ("h", DiffFormat::default(), "h.1.digest", "h.1.md5"),
            (
                "l",
                DiffFormat::Legacy(Compression::None),
                "l.1.md5",
                "l.1.digest",
            ),
        ] {
            let store = GenerationStore::new(dir.path().join(name));
            let options = BackupOptions {
                format: Some(format),
                ..BackupOptions::default()
            };
            let image = vec![1u8; 10_000];
            for _ in 0..2 {
                backup(
                    &store,
                    DumpSource::from_bytes(&image, "image"),
                    &options,
                    &mut NoProgress,
                )
                .unwrap();
            }
            fs::remove_file(dir.path().join(digest)).unwrap();
            let e = store.find_digest(1).unwrap_err().to_string();
            assert!(e.contains(digest) && !e.contains(other), "{e}");
            // Generation 1's diff gone too, as after a hand-made clean-up:
            // named after another generation's format.
            fs::remove_file(store.find_diff(1).unwrap().path).unwrap();
            let e = store.find_digest(1).unwrap_err().to_string();
            assert!(e.contains(digest) && !e.contains(other), "{e}");
        }
    }

    #[test]
    fn the_lock_refuses_links_and_never_writes_through_them() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        symlink(&victim, store.lock_path()).unwrap();
        let e = store.lock().unwrap_err().to_string();
        assert!(
            e.contains("db.lock") && e.contains("not a plain file"),
            "{e}"
        );
        fs::remove_file(store.lock_path()).unwrap();
        fs::hard_link(&victim, store.lock_path()).unwrap();
        assert!(store.lock().is_err());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn new_files_are_0600_or_0640_in_a_setgid_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        attempt(&store, None, false).unwrap();
        for name in ["db.1", "db.1.md5", "db.1.meta.json", "db.ver", "db.lock"] {
            let mode = fs::metadata(dir.path().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let sub = dir.path().join("g");
        fs::create_dir(&sub).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o2750)).unwrap();
        let store = GenerationStore::new(sub.join("db"));
        attempt(&store, None, false).unwrap();
        for name in ["db.1", "db.1.md5", "db.1.meta.json", "db.ver"] {
            let mode = fs::metadata(sub.join(name)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640, "{name}");
        }
    }

    #[test]
    fn added_metadata_keeps_the_commits_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        attempt(&store, None, false).unwrap();
        let core: BTreeMap<String, String> = [
            ("source_size".to_owned(), "100".to_owned()),
            ("block_size".to_owned(), "4096".to_owned()),
        ]
        .into();
        store.add_metadata(1, &core).unwrap();
        let more: BTreeMap<String, String> = [
            ("source_size".to_owned(), "5".to_owned()),
            ("finished".to_owned(), "now".to_owned()),
        ]
        .into();
        store.add_metadata(1, &more).unwrap();
        let m = store.read_metadata(1).unwrap().unwrap();
        assert_eq!(
            (m["source_size"].as_str(), m["finished"].as_str()),
            ("100", "now")
        );
        assert_eq!(m["n"], "1");
    }
}
