//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

use command_runner::CommandError;

/// What can go wrong opening, serving, mounting or unmounting a
/// generation. Each error names the chain's file, the mount point, the
/// device or the command it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The chain could not be opened or read (the core's error names the
    /// file and offset).
    #[error(transparent)]
    Chain(#[from] blockdiff_core::Error),
    /// The image's partition table is malformed.
    #[error(transparent)]
    Partitions(#[from] disk_partitions::Error),
    /// A command (`losetup`, `blkid`, `mount`, `umount`, `fusermount3`)
    /// could not be started, or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// An I/O error on a mount point, a state file or a connection.
    #[error("{op} {path}: {source}")]
    Io {
        /// The file, directory or address.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A mount or unmount cannot be done as asked.
    #[error("{path}: {detail}")]
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Why, and what to do.
        detail: String,
    },
    /// A state file is not one this crate wrote.
    #[error("{path}: not a blockdiff mount's state file: {detail}")]
    BadState {
        /// The state file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// The crate's result.
pub type Result<T> = std::result::Result<T, ExportError>;

/// Names `path` in an I/O error.
pub(crate) fn io_error(
    path: impl Into<PathBuf>,
    op: &'static str,
) -> impl FnOnce(io::Error) -> ExportError {
    let path = path.into();
    move |source| ExportError::Io { path, op, source }
}
