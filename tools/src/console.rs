//! Printing that never panics: `println!` and `eprintln!` panic when
//! standard output or standard error is a closed pipe (Rust ignores
//! `SIGPIPE`, so the write fails with `EPIPE`), which made the tools exit
//! 101 after their work was done.
//!
//! The tools print through this module instead:
//! - [`outln!`](crate::outln) writes a line to standard output and returns
//!   [`OutputLost`] when it could not be written; the tool decides what
//!   that means (see [`run_main`](crate::run_main)): a command whose only job
//!   is to print fails, a command whose work is done (a committed backup, an
//!   executed prune) ignores it, and says so in its log file if it has one.
//! - [`errln!`](crate::errln) writes a line to standard error, best effort:
//!   when standard error is closed there is nowhere left to complain.
//! - [`Stdout`] is a [`Write`] to standard output whose errors carry
//!   [`OutputLost`], for output written with `writeln!`.

use std::fmt;
use std::io::{self, Write};

/// Standard output could not be written (closed pipe, full disk): what the
/// command printed is incomplete.
#[derive(Debug)]
pub struct OutputLost {
    source: io::Error,
}

impl OutputLost {
    /// The operating system's error.
    pub fn io_error(&self) -> &io::Error {
        &self.source
    }

    /// The reader closed the pipe (`| head`): it chose not to read the
    /// rest, so no message is needed.
    pub fn is_broken_pipe(&self) -> bool {
        self.source.kind() == io::ErrorKind::BrokenPipe
    }
}

impl fmt::Display for OutputLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "standard output: cannot write: {} (the output is incomplete)",
            self.source
        )
    }
}

impl std::error::Error for OutputLost {}

impl From<OutputLost> for io::Error {
    fn from(e: OutputLost) -> io::Error {
        io::Error::new(e.source.kind(), e)
    }
}

/// Finds an [`OutputLost`] in an error's chain, directly or inside an
/// [`io::Error`] written by [`Stdout`].
pub fn output_lost(err: &anyhow::Error) -> Option<&OutputLost> {
    err.chain().find_map(|c| {
        c.downcast_ref::<OutputLost>().or_else(|| {
            c.downcast_ref::<io::Error>()
                .and_then(|e| e.get_ref())
                .and_then(|e| e.downcast_ref::<OutputLost>())
        })
    })
}

/// Writes `args` to standard output and flushes it.
pub fn print_stdout(args: fmt::Arguments<'_>) -> Result<(), OutputLost> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|source| OutputLost { source })
}

/// Writes `args` to standard error; false if it could not be written.
pub fn print_stderr(args: fmt::Arguments<'_>) -> bool {
    let mut err = io::stderr().lock();
    err.write_fmt(args).and_then(|()| err.flush()).is_ok()
}

/// What a failure to write standard output means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Printing is the command's job: a failed write is an error
    /// ([`OutputLost`]).
    Required,
    /// The work is done and the output only reports it: failed writes are
    /// ignored (see [`Stdout::lost`]).
    BestEffort,
}

/// Standard output as a [`Write`]. In [`OutputMode::Required`] its errors
/// carry [`OutputLost`] (found by [`output_lost`] in an error chain); in
/// [`OutputMode::BestEffort`] they are swallowed and remembered.
#[derive(Debug)]
pub struct Stdout {
    out: io::StdoutLock<'static>,
    mode: OutputMode,
    lost: Option<io::Error>,
}

impl Stdout {
    /// Locks standard output.
    pub fn lock(mode: OutputMode) -> Self {
        Stdout {
            out: io::stdout().lock(),
            mode,
            lost: None,
        }
    }

    /// In [`OutputMode::BestEffort`], the first error that lost output.
    pub fn lost(&self) -> Option<&io::Error> {
        self.lost.as_ref()
    }

    fn failed(&mut self, source: io::Error, done: usize) -> io::Result<usize> {
        match self.mode {
            OutputMode::Required => Err(OutputLost { source }.into()),
            OutputMode::BestEffort => {
                self.lost.get_or_insert(source);
                Ok(done)
            }
        }
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.lost.is_some() {
            return Ok(buf.len());
        }
        match self.out.write(buf) {
            Ok(n) => Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => self.failed(e, buf.len()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.lost.is_some() {
            return Ok(());
        }
        match self.out.flush() {
            Ok(()) => Ok(()),
            Err(e) => self.failed(e, 0).map(drop),
        }
    }
}

/// Like `println!`, to standard output, without panicking: evaluates to
/// `Result<(), OutputLost>`.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::print_stdout(::std::format_args!("{}\n", ::std::format_args!($($arg)*)))
    };
}

/// Like `eprintln!`, to standard error, best effort: a closed standard
/// error is ignored (there is nowhere left to report it).
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {{
        let _ = $crate::print_stderr(::std::format_args!("{}\n", ::std::format_args!($($arg)*)));
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_lost_is_found_inside_an_io_error() {
        let lost = OutputLost {
            source: io::Error::from(io::ErrorKind::BrokenPipe),
        };
        let e = anyhow::Error::new(io::Error::from(lost)).context("listing");
        let found = output_lost(&e).expect("found");
        assert!(found.is_broken_pipe());
        assert!(output_lost(&anyhow::anyhow!("other")).is_none());
        let plain = anyhow::Error::new(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(output_lost(&plain).is_none(), "a diff's pipe is no listing");
    }

    #[test]
    fn best_effort_output_swallows_and_remembers() {
        let mut out = Stdout::lock(OutputMode::BestEffort);
        let e = io::Error::from(io::ErrorKind::BrokenPipe);
        assert_eq!(out.failed(e, 3).unwrap(), 3);
        assert!(out.lost().is_some());
        assert_eq!(out.write(b"more").unwrap(), 4, "nothing more is tried");
        let mut out = Stdout::lock(OutputMode::Required);
        let e = io::Error::from(io::ErrorKind::BrokenPipe);
        let err = out.failed(e, 0).unwrap_err();
        assert!(
            err.get_ref()
                .unwrap()
                .downcast_ref::<OutputLost>()
                .is_some()
        );
    }
}
