//! `blockdiff-restore`: rebuild an image from a chain of generations, verify
//! a chain, or apply one diff stream (the original `blockdiff_merge`).

// The doc comments of the argument structs are clap's help texts, written
// for a terminal (`[USER@]HOST:PATH`), not intra-doc links.
#![allow(rustdoc::broken_intra_doc_links)]

use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use blockdiff_core::{
    DeltaRestoreOptions, DumpOptions, DumpSource, Notice, Progress, RestoreOptions, RestorePlan,
    apply_stream, compare_with_generation, restore_delta,
};
use blockdiff_run::remote::{self, RemoteRestore, RemoteRestoreOptions, RemoteTarget, RestoreMode};
use blockdiff_run::{LogLevel, RunLog, error_line};
use blockdiff_storage::ChainLocation;
use blockdiff_tools::{
    KeyArgs, PoliteArgs, RemoteArgs, StderrProgress, StorageArgs, TerminalProgress, UsageError,
    parse_lv, run_main, stderr_log,
};
use clap::Parser;
use lvm_snap::LvPath;

const EXAMPLES: &str = "\
Examples:
  # the last committed generation of /var/backup/db
  blockdiff-restore /tmp/restored.img --from /var/backup/db

  # generation 2, onto a block device (never written past its end)
  blockdiff-restore /dev/vg0/restore --from /var/backup/db --generation 2

  # check a chain without writing anything
  blockdiff-restore --verify-only --from /var/backup/db

  # from a bucket: only the frames generation 3 needs, by ranged reads
  blockdiff-restore /tmp/restored.img --from s3://backups/db -g 3 --endpoint http://127.0.0.1:3900

  # roll a volume back to generation 3, writing only the blocks that differ
  blockdiff-restore /dev/vg0/www --from /var/backup/www -g 3 --delta

  # the same onto a server, over ssh (nothing installed there)
  blockdiff-restore root@db1:/dev/vg0/mysql --from /var/backup/db1-mysql -g 3

  # an LV on a server, its state before the restore kept as a snapshot
  blockdiff-restore --lvm root@db1:vg0/mysql --from /var/backup/db1-mysql -g 3 --keep-before

  # which parts of a disk differ from generation 5?
  blockdiff-restore --verify-only --from /var/backup/db -g 5 --against /dev/vg0/data

  # apply one diff stream to an image, as the original blockdiff_merge
  blockdiff-restore disk.img < disk.3
  zcat disk.4.gz | blockdiff-restore disk.img

With --from, generation K is rebuilt from generations K..1, each block read
once from the newest generation that has it, and every block is checked
against generation K's digest: a truncated or corrupt diff is reported, never
restored silently. A v2 chain whose generations do not link is refused before
anything is written. A regular-file TARGET is written as an anonymous temporary file in its
directory and takes TARGET's name only when complete and synced (all-zero
blocks left as holes): a failed or killed restore leaves an existing TARGET
as it was and nothing beside it. A new TARGET is created mode 0600; an
existing one keeps its owner, group and mode. A block device is written in
place and must exist and be large enough. Refused: a TARGET that is a
symbolic link (except root's or your own to a block device, as /dev/VG/LV
is), a file of the backup (or of any backup), a new file under
/dev.

--delta updates an existing TARGET in place and writes only what differs:
TARGET is read and hashed on every core (the polite-I/O options apply to
that reading), compared with generation K's digest, and only the blocks that
differ are read from the chain, checked against the digest and written;
then TARGET is synced, read again and compared (unless --no-verify). TARGET
must exist: a regular file of the generation's size (--resize makes one of
another size fit) with no other hard link, or a block device at least that
large; a device that is mounted or held by another program is refused
unless --force. Unlike a full restore, an interrupted --delta leaves TARGET
partly written (the error says so): run the same command again and it
writes what still differs.

A TARGET of the form [USER@]HOST:PATH (a colon before any slash; write
./a:b for a local file named so) is a file or block device on that host,
restored over one ssh connection through the agent that remote backups use
(copied there, nothing installed): by default as --delta does, the agent
hashing its target on every core and the backup host sending only the
blocks that differ, each checked against the digest on both sides; a
missing file is created (mode 0600) and every block that is not all zeros
sent. --full sends every block without reading the target first (each
block is checked against the digest as it is written, and the target is not
read again). The
polite-I/O options apply to the agent's reading of the target; --force,
--resize and --no-verify as for --delta. Killed or cut off, the target is
partly written and the error says so: run the same command again.
--lvm HOST:VG/LV --keep-before first takes a snapshot of the LV there
(thick: sized for the blocks about to be written; thin: in its pool) and
keeps it, tagged blockdiff-before (blockdiff-lvm snapshots shows it, a
cleanup never removes it): lvconvert --merge undoes the restore, lvremove
drops the snapshot.

