//! Plumbing shared by the blockdiff command-line tools: exit codes, error
//! lines, the run log, and reading a source consistently (snapshot,
//! quiescers). The tools themselves are thin: they parse arguments into the
//! libraries' option types and make one library call.
#![deny(missing_docs)]

mod cli;
mod console;
mod each_backup;
mod format_args;
mod local_date;
mod polite_args;
mod progress_bar;
pub mod remote;
mod run_log;
mod run_summary;
mod source_reader;
mod stderr_progress;
mod step_hook;
mod timestamp;
mod volume_pattern;

pub use cli::{
    ExitStatus, UsageError, error_line, parse_block_size, parse_lv, parse_snapshot_size, run_main,
};
pub use console::{OutputLost, OutputMode, Stdout, output_lost, print_stderr, print_stdout};
pub use each_backup::{back_up_each, each_chain_name};
pub use format_args::{FormatArgs, FormatName};
pub use local_date::local_today;
pub use polite_args::{PoliteArgs, parse_io_priority, parse_max_rate};
pub use progress_bar::{BarProgress, TerminalProgress};
pub use run_log::{LogLevel, RunLog, log_line};
pub use run_summary::{RunSummary, SummaryClock};
pub use source_reader::{ConsistencyArgs, DumpStep, RunFacts, SourceReader, SourceSpec};
pub use stderr_progress::StderrProgress;
pub use step_hook::reached as reached_step;
pub use timestamp::timestamp;
pub use volume_pattern::{VolumePattern, VolumeSelection, glob_matches, skip_reason};
