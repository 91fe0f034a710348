use std::fmt;
use std::process::ExitCode;

use blockdiff_core::BlockSize;
use clap::Parser;

/// The tools' fixed exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// 0: success.
    Success = 0,
    /// 1: the operation failed.
    Failure = 1,
    /// 2: the command line is wrong.
    Usage = 2,
}

impl From<ExitStatus> for ExitCode {
    fn from(s: ExitStatus) -> ExitCode {
        ExitCode::from(s as u8)
    }
}

/// An error in the command line found after parsing (a bad value, a
/// conflict): reported like clap's own errors, with exit code 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Parses a `--snapshot-size` value (`15%`, `512M`, `2G`) for clap.
pub fn parse_snapshot_size(s: &str) -> Result<lvm_snap::SnapshotSize, String> {
    s.parse().map_err(|e: lvm_snap::Error| e.to_string())
}

/// Parses a logical volume (`VG/LV` or `/dev/VG/LV`) for clap.
pub fn parse_lv(s: &str) -> Result<lvm_snap::LvPath, String> {
    s.parse().map_err(|e: lvm_snap::Error| e.to_string())
}

/// Parses a `--block-size` value (`16384`, `16k`, `1M`) for clap.
pub fn parse_block_size(s: &str) -> Result<BlockSize, String> {
    s.parse::<BlockSize>()
        .map_err(|e| blockdiff_core::Error::from(e).to_string())
}

/// Formats an error and its causes on one line, leaving out a cause whose
/// text the line already holds (library errors quote their cause).
pub fn error_line(err: &anyhow::Error) -> String {
    blockdiff_run::error_line(err.as_ref())
}

/// True when `err` is a command-line mistake found by a library (a thread
/// count out of range): exit code 2, as clap's own errors.
fn is_usage(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<UsageError>().is_some()
            || c.downcast_ref::<blockdiff_core::Error>()
                .is_some_and(|e| matches!(e, blockdiff_core::Error::TooManyThreads { .. }))
            || c.downcast_ref::<blockdiff_run::RunError>()
                .is_some_and(blockdiff_run::RunError::is_invalid_option)
    })
}

/// Parses the command line into `A` and runs `run` with it, mapping the
/// outcome to an exit code: 0 on success, 1 on failure, 2 on a usage error.
/// Errors are printed to stderr as one line, `NAME: error: …` (best
/// effort: a closed stderr loses the line, never the exit code).
///
/// A closed pipe is never success by itself: a diff cut short by `| head`
/// is a failed dump (exit 1, with the error line). Output printed through
/// [`outln!`](crate::outln) or [`Stdout`](crate::Stdout) that could not be
/// written ([`OutputLost`](crate::OutputLost)) is returned as an error only
/// by the commands whose job is to print (`blockdiff-info`, `--help`,
/// `--dry-run`, listings): they exit 1, silently when the reader closed the
/// pipe (`| head -1`: it chose not to read on) and with the error line
/// otherwise. Commands whose work is done when they print (a committed
/// backup, an executed prune, a restore) ignore it and exit 0.
pub fn run_main<A: Parser>(name: &str, run: impl FnOnce(A) -> anyhow::Result<()>) -> ExitCode {
    run_main_with(name, std::env::args_os(), run)
}

/// [`run_main`] with the command line given (rewritten by the tool
/// first, as `blockdiff-mount` does for its optional `--fs` value).
pub fn run_main_with<A: Parser>(
    name: &str,
    argv: impl IntoIterator<Item = std::ffi::OsString>,
    run: impl FnOnce(A) -> anyhow::Result<()>,
) -> ExitCode {
    let args = match A::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => {
            let printed = e.print();
            return if e.use_stderr() {
                ExitStatus::Usage
            } else if printed.is_err() {
                // --help or --version could not be printed.
                ExitStatus::Failure
            } else {
                ExitStatus::Success
            }
            .into();
        }
    };
    match run(args) {
        Ok(()) => ExitStatus::Success.into(),
        Err(e) => {
            if crate::console::output_lost(&e)
                .is_some_and(super::console::OutputLost::is_broken_pipe)
            {
                return ExitStatus::Failure.into();
            }
            crate::errln!("{name}: error: {}", error_line(&e));
            if is_usage(&e) {
                crate::errln!("{name}: try '{name} --help' for more information");
                ExitStatus::Usage.into()
            } else {
                ExitStatus::Failure.into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn error_line_skips_quoted_causes() {
        let io = io::Error::other("disk on fire");
        let e = anyhow::Error::new(io)
            .context("db.3: cannot write: disk on fire")
            .context("backup of db failed");
        assert_eq!(
            error_line(&e),
            "backup of db failed: db.3: cannot write: disk on fire"
        );
    }

    #[test]
    fn a_library_thread_count_error_is_a_usage_error() {
        let e = anyhow::Error::new(blockdiff_core::Error::TooManyThreads {
            requested: 100_000,
            max: 16,
        })
        .context("backup of db failed");
        assert!(is_usage(&e));
        assert!(is_usage(&UsageError("x".into()).into()));
        assert!(!is_usage(&anyhow::anyhow!("disk on fire")));
    }
}
