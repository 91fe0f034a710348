//! `blockdiff-agent`: the dump helper that `blockdiff-backup` copies to a
//! remote host and runs there over ssh. It is not meant to be run by hand.

use std::io::{self, BufWriter, Stdout, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;
use std::process::ExitCode;

use blockdiff_core::{
    BlockSize, DigestReader, DigestWriter, DumpOptions, Error, FormatSink, Notice, Progress, dump,
};
use blockdiff_tools::remote::protocol::{PacketKind, PacketWriter, progress_payload};
use blockdiff_tools::remote::report_json;
use blockdiff_tools::{
    ConsistencyArgs, FormatArgs, PoliteArgs, RunFacts, RunLog, SourceReader, SourceSpec,
    error_line, parse_block_size, parse_lv,
};
use clap::{Parser, Subcommand};
use lvm_snap::LvPath;

/// The remote side of `blockdiff-backup HOST:SOURCE`: reads the source
/// (through a snapshot with --lvm, quiescing with --quiesce) and writes the
/// diff and the new digest to stdout as packets; the previous digest comes
/// on stdin. Started by blockdiff-backup; not meant to be run by hand.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-agent", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Dump a source as packets on stdout
    Dump(DumpArgs),
}

#[derive(Debug, clap::Args)]
struct DumpArgs {
    /// File or block device to read
    #[arg(long, required_unless_present = "lvm", conflicts_with = "lvm")]
    source: Option<PathBuf>,

    /// Logical volume to read through a snapshot
    #[arg(long, value_parser = parse_lv)]
    lvm: Option<LvPath>,

    /// The previous generation's digest comes on stdin
    #[arg(long)]
    previous: bool,

    /// Generation number written into the diff
    #[arg(long)]
    generation: u64,

    #[arg(long, value_parser = parse_block_size)]
    block_size: BlockSize,

    #[arg(long, default_value_t = 0)]
    threads: usize,

    #[command(flatten)]
    format: FormatArgs,

    #[command(flatten)]
    consistency: ConsistencyArgs,

