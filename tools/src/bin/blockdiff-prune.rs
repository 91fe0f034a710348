//! `blockdiff-prune`: removes old period chains (`NAME-YYYYMM`,
//! `NAME-YYYYWww`, `NAME-YYYYMMDD`) that `blockdiff-backup --chain` made.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use blockdiff_core::{CivilDate, PeriodChain, PruneAction, PrunePlan, PrunePolicy, PruneReport};
use blockdiff_run::local_today;
use blockdiff_storage::period_chains;
use blockdiff_tools::{StderrProgress, StorageArgs, run_main};
use clap::{ArgGroup, Parser};
use serde::Serialize;
use serde_json::Value;

const EXAMPLES: &str = "\
Examples:
  blockdiff-backup --chain monthly /var/backup/db /srv/mysql.img   # nightly: /var/backup/db-YYYYMM
  blockdiff-prune /var/backup/db --keep 3          # keep the 3 newest chains
  blockdiff-prune /var/backup/db --keep-days 90    # keep chains backed up in the last 90 days
  blockdiff-prune /var/backup/db --keep 3 --dry-run --json
  blockdiff-prune s3://backups/web1/db --keep 6 --endpoint http://127.0.0.1:3900

The chains of NAME are NAME-YYYYMM, NAME-YYYYWww and NAME-YYYYMMDD; other
files that merely start with NAME- are never touched. The age of a chain is
that of its last backup (the time of its NAME-KEY.ver).

Never deleted: the newest chain, the chain of the current period (local
date), and a chain that another run has locked (a backup running on it). A
chain is deleted under its lock, so no backup can start on it meanwhile:
its .ver first, so that a chain half deleted (by a crash) is never taken for
a valid one, then every generation's diff, digest, meta.json and the
leftovers of interrupted runs, and its .lock last. A chain without a .ver
(an interrupted first backup, a half-deleted chain) is not counted and is
deleted unless it is in use.

On an object store (s3://BUCKET/PREFIX/NAME) the same holds for its
objects: the age of a chain is that of its NAME-KEY.ver object, its lock
is the NAME-KEY.lock object a backup writes (a chain that a run on another
host holds is kept), and a deleted chain's unfinished uploads are aborted.

Output: one line per chain, kept or deleted, and why; --json prints one
object instead.

Exit status: 0 success (also when a locked chain was kept), 1 failure,
2 usage error.";

/// Delete old period chains of NAME, keeping the newest N or those backed
/// up in the last DAYS days.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-prune", version, after_help = EXAMPLES)]
#[command(group(ArgGroup::new("policy").required(true).args(["keep", "keep_days"])))]
struct Args {
    /// Base name of the chains, as given to `blockdiff-backup --chain`,
    /// e.g. /var/backup/db or s3://BUCKET/PREFIX/db
    name: PathBuf,

    /// Keep the newest N chains (by period)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    keep: Option<u64>,

    /// Keep the chains whose last backup is younger than DAYS days
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..))]
    keep_days: Option<u32>,

    /// Show what would be deleted; delete nothing
    #[arg(short = 'n', long)]
    dry_run: bool,

    /// Print one JSON object instead of lines
    #[arg(long)]
    json: bool,

    /// Print nothing on success (errors still go to stderr)
    #[arg(short, long)]
    quiet: bool,

    #[command(flatten)]
    storage: StorageArgs,
}

fn main() -> ExitCode {
    run_main("blockdiff-prune", run)
}

fn unix_seconds(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}

/// `--json`: one chain, kept or deleted (with its files).
#[derive(Serialize)]
struct ChainJson<'a> {
    chain: &'a Path,
    period: &'static str,
    key: &'a str,
    last_backup: Option<u64>,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<&'a [PathBuf]>,
}

impl<'a> ChainJson<'a> {
    fn new(chain: &'a PeriodChain, reason: &dyn std::fmt::Display) -> Self {
        ChainJson {
            chain: chain.name(),
            period: chain.period().as_str(),
            key: chain.key(),
            last_backup: unix_seconds(chain.last_backup()),
            reason: reason.to_string(),
            files: None,
        }
    }

    fn with_files(self, files: &'a [PathBuf]) -> Self {
        ChainJson {
            files: Some(files),
            ..self
        }
    }
}

/// `--json`: the policy.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum PolicyJson {
    Keep(usize),
    KeepDays(u32),
}

/// `--json`: the run.
#[derive(Serialize)]
struct PruneJson<'a> {
    name: &'a Path,
    policy: PolicyJson,
    today: String,
    dry_run: bool,
    kept_count: usize,
    deleted_count: usize,
    kept: Vec<ChainJson<'a>>,
    deleted: Vec<ChainJson<'a>>,
}

