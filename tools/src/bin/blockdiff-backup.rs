//! `blockdiff-backup`: numbered, crash-safe generations of a file or device.

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use blockdiff_core::{BackupOptions, BlockSize, Compression, DumpOptions, GenerationStore, backup};
use blockdiff_tools::{StderrProgress, parse_block_size, run_main};
use clap::Parser;

const EXAMPLES: &str = "\
Examples:
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 1: every block
  blockdiff-backup /var/backup/db /srv/mysql.img    # generation 2: changed blocks only
  blockdiff-restore /tmp/restored.img --from /var/backup/db --generation 2

Files, beside NAME:
  NAME.ver     the last committed generation (decimal text)
  NAME.N       generation N's diff (NAME.N.gz with --gzip)
  NAME.N.md5   generation N's digest: one MD5 per block
  NAME.lock    held while a backup runs; a second backup of NAME fails at once

A generation is committed only once its files are fsynced and renamed into
place and NAME.ver is replaced atomically: a run that fails or is killed
leaves every committed generation intact, and the next run succeeds.
The files are those of the original blockdiff_backup, which can read them too.

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

    /// Compress the diff with gzip (NAME.N.gz, as the original's -z)
    #[arg(short = 'z', long)]
    gzip: bool,

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
    let options = BackupOptions {
        dump: DumpOptions {
            block_size: args.block_size,
            threads: args.threads,
            ..DumpOptions::default()
        },
        compression: if args.gzip {
            Compression::Gzip
        } else {
            Compression::None
        },
    };
    let source: Box<dyn Read + Send> = if args.source.as_os_str() == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(
            File::open(&args.source)
                .with_context(|| format!("{}: cannot open source", args.source.display()))?,
        )
    };
    let mut progress = StderrProgress::new("blockdiff-backup", args.quiet);
    let report =
        backup(&store, source, &args.source, &options, &mut progress).with_context(|| {
            format!(
                "backup of {} to {} failed",
                args.source.display(),
                args.name.display()
            )
        })?;
    if !args.quiet {
        let d = report.dump;
        eprintln!(
            "blockdiff-backup: generation {} of {}: {} of {} blocks changed ({} of {} bytes), diff is {} bytes",
            report.generation,
            args.name.display(),
            d.changed_blocks,
            d.blocks,
            d.changed_bytes,
            d.source_bytes,
            report.diff_bytes
        );
        eprintln!("blockdiff-backup: backup completed successfully");
    }
    Ok(())
}
