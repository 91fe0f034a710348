use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while quiescing. Every variant names what it
/// is about: the command line and its stderr, the file, the server or the
/// spec.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A quiesce spec (`--quiesce SPEC`) cannot be parsed.
    #[error("quiesce spec {spec:?}: {detail}")]
    Spec {
        /// The spec as given.
        spec: String,
        /// What is wrong with it.
        detail: String,
    },
    /// An external command could not be started, or failed: the command
    /// line, how it ended and its stderr.
    #[error(transparent)]
    Command(#[from] command_runner::CommandError),
    /// An I/O operation on a file failed.
    #[error("{path}: cannot {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A MySQL/MariaDB operation failed.
    #[error("MySQL server {server}: {statement}: {message}")]
    Mysql {
        /// The server (socket path or host:port) and user.
        server: String,
        /// The statement or step ("connect", "FLUSH TABLES WITH READ LOCK").
        statement: String,
        /// What the client library or the server said.
        message: String,
    },
    /// `FLUSH TABLES WITH READ LOCK` did not get the lock in time; it was
    /// given up and the server is writable.
    #[error(
        "MySQL server {server}: FLUSH TABLES WITH READ LOCK did not get the lock within {timeout:?} (a long-running statement holds tables); it was cancelled{}, the server was never left read-only",
        if *.killed { " by KILL from a second connection" } else { " by the server's lock_wait_timeout" }
    )]
    MysqlLockTimeout {
        /// The server.
        server: String,
        /// The configured lock-wait timeout.
        timeout: Duration,
        /// Whether the client-side backstop had to KILL the statement.
        killed: bool,
    },
    /// A MySQL option file is malformed.
    #[error("{path}:{line}: {detail}")]
    OptionFile {
        /// The option file.
        path: PathBuf,
        /// Line number (1-based).
        line: usize,
        /// What is wrong.
        detail: String,
    },
    /// Cron jobs were still running when the wait for them ended; nothing
    /// was stopped.
    #[error("cron jobs still running after waiting {waited:?}: {jobs}; cron was not stopped")]
    CronJobsStillRunning {
        /// How long was waited.
        waited: Duration,
        /// The running jobs (pid and command).
        jobs: String,
    },
    /// A daemon did not stop or start as its command said it would.
    #[error("{what}")]
    Daemon {
        /// What happened, naming the command and the process.
        what: String,
    },
    /// No cgroup2 file system is mounted.
    #[error("no cgroup2 file system in {mounts} (the cgroup v2 freezer needs one)")]
    NoCgroup2Mount {
        /// The mount table that was read.
        mounts: PathBuf,
    },
    /// A cgroup did not reach the requested freezer state in time.
    #[error("{path}: cgroup.events did not say \"frozen {want}\" within {waited:?}")]
    CgroupFreezeTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// The state waited for (1 frozen, 0 thawed).
        want: u8,
        /// How long was waited.
        waited: Duration,
    },
    /// A path is not what a quiescer needs (not a mount point, not a cgroup).
    #[error("{path}: {detail}")]
    BadPath {
        /// The path.
        path: PathBuf,
        /// What it should be.
        detail: String,
    },
    /// A quiescer could not freeze; everything frozen before it was thawed.
    #[error("cannot freeze {quiescer}: {source}; everything frozen before it was thawed")]
    Freeze {
        /// The quiescer's name.
        quiescer: String,
        /// Why.
        #[source]
        source: Box<Error>,
    },
    /// The snapshot step overran the freeze window limit: everything was
    /// thawed while it was still running and its result was discarded.
    #[error(
        "the freeze window limit of {:.1} s was exceeded (the snapshot step was still running after {:.3} s); everything was thawed and the snapshot step's result was discarded", limit.as_secs_f64(), elapsed.as_secs_f64()
    )]
    FreezeWindowExceeded {
        /// The configured limit.
        limit: Duration,
        /// How long the applications had been frozen when the watchdog thawed them.
        elapsed: Duration,
    },
    /// A stop was requested (SIGINT, SIGTERM) while frozen; everything was
    /// thawed and the snapshot step's result was discarded.
    #[error(
        "{reason} while frozen; everything was thawed and the snapshot step's result was discarded"
    )]
    Interrupted {
        /// What asked to stop ("received SIGTERM").
        reason: String,
    },
    /// Signal handlers could not be installed.
    #[error("signals: {detail}")]
    Signals {
        /// What went wrong.
        detail: String,
    },
    /// Thawing failed for at least one quiescer or thaw hook. Thawing went
    /// on with all the others.
    #[error("thawing failed: {}", join_failures(.failures))]
    Thaw {
        /// Each failure: the quiescer or hook, and its error.
        failures: Vec<(String, Error)>,
    },
}

fn join_failures(failures: &[(String, Error)]) -> String {
    failures
        .iter()
        .map(|(name, error)| format!("{name}: {error}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaches a path and an operation to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, path: impl Into<PathBuf>, op: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>, op: &'static str) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            op,
            source,
        })
    }
}