A legacy digest records no size: a digest of generation K listing fewer
blocks than K-1's is refused (it may have been cut short) unless the
generation's metadata records its size, or --source-shrank says the source
really shrank.

--verify-only checks every frame's CRC and every trailer of the chain, the
digest's fingerprint, and that the replayed content hashes to the digest,
without writing an image. Exit status 1 if anything is wrong, or (with
--against) if the file differs.

A single stream (without --from) is recognised by its first bytes: legacy,
gzipped legacy or v2. A legacy stream has no checksum and cannot be checked.

Exit status: 0 success, 1 failure, 2 usage error (also --threads above 8
per core).";

/// Restore an image from blockdiff backups, or verify them.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-restore", version, after_help = EXAMPLES)]
struct Args {
    /// File or block device to write, here or as [USER@]HOST:PATH on
    /// another host (not with --verify-only)
    #[arg(required_unless_present_any = ["verify_only", "lvm"])]
    target: Option<PathBuf>,

    /// Write the logical volume VG/LV (its device /dev/VG/LV), here or as
    /// [USER@]HOST:VG/LV on another host, instead of TARGET
    #[arg(long, value_name = "[HOST:]VG/LV", value_parser = parse_lvm_target, conflicts_with_all = ["target", "verify_only"], requires = "from")]
    lvm: Option<(Option<String>, LvPath)>,

    /// With --lvm HOST:VG/LV: first take a snapshot of the LV and keep it
    /// (tagged blockdiff-before), so that the restore can be undone with
    /// lvconvert --merge
    #[arg(long, requires = "lvm")]
    keep_before: bool,

    /// Restore from the backup whose files start with NAME (NAME.ver, NAME.N, …),
    /// or from s3://BUCKET/PREFIX/NAME on an object store
    #[arg(long, value_name = "NAME", required_if_eq("verify_only", "true"))]
    from: Option<PathBuf>,

    /// Generation to restore [default: the last committed one]
    #[arg(short, long, value_name = "K", requires = "from")]
    generation: Option<u64>,

    /// Do not check the restored blocks against the generation's digest
    #[arg(long, requires = "from", conflicts_with = "verify_only")]
    no_verify: bool,

    /// The source really shrank: trust a legacy digest of generation K that
    /// lists fewer blocks than generation K-1's (without this, such a
    /// chain is refused: a digest cut short looks the same)
    #[arg(long, requires = "from")]
    source_shrank: bool,

    /// Check the chain (or, with --against, a file) without writing anything
    #[arg(long, conflicts_with = "target")]
    verify_only: bool,

    /// With --verify-only: compare FILE (or a device) with the generation's
    /// digest and list the byte ranges that differ
    #[arg(long, value_name = "FILE", requires = "verify_only")]
    against: Option<PathBuf>,

    /// With --from: threads that decompress and hash the chain's blocks
    /// (with --against: FILE's; with --delta: TARGET's) while the main thread checks and writes
    /// them in order; 1 restores on that thread alone. Any count gives the same
    /// image [default: one per core]
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true,
        requires = "from"
    )]
    threads: usize,

    /// Update an existing TARGET in place, writing only the blocks that
    /// differ from the generation (see below)
    #[arg(long, requires = "from", conflicts_with = "verify_only")]
    delta: bool,

    /// With --delta: write to a block device even though it is mounted or
    /// held by another program (restoring under a mounted file system
    /// corrupts it)
    #[arg(long, requires = "delta")]
    force: bool,

    /// With --delta: make a regular file of another size the generation's
    /// size (without it such a file is refused)
    #[arg(long, requires = "delta")]
    resize: bool,

    /// For a TARGET on another host: send every block without reading the
    /// target first (the default there compares and sends what differs;
    /// locally a full restore is the default)
    #[arg(long, requires = "from", conflicts_with_all = ["delta", "verify_only"])]
    full: bool,

    #[command(flatten)]
    remote: RemoteArgs,

    /// Print a JSON summary of the restore on standard output
    #[arg(long, conflicts_with = "verify_only")]
    json: bool,

    #[command(flatten)]
    polite: PoliteArgs,

    /// Read the single diff stream from FILE instead of standard input
    #[arg(short, long, value_name = "FILE", conflicts_with = "from")]
    input: Option<PathBuf>,

    /// Print nothing on success
    #[arg(short, long)]
    quiet: bool,

    /// Append the run's lines and its final error line to FILE, with
    /// timestamps (as blockdiff-backup --log)
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,

    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    key: KeyArgs,
}

