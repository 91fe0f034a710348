//! `blockdiff-backup`: numbered, crash-safe generations of a file or device.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use blockdiff_core::{
    BackupOptions, BackupReport, BlockSize, ChainPeriod, DumpOptions, DumpSource, GenerationStore,
    Notice, Progress, backup,
};
use blockdiff_tools::{
    FormatArgs, StderrProgress, UsageError, local_today, parse_block_size, parse_lv,
    parse_snapshot_size, run_main, timestamp,
};
use clap::Parser;
use lvm_snap::{
    FillEvent, FillMonitor, FillMonitorOptions, LvPath, Lvm, Snapshot, SnapshotOptions,
    SnapshotSize,
};
use quiesce::{FreezeReport, FreezeWindow, Logger, QuiesceSpec, QuiesceStack, TerminationSignals};

const EXAMPLES: &str = "\
Examples:
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 1: every block
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 2: changed blocks only
  blockdiff-restore /tmp/restored.img --from /var/backup/db --generation 2
  blockdiff-backup /var/backup/db --lvm vg0/mysql   # snapshot vg0/mysql, dump it, remove it
  blockdiff-backup --chain monthly /var/backup/db /srv/mysql.img   # to /var/backup/db-YYYYMM

With --lvm, the volume is read from a snapshot taken for this run (tagged
'blockdiff', named VG/LV-bd-PID-TIME-N) and removed afterwards, on success,
failure, SIGINT, SIGTERM or panic. Its fill is polled while it is read: a
warning at --fill-warn, and if it overflows (LVM invalidates it) the
generation is not committed. A run killed with SIGKILL cannot clean up:
`blockdiff-lvm cleanup` removes what such runs left.

--quiesce SPEC (repeatable) holds services still while the snapshot is
taken: frozen in the order given, thawed in reverse, always (on errors,
signals and panics too), and never longer than --freeze-limit. With a plain
file as SOURCE there is no snapshot, so they stay quiesced for the whole
dump. SPEC is one of:
  mysql[:defaults-file=F,host=H,port=N,socket=S,user=U,lock-wait-timeout=SECS]
                         FLUSH TABLES WITH READ LOCK on one connection, after
                         a sync; the binary-log position is recorded. The
                         password comes from ~/.my.cnf, the defaults file or
                         MYSQL_PWD, never from the command line.
  cron[:stop=CMD,start=CMD,wait=SECS]   wait for running jobs, stop cron, start it after
  service:NAME[,NAME...]                stop services, start them after (reverse order)
  openvz[:mode=checkpoint|suspend]      vzctl chkpnt/restore every running container
  cgroup:PATH                           the cgroup v2 freezer (containers, systemd scopes)
  fsfreeze:MOUNTPOINT                   FIFREEZE/FITHAW a file system
  hook:STAGE=COMMAND                    sh -c COMMAND at pre-freeze, post-freeze,
                                        pre-thaw or post-thaw
Example:
  blockdiff-backup /var/backup/db --lvm vg0/mysql --quiesce mysql --quiesce cron

Each generation's facts (source, snapshot and its peak fill, freeze window,
binary-log position) go to NAME.N.meta.json.

Files, beside NAME:
  NAME.ver       the last committed generation (decimal text)
  NAME.N         generation N's diff: v2 (checked, zstd, indexed) or legacy
  NAME.N.digest  generation N's v2 digest: one BLAKE3 (or MD5) hash per block
  NAME.N.md5     the digest of a legacy chain (and NAME.N.gz with --gzip)
  NAME.lock      held while a backup runs; a second backup of NAME fails at once

A new chain is v2 unless --format legacy (or -z) says otherwise; an existing
chain keeps its format, block size and hash, so backups written by the
original blockdiff_backup continue in its format.

A generation is committed only once its files are fsynced and renamed into
place and NAME.ver is replaced atomically: a run that fails or is killed
leaves every committed generation intact, and the next run succeeds.
Legacy chains are byte-compatible with the original blockdiff_backup.

Exit status: 0 success, 1 failure, 2 usage error.";

/// Back up a file or block device as the next generation of NAME, writing
/// only the blocks that changed since the last one.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-backup", version, after_help = EXAMPLES)]
struct Args {
    /// Path prefix of the backup's files, e.g. /var/backup/db
    name: PathBuf,

