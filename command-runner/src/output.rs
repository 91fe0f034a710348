//! What a finished command left.

use std::borrow::Cow;

/// How a command ended and what it printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommandOutput {
    /// The exit status, or `None` if a signal ended it.
    pub status: Option<i32>,
    /// Its standard output.
    pub stdout: Vec<u8>,
    /// Its standard error.
    pub stderr: Vec<u8>,
}

impl From<std::process::Output> for CommandOutput {
    fn from(out: std::process::Output) -> Self {
        CommandOutput {
            status: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        }
    }
}

impl CommandOutput {
    /// A command that exited with 0 and printed `stdout`.
    pub fn ok(stdout: impl AsRef<[u8]>) -> Self {
        CommandOutput {
            status: Some(0),
            stdout: stdout.as_ref().to_vec(),
            stderr: Vec::new(),
        }
    }

    /// A command that exited with `status` and printed `stderr`.
    pub fn failed(status: i32, stderr: impl AsRef<[u8]>) -> Self {
        CommandOutput {
            status: Some(status),
            stdout: Vec::new(),
            stderr: stderr.as_ref().to_vec(),
        }
    }

    /// Whether it exited with status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }

    /// Standard output as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Standard error as text, on one line: its non-empty lines, trimmed,
    /// joined with `; `.
    pub fn stderr_line(&self) -> String {
        String::from_utf8_lossy(&self.stderr)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// How it ended, in words: `exited with status 3`, or `was killed by a
    /// signal`.
    pub fn status_text(&self) -> String {
        match self.status {
            Some(code) => format!("exited with status {code}"),
            None => "was killed by a signal".to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_is_one_line_and_the_status_is_words() {
        let out = CommandOutput::failed(5, "  first\n\n second  \n");
        assert!(!out.success());
        assert_eq!(out.stderr_line(), "first; second");
        assert_eq!(out.status_text(), "exited with status 5");
        let killed = CommandOutput {
            status: None,
            ..CommandOutput::default()
        };
        assert_eq!(killed.status_text(), "was killed by a signal");
        assert_eq!(CommandOutput::ok(b"\xffx").stdout_text(), "\u{fffd}x");
    }
}