fn main() -> ExitCode {
    run_main("blockdiff-restore", run)
}

/// A difference found by `--against`: the run fails with this message.
#[derive(Debug)]
struct Differs(String);

impl std::fmt::Display for Differs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Differs {}

/// The tool's progress: notices on stderr, and a stop on SIGINT, SIGTERM
/// or SIGHUP, so that the restore removes what it wrote and the target is
/// as it was.
struct RestoreProgress {
    inner: StderrProgress,
    signals: Option<quiesce::TerminationSignals>,
}

impl Progress for RestoreProgress {
    fn notice(&mut self, notice: Notice) {
        self.inner.notice(notice);
    }

    fn advance(&mut self, bytes: u64) {
        self.inner.advance(bytes);
    }

    fn should_stop(&mut self) -> Option<String> {
        let signal = self.signals.as_ref()?.received()?;
        Some(format!("interrupted by {}", quiesce::signal_name(signal)))
    }

    fn at_step(&mut self, step: &'static str) {
        self.inner.at_step(step);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let bars = TerminalProgress::stderr(!args.quiet);
    let mut log = stderr_log("blockdiff-restore", args.quiet, &bars);
    if let Some(path) = &args.log {
        log = log.with_file(path)?;
    }
    let result = restore(&args, &log, &bars);
    if let Err(e) = &result {
        // run_main prints it on stderr; the log file gets it too.
        log.to_file_only(LogLevel::Error, format_args!("{}", error_line(e.as_ref())));
    }
    result
}

/// A result line: on stderr unless `--quiet`, and in the `--log` file.
struct Say<'a> {
    log: &'a RunLog,
    quiet: bool,
}

impl Say<'_> {
    fn line(&self, text: String) {
        if !self.quiet {
            blockdiff_tools::errln!("{text}");
        }
        let text = text.strip_prefix("blockdiff-restore: ").unwrap_or(&text);
        self.log
            .to_file_only(LogLevel::Info, format_args!("{text}"));
    }
}