fn run(args: Args) -> anyhow::Result<()> {
    let policy = match (args.keep, args.keep_days) {
        (Some(n), None) => PrunePolicy::Keep(usize::try_from(n).unwrap_or(usize::MAX)),
        (None, Some(days)) => PrunePolicy::KeepDays(days),
        _ => unreachable!("clap requires exactly one of --keep and --keep-days"),
    };
    let today = local_today()?;
    let (set, deleter) = period_chains(&args.name, &args.storage.to_options())?;
    let plan = PrunePlan::new_in(&set, policy, today, SystemTime::now(), &*deleter)?;
    let report = if args.dry_run {
        None
    } else {
        Some(plan.clone().execute_in(
            &*deleter,
            &mut StderrProgress::new("blockdiff-prune", args.quiet),
        )?)
    };
    // A dry run's only job is to print: a closed stdout fails it (exit 1,
    // silently for `| head`). Once chains were deleted the work is done: the
    // listing is best effort, and the run exits 0 whether it printed or not.
    let mut out = blockdiff_tools::Stdout::lock(if report.is_some() {
        blockdiff_tools::OutputMode::BestEffort
    } else {
        blockdiff_tools::OutputMode::Required
    });
    if args.json {
        let value = to_json(&args, policy, today, &plan, report.as_ref())?;
        writeln!(out, "{value:#}")?;
        return Ok(());
    }
    if args.quiet {
        return Ok(());
    }
    if set.chains().is_empty() {
        writeln!(
            out,
            "no period chains of {} ({}-YYYYMM, -YYYYWww or -YYYYMMDD)",
            args.name.display(),
            file_name(&args.name)
        )?;
        return Ok(());
    }
    match &report {
        None => {
            for d in plan.decisions() {
                match &d.action {
                    PruneAction::Keep(reason) => {
                        writeln!(out, "keep         {}: {reason}", d.chain.name().display())?;
                    }
                    PruneAction::Delete(reason) => writeln!(
                        out,
                        "would delete {}: {reason} ({} files)",
                        d.chain.name().display(),
                        d.chain.files().len()
                    )?,
                }
            }
        }
        Some(report) => print_report(&mut out, report)?,
    }
    Ok(())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The chains kept and deleted, oldest first.
fn print_report(out: &mut impl Write, report: &PruneReport) -> io::Result<()> {
    let mut lines: Vec<(&PeriodChain, String)> = report
        .kept
        .iter()
        .map(|(chain, reason)| {
            (
                chain,
                format!("kept    {}: {reason}", chain.name().display()),
            )
        })
        .chain(report.deleted.iter().map(|d| {
            (
                &d.chain,
                format!(
                    "deleted {}: {} ({} files)",
                    d.chain.name().display(),
                    d.reason,
                    d.removed.len()
                ),
            )
        }))
        .collect();
    lines.sort_by(|a, b| {
        (a.0.start(), a.0.period(), a.0.key()).cmp(&(b.0.start(), b.0.period(), b.0.key()))
    });
    for (_, line) in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

fn to_json(
    args: &Args,
    policy: PrunePolicy,
    today: CivilDate,
    plan: &PrunePlan,
    report: Option<&PruneReport>,
) -> serde_json::Result<Value> {
    let (kept, deleted): (Vec<ChainJson<'_>>, Vec<ChainJson<'_>>) = match report {
        None => {
            let mut kept = Vec::new();
            let mut deleted = Vec::new();
            for d in plan.decisions() {
                match &d.action {
                    PruneAction::Keep(reason) => kept.push(ChainJson::new(&d.chain, reason)),
                    PruneAction::Delete(reason) => {
                        deleted.push(ChainJson::new(&d.chain, reason).with_files(d.chain.files()));
                    }
                }
            }
            (kept, deleted)
        }
        Some(r) => (
            r.kept
                .iter()
                .map(|(chain, reason)| ChainJson::new(chain, reason))
                .collect(),
            r.deleted
                .iter()
                .map(|d| ChainJson::new(&d.chain, &d.reason).with_files(&d.removed))
                .collect(),
        ),
    };
    let policy = match policy {
        PrunePolicy::Keep(n) => PolicyJson::Keep(n),
        PrunePolicy::KeepDays(d) => PolicyJson::KeepDays(d),
    };
    // Through a `Value`, whose keys are sorted: the output is as it was.
    serde_json::to_value(PruneJson {
        name: &args.name,
        policy,
        today: today.to_string(),
        dry_run: args.dry_run,
        kept_count: kept.len(),
        deleted_count: deleted.len(),
        kept,
        deleted,
    })
}
