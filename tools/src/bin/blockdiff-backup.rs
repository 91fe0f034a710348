//! `blockdiff-backup`: numbered, crash-safe generations of a file or device.

// The doc comments of the argument structs are clap's help texts, written
// for a terminal (`[USER@]HOST:PATH`), not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};

use anyhow::Context;
use blockdiff_core::{BlockSize, ChainPeriod};
use blockdiff_run::remote::{self, RemoteSource};
use blockdiff_run::{
    BackupRun, BackupRunOptions, BackupSource, LogLevel, NoDisplay, RunSummary, SourceSpec,
    back_up_each, each_chain_name, error_line, groups_to_serialize, local_today, parse_source_list,
};
use blockdiff_storage::{ChainLocation, LockOptions};
use blockdiff_tools::{
    ConsistencyArgs, FormatArgs, KeyArgs, PoliteArgs, RemoteArgs, StorageArgs, TerminalProgress,
    UsageError, parse_block_size, parse_lv, reached_step, run_main, stderr_log,
};
use clap::{ArgGroup, Parser};
use lvm_snap::{LvPath, Lvm, VolumePattern};

const TOOL: &str = "blockdiff-backup";

const EXAMPLES: &str = "\
Examples:
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 1: every block
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 2: changed blocks only
  blockdiff-restore /tmp/restored.img --from /var/backup/db --generation 2
  blockdiff-backup /var/backup/db --lvm vg0/mysql   # snapshot vg0/mysql, dump it, remove it
  blockdiff-backup --chain monthly /var/backup/db /srv/mysql.img   # to /var/backup/db-YYYYMM
  blockdiff-backup /var/backup/web root@web1:/dev/vg0/www          # over ssh, nothing installed there
  blockdiff-backup /var/backup/db --lvm root@db1:vg0/mysql --quiesce mysql --max-rate 60M --ionice idle
  blockdiff-backup /var/backup/vms --each 'vg0/domu-*'   # one chain per LV: /var/backup/vms/domu-web, …
  blockdiff-backup s3://backups/web1/www root@web1:/dev/vg0/www   # into a bucket (see below)
  blockdiff-backup /var/backup/db /srv/mysql.img -q --log /var/log/blockdiff.log --json

On a terminal, a progress bar (bytes, rate, ETA) shows while the source is
read; --no-progress or --quiet hides it, and there is none when stderr is
not a terminal (cron, a pipe): the timestamped log lines are then all
there is. --log FILE appends every log line (all levels, --quiet or not)
and the final error line to FILE. --json prints one JSON object on stdout
at the end, also when the run failed (ok false, with the error): generation,
name, source, bytes_read, source_bytes, blocks, blocks_changed, zero_blocks,
bytes_changed, bytes_written (the diff on disk), compression_ratio,
duration_seconds, freeze_window_seconds, snapshot_peak_fill_percent,
tracking, hash, format, started, finished.

--each VG/PATTERN backs up, one after another, every LV of VG whose name
matches PATTERN (* and ?), each through its own snapshot, to the chain
NAME/LVNAME (NAME is a directory, created if missing). Snapshots and thin
pools are skipped. A failing volume is logged and the next one goes on;
the exit status is 1 if any failed, and the last line names them. With
--json, an array of one object per volume. --jobs N backs up N volumes at
a time (thick volumes whose snapshots would not all fit in their VG's free
space still go one at a time).

--sources FILE (or - for standard input) backs up the chains of a list,
one per line, to NAME/NAME; a line is NAME SOURCE (SOURCE as above: a
file, a device, [USER@]HOST:PATH; the rest of the line, spaces included)
or NAME --lvm [HOST:]VG/LV. Blank lines and # comments are skipped; a bad
line stops the run before anything is read. Failures, --json and the exit
status are as with --each; with --jobs N, the jobs running on one host at
once share its --max-rate, and two volumes of one remote VG are never
snapshotted at once. Example:
  # /etc/blockdiff/nightly.list
  web1   root@web1:/dev/vg0/www
  db1    --lvm root@db1:vg0/mysql
  blockdiff-backup /var/backup/hosts --sources /etc/blockdiff/nightly.list --jobs 4 --max-rate 60M

