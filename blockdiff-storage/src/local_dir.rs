//! [`ObjectStorage`] on a local directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::object_storage::check_key;
use crate::{ObjectEntry, ObjectStorage, ObjectWriter, StorageError, StorageErrorKind};

/// How much a writer gathers before writing to its file.
const WRITE_BUFFER: usize = 1 << 20;

/// Makes each temporary file name of this process distinct.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Objects as the regular files of one directory: a key is a file name.
///
/// - A new object is written to a temporary file beside it
///   (`.KEY.tmp-PID-N`, created exclusively, mode 0600, never through a
///   symbolic link), flushed, synced and renamed onto `KEY`, then the
///   directory is synced: a reader sees the old file or the new one whole,
///   and a crash leaves at most a temporary, never a partial `KEY`.
/// - Reads never follow a symbolic link: a link at a key is an error of
///   kind [`Invalid`](StorageErrorKind::Invalid). Writing a key replaces a
///   link there, never what it points to.
/// - Keys are plain names: no `/`, not empty, not starting with `.`
///   (temporaries start with `.`, and listings skip them).
#[derive(Debug, Clone)]
pub struct LocalDirStorage {
    dir: PathBuf,
}

impl LocalDirStorage {
    /// Objects in `dir` (which must exist for anything to be written).
    pub fn new(dir: PathBuf) -> LocalDirStorage {
        LocalDirStorage { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    fn error(&self, key: &str, action: &'static str, e: &io::Error) -> StorageError {
        io_error(self.describe(key), action, e)
    }

    /// Opens the object to read it: never through a link, never blocking on
    /// a FIFO, and only a regular file. `None` if it does not exist.
    fn open_read(
        &self,
        key: &str,
        action: &'static str,
    ) -> Result<Option<(File, u64)>, StorageError> {
        check_key(self, key)?;
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(self.path(key))
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(key, action, &e)),
        };
        let meta = file.metadata().map_err(|e| self.error(key, action, &e))?;
        if !meta.is_file() {
            return Err(StorageError::new(
                self.describe(key),
                action,
                StorageErrorKind::Invalid,
                "not a regular file",
            ));
        }
        Ok(Some((file, meta.len())))
    }

    fn not_found(&self, key: &str, action: &'static str) -> StorageError {
        StorageError::new(
            self.describe(key),
            action,
            StorageErrorKind::NotFound,
            "no such object",
        )
    }

    /// A new temporary file for `key`, and its path.
    fn create_temp(&self, key: &str) -> Result<(File, PathBuf), StorageError> {
        check_key(self, key)?;
        let pid = std::process::id();
        let mut last_error = None;
        for _ in 0..16 {
            let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = self.dir.join(format!(".{key}.tmp-{pid}-{n}"));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
            {
                Ok(f) => return Ok((f, path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last_error = Some(e),
                Err(e) => return Err(io_error(path.display().to_string(), "create", &e)),
            }
        }
        let e = last_error.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
        Err(self.error(key, "create a temporary file", &e))
    }

    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
}

impl ObjectStorage for LocalDirStorage {
    fn describe(&self, key: &str) -> String {
        self.path(key).display().to_string()
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StorageError> {
        let dir_name = || self.dir.display().to_string();
        let entries = fs::read_dir(&self.dir).map_err(|e| io_error(dir_name(), "list", &e))?;
        let mut list = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(dir_name(), "list", &e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue; // not UTF-8: not a key
            };
            if name.starts_with('.') || !name.starts_with(prefix) {
                continue;
            }
            // `DirEntry::metadata` does not follow a link: links, like
            // directories, are not objects.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.error(&name, "list", &e)),
            };
            if meta.is_file() {
                list.push(ObjectEntry {
                    key: name,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                });
            }
        }
        list.sort();
        Ok(list)
    }

    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        check_key(self, key)?;
        let meta = match fs::symlink_metadata(self.path(key)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.error(key, "stat", &e)),
        };
        if meta.file_type().is_symlink() {
            return Err(StorageError::new(
                self.describe(key),
                "stat",
                StorageErrorKind::Invalid,
                "a symbolic link, not followed",
            ));
        }
        if !meta.is_file() {
            return Err(StorageError::new(
                self.describe(key),
                "stat",
                StorageErrorKind::Invalid,
                "not a regular file",
            ));
        }
        Ok(Some(meta.len()))
    }

    fn read_range(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        let (file, size) = self
            .open_read(key, "read")?
            .ok_or_else(|| self.not_found(key, "read"))?;
        match file.read_exact_at(buf, offset) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(StorageError::new(
                self.describe(key),
                "read",
                StorageErrorKind::Invalid,
                format!(
                    "cut short: {} bytes at offset {offset} asked, the object has {size}",
                    buf.len()
                ),
            )),
            Err(e) => Err(self.error(key, "read", &e)),
        }
    }

    fn read_small(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        let Some((file, size)) = self.open_read(key, "read")? else {
            return Ok(None);
        };
        let too_large = |size: u64| {
            StorageError::new(
                self.describe(key),
                "read",
                StorageErrorKind::Invalid,
                format!("{size} bytes, more than the {limit} expected at most"),
            )
        };
        if size > limit {
            return Err(too_large(size));
        }
        let capacity = usize::try_from(size).map_err(|_| too_large(size))?;
        let mut bytes = Vec::with_capacity(capacity);
        // Never more than the limit, even if the file grew since.
        file.take(limit.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| self.error(key, "read", &e))?;
        let read = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
        if read > limit {
            return Err(too_large(read));
        }
        Ok(Some(bytes))
    }

    fn reader(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        let (file, _) = self
            .open_read(key, "read")?
            .ok_or_else(|| self.not_found(key, "read"))?;
        Ok(Box::new(file))
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        let (file, temp) = self.create_temp(key)?;
        Ok(Box::new(LocalDirWriter {
            storage: self.clone(),
            key: key.to_string(),
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            temp,
            size: 0,
        }))
    }

    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        let mut w = self.writer(key)?;
        // The writer removes its temporary file when dropped on error.
        w.write_all(bytes)
            .map_err(|e| self.error(key, "write", &e))?;
        w.finish().map(|_| ())
    }

    fn delete(&self, key: &str) -> Result<(), StorageError> {
        check_key(self, key)?;
        match fs::remove_file(self.path(key)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.error(key, "delete", &e)),
        }
        self.sync_dir()
            .map_err(|e| self.error(key, "sync the directory", &e))
    }
}

