//! The object-storage seam: what a chain needs of the place it is kept.

use std::fmt;
use std::io::{Read, Write};
use std::time::SystemTime;

use crate::StorageError;

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectEntry {
    /// Its key, relative to the storage's root (no leading `/`).
    pub key: String,
    /// Its size in bytes.
    pub size: u64,
    /// When it was last written, if the store says.
    pub modified: Option<SystemTime>,
}

/// A flat namespace of objects under one root: a local directory or a
/// bucket and prefix. Keys are plain names without `/` (a chain's objects
/// are `NAME.ver`, `NAME.N`, `NAME.N.digest`, …).
///
/// What every implementation guarantees:
/// - an object written with [`writer`](Self::writer) is visible (to
///   [`list`](Self::list), [`stat`](Self::stat), reads) only once its
///   [`ObjectWriter::finish`] returned, and then whole; a writer dropped or
///   [aborted](ObjectWriter::abort) leaves no object;
/// - [`put`](Self::put) replaces an object whole: a reader sees the old
///   bytes or the new ones, never a mix;
/// - reads never return fewer bytes than asked without an error.
pub trait ObjectStorage: Send + Sync + fmt::Debug {
    /// The object's name for messages: `s3://BUCKET/PREFIX/KEY`, or the
    /// local path.
    fn describe(&self, key: &str) -> String;

    /// The objects whose keys start with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StorageError>;

    /// The object's size, `None` if it does not exist.
    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError>;

    /// Fills `buf` from the object's bytes at `offset` (one ranged read);
    /// an error if the object ends first.
    fn read_range(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), StorageError>;

    /// The whole object, `None` if it does not exist; an error if it is
    /// larger than `limit` bytes (checked before anything is allocated).
    fn read_small(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError>;

    /// The object's bytes from the start, streamed.
    fn reader(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError>;

    /// A new object written as a stream (multipart on S3), in bounded
    /// memory whatever its size.
    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError>;

    /// Writes `bytes` as the whole object, replacing any object of that key
    /// at once.
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError>;

    /// Removes the object; removing one that does not exist is not an
    /// error.
    fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// Aborts the multipart uploads under `prefix` that were started and
    /// never completed (a killed run's), freeing their parts; returns how
    /// many. Only under the chain's lock: an upload in progress there is
    /// aborted too. A store without such uploads returns `Ok(0)`.
    fn abort_incomplete_uploads(&self, prefix: &str) -> Result<usize, StorageError> {
        let _ = prefix;
        Ok(0)
    }
}

/// An object being written. Its bytes become the object only at
/// [`finish`](Self::finish); dropping it without finishing aborts it.
pub trait ObjectWriter: Write + Send {
    /// Completes the object (uploads what is buffered, completes the
    /// multipart upload, or syncs and renames the file into place).
    /// Returns its size.
    fn finish(self: Box<Self>) -> Result<u64, StorageError>;

    /// Discards what was written (aborts the multipart upload, removes the
    /// temporary file).
    fn abort(self: Box<Self>) -> Result<(), StorageError>;
}

/// Refuses a key that is not a plain name: empty, with a `/` or a NUL,
/// `.` or `..`, or starting with `.` (the local directory's temporaries
/// start with `.`, so no key can collide with them).
pub(crate) fn check_key(storage: &dyn ObjectStorage, key: &str) -> Result<(), StorageError> {
    let problem = if key.is_empty() {
        "an empty key"
    } else if key.contains('/') {
        "a key with '/'"
    } else if key.contains('\0') {
        "a key with a NUL byte"
    } else if key.starts_with('.') {
        "a key starting with '.'"
    } else {
        return Ok(());
    };
    Err(StorageError::new(
        storage.describe(key),
        "check the key",
        crate::StorageErrorKind::Invalid,
        format!("{problem}: keys are plain names"),
    ))
}