A source written [USER@]HOST:PATH (or --lvm [USER@]HOST:VG/LV) is read on
that host over ssh, with nothing installed there: blockdiff-agent (beside
this program, static for x86-64 Linux; scripts/build-agent.sh builds it) is
copied once to ~/.cache/blockdiff on the host (mode 0700), checked by
SHA-256 and reused while unchanged. One ssh connection carries every step;
the previous digest goes up, the compressed diff and the new digest come
back, and the generation is committed here only when the stream is
complete. Snapshot, quiescers and the polite-I/O options apply on the host.
ssh runs in batch mode (keys, no passwords); --ssh-option passes -o options.

With --lvm, the volume is read from a snapshot taken for this run (tagged
'blockdiff', named VG/LV-bd-PID-TIME-N) and removed afterwards, on success,
failure, SIGINT, SIGTERM or panic. Its fill is polled while it is read: a
warning at --fill-warn, and if it overflows (LVM invalidates it) the
generation is not committed. A run killed with SIGKILL cannot clean up:
`blockdiff-lvm cleanup` removes what such runs left.

A thin LV's snapshot is kept after a successful backup as its chain's base
(tagged 'blockdiff-retained', inactive; `blockdiff-lvm snapshots` shows it),
and the next run reads only the chunks the pool reports changed since
(thin_delta over a reserved metadata snapshot), copying the other blocks'
hashes from the previous digest; then the older base is removed. It reads
the whole volume, and logs why, when the base is gone or not the one the
last generation recorded, the volume was resized, or the pool's metadata
cannot be read. --full-scan and --full-scan-every N read everything and
check the pool's report (an error if it missed a change). The base costs
the pool the blocks written since; --no-track keeps none.

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

Files, beside NAME (created 0600; 0640 and the directory's group in a
setgid directory):
  NAME.ver       the last committed generation (decimal text)
  NAME.N         generation N's diff: v2 (checked, zstd, indexed) or legacy
  NAME.N.digest  generation N's v2 digest: one BLAKE3 (or MD5) hash per block
  NAME.N.md5     the digest of a legacy chain (and NAME.N.gz with --gzip)
  NAME.N.meta.json  its source_size, block_size and the facts above
  NAME.lock      held while a backup runs; a second backup of NAME fails at once

A new chain is v2 unless --format legacy (or -z) says otherwise; an existing
chain keeps its format, block size and hash, so backups written by the
original blockdiff_backup continue in its format.

A generation is committed only once its files are fsynced and renamed into
place and NAME.ver is replaced atomically: a run that fails or is killed
leaves every committed generation intact, and the next run succeeds. A run
removes only its own leftovers: files of generations NAME.ver does not
vouch for (NAME.ver lost, or the original tool killed mid-write) stop the
backup, and 'blockdiff-repair NAME' rebuilds NAME.ver from what verifies.
Legacy chains are byte-compatible with the original blockdiff_backup.

NAME may be s3://BUCKET/PREFIX/NAME, a chain on an S3-compatible object
store (Garage, Ceph RGW, MinIO, AWS): the same objects as the files above.
The diff and the digest are streamed up (multipart, bounded memory, nothing
staged on local disk) and the generation becomes visible only when NAME.ver
is replaced after both completed; a failed or killed run leaves nothing a
reader sees, and the next run removes its objects. The previous digest is
kept in a local cache (--cache-dir), so an incremental backup downloads
nothing. One writer per chain: a local lock, and the object NAME.lock
naming host, pid and start time, which a run on another host reports
(--break-lock takes it over). Endpoint, region and keys come from
--endpoint/--region/--profile and the environment (AWS_ENDPOINT_URL,
AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE,
~/.aws/credentials); a secret is never an option. Example (Garage):
  export AWS_ACCESS_KEY_ID=GK... AWS_SECRET_ACCESS_KEY=... AWS_REGION=garage
  blockdiff-backup --endpoint http://127.0.0.1:3900 s3://backups/db /srv/mysql.img
  blockdiff-restore --endpoint http://127.0.0.1:3900 /tmp/db.img --from s3://backups/db

