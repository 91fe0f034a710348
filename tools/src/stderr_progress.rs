use blockdiff_core::{Notice, Progress};

/// A [`Progress`] that prints notices to stderr, one line each, prefixed
/// with the tool's name; `quiet` silences them.
#[derive(Debug)]
pub struct StderrProgress {
    name: &'static str,
    quiet: bool,
}

impl StderrProgress {
    /// Notices printed as `NAME: notice: …` unless `quiet`.
    pub fn new(name: &'static str, quiet: bool) -> Self {
        StderrProgress { name, quiet }
    }
}

impl Progress for StderrProgress {
    fn notice(&mut self, notice: Notice) {
        if !self.quiet {
            crate::errln!("{}: notice: {notice}", self.name);
        }
    }

    fn at_step(&mut self, step: &'static str) {
        crate::step_hook::reached(step);
    }
}
