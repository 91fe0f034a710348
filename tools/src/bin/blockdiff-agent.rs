//! `blockdiff-agent`: the dump helper that `blockdiff-backup` copies to a
//! remote host and runs there over ssh. It is not meant to be run by hand.

use std::io::{self, BufWriter};
use std::process::ExitCode;

use blockdiff_run::remote::serve_agent;
use blockdiff_tools::reached_step;
use clap::{Parser, Subcommand};

/// The remote side of `blockdiff-backup HOST:SOURCE`: reads its request
/// and the previous digest from stdin, reads the source (through a
/// snapshot for an LV, quiescing as asked) and writes the diff, the new
/// digest, its log and its report to stdout, all as packets. Started by
/// blockdiff-backup; not meant to be run by hand.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-agent", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve one dump: the request on stdin, packets on stdout
    Serve,
}

fn main() -> ExitCode {
    let Args {
        command: Command::Serve,
    } = Args::parse();
    // The agent's private directory (~/.cache/blockdiff) keeps this run's
    // files in run.PID.
    let run_dirs = match std::env::current_exe() {
        Ok(exe) => exe.parent().map(ToOwned::to_owned).unwrap_or_default(),
        Err(e) => {
            blockdiff_tools::errln!(
                "blockdiff-agent: error: cannot find the agent's directory: {e}"
            );
            return ExitCode::FAILURE;
        }
    };
    let output = BufWriter::with_capacity(256 << 10, io::stdout());
    match serve_agent(io::stdin().lock(), output, &run_dirs, reached_step) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            // The backup host is gone, most likely: its end of the stream
            // says so; stderr is all that is left.
            blockdiff_tools::errln!("blockdiff-agent: error: cannot write to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}