Exit status: 0 success, 1 failure, 2 usage error.";

/// Back up a file or block device as the next generation of NAME, writing
/// only the blocks that changed since the last one.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-backup", version, after_help = EXAMPLES)]
// "lvm": a snapshot is taken (--lvm or --each), as the snapshot options
// require.
#[command(group(ArgGroup::new("lvm").args(["lvm_volume", "each", "sources"])))]
// "many": several chains in one run, --jobs at a time.
#[command(group(ArgGroup::new("many").args(["each", "sources"])))]
struct Args {
    /// Path prefix of the backup's files, e.g. /var/backup/db, or
    /// s3://BUCKET/PREFIX/NAME on an object store (with --each, the
    /// directory or prefix of the chains)
    name: PathBuf,

    /// Start a new chain every period: back up to NAME-YYYYMM (monthly),
    /// NAME-YYYYWww (ISO week) or NAME-YYYYMMDD (daily), by the local date;
    /// the first backup of a period is full. `blockdiff-prune NAME` removes
    /// old ones.
    #[arg(long, value_name = "PERIOD", value_parser = parse_chain_period)]
    chain: Option<ChainPeriod>,

    /// File or block device to back up ('-' for standard input), or
    /// [USER@]HOST:PATH on a remote host
    #[arg(required_unless_present = "lvm", conflicts_with = "lvm")]
    source: Option<PathBuf>,

    /// Back up a logical volume through a snapshot of it: VG/LV or
    /// /dev/VG/LV, or [USER@]HOST:VG/LV on a remote host
    #[arg(id = "lvm_volume", long = "lvm", value_name = "[HOST:]VG/LV", value_parser = parse_lvm_location)]
    lvm: Option<(Option<String>, LvPath)>,

    /// Back up every LV of VG whose name matches PATTERN (* and ?), one
    /// after another, each to the chain NAME/LVNAME
    #[arg(long, value_name = "VG/PATTERN")]
    each: Option<String>,

    /// Back up the chains of a list, one per line: NAME SOURCE or NAME
    /// --lvm [HOST:]VG/LV, each to NAME/NAME ('-': standard input; # starts
    /// a comment)
    #[arg(long, value_name = "FILE")]
    sources: Option<PathBuf>,

    /// With --each or --sources, back up N volumes at a time (each with its
    /// own snapshot and threads; progress bars are then not drawn, the log
    /// names each volume). Thick volumes of a volume group whose snapshots
    /// would not all fit in its free space, and the volumes of one remote
    /// volume group, are still taken one at a time; --max-rate is shared
    /// by the jobs running on one host
    #[arg(long, value_name = "N", default_value_t = 1, requires = "many", value_parser = clap::value_parser!(u32).range(1..=64))]
    jobs: u32,

    #[command(flatten)]
    consistency: ConsistencyArgs,

    /// Block size of a new chain: bytes, or with a unit (16k, 1M). Later
    /// generations keep the chain's block size.
    #[arg(short, long, env = "BLOCKSIZE", default_value = "16384", value_parser = parse_block_size)]
    block_size: BlockSize,

    #[command(flatten)]
    format: FormatArgs,

    #[command(flatten)]
    polite: PoliteArgs,

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

    #[command(flatten)]
    remote: RemoteArgs,

    #[command(flatten)]
    storage: StorageArgs,

    /// Encrypt the chain: start it encrypted, or continue an encrypted one
    ///
    /// Every file of the chain (diffs, digests, metadata) is sealed with
    /// AES-256-GCM under a key derived from the chain's key; the block
    /// hashes are keyed BLAKE3, so that the digests reveal nothing. The key
    /// comes from --key-file, --passphrase-file or $BLOCKDIFF_PASSPHRASE,
    /// and is needed by every later backup, restore and info of the chain.
    /// A chain keeps what it started as: a plain chain cannot be continued
    /// encrypted, nor an encrypted one plain. Encrypted chains are v2, in
    /// a local directory or on an object store (s3://, sealed before
    /// upload).
    #[arg(long, help_heading = "Encryption (of a chain made with --encrypt)")]
    encrypt: bool,

