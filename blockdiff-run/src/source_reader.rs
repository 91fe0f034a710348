//! [`SourceReader`]: reads a source consistently: quiescers, the snapshot
//! and its fill monitor, termination signals, and the cleanup of all of
//! them on every path.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blockdiff_core::{DumpSource, Notice, Progress};
use lvm_snap::{
    FillEvent, FillMonitor, FillMonitorOptions, LvPath, Lvm, Snapshot, SnapshotOptions, ThinPool,
    retained_snapshots,
};
use quiesce::{FreezeWindow, QuiesceStack, TerminationSignals};

use crate::thin_tracking::{ScanKind, TrackingRecord};
use crate::{
    ChainTracking, ConsistencyOptions, PoliteOptions, RunError, RunFacts, RunLog, TrackedRead,
    plan_tracked_read,
};

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

/// The dump step a [`SourceReader`] runs once the source is ready: the
/// source, what a thin pool says changed in it since the chain's tracking
/// base (if anything does), and the progress to report to.
pub type DumpStep<'s, T> = dyn FnOnce(
        DumpSource<Box<dyn Read + Send>>,
        Option<TrackedRead>,
        &mut dyn Progress,
    ) -> blockdiff_core::Result<T>
    + 's;

/// Reads a [`SourceSpec`] consistently: quiesces services, takes and
/// watches the snapshot, hands the source to a dump step, and undoes all
/// of it on every path (errors, SIGINT/SIGTERM/SIGHUP, panics).
///
/// The dump step is a local backup in `blockdiff-backup` and the stream
/// back to the backup host in `blockdiff-agent`.
pub struct SourceReader<'a> {
    args: &'a ConsistencyOptions,
    log: RunLog,
    lvm: Lvm,
    signals: Option<Arc<TerminationSignals>>,
    stack: Option<QuiesceStack>,
    polite: Option<PoliteOptions>,
    step_hook: fn(&str),
    tracking: Option<ChainTracking>,
}

impl<'a> SourceReader<'a> {
    /// Checks the options and, when there is anything to undo (a snapshot,
    /// quiesced services), catches the termination signals so that they
    /// stop the run instead of killing it.
    pub fn new(
        spec: &SourceSpec,
        args: &'a ConsistencyOptions,
        log: RunLog,
    ) -> Result<Self, RunError> {
        args.check()?;
        // A plain source needs no cleanup: a killed run commits nothing,
        // and the default action ends a run blocked on a pipe at once.
        let signals = if matches!(spec, SourceSpec::Lvm(_)) || !args.quiesce.is_empty() {
            // Shared with the other runs of this process that read at the
            // same time (`--jobs`).
            Some(TerminationSignals::shared()?)
        } else {
            None
        };
        let stack = if args.quiesce.is_empty() {
            None
        } else {
            let mut stack = QuiesceStack::from_spec_strings(&args.quiesce, log.quiesce_logger())?;
            stack.set_freeze_limit(args.freeze_limit());
            if let Some(signals) = &signals {
                stack.stop_on_signals(signals);
            }
            Some(stack)
        };
        Ok(SourceReader {
            args,
            log,
            lvm: Lvm::local(),
            signals,
            stack,
            polite: None,
            step_hook: |_| {},
            tracking: None,
        })
    }

    /// Runs LVM through `lvm` instead of the local commands (tests record
    /// it).
    pub fn with_lvm(mut self, lvm: Lvm) -> Self {
        self.lvm = lvm;
        self
    }

    /// Calls `hook` with each step the dump and the commit reach (see
    /// [`Progress::at_step`]): the tools' test hook stops a run there.
    pub fn with_step_hook(mut self, hook: fn(&str)) -> Self {
        self.step_hook = hook;
        self
    }

    /// Tracks the changed blocks of a thin volume for the chain `chain`
    /// (unless [`TrackingOptions::enabled`](crate::TrackingOptions) is
    /// off): the snapshot is compared with the chain's base through the
    /// pool's metadata, and kept as the new base once the step succeeds.
    pub fn with_tracking(mut self, chain: ChainTracking) -> Self {
        self.tracking = Some(chain);
        self
    }

