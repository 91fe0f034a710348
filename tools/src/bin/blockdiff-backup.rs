//! `blockdiff-backup`: numbered, crash-safe generations of a file or device.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use blockdiff_core::{
    BackupOptions, BackupReport, BlockSize, ChainPeriod, DumpOptions, GenerationStore, backup,
};
use blockdiff_tools::remote::{
    self, AgentBinary, RemoteSource, SshOptions, SshSession, backup_remote,
};
use blockdiff_tools::{
    ConsistencyArgs, FormatArgs, PoliteArgs, RunFacts, RunLog, SourceReader, SourceSpec,
    local_today, parse_block_size, parse_lv, run_main, timestamp,
};
use clap::Parser;
use lvm_snap::LvPath;

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

    /// File or block device to back up ('-' for standard input), or
    /// [USER@]HOST:PATH on a remote host
    #[arg(required_unless_present = "lvm", conflicts_with = "lvm")]
    source: Option<PathBuf>,

    /// Back up a logical volume through a snapshot of it: VG/LV or
    /// /dev/VG/LV, or [USER@]HOST:VG/LV on a remote host
    #[arg(long, value_name = "[HOST:]VG/LV", value_parser = parse_lvm_location)]
    lvm: Option<(Option<String>, LvPath)>,

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

    /// Print nothing on success
    #[arg(short, long)]
    quiet: bool,

    #[command(flatten)]
    remote: RemoteArgs,
}

/// How remote hosts are reached.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Remote hosts")]
struct RemoteArgs {
    /// An ssh option for remote sources, as ssh -o takes it (Port=2222,
    /// IdentityFile=/root/.ssh/backup); repeatable
    #[arg(long = "ssh-option", value_name = "OPTION")]
    ssh_options: Vec<String>,

    /// The ssh client to use
    #[arg(long, value_name = "PROGRAM", default_value = "ssh")]
    ssh: PathBuf,

    /// The agent to copy to remote hosts [default: $BLOCKDIFF_AGENT, else
    /// blockdiff-agent beside this program]; build a static one with
    /// scripts/build-agent.sh
    #[arg(long, value_name = "PATH")]
    agent: Option<PathBuf>,
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
    run_main("blockdiff-backup", run)
}

fn run(mut args: Args) -> anyhow::Result<()> {
    let log = RunLog::stderr("blockdiff-backup", args.quiet);
    if let Some(period) = args.chain {
        let base = args.name.clone();
        args.name = period.chain_name(&base, local_today()?);
        log.info(format_args!(
            "chain {} (--chain {period} of {})",
            args.name.display(),
            base.display()
        ));
    }
    let store = GenerationStore::new(&args.name);
    let (host, spec) = match (&args.lvm, &args.source) {
        (Some((host, origin)), _) => (host.clone(), SourceSpec::Lvm(origin.clone())),
        (None, Some(path)) if path.as_os_str() == "-" => (None, SourceSpec::Stdin),
        (None, Some(path)) => match path.to_str().and_then(remote::split_remote) {
            Some((host, path)) => (Some(host.to_owned()), SourceSpec::Path(path.into())),
            None => (None, SourceSpec::Path(path.clone())),
        },
        (None, None) => unreachable!("clap requires a source or --lvm"),
    };
    let mut facts = RunFacts::new();
    facts.insert("started".to_owned(), timestamp());
    let format = args.format.requested()?;
    let options = BackupOptions {
        dump: DumpOptions {
            block_size: args.block_size,
            hash: args.format.hash_for(format),
            threads: args.threads,
            max_rate: args.polite.max_rate(),
            drop_cache: args.polite.drop_cache,
            ..DumpOptions::default()
        },
        format,
    };
    let report = match host {
        Some(host) => {
            let source = RemoteSource {
                destination: host,
                spec,
            };
            backup_from_host(&args, &store, &options, &source, &log, &mut facts)
                .with_context(|| format!("backup of {source} to {} failed", args.name.display()))?
        }
        None => SourceReader::new(&spec, &args.consistency, log.clone())?
            .with_priorities(&args.polite)
            .read(
                &spec,
                &mut facts,
                Box::new(|source, progress| backup(&store, source, &options, progress)),
            )
            .with_context(|| format!("backup of {spec} to {} failed", args.name.display()))?,
    };
    facts.insert("generation".into(), report.generation.to_string());
    facts.insert("finished".into(), timestamp());
    if let Err(e) = store.write_metadata(report.generation, &facts) {
        // The generation is committed and complete; only its facts are lost.
        log.warning(format_args!("{e}"));
    }
    let d = report.dump;
    log.info(format_args!(
        "generation {} of {} ({}, {}): {} of {} blocks changed ({} of {} bytes, {} zero blocks), diff is {} bytes",
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
    ));
    log.info(format_args!("backup completed successfully"));
    Ok(())
}

/// Connects to the source's host, puts the agent there and backs up
/// through it.
fn backup_from_host(
    args: &Args,
    store: &GenerationStore,
    options: &BackupOptions,
    source: &RemoteSource,
    log: &RunLog,
    facts: &mut RunFacts,
) -> anyhow::Result<BackupReport> {
    let agent = AgentBinary::locate(args.remote.agent.as_deref())?;
    if !agent.is_static() {
        log.warning(format_args!(
            "the agent {} is dynamically linked: it runs only on hosts with a compatible C library (scripts/build-agent.sh builds a static one)",
            agent.path().display()
        ));
    }
    let ssh = SshOptions {
        program: args.remote.ssh.clone(),
        options: args.remote.ssh_options.clone(),
        ..SshOptions::default()
    };
    log.info(format_args!("connecting to {}", source.destination));
    let session = SshSession::connect(&source.destination, &ssh)?;
    let installed = agent.install(&session)?;
    log.info(format_args!(
        "{} the agent {}:{}",
        if installed.uploaded {
            "copied"
        } else {
            "reusing"
        },
        source.destination,
        installed.path
    ));
    facts.insert("host".into(), source.destination.clone());
    let report = backup_remote(
        &session,
        &installed,
        store,
        options,
        source,
        &args.consistency,
        &args.polite.to_args(),
        log,
        facts,
    )?;
    facts.insert("source".into(), source.to_string());
    Ok(report)
}
