//! `blockdiff-backup`: numbered, crash-safe generations of a file or device.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use blockdiff_core::{
    BackupOptions, BackupReport, BlockSize, DumpOptions, DumpSource, GenerationStore, Notice,
    Progress, backup,
};
use blockdiff_tools::{
    FormatArgs, StderrProgress, StopSignals, parse_block_size, run_main, timestamp,
};
use clap::Parser;
use lvm_snap::{
    FillEvent, FillMonitor, FillMonitorOptions, LvPath, Lvm, Snapshot, SnapshotOptions,
    SnapshotSize,
};

const EXAMPLES: &str = "\
Examples:
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 1: every block
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 2: changed blocks only
  blockdiff-restore /tmp/restored.img --from /var/backup/db --generation 2
  blockdiff-backup /var/backup/db --lvm vg0/mysql   # snapshot vg0/mysql, dump it, remove it

With --lvm, the volume is read from a snapshot taken for this run (tagged
'blockdiff', named VG/LV-bd-PID-TIME-N) and removed afterwards, on success,
failure, SIGINT, SIGTERM or panic. Its fill is polled while it is read: a
warning at --fill-warn, and if it overflows (LVM invalidates it) the
generation is not committed. A run killed with SIGKILL cannot clean up:
`blockdiff-lvm cleanup` removes what such runs left.

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

fn parse_lv(s: &str) -> Result<LvPath, String> {
    s.parse().map_err(|e: lvm_snap::Error| e.to_string())
}

fn parse_snapshot_size(s: &str) -> Result<SnapshotSize, String> {
    s.parse().map_err(|e: lvm_snap::Error| e.to_string())
}

/// Notices on stderr; stops the dump on a signal or an overflowed snapshot.
struct RunProgress<'a> {
    out: StderrProgress,
    signals: Option<&'a StopSignals>,
    monitor: Option<&'a FillMonitor>,
}

impl Progress for RunProgress<'_> {
    fn notice(&mut self, notice: Notice) {
        self.out.notice(notice);
    }

    fn should_stop(&mut self) -> Option<String> {
        if let Some(reason) = self.signals.and_then(StopSignals::stop_reason) {
            return Some(reason);
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

fn run(args: Args) -> anyhow::Result<()> {
    let store = GenerationStore::new(&args.name);
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
            // A snapshot must be removed however the run ends, so signals
            // stop the run instead of killing it. (A plain source needs no
            // cleanup: a killed run commits nothing, and keeping the
            // default action ends a run blocked on a pipe at once.)
            let signals = StopSignals::install().context("cannot install signal handlers")?;
            backup_lvm(&args, origin, &store, &options, &signals)?
        }
        (None, Some(path)) => {
            let source: DumpSource<Box<dyn Read + Send>> = if path.as_os_str() == "-" {
                DumpSource::stream(io::stdin(), "standard input").boxed()
            } else {
                DumpSource::open(path)?.boxed()
            };
            let mut progress = RunProgress {
                out: StderrProgress::new("blockdiff-backup", args.quiet),
                signals: None,
                monitor: None,
            };
            backup(&store, source, &options, &mut progress).with_context(|| {
                format!(
                    "backup of {} to {} failed",
                    path.display(),
                    args.name.display()
                )
            })?
        }
        (None, None) => unreachable!("clap requires a source or --lvm"),
    };
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
    signals: &StopSignals,
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
    let snapshot = Snapshot::create(&lvm, origin, &snapshot_options)
        .with_context(|| format!("cannot snapshot {origin}"))?;
    let created = Instant::now();
    let kind = if snapshot.is_thin() { "thin" } else { "thick" };
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
        let result = match signals.stop_reason() {
            Some(reason) => Err(anyhow::anyhow!("{reason}")),
            None => {
                let mut progress = RunProgress {
                    out: StderrProgress::new("blockdiff-backup", quiet),
                    signals: Some(signals),
                    monitor: Some(&monitor),
                };
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