fn restore(args: &Args, log: &RunLog, bars: &TerminalProgress) -> anyhow::Result<()> {
    let say = Say {
        log,
        quiet: args.quiet,
    };
    let mut progress = RestoreProgress {
        inner: StderrProgress::new("blockdiff-restore", args.quiet),
        // Without the handlers a signal still ends the run, and an
        // anonymous temporary still vanishes with it.
        signals: quiesce::TerminationSignals::catch().ok(),
    };
    // A thread count out of range is a usage error, before anything is read.
    DumpOptions {
        threads: args.threads,
        ..DumpOptions::default()
    }
    .validate()?;
    let options = RestoreOptions {
        generation: args.generation,
        verify: !args.no_verify,
        source_shrank: args.source_shrank,
    };
    if args.verify_only {
        let name = args
            .from
            .as_ref()
            .expect("clap requires --from with --verify-only");
        let location = ChainLocation::open(name, &args.storage.to_options())?
            .with_encryption(args.key.encryption()?);
        let store = location.source();
        if let Some(file) = &args.against {
            let source = DumpSource::open(file)?;
            let cmp = compare_with_generation(
                store,
                args.generation,
                source,
                args.threads,
                &mut progress,
            )?;
            if cmp.is_identical() {
                say.line(format!(
                    "blockdiff-restore: {} matches generation {} ({} bytes)",
                    file.display(),
                    cmp.generation,
                    cmp.file_size
                ));
                return Ok(());
            }
            for (start, end) in &cmp.differing {
                // A closed stdout cuts the listing short; the run still fails
                // with the summary below.
                if blockdiff_tools::outln!("{start}-{end}\t{} bytes", end - start).is_err() {
                    break;
                }
            }
            let total: u64 = cmp.differing.iter().map(|(s, e)| e - s).sum();
            return Err(Differs(format!(
                "{} differs from generation {} in {} range(s), {total} bytes (listed on standard output as START-END)",
                file.display(),
                cmp.generation,
                cmp.differing.len()
            ))
            .into());
        }
        let report = RestorePlan::new(store, &options)?
            .with_threads(args.threads)?
            .verify(&mut progress)?;
        say.line(format!(
                "blockdiff-restore: generation {} of {} verified: {} bytes, {} blocks checked against the digest, {} frames checked",
                report.generation,
                name.display(),
                report.source_size,
                report.blocks,
                report.frames_read
        ));
        return Ok(());
    }
    let lv_device;
    let target = match &args.lvm {
        Some((Some(host), lv)) => {
            return restore_remote(args, RemoteTarget::lvm(host, lv.clone()), log, bars);
        }
        Some((None, _)) if args.keep_before => {
            return Err(UsageError(
                "--keep-before keeps a snapshot on a remote host (--lvm HOST:VG/LV); here, take one with lvcreate --snapshot before restoring".into(),
            )
            .into());
        }
        Some((None, lv)) => {
            lv_device = lv.device();
            &lv_device
        }
        None => args
            .target
            .as_ref()
            .expect("clap requires TARGET without --verify-only or --lvm"),
    };
    if let Some((host, path)) = target.to_str().and_then(remote::split_remote) {
        let target = RemoteTarget {
            destination: host.to_owned(),
            path: PathBuf::from(path),
            lvm: None,
        };
        return restore_remote(args, target, log, bars);
    }
    if args.delta {
        let name = args
            .from
            .as_ref()
            .expect("clap requires --from with --delta");
        let polite = args.polite.to_options();
        polite.apply_priorities()?;
        let location = ChainLocation::open(name, &args.storage.to_options())?
            .with_encryption(args.key.encryption()?);
        let delta = DeltaRestoreOptions {
            generation: args.generation,
            threads: args.threads,
            verify: !args.no_verify,
            force: args.force,
            resize: args.resize,
            max_rate: polite.max_rate(),
            drop_cache: polite.drop_cache,
            source_shrank: args.source_shrank,
        };
        let report = restore_delta(location.source(), target, &delta, &mut progress)?;
        if args.json {
            print_json(&RestoreSummary {
                target: target.display().to_string(),
                mode: "delta",
                generation: report.generation,
                source_size: report.source_size,
                bytes_compared: report.bytes_compared,
                ranges_differing: Some(report.ranges),
                bytes_written: report.bytes_written,
                verified: report.verified,
                created: false,
                bytes_sent: None,
                bytes_received: None,
            })?;
        }
        say.line(format!(
                "blockdiff-restore: generation {} restored to {} in place: {} of {} bytes differed, in {} range(s), and were written{}",
                report.generation,
                target.display(),
                report.bytes_written,
                report.source_size,
                report.ranges,
                if report.verified {
                    "; read again, it matches the digest"
                } else {
                    ""
                },
        ));
        return Ok(());
    }
    let report = if let Some(name) = &args.from {
        let location = ChainLocation::open(name, &args.storage.to_options())?
            .with_encryption(args.key.encryption()?);
        RestorePlan::new(location.source(), &options)?
            .with_threads(args.threads)?
            .execute(target, &mut progress)?
    } else {
        let (input, name): (Box<dyn Read + Send>, PathBuf) = match &args.input {
            Some(p) => (
                Box::new(File::open(p).with_context(|| format!("{}: cannot open", p.display()))?),
                p.clone(),
            ),
            None => {
                if io::stdin().is_terminal() {
                    return Err(UsageError(
                        "no diff on standard input: pipe one in, or give --from NAME".into(),
                    )
                    .into());
                }
                (Box::new(io::stdin()), PathBuf::from("standard input"))
            }
        };
        apply_stream(input, &name, target, &mut progress)?
    };
    if args.json {
        print_json(&RestoreSummary {
            target: target.display().to_string(),
            mode: if args.from.is_some() {
                "full"
            } else {
                "stream"
            },
            generation: report.generation,
            source_size: report.source_size,
            bytes_compared: 0,
            ranges_differing: None,
            bytes_written: report.bytes_written,
            verified: report.verified,
            created: false,
            bytes_sent: None,
            bytes_received: None,
        })?;
    }
    let what = if report.generation > 0 {
        format!("generation {}", report.generation)
    } else {
        "diff stream".to_owned()
    };
    say.line(format!(
        "blockdiff-restore: restored {what} to {}: {} bytes, {} blocks{}{}",
        target.display(),
        report.source_size,
        report.blocks,
        if report.holes > 0 {
            format!(" ({} left as holes)", report.holes)
        } else {
            String::new()
        },
        if report.verified {
            ", all checked against the digest"
        } else {
            ""
        },
    ));
    Ok(())
}

