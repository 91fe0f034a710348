//! The seam: running a command, and running it on this host.

use std::io::{self, Read, Write};
use std::process::{Child, Command, Stdio};
use std::thread;

use crate::{CommandLine, CommandOutput};

/// What reads a command's standard output as it comes (a stream of
/// packets from a remote agent): it returns once it has read what it
/// wants, normally to the end; an error stops the command.
pub type StdoutConsumer<'a> = &'a mut dyn FnMut(&mut dyn Read) -> io::Result<()>;

/// Runs external commands. Code that runs commands takes one (as an
/// `Arc<dyn CommandRunner>`), so that its tests can record them instead.
pub trait CommandRunner: Send + Sync {
    /// Runs `command` to completion, standard input closed, capturing its
    /// output. An `Err` means it could not be started; a failing exit
    /// status is an `Ok` whose [`CommandOutput::success`] is false.
    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput>;

    /// Runs `command` with `input` (if any) copied to its standard input,
    /// and hands its standard output to `consume` as it comes; standard
    /// error is captured. If `consume` fails, the command is killed and
    /// the error returned. The output returned has no standard output (it
    /// went to `consume`).
    fn run_streaming(
        &self,
        command: &CommandLine,
        input: Option<&mut (dyn Read + Send)>,
        consume: StdoutConsumer<'_>,
    ) -> io::Result<CommandOutput>;
}

/// [`CommandRunner::run_streaming`] for a process about to be started by
/// `command`: input fed and standard error read on their own threads, so
/// that no pipe fills while another is waited on.
pub(crate) fn stream_process(
    mut command: Command,
    input: Option<&mut (dyn Read + Send)>,
    consume: StdoutConsumer<'_>,
) -> io::Result<CommandOutput> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn()?;
    thread::scope(|scope| {
        let feeder = match (input, child.stdin.take()) {
            (Some(input), Some(mut stdin)) => Some(scope.spawn(move || -> io::Result<()> {
                io::copy(input, &mut stdin)?;
                stdin.flush()
                // Dropped here: the command sees the end of its input.
            })),
            _ => None,
        };
        let stderr = child.stderr.take().map(|mut pipe| {
            scope.spawn(move || {
                let mut bytes = Vec::new();
                let _ = pipe.read_to_end(&mut bytes);
                bytes
            })
        });
        let consumed = match child.stdout.take() {
            Some(mut stdout) => consume(&mut stdout),
            None => Ok(()),
        };
        finish(&mut child, consumed, feeder, stderr)
    })
}

/// Waits for `child` (killed first if its output was refused), its
/// feeder and its standard error.
fn finish(
    child: &mut Child,
    consumed: io::Result<()>,
    feeder: Option<thread::ScopedJoinHandle<'_, io::Result<()>>>,
    stderr: Option<thread::ScopedJoinHandle<'_, Vec<u8>>>,
) -> io::Result<CommandOutput> {
    if consumed.is_err() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    // A command may stop reading its input early (it failed, or needed
    // no more): the broken pipe is the command's to report, not ours.
    let _ = feeder.map(thread::ScopedJoinHandle::join);
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    consumed?;
    Ok(CommandOutput {
        status: status.code(),
        stdout: Vec::new(),
        stderr,
    })
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

impl LocalRunner {
    fn command(&self, command: &CommandLine) -> Command {
        let mut c = Command::new(&command.program);
        c.args(&command.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }
}

impl CommandRunner for LocalRunner {
    fn run_streaming(
        &self,
        command: &CommandLine,
        input: Option<&mut (dyn Read + Send)>,
        consume: StdoutConsumer<'_>,
    ) -> io::Result<CommandOutput> {
        stream_process(self.command(command), input, consume)
    }

    fn run(&self, command: &CommandLine) -> io::Result<CommandOutput> {
        Ok(self.command(command).stdin(Stdio::null()).output()?.into())
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
    fn streaming_feeds_the_input_and_hands_over_the_output() {
        let mut input: &[u8] = b"one\ntwo\n";
        let mut seen = Vec::new();
        let out = LocalRunner::new()
            .run_streaming(
                &CommandLine::shell("tr a-z A-Z; echo done >&2; exit 4"),
                Some(&mut input),
                &mut |stdout| stdout.read_to_end(&mut seen).map(drop),
            )
            .unwrap();
        assert_eq!(seen, b"ONE\nTWO\n");
        assert_eq!(out.status, Some(4));
        assert_eq!(out.stderr_line(), "done");
        assert!(out.stdout.is_empty());
    }

    #[test]
    fn a_consumer_that_fails_stops_the_command() {
        // The command would print forever and never read its input.
        let mut endless = io::repeat(b'x');
        let e = LocalRunner::new()
            .run_streaming(
                &CommandLine::shell("while :; do echo y; done"),
                Some(&mut endless),
                &mut |stdout| {
                    let mut first = [0u8; 2];
                    stdout.read_exact(&mut first)?;
                    assert_eq!(&first, b"y\n");
                    Err(io::Error::other("enough"))
                },
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "enough");
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
