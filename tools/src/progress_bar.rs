//! The progress bar of a dump on a terminal: bytes read, rate and ETA,
//! fed by [`Progress::advance`], with the run log printed around it.

use std::fmt;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blockdiff_core::{Notice, Progress};
use blockdiff_run::ProgressDisplay;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

type MakeTarget = dyn Fn() -> ProgressDrawTarget + Send + Sync;

/// Whether a run shows a progress bar, and the bar being shown, if any.
///
/// Cheap to clone: the clones share the bar, so that the run log (see
/// [`stderr_log`](crate::stderr_log)) can clear it before
/// a line is printed and draw it again after.
#[derive(Clone)]
pub struct TerminalProgress {
    target: Option<Arc<MakeTarget>>,
    shown: Arc<Mutex<Option<ProgressBar>>>,
}

impl fmt::Debug for TerminalProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TerminalProgress")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl TerminalProgress {
    /// A bar on stderr if `wanted` and stderr is a terminal; otherwise
    /// none (the log lines stay as they are).
    pub fn stderr(wanted: bool) -> Self {
        if wanted && std::io::stderr().is_terminal() {
            TerminalProgress::with_target(|| ProgressDrawTarget::stderr_with_hz(4))
        } else {
            TerminalProgress::disabled()
        }
    }

    /// No bar.
    pub fn disabled() -> Self {
        TerminalProgress {
            target: None,
            shown: Arc::default(),
        }
    }

    /// Bars drawn on the targets `make` returns (one per dump): a fake
    /// terminal in tests.
    pub fn with_target(make: impl Fn() -> ProgressDrawTarget + Send + Sync + 'static) -> Self {
        TerminalProgress {
            target: Some(Arc::new(make)),
            shown: Arc::default(),
        }
    }

    /// Whether dumps show a bar.
    pub fn is_enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Runs `print` with the bar being shown, if any, cleared, and draws
    /// the bar again after: for everything printed on stderr during a dump.
    pub fn suspend<R>(&self, print: impl FnOnce() -> R) -> R {
        let shown = self
            .shown
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match shown.as_ref() {
            Some(bar) => bar.suspend(print),
            None => print(),
        }
    }

    /// A [`Progress`] for one dump that moves a bar (of `total` bytes when
    /// the source's size is known, else a counter), labelled `label`, and
    /// passes everything to `inner`, which keeps deciding whether the dump
    /// stops. The bar is removed when the returned value is dropped.
    pub fn wrap<'a>(
        &self,
        inner: &'a mut dyn Progress,
        total: Option<u64>,
        label: &str,
    ) -> BarProgress<'a> {
        let bar = self.target.as_ref().map(|make| {
            let bar = ProgressBar::with_draw_target(total, make());
            bar.set_style(bar_style(total.is_some()));
            bar.set_prefix(short_label(label));
            if total.is_none() {
                bar.enable_steady_tick(Duration::from_millis(250));
            }
            *self
                .shown
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bar.clone());
            bar
        });
        BarProgress {
            inner,
            bar,
            shown: self.shown.clone(),
        }
    }
}

/// At most 24 characters of `label`, its end (a path's file name) kept,
/// so that the bar fits on one line of an 80-column terminal.
fn short_label(label: &str) -> String {
    const MAX: usize = 24;
    let chars: Vec<char> = label.chars().collect();
    if chars.len() <= MAX {
        label.to_owned()
    } else {
        let tail: String = chars[chars.len() - (MAX - 1)..].iter().collect();
        format!("…{tail}")
    }
}

fn bar_style(known_total: bool) -> ProgressStyle {
    // The bar takes what the terminal's width leaves.
    let template = if known_total {
        "{prefix} [{wide_bar}] {percent:>3}% {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}"
    } else {
        "{prefix} {spinner} {binary_bytes} {binary_bytes_per_sec} {elapsed}"
    };
    ProgressStyle::with_template(template)
        .expect("the bar template is valid")
        .progress_chars("=> ")
}

/// The [`Progress`] of [`TerminalProgress::wrap`]: bytes to the bar,
/// everything to the inner progress.
pub struct BarProgress<'a> {
    inner: &'a mut dyn Progress,
    bar: Option<ProgressBar>,
    shown: Arc<Mutex<Option<ProgressBar>>>,
}

impl ProgressDisplay for TerminalProgress {
    fn show<'a>(
        &self,
        inner: &'a mut dyn Progress,
        total: Option<u64>,
        label: &str,
    ) -> Box<dyn Progress + 'a> {
        Box::new(self.wrap(inner, total, label))
    }
}

impl Progress for BarProgress<'_> {
    fn notice(&mut self, notice: Notice) {
        self.inner.notice(notice);
    }

    fn advance(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
        self.inner.advance(bytes);
    }

    fn should_stop(&mut self) -> Option<String> {
        self.inner.should_stop()
    }

    fn before_commit(&mut self) -> Option<String> {
        self.inner.before_commit()
    }

    fn at_step(&mut self, step: &'static str) {
        self.inner.at_step(step);
    }
}

