use std::io;
use std::path::PathBuf;

use command_runner::CommandError;
use lvm_snap::LvPath;

/// Everything that can go wrong reading a partition table or mounting a
/// partition of a snapshot. Each error names the device, file or mount
/// point, the offset or the command it is about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A partition table is malformed or lacks the partition asked for.
    #[error("{path}: offset {offset}: {detail}")]
    PartitionTable {
        /// The device or file read.
        path: PathBuf,
        /// Byte offset of the bad structure.
        offset: u64,
        /// What was wrong.
        detail: String,
    },
    /// An I/O error on a device, a mount point or a state file.
    #[error("{op} {path}: {source}")]
    Io {
        /// The device or file.
        path: PathBuf,
        /// What was being done (`reading`, `writing`, …).
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// LVM failed: the snapshot could not be made, listed or removed.
    #[error(transparent)]
    Lvm(#[from] lvm_snap::Error),
    /// A command beside LVM's (`losetup`, `fsck`, `mount`, `umount`)
    /// could not be started, or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A command's output could not be understood.
    #[error("cannot parse the output of `{command}`: {detail}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// The mount point exists but is not a directory.
    #[error("the mount point {path} is not a directory")]
    NotADirectory {
        /// The mount point, as given.
        path: PathBuf,
    },
    /// The mount point's path is too long to name a state file after.
    #[error("the mount point {path} is too long a path to name a state file after")]
    MountPointTooLong {
        /// The mount point.
        path: PathBuf,
    },
    /// A state file already records a mount at the mount point.
    #[error(
        "{mount_point} already holds a blockdiff mount of {origin} (state file {state_file}); unmount it first"
    )]
    AlreadyMounted {
        /// The mount point.
        mount_point: PathBuf,
        /// The volume mounted there.
        origin: LvPath,
        /// Its state file.
        state_file: PathBuf,
    },
    /// No state file records a mount at the mount point.
    #[error("blockdiff mount at {mount_point} (no state file {state_file}) not found")]
    NotMounted {
        /// The mount point.
        mount_point: PathBuf,
        /// The state file looked for.
        state_file: PathBuf,
    },
    /// A state file that this crate did not write (or a damaged one).
    #[error("{path}: not a blockdiff mount state file: {detail}")]
    StateFile {
        /// The state file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