    /// Reads at the niceness and I/O priority of `polite`: set on this
    /// thread just before the dump starts its threads (which inherit
    /// them), so the snapshot and the quiescers run at normal priority and
    /// the freeze window is not stretched.
    pub fn with_priorities(mut self, polite: &PoliteOptions) -> Self {
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
            .as_deref()
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
    ) -> Result<T, RunError> {
        facts.source = Some(spec.to_string());
        let source: DumpSource<Box<dyn Read + Send>> = match spec {
            SourceSpec::Lvm(origin) => return self.read_lvm(origin, facts, step),
            SourceSpec::Stdin => DumpSource::stream(io::stdin(), "standard input").boxed(),
            SourceSpec::Path(path) => DumpSource::open(path)?.boxed(),
        };
        self.lower_priorities()?;
        let signals = self.signals.as_deref();
        let log = &self.log;
        let hook = self.step_hook;
        match self.stack.as_mut() {
            None => Ok(step(
                source,
                None,
                &mut RunProgress::new(log, signals, None, None).with_step_hook(hook),
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
                        None,
                        &mut RunProgress::new(log, signals, None, Some(window))
                            .with_step_hook(hook),
                    )
                })?;
                facts.record_freeze(&frozen.report);
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
    ) -> Result<T, RunError> {
        let log = self.log.clone();
        let lvm = self.lvm.clone();
        let hook = self.step_hook;
        let snapshot_options = SnapshotOptions {
            size: self.args.snapshot_size,
            ..SnapshotOptions::default()
        };
        log.info(format_args!("creating snapshot of {origin}"));
        let snapshot_failed = |e: RunError| RunError::Snapshot {
            origin: origin.to_string(),
            source: Box::new(e),
        };
        let snapshot = match self.stack.as_mut() {
            None => Snapshot::create(&lvm, origin, &snapshot_options)
                .map_err(|e| snapshot_failed(e.into()))?,
            Some(stack) => {
                // Only the snapshot is taken while frozen. If the window runs
                // out, the late snapshot is dropped, which removes it.
                let frozen = stack
                    .run_frozen(|_| Snapshot::create(&lvm, origin, &snapshot_options))
                    .map_err(|e| snapshot_failed(e.into()))?;
                facts.record_freeze(&frozen.report);
                frozen.value.map_err(|e| snapshot_failed(e.into()))?
            }
        };
        let created = Instant::now();
        let kind = if snapshot.is_thin() { "thin" } else { "thick" };
        facts.snapshot = Some(snapshot.path().to_string());
        facts.snapshot_kind = Some(kind.into());
        log.info(format_args!("created {kind} snapshot {}", snapshot.path()));
        let tracking = self.plan_tracking(&snapshot);
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
        let signals = self.signals.as_deref();
        let result = monitor.map_err(RunError::from).and_then(|monitor| {
            let result = match signals.and_then(TerminationSignals::received) {
                Some(signal) => Err(RunError::Interrupted {
                    signal: quiesce::signal_name(signal),
                }),
                None => {
                    let mut progress =
                        RunProgress::new(&log, signals, Some(&monitor), None).with_step_hook(hook);
                    let tracked = tracking.as_ref().and_then(|t| t.read.clone().ok());
                    self.lower_priorities()
                        .and_then(|()| DumpSource::open(snapshot.device()))
                        .and_then(|source| step(source.boxed(), tracked, &mut progress))
                        .map_err(RunError::from)
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
            facts.record_peak_fill(p);
        }
        let held = created.elapsed().as_secs_f64();
        if result.is_ok() && !self.args.tracking.enabled {
            // --no-track: the chain keeps no base.
            self.remove_bases(&origin.vg, None);
        }
        if let (Ok(_), Some(tracking)) = (&result, tracking) {
            self.retain(snapshot, tracking, facts, &peak_text);
        } else if self.args.keep_snapshot {
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
                    return Err(RunError::SnapshotNotRemoved {
                        snapshot: name.to_string(),
                        source: e,
                    });
                }
                (Err(_), Err(e)) => {
                    log.error(format_args!("snapshot {name} could not be removed: {e}"));
                }
            }
        }
        result.map(|(value, _)| value)
    }
}

/// A thin snapshot's part in changed-block tracking, planned once it is
/// taken.
struct SnapshotTracking {
    /// The snapshot's device id in its pool.
    thin_id: u64,
    /// The volume's size.
    size: u64,
    /// What changed since the chain's base, or why everything is read.
    read: Result<TrackedRead, String>,
    /// The base's tracked runs since its last check.
    runs_since_check: u32,
}

impl SourceReader<'_> {
    /// Plans how `snapshot` is read when this run tracks changes: `None`
    /// when it does not (not asked, a thick snapshot, `--keep-snapshot`, or
    /// the snapshot's id cannot be read, which is logged).
    fn plan_tracking(&self, snapshot: &Snapshot) -> Option<SnapshotTracking> {
        let chain = self.tracking.as_ref()?;
        let options = &self.args.tracking;
        let pool = snapshot.thin_pool()?;
        if !options.enabled || self.args.keep_snapshot {
            return None;
        }
        let log = &self.log;
        let identity = self
            .lvm
            .thin_id(snapshot.path())
            .and_then(|id| Ok((id, self.lvm.lv(snapshot.path())?.size)));
        let (thin_id, size) = match identity {
            Ok(found) => found,
            Err(e) => {
                log.warning(format_args!(
                    "tracking: cannot identify snapshot {} in its pool ({e}); reading the whole volume, and keeping no base",
                    snapshot.path()
                ));
                return None;
            }
        };
        match ThinPool::new(&self.lvm, pool.clone()).status() {
            Ok(status) if status.data_percent >= self.args.fill_warn => log.warning(format_args!(
                "thin pool {pool} is {:.1}% full (warning at {}%): each tracked chain's retained snapshot keeps the blocks written since its backup; --no-track frees it",
                status.data_percent, self.args.fill_warn
            )),
            Ok(_) => {}
            Err(e) => log.warning(format_args!("cannot read the fill of thin pool {pool}: {e}")),
        }
        let read = plan_tracked_read(&self.lvm, pool, snapshot, thin_id, size, chain, options);
        match &read {
            Ok(t) if t.verify => log.info(format_args!(
                "tracking: a full scan that checks the {} bytes the pool reports changed since generation {}",
                t.changes.bytes(),
                t.base_generation
            )),
            Ok(t) => log.info(format_args!(
                "tracking: reading only the {} bytes ({} ranges) the pool reports changed since generation {}",
                t.changes.bytes(),
                t.changes.ranges().len(),
                t.base_generation
            )),
            Err(reason) if chain.base.is_err() => {
                log.info(format_args!("tracking: reading the whole volume: {reason}"));
            }
            Err(reason) => log.warning(format_args!(
                "tracking: reading the whole volume: {reason}"
            )),
        }
        let runs_since_check = chain.base.as_ref().map_or(0, |b| b.runs_since_check);
        Some(SnapshotTracking {
            thin_id,
            size,
            read,
            runs_since_check,
        })
    }

