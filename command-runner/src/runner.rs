//! The seam: running a command, and running it on this host.

use std::io;
use std::process::{Command, Stdio};

use crate::{CommandLine, CommandOutput};

/// Runs external commands. Code that runs commands takes one (as an
/// `Arc<dyn CommandRunner>`), so that its tests can record them instead.
pub trait CommandRunner: Send + Sync {
    /// Runs `command` to completion, standard input closed, capturing its
    /// output. An `Err` means it could not be started; a failing exit
    /// status is an `Ok` whose [`CommandOutput::success`] is false.
    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput>;
}

/// Runs commands on this host, with the environment of this process plus
/// the variables given with [`with_env`](Self::with_env).
#[derive(Debug, Default, Clone)]
pub struct LocalRunner {
    env: Vec<(String, String)>,
}

impl LocalRunner {
    /// A runner that adds nothing to the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` to `value` in every command's environment (`LC_ALL=C`,
    /// so that output to be parsed reads the same everywhere).
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

impl CommandRunner for LocalRunner {
    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
        let out = Command::new(&command.program)
            .args(&command.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()?;
        Ok(CommandOutput {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_command_gets_its_environment_and_no_input() {
        let runner = LocalRunner::new().with_env("BLOCKDIFF_TEST_VAR", "a b");
        let out = runner
            .run(&CommandLine::shell(
                r#"printf '%s' "$BLOCKDIFF_TEST_VAR"; cat; echo err >&2; exit 3"#,
            ))
            .unwrap();
        assert_eq!(out.status, Some(3));
        assert_eq!(out.stdout, b"a b", "the variable, and nothing read");
        assert_eq!(out.stderr_line(), "err");
    }

    #[test]
    fn a_program_that_does_not_exist_is_an_error() {
        let e = LocalRunner::new()
            .run(&CommandLine::new("/nonexistent/program", ["x"]))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_command_killed_by_a_signal_has_no_status() {
        let out = LocalRunner::new()
            .run(&CommandLine::shell("kill -KILL $$"))
            .unwrap();
        assert_eq!(out.status, None);
        assert_eq!(out.status_text(), "was killed by a signal");
    }
}
