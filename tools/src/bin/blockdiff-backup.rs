//! `blockdiff-backup`: numbered, crash-safe generations of a file or device.

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use blockdiff_core::{
    BackupOptions, BackupReport, BlockSize, DumpOptions, GenerationStore, backup,
};
use blockdiff_tools::{
    ConsistencyArgs, FormatArgs, LogLevel, RunFacts, RunLog, RunSummary, SourceReader, SourceSpec,
    TerminalProgress, VolumePattern, back_up_each, each_chain_name, error_line, parse_block_size,
    parse_lv, run_main,
};
use clap::{ArgGroup, Parser};
use lvm_snap::{LvPath, Lvm};

const TOOL: &str = "blockdiff-backup";

const EXAMPLES: &str = "\
Examples:
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 1: every block
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 2: changed blocks only
  blockdiff-restore /tmp/restored.img --from /var/backup/db --generation 2
  blockdiff-backup /var/backup/db --lvm vg0/mysql   # snapshot vg0/mysql, dump it, remove it
  blockdiff-backup /var/backup/vms --each 'vg0/domu-*'   # one chain per LV: /var/backup/vms/domu-web, …
  blockdiff-backup /var/backup/db /srv/mysql.img -q --log /var/log/blockdiff.log --json

On a terminal, a progress bar (bytes, rate, ETA) shows while the source is
read; --no-progress or --quiet hides it, and there is none when stderr is
not a terminal (cron, a pipe): the timestamped log lines are then all
there is. --log FILE appends every log line (all levels, --quiet or not)
and the final error line to FILE. --json prints one JSON object on stdout
at the end, also when the run failed (ok false, with the error): generation,
name, source, bytes_read, blocks, blocks_changed, zero_blocks,
bytes_changed, bytes_written (the diff on disk), compression_ratio,
duration_seconds, freeze_window_seconds, snapshot_peak_fill_percent, hash,
format, started, finished.

--each VG/PATTERN backs up, one after another, every LV of VG whose name
matches PATTERN (* and ?), each through its own snapshot, to the chain
NAME/LVNAME (NAME is a directory, created if missing). Snapshots and thin
pools are skipped. A failing volume is logged and the next one goes on;
the exit status is 1 if any failed, and the last line names them. With
--json, an array of one object per volume.

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
// "lvm": a snapshot is taken (--lvm or --each), as the snapshot options
// require.
#[command(group(ArgGroup::new("lvm").args(["lvm_volume", "each"])))]
struct Args {
    /// Path prefix of the backup's files, e.g. /var/backup/db (with
    /// --each, the directory of the chains)
    name: PathBuf,

    /// File or block device to back up ('-' for standard input)
    #[arg(required_unless_present = "lvm", conflicts_with = "lvm")]
    source: Option<PathBuf>,

    /// Back up a logical volume through a snapshot of it: VG/LV or /dev/VG/LV
    #[arg(id = "lvm_volume", long = "lvm", value_name = "VG/LV", value_parser = parse_lv)]
    lvm: Option<LvPath>,

    /// Back up every LV of VG whose name matches PATTERN (* and ?), one
    /// after another, each to the chain NAME/LVNAME
    #[arg(long, value_name = "VG/PATTERN")]
    each: Option<String>,

    #[command(flatten)]
    consistency: ConsistencyArgs,

    /// Block size of a new chain: bytes, or with a unit (16k, 1M). Later
    /// generations keep the chain's block size.
    #[arg(short, long, env = "BLOCKSIZE", default_value = "16384", value_parser = parse_block_size)]
    block_size: BlockSize,

    #[command(flatten)]
    format: FormatArgs,

    /// Hash threads [default: one per core]
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,

    /// Print nothing on success (and no progress bar)
    #[arg(short, long)]
    quiet: bool,

    /// No progress bar, even on a terminal
    #[arg(long)]
    no_progress: bool,

    /// Also append every log line, and the final error, to FILE
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,

