//! `blockdiff-dump`: the low-level dump, as the original `blockdiff_dump`.

use std::fs::{self, File};
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use blockdiff_core::{
    BlockSize, DiffFormat, DigestReader, DigestWriter, DumpOptions, DumpSource, LegacySink, V2Sink,
    dump,
};
use blockdiff_tools::{
    FormatArgs, PoliteArgs, StderrProgress, UsageError, parse_block_size, run_main,
};
use clap::Parser;

const EXAMPLES: &str = "\
Examples:
  # full dump: every block, and the digest for the next run
  blockdiff-dump --new-digest disk.1.digest -o disk.1 /srv/disk.img

  # incremental dump: only the blocks whose hash differs from disk.1.digest
  blockdiff-dump --old-digest disk.1.digest --new-digest disk.2.digest -o disk.2 /srv/disk.img

  # the original's format, and its file descriptors 5 and 6 through /dev/fd
  blockdiff-dump --format legacy --old-digest /dev/fd/5 --new-digest /dev/fd/6 < disk.img 5< d.1.md5 6> d.2.md5 > d.2

An incremental dump keeps the old digest's format, block size and hash.
blockdiff-restore applies the output. Most users want blockdiff-backup, which
numbers generations and commits them safely.";

/// Write the blocks of a file or device that changed since a previous digest.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-dump", version, after_help = EXAMPLES)]
struct Args {
    /// File or block device to read [default: standard input]
    source: Option<PathBuf>,

    /// Block size of a full dump: bytes, or with a unit (16k, 1M). An
    /// incremental dump uses the old digest's block size.
    #[arg(short, long, env = "BLOCKSIZE", default_value = "16384", value_parser = parse_block_size)]
    block_size: BlockSize,

    /// Digest of the previous generation: only blocks whose hash differs
    /// from it are written
    #[arg(long, value_name = "FILE", visible_alias = "prev-digest")]
    old_digest: Option<PathBuf>,

    /// Where to write the digest of SOURCE, for the next incremental dump
    #[arg(long, value_name = "FILE")]
    new_digest: Option<PathBuf>,

    /// Write the diff to FILE instead of standard output
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    #[command(flatten)]
    format: FormatArgs,

    #[command(flatten)]
    polite: PoliteArgs,

    /// Generation number recorded in a v2 diff and digest [default: the old
    /// digest's plus one, or 1 for a full dump]
    #[arg(long, value_name = "N")]
    generation: Option<u64>,

    /// Hash and compression threads [default: one per core]
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    threads: usize,

    /// Print no notices
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    run_main("blockdiff-dump", run)
}

/// Removes a partly written output file unless disarmed.
struct RemoveOnFailure<'a>(Option<&'a Path>);

impl Drop for RemoveOnFailure<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            let _ = fs::remove_file(p);
        }
    }
}

fn create(path: &Path) -> anyhow::Result<BufWriter<File>> {
    let f = File::create(path).with_context(|| format!("{}: cannot create", path.display()))?;
    // Small writes (legacy records, digest entries, headers) are gathered;
    // a write at least this large (most v2 frames) goes to the file as it
    // is, without a copy through the buffer.
    Ok(BufWriter::with_capacity(128 << 10, f))
}

fn run(args: Args) -> anyhow::Result<()> {
    // First: the dump's threads inherit them from this one.
    args.polite.apply_priorities()?;
    if args.output.is_none() && io::stdout().is_terminal() {
        return Err(UsageError(
            "refusing to write a binary diff to a terminal: redirect standard output or use -o FILE"
                .into(),
        )
        .into());
    }
    let mut previous = args
        .old_digest
        .as_deref()
        .map(DigestReader::open)
        .transpose()?;
    // The format follows the old digest's unless asked for; a new dump is v2.
    let format = match (args.format.requested()?, &previous) {
        (Some(f), _) => f,
        (None, Some(p)) if p.spec().format == blockdiff_core::DigestFormat::Legacy => {
            DiffFormat::Legacy(blockdiff_core::Compression::None)
        }
        (None, _) => DiffFormat::default(),
    };
    let mut options = DumpOptions {
        block_size: args.block_size,
        hash: args.format.hash_for(Some(format)),
        generation: args
            .generation
            .unwrap_or_else(|| previous.as_ref().map_or(1, |p| p.spec().generation + 1)),
        threads: args.threads,
        ..DumpOptions::default()
    };
    args.polite.fill_dump_options(&mut options);
    let source: DumpSource<Box<dyn Read + Send>> = match &args.source {
        Some(p) if p.as_os_str() != "-" => DumpSource::open(p)?.boxed(),
        _ => DumpSource::stream(io::stdin(), "standard input").boxed(),
    };

    let mut cleanup_out = RemoveOnFailure(args.output.as_deref());
    let mut cleanup_digest = RemoveOnFailure(args.new_digest.as_deref());
    let (out, out_name): (Box<dyn Write>, PathBuf) = match &args.output {
        Some(p) => (Box::new(create(p)?), p.clone()),
        None => (
            Box::new(io::stdout().lock()),
            PathBuf::from("standard output"),
        ),
    };
    let (digest_out, digest_name): (Box<dyn Write>, PathBuf) = match &args.new_digest {
        Some(p) => (Box::new(create(p)?), p.clone()),
        None => (Box::new(io::sink()), PathBuf::from("(no digest)")),
    };
    let mut digest = DigestWriter::new(digest_out, digest_name);
    let mut progress = StderrProgress::new("blockdiff-dump", args.quiet);
    let prev = previous.as_mut();
    match format {
        DiffFormat::Legacy(compression) => {
            let mut sink = LegacySink::new(compression.writer(out), &out_name);
            dump(
                source,
                prev,
                &mut sink,
                &mut digest,
                &options,
                &mut progress,
            )?;
            sink.into_inner()?
                .finish()
                .with_context(|| format!("{}: cannot write", out_name.display()))?;
        }
        DiffFormat::V2 { compression, level } => {
            let mut sink = V2Sink::new(out, &out_name, compression, level);
            dump(
                source,
                prev,
                &mut sink,
                &mut digest,
                &options,
                &mut progress,
            )?;
            sink.into_inner()?
                .flush()
                .with_context(|| format!("{}: cannot write", out_name.display()))?;
        }
    }
    cleanup_out.0 = None;
    cleanup_digest.0 = None;
    Ok(())
}
