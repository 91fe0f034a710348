//! Commands a quiescer runs, through the `command-runner` seam.

use command_runner::{CommandLine, CommandOutput, CommandRunner};

use crate::error::{Error, Result};

/// Runs `command` and turns a failure to start or a non-zero exit into an
/// [`Error::Command`] that carries the command line, how it ended and its
/// stderr.
pub(crate) fn run_checked(
    runner: &dyn CommandRunner,
    command: &CommandLine,
) -> Result<CommandOutput> {
    command_runner::run_checked(runner, command).map_err(Error::from)
}
