//! Block-level incremental backups.
//!
//! A source (a disk image, a snapshot of a logical volume) is split into
//! fixed-size blocks ([`BlockSize`]) and every block is hashed. The hashes go
//! to a small digest sidecar ([`DigestWriter`], [`DigestReader`]); the next
//! backup needs only that sidecar, not the previous data, to write just the
//! blocks that changed.
//!
//! - [`dump`] is the diff engine: source + optional previous digest →
//!   changed blocks (to a [`BlockSink`] such as [`LegacySink`]) + new digest,
//!   hashed on every core with bounded memory.
//! - [`GenerationStore`] keeps numbered generations (`NAME.ver`, `NAME.N`,
//!   `NAME.N.gz`, `NAME.N.md5`) and commits a new one crash-safely under a
//!   lock; [`backup`] runs one backup end to end.
//! - [`RestorePlan`] restores a generation writing every block once and
//!   checking it against the digest; [`apply_stream`] applies a single diff
//!   stream as the original `blockdiff_merge` did.
//!
//! The formats are those of the original Perl blockdiff, byte for byte.
//! Libraries report through [`Progress`] and return [`Error`]s that name the
//! file and offset; they never print.
//!
//! ```
//! use blockdiff_core::{BackupOptions, GenerationStore, NoProgress, RestoreOptions, RestorePlan, backup};
//!
//! let dir = tempfile::tempdir()?;
//! let store = GenerationStore::new(dir.path().join("disk"));
//! let mut disk = vec![0u8; 1 << 20];
//! backup(&store, &disk[..], "disk".as_ref(), &BackupOptions::default(), &mut NoProgress)?;
//! disk[300_000..300_010].copy_from_slice(b"new bytes!");
//! let second = backup(&store, &disk[..], "disk".as_ref(), &BackupOptions::default(), &mut NoProgress)?;
//! assert_eq!(second.dump.changed_blocks, 1);
//!
//! let restored = dir.path().join("restored");
//! RestorePlan::new(&store, &RestoreOptions::default())?.execute(&restored, &mut NoProgress)?;
//! assert_eq!(std::fs::read(&restored)?, disk);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod backup;
mod block;
mod digest;
mod dump;
mod error;
mod progress;
mod restore;
mod store;

pub use archive_format::Compression;
pub use backup::{BackupOptions, BackupReport, backup};
pub use block::{BlockHash, BlockSize, HASH_LEN, hash_block, hash_blocks};
pub use digest::{DigestFile, DigestReader, DigestWriter};
pub use dump::{BlockSink, DumpOptions, DumpReport, LegacySink, dump};
pub use error::{Error, Result};
pub use progress::{NoProgress, Notice, Progress};
pub use restore::{RestoreOptions, RestorePlan, RestoreReport, apply_stream};
pub use store::{
    CommitStep, DiffFile, GenerationStore, PendingGeneration, StoreLock, parse_version,
};
