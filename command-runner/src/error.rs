//! A command that could not run, or failed.

use std::io;

use crate::{CommandLine, CommandOutput, CommandRunner};

/// A command that could not be started or did not succeed, named as a
/// user would type it.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// It could not be started (not installed, not on `PATH`).
    #[error("cannot run `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// It exited with a failure, or a signal ended it.
    #[error("`{command}` {status}{}", stderr_suffix(.stderr))]
    Failed {
        /// The command line.
        command: String,
        /// How it ended ([`CommandOutput::status_text`]).
        status: String,
        /// Its standard error, on one line ([`CommandOutput::stderr_line`]).
        stderr: String,
    },
    /// The ssh connection to a host could not be made.
    #[error("ssh to {destination}: {detail}")]
    Connect {
        /// The host, as given.
        destination: String,
        /// What happened (ssh's own message, when it gave one).
        detail: String,
    },
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

impl CommandError {
    /// The error for `command`, which ended as `output` says.
    pub fn failed(command: &CommandLine, output: &CommandOutput) -> Self {
        CommandError::Failed {
            command: command.to_string(),
            status: output.status_text(),
            stderr: output.stderr_line(),
        }
    }

    /// The error for `command`, which could not be started.
    pub fn spawn(command: &CommandLine, source: io::Error) -> Self {
        CommandError::Spawn {
            command: command.to_string(),
            source,
        }
    }
}

/// Runs `command` and returns its output if it exited with 0; a command
/// that could not start or failed is a [`CommandError`].
pub fn run_checked(
    runner: &dyn CommandRunner,
    command: &CommandLine,
) -> Result<CommandOutput, CommandError> {
    let output = runner
        .run(command)
        .map_err(|e| CommandError::spawn(command, e))?;
    if output.success() {
        Ok(output)
    } else {
        Err(CommandError::failed(command, &output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LocalRunner;

    #[test]
    fn errors_name_the_command_its_status_and_its_stderr() {
        let runner = LocalRunner::new();
        let e = run_checked(&runner, &CommandLine::shell("echo oops >&2; exit 3")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`echo oops >&2; exit 3` exited with status 3: oops"
        );
        let e = run_checked(&runner, &CommandLine::shell("exit 1")).unwrap_err();
        assert_eq!(e.to_string(), "`exit 1` exited with status 1");
        let e = run_checked(&runner, &CommandLine::new("/nonexistent/prog", ["a b"])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot run `/nonexistent/prog 'a b'`: "),
            "{e}"
        );
        let out = run_checked(&runner, &CommandLine::new("echo", ["hi"])).unwrap();
        assert_eq!(out.stdout, b"hi\n");
    }
}
