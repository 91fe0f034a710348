//! `blockdiff-restore`: rebuild an image from a chain of generations, or
//! apply one diff stream (the original `blockdiff_merge`).

use std::fs::File;
use std::io::{self, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use blockdiff_core::{GenerationStore, RestoreOptions, RestorePlan, apply_stream};
use blockdiff_tools::{StderrProgress, UsageError, run_main};
use clap::Parser;

const EXAMPLES: &str = "\
Examples:
  # the last committed generation of /var/backup/db
  blockdiff-restore /tmp/restored.img --from /var/backup/db

  # generation 2, onto a block device (never written past its end)
  blockdiff-restore /dev/vg0/restore --from /var/backup/db --generation 2

  # apply one diff stream to an image, as the original blockdiff_merge
  blockdiff-restore disk.img < disk.3
  zcat disk.4.gz | blockdiff-restore disk.img

With --from, generation K is rebuilt from generations K..1, each block
written once from the newest generation that has it, and every block is
checked against NAME.K.md5: a truncated or corrupt diff is reported, never
restored silently. A regular-file TARGET is written beside it and renamed
into place when complete, with all-zero blocks left as holes.

A single stream (without --from) cannot be checked: the legacy format has no
checksum. A gzip-compressed stream is recognised by its first bytes.

Exit status: 0 success, 1 failure, 2 usage error.";

/// Restore an image from blockdiff backups.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-restore", version, after_help = EXAMPLES)]
struct Args {
    /// File or block device to write
    target: PathBuf,

    /// Restore from the backup whose files start with NAME (NAME.ver, NAME.N, …)
    #[arg(long, value_name = "NAME")]
    from: Option<PathBuf>,

    /// Generation to restore [default: the last committed one]
    #[arg(short, long, value_name = "K", requires = "from")]
    generation: Option<u64>,

    /// Do not check the restored blocks against the generation's digest
    #[arg(long, requires = "from")]
    no_verify: bool,

    /// Read the single diff stream from FILE instead of standard input
    #[arg(short, long, value_name = "FILE", conflicts_with = "from")]
    input: Option<PathBuf>,

    /// Print nothing on success
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    run_main("blockdiff-restore", run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let mut progress = StderrProgress::new("blockdiff-restore", args.quiet);
    let report = if let Some(name) = &args.from {
        let store = GenerationStore::new(name);
        let options = RestoreOptions {
            generation: args.generation,
            verify: !args.no_verify,
        };
        let plan = RestorePlan::new(&store, &options)?;
        plan.execute(&args.target, &mut progress)?
    } else {
        let (input, name): (Box<dyn io::Read + Send>, PathBuf) = match &args.input {
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
        let (_, stream) = blockdiff_core::Compression::sniff(input)
            .with_context(|| format!("{}: cannot read", name.display()))?;
        apply_stream(stream, &name, &args.target, &mut progress)?
    };
    if !args.quiet {
        let what = if report.generation > 0 {
            format!("generation {}", report.generation)
        } else {
            "diff stream".to_owned()
        };
        eprintln!(
            "blockdiff-restore: restored {what} to {}: {} bytes, {} blocks{}{}",
            args.target.display(),
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
        );
    }
    Ok(())
}
