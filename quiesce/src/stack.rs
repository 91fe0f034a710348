use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use command_runner::{CommandLine, CommandRunner, LocalRunner};

use crate::command::run_checked;
use crate::error::{Error, Result};
use crate::hook::{Hook, HookStage};
use crate::log::Logger;
use crate::quiescer::Quiescer;
use crate::signals::TerminationSignals;

/// The default freeze window limit: 30 seconds.
pub const DEFAULT_FREEZE_LIMIT: Duration = Duration::from_secs(30);

/// How often the watchdog looks at the clock and the stop check.
const WATCHDOG_POLL: Duration = Duration::from_millis(20);

type StopCheck = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// An ordered list of [`Quiescer`]s and [`Hook`]s, frozen in order and
/// thawed in reverse around a snapshot step by [`run_frozen`](Self::run_frozen).
///
/// Thawing always happens:
/// - after the step, whether it succeeded or returned an error value;
/// - when a freeze or a pre-/post-freeze hook fails (everything frozen
///   before it is thawed);
/// - when the step panics (a guard thaws while the panic unwinds, then the
///   panic goes on);
/// - when the step overruns the freeze window limit or the stop check
///   ([`stop_when`](Self::stop_when), [`stop_on_signals`](Self::stop_on_signals))
///   reports SIGINT/SIGTERM: a watchdog thread thaws everything while the
///   step is still running, and `run_frozen` then fails with
///   [`Error::FreezeWindowExceeded`] or [`Error::Interrupted`], dropping the
///   step's result;
/// - when the stack is dropped with something still frozen.
///
/// It cannot happen if the process is killed with SIGKILL or built with
/// `panic = "abort"`: a MySQL lock is then released by the server when the
/// connection drops, but a stopped daemon stays stopped and a frozen cgroup
/// or file system stays frozen (`echo 0 > cgroup.freeze`, `fsfreeze -u`).
pub struct QuiesceStack {
    state: Arc<Mutex<StackState>>,
    log: Logger,
    freeze_limit: Duration,
    stop_check: Option<StopCheck>,
}

/// What the snapshot step is told about the window it runs in.
#[derive(Debug, Clone)]
pub struct FreezeWindow {
    started: Instant,
    deadline: Instant,
    abandoned: Arc<AtomicBool>,
}

impl FreezeWindow {
    /// When the watchdog will thaw everything and discard the step's result.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Time left before the deadline (zero once it has passed).
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// How long the first freeze is ago.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the watchdog has given the step up (deadline or stop
    /// request); a long step can poll this and return early, as its result
    /// will be discarded anyway.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }
}

/// What a frozen run measured and recorded, to be stored with the snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreezeReport {
    /// Wall-clock time when the first freeze began.
    pub started: SystemTime,
    /// The freeze window: from the first freeze to the end of the last thaw.
    pub window: Duration,
    /// The quiescers that were frozen, in freeze order.
    pub quiescers: Vec<String>,
    /// Key/value facts the quiescers recorded while frozen
    /// (`mysql.binlog_file`, `mysql.binlog_position`, …), in stack order.
    pub metadata: Vec<(String, String)>,
}

