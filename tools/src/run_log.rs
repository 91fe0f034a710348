use std::fmt;
use std::sync::Arc;

use crate::timestamp;

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
#[derive(Clone)]
pub struct RunLog {
    sink: Arc<LogSink>,
}

impl fmt::Debug for RunLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RunLog")
    }
}

impl RunLog {
    /// Lines on stderr as `TOOL: TIMESTAMP [level: ]message`; `quiet` keeps
    /// only warnings and errors.
    pub fn stderr(tool: &'static str, quiet: bool) -> Self {
        RunLog::new(move |level, message| {
            if !(quiet && level == LogLevel::Info) {
                eprintln!("{tool}: {} {}{message}", timestamp(), level.label());
            }
        })
    }

    /// Lines go to `sink`, which receives each line's level and message
    /// (without timestamp: the sink adds one if it wants).
    pub fn new(sink: impl Fn(LogLevel, &str) + Send + Sync + 'static) -> Self {
        RunLog {
            sink: Arc::new(sink),
        }
    }

    /// Logs `message` at `level`.
    pub fn log(&self, level: LogLevel, message: fmt::Arguments<'_>) {
        (self.sink)(level, &message.to_string());
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
}