    /// Start a new chain every period: back up to NAME-YYYYMM (monthly),
    /// NAME-YYYYWww (ISO week) or NAME-YYYYMMDD (daily), by the local date;
    /// the first backup of a period is full. `blockdiff-prune NAME` removes
    /// old ones.
    #[arg(long, value_name = "PERIOD", value_parser = parse_chain_period)]
    chain: Option<ChainPeriod>,

    /// File or block device to back up ('-' for standard input)
    #[arg(required_unless_present = "lvm", conflicts_with = "lvm")]
    source: Option<PathBuf>,

    /// Back up a logical volume through a snapshot of it: VG/LV or /dev/VG/LV
    #[arg(long, value_name = "VG/LV", value_parser = parse_lv)]
    lvm: Option<LvPath>,

    /// Size of a thick snapshot: percent of the volume (15%) or a size
    /// (512M, 2G). Thin volumes take thin snapshots, which need none.
    #[arg(long, value_name = "SIZE", default_value = "15%", value_parser = parse_snapshot_size, requires = "lvm")]
    snapshot_size: SnapshotSize,

    /// Warn when the snapshot is this full (percent)
    #[arg(long, value_name = "PERCENT", default_value_t = 80.0, requires = "lvm")]
    fill_warn: f64,

    /// Seconds between two polls of the snapshot's fill
    #[arg(long, value_name = "SECONDS", default_value_t = 2.0, requires = "lvm")]
    fill_interval: f64,

    /// Quiesce a service while the snapshot is taken (repeatable; see SPEC
    /// below)
    #[arg(long = "quiesce", value_name = "SPEC", value_parser = parse_quiesce_spec)]
    quiesce: Vec<String>,

    /// Longest time services may stay quiesced, in seconds: past it the
    /// snapshot is abandoned, everything is thawed and the run fails
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    freeze_limit: f64,

    /// Leave the snapshot in place after the run (for debugging; remove it
    /// with lvremove or `blockdiff-lvm cleanup`)
    #[arg(long, requires = "lvm")]
    keep_snapshot: bool,

    /// Block size of a new chain: bytes, or with a unit (16k, 1M). Later
    /// generations keep the chain's block size.
    #[arg(short, long, env = "BLOCKSIZE", default_value = "16384", value_parser = parse_block_size)]
    block_size: BlockSize,

    #[command(flatten)]
    format: FormatArgs,

    /// Hash threads [default: one per core]
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,

    /// Print nothing on success
    #[arg(short, long)]
    quiet: bool,
}

fn parse_chain_period(s: &str) -> Result<ChainPeriod, String> {
    s.parse().map_err(|e: blockdiff_core::Error| e.to_string())
}

fn parse_quiesce_spec(s: &str) -> Result<String, String> {
    QuiesceSpec::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// Notices on stderr; stops the dump on a signal, an overflowed snapshot or
/// a freeze window that ran out.
struct RunProgress<'a> {
    out: StderrProgress,
    signals: Option<&'a TerminationSignals>,
    monitor: Option<&'a FillMonitor>,
    window: Option<&'a FreezeWindow>,
}

impl<'a> RunProgress<'a> {
    fn new(
        quiet: bool,
        signals: Option<&'a TerminationSignals>,
        monitor: Option<&'a FillMonitor>,
        window: Option<&'a FreezeWindow>,
    ) -> Self {
        RunProgress {
            out: StderrProgress::new("blockdiff-backup", quiet),
            signals,
            monitor,
            window,
        }
    }
}

impl Progress for RunProgress<'_> {
    fn notice(&mut self, notice: Notice) {
        self.out.notice(notice);
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
}

fn log(quiet: bool, message: std::fmt::Arguments<'_>) {
    if !quiet {
        eprintln!("blockdiff-backup: {} {message}", timestamp());
    }
}

fn main() -> ExitCode {
    run_main("blockdiff-backup", run)
}

/// The quiesce stack of `--quiesce`, if any.
fn quiesce_stack(
    args: &Args,
    signals: Option<&TerminationSignals>,
) -> anyhow::Result<Option<QuiesceStack>> {
    if args.quiesce.is_empty() {
        return Ok(None);
    }
    if !(args.freeze_limit > 0.0 && args.freeze_limit <= 86400.0) {
        return Err(UsageError(format!(
            "--freeze-limit must be between 0 and 86400 seconds, not {}",
            args.freeze_limit
        ))
        .into());
    }
    let quiet = args.quiet;
    let logger = Logger::new(move |line| log(quiet, format_args!("{line}")));
    let mut stack = QuiesceStack::from_spec_strings(&args.quiesce, logger)?;
    stack.set_freeze_limit(Duration::from_secs_f64(args.freeze_limit));
    if let Some(signals) = signals {
        stack.stop_on_signals(signals);
    }
    Ok(Some(stack))
}

