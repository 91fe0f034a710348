use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use blockdiff_core::{DumpSource, Notice, Progress};
use clap::Args;
use lvm_snap::{
    FillEvent, FillMonitor, FillMonitorOptions, LvPath, Lvm, Snapshot, SnapshotOptions,
    SnapshotSize,
};
use quiesce::{FreezeReport, FreezeWindow, QuiesceSpec, QuiesceStack, TerminationSignals};

use crate::{PoliteArgs, RunLog, UsageError, parse_snapshot_size};

/// What a backup reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// A file or block device, read as it is.
    Path(PathBuf),
    /// Standard input.
    Stdin,
    /// A logical volume, read through a snapshot taken for the run.
    Lvm(LvPath),
}

impl std::fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SourceSpec::Path(p) => write!(f, "{}", p.display()),
            SourceSpec::Stdin => f.write_str("standard input"),
            SourceSpec::Lvm(lv) => write!(f, "lvm:{lv}"),
        }
    }
}

/// The options that make a source consistent while it is read: the
/// snapshot of `--lvm` and the quiescers of `--quiesce`.
#[derive(Debug, Clone, Args)]
pub struct ConsistencyArgs {
    /// Size of a thick snapshot: percent of the volume (15%) or a size
    /// (512M, 2G). Thin volumes take thin snapshots, which need none.
    #[arg(long, value_name = "SIZE", default_value = "15%", value_parser = parse_snapshot_size, requires = "lvm")]
    pub snapshot_size: SnapshotSize,

    /// Warn when the snapshot is this full (percent)
    #[arg(long, value_name = "PERCENT", default_value_t = 80.0, requires = "lvm")]
    pub fill_warn: f64,

    /// Seconds between two polls of the snapshot's fill
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0, requires = "lvm")]
    pub fill_interval: f64,

    /// Quiesce a service while the snapshot is taken (repeatable; see SPEC
    /// below)
    #[arg(long = "quiesce", value_name = "SPEC", value_parser = parse_quiesce_spec)]
    pub quiesce: Vec<String>,

    /// Longest time services may stay quiesced, in seconds: past it the
    /// snapshot is abandoned, everything is thawed and the run fails
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub freeze_limit: f64,

    /// Leave the snapshot in place after the run (for debugging; remove it
    /// with lvremove or `blockdiff-lvm cleanup`)
    #[arg(long, requires = "lvm")]
    pub keep_snapshot: bool,
}

fn parse_quiesce_spec(s: &str) -> Result<String, String> {
    QuiesceSpec::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

impl ConsistencyArgs {
    /// The same options as command-line arguments, for a process that
    /// reads the source elsewhere (the remote agent).
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            match self.snapshot_size {
                SnapshotSize::Bytes(b) => format!("--snapshot-size={b}"),
                SnapshotSize::PercentOfOrigin(p) => format!("--snapshot-size={p}%"),
            },
            format!("--fill-warn={}", self.fill_warn),
            format!("--fill-interval={}", self.fill_interval),
            format!("--freeze-limit={}", self.freeze_limit),
        ];
        args.extend(self.quiesce.iter().map(|q| format!("--quiesce={q}")));
        if self.keep_snapshot {
            args.push("--keep-snapshot".into());
        }
        args
    }

    fn check(&self) -> Result<(), UsageError> {
        if !(self.freeze_limit > 0.0 && self.freeze_limit <= 86400.0) {
            return Err(UsageError(format!(
                "--freeze-limit must be between 0 and 86400 seconds, not {}",
                self.freeze_limit
            )));
        }
        if !(self.fill_interval > 0.0 && self.fill_interval <= 3600.0) {
            return Err(UsageError(format!(
                "--fill-interval must be between 0 and 3600 seconds, not {}",
                self.fill_interval
            )));
        }
        Ok(())
    }
}

/// The facts of a run that go to `NAME.N.meta.json`.
pub type RunFacts = BTreeMap<String, String>;

/// The dump step a [`SourceReader`] runs once the source is ready.
pub type DumpStep<'s, T> = dyn FnOnce(DumpSource<Box<dyn Read + Send>>, &mut dyn Progress) -> blockdiff_core::Result<T>
    + 's;

/// Reads a [`SourceSpec`] consistently: quiesces services, takes and
/// watches the snapshot, hands the source to a dump step, and undoes all
/// of it on every path (errors, SIGINT/SIGTERM/SIGHUP, panics).
///
/// The dump step is a local backup in `blockdiff-backup` and the stream
/// back to the backup host in `blockdiff-agent`.
pub struct SourceReader<'a> {
    args: &'a ConsistencyArgs,
    log: RunLog,
    signals: Option<TerminationSignals>,
    stack: Option<QuiesceStack>,
    polite: Option<PoliteArgs>,
}