    #[command(flatten)]
    key: KeyArgs,

    /// Take over the lock of an s3:// chain that names a run on another
    /// host (which must be dead: two writers would damage the chain)
    #[arg(
        long,
        help_heading = "Object storage (for NAME = s3://BUCKET/PREFIX/NAME)"
    )]
    break_lock: bool,
}
fn parse_chain_period(s: &str) -> Result<ChainPeriod, String> {
    s.parse().map_err(|e: blockdiff_core::Error| e.to_string())
}

fn parse_lvm_location(s: &str) -> Result<(Option<String>, LvPath), String> {
    match remote::split_remote(s) {
        Some((host, lv)) => Ok((Some(host.to_owned()), parse_lv(lv)?)),
        None => Ok((None, parse_lv(s)?)),
    }
}

fn main() -> ExitCode {
    run_main(TOOL, run)
}

fn run(mut args: Args) -> anyhow::Result<()> {
    let bars = TerminalProgress::stderr(!args.quiet && !args.no_progress);
    let mut log = stderr_log(TOOL, args.quiet, &bars);
    if let Some(path) = &args.log {
        log = log.with_file(path)?;
    }
    if let (Some(period), None, None) = (args.chain, &args.each, &args.sources) {
        let base = args.name.clone();
        args.name = period.chain_name(&base, local_today()?);
        log.info(format_args!(
            "chain {} (--chain {period} of {})",
            args.name.display(),
            base.display()
        ));
    }
    let options = run_options(&args)?;
    let run = BackupRun {
        options: &options,
        log: &log,
        display: &bars,
        step_hook: reached_step,
    };
    let result = match (&args.each, &args.sources) {
        (Some(pattern), _) => run_each(&args, pattern, &run),
        (None, Some(list)) => run_sources(&args, list, &run),
        (None, None) => run_one(&args, &run),
    };
    if let Err(e) = &result {
        // run_main prints it on stderr; the log file gets it too.
        log.to_file_only(LogLevel::Error, format_args!("{}", error_line(e.as_ref())));
    }
    result
}

/// The run's options, from the command line.
fn run_options(args: &Args) -> anyhow::Result<BackupRunOptions> {
    Ok(BackupRunOptions {
        block_size: args.block_size,
        threads: args.threads,
        format: args.format.to_choice(),
        consistency: args.consistency.to_options(),
        polite: args.polite.to_options(),
        remote: args.remote.to_options(),
        storage: args.storage.to_options(),
        lock: LockOptions {
            break_lock: args.break_lock,
            ..LockOptions::default()
        },
        encryption: args.key.for_backup(args.encrypt)?,
    })
}

/// The source of the command line.
fn source(args: &Args) -> BackupSource {
    match (&args.lvm, &args.source) {
        (Some((Some(host), origin)), _) => BackupSource::Remote(RemoteSource {
            destination: host.clone(),
            spec: SourceSpec::Lvm(origin.clone()),
        }),
        (Some((None, origin)), _) => BackupSource::Local(SourceSpec::Lvm(origin.clone())),
        (None, Some(path)) => match path.to_str() {
            Some(text) => BackupSource::parse_path(text),
            None => BackupSource::Local(SourceSpec::Path(path.clone())),
        },
        (None, None) => unreachable!("clap requires a source, --lvm, --each or --sources"),
    }
}

