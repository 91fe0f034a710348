//! A chain of generations kept on an [`ObjectStorage`]: the same object
//! names as a local store (`NAME.ver`, `NAME.N`, `NAME.N.digest`,
//! `NAME.N.md5`, `NAME.N.gz`, `NAME.N.meta.json`), read through
//! [`GenerationSource`] and committed by replacing `NAME.ver` last.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use archive_format::{DigestFile, ReadAt};
use blockdiff_core::{
    BlockHashKey, ChainEncryption, Compression, DiffBytes, DiffFormat, DiffLocation, DigestFormat,
    Error, FrameCompression, GenerationSource, Progress, RepairableChain, Result, SealedContent,
    StoreWriter, open_chain_file, parse_version, unseal_chain_file,
};

use crate::chunk_cache::{ChunkCache, ChunkedObject};
use crate::digest_cache::DigestCache;
use crate::{ObjectStorage, StorageError};

/// Largest `NAME.ver` or `NAME.N.meta.json` read (its plaintext, when
/// sealed).
const SMALL_OBJECT_LIMIT: u64 = 1 << 20;
/// Largest sealed `NAME.N.meta.json` read: its plaintext limit and the
/// sealing's overhead.
const SEALED_SMALL_OBJECT_LIMIT: u64 = 2 << 20;

/// The metadata key under which a commit records the BLAKE3 hash (hex) of
/// the generation's digest object, so that a cached copy is checked
/// without downloading it.
pub const DIGEST_HASH_KEY: &str = "digest_blake3";

/// One chain on an object store.
///
/// ```
/// use std::sync::Arc;
/// use blockdiff_core::GenerationSource;
/// use blockdiff_storage::{ObjectChain, OpenDalStorage};
///
/// let cache = tempfile::tempdir()?;
/// let chain = ObjectChain::new(Arc::new(OpenDalStorage::memory()?), "db", cache.path())?;
/// assert_eq!(chain.current_generation()?, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ObjectChain {
    storage: Arc<dyn ObjectStorage>,
    name: String,
    display: PathBuf,
    cache: DigestCache,
    chunks: Arc<ChunkCache>,
    /// An encrypted chain's secret and keys: every object of a generation
    /// is then sealed (FORMAT.md §10), and its digests are cached sealed.
    encryption: Option<ChainEncryption>,
}

/// A [`StorageError`] as the core's error, naming the object.
pub(crate) fn core_error(e: StorageError) -> Error {
    let kind = match e.kind {
        crate::StorageErrorKind::NotFound => io::ErrorKind::NotFound,
        crate::StorageErrorKind::PermissionDenied => io::ErrorKind::PermissionDenied,
        crate::StorageErrorKind::NoSpace => io::ErrorKind::StorageFull,
        crate::StorageErrorKind::Invalid => io::ErrorKind::InvalidData,
        crate::StorageErrorKind::Other => io::ErrorKind::Other,
    };
    Error::Io {
        path: PathBuf::from(e.object),
        op: e.action,
        source: io::Error::new(kind, e.detail),
    }
}

