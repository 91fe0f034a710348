//! The storage layer's error type.

/// What kind of failure a [`StorageError`] is, for callers that decide on
/// it (a missing object is often not an error at all).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageErrorKind {
    /// The object (or the bucket) does not exist.
    NotFound,
    /// The credentials were refused or do not allow the operation.
    PermissionDenied,
    /// The storage is full or over its quota.
    NoSpace,
    /// The object exists but is not what was expected (too large, cut
    /// short, a link).
    Invalid,
    /// Anything else: the network, the server, the disk.
    Other,
}

/// A failed storage operation, naming the object (`s3://BUCKET/KEY` or the
/// local path) and what was being done.
#[derive(Debug, thiserror::Error)]
#[error("{object}: {action}: {detail}")]
pub struct StorageError {
    /// The object, as [`ObjectStorage::describe`](crate::ObjectStorage::describe) names it.
    pub object: String,
    /// What was being done: `read`, `list`, `upload`, `delete`, ….
    pub action: &'static str,
    /// Its kind.
    pub kind: StorageErrorKind,
    /// What went wrong, in words (never a secret).
    pub detail: String,
}

impl StorageError {
    /// A new error.
    pub fn new(
        object: impl Into<String>,
        action: &'static str,
        kind: StorageErrorKind,
        detail: impl Into<String>,
    ) -> Self {
        StorageError {
            object: object.into(),
            action,
            kind,
            detail: detail.into(),
        }
    }

    /// Whether the object or bucket did not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind == StorageErrorKind::NotFound
    }
}
