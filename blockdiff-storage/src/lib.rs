//! Where blockdiff chains are kept.
//!
//! - [`ObjectStorage`] is the seam: list, stat, ranged read, streamed write
//!   ([`ObjectWriter`], multipart on S3), whole-object put and delete.
//! - [`LocalDirStorage`] implements it on a local directory (fsync and
//!   rename), [`OpenDalStorage`] on S3 and OpenDAL's in-memory service.
#![deny(missing_docs)]

mod error;
mod object_storage;

pub use error::{StorageError, StorageErrorKind};
pub use object_storage::{ObjectEntry, ObjectStorage, ObjectWriter};