    /// Keeps `snapshot`, whose backup was committed, as its chain's new
    /// tracking base, and removes the chain's older bases; records it in
    /// `facts`. A snapshot that cannot be kept is removed (the next run
    /// reads the whole volume), with a warning.
    fn retain(
        &self,
        snapshot: Snapshot,
        tracking: SnapshotTracking,
        facts: &mut RunFacts,
        peak_text: &str,
    ) {
        let log = &self.log;
        let Some(chain) = &self.tracking else {
            return;
        };
        let name = snapshot.path().clone();
        let scan = match &tracking.read {
            Ok(t) if t.verify => ScanKind::Verified,
            Ok(_) => ScanKind::Tracked,
            Err(_) => ScanKind::Full,
        };
        let mut record = TrackingRecord {
            scan,
            fallback: tracking.read.as_ref().err().cloned(),
            read_bytes: 0,
            untracked_changes: 0,
            retained: None,
            thin_id: tracking.thin_id,
            size: tracking.size,
            runs_since_check: match scan {
                ScanKind::Tracked => tracking.runs_since_check.saturating_add(1),
                _ => 0,
            },
        };
        match snapshot.retain(&chain.chain_tag) {
            Ok(kept) => {
                log.info(format_args!(
                    "kept snapshot {kept} as the base of the next run's tracking{peak_text}"
                ));
                record.retained = Some(kept);
            }
            Err(e) => log.warning(format_args!(
                "tracking: cannot keep snapshot {name} ({e}); removed it, and the next run reads the whole volume"
            )),
        }
        facts.tracking = Some(record);
        self.remove_bases(&name.vg, Some(&name));
    }

