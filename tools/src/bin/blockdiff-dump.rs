//! `blockdiff-dump`: the low-level dump, as the original `blockdiff_dump`.

use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use blockdiff_core::BlockSize;
use blockdiff_run::FileDump;
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
numbers generations and commits them safely.

-o FILE and --new-digest FILE are written beside FILE and renamed over it only
when the whole dump succeeded (new files mode 0600); a device, FIFO or
/dev/fd/N is written in place and never removed.

Exit status: 0 success; 1 failure, including a diff that could not be written
whole (`| head` closed the pipe): the new digest is then not written; 2 usage
error (--threads above 8 per core, a binary diff to a terminal).";

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

    /// Read SOURCE with pread into a small buffer per thread instead of
    /// through a memory map of each chunk. The map is faster for an
    /// incremental dump (unchanged blocks are hashed where they lie in the
    /// page cache, never copied); this is for comparing the two
    #[arg(long)]
    no_mmap: bool,

    /// Print no notices
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    run_main("blockdiff-dump", run)
}

fn run(args: Args) -> anyhow::Result<()> {
    if args.output.is_none() && io::stdout().is_terminal() {
        return Err(UsageError(
            "refusing to write a binary diff to a terminal: redirect standard output or use -o FILE"
                .into(),
        )
        .into());
    }
    let dump = FileDump {
        source: args.source,
        old_digest: args.old_digest,
        new_digest: args.new_digest,
        output: args.output,
        block_size: args.block_size,
        format: args.format.to_choice(),
        polite: args.polite.to_options(),
        generation: args.generation,
        threads: args.threads,
        map_source: !args.no_mmap,
    };
    let mut progress = StderrProgress::new("blockdiff-dump", args.quiet);
    dump.run(io::stdin(), io::stdout().lock(), &mut progress)?;
    Ok(())
}