fn run_one(args: &Args, run: &BackupRun<'_>) -> anyhow::Result<()> {
    let source = source(args);
    let spec = match &source {
        BackupSource::Local(spec) | BackupSource::Remote(RemoteSource { spec, .. }) => spec,
    };
    let clock = RunSummary::start(&args.name, spec);
    let started = clock.started().to_owned();
    let result = run.back_up(&args.name, &source, started, &mut None);
    if args.json {
        let summary = match &result {
            Ok((report, facts)) => clock.succeeded(report, facts),
            Err(e) => clock.failed(e),
        };
        // The backup is committed (or failed) whatever happens to its
        // summary: a closed stdout is noted in the log, never the status.
        if let Err(e) = blockdiff_tools::outln!("{}", summary.to_json()) {
            run.log
                .warning(format_args!("the --json summary was not printed: {e}"));
        }
    }
    result.map(drop).map_err(anyhow::Error::from)
}

/// One chain of an `--each` or `--sources` run.
struct Job {
    /// How the log and the final error name it.
    label: String,
    /// Its chain, relative to NAME.
    name: PathBuf,
    source: BackupSource,
}

impl std::fmt::Display for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label)
    }
}

impl Job {
    /// The host it reads (`None`: this one).
    fn host(&self) -> Option<&str> {
        self.source.host()
    }

    /// The LV it snapshots, if any.
    fn lv(&self) -> Option<&LvPath> {
        match &self.source {
            BackupSource::Local(SourceSpec::Lvm(lv))
            | BackupSource::Remote(RemoteSource {
                spec: SourceSpec::Lvm(lv),
                ..
            }) => Some(lv),
            _ => None,
        }
    }
}

/// `--each`: every matching LV to its own chain under NAME.
fn run_each(args: &Args, pattern: &str, run: &BackupRun<'_>) -> anyhow::Result<()> {
    let log = run.log;
    let pattern = VolumePattern::parse(pattern).map_err(|e| UsageError(e.to_string()))?;
    let selection = pattern.select_from(&Lvm::local())?;
    for (lv, why) in &selection.skipped {
        log.info(format_args!("skipping {lv}: {why}"));
    }
    if selection.volumes.is_empty() {
        anyhow::bail!("no logical volume to back up matches {pattern}");
    }
    let jobs = selection
        .volumes
        .into_iter()
        .map(|lv| Job {
            label: lv.to_string(),
            name: each_chain_name(Path::new(""), &lv),
            source: BackupSource::Local(SourceSpec::Lvm(lv)),
        })
        .collect();
    run_jobs(args, jobs, run)
}

/// `--sources FILE`: the chains of a list of `NAME SOURCE` lines.
fn run_sources(args: &Args, list: &Path, run: &BackupRun<'_>) -> anyhow::Result<()> {
    // A list is short; a longer read is refused by the parser.
    let limit = 16 << 20;
    let mut text = String::new();
    let origin = if list.as_os_str() == "-" {
        std::io::stdin()
            .lock()
            .take(limit + 1)
            .read_to_string(&mut text)
            .context("cannot read the list of sources from standard input")?;
        "standard input".to_owned()
    } else {
        std::fs::File::open(list)
            .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
            .with_context(|| format!("cannot read the list of sources {}", list.display()))?;
        list.display().to_string()
    };
    let listed = parse_source_list(&text, &origin).map_err(|e| UsageError(e.to_string()))?;
    let jobs = listed
        .into_iter()
        .map(|l| Job {
            label: l.to_string(),
            name: l.name,
            source: l.source,
        })
        .collect();
    run_jobs(args, jobs, run)
}