impl FreezeReport {
    /// The value recorded for `key`, if any.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The snapshot step's value and the report of the window it ran in.
#[derive(Debug)]
pub struct Frozen<T> {
    /// What the step returned.
    pub value: T,
    /// The freeze window and the quiescers' metadata.
    pub report: FreezeReport,
}

enum Abandon {
    Deadline(Duration),
    Stop(String),
}

struct StackState {
    quiescers: Vec<Box<dyn Quiescer>>,
    hooks: Vec<Hook>,
    runner: Arc<dyn CommandRunner>,
    log: Logger,
    /// `quiescers[..frozen]` are frozen.
    frozen: usize,
    /// Freezing began and the thaw has not run yet.
    thaw_due: bool,
    window_start: Option<Instant>,
    window_end: Option<Instant>,
    abandoned: Option<Abandon>,
    thaw_failures: Vec<(String, Error)>,
}

impl StackState {
    /// Runs the hooks of `stage` in order. A freeze stage stops at the
    /// first failure; a thaw stage runs them all. Returns the failures.
    /// Each successful pre-freeze hook makes the thaw stages due.
    fn run_hooks(&mut self, stage: HookStage) -> Vec<(String, Error)> {
        let mut failures = Vec::new();
        let hooks: Vec<Hook> = self
            .hooks
            .iter()
            .filter(|hook| hook.stage == stage)
            .cloned()
            .collect();
        for hook in hooks {
            self.log
                .line(format!("running {stage} hook: {}", hook.command));
            match run_checked(self.runner.as_ref(), &CommandLine::shell(&hook.command)) {
                Ok(_) if stage == HookStage::PreFreeze => self.thaw_due = true,
                Ok(_) => {}
                Err(error) => {
                    let name = format!("{stage} hook `{}`", hook.command);
                    match stage {
                        HookStage::PreFreeze | HookStage::PostFreeze => {
                            self.log.line(format!("{name} failed: {error}"));
                            failures.push((name, error));
                            break;
                        }
                        HookStage::PreThaw | HookStage::PostThaw => {
                            self.log
                                .line(format!("{name} failed: {error}; thawing goes on"));
                            failures.push((name, error));
                        }
                    }
                }
            }
        }
        failures
    }

    /// Runs the thaw hooks and thaws every frozen quiescer in reverse
    /// order, going on past failures, which are collected. Does nothing if
    /// nothing is due.
    fn thaw_all(&mut self) {
        if !self.thaw_due {
            return;
        }
        self.thaw_due = false;
        let mut failures = self.run_hooks(HookStage::PreThaw);
        while self.frozen > 0 {
            self.frozen -= 1;
            let quiescer = &mut self.quiescers[self.frozen];
            let name = quiescer.name();
            self.log.line(format!("thawing {name}"));
            let log = self.log.clone();
            let outcome = catch_unwind(AssertUnwindSafe(|| quiescer.thaw(&log)));
            let error = match outcome {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(_) => Error::Daemon {
                    what: "its thaw panicked".to_string(),
                },
            };
            self.log.line(format!("cannot thaw {name}: {error}"));
            failures.push((name, error));
        }
        if let Some(start) = self.window_start {
            let end = Instant::now();
            self.window_end = Some(end);
            self.log.line(format!(
                "freeze window: {:.3} s (first freeze to last thaw)",
                (end - start).as_secs_f64()
            ));
        }
        failures.extend(self.run_hooks(HookStage::PostThaw));
        self.thaw_failures.extend(failures);
    }
}

fn lock(state: &Mutex<StackState>) -> MutexGuard<'_, StackState> {
    // A panic inside a quiescer poisons the mutex; the state is still
    // consistent enough to thaw, which is the point.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl QuiesceStack {
    /// An empty stack logging to `log`, with the default freeze limit
    /// ([`DEFAULT_FREEZE_LIMIT`]) and hooks run by [`LocalRunner`].
    pub fn new(log: Logger) -> Self {
        QuiesceStack {
            state: Arc::new(Mutex::new(StackState {
                quiescers: Vec::new(),
                hooks: Vec::new(),
                runner: Arc::new(LocalRunner::new()),
                log: log.clone(),
                frozen: 0,
                thaw_due: false,
                window_start: None,
                window_end: None,
                abandoned: None,
                thaw_failures: Vec::new(),
            })),
            log,
            freeze_limit: DEFAULT_FREEZE_LIMIT,
            stop_check: None,
        }
    }

    /// Adds a quiescer: frozen after those already added, thawed before them.
    pub fn push(&mut self, quiescer: Box<dyn Quiescer>) {
        lock(&self.state).quiescers.push(quiescer);
    }

    /// Adds a hook; hooks of one stage run in the order added.
    pub fn add_hook(&mut self, hook: Hook) {
        lock(&self.state).hooks.push(hook);
    }

    /// Runs hooks through `runner` instead of the system (for tests).
    pub fn set_hook_runner(&mut self, runner: Arc<dyn CommandRunner>) {
        lock(&self.state).runner = runner;
    }

