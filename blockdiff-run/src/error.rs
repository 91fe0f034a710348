//! [`RunError`]: how a run fails, naming the source, host, path or command.

use std::io;
use std::path::PathBuf;

use command_runner::CommandError;

/// A run's failure. Each variant names what failed (the source, the host,
/// the file, the command and its stderr); the cause, where there is one,
/// is its [`source`](std::error::Error::source).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The backup engine failed (the store, the dump, the digest).
    #[error(transparent)]
    Core(#[from] blockdiff_core::Error),
    /// LVM failed (a snapshot, a listing).
    #[error(transparent)]
    Lvm(#[from] lvm_snap::Error),
    /// A quiescer failed, or the freeze window ran out.
    #[error(transparent)]
    Quiesce(#[from] quiesce::Error),
    /// An external command could not be run or failed.
    #[error(transparent)]
    Command(#[from] CommandError),
    /// An option is out of range or does not go with another (a
    /// command-line mistake: tools exit with 2).
    #[error("{0}")]
    InvalidOption(String),
    /// A file could not be opened, read or written.
    #[error("{op} {}", path.display())]
    Io {
        /// What was done: `cannot open`, `write`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// An output file (`-o`, `--new-digest`) could not be placed.
    #[error("{}: {what}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// What failed (`cannot create`, `is a directory: name a file`).
        what: &'static str,
        /// Why, when the system said.
        #[source]
        source: Option<io::Error>,
    },
    /// A dump outside a store failed; its outputs were left as they were.
    #[error(
        "{}{}",
        if *stdout_closed {
            "the diff is incomplete: standard output was closed before the dump ended"
        } else {
            "dump failed"
        },
        not_written.as_ref().map(|p| format!(" ({} not written)", p.display())).unwrap_or_default()
    )]
    DumpFailed {
        /// Whether the diff went to a standard output that was closed.
        stdout_closed: bool,
        /// The new digest that was not written, if one was asked for.
        not_written: Option<PathBuf>,
        /// Why.
        #[source]
        source: Box<RunError>,
    },
    /// The snapshot of the source could not be taken.
    #[error("cannot snapshot {origin}")]
    Snapshot {
        /// The logical volume.
        origin: String,
        /// Why.
        #[source]
        source: Box<RunError>,
    },
    /// A termination signal stopped the run.
    #[error("interrupted by {signal}")]
    Interrupted {
        /// `SIGTERM`, `SIGINT` or `SIGHUP`.
        signal: &'static str,
    },
    /// The dump succeeded but its snapshot stayed behind.
    #[error(
        "the dump finished, but snapshot {snapshot} could not be removed; remove it (blockdiff-lvm cleanup) before it fills up"
    )]
    SnapshotNotRemoved {
        /// The snapshot.
        snapshot: String,
        /// Why `lvremove` failed.
        #[source]
        source: lvm_snap::Error,
    },
    /// The local agent executable cannot be read.
    #[error(
        "cannot read the remote agent {} (install blockdiff-agent beside blockdiff-backup, or name it with --agent; scripts/build-agent.sh builds a static one)",
        path.display()
    )]
    AgentUnreadable {
        /// Where it was looked for.
        path: PathBuf,
        /// Why it cannot be read.
        #[source]
        source: io::Error,
    },
    /// The local agent executable cannot be used.
    #[error("{} is not usable as the remote agent: {detail}", path.display())]
    AgentNotUsable {
        /// Where it is.
        path: PathBuf,
        /// What is wrong with it.
        detail: &'static str,
    },
    /// A step on a remote host could not be run over ssh.
    #[error("{what} on {host}: cannot run ssh")]
    RemoteSpawn {
        /// The step (`copying the agent`).
        what: &'static str,
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A step on a remote host failed.
    #[error("{what} on {host} failed ({status}): {stderr}")]
    RemoteStep {
        /// The step.
        what: &'static str,
        /// The host.
        host: String,
        /// How it ended (`exit status 3`).
        status: String,
        /// Its stderr, on one line (`no message` when empty).
        stderr: String,
    },
    /// The remote host answered something unexpected.
    #[error("{detail}")]
    RemoteHost {
        /// The host.
        host: String,
        /// What was wrong (naming the host).
        detail: String,
    },
    /// The agent's stream is damaged, or could not be written into the
    /// new generation.
    #[error("the agent's stream from {host}")]
    AgentStream {
        /// The host.
        host: String,
        /// Why it was refused.
        #[source]
        source: Box<RunError>,
    },
    /// A packet of the agent protocol cannot be read.
    #[error("{0}")]
    Protocol(#[from] crate::ProtocolError),
    /// A restore that writes in place failed after it had written: the
    /// target is neither what it was nor the generation.
    #[error(
        "{target}: generation {generation} is partly restored ({written} bytes written), then: {source}; run the same restore again to complete it (a delta restore writes what still differs)"
    )]
    PartlyRestored {
        /// The target (`HOST:PATH` on the backup host's side).
        target: String,
        /// The generation being restored.
        generation: u64,
        /// Bytes written before the failure.
        written: u64,
        /// What failed.
        #[source]
        source: Box<RunError>,
    },
    /// The connection to the agent ended before a restore was complete.
    #[error(
        "the connection to {host} ended before the restore was complete (ssh {status}{stderr})"
    )]
    RestoreConnectionLost {
        /// The host.
        host: String,
        /// ssh's exit status, as text.
        status: String,
        /// ssh's last lines of standard error (`: …`), or nothing.
        stderr: String,
    },
    /// The agent could not be started over ssh.
    #[error("cannot run the agent on {host} over ssh")]
    AgentSpawn {
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The agent reported that its dump failed.
    #[error("on {host}: {message}")]
    AgentFailed {
        /// The host.
        host: String,
        /// The agent's error line.
        message: String,
    },
    /// The connection ended before the agent's stream was complete.
    #[error(
        "the connection to {host} ended before the dump was complete (ssh {status}{stderr}); nothing was committed"
    )]
    ConnectionLost {
        /// The host.
        host: String,
        /// How ssh ended.
        status: String,
        /// `: ` and ssh's stderr line, or nothing.
        stderr: String,
    },
    /// A backup failed.
    #[error("backup of {source_name} to {} failed", name.display())]
    Backup {
        /// The source, as the metadata names it.
        source_name: String,
        /// The chain.
        name: PathBuf,
        /// Why.
        #[source]
        source: Box<RunError>,
    },
    /// Some volumes of an `--each` run failed.
    #[error("could not back up {} of {total} volumes: {}", failed.len(), failed.join(", "))]
    SomeFailed {
        /// The volumes that failed or were not backed up.
        failed: Vec<String>,
        /// The volumes of the run.
        total: usize,
    },
}

impl RunError {
    /// Whether this is a mistake in the options (a value out of range),
    /// which tools report as a usage error.
    pub fn is_invalid_option(&self) -> bool {
        match self {
            RunError::InvalidOption(_) => true,
            RunError::Core(e) => matches!(e, blockdiff_core::Error::TooManyThreads { .. }),
            RunError::Backup { source, .. } => source.is_invalid_option(),
            _ => false,
        }
    }
}

/// A run's result.
pub type Result<T, E = RunError> = std::result::Result<T, E>;