impl ObjectChain {
    /// The chain `name` (a plain name: no `/`, not starting with a dot) on
    /// `storage`, with digests cached under `cache_dir`.
    pub fn new(
        storage: Arc<dyn ObjectStorage>,
        name: &str,
        cache_dir: impl Into<PathBuf>,
    ) -> Result<Self> {
        let display = PathBuf::from(storage.describe(name));
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(Error::Chain {
                path: display,
                detail: "not a backup name: give a name such as s3://bucket/prefix/db".into(),
            });
        }
        let cache = DigestCache::new(cache_dir.into(), &display.to_string_lossy());
        Ok(ObjectChain {
            storage,
            name: name.to_owned(),
            display,
            cache,
            chunks: Arc::default(),
            encryption: None,
        })
    }

    /// The chain, encrypted with `encryption`: its objects are sealed with
    /// its keys (a new chain is started encrypted), and a plain object is
    /// refused as a damaged one is.
    pub fn with_encryption(mut self, encryption: ChainEncryption) -> Self {
        self.encryption = Some(encryption);
        self
    }

    /// The chain's encryption, when it was given.
    pub fn encryption(&self) -> Option<&ChainEncryption> {
        self.encryption.as_ref()
    }

    /// Object `key` of generation `generation`, read by offset through the
    /// chain's chunk cache: its plaintext when the chain is encrypted
    /// (checked as [`open_chain_file`] does), refused when sealed and the
    /// chain has no key.
    pub(crate) fn open_object(
        &self,
        key: &str,
        content: SealedContent,
        generation: u64,
    ) -> Result<Box<dyn ReadAt + Send + Sync>> {
        let path = self.display_of(key);
        let size = self.storage.stat(key).map_err(core_error)?.ok_or_else(|| {
            Error::MissingGeneration {
                path: path.clone(),
                generation,
                reason: "it disappeared while being read".into(),
            }
        })?;
        let object = ChunkedObject::new(
            Arc::clone(&self.storage),
            key,
            size,
            Arc::clone(&self.chunks),
        );
        open_chain_file(
            self.encryption.as_ref(),
            object,
            content,
            generation,
            &path,
            &self.display,
        )
    }

    /// The cached digest `path` of generation `generation` (from
    /// [`find_digest`](GenerationSource::find_digest)), opened: its
    /// plaintext when the chain is encrypted, which also checks the key.
    pub fn open_cached_digest(&self, generation: u64, path: &Path) -> Result<DigestFile> {
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| Error::Io {
                path: path.to_owned(),
                op: "open",
                source,
            })?;
        let file = open_chain_file(
            self.encryption.as_ref(),
            file,
            SealedContent::Digest,
            generation,
            path,
            &self.display,
        )?;
        Ok(DigestFile::from_read_at(file, path)?)
    }

    /// The storage the chain is on.
    pub fn storage(&self) -> &Arc<dyn ObjectStorage> {
        &self.storage
    }

    /// Forgets what was read of object `key`, which was just replaced.
    pub(crate) fn forget_object(&self, key: &str) {
        self.chunks.forget_object(key);
    }

    /// The chain's local digest cache.
    pub fn cache(&self) -> &DigestCache {
        &self.cache
    }

    /// The key of `NAME` + `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.name)
    }

    /// `NAME.N` or `NAME.N.gz`.
    pub fn diff_key(&self, generation: u64, format: DiffFormat) -> String {
        let suffix = match format {
            DiffFormat::Legacy(Compression::Gzip) => ".gz",
            _ => "",
        };
        self.key(&format!(".{generation}{suffix}"))
    }

    /// `NAME.N.md5` or `NAME.N.digest`.
    pub fn digest_key(&self, generation: u64, format: DigestFormat) -> String {
        match format {
            DigestFormat::Legacy => self.key(&format!(".{generation}.md5")),
            DigestFormat::V2 => self.key(&format!(".{generation}.digest")),
        }
    }

    /// `NAME.N.meta.json`.
    pub fn metadata_key(&self, generation: u64) -> String {
        self.key(&format!(".{generation}.meta.json"))
    }

    /// `NAME.ver`.
    pub fn ver_key(&self) -> String {
        self.key(".ver")
    }

    /// `NAME.lock`: which run writes the chain.
    pub fn lock_key(&self) -> String {
        self.key(".lock")
    }

    pub(crate) fn display_of(&self, key: &str) -> PathBuf {
        PathBuf::from(self.storage.describe(key))
    }

    /// The objects named like files of a generation (`NAME.N`,
    /// `NAME.N.gz`, `NAME.N.md5`, `NAME.N.digest`, `NAME.N.meta.json`), by
    /// generation.
    pub fn generation_keys(&self) -> Result<BTreeMap<u64, Vec<String>>> {
        let prefix = self.key(".");
        let mut found: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for entry in self.storage.list(&prefix).map_err(core_error)? {
            let Some(rest) = entry.key.strip_prefix(&prefix) else {
                continue;
            };
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            let (number, suffix) = rest.split_at(digits);
            if digits == 0 || !matches!(suffix, "" | ".gz" | ".md5" | ".digest" | ".meta.json") {
                continue;
            }
            if let Ok(n) = number.parse::<u64>() {
                found.entry(n).or_default().push(entry.key);
            }
        }
        Ok(found)
    }

    /// Replaces generation `generation`'s metadata (a flat JSON object of
    /// strings, as a local store writes it).
    pub fn write_metadata(
        &self,
        generation: u64,
        metadata: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut text = serde_json::to_string_pretty(metadata).unwrap_or_default();
        text.push('\n');
        let key = self.metadata_key(generation);
        let path = self.display_of(&key);
        let mut out = StoreWriter::new(
            self.encryption.as_ref(),
            Vec::new(),
            SealedContent::Metadata,
            generation,
            &path,
        )?;
        let bytes = out
            .write_all(text.as_bytes())
            .and_then(|()| out.finish())
            .map_err(|source| Error::Io {
                path,
                op: "seal",
                source,
            })?;
        self.storage.put(&key, &bytes).map_err(core_error)
    }

    /// Adds `facts` to committed generation `generation`'s metadata; the
    /// keys the commit recorded keep their values.
    pub fn add_metadata(&self, generation: u64, facts: &BTreeMap<String, String>) -> Result<()> {
        let mut metadata = self.read_metadata(generation)?.unwrap_or_default();
        for (k, v) in facts {
            let core =
                blockdiff_core::CORE_METADATA_KEYS.contains(&k.as_str()) || k == DIGEST_HASH_KEY;
            if !core || !metadata.contains_key(k) {
                metadata.insert(k.clone(), v.clone());
            }
        }
        self.write_metadata(generation, &metadata)
    }

    fn find_one(&self, generation: u64, keys: [String; 2], what: &str) -> Result<Option<usize>> {
        let mut found = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            if self.storage.stat(key).map_err(core_error)?.is_some() {
                found.push(i);
            }
        }
        match found.len() {
            0 => Ok(None),
            1 => Ok(Some(found[0])),
            _ => Err(Error::Chain {
                path: self.display_of(&keys[1]),
                detail: format!(
                    "generation {generation} has two {what}s ({} and {}); remove the stray one",
                    keys[0], keys[1]
                ),
            }),
        }
    }

    /// The format of generation `generation`'s digest, and its key.
    pub fn digest_of(&self, generation: u64) -> Result<(String, DigestFormat)> {
        let keys = [
            self.digest_key(generation, DigestFormat::Legacy),
            self.digest_key(generation, DigestFormat::V2),
        ];
        match self.find_one(generation, keys.clone(), "digest")? {
            Some(0) => Ok((keys[0].clone(), DigestFormat::Legacy)),
            Some(_) => Ok((keys[1].clone(), DigestFormat::V2)),
            None => Err(Error::MissingGeneration {
                path: self.display_of(&keys[1]),
                generation,
                reason: "its digest does not exist".into(),
            }),
        }
    }
}