    /// Sets the freeze window limit: the time from the first freeze after
    /// which the watchdog thaws everything and the run fails.
    pub fn set_freeze_limit(&mut self, limit: Duration) {
        self.freeze_limit = limit;
    }

    /// The freeze window limit.
    pub fn freeze_limit(&self) -> Duration {
        self.freeze_limit
    }

    /// Sets a check that the watchdog calls every 20 ms while anything is
    /// frozen: once it returns `Some(reason)`, everything is thawed and the
    /// run fails with [`Error::Interrupted`]. For a binary with its own
    /// signal handling (a flag set by its handler).
    pub fn stop_when(&mut self, check: impl Fn() -> Option<String> + Send + Sync + 'static) {
        self.stop_check = Some(Arc::new(check));
    }

    /// Thaws and fails the run when SIGINT, SIGTERM or SIGHUP arrives, as
    /// caught by `signals` (which must stay alive for the run).
    pub fn stop_on_signals(&mut self, signals: &TerminationSignals) {
        let _ = signals;
        self.stop_when(|| TerminationSignals::pending().map(|name| format!("received {name}")));
    }

    /// The names of the quiescers, in freeze order.
    pub fn quiescer_names(&self) -> Vec<String> {
        lock(&self.state)
            .quiescers
            .iter()
            .map(|q| q.name())
            .collect()
    }

    /// The hooks, in the order added.
    pub fn hooks(&self) -> Vec<Hook> {
        lock(&self.state).hooks.clone()
    }