    /// Print a JSON summary of the run on stdout at the end
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    run_main(TOOL, run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let bars = TerminalProgress::stderr(!args.quiet && !args.no_progress);
    let mut log = RunLog::stderr(TOOL, args.quiet).around_bar(&bars);
    if let Some(path) = &args.log {
        log = log.with_file(path)?;
    }
    let result = match &args.each {
        Some(pattern) => run_each(&args, pattern, &log, &bars),
        None => run_one(&args, &log, &bars),
    };
    if let Err(e) = &result {
        // run_main prints it on stderr; the log file gets it too.
        log.to_file_only(LogLevel::Error, format_args!("{}", error_line(e)));
    }
    result
}

fn run_one(args: &Args, log: &RunLog, bars: &TerminalProgress) -> anyhow::Result<()> {
    let spec = match (&args.lvm, &args.source) {
        (Some(origin), _) => SourceSpec::Lvm(origin.clone()),
        (None, Some(path)) if path.as_os_str() == "-" => SourceSpec::Stdin,
        (None, Some(path)) => SourceSpec::Path(path.clone()),
        (None, None) => unreachable!("clap requires a source, --lvm or --each"),
    };
    let clock = RunSummary::start(&args.name, &spec);
    let started = clock.started().to_owned();
    let result = back_up_one(args, &args.name, &spec, log, bars, started, &mut None);
    if args.json {
        let summary = match &result {
            Ok((report, facts)) => clock.succeeded(report, facts),
            Err(e) => clock.failed(e),
        };
        println!("{}", summary.to_json());
    }
    result.map(drop)
}

/// `--each`: every matching LV to its own chain under NAME.
fn run_each(
    args: &Args,
    pattern: &str,
    log: &RunLog,
    bars: &TerminalProgress,
) -> anyhow::Result<()> {
    let pattern = VolumePattern::parse(pattern)?;
    let selection = pattern.select_from(&Lvm::local())?;
    for (lv, why) in &selection.skipped {
        log.info(format_args!("skipping {lv}: {why}"));
    }
    if selection.volumes.is_empty() {
        anyhow::bail!("no logical volume to back up matches {pattern}");
    }
    std::fs::create_dir_all(&args.name)
        .with_context(|| format!("cannot create directory {}", args.name.display()))?;
    let (summaries, result) = back_up_each(&selection.volumes, log, |lv| {
        let name = chain_name(args, lv);
        let spec = SourceSpec::Lvm(lv.clone());
        log.info(format_args!("backing up {lv} to {}", name.display()));
        let clock = RunSummary::start(&name, &spec);
        let started = clock.started().to_owned();
        let mut interrupted = None;
        let summary = match back_up_one(args, &name, &spec, log, bars, started, &mut interrupted) {
            Ok((report, facts)) => clock.succeeded(&report, &facts),
            Err(e) => clock.failed(&e),
        };
        match interrupted {
            Some(_) => ControlFlow::Break(summary),
            None => ControlFlow::Continue(summary),
        }
    });
    if args.json {
        let all: Vec<_> = summaries.iter().map(RunSummary::to_json).collect();
        println!("{}", serde_json::Value::Array(all));
    }
    result
}

/// The chain of `lv` in an `--each` run.
fn chain_name(args: &Args, lv: &LvPath) -> PathBuf {
    each_chain_name(&args.name, lv)
}

/// Backs `spec` up as the next generation of `name`; `interrupted` is set
/// when a termination signal stopped it.
fn back_up_one(
    args: &Args,
    name: &Path,
    spec: &SourceSpec,
    log: &RunLog,
    bars: &TerminalProgress,
    started: String,
    interrupted: &mut Option<&'static str>,
) -> anyhow::Result<(BackupReport, RunFacts)> {
    let store = GenerationStore::new(name);
    let mut reader = SourceReader::new(spec, &args.consistency, log.clone())?;
    let mut facts = RunFacts::new();
    facts.insert("started".to_owned(), started);
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
    let report = reader.read(
        spec,
        &mut facts,
        Box::new(|source, progress| {
            let label = source.name().display().to_string();
            let mut progress = bars.wrap(progress, source.size(), &label);
            backup(&store, source, &options, &mut progress)
        }),
    );
    *interrupted = reader.interrupted_by();
    let report =
        report.with_context(|| format!("backup of {spec} to {} failed", name.display()))?;
    facts.insert("generation".into(), report.generation.to_string());
    facts.insert("finished".into(), blockdiff_tools::timestamp());
    if let Err(e) = store.write_metadata(report.generation, &facts) {
        // The generation is committed and complete; only its facts are lost.
        log.warning(format_args!("{e}"));
    }
    let d = report.dump;
    log.info(format_args!(
        "generation {} of {} ({}, {}): {} of {} blocks changed ({} of {} bytes, {} zero blocks), diff is {} bytes",
        report.generation,
        name.display(),
        report.format,
        d.hash,
        d.changed_blocks,
        d.blocks,
        d.changed_bytes,
        d.source_bytes,
        d.zero_blocks,
        report.diff_bytes
    ));
    log.info(format_args!("backup completed successfully"));
    Ok((report, facts))
}