fn record_freeze(meta: &mut BTreeMap<String, String>, report: &FreezeReport) {
    meta.insert(
        "freeze_window_seconds".into(),
        format!("{:.3}", report.window.as_secs_f64()),
    );
    if !report.quiescers.is_empty() {
        meta.insert("quiesced".into(), report.quiescers.join(","));
    }
    for (k, v) in &report.metadata {
        meta.insert(k.clone(), v.clone());
    }
}

fn run(mut args: Args) -> anyhow::Result<()> {
    if let Some(period) = args.chain {
        let base = args.name.clone();
        args.name = period.chain_name(&base, local_today()?);
        log(
            args.quiet,
            format_args!(
                "chain {} (--chain {period} of {})",
                args.name.display(),
                base.display()
            ),
        );
    }
    let store = GenerationStore::new(&args.name);
    // A snapshot must be removed and services thawed however the run ends,
    // so then signals stop the run instead of killing it. (A plain source
    // needs no cleanup: a killed run commits nothing, and the default
    // action ends a run blocked on a pipe at once.)
    let signals = if args.lvm.is_some() || !args.quiesce.is_empty() {
        Some(TerminationSignals::catch()?)
    } else {
        None
    };
    let mut stack = quiesce_stack(&args, signals.as_ref())?;
    let mut meta = BTreeMap::new();
    meta.insert("started".to_owned(), timestamp());
    let format = args.format.requested()?;
    let options = BackupOptions {
        dump: DumpOptions {
            block_size: args.block_size,
            hash: args.format.hash_for(format),
            threads: args.threads,
            ..DumpOptions::default()
        },
        format,
    };
    let report = match (&args.lvm, &args.source) {
        (Some(origin), _) => {
            meta.insert("source".into(), format!("lvm:{origin}"));
            backup_lvm(
                &args,
                origin,
                &store,
                &options,
                signals.as_ref(),
                stack.as_mut(),
                &mut meta,
            )?
        }
        (None, Some(path)) => {
            let source: DumpSource<Box<dyn Read + Send>> = if path.as_os_str() == "-" {
                DumpSource::stream(io::stdin(), "standard input").boxed()
            } else {
                DumpSource::open(path)?.boxed()
            };
            meta.insert("source".into(), path.display().to_string());
            let failed = || {
                format!(
                    "backup of {} to {} failed",
                    path.display(),
                    args.name.display()
                )
            };
            let quiet = args.quiet;
            let signals = signals.as_ref();
            let progress = |window| RunProgress::new(quiet, signals, None, window);
            match stack.as_mut() {
                None => {
                    backup(&store, source, &options, &mut progress(None)).with_context(failed)?
                }
                Some(stack) => {
                    log(
                        args.quiet,
                        format_args!(
                            "no snapshot: quiescing ({}) for the whole dump (at most {} s)",
                            args.quiesce.join(", "),
                            args.freeze_limit
                        ),
                    );
                    let frozen = stack
                        .run_frozen(|window| {
                            let mut progress = RunProgress::new(quiet, signals, None, Some(window));
                            backup(&store, source, &options, &mut progress)
                        })
                        .with_context(failed)?;
                    record_freeze(&mut meta, &frozen.report);
                    frozen.value.with_context(failed)?
                }
            }
        }
        (None, None) => unreachable!("clap requires a source or --lvm"),
    };
    meta.insert("generation".into(), report.generation.to_string());
    meta.insert("finished".into(), timestamp());
    if let Err(e) = store.write_metadata(report.generation, &meta) {
        // The generation is committed and complete; only its facts are lost.
        eprintln!("blockdiff-backup: warning: {e}");
    }
    if !args.quiet {
        let d = report.dump;
        eprintln!(
            "blockdiff-backup: generation {} of {} ({}, {}): {} of {} blocks changed ({} of {} bytes, {} zero blocks), diff is {} bytes",
            report.generation,
            args.name.display(),
            report.format,
            d.hash,
            d.changed_blocks,
            d.blocks,
            d.changed_bytes,
            d.source_bytes,
            d.zero_blocks,
            report.diff_bytes
        );
        eprintln!("blockdiff-backup: backup completed successfully");
    }
    Ok(())
}

