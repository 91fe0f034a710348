//! The run's log: leveled lines to a sink of the caller's choice (a
//! terminal, the agent's stream back to the backup host), and to a log
//! file.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::{RunError, timestamp};

/// How much a log line matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    /// The run's steps (`creating snapshot…`); silenced by `--quiet`.
    Info,
    /// Needs attention but the run goes on; always shown.
    Warning,
    /// Something failed; always shown.
    Error,
}

impl LogLevel {
    /// The level's name as it appears in a line (`""` for info).
    pub fn label(self) -> &'static str {
        match self {
            LogLevel::Info => "",
            LogLevel::Warning => "warning: ",
            LogLevel::Error => "error: ",
        }
    }

    /// Parses [`LogLevel::label`]'s name (`info`, `warning`, `error`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "info" => Some(LogLevel::Info),
            "warning" => Some(LogLevel::Warning),
            "error" => Some(LogLevel::Error),
            _ => None,
        }
    }

    /// The level's name, as [`LogLevel::from_name`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Info => "info",
            LogLevel::Warning => "warning",
            LogLevel::Error => "error",
        }
    }
}

type LogSink = dyn Fn(LogLevel, &str) + Send + Sync;

/// The timestamped log of a run, like the original's backup.log:
/// `blockdiff-backup: 2026-11-22 01:02:03 creating snapshot of vg0/db`.
///
/// Cheap to clone and shareable between threads (the fill monitor and the
/// quiescers log from their own). Where the lines go is the sink's choice:
/// stderr by default, or, on a remote host, the stream back to the backup
/// host.
///
/// [`RunLog::with_file`] adds a log file that gets every line, whatever
/// the sink shows.
#[derive(Clone)]
pub struct RunLog {
    sink: Arc<LogSink>,
    tool: Option<&'static str>,
    file: Option<Arc<LogFile>>,
}

/// A log file: lines appended whole, one `write` each.
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
    failed: AtomicBool,
}

impl LogFile {
    /// Appends `line`; the first failure is returned (to be told through
    /// the sink), later ones are not.
    fn append(&self, line: &str) -> Option<String> {
        let mut file = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match file.write_all(line.as_bytes()) {
            Err(e) if !self.failed.swap(true, Ordering::Relaxed) => Some(format!(
                "cannot write to log file {}: {e}",
                self.path.display()
            )),
            _ => None,
        }
    }
}

/// A log line as the tools print it: `TOOL: TIMESTAMP [level: ]message`
/// (without `TOOL: ` when `tool` is `None`).
pub fn log_line(tool: Option<&str>, level: LogLevel, message: &str) -> String {
    let prefix = tool.map(|t| format!("{t}: ")).unwrap_or_default();
    format!("{prefix}{} {}{message}", timestamp(), level.label())
}

impl fmt::Debug for RunLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RunLog")
    }
}

impl RunLog {
    /// Lines go to `sink`, which receives each line's level and message
    /// (without timestamp: the sink adds one if it wants).
    pub fn new(sink: impl Fn(LogLevel, &str) + Send + Sync + 'static) -> Self {
        RunLog {
            sink: Arc::new(sink),
            tool: None,
            file: None,
        }
    }

    /// The same log, whose lines in its file start with `TOOL: ` (as the
    /// tool's own stderr lines do).
    pub fn with_tool(mut self, tool: &'static str) -> Self {
        self.tool = Some(tool);
        self
    }

    /// A log that drops every line.
    pub fn discard() -> Self {
        RunLog::new(|_, _| {})
    }

