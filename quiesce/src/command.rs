use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use crate::error::{Error, Result};

/// A command to run: a program and its arguments, never through a shell
/// unless built with [`CommandLine::shell`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// The program (a name looked up in `PATH`, or a path).
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl CommandLine {
    /// `program args…`.
    pub fn new<S: Into<String>>(
        program: impl Into<String>,
        args: impl IntoIterator<Item = S>,
    ) -> Self {
        CommandLine {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }

    /// `sh -c script`: for user-supplied command strings (hooks, custom
    /// stop/start commands).
    pub fn shell(script: impl Into<String>) -> Self {
        CommandLine::new("sh", ["-c".to_string(), script.into()])
    }
}

impl fmt::Display for CommandLine {
    /// The command as a user would type it; `sh -c SCRIPT` shows as SCRIPT.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.program == "sh" && self.args.len() == 2 && self.args[0] == "-c" {
            return f.write_str(&self.args[1]);
        }
        f.write_str(&self.program)?;
        for arg in &self.args {
            write!(f, " {arg}")?;
        }
        Ok(())
    }
}

/// How a command ended and what it printed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandOutput {
    /// Its exit status, `None` if a signal ended it.
    pub exit_code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

impl CommandOutput {
    /// A successful run that printed `stdout`.
    pub fn success(stdout: impl Into<String>) -> Self {
        CommandOutput {
            exit_code: Some(0),
            stdout: stdout.into(),
            stderr: String::new(),
        }
    }

    /// A run that exited with `code` and printed `stderr`.
    pub fn failure(code: i32, stderr: impl Into<String>) -> Self {
        CommandOutput {
            exit_code: Some(code),
            stdout: String::new(),
            stderr: stderr.into(),
        }
    }

    /// Whether it exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0)
    }

    fn status_text(&self) -> String {
        match self.exit_code {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        }
    }
}

/// Runs external commands. Quiescers go through this so that unit tests can
/// use a [`RecordingRunner`] instead of touching the system.
pub trait CommandRunner: Send + Sync {
    /// Runs `command` to completion, standard input closed, and returns how
    /// it ended. An `Err` means it could not be started.
    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput>;
}

/// Runs commands for real.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRunner;

impl CommandRunner for SystemRunner {
    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
        let output = Command::new(&command.program)
            .args(&command.args)
            .stdin(Stdio::null())
            .output()?;
        Ok(CommandOutput {
            exit_code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// A fake [`CommandRunner`] for tests: records every command line and
/// answers with scripted outputs (success with empty output by default).
#[derive(Debug, Default)]
pub struct RecordingRunner {
    calls: Mutex<Vec<String>>,
    replies: Mutex<Vec<(String, VecDeque<CommandOutput>)>>,
}

impl RecordingRunner {
    /// A runner under which every command succeeds and prints nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Answers the next command whose line (as displayed) starts with
    /// `prefix` with `output`. Several replies for one prefix are used in
    /// order; the last one is kept for later calls.
    pub fn reply(&self, prefix: impl Into<String>, output: CommandOutput) -> &Self {
        let prefix = prefix.into();
        let mut replies = self.replies.lock().unwrap();
        match replies.iter_mut().find(|(known, _)| *known == prefix) {
            Some((_, queue)) => queue.push_back(output),
            None => replies.push((prefix, VecDeque::from([output]))),
        }
        self
    }

    /// The command lines run so far, as displayed.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

impl CommandRunner for RecordingRunner {
    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
        let line = command.to_string();
        self.calls.lock().unwrap().push(line.clone());
        let mut replies = self.replies.lock().unwrap();
        let reply = replies
            .iter_mut()
            .filter(|(prefix, _)| line.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, queue)| {
                if queue.len() > 1 {
                    queue.pop_front().unwrap()
                } else {
                    queue[0].clone()
                }
            });
        Ok(reply.unwrap_or_else(|| CommandOutput::success("")))
    }
}

/// Runs `command` and turns a failure to start or a non-zero exit into an
/// [`Error`] that carries the command line and its stderr.
pub(crate) fn run_checked(
    runner: &dyn CommandRunner,
    command: &CommandLine,
) -> Result<CommandOutput> {
    let output = runner.run(command).map_err(|source| Error::CommandSpawn {
        command: command.to_string(),
        source,
    })?;
    if output.succeeded() {
        Ok(output)
    } else {
        Err(Error::CommandFailed {
            command: command.to_string(),
            status: output.status_text(),
            stderr: output.stderr.trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_runner_reports_exit_status_and_stderr() {
        let error =
            run_checked(&SystemRunner, &CommandLine::shell("echo oops >&2; exit 3")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`echo oops >&2; exit 3` exited with status 3: oops"
        );
        let output = run_checked(&SystemRunner, &CommandLine::new("echo", ["hi"])).unwrap();
        assert_eq!(output.stdout, "hi\n");
    }

    #[test]
    fn missing_program_is_a_spawn_error_naming_it() {
        let error =
            run_checked(&SystemRunner, &CommandLine::new("/nonexistent/prog", ["x"])).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot run `/nonexistent/prog x`"),
            "{error}"
        );
    }

    #[test]
    fn recording_runner_records_and_replies_by_longest_prefix() {
        let runner = RecordingRunner::new();
        runner.reply("vzlist", CommandOutput::success("101\n"));
        runner.reply("vzctl chkpnt 102", CommandOutput::failure(1, "busy"));
        assert_eq!(
            runner
                .run(&CommandLine::new("vzlist", ["-H"]))
                .unwrap()
                .stdout,
            "101\n"
        );
        assert!(
            !runner
                .run(&CommandLine::new("vzctl", ["chkpnt", "102"]))
                .unwrap()
                .succeeded()
        );
        assert!(
            runner
                .run(&CommandLine::new("vzctl", ["chkpnt", "101"]))
                .unwrap()
                .succeeded()
        );
        assert_eq!(
            runner.calls(),
            ["vzlist -H", "vzctl chkpnt 102", "vzctl chkpnt 101"]
        );
    }
}