    /// Freezes everything in order, runs `step` while frozen, and thaws
    /// everything in reverse order, whatever happens (see the type's
    /// documentation).
    ///
    /// Order: every quiescer's `prepare` (a failure here leaves nothing
    /// frozen), pre-freeze hooks, the freezes — the freeze window and the
    /// limit's clock start here —, post-freeze hooks, `step`, pre-thaw
    /// hooks, the thaws in reverse, post-thaw hooks.
    ///
    /// `step` runs on the calling thread. If it overruns the limit, the
    /// watchdog thaws while it is still running; when it returns, its value
    /// is dropped and the run fails with [`Error::FreezeWindowExceeded`].
    /// Give its value a `Drop` that cleans up (removes a late snapshot) if
    /// that matters. A step that finishes after the deadline fails the same
    /// way even if the watchdog had not thawed yet.
    ///
    /// A failing thaw or thaw hook does not stop the others; the run then
    /// fails with [`Error::Thaw`] listing them all (the step's value is
    /// dropped: something may be left stopped and needs attention).
    pub fn run_frozen<T>(&mut self, step: impl FnOnce(&FreezeWindow) -> T) -> Result<Frozen<T>> {
        {
            let mut state = lock(&self.state);
            state.frozen = 0;
            state.thaw_due = false;
            state.window_start = None;
            state.window_end = None;
            state.abandoned = None;
            state.thaw_failures.clear();
        }
        if let Some(reason) = self.stop_check.as_ref().and_then(|check| check()) {
            return Err(Error::Interrupted { reason });
        }
        self.prepare_all()?;

        // From here on, whatever happens, the guard thaws on unwinding.
        let _thaw_guard = ThawOnDrop(&self.state);
        let pre_freeze_failure = lock(&self.state).run_hooks(HookStage::PreFreeze).pop();
        if let Some((name, error)) = pre_freeze_failure {
            return Err(self.thaw_then(Error::Freeze {
                quiescer: name,
                source: Box::new(error),
            }));
        }

        let started = Instant::now();
        let started_wall = SystemTime::now();
        let deadline = started + self.freeze_limit;
        let abandoned = Arc::new(AtomicBool::new(false));
        {
            let mut state = lock(&self.state);
            state.thaw_due = true;
            state.window_start = Some(started);
        }
        self.log.line(format!(
            "freeze window begins (limit {:.1} s)",
            self.freeze_limit.as_secs_f64()
        ));
        let watchdog = Watchdog::start(
            Arc::clone(&self.state),
            started,
            deadline,
            self.stop_check.clone(),
            Arc::clone(&abandoned),
        );

        let quiescer_count = lock(&self.state).quiescers.len();
        for index in 0..quiescer_count {
            let mut state = lock(&self.state);
            if let Some(error) = self.abandon_error(&state) {
                return Err(error);
            }
            let log = state.log.clone();
            let quiescer = &mut state.quiescers[index];
            let name = quiescer.name();
            log.line(format!("freezing {name}"));
            if let Err(error) = quiescer.freeze(&log) {
                log.line(format!(
                    "cannot freeze {name}: {error}; thawing what was frozen"
                ));
                drop(state);
                return Err(self.thaw_then(Error::Freeze {
                    quiescer: name,
                    source: Box::new(error),
                }));
            }
            state.frozen = index + 1;
        }
        let (names, metadata) = {
            let mut state = lock(&self.state);
            if let Some(error) = self.abandon_error(&state) {
                return Err(error);
            }
            if let Some((name, error)) = state.run_hooks(HookStage::PostFreeze).pop() {
                drop(state);
                return Err(self.thaw_then(Error::Freeze {
                    quiescer: name,
                    source: Box::new(error),
                }));
            }
            let names: Vec<String> = state.quiescers.iter().map(|q| q.name()).collect();
            let metadata: Vec<(String, String)> =
                state.quiescers.iter().flat_map(|q| q.metadata()).collect();
            (names, metadata)
        };

        self.log.line("frozen; running the snapshot step");
        let window = FreezeWindow {
            started,
            deadline,
            abandoned,
        };
        let value = step(&window);

        let mut state = lock(&self.state);
        if let Some(error) = self.abandon_error(&state) {
            return Err(error);
        }
        if Instant::now() >= deadline {
            let elapsed = started.elapsed();
            self.log.line(format!(
                "the snapshot step finished after {:.3} s, past the freeze window limit; its result is discarded",
                elapsed.as_secs_f64()
            ));
            state.abandoned = Some(Abandon::Deadline(elapsed));
            state.thaw_all();
            return Err(Error::FreezeWindowExceeded {
                limit: self.freeze_limit,
                elapsed,
            });
        }
        state.thaw_all();
        let window_length = state.window_end.unwrap_or_else(Instant::now) - started;
        let failures = std::mem::take(&mut state.thaw_failures);
        drop(state);
        drop(watchdog);
        if !failures.is_empty() {
            return Err(Error::Thaw { failures });
        }
        Ok(Frozen {
            value,
            report: FreezeReport {
                started: started_wall,
                window: window_length,
                quiescers: names,
                metadata,
            },
        })
    }

    fn prepare_all(&mut self) -> Result<()> {
        let mut state = lock(&self.state);
        let log = state.log.clone();
        for quiescer in state.quiescers.iter_mut() {
            quiescer.prepare(&log).map_err(|error| Error::Freeze {
                quiescer: quiescer.name(),
                source: Box::new(error),
            })?;
        }
        Ok(())
    }

    /// Thaws everything still frozen and returns `error`, with thaw
    /// failures logged (they were) but not hiding the cause.
    fn thaw_then(&self, error: Error) -> Error {
        let mut state = lock(&self.state);
        state.thaw_all();
        state.thaw_failures.clear();
        error
    }

    fn abandon_error(&self, state: &StackState) -> Option<Error> {
        match &state.abandoned {
            None => None,
            Some(Abandon::Deadline(elapsed)) => Some(Error::FreezeWindowExceeded {
                limit: self.freeze_limit,
                elapsed: *elapsed,
            }),
            Some(Abandon::Stop(reason)) => Some(Error::Interrupted {
                reason: reason.clone(),
            }),
        }
    }
}

impl Drop for QuiesceStack {
    fn drop(&mut self) {
        lock(&self.state).thaw_all();
    }
}

impl std::fmt::Debug for QuiesceStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuiesceStack")
            .field("quiescers", &self.quiescer_names())
            .field("hooks", &self.hooks())
            .field("freeze_limit", &self.freeze_limit)
            .finish()
    }
}