/// Backs up every job to its chain under NAME, `--jobs` at a time.
fn run_jobs(args: &Args, all: Vec<Job>, run: &BackupRun<'_>) -> anyhow::Result<()> {
    let log = run.log;
    // An object store has no directories to create.
    if !ChainLocation::is_object_name(&args.name) {
        std::fs::create_dir_all(&args.name)
            .with_context(|| format!("cannot create directory {}", args.name.display()))?;
    }
    let jobs = args.jobs as usize;
    // Volume groups whose snapshots must not be taken at once, by host: a
    // local group whose thick snapshots would not all fit in its free
    // space, and every remote group with more than one volume (its free
    // space is not known here).
    let mut serial: BTreeMap<(Option<String>, String), Mutex<()>> = BTreeMap::new();
    if jobs > 1 {
        let local: Vec<LvPath> = all
            .iter()
            .filter(|j| j.host().is_none())
            .filter_map(|j| j.lv().cloned())
            .collect();
        let groups = groups_to_serialize(&Lvm::local(), &local, args.consistency.snapshot_size)?;
        for (vg, why) in groups {
            log.info(format_args!("{vg}: {why}"));
            serial.insert((None, vg), Mutex::new(()));
        }
        let mut remote: BTreeMap<(String, String), usize> = BTreeMap::new();
        for job in &all {
            if let (Some(host), Some(lv)) = (job.host(), job.lv()) {
                *remote.entry((host.to_owned(), lv.vg.clone())).or_default() += 1;
            }
        }
        for ((host, vg), count) in remote {
            if count > 1 {
                log.info(format_args!(
                    "{host}:{vg}: its {count} volumes are backed up one at a time (the group's free space is not checked from here)"
                ));
                serial.insert((Some(host), vg), Mutex::new(()));
            }
        }
    }
    // --max-rate is a host's budget: the jobs running on one host at once
    // share it.
    let mut per_host: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for job in &all {
        *per_host.entry(job.host()).or_default() += 1;
    }
    let options: BTreeMap<Option<&str>, BackupRunOptions> = per_host
        .into_iter()
        .map(|(host, count)| {
            let at_once = count.min(jobs);
            let polite = run.options.polite.shared_by(at_once);
            if let (Some(rate), true) = (polite.max_rate(), at_once > 1) {
                log.info(format_args!(
                    "{}: --max-rate shared by {at_once} jobs at a time, {rate} bytes/s each",
                    host.unwrap_or("this host")
                ));
            }
            let options = BackupRunOptions {
                polite,
                ..run.options.clone()
            };
            (host, options)
        })
        .collect();
    let (summaries, result) = back_up_each(&all, jobs, log, |job| {
        let name = match chain_name(args, &job.name) {
            Ok(name) => name,
            Err(e) => {
                return ControlFlow::Continue(
                    RunSummary::start(&args.name, &job.source).failed(&e),
                );
            }
        };
        // A listed NAME may have directories (db/main).
        if let Some(parent) = name
            .parent()
            .filter(|_| !ChainLocation::is_object_name(&name))
            && let Err(e) = std::fs::create_dir_all(parent)
        {
            let e = blockdiff_core::Error::Io {
                path: parent.to_owned(),
                op: "create the directory",
                source: e,
            };
            return ControlFlow::Continue(RunSummary::start(&name, &job.source).failed(&e));
        }
        let _one_at_a_time = job
            .lv()
            .and_then(|lv| serial.get(&(job.host().map(str::to_owned), lv.vg.clone())))
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner));
        log.info(format_args!(
            "backing up {} to {}",
            job.source,
            name.display()
        ));
        let clock = RunSummary::start(&name, &job.source);
        let started = clock.started().to_owned();
        let mut interrupted = None;
        let job_run = BackupRun {
            options: &options[&job.host()],
            // Progress bars of parallel jobs would overwrite each other.
            display: if jobs > 1 { &NoDisplay } else { run.display },
            ..*run
        };
        let summary = match job_run.back_up(&name, &job.source, started, &mut interrupted) {
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
        if let Err(e) = blockdiff_tools::outln!("{}", serde_json::Value::Array(all)) {
            log.warning(format_args!("the --json summary was not printed: {e}"));
        }
    }
    Ok(result?)
}

/// The chain `name` (relative to NAME) of an `--each` or `--sources` run:
/// NAME/name, or NAME/name-PERIOD with --chain.
fn chain_name(args: &Args, name: &Path) -> Result<PathBuf, blockdiff_core::Error> {
    let name = args.name.join(name);
    Ok(match args.chain {
        Some(period) => period.chain_name(&name, local_today()?),
        None => name,
    })
}