impl GenerationSource for ObjectChain {
    fn name(&self) -> &Path {
        &self.display
    }

    fn ver_path(&self) -> PathBuf {
        self.display_of(&self.ver_key())
    }

    fn current_generation(&self) -> Result<Option<u64>> {
        let key = self.ver_key();
        match self
            .storage
            .read_small(&key, SMALL_OBJECT_LIMIT)
            .map_err(core_error)?
        {
            None => Ok(None),
            Some(text) => parse_version(&text)
                .map(Some)
                .ok_or_else(|| Error::BadVersionFile {
                    path: self.display_of(&key),
                    content: String::from_utf8_lossy(&text[..text.len().min(40)]).into_owned(),
                }),
        }
    }

    fn diff_path(&self, generation: u64, format: DiffFormat) -> PathBuf {
        self.display_of(&self.diff_key(generation, format))
    }

    fn metadata_path(&self, generation: u64) -> PathBuf {
        self.display_of(&self.metadata_key(generation))
    }

    fn find_diff(&self, generation: u64) -> Result<DiffLocation> {
        let keys = [
            self.diff_key(generation, DiffFormat::Legacy(Compression::None)),
            self.diff_key(generation, DiffFormat::Legacy(Compression::Gzip)),
        ];
        let Some(i) = self.find_one(generation, keys.clone(), "diff")? else {
            return Err(Error::MissingGeneration {
                path: self.display_of(&keys[0]),
                generation,
                reason: "neither it nor its .gz form exists".into(),
            });
        };
        let key = &keys[i];
        let path = self.display_of(key);
        // An encrypted chain's diff is read through its key; a plain one's
        // first bytes are one ranged GET.
        let format = if self.encryption.is_some() {
            let file = self.open_object(key, SealedContent::Diff, generation)?;
            DiffFormat::from_read_at(&path, file.as_ref())?
        } else {
            let size = self
                .storage
                .stat(key)
                .map_err(core_error)?
                .unwrap_or_default();
            let mut head = vec![0u8; (archive_format::V2_HEADER_LEN as u64).min(size) as usize];
            if !head.is_empty() {
                self.storage
                    .read_range(key, 0, &mut head)
                    .map_err(core_error)?;
            }
            DiffFormat::from_head(&path, &head)?
        };
        Ok(DiffLocation {
            path,
            format,
            generation,
            sealed: self.encryption.is_some(),
        })
    }

