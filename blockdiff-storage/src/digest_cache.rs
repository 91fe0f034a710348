//! The local cache of a remote chain's digests: an incremental backup
//! reads the previous generation's digest from here, not from the store.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use blockdiff_core::{Error, Result};

use crate::ObjectStorage;
use crate::object_chain::{core_error, remove_file_if_present};

/// A directory of one chain's cached digests, named like their objects:
/// `CACHE/<hash of the chain's name>/NAME.N.digest`. A cached digest is
/// used only when its BLAKE3 hash is the one its generation's metadata
/// records; otherwise it is fetched again.
#[derive(Debug, Clone)]
pub struct DigestCache {
    dir: PathBuf,
}

/// BLAKE3 of a file's bytes, in hex.
fn hash_file(path: &Path) -> io::Result<String> {
    let mut file = open_nofollow(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

fn open_nofollow(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

fn io_error(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io { path, op, source }
}

impl DigestCache {
    /// The cache of the chain named `chain` under `root`.
    pub fn new(root: PathBuf, chain: &str) -> Self {
        let id = blake3::hash(chain.as_bytes()).to_hex();
        DigestCache {
            dir: root.join(&id.as_str()[..24]),
        }
    }

    /// The chain's directory in the cache.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached copy of `key` (which may not exist).
    pub fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Creates the directory (0700, and its parents), refusing a
    /// symbolic link there.
    fn ensure_dir(&self) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_error(&self.dir, "create cache directory"))?;
        let meta = fs::symlink_metadata(&self.dir).map_err(io_error(&self.dir, "stat"))?;
        if !meta.is_dir() {
            return Err(Error::Chain {
                path: self.dir.clone(),
                detail: "the digest cache is not a directory (a symbolic link?); remove it".into(),
            });
        }
        Ok(())
    }

    /// The local copy of the digest object `key`: the cached one when its
    /// hash is `expected`, else downloaded (once) and checked against
    /// `expected` when there is one.
    pub fn fetch(
        &self,
        storage: &dyn ObjectStorage,
        key: &str,
        expected: Option<&str>,
    ) -> Result<PathBuf> {
        let path = self.path(key);
        if let Some(want) = expected
            && let Ok(have) = hash_file(&path)
            && have == want
        {
            return Ok(path);
        }
        self.ensure_dir()?;
        let mut reader = storage.reader(key).map_err(core_error)?;
        let mut writer = self.writer(key)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::Io {
                        path: PathBuf::from(storage.describe(key)),
                        op: "download",
                        source: e,
                    });
                }
            };
            writer.write_all(&buf[..n])?;
        }
        let got = writer.hash();
        if let Some(want) = expected
            && got != want
        {
            return Err(Error::CorruptDigest {
                path: PathBuf::from(storage.describe(key)),
                offset: 0,
                detail: format!(
                    "its BLAKE3 hash is {got} but its generation's metadata records {want}: the object was changed or damaged after its commit"
                ),
            });
        }
        writer.commit()?;
        Ok(path)
    }

    /// A new cached copy of `key`, written beside it and put in place by
    /// [`CacheWriter::commit`].
    pub fn writer(&self, key: &str) -> Result<CacheWriter> {
        self.ensure_dir()?;
        let path = self.path(key);
        let tmp = self.dir.join(format!(
            ".{key}.tmp-{}-{}",
            std::process::id(),
            blake3::hash(format!("{:?}", std::time::SystemTime::now()).as_bytes()).to_hex()[..8]
                .to_owned()
        ));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_error(&tmp, "create"))?;
        Ok(CacheWriter {
            file: Some(io::BufWriter::with_capacity(256 << 10, file)),
            hasher: blake3::Hasher::new(),
            path,
            tmp,
        })
    }

    /// Removes every cached digest but `keep`'s (a chain needs only its
    /// newest).
    pub fn retain_only(&self, keep: &str) -> Result<()> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&self.dir, "read directory")(e)),
        };
        for entry in entries.flatten() {
            if entry.file_name() != keep {
                let path = entry.path();
                remove_file_if_present(&path).map_err(io_error(&path, "remove"))?;
            }
        }
        Ok(())
    }
}

/// A cached digest being written: hashed as it goes, put in place by
/// [`commit`](Self::commit), removed if dropped first.
#[derive(Debug)]
pub struct CacheWriter {
    file: Option<io::BufWriter<File>>,
    hasher: blake3::Hasher,
    path: PathBuf,
    tmp: PathBuf,
}

impl CacheWriter {
    /// Appends bytes.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.hasher.update(bytes);
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(bytes).map_err(io_error(&self.tmp, "write"))
    }

    /// BLAKE3 (hex) of what was written.
    pub fn hash(&self) -> String {
        self.hasher.finalize().to_hex().to_string()
    }

    /// Syncs the copy and renames it into place.
    pub fn commit(mut self) -> Result<PathBuf> {
        if let Some(file) = self.file.take() {
            let file = file
                .into_inner()
                .map_err(|e| io_error(&self.tmp, "write")(e.into_error()))?;
            file.sync_all().map_err(io_error(&self.tmp, "fsync"))?;
        }
        fs::rename(&self.tmp, &self.path).map_err(io_error(&self.path, "rename into place"))?;
        Ok(self.path.clone())
    }
}

impl Drop for CacheWriter {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}
