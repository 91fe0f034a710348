//! External commands behind a trait, so that tests can record them and a
//! remote runner can send them over ssh.

use std::fmt;
use std::io;
use std::process::{Command, Stdio};

/// One external command: a program and its arguments, never a shell line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    /// The program, looked up on `PATH`.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
}

impl Invocation {
    /// `program` with `args`.
    pub fn new<I, S>(program: &str, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Invocation {
            program: program.to_owned(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

impl fmt::Display for Invocation {
    /// The command as a user would type it (arguments with spaces or shell
    /// characters in single quotes).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for arg in &self.args {
            let plain = !arg.is_empty()
                && arg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,%+@".contains(&b));
            if plain {
                write!(f, " {arg}")?;
            } else {
                write!(f, " '{}'", arg.replace('\'', r"'\''"))?;
            }
        }
        Ok(())
    }
}

/// What a finished command left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit code, or `None` if a signal ended it.
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl CommandOutput {
    /// Whether it exited with 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Standard error as text, trimmed, on one line.
    pub fn stderr_line(&self) -> String {
        String::from_utf8_lossy(&self.stderr)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Runs external commands. [`LocalRunner`] runs them on this host; tests use
/// a recording fake, and a remote runner can carry them over ssh.
pub trait CommandRunner: Send + Sync {
    /// Runs `invocation` to completion with no input, capturing its output.
    /// An `Err` means it could not be started; a failing exit status is an
    /// `Ok` whose [`CommandOutput::success`] is false.
    fn run(&self, invocation: &Invocation) -> io::Result<CommandOutput>;
}

/// Runs commands on this host with `LC_ALL=C` (so that numbers and messages
/// parse the same everywhere) and LVM's warnings about inherited file
/// descriptors turned off.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalRunner;

impl CommandRunner for LocalRunner {
    fn run(&self, invocation: &Invocation) -> io::Result<CommandOutput> {
        let out = Command::new(&invocation.program)
            .args(&invocation.args)
            .env("LC_ALL", "C")
            .env("LVM_SUPPRESS_FD_WARNINGS", "1")
            .stdin(Stdio::null())
            .output()?;
        Ok(CommandOutput {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording runner for unit tests: it answers from a script of
    //! `(program prefix, output)` rules and records every invocation.

    use super::*;
    use std::sync::Mutex;

    type Rule = (
        String,
        Box<dyn Fn(&Invocation) -> CommandOutput + Send + Sync>,
    );

    #[derive(Default)]
    pub(crate) struct RecordingRunner {
        rules: Mutex<Vec<Rule>>,
        pub(crate) log: Mutex<Vec<String>>,
    }

    pub(crate) fn ok(stdout: &str) -> CommandOutput {
        CommandOutput {
            code: Some(0),
            stdout: stdout.as_bytes().to_vec(),
            stderr: Vec::new(),
        }
    }

    pub(crate) fn fail(code: i32, stderr: &str) -> CommandOutput {
        CommandOutput {
            code: Some(code),
            stdout: Vec::new(),
            stderr: stderr.as_bytes().to_vec(),
        }
    }

    impl RecordingRunner {
        /// Answers commands whose text starts with `prefix` (the newest
        /// matching rule wins).
        pub(crate) fn on(
            &self,
            prefix: &str,
            answer: impl Fn(&Invocation) -> CommandOutput + Send + Sync + 'static,
        ) {
            self.rules
                .lock()
                .unwrap()
                .push((prefix.to_owned(), Box::new(answer)));
        }

        pub(crate) fn commands(&self) -> Vec<String> {
            self.log.lock().unwrap().clone()
        }
    }

    impl CommandRunner for RecordingRunner {
        fn run(&self, invocation: &Invocation) -> io::Result<CommandOutput> {
            let text = invocation.to_string();
            self.log.lock().unwrap().push(text.clone());
            let rules = self.rules.lock().unwrap();
            match rules
                .iter()
                .rev()
                .find(|(p, _)| text.starts_with(p.as_str()))
            {
                Some((_, answer)) => Ok(answer(invocation)),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("no rule for {text}"),
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let inv = Invocation::new("lvcreate", ["-n", "a b", "it's", "vg/lv", ""]);
        assert_eq!(inv.to_string(), r"lvcreate -n 'a b' 'it'\''s' vg/lv ''");
    }

    #[test]
    fn local_runner_captures_status_and_stderr() {
        let out = LocalRunner
            .run(&Invocation::new(
                "sh",
                ["-c", "echo out; echo err >&2; exit 3"],
            ))
            .unwrap();
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr_line(), "err");
        assert!(
            LocalRunner
                .run(&Invocation::new("/nonexistent/x", [""; 0]))
                .is_err()
        );
    }
}