/// Snapshot `origin`, back the snapshot up, remove it.
fn backup_lvm(
    args: &Args,
    origin: &LvPath,
    store: &GenerationStore,
    options: &BackupOptions,
    signals: Option<&TerminationSignals>,
    stack: Option<&mut QuiesceStack>,
    meta: &mut BTreeMap<String, String>,
) -> anyhow::Result<BackupReport> {
    if !(args.fill_interval > 0.0 && args.fill_interval <= 3600.0) {
        return Err(blockdiff_tools::UsageError(format!(
            "--fill-interval must be between 0 and 3600 seconds, not {}",
            args.fill_interval
        ))
        .into());
    }
    let quiet = args.quiet;
    let lvm = Lvm::local();
    let snapshot_options = SnapshotOptions {
        size: args.snapshot_size,
        ..SnapshotOptions::default()
    };
    log(quiet, format_args!("creating snapshot of {origin}"));
    let snapshot_failed = || format!("cannot snapshot {origin}");
    let snapshot = match stack {
        None => Snapshot::create(&lvm, origin, &snapshot_options).with_context(snapshot_failed)?,
        Some(stack) => {
            // Only the snapshot is taken while frozen. If the window runs
            // out, the late snapshot is dropped, which removes it.
            let frozen = stack
                .run_frozen(|_| Snapshot::create(&lvm, origin, &snapshot_options))
                .with_context(snapshot_failed)?;
            record_freeze(meta, &frozen.report);
            frozen.value.with_context(snapshot_failed)?
        }
    };
    let created = Instant::now();
    let kind = if snapshot.is_thin() { "thin" } else { "thick" };
    meta.insert("snapshot".into(), snapshot.path().to_string());
    meta.insert("snapshot_kind".into(), kind.into());
    log(
        quiet,
        format_args!("created {kind} snapshot {}", snapshot.path()),
    );
    let monitor_options = FillMonitorOptions {
        interval: Duration::from_secs_f64(args.fill_interval),
        warn_percent: args.fill_warn,
    };
    let name = snapshot.path().clone();
    let watched = name.clone();
    let monitor = FillMonitor::start(snapshot.watcher(), monitor_options, move |event| {
        // Warnings print even with --quiet: they need attention.
        match event {
            FillEvent::Warning {
                snapshot,
                percent,
                threshold,
            } => eprintln!(
                "blockdiff-backup: {} warning: snapshot {snapshot} is {percent:.1}% full (warning at {threshold}%); give it more space with --snapshot-size",
                timestamp()
            ),
            FillEvent::Invalid { snapshot } => eprintln!(
                "blockdiff-backup: {} error: snapshot {snapshot} overflowed; this generation will not be committed",
                timestamp()
            ),
            FillEvent::PollFailed { error } => eprintln!(
                "blockdiff-backup: {} warning: cannot read the fill of snapshot {watched}: {error}",
                timestamp()
            ),
        }
    });
    let result = monitor.map_err(anyhow::Error::from).and_then(|monitor| {
        let result = match signals.and_then(TerminationSignals::received) {
            Some(signal) => Err(anyhow::anyhow!(
                "interrupted by {}",
                quiesce::signal_name(signal)
            )),
            None => {
                let mut progress = RunProgress::new(quiet, signals, Some(&monitor), None);
                DumpSource::open(snapshot.device())
                    .and_then(|source| backup(store, source, options, &mut progress))
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
        meta.insert("snapshot_peak_fill_percent".into(), format!("{p:.1}"));
    }
    let held = created.elapsed().as_secs_f64();
    if args.keep_snapshot {
        let kept = snapshot.keep();
        log(
            quiet,
            format_args!("kept snapshot {kept} (--keep-snapshot){peak_text}"),
        );
    } else {
        log(quiet, format_args!("removing snapshot {name}"));
        let removed = snapshot.remove();
        match (&result, removed) {
            (_, Ok(())) => log(
                quiet,
                format_args!("removed snapshot {name} after {held:.1} s{peak_text}"),
            ),
            (Ok((report, _)), Err(e)) => {
                return Err(anyhow::Error::from(e).context(format!(
                    "generation {} is committed, but snapshot {name} could not be removed; remove it (blockdiff-lvm cleanup) before it fills up",
                    report.generation
                )));
            }
            (Err(_), Err(e)) => eprintln!(
                "blockdiff-backup: {} error: snapshot {name} could not be removed: {e}",
                timestamp()
            ),
        }
    }
    result
        .map(|(report, _)| report)
        .with_context(|| format!("backup of {origin} to {} failed", args.name.display()))
}