impl<'a> SourceReader<'a> {
    /// Checks the options and, when there is anything to undo (a snapshot,
    /// quiesced services), catches the termination signals so that they
    /// stop the run instead of killing it.
    pub fn new(spec: &SourceSpec, args: &'a ConsistencyArgs, log: RunLog) -> anyhow::Result<Self> {
        args.check()?;
        // A plain source needs no cleanup: a killed run commits nothing,
        // and the default action ends a run blocked on a pipe at once.
        let signals = if matches!(spec, SourceSpec::Lvm(_)) || !args.quiesce.is_empty() {
            Some(TerminationSignals::catch()?)
        } else {
            None
        };
        let stack = if args.quiesce.is_empty() {
            None
        } else {
            let mut stack = QuiesceStack::from_spec_strings(&args.quiesce, log.quiesce_logger())?;
            stack.set_freeze_limit(Duration::from_secs_f64(args.freeze_limit));
            if let Some(signals) = &signals {
                stack.stop_on_signals(signals);
            }
            Some(stack)
        };
        Ok(SourceReader {
            args,
            log,
            signals,
            stack,
            polite: None,
        })
    }

    /// Reads at the niceness and I/O priority of `polite`: set on this
    /// thread just before the dump starts its threads (which inherit
    /// them), so the snapshot and the quiescers run at normal priority and
    /// the freeze window is not stretched.
    pub fn with_priorities(mut self, polite: &PoliteArgs) -> Self {
        self.polite = Some(polite.clone());
        self
    }

    fn lower_priorities(&self) -> blockdiff_core::Result<()> {
        match &self.polite {
            Some(p) => p.apply_priorities(),
            None => Ok(()),
        }
    }

    /// The termination signal (SIGINT, SIGTERM, SIGHUP) received while
    /// this reader catches them, if any: a run that goes on to another
    /// source (`--each`) stops there.
    pub fn interrupted_by(&self) -> Option<&'static str> {
        self.signals
            .as_ref()
            .and_then(TerminationSignals::received)
            .map(quiesce::signal_name)
    }

    /// Makes `spec` ready, runs `step` on it and cleans up; `facts` gets
    /// the source, snapshot, fill and freeze window.
    pub fn read<T>(
        &mut self,
        spec: &SourceSpec,
        facts: &mut RunFacts,
        step: Box<DumpStep<'_, T>>,
    ) -> anyhow::Result<T> {
        facts.insert("source".into(), spec.to_string());
        let source: DumpSource<Box<dyn Read + Send>> = match spec {
            SourceSpec::Lvm(origin) => return self.read_lvm(origin, facts, step),
            SourceSpec::Stdin => DumpSource::stream(io::stdin(), "standard input").boxed(),
            SourceSpec::Path(path) => DumpSource::open(path)?.boxed(),
        };
        self.lower_priorities()?;
        let signals = self.signals.as_ref();
        let log = &self.log;
        match self.stack.as_mut() {
            None => Ok(step(
                source,
                &mut RunProgress::new(log, signals, None, None),
            )?),
            Some(stack) => {
                log.info(format_args!(
                    "no snapshot: quiescing ({}) for the whole dump (at most {} s)",
                    self.args.quiesce.join(", "),
                    self.args.freeze_limit
                ));
                let frozen = stack.run_frozen(|window| {
                    step(
                        source,
                        &mut RunProgress::new(log, signals, None, Some(window)),
                    )
                })?;
                record_freeze(facts, &frozen.report);
                Ok(frozen.value?)
            }
        }
    }

    /// Snapshots `origin`, runs `step` on the snapshot, removes it.
    fn read_lvm<T>(
        &mut self,
        origin: &LvPath,
        facts: &mut RunFacts,
        step: Box<DumpStep<'_, T>>,
    ) -> anyhow::Result<T> {
        let log = self.log.clone();
        let lvm = Lvm::local();
        let snapshot_options = SnapshotOptions {
            size: self.args.snapshot_size,
            ..SnapshotOptions::default()
        };
        log.info(format_args!("creating snapshot of {origin}"));
        let snapshot_failed = || format!("cannot snapshot {origin}");
        let snapshot = match self.stack.as_mut() {
            None => {
                Snapshot::create(&lvm, origin, &snapshot_options).with_context(snapshot_failed)?
            }
            Some(stack) => {
                // Only the snapshot is taken while frozen. If the window runs
                // out, the late snapshot is dropped, which removes it.
                let frozen = stack
                    .run_frozen(|_| Snapshot::create(&lvm, origin, &snapshot_options))
                    .with_context(snapshot_failed)?;
                record_freeze(facts, &frozen.report);
                frozen.value.with_context(snapshot_failed)?
            }
        };
        let created = Instant::now();
        let kind = if snapshot.is_thin() { "thin" } else { "thick" };
        facts.insert("snapshot".into(), snapshot.path().to_string());
        facts.insert("snapshot_kind".into(), kind.into());
        log.info(format_args!("created {kind} snapshot {}", snapshot.path()));
        let monitor_options = FillMonitorOptions {
            interval: Duration::from_secs_f64(self.args.fill_interval),
            warn_percent: self.args.fill_warn,
        };
        let name = snapshot.path().clone();
        let watched = name.clone();
        let events = log.clone();
        let monitor = FillMonitor::start(snapshot.watcher(), monitor_options, move |event| {
            match event {
                FillEvent::Warning {
                    snapshot,
                    percent,
                    threshold,
                } => events.warning(format_args!(
                    "snapshot {snapshot} is {percent:.1}% full (warning at {threshold}%); give it more space with --snapshot-size"
                )),
                FillEvent::Invalid { snapshot } => events.error(format_args!(
                    "snapshot {snapshot} overflowed; this generation will not be committed"
                )),
                FillEvent::PollFailed { error } => events.warning(format_args!(
                    "cannot read the fill of snapshot {watched}: {error}"
                )),
            }
        });
        let signals = self.signals.as_ref();
        let result = monitor.map_err(anyhow::Error::from).and_then(|monitor| {
            let result = match signals.and_then(TerminationSignals::received) {
                Some(signal) => Err(anyhow::anyhow!(
                    "interrupted by {}",
                    quiesce::signal_name(signal)
                )),
                None => {
                    let mut progress = RunProgress::new(&log, signals, Some(&monitor), None);
                    self.lower_priorities()
                        .and_then(|()| DumpSource::open(snapshot.device()))
                        .and_then(|source| step(source.boxed(), &mut progress))
                        .map_err(anyhow::Error::from)
                }
            };
            // A read error from an overflowed snapshot is reported as the
            // overflow it is.
            if result.is_err() {
                let _ = monitor.check_now();
            }
            let overflow = monitor.overflow_error();
            let status = monitor.stop();
            match (result, overflow) {
                (Err(_), Some(overflow)) | (Ok(_), Some(overflow)) => Err(overflow.into()),
                (result, None) => result.map(|r| (r, status.peak)),
            }
        });
        let peak = result.as_ref().map(|(_, p)| *p).ok();
        let peak_text = peak
            .map(|p| format!("; peak fill {p:.1}%"))
            .unwrap_or_default();
        if let Some(p) = peak {
            facts.insert("snapshot_peak_fill_percent".into(), format!("{p:.1}"));
        }
        let held = created.elapsed().as_secs_f64();
        if self.args.keep_snapshot {
            let kept = snapshot.keep();
            log.info(format_args!(
                "kept snapshot {kept} (--keep-snapshot){peak_text}"
            ));
        } else {
            log.info(format_args!("removing snapshot {name}"));
            match (&result, snapshot.remove()) {
                (_, Ok(())) => log.info(format_args!(
                    "removed snapshot {name} after {held:.1} s{peak_text}"
                )),
                (Ok(_), Err(e)) => {
                    return Err(anyhow::Error::from(e).context(format!(
                        "the dump finished, but snapshot {name} could not be removed; remove it (blockdiff-lvm cleanup) before it fills up"
                    )));
                }
                (Err(_), Err(e)) => {
                    log.error(format_args!("snapshot {name} could not be removed: {e}"));
                }
            }
        }
        result.map(|(value, _)| value)
    }
}