    fn find_digest(&self, generation: u64) -> Result<(PathBuf, DigestFormat)> {
        let metadata = self.read_metadata(generation).ok().flatten();
        self.digest_with_metadata(generation, metadata.as_ref())
    }

    fn read_metadata(&self, generation: u64) -> Result<Option<BTreeMap<String, String>>> {
        let key = self.metadata_key(generation);
        let Some(raw) = self
            .storage
            .read_small(&key, SEALED_SMALL_OBJECT_LIMIT)
            .map_err(core_error)?
        else {
            return Ok(None);
        };
        let text = unseal_chain_file(
            self.encryption.as_ref(),
            raw,
            SealedContent::Metadata,
            generation,
            &self.display_of(&key),
            &self.display,
            SMALL_OBJECT_LIMIT,
        )?;
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::BadMetadata {
                path: self.display_of(&key),
                detail: e.to_string(),
            })
    }

    fn open_diff(&self, diff: &DiffLocation) -> Result<DiffBytes> {
        let key = self.diff_key(diff.generation, diff.format);
        Ok(Arc::from(self.open_object(
            &key,
            SealedContent::Diff,
            diff.generation,
        )?))
    }

    fn open_digest(&self, generation: u64) -> Result<DigestFile> {
        let (path, _) = self.find_digest(generation)?;
        self.open_cached_digest(generation, &path)
    }

    fn block_hash_key(&self) -> Option<BlockHashKey> {
        self.encryption
            .as_ref()
            .and_then(ChainEncryption::block_hash_key)
    }

    fn stream_read_size(&self) -> usize {
        8 << 20
    }
}