impl Drop for BarProgress<'_> {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            let mut shown = self
                .shown
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            bar.finish_and_clear();
            *shown = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use indicatif::TermLike;
    use std::io;

    /// What a fake terminal was asked to do, in order.
    #[derive(Debug, Clone, PartialEq)]
    enum Event {
        Text(String),
        Clear,
        Logged,
    }

    #[derive(Debug, Clone, Default)]
    struct FakeTerm(Arc<Mutex<Vec<Event>>>);

    impl FakeTerm {
        fn push(&self, e: Event) {
            self.0.lock().unwrap().push(e);
        }
    }

    impl TermLike for FakeTerm {
        fn width(&self) -> u16 {
            120
        }
        fn move_cursor_up(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_down(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_right(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn move_cursor_left(&self, _: usize) -> io::Result<()> {
            Ok(())
        }
        fn write_line(&self, s: &str) -> io::Result<()> {
            self.push(Event::Text(s.to_owned()));
            Ok(())
        }
        fn write_str(&self, s: &str) -> io::Result<()> {
            self.push(Event::Text(s.to_owned()));
            Ok(())
        }
        fn clear_line(&self) -> io::Result<()> {
            self.push(Event::Clear);
            Ok(())
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Records what reaches it, and stops when told.
    #[derive(Default)]
    struct Inner {
        advanced: u64,
        stop: bool,
        commits: u32,
    }

    impl Progress for Inner {
        fn advance(&mut self, bytes: u64) {
            self.advanced += bytes;
        }
        fn should_stop(&mut self) -> Option<String> {
            self.stop.then(|| "interrupted by SIGTERM".to_owned())
        }
        fn before_commit(&mut self) -> Option<String> {
            self.commits += 1;
            None
        }
    }

    fn texts(events: &[Event]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                Event::Text(t) => Some(t.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_bar_shows_bytes_and_rate_and_logs_print_around_it() {
        let term = FakeTerm::default();
        let t = term.clone();
        let bars = TerminalProgress::with_target(move || {
            ProgressDrawTarget::term_like(Box::new(t.clone()))
        });
        assert!(bars.is_enabled());
        let mut inner = Inner::default();
        {
            let mut p = bars.wrap(&mut inner, Some(4 << 20), "/srv/disk.img");
            p.advance(2 << 20);
            // A log line during the dump: the bar is cleared first, then
            // drawn again.
            bars.suspend(|| term.push(Event::Logged));
            p.advance(1 << 20);
            assert_eq!(p.should_stop(), None);
            assert_eq!(p.before_commit(), None);
        }
        assert_eq!((inner.advanced, inner.commits), (3 << 20, 1));
        let events = term.0.lock().unwrap().clone();
        let logged = events.iter().position(|e| *e == Event::Logged).unwrap();
        let before = texts(&events[..logged]);
        assert!(before.contains("/srv/disk.img ["), "{events:?}");
        assert!(before.contains("2.00 MiB/4.00 MiB"), "{events:?}");
        assert_eq!(events[logged - 1], Event::Clear, "{events:?}");
        let after = texts(&events[logged..]);
        assert!(after.contains("ETA"), "{events:?}");
        assert!(after.contains("/s"), "{events:?}");
        // Once the dump is over, the bar is gone: nothing to clear.
        let n = events.len();
        bars.suspend(|| term.push(Event::Logged));
        assert_eq!(term.0.lock().unwrap()[n..], [Event::Logged]);
        // Each drawing of the bar fits the terminal's width.
        assert!(
            events.iter().all(|e| match e {
                Event::Text(t) => t.chars().count() <= 120,
                _ => true,
            }),
            "{events:?}"
        );
    }

    #[test]
    fn long_labels_keep_their_end() {
        assert_eq!(short_label("/srv/disk.img"), "/srv/disk.img");
        let long = "/dev/vg0/domu-webserver-data-bd-1234-5678-1";
        let short = short_label(long);
        assert_eq!(short.chars().count(), 24);
        assert!(
            short.starts_with('…') && long.ends_with(&short[3..]),
            "{short}"
        );
    }

    #[test]
    fn stops_and_commits_are_the_inner_progress_decision() {
        for bars in [
            TerminalProgress::disabled(),
            TerminalProgress::stderr(false),
        ] {
            assert!(!bars.is_enabled());
            let mut inner = Inner {
                stop: true,
                ..Inner::default()
            };
            let mut p = bars.wrap(&mut inner, None, "standard input");
            p.advance(10);
            assert_eq!(p.should_stop().as_deref(), Some("interrupted by SIGTERM"));
            drop(p);
            assert_eq!(inner.advanced, 10);
            assert_eq!(bars.suspend(|| 7), 7);
        }
    }
}