fn record_freeze(facts: &mut RunFacts, report: &FreezeReport) {
    facts.insert(
        "freeze_window_seconds".into(),
        format!("{:.3}", report.window.as_secs_f64()),
    );
    if !report.quiescers.is_empty() {
        facts.insert("quiesced".into(), report.quiescers.join(","));
    }
    for (k, v) in &report.metadata {
        facts.insert(k.clone(), v.clone());
    }
}

/// Notices to the log; stops the dump on a signal, an overflowed snapshot
/// or a freeze window that ran out.
pub(crate) struct RunProgress<'a> {
    log: &'a RunLog,
    signals: Option<&'a TerminationSignals>,
    monitor: Option<&'a FillMonitor>,
    window: Option<&'a FreezeWindow>,
}

impl<'a> RunProgress<'a> {
    pub(crate) fn new(
        log: &'a RunLog,
        signals: Option<&'a TerminationSignals>,
        monitor: Option<&'a FillMonitor>,
        window: Option<&'a FreezeWindow>,
    ) -> Self {
        RunProgress {
            log,
            signals,
            monitor,
            window,
        }
    }
}

impl Progress for RunProgress<'_> {
    fn notice(&mut self, notice: Notice) {
        self.log.info(format_args!("notice: {notice}"));
    }

    fn should_stop(&mut self) -> Option<String> {
        if let Some(signal) = self.signals.and_then(TerminationSignals::received) {
            return Some(format!("interrupted by {}", quiesce::signal_name(signal)));
        }
        if let Some(w) = self.window
            && (w.is_abandoned() || w.remaining().is_zero())
        {
            return Some(
                "the freeze window limit passed before the dump finished (raise --freeze-limit, or back up a snapshot)".into(),
            );
        }
        let m = self.monitor?;
        m.overflow_error().map(|e| e.to_string())
    }

    fn before_commit(&mut self) -> Option<String> {
        if let Some(reason) = self.should_stop() {
            return Some(reason);
        }
        // A last look at the snapshot: it must not have overflowed while
        // the last blocks were read.
        let m = self.monitor?;
        match m.check_now() {
            Ok(_) => m.overflow_error().map(|e| e.to_string()),
            Err(e) => Some(format!("cannot check the snapshot's fill: {e}")),
        }
    }

    fn at_step(&mut self, step: &'static str) {
        crate::step_hook::reached(step);
    }
}
