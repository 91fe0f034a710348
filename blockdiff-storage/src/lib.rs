//! Where blockdiff chains are kept.
//!
//! - [`ObjectStorage`] is the seam: list, stat, ranged read, streamed write
//!   ([`ObjectWriter`], multipart on S3), whole-object put and delete;
//!   [`StorageError`] says what failed, on which object, of which
//!   [kind](StorageErrorKind).
//! - [`LocalDirStorage`] implements it on a local directory (temporary
//!   file, fsync, rename), [`OpenDalStorage`] on S3 and on OpenDAL's
//!   in-memory service.
//! - [`S3Config`] finds the endpoint, region and credentials as the AWS
//!   tools do (environment, `~/.aws/credentials`, `~/.aws/config`);
//!   [`ObjectUrl`] parses `s3://BUCKET/PREFIX/NAME`.
//!
//! ```
//! use std::io::{Read, Write};
//! use blockdiff_storage::{ObjectStorage, OpenDalStorage};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let storage = OpenDalStorage::memory()?;
//! let mut w = storage.writer("db1.1")?;
//! w.write_all(b"generation one")?;
//! assert_eq!(w.finish()?, 14);
//! storage.put("db1.ver", b"1\n")?;
//!
//! let names: Vec<String> = storage.list("db1.")?.into_iter().map(|e| e.key).collect();
//! assert_eq!(names, ["db1.1", "db1.ver"]);
//! let mut bytes = [0u8; 3];
//! storage.read_range("db1.1", 11, &mut bytes)?;
//! assert_eq!(&bytes, b"one");
//! let mut all = String::new();
//! storage.reader("db1.1")?.read_to_string(&mut all)?;
//! assert_eq!(all, "generation one");
//! assert_eq!(storage.read_small("db1.2", 1024)?, None);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod error;
mod local_dir;
mod object_storage;
mod object_url;
mod opendal_storage;
mod s3_config;

pub use error::{StorageError, StorageErrorKind};
pub use local_dir::LocalDirStorage;
pub use object_storage::{ObjectEntry, ObjectStorage, ObjectWriter};
pub use object_url::ObjectUrl;
pub use opendal_storage::OpenDalStorage;
pub use s3_config::{DEFAULT_REGION, S3Config};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
