//! `blockdiff-repair`: rebuilds `NAME.ver` from the generations that
//! verify, removing nothing.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use blockdiff_storage::{ChainLocation, LockOptions};
use blockdiff_tools::{KeyArgs, OutputMode, StderrProgress, Stdout, StorageArgs, run_main};
use clap::Parser;

const EXAMPLES: &str = "\
Examples:
  blockdiff-repair /var/backup/db --dry-run   # what would NAME.ver say?
  blockdiff-repair /var/backup/db             # write it

blockdiff-backup refuses to go on when it finds files of generations that
NAME.ver does not vouch for: NAME.ver missing or 0 while NAME.1, NAME.2, …
exist, or NAME.K present beyond NAME.ver = K-1 (a run of the original
blockdiff_backup killed while writing NAME.K in place). It never removes
such files: they may be the only copy of a backup.

blockdiff-repair checks, newest first, each generation k that has files:
generations 1..k are restored in memory and checked against k's digest, as
'blockdiff-restore --verify-only' does. The newest k that verifies is
written to NAME.ver (a temporary, fsync, rename, directory fsync), under
the store's lock. Files of later generations are listed, with why the
first of them does not verify, and left alone: move or remove them by hand
once you no longer need them, and the next backup goes on from k.

On an object store (NAME = s3://BUCKET/PREFIX/NAME) the same is done
with its objects, under the lock a backup takes (the object NAME.lock;
--break-lock takes over a dead run's from another host), and NAME.ver is
replaced by one PUT.

Exit status: 0 success (NAME.ver says the newest generation that
verifies, or would with --dry-run), 1 failure, 2 usage error.";

/// Rebuild NAME.ver from the newest generation whose chain verifies;
/// nothing is removed.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-repair", version, after_help = EXAMPLES)]
struct Args {
    /// Path prefix of the backup's files, e.g. /var/backup/db, or
    /// s3://BUCKET/PREFIX/NAME
    name: PathBuf,

    /// Show what NAME.ver would say; write nothing
    #[arg(short = 'n', long)]
    dry_run: bool,

    /// Take over the lock of an s3:// chain that names a run on another
    /// host (which must be dead: two writers would damage the chain)
    #[arg(long)]
    break_lock: bool,

    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    key: KeyArgs,
}

fn main() -> ExitCode {
    run_main("blockdiff-repair", run)
}

fn run(args: Args) -> anyhow::Result<()> {
    let chain = ChainLocation::open(&args.name, &args.storage.to_options())?
        .with_encryption(args.key.encryption()?);
    let ver = chain.source().ver_path();
    let report = chain.repair(
        args.dry_run,
        &LockOptions {
            break_lock: args.break_lock,
            ..LockOptions::default()
        },
        &mut StderrProgress::new("blockdiff-repair", false),
    )?;
    // The repair is done (or, with --dry-run, its finding is the output):
    // a closed standard output fails only a dry run.
    let mut out = Stdout::lock(if args.dry_run {
        OutputMode::Required
    } else {
        OutputMode::BestEffort
    });
    let was = match report.previous {
        Some(g) => format!("said {g}"),
        None => "was missing or unreadable".into(),
    };
    let verb = match (args.dry_run, report.written) {
        (true, _) if report.previous != Some(report.verified) => "would write",
        (false, true) => "wrote",
        _ => "kept",
    };
    if report.verified == 0 {
        writeln!(
            out,
            "{}: no generation verifies; {} {verb} 0 ({was})",
            args.name.display(),
            ver.display()
        )?;
    } else {
        writeln!(
            out,
            "{}: generations 1-{} verify; {} {verb} {} ({was})",
            args.name.display(),
            report.verified,
            ver.display(),
            report.verified
        )?;
    }
    for (g, files) in &report.beyond {
        let names: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        writeln!(
            out,
            "generation {g} does not verify and was left alone: {}",
            names.join(" ")
        )?;
    }
    if let Some(why) = &report.first_failure {
        writeln!(out, "the newest of them failed: {why}")?;
    }
    Ok(())
}
