//! External commands behind one seam, for every crate of blockdiff that
//! runs them (LVM, quiescers, the remote session).
//!
//! - A [`CommandLine`] is a program and its arguments, never a shell line
//!   unless made with [`CommandLine::shell`]; it displays as a user would
//!   type it, quoted where a shell would split it.
//! - A [`CommandRunner`] runs one to completion, standard input closed, and
//!   returns its [`CommandOutput`]: exit status, standard output and
//!   standard error, as bytes. [`LocalRunner`] runs it on this host, with
//!   the environment variables it was given (`LC_ALL=C` for commands whose
//!   output is parsed); [`SshRunner`] runs it on a remote host over one
//!   multiplexed ssh connection, with nothing installed there.
//!   [`CommandRunner::run_streaming`] feeds a command's input and hands its
//!   output over as it comes (a remote agent's stream).
//! - [`run_checked`] turns a command that could not start or failed into a
//!   [`CommandError`] naming the command, how it ended and its standard
//!   error.
//! - With the `test-util` feature, a `RecordingRunner` records every command
//!   line and answers from scripted replies, so that tests of code that
//!   runs commands touch nothing.
//!
//! ```
//! use command_runner::{CommandLine, CommandRunner, LocalRunner, run_checked};
//!
//! let runner = LocalRunner::new().with_env("LC_ALL", "C");
//! let out = run_checked(&runner, &CommandLine::new("echo", ["a b"]))?;
//! assert_eq!(out.stdout_text(), "a b\n");
//!
//! let failed = run_checked(&runner, &CommandLine::shell("echo no >&2; exit 3")).unwrap_err();
//! assert_eq!(failed.to_string(), "`echo no >&2; exit 3` exited with status 3: no");
//! # Ok::<(), command_runner::CommandError>(())
//! ```
#![deny(missing_docs)]

mod command_line;
mod error;
mod output;
#[cfg(any(test, feature = "test-util"))]
mod recording;
mod runner;
mod ssh;

pub use command_line::{CommandLine, shell_quote};
pub use error::{CommandError, run_checked};
pub use output::CommandOutput;
#[cfg(any(test, feature = "test-util"))]
pub use recording::RecordingRunner;
pub use runner::{CommandRunner, LocalRunner, StdoutConsumer};
pub use ssh::{SshOptions, SshRunner};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