/// Removes a file if it exists.
pub(crate) fn remove_file_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl ObjectChain {
    /// [`find_digest`](GenerationSource::find_digest) with generation
    /// `generation`'s metadata already read: the local copy, checked
    /// against the BLAKE3 that `metadata` records (fetched if missing or
    /// not that one).
    pub(crate) fn digest_with_metadata(
        &self,
        generation: u64,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<(PathBuf, DigestFormat)> {
        let (key, format) = self.digest_of(generation)?;
        let expected = metadata.and_then(|m| m.get(DIGEST_HASH_KEY));
        let path = self
            .cache
            .fetch(self.storage.as_ref(), &key, expected.map(String::as_str))?;
        Ok((path, format))
    }
}

/// The metadata key of a generation's diff format on an object store
/// ([`format_name`]), so that the next backup need not read the diff.
pub const DIFF_FORMAT_KEY: &str = "diff_format";

/// A diff format as [`DIFF_FORMAT_KEY`] records it: `legacy`,
/// `legacy-gzip`, `v2-zstd-LEVEL` or `v2-none-LEVEL`.
pub(crate) fn format_name(format: DiffFormat) -> String {
    match format {
        DiffFormat::Legacy(Compression::None) => "legacy".into(),
        DiffFormat::Legacy(Compression::Gzip) => "legacy-gzip".into(),
        DiffFormat::V2 { compression, level } => {
            let c = match compression {
                FrameCompression::None => "none",
                FrameCompression::Zstd => "zstd",
            };
            format!("v2-{c}-{level}")
        }
    }
}

/// The format [`format_name`] named.
fn parse_format_name(name: &str) -> Option<DiffFormat> {
    match name {
        "legacy" => Some(DiffFormat::Legacy(Compression::None)),
        "legacy-gzip" => Some(DiffFormat::Legacy(Compression::Gzip)),
        _ => {
            let rest = name.strip_prefix("v2-")?;
            let (c, level) = rest.split_once('-')?;
            let compression = match c {
                "none" => FrameCompression::None,
                "zstd" => FrameCompression::Zstd,
                _ => return None,
            };
            Some(DiffFormat::V2 {
                compression,
                level: level.parse().ok()?,
            })
        }
    }
}

impl ObjectChain {
    /// [`find_diff`](GenerationSource::find_diff), from the format that
    /// generation `generation`'s `metadata` records when it does (no
    /// request); else by reading the diff's first bytes.
    pub(crate) fn diff_with_metadata(
        &self,
        generation: u64,
        metadata: Option<&BTreeMap<String, String>>,
    ) -> Result<DiffLocation> {
        match metadata
            .and_then(|m| m.get(DIFF_FORMAT_KEY))
            .and_then(|name| parse_format_name(name))
        {
            Some(format) => Ok(DiffLocation {
                path: self.display_of(&self.diff_key(generation, format)),
                format,
                generation,
                sealed: self.encryption.is_some(),
            }),
            None => self.find_diff(generation),
        }
    }
}

impl RepairableChain for ObjectChain {
    fn generation_files(&self) -> Result<BTreeMap<u64, Vec<PathBuf>>> {
        Ok(self
            .generation_keys()?
            .into_iter()
            .map(|(g, keys)| (g, keys.iter().map(|k| self.display_of(k)).collect()))
            .collect())
    }

    /// One PUT: an object is replaced whole.
    fn replace_ver(&self, generation: u64, progress: &mut dyn Progress) -> Result<()> {
        progress.at_step("repair:rename-ver");
        self.storage
            .put(&self.ver_key(), format!("{generation}\n").as_bytes())
            .map_err(core_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for format in [
            DiffFormat::Legacy(Compression::None),
            DiffFormat::Legacy(Compression::Gzip),
            DiffFormat::V2 {
                compression: FrameCompression::Zstd,
                level: 3,
            },
            DiffFormat::V2 {
                compression: FrameCompression::Zstd,
                level: -5,
            },
            DiffFormat::V2 {
                compression: FrameCompression::None,
                level: 0,
            },
        ] {
            assert_eq!(parse_format_name(&format_name(format)), Some(format));
        }
        for bad in ["", "v2", "v2-zstd", "v2-lz4-1", "v2-zstd-x", "legacy-bz2"] {
            assert_eq!(parse_format_name(bad), None, "{bad}");
        }
    }
}