    #[command(flatten)]
    polite: PoliteArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let Command::Dump(args) = args.command;
    let packets = match PacketWriter::new(BufWriter::with_capacity(256 << 10, io::stdout())) {
        Ok(p) => p,
        Err(e) => {
            blockdiff_tools::errln!("blockdiff-agent: error: cannot write to stdout: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sender = packets.clone();
    let log = RunLog::new(move |level, message| {
        let _ = sender.send(
            PacketKind::Log,
            format!("{}\t{message}", level.name()).as_bytes(),
        );
        let _ = sender.flush();
    });
    let outcome = dump_to(&args, &packets, log);
    let sent = match outcome {
        Ok((facts, report)) => (|| {
            packets.send(PacketKind::Facts, &serde_json::to_vec(&facts)?)?;
            packets.send(PacketKind::Report, &serde_json::to_vec(&report)?)?;
            packets.send(PacketKind::End, b"")?;
            packets.flush()
        })()
        .map(|()| true),
        Err(e) => packets
            .send(PacketKind::Error, error_line(&e).as_bytes())
            .and_then(|()| packets.flush())
            .map(|()| false),
    };
    match sent {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        // The backup host is gone: nothing to tell anyone.
        Err(_) => ExitCode::FAILURE,
    }
}

type Packets = PacketWriter<BufWriter<Stdout>>;

fn dump_to(
    args: &DumpArgs,
    packets: &Packets,
    log: RunLog,
) -> anyhow::Result<(RunFacts, serde_json::Value)> {
    let spec = match (&args.lvm, &args.source) {
        (Some(lv), _) => SourceSpec::Lvm(lv.clone()),
        (None, Some(path)) => SourceSpec::Path(path.clone()),
        (None, None) => unreachable!("clap requires --source or --lvm"),
    };
    let format = args.format.requested()?.unwrap_or_default();
    let mut options = DumpOptions {
        block_size: args.block_size,
        hash: args.format.hash_for(Some(format)),
        generation: args.generation,
        threads: args.threads,
        ..DumpOptions::default()
    };
    args.polite.fill_dump_options(&mut options);
    // Before any snapshot is taken.
    options.validate()?;
    let mut reader =
        SourceReader::new(&spec, &args.consistency, log)?.with_priorities(&args.polite);
    let mut facts = RunFacts::new();
    let report = reader.read(
        &spec,
        &mut facts,
        Box::new(|source, progress| {
            let mut progress = ForwardProgress::new(progress, packets, source.size());
            let progress: &mut dyn Progress = &mut progress;
            // A v2 digest is read from both ends, so the one sent on stdin
            // is kept in a private run directory until the dump is done.
            let run_dir = if args.previous {
                Some(RunDir::create()?)
            } else {
                None
            };
            let mut previous = match &run_dir {
                Some(dir) => Some(DigestReader::open(dir.receive_previous_digest()?)?),
                None => None,
            };
            let mut diff = packets.channel(PacketKind::Diff);
            let mut digest = packets.channel(PacketKind::Digest);
            let mut digest_writer = DigestWriter::new(&mut digest, "the new digest");
            // A gzipped legacy diff is gzipped on the backup host, as it
            // is written: the stream goes as the sink writes it.
            let report = dump(
                source,
                previous.as_mut(),
                &mut FormatSink::new(format, &mut diff, "the diff stream"),
                &mut digest_writer,
                &options,
                progress,
            )?;
            drop(digest_writer);
            let flushed = diff.flush().and_then(|()| digest.flush());
            flushed.map_err(|e| Error::Io {
                path: "standard output".into(),
                op: "write",
                source: e,
            })?;
            if let Some(reason) = progress.before_commit() {
                return Err(Error::Stopped { reason });
            }
            drop(previous);
            drop(run_dir);
            Ok(report)
        }),
    )?;
    Ok((facts, report_json(&report)))
}

/// `run.PID` beside the agent, in its private directory: this run's
/// temporary files, removed when the run ends (and by the next run's
/// preparation if this one was killed).
struct RunDir {
    path: PathBuf,
}

impl RunDir {
    fn create() -> blockdiff_core::Result<Self> {
        let exe = std::env::current_exe().map_err(|e| Error::Io {
            path: "/proc/self/exe".into(),
            op: "find the agent's directory",
            source: e,
        })?;
        let path = exe.with_file_name(format!("run.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| Error::Io {
                path: path.clone(),
                op: "create the run directory",
                source: e,
            })?;
        Ok(RunDir { path })
    }

    /// Copies stdin into `previous.digest` and returns its path.
    fn receive_previous_digest(&self) -> blockdiff_core::Result<PathBuf> {
        let path = self.path.join("previous.digest");
        let io_error = |op, e| Error::Io {
            path: path.clone(),
            op,
            source: e,
        };
        let mut file = std::fs::File::create(&path).map_err(|e| io_error("create", e))?;
        io::copy(&mut io::stdin().lock(), &mut file)
            .map_err(|e| io_error("receive the previous digest into", e))?;
        Ok(path)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Passes the dump's progress to the backup host (a packet every 4 MiB, for
/// its progress bar) and everything else to the inner progress.
struct ForwardProgress<'a> {
    inner: &'a mut dyn Progress,
    packets: &'a Packets,
    total: Option<u64>,
    done: u64,
    sent: u64,
}

impl<'a> ForwardProgress<'a> {
    fn new(inner: &'a mut dyn Progress, packets: &'a Packets, total: Option<u64>) -> Self {
        let _ = packets.send(PacketKind::Progress, &progress_payload(total, 0));
        ForwardProgress {
            inner,
            packets,
            total,
            done: 0,
            sent: 0,
        }
    }
}

impl Progress for ForwardProgress<'_> {
    fn notice(&mut self, notice: Notice) {
        self.inner.notice(notice);
    }

    fn advance(&mut self, bytes: u64) {
        self.done += bytes;
        if self.done - self.sent >= 4 << 20 {
            self.sent = self.done;
            let _ = self.packets.send(
                PacketKind::Progress,
                &progress_payload(self.total, self.done),
            );
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
