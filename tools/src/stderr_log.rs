//! The tools' run log on stderr: `TOOL: TIMESTAMP [level: ]message`,
//! printed around the progress bar.

use blockdiff_run::{LogLevel, RunLog, log_line};

use crate::TerminalProgress;

/// A [`RunLog`] whose lines go to stderr as `TOOL: TIMESTAMP [level:
/// ]message`, with `bars`' progress bar out of the way (cleared, the line
/// printed, the bar drawn again below it) so that lines logged during a
/// dump do not tear it; `quiet` keeps only warnings and errors.
pub fn stderr_log(tool: &'static str, quiet: bool, bars: &TerminalProgress) -> RunLog {
    let bars = bars.clone();
    RunLog::new(move |level, message| {
        if !(quiet && level == LogLevel::Info) {
            bars.suspend(|| crate::errln!("{}", log_line(Some(tool), level, message)));
        }
    })
    .with_tool(tool)
}
