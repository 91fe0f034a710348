//! Plumbing shared by the blockdiff command-line tools: exit codes, error
//! lines and notices on stderr. The tools themselves are thin: they parse
//! arguments into the libraries' option types and make one library call.
#![deny(missing_docs)]

mod cli;
mod format_args;
mod local_date;
mod stderr_progress;
mod timestamp;

pub use cli::{
    ExitStatus, UsageError, error_line, parse_block_size, parse_lv, parse_snapshot_size, run_main,
};
pub use format_args::{FormatArgs, FormatName};
pub use local_date::local_today;
pub use stderr_progress::StderrProgress;
pub use timestamp::timestamp;
