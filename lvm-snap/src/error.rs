use std::io;
use std::path::PathBuf;

/// Everything that can go wrong with LVM and snapshots.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command could not be started, or failed.
    #[error(transparent)]
    Command(#[from] command_runner::CommandError),
    /// A command's output could not be understood.
    #[error("cannot parse the output of `{command}`: {detail}")]
    Parse {
        /// The command line.
        command: String,
        /// What was wrong.
        detail: String,
    },
    /// A logical volume or volume group does not exist.
    #[error("{what} not found")]
    NotFound {
        /// `logical volume vg/lv` or `volume group vg`.
        what: String,
    },
    /// An argument is malformed (a size, an LV path, a pattern).
    #[error("{0}")]
    Invalid(String),
    /// The volume group lacks the free space a snapshot needs.
    #[error(
        "volume group {vg} has {free} bytes free, but the snapshot of {origin} needs {need} bytes; free space in {vg} or choose a smaller --snapshot-size"
    )]
    NoSpace {
        /// The volume group.
        vg: String,
        /// The origin LV.
        origin: String,
        /// Bytes the snapshot needs (rounded up to whole extents).
        need: u64,
        /// Bytes free in the VG.
        free: u64,
    },
    /// The snapshot overflowed: LVM marked it invalid, its content is lost.
    #[error(
        "snapshot {snapshot} overflowed (LVM marked it invalid) at {peak_percent:.1}% peak fill; its content is unusable, so nothing was committed: give it more space (--snapshot-size) or back up at a quieter time"
    )]
    SnapshotInvalid {
        /// The snapshot, `vg/name`.
        snapshot: String,
        /// The highest fill seen.
        peak_percent: f64,
    },
    /// An I/O error on a file.
    #[error("{op} {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done (`reading`, `writing`, …).
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