    /// Removes the chain's retained snapshots in `vg` but `keep`: older
    /// bases once a new one is kept, every one with `--no-track`.
    fn remove_bases(&self, vg: &str, keep: Option<&LvPath>) {
        let log = &self.log;
        let Some(chain) = &self.tracking else {
            return;
        };
        let bases = match retained_snapshots(&self.lvm, Some(vg), Some(&chain.chain_tag)) {
            Ok(found) => found,
            Err(e) => {
                log.warning(format_args!(
                    "tracking: cannot list the chain's retained snapshots: {e}"
                ));
                return;
            }
        };
        for old in bases.into_iter().filter(|lv| Some(&lv.path) != keep) {
            match self.lvm.remove(&old.path) {
                Ok(()) => log.info(format_args!(
                    "removed the chain's earlier tracking base {}",
                    old.path
                )),
                Err(e) => log.warning(format_args!(
                    "tracking: cannot remove the chain's earlier base {}: {e}",
                    old.path
                )),
            }
        }
    }
}

/// Notices to the log; stops the dump on a signal, an overflowed snapshot
/// or a freeze window that ran out.
pub(crate) struct RunProgress<'a> {
    log: &'a RunLog,
    signals: Option<&'a TerminationSignals>,
    monitor: Option<&'a FillMonitor>,
    window: Option<&'a FreezeWindow>,
    step_hook: fn(&str),
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
            step_hook: |_| {},
        }
    }

    /// Calls `hook` at each step.
    pub(crate) fn with_step_hook(mut self, hook: fn(&str)) -> Self {
        self.step_hook = hook;
        self
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
        (self.step_hook)(step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    use command_runner::{CommandOutput, RecordingRunner};

    /// LVM with a 100 MiB origin `vg0/data` and room for its snapshot;
    /// `lvremove` answers `remove`.
    fn lvm(remove: CommandOutput) -> Arc<RecordingRunner> {
        let r = Arc::new(RecordingRunner::strict());
        r.on("lvs", |command| {
            // The origin, or the snapshot the fill monitor polls.
            let line = command.to_string();
            let name = line.rsplit('/').next().unwrap_or("data").to_owned();
            let (attr, origin, pct) = if name.contains("-bd-") {
                ("swi-a-s---", "data", "1.50")
            } else {
                ("-wi-ao----", "", "")
            };
            CommandOutput::ok(format!(
                r#"{{"report": [{{"lv": [{{"lv_name":"{name}", "vg_name":"vg0", "lv_attr":"{attr}", "lv_size":"104857600", "origin":"{origin}", "pool_lv":"", "data_percent":"{pct}", "lv_tags":""}}]}}]}}"#
            ))
        });
        r.on("vgs", |_| {
            CommandOutput::ok(
                r#"{"report": [{"vg": [{"vg_name":"vg0", "vg_size":"1073741824", "vg_free":"1073741824", "vg_extent_size":"4194304"}]}]}"#,
            )
        });
        r.on("sync", |_| CommandOutput::ok(""));
        r.on("lvcreate", |_| CommandOutput::ok(""));
        r.reply("lvremove", remove);
        r
    }

    fn recording_log() -> (RunLog, Arc<Mutex<Vec<String>>>) {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        let log =
            RunLog::new(move |level, m| l.lock().unwrap().push(format!("{}{m}", level.label())));
        (log, lines)
    }

    fn commands(r: &RecordingRunner, verb: &str) -> Vec<String> {
        r.calls()
            .into_iter()
            .filter(|c| c.starts_with(verb))
            .collect()
    }

    /// One test, because a process catches the termination signals once at
    /// a time and every LV source catches them.
    #[test]
    fn an_lv_is_read_through_its_snapshot_which_is_removed_on_every_path() {
        let spec = SourceSpec::Lvm("vg0/data".parse().unwrap());

        // The snapshot's device cannot be opened here (there is no LVM):
        // the dump fails, the snapshot is removed, the facts name it.
        let runner = lvm(CommandOutput::ok(""));
        let options = ConsistencyOptions::default();
        let (log, lines) = recording_log();
        let mut reader = SourceReader::new(&spec, &options, log)
            .unwrap()
            .with_lvm(Lvm::with_runner(runner.clone()));
        let mut facts = RunFacts::default();
        let mut stepped = false;
        let e = reader
            .read::<()>(
                &spec,
                &mut facts,
                Box::new(|_, _, _| {
                    stepped = true;
                    Ok(())
                }),
            )
            .unwrap_err();
        assert!(!stepped, "the step ran without a source");
        let snapshot = facts.snapshot.clone().expect("the snapshot is recorded");
        assert!(snapshot.starts_with("vg0/data-bd-"), "{snapshot}");
        assert!(e.to_string().contains(&snapshot), "{e}");
        assert_eq!(facts.snapshot_kind.as_deref(), Some("thick"));
        assert_eq!(facts.source.as_deref(), Some("lvm:vg0/data"));
        assert_eq!(commands(&runner, "lvcreate").len(), 1);
        assert_eq!(
            commands(&runner, "lvremove"),
            [format!("lvremove -f -y {snapshot}")]
        );
        let lines = lines.lock().unwrap();
        assert_eq!(lines[0], "creating snapshot of vg0/data");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("removed snapshot {snapshot} after "))),
            "{lines:?}"
        );
        drop(lines);
        drop(reader);

        // --keep-snapshot: left in place.
        let runner = lvm(CommandOutput::ok(""));
        let options = ConsistencyOptions {
            keep_snapshot: true,
            ..ConsistencyOptions::default()
        };
        let (log, lines) = recording_log();
        let mut reader = SourceReader::new(&spec, &options, log)
            .unwrap()
            .with_lvm(Lvm::with_runner(runner.clone()));
        reader
            .read::<()>(&spec, &mut RunFacts::default(), Box::new(|_, _, _| Ok(())))
            .unwrap_err();
        assert!(commands(&runner, "lvremove").is_empty());
        assert!(
            lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("kept snapshot"))
        );
        drop(reader);

        // A snapshot that cannot be removed after a failed dump is logged;
        // the dump's own error is the one returned.
        let runner = lvm(CommandOutput::failed(5, "  Logical volume in use."));
        let options = ConsistencyOptions::default();
        let (log, lines) = recording_log();
        let mut reader = SourceReader::new(&spec, &options, log)
            .unwrap()
            .with_lvm(Lvm::with_runner(runner.clone()));
        let e = reader
            .read::<()>(&spec, &mut RunFacts::default(), Box::new(|_, _, _| Ok(())))
            .unwrap_err();
        assert!(matches!(e, RunError::Core(_)), "{e}");
        assert!(
            lines
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.starts_with("error: snapshot ") && l.contains("could not be removed")),
            "{:?}",
            lines.lock().unwrap()
        );
        drop(reader);

        // A snapshot LVM refuses to create is named.
        let runner = lvm(CommandOutput::ok(""));
        runner.reply(
            "lvcreate",
            CommandOutput::failed(5, "  Insufficient free space"),
        );
        let (log, _) = recording_log();
        let mut reader = SourceReader::new(&spec, &options, log)
            .unwrap()
            .with_lvm(Lvm::with_runner(runner.clone()));
        let e = reader
            .read::<()>(&spec, &mut RunFacts::default(), Box::new(|_, _, _| Ok(())))
            .unwrap_err();
        assert!(
            matches!(&e, RunError::Snapshot { origin, .. } if origin == "vg0/data"),
            "{e}"
        );
        assert!(commands(&runner, "lvremove").is_empty());
    }

    #[test]
    fn a_plain_file_is_read_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, [5u8; 1000]).unwrap();
        let spec = SourceSpec::Path(path.clone());
        let options = ConsistencyOptions::default();
        let (log, lines) = recording_log();
        let mut reader = SourceReader::new(&spec, &options, log).unwrap();
        let mut facts = RunFacts::default();
        let size = reader
            .read(
                &spec,
                &mut facts,
                Box::new(|source, _, _| Ok(source.size())),
            )
            .unwrap();
        assert_eq!(size, Some(1000));
        assert_eq!(facts.source, Some(path.display().to_string()));
        assert_eq!(facts.snapshot, None);
        assert!(lines.lock().unwrap().is_empty());
        assert_eq!(reader.interrupted_by(), None);
    }
}