/// Thaws whatever is still frozen when dropped: on every return path of
/// `run_frozen`, and while a panic unwinds through it.
struct ThawOnDrop<'a>(&'a Mutex<StackState>);

impl Drop for ThawOnDrop<'_> {
    fn drop(&mut self) {
        let mut state = lock(self.0);
        if state.thaw_due && thread::panicking() {
            state.log.line("panic while frozen; thawing");
        }
        state.thaw_all();
    }
}

/// The thread that thaws at the deadline or on a stop request. Dropping it
/// stops and joins it.
struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    fn start(
        state: Arc<Mutex<StackState>>,
        started: Instant,
        deadline: Instant,
        stop_check: Option<StopCheck>,
        abandoned: Arc<AtomicBool>,
    ) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = thread::Builder::new()
            .name("quiesce-watchdog".to_string())
            .spawn(move || {
                loop {
                    match stopped.recv_timeout(WATCHDOG_POLL) {
                        Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
                        Err(RecvTimeoutError::Timeout) => {}
                    }
                    let cause = match stop_check.as_ref().and_then(|check| check()) {
                        Some(reason) => Abandon::Stop(reason),
                        None if Instant::now() >= deadline => Abandon::Deadline(started.elapsed()),
                        None => continue,
                    };
                    abandoned.store(true, Ordering::SeqCst);
                    let mut state = lock(&state);
                    if state.thaw_due && state.abandoned.is_none() {
                        let text = match &cause {
                            Abandon::Deadline(elapsed) => format!(
                                "freeze window limit exceeded after {:.3} s; thawing everything while the snapshot step is still running",
                                elapsed.as_secs_f64()
                            ),
                            Abandon::Stop(reason) => {
                                format!("{reason}; thawing everything while the snapshot step is still running")
                            }
                        };
                        state.log.line(text);
                        state.abandoned = Some(cause);
                        state.thaw_all();
                    }
                    return;
                }
            })
            .expect("cannot start the quiesce watchdog thread");
        Watchdog {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::log::collecting_logger;
    use command_runner::{CommandOutput, RecordingRunner};

    type Events = Arc<Mutex<Vec<String>>>;

    struct Fake {
        name: &'static str,
        events: Events,
        fail_prepare: bool,
        fail_freeze: bool,
        fail_thaw: bool,
    }

    impl Fake {
        fn boxed(name: &'static str, events: &Events) -> Box<Self> {
            Box::new(Fake {
                name,
                events: Arc::clone(events),
                fail_prepare: false,
                fail_freeze: false,
                fail_thaw: false,
            })
        }

        fn failure(&self, what: &str) -> Error {
            Error::Daemon {
                what: format!("{} {what} failed", self.name),
            }
        }

        /// Records `what` and fails it if asked to.
        fn step(&self, what: &str, fail: bool) -> Result<()> {
            self.events
                .lock()
                .unwrap()
                .push(format!("{what} {}", self.name));
            if fail {
                Err(self.failure(what))
            } else {
                Ok(())
            }
        }
    }

    impl Quiescer for Fake {
        fn name(&self) -> String {
            self.name.to_string()
        }
        fn prepare(&mut self, _log: &Logger) -> Result<()> {
            self.step("prepare", self.fail_prepare)
        }
        fn freeze(&mut self, _log: &Logger) -> Result<()> {
            self.step("freeze", self.fail_freeze)
        }
        fn thaw(&mut self, _log: &Logger) -> Result<()> {
            self.step("thaw", self.fail_thaw)
        }
        fn metadata(&self) -> Vec<(String, String)> {
            vec![(format!("{}.key", self.name), "value".to_string())]
        }
    }

    fn stack_of(names: &[&'static str]) -> (QuiesceStack, Events) {
        let events: Events = Arc::default();
        let mut stack = QuiesceStack::new(Logger::discard());
        for name in names {
            stack.push(Fake::boxed(name, &events));
        }
        (stack, events)
    }

    fn step_event(events: &Events) -> impl FnOnce(&FreezeWindow) -> u32 + '_ {
        move |_| {
            events.lock().unwrap().push("step".to_string());
            7
        }
    }

    #[test]
    fn freezes_in_order_thaws_in_reverse_and_reports() {
        let (log, lines) = collecting_logger();
        let events: Events = Arc::default();
        let mut stack = QuiesceStack::new(log);
        stack.push(Fake::boxed("a", &events));
        stack.push(Fake::boxed("b", &events));
        let frozen = stack.run_frozen(step_event(&events)).unwrap();
        assert_eq!(frozen.value, 7);
        assert_eq!(
            *events.lock().unwrap(),
            [
                "prepare a",
                "prepare b",
                "freeze a",
                "freeze b",
                "step",
                "thaw b",
                "thaw a"
            ]
        );
        assert_eq!(frozen.report.quiescers, ["a", "b"]);
        assert_eq!(frozen.report.metadata_value("b.key"), Some("value"));
        assert!(frozen.report.window < Duration::from_secs(5));
        let lines = lines.lock().unwrap();
        assert!(
            lines.iter().any(|line| line.starts_with("freeze window: ")),
            "{lines:?}"
        );
    }

    #[test]
    fn a_failed_freeze_thaws_only_what_was_frozen() {
        let events: Events = Arc::default();
        let mut stack = QuiesceStack::new(Logger::discard());
        stack.push(Fake::boxed("a", &events));
        let mut b = Fake::boxed("b", &events);
        b.fail_freeze = true;
        stack.push(b);
        stack.push(Fake::boxed("c", &events));
        let error = stack.run_frozen(step_event(&events)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot freeze b: b freeze failed; everything frozen before it was thawed"
        );
        assert_eq!(
            *events.lock().unwrap(),
            [
                "prepare a",
                "prepare b",
                "prepare c",
                "freeze a",
                "freeze b",
                "thaw a"
            ]
        );
    }

    #[test]
    fn a_failed_prepare_freezes_nothing() {
        let events: Events = Arc::default();
        let mut stack = QuiesceStack::new(Logger::discard());
        stack.push(Fake::boxed("a", &events));
        let mut b = Fake::boxed("b", &events);
        b.fail_prepare = true;
        stack.push(b);
        let runner = Arc::new(RecordingRunner::new());
        stack.set_hook_runner(runner.clone());
        stack.add_hook(Hook::new(HookStage::PreFreeze, "pre"));
        stack.add_hook(Hook::new(HookStage::PostThaw, "post"));
        assert!(stack.run_frozen(step_event(&events)).is_err());
        assert_eq!(*events.lock().unwrap(), ["prepare a", "prepare b"]);
        assert!(runner.calls().is_empty());
    }

    #[test]
    fn an_overrunning_step_is_thawed_by_the_watchdog_and_its_result_discarded() {
        let (mut stack, events) = stack_of(&["a", "b"]);
        stack.set_freeze_limit(Duration::from_millis(200));
        let seen = Arc::clone(&events);
        let error = stack
            .run_frozen(|window| {
                let start = Instant::now();
                while !window.is_abandoned() && start.elapsed() < Duration::from_secs(5) {
                    thread::sleep(Duration::from_millis(5));
                }
                // Give the watchdog time to finish thawing, then prove it
                // thawed while the step was still running.
                thread::sleep(Duration::from_millis(100));
                seen.lock().unwrap().push("step ends".to_string());
                "late snapshot"
            })
            .unwrap_err();
        assert!(
            matches!(error, Error::FreezeWindowExceeded { .. }),
            "{error}"
        );
        assert!(
            error.to_string().contains("limit of 0.2 s was exceeded"),
            "{error}"
        );
        assert_eq!(
            *events.lock().unwrap(),
            [
                "prepare a",
                "prepare b",
                "freeze a",
                "freeze b",
                "thaw b",
                "thaw a",
                "step ends"
            ]
        );
    }

    #[test]
    fn a_panicking_step_is_thawed_and_the_panic_goes_on() {
        let (mut stack, events) = stack_of(&["a", "b"]);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let _ = stack.run_frozen(|_| -> u32 { panic!("snapshot tool crashed") });
        }));
        assert!(outcome.is_err());
        assert_eq!(
            *events.lock().unwrap(),
            [
                "prepare a",
                "prepare b",
                "freeze a",
                "freeze b",
                "thaw b",
                "thaw a"
            ]
        );
    }

    #[test]
    fn a_stop_request_thaws_and_interrupts() {
        let (mut stack, events) = stack_of(&["a"]);
        let requested = Arc::new(AtomicUsize::new(0));
        let flag = Arc::clone(&requested);
        stack.stop_when(move || {
            (flag.load(Ordering::SeqCst) == 1).then(|| "received SIGTERM".to_string())
        });
        let error = stack
            .run_frozen(|window| {
                requested.store(1, Ordering::SeqCst);
                while !window.is_abandoned() {
                    thread::sleep(Duration::from_millis(5));
                }
            })
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "received SIGTERM while frozen; everything was thawed and the snapshot step's result was discarded"
        );
        assert_eq!(*events.lock().unwrap(), ["prepare a", "freeze a", "thaw a"]);
    }

    #[test]
    fn hooks_run_by_stage_and_thaw_failures_do_not_stop_thawing() {
        let (mut stack, events) = stack_of(&["a", "b"]);
        let runner = Arc::new(RecordingRunner::new());
        runner.reply("pre-thaw-1", CommandOutput::failed(2, "nope"));
        stack.set_hook_runner(runner.clone());
        for (stage, command) in [
            (HookStage::PostThaw, "post-thaw"),
            (HookStage::PreThaw, "pre-thaw-1"),
            (HookStage::PreThaw, "pre-thaw-2"),
            (HookStage::PostFreeze, "post-freeze"),
            (HookStage::PreFreeze, "pre-freeze"),
        ] {
            stack.add_hook(Hook::new(stage, command));
        }
        let error = stack.run_frozen(step_event(&events)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "thawing failed: pre-thaw hook `pre-thaw-1`: `pre-thaw-1` exited with status 2: nope"
        );
        assert_eq!(
            runner.calls(),
            [
                "pre-freeze",
                "post-freeze",
                "pre-thaw-1",
                "pre-thaw-2",
                "post-thaw"
            ]
        );
        assert_eq!(
            *events.lock().unwrap(),
            [
                "prepare a",
                "prepare b",
                "freeze a",
                "freeze b",
                "step",
                "thaw b",
                "thaw a"
            ]
        );
    }

    #[test]
    fn a_failing_pre_freeze_hook_aborts_before_any_freeze() {
        let (mut stack, events) = stack_of(&["a"]);
        let runner = Arc::new(RecordingRunner::new());
        runner.reply("check", CommandOutput::failed(1, "not today"));
        stack.set_hook_runner(runner.clone());
        stack.add_hook(Hook::new(HookStage::PreFreeze, "check"));
        stack.add_hook(Hook::new(HookStage::PostThaw, "post"));
        let error = stack.run_frozen(step_event(&events)).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("cannot freeze pre-freeze hook `check`"),
            "{error}"
        );
        assert_eq!(*events.lock().unwrap(), ["prepare a"]);
        assert_eq!(runner.calls(), ["check"], "nothing to undo: no thaw hooks");
    }

    #[test]
    fn a_failed_thaw_is_reported_after_the_others_thawed() {
        let events: Events = Arc::default();
        let mut stack = QuiesceStack::new(Logger::discard());
        let mut a = Fake::boxed("a", &events);
        a.fail_thaw = true;
        stack.push(a);
        stack.push(Fake::boxed("b", &events));
        let error = stack.run_frozen(step_event(&events)).unwrap_err();
        assert_eq!(error.to_string(), "thawing failed: a: a thaw failed");
        // Run again: the stack is reusable.
        let error = stack.run_frozen(|_| ()).unwrap_err();
        assert!(matches!(error, Error::Thaw { .. }));
    }
}