/// A local object being written: its temporary file.
struct LocalDirWriter {
    storage: LocalDirStorage,
    key: String,
    /// `None` once finished or aborted.
    file: Option<BufWriter<File>>,
    temp: PathBuf,
    size: u64,
}

impl LocalDirWriter {
    fn error(&self, action: &'static str, e: &io::Error) -> StorageError {
        self.storage.error(&self.key, action, e)
    }

    fn complete(&mut self) -> Result<u64, StorageError> {
        let Some(buffered) = self.file.take() else {
            return Err(StorageError::new(
                self.storage.describe(&self.key),
                "finish",
                StorageErrorKind::Other,
                "the writer was already finished or aborted",
            ));
        };
        let file = buffered
            .into_inner()
            .map_err(|e| self.error("write", e.error()))?;
        file.sync_all().map_err(|e| self.error("sync", &e))?;
        drop(file);
        fs::rename(&self.temp, self.storage.path(&self.key))
            .map_err(|e| self.error("rename into place", &e))?;
        // Renamed: no temporary left for Drop to remove.
        self.temp = PathBuf::new();
        self.storage
            .sync_dir()
            .map_err(|e| self.error("sync the directory", &e))?;
        Ok(self.size)
    }

    fn remove_temp(&mut self) -> io::Result<()> {
        match fs::remove_file(&self.temp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

impl Write for LocalDirWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("the writer was already finished or aborted"))?;
        let n = file.write(buf)?;
        self.size += u64::try_from(n).unwrap_or(u64::MAX);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl ObjectWriter for LocalDirWriter {
    fn finish(mut self: Box<Self>) -> Result<u64, StorageError> {
        let result = self.complete();
        if result.is_err() {
            // Drop removes the temporary file (a no-op once renamed).
            self.file = None;
        }
        result
    }

    fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.file = None;
        let result = self.remove_temp();
        // Nothing left for Drop to do.
        let temp = std::mem::take(&mut self.temp);
        result.map_err(|e| io_error(temp.display().to_string(), "remove", &e))
    }
}

impl Drop for LocalDirWriter {
    fn drop(&mut self) {
        self.file = None;
        if !self.temp.as_os_str().is_empty() {
            let _ = self.remove_temp();
        }
    }
}

/// The kind of an I/O error: NotFound, PermissionDenied, NoSpace (ENOSPC,
/// EDQUOT), Invalid (ELOOP: a symbolic link where none may be), else Other.
pub(crate) fn io_error_kind(e: &io::Error) -> StorageErrorKind {
    match e.raw_os_error() {
        Some(libc::ENOSPC | libc::EDQUOT) => return StorageErrorKind::NoSpace,
        Some(libc::ELOOP) => return StorageErrorKind::Invalid,
        _ => {}
    }
    match e.kind() {
        io::ErrorKind::NotFound => StorageErrorKind::NotFound,
        io::ErrorKind::PermissionDenied => StorageErrorKind::PermissionDenied,
        _ => StorageErrorKind::Other,
    }
}

fn io_error(object: String, action: &'static str, e: &io::Error) -> StorageError {
    let detail = if e.raw_os_error() == Some(libc::ELOOP) {
        format!("{e} (a symbolic link, not followed)")
    } else {
        e.to_string()
    };
    StorageError::new(object, action, io_error_kind(e), detail)
}
