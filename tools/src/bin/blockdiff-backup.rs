//! `blockdiff-backup`: numbered, crash-safe generations of a file or device.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use blockdiff_core::{BackupOptions, BlockSize, DumpOptions, DumpSource, GenerationStore, backup};
use blockdiff_tools::{FormatArgs, StderrProgress, parse_block_size, run_main};
use clap::Parser;

const EXAMPLES: &str = "\
Examples:
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 1: every block
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 2: changed blocks only
  blockdiff-restore /tmp/restored.img --from /var/backup/db --generation 2

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
    source: PathBuf,

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
    let source: DumpSource<Box<dyn Read + Send>> = if args.source.as_os_str() == "-" {
        DumpSource::stream(io::stdin(), "standard input").boxed()
    } else {
        DumpSource::open(&args.source)?.boxed()
    };
    let mut progress = StderrProgress::new("blockdiff-backup", args.quiet);
    let report = backup(&store, source, &options, &mut progress).with_context(|| {
        format!(
            "backup of {} to {} failed",
            args.source.display(),
            args.name.display()
        )
    })?;
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