/// The `--json` summary of a restore.
#[derive(Debug, serde::Serialize)]
struct RestoreSummary {
    /// The target as given.
    target: String,
    /// `delta` (only what differed written in place), `full` (the whole
    /// generation written) or `stream` (one diff applied).
    mode: &'static str,
    /// The generation restored (0 for a single stream).
    generation: u64,
    /// Its size in bytes.
    source_size: u64,
    /// Bytes of the target read to find what differs (delta).
    bytes_compared: u64,
    /// Ranges that differed (delta).
    #[serde(skip_serializing_if = "Option::is_none")]
    ranges_differing: Option<u64>,
    /// Bytes written to the target.
    bytes_written: u64,
    /// Whether what was written was checked against the digest (full), or
    /// the whole target read again and found equal to it (delta, remote).
    verified: bool,
    /// Whether the target did not exist and was created (remote).
    created: bool,
    /// Bytes sent over the ssh connection, headers included (remote).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_sent: Option<u64>,
    /// Bytes received over it (remote).
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes_received: Option<u64>,
}

/// Parses `--lvm [HOST:]VG/LV` for clap.
fn parse_lvm_target(s: &str) -> Result<(Option<String>, LvPath), String> {
    match remote::split_remote(s) {
        Some((host, lv)) => Ok((Some(host.to_owned()), parse_lv(lv)?)),
        None => Ok((None, parse_lv(s)?)),
    }
}

/// Restores onto `target` through the agent on its host.
fn restore_remote(
    args: &Args,
    target: RemoteTarget,
    log: &RunLog,
    bars: &TerminalProgress,
) -> anyhow::Result<()> {
    let Some(name) = &args.from else {
        return Err(UsageError(
            "a restore onto another host needs --from NAME (a single stream is applied locally only)".into(),
        )
        .into());
    };
    let location = ChainLocation::open(name, &args.storage.to_options())?
        .with_encryption(args.key.encryption()?);
    let polite = args.polite.to_options();
    polite.check()?;
    let (session, agent) = args.remote.to_options().connect(&target.destination, log)?;
    let options = RemoteRestoreOptions {
        generation: args.generation,
        mode: if args.full {
            RestoreMode::Full
        } else {
            RestoreMode::Delta
        },
        threads: args.threads,
        // A full stream is checked block by block as it is written, as a
        // local full restore is; only a delta restore reads the whole
        // target again.
        verify: !args.no_verify && !args.full,
        force: args.force,
        resize: args.resize,
        keep_before: args.keep_before,
    };
    let report = RemoteRestore {
        host: &session,
        agent: &agent,
        target: &target,
        polite: &polite,
    }
    .run(&location, &options, log, bars)?;
    let a = report.agent;
    if args.json {
        print_json(&RestoreSummary {
            target: target.to_string(),
            mode: if args.full { "full" } else { "delta" },
            generation: report.generation,
            source_size: report.source_size,
            bytes_compared: a.bytes_compared,
            ranges_differing: Some(a.ranges),
            bytes_written: a.bytes_written,
            verified: a.verified,
            created: a.created,
            bytes_sent: Some(report.bytes_sent),
            bytes_received: Some(report.bytes_received),
        })?;
    }
    log.info(format_args!(
        "generation {} restored to {target}: {} of {} bytes written{}, {} bytes sent over the connection{}",
        report.generation,
        a.bytes_written,
        report.source_size,
        if a.created { " (created)" } else { "" },
        report.bytes_sent,
        if a.verified {
            "; read again there, it matches the digest"
        } else {
            ""
        }
    ));
    Ok(())
}

/// Prints `value` as one line of JSON on standard output.
fn print_json(value: &RestoreSummary) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    blockdiff_tools::outln!("{line}")?;
    Ok(())
}
