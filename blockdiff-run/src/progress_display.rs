//! [`ProgressDisplay`]: how a run shows the progress of its dump (the
//! tools draw a bar on a terminal), kept out of the run itself.

use blockdiff_core::Progress;

/// Shows a dump's progress while passing everything to the run's own
/// [`Progress`], which keeps deciding whether the dump stops.
pub trait ProgressDisplay: Sync {
    /// Wraps `inner` for a dump of `total` bytes (if known) labelled
    /// `label`; what is shown goes away when the wrapper is dropped.
    fn show<'a>(
        &self,
        inner: &'a mut dyn Progress,
        total: Option<u64>,
        label: &str,
    ) -> Box<dyn Progress + 'a>;
}

/// Shows nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoDisplay;

impl ProgressDisplay for NoDisplay {
    fn show<'a>(
        &self,
        inner: &'a mut dyn Progress,
        _total: Option<u64>,
        _label: &str,
    ) -> Box<dyn Progress + 'a> {
        Box::new(inner)
    }
}
