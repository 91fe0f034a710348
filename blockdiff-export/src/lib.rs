//! Any generation of a blockdiff chain, opened without restoring it.
//!
//! - [`ImageFiles`] lists what a mounted generation shows: the whole
//!   image, and each partition of its MBR or GPT as a file of its own.
//! - [`ImageFs`] is the read-only FUSE file system (through `fuser`) that
//!   serves them from a [`GenerationReader`](blockdiff_core::GenerationReader):
//!   every block checked against the generation's digest, a damaged one
//!   an EIO on exactly the reads that touch it.
//! - [`GenerationMount`] mounts it (and with [`FsChoice`], a file system
//!   inside the image, read-only from a loop device), recording each step
//!   in a [`StateDir`] as a [`MountState`], so that [`unmount`] undoes
//!   exactly that from any process, after any crash. Commands (`losetup`,
//!   `blkid`, `mount`, `umount`, `fusermount3`) go through a
//!   [`CommandRunner`](command_runner::CommandRunner).
//!
//! ```
//! use blockdiff_core::{BackupOptions, DumpSource, GenerationReader, GenerationStore, NoProgress, ReaderOptions, backup};
//! use blockdiff_export::ImageFiles;
//!
//! let dir = tempfile::tempdir()?;
//! let store = GenerationStore::new(dir.path().join("disk"));
//! backup(&store, DumpSource::from_bytes(&[1u8; 8192], "disk"), &BackupOptions::default(), &mut NoProgress)?;
//! let reader = GenerationReader::open(&store, &ReaderOptions::default())?;
//! let files = ImageFiles::read(&reader, dir.path())?;
//! assert_eq!(files.by_name("image").map(|f| f.size), Some(8192));
//! assert!(files.partition(1).is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod error;
mod generation_mount;
mod image_files;
mod image_fs;
mod mount_state;
mod mount_table;

pub use error::{ExportError, Result};
pub use generation_mount::{FsChoice, GenerationMount, MountOptions, UnmountReport, unmount};
pub use image_files::{ImageFile, ImageFiles};
pub use image_fs::{ImageFs, ReadErrorLog};
pub use mount_state::{DEFAULT_STATE_DIR, MountState, StateDir, process_start};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
