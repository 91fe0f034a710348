//! What the blockdiff command-line tools share: argument parsing (clap
//! structs that convert into the libraries' option types), output (exit
//! codes, error lines, the log on stderr, the progress bar, stdout that
//! knows a closed pipe) and the test hook. The tools themselves are thin:
//! they parse arguments into options and make one library call
//! (`blockdiff-run`, `blockdiff-core`).
#![deny(missing_docs)]

mod cli;
mod consistency_args;
mod console;
mod format_args;
mod key_args;
mod polite_args;
mod progress_bar;
mod remote_args;
mod stderr_log;
mod stderr_progress;
mod step_hook;
mod storage_args;

pub use cli::{
    ExitStatus, UsageError, error_line, parse_block_size, parse_lv, parse_snapshot_size, run_main,
    run_main_with,
};
pub use consistency_args::ConsistencyArgs;
pub use console::{OutputLost, OutputMode, Stdout, output_lost, print_stderr, print_stdout};
pub use format_args::{FormatArgs, FormatName};
pub use key_args::{KeyArgs, PASSPHRASE_ENV};
pub use polite_args::{PoliteArgs, parse_io_priority, parse_max_rate};
pub use progress_bar::{BarProgress, TerminalProgress};
pub use remote_args::RemoteArgs;
pub use stderr_log::stderr_log;
pub use stderr_progress::StderrProgress;
pub use step_hook::reached as reached_step;
pub use storage_args::StorageArgs;