    /// The same log, with every line also appended to the file at `path`
    /// (all levels, `--quiet` or not, timestamped like stderr's lines).
    /// The file is created if missing; one that cannot be opened is an
    /// error naming it.
    pub fn with_file(self, path: &Path) -> Result<Self, RunError> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(|source| RunError::Io {
                op: "cannot open log file",
                path: path.to_owned(),
                source,
            })?;
        Ok(RunLog {
            file: Some(Arc::new(LogFile {
                path: path.to_owned(),
                file: Mutex::new(file),
                failed: AtomicBool::new(false),
            })),
            ..self
        })
    }

    /// Logs `message` at `level`.
    pub fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        let message = message.to_string();
        (self.sink)(level, &message);
        self.log_to_file(level, &message);
    }

    /// Logs `message` to the log file only, if there is one: for the
    /// final error line, which `run_main` prints on stderr itself.
    pub fn to_file_only(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        self.log_to_file(level, &message.to_string());
    }

    fn log_to_file(&self, level: LogLevel, message: &str) {
        if let Some(file) = &self.file {
            let mut line = log_line(self.tool, level, message);
            line.push('\n');
            if let Some(failure) = file.append(&line) {
                // Said once: the run goes on, its log file is incomplete.
                (self.sink)(LogLevel::Warning, &failure);
            }
        }
    }

    /// Logs a step of the run.
    pub fn info(&self, message: fmt::Arguments<'_>) {
        self.log(LogLevel::Info, message);
    }

    /// Logs something that needs attention.
    pub fn warning(&self, message: fmt::Arguments<'_>) {
        self.log(LogLevel::Warning, message);
    }

    /// Logs a failure that does not end the run (or not yet).
    pub fn error(&self, message: fmt::Arguments<'_>) {
        self.log(LogLevel::Error, message);
    }

    /// The same log as the quiescers' [`quiesce::Logger`].
    pub fn quiesce_logger(&self) -> quiesce::Logger {
        let log = self.clone();
        quiesce::Logger::new(move |line| log.info(format_args!("{line}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn lines_reach_the_sink_with_their_level() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let log = RunLog::new(move |level, m| s.lock().unwrap().push((level, m.to_owned())));
        log.info(format_args!("creating snapshot of {}", "vg/lv"));
        log.clone().warning(format_args!("half full"));
        log.quiesce_logger().line("issuing lock statement");
        assert_eq!(
            *seen.lock().unwrap(),
            [
                (LogLevel::Info, "creating snapshot of vg/lv".to_owned()),
                (LogLevel::Warning, "half full".to_owned()),
                (LogLevel::Info, "issuing lock statement".to_owned()),
            ]
        );
        for level in [LogLevel::Info, LogLevel::Warning, LogLevel::Error] {
            assert_eq!(LogLevel::from_name(level.name()), Some(level));
        }
    }

    #[test]
    fn a_log_file_gets_every_line_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backup.log");
        std::fs::write(&path, "an earlier run\n").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        // A sink that shows nothing but errors, as --quiet would.
        let log = RunLog::new(move |level, m| {
            if level == LogLevel::Error {
                s.lock().unwrap().push(m.to_owned());
            }
        })
        .with_file(&path)
        .unwrap();
        log.info(format_args!("creating snapshot of vg/lv"));
        log.clone().warning(format_args!("half full"));
        log.error(format_args!("overflowed"));
        log.to_file_only(LogLevel::Error, format_args!("backup failed"));
        assert_eq!(*seen.lock().unwrap(), ["overflowed"]);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert_eq!(lines[0], "an earlier run");
        let rest: Vec<&str> = lines[1..].iter().map(|l| &l[20..]).collect();
        assert_eq!(
            rest,
            [
                "creating snapshot of vg/lv",
                "warning: half full",
                "error: overflowed",
                "error: backup failed"
            ]
        );
        // Each line starts with its timestamp.
        assert!(
            lines[1..]
                .iter()
                .all(|l| l.as_bytes()[4] == b'-' && l.as_bytes()[19] == b' ')
        );
    }

    #[test]
    fn a_log_file_that_cannot_be_opened_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/backup.log");
        let err = RunLog::discard().with_file(&path).unwrap_err();
        assert!(
            format!("{err}").contains(&format!("cannot open log file {}", path.display())),
            "{err:#}"
        );
    }
}
