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
//! - [`ObjectChain`] is a chain of generations on an object store, read
//!   through the core's [`GenerationSource`](blockdiff_core::GenerationSource)
//!   (so [`RestorePlan`](blockdiff_core::RestorePlan) restores from it with
//!   ranged reads) and written by [`ObjectBackup`] /
//!   [`back_up_to_objects`]: the objects of generation N are streamed up,
//!   then `NAME.ver` is replaced. [`DigestCache`] keeps the previous digest
//!   locally so that an incremental backup downloads nothing.
//!   `ObjectChain` implements the core's
//!   [`FoldableChain`](blockdiff_core::FoldableChain), so that
//!   [`prune_generations`](blockdiff_core::prune_generations) folds its
//!   generations in place.
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

mod chain_location;
mod chunk_cache;
mod digest_cache;
mod error;
mod local_dir;
mod object_backup;
mod object_chain;
mod object_fold;
mod object_prune;
mod object_storage;
mod object_url;
mod opendal_storage;
mod s3_config;

pub use chain_location::{ChainLocation, StorageOptions, period_chains};
pub use digest_cache::{CacheWriter, DigestCache};
pub use error::{StorageError, StorageErrorKind};
pub use local_dir::LocalDirStorage;
pub use object_backup::{LockHolder, LockOptions, ObjectBackup, ObjectLock, back_up_to_objects};
pub use object_chain::{DIGEST_HASH_KEY, ObjectChain};
pub use object_prune::ObjectChains;
pub use object_storage::{ObjectEntry, ObjectStorage, ObjectWriter};
pub use object_url::ObjectUrl;
pub use opendal_storage::OpenDalStorage;
pub use s3_config::{DEFAULT_REGION, DEFAULT_TIMEOUT, S3Config};

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
