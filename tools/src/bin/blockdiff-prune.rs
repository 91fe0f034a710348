//! `blockdiff-prune`: thins one chain's generations by folding those a
//! policy does not keep into newer ones (`--keep-last`, `--keep-daily`,
//! …), or removes old period chains (`NAME-YYYYMM`, `NAME-YYYYWww`,
//! `NAME-YYYYMMDD`) that `blockdiff-backup --chain` made (`--keep`,
//! `--keep-days`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use blockdiff_core::{
    CivilDate, FoldOptions, PeriodChain, PruneAction, PruneGenerationsOptions,
    PruneGenerationsReport, PrunePlan, PrunePolicy, PruneReport, RetentionPolicy,
};
use blockdiff_run::{local_date, local_today};
use blockdiff_storage::{ChainLocation, period_chains};
use blockdiff_tools::{KeyArgs, StderrProgress, StorageArgs, run_main};
use clap::{ArgGroup, Parser};
use serde::Serialize;
use serde_json::Value;

const EXAMPLES: &str = "\
Examples, one chain (incremental forever):
  blockdiff-backup /var/backup/db /srv/mysql.img                   # nightly
  blockdiff-prune /var/backup/db --keep-daily 7 --keep-weekly 4 --keep-monthly 12
  blockdiff-prune /var/backup/db --keep-last 10 --dry-run          # what would go

A generation that the policy does not keep is folded into the next one
kept: that generation's diff is rewritten to hold the newest version of
every block the folded generations held, so it restores exactly as before,
keeps its number and its digest, and the folded generations' files go.
When generation 1 is not kept, the oldest generation kept becomes the new
base (a full). Nothing reads the source. The newest generation is always
kept (the next backup builds on it). The calendar rules count the days,
ISO weeks, months and years that have backups (in local time, by each
generation's creation time), newest first, and keep the newest generation
of each: --keep-daily 7 keeps the last backup of each of the 7 most recent
days with one. --keep-within takes a duration: 36h, 14d, 2w, 1w3d.

A fold writes the new diff beside the old one, checks every block of it
against the generation's digest, records its intent in NAME.fold, then
replaces the old diff in one rename and removes the folded generations.
Killed at any point, every kept generation still restores, and the next
prune or backup finishes or undoes the fold. Prune takes the chain's lock:
with a backup running it fails at once, or waits with --wait. A chain in
the original tool's format cannot be folded (its generations have no
parent links): it is refused.

On an object store (s3://BUCKET/PREFIX/NAME) a fold uploads the new diff
as NAME.K.fold.tmp, checks it by ranged reads, records its intent in the
object NAME.fold, then copies it over NAME.K (one upload, replaced whole)
and removes the folded generations' objects and cached digests; the next
prune or backup recognises by the intent whether the copy was made. It
downloads the diffs folded and uploads the new diff, then copies it once
more through this host (no server-side copy). --wait waits for a run on
this host; a lock object of another host fails the prune at once.

Examples, period chains (a new full backup each period):
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

Output: one line per generation (or chain), kept or removed, and why;
--json prints one object instead.

Exit status: 0 success (also when a locked chain was kept), 1 failure,
2 usage error.";

/// Thin one chain's generations by a retention policy (folding the
/// others into newer ones), or delete old period chains of NAME.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-prune", version, after_help = EXAMPLES)]
#[command(group(ArgGroup::new("policy").required(true).multiple(true).args([
    "keep", "keep_days", "keep_last", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within",
])))]
struct Args {
    /// The chain (with --keep-last and its kin), or the base name of the
    /// period chains (with --keep or --keep-days), as given to
    /// `blockdiff-backup`: /var/backup/db or s3://BUCKET/PREFIX/db
    name: PathBuf,

    /// Keep the newest N generations of the chain
    #[arg(long, value_name = "N", help_heading = "One chain's generations")]
    keep_last: Option<u32>,

    /// Keep the newest generation of each of the last N days with backups
    #[arg(long, value_name = "N", help_heading = "One chain's generations")]
    keep_daily: Option<u32>,

    /// … of each of the last N ISO weeks with backups
    #[arg(long, value_name = "N", help_heading = "One chain's generations")]
    keep_weekly: Option<u32>,

    /// … of each of the last N months with backups
    #[arg(long, value_name = "N", help_heading = "One chain's generations")]
    keep_monthly: Option<u32>,

    /// … of each of the last N years with backups
    #[arg(long, value_name = "N", help_heading = "One chain's generations")]
    keep_yearly: Option<u32>,

    /// Keep every generation made within DURATION of now (36h, 14d, 2w)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "One chain's generations")]
    keep_within: Option<u64>,

    /// With a backup running on the chain, wait for it rather than fail
    #[arg(long, help_heading = "One chain's generations")]
    wait: bool,

    /// Keep the newest N chains (by period)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Period chains",
          conflicts_with_all = GENERATION_OPTIONS, conflicts_with = "keep_days")]
    keep: Option<u64>,

    /// Keep the chains whose last backup is younger than DAYS days
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(1..), help_heading = "Period chains",
          conflicts_with_all = GENERATION_OPTIONS)]
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

    #[command(flatten)]
    key: KeyArgs,
}

/// The options of a generation policy, which the period options exclude.
const GENERATION_OPTIONS: [&str; 7] = [
    "keep_last",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
    "keep_within",
    "wait",
];

/// `--keep-within`: a whole number of hours, days or weeks, or a sum of
/// them (`1w3d`, `36h`).
fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "'{text}' is not a duration: give a number and a unit h, d or w, or a sum (36h, 14d, 2w, 1w3d)"
        )
    };
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit: u64 = match c {
            'h' => 3_600,
            'd' => 86_400,
            'w' => 7 * 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
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
    if args.keep.is_none() && args.keep_days.is_none() {
        return run_generations(&args);
    }
    if args.key.given() {
        anyhow::bail!(
            "--key-file and --passphrase-file are for one chain's generations (--keep-last and its kin); deleting whole chains needs no key"
        );
    }
    let policy = match (args.keep, args.keep_days) {
        (Some(n), None) => PrunePolicy::Keep(usize::try_from(n).unwrap_or(usize::MAX)),
        (None, Some(days)) => PrunePolicy::KeepDays(days),
        _ => unreachable!("clap requires --keep or --keep-days, not both"),
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

/// `--json` of a generation prune: one generation.
#[derive(Serialize)]
struct GenerationJson {
    generation: u64,
    created: i64,
    local_date: String,
    kept: bool,
    reasons: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    folded_into: Option<u64>,
}

/// `--json`: one fold.
#[derive(Serialize)]
struct FoldJson {
    into: u64,
    parent: Option<u64>,
    folded: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    read_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    old_diff_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    new_diff_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    removed_bytes: Option<u64>,
}

/// `--json`: the policy.
#[derive(Serialize)]
struct RetentionJson {
    last: u32,
    daily: u32,
    weekly: u32,
    monthly: u32,
    yearly: u32,
    within_seconds: Option<u64>,
}

/// `--json`: a generation prune.
#[derive(Serialize)]
struct GenerationsPruneJson<'a> {
    name: &'a Path,
    policy: RetentionJson,
    dry_run: bool,
    recovered_interrupted_fold: bool,
    kept_count: usize,
    folded_count: usize,
    generations: Vec<GenerationJson>,
    folds: Vec<FoldJson>,
}

/// One chain's generations: the policy's decision, then the folds.
fn run_generations(args: &Args) -> anyhow::Result<()> {
    let policy = RetentionPolicy {
        last: args.keep_last.unwrap_or(0),
        daily: args.keep_daily.unwrap_or(0),
        weekly: args.keep_weekly.unwrap_or(0),
        monthly: args.keep_monthly.unwrap_or(0),
        yearly: args.keep_yearly.unwrap_or(0),
        within_seconds: args.keep_within,
    };
    if policy.is_empty() {
        anyhow::bail!(
            "the policy keeps nothing but the newest generation (every --keep-* is 0): give at least one count above 0"
        );
    }
    let location = ChainLocation::open(&args.name, &args.storage.to_options())?
        .with_encryption(args.key.encryption()?);
    let mut options = PruneGenerationsOptions::new(policy);
    options.local_date = local_date;
    options.dry_run = args.dry_run;
    options.fold = FoldOptions {
        wait: args.wait,
        ..FoldOptions::default()
    };
    let report = location.prune_generations(
        &options,
        &mut StderrProgress::new("blockdiff-prune", args.quiet),
    )?;
    let mut out = blockdiff_tools::Stdout::lock(if args.dry_run {
        blockdiff_tools::OutputMode::Required
    } else {
        blockdiff_tools::OutputMode::BestEffort
    });
    if args.json {
        let value = serde_json::to_value(generations_json(args, &policy, &report))?;
        writeln!(out, "{value:#}")?;
        return Ok(());
    }
    if args.quiet {
        return Ok(());
    }
    print_generations(&mut out, args.dry_run, &report)?;
    Ok(())
}

/// Which generation each folded one goes into.
fn folded_into(report: &PruneGenerationsReport, generation: u64) -> Option<u64> {
    report
        .groups
        .iter()
        .find(|g| g.folded.contains(&generation))
        .map(|g| g.into)
}

fn generations_json<'a>(
    args: &'a Args,
    policy: &RetentionPolicy,
    report: &PruneGenerationsReport,
) -> GenerationsPruneJson<'a> {
    let generations: Vec<GenerationJson> = report
        .decisions
        .iter()
        .zip(&report.times)
        .map(|(d, t)| GenerationJson {
            generation: d.generation,
            created: t.created,
            local_date: t.local_date.to_string(),
            kept: d.is_kept(),
            reasons: d.reasons.iter().map(ToString::to_string).collect(),
            folded_into: folded_into(report, d.generation),
        })
        .collect();
    let done = |into: u64| report.folds.iter().find(|f| f.group.into == into);
    GenerationsPruneJson {
        name: &args.name,
        policy: RetentionJson {
            last: policy.last,
            daily: policy.daily,
            weekly: policy.weekly,
            monthly: policy.monthly,
            yearly: policy.yearly,
            within_seconds: policy.within_seconds,
        },
        dry_run: args.dry_run,
        recovered_interrupted_fold: report.recovered,
        kept_count: generations.iter().filter(|g| g.kept).count(),
        folded_count: generations.iter().filter(|g| !g.kept).count(),
        generations,
        folds: report
            .groups
            .iter()
            .map(|g| FoldJson {
                into: g.into,
                parent: g.parent,
                folded: g.folded.clone(),
                read_bytes: done(g.into).map(|f| f.read_bytes),
                old_diff_bytes: done(g.into).map(|f| f.old_diff_bytes),
                new_diff_bytes: done(g.into).map(|f| f.new_diff_bytes),
                removed_bytes: done(g.into).map(|f| f.removed_bytes),
            })
            .collect(),
    }
}

/// A line per generation, newest first, then a line per fold.
fn print_generations(
    out: &mut impl Write,
    dry_run: bool,
    report: &PruneGenerationsReport,
) -> io::Result<()> {
    if report.recovered {
        writeln!(
            out,
            "an interrupted fold of an earlier run was finished or undone"
        )?;
    }
    for (d, t) in report.decisions.iter().zip(&report.times) {
        let why = if d.is_kept() {
            let reasons: Vec<String> = d.reasons.iter().map(ToString::to_string).collect();
            format!("keep  ({})", reasons.join(", "))
        } else {
            let into = folded_into(report, d.generation).unwrap_or(0);
            if dry_run {
                format!("would fold into {into}")
            } else {
                format!("folded into {into}")
            }
        };
        writeln!(out, "{:>8}  {}  {why}", d.generation, t.local_date)?;
    }
    let (mut removed, mut before, mut after) = (0u64, 0u64, 0u64);
    for f in &report.folds {
        removed += f.removed_bytes;
        before += f.old_diff_bytes;
        after += f.new_diff_bytes;
    }
    if report.groups.is_empty() {
        writeln!(out, "nothing to fold: the policy keeps every generation")?;
    } else if dry_run {
        let folded: usize = report.groups.iter().map(|g| g.folded.len()).sum();
        writeln!(
            out,
            "would fold {folded} generation(s) into {} (dry run: nothing changed)",
            report.groups.len()
        )?;
    } else {
        let folded: usize = report.folds.iter().map(|f| f.group.folded.len()).sum();
        writeln!(
            out,
            "folded {folded} generation(s) into {}: {} MiB removed, the diffs kept went from {} to {} MiB",
            report.folds.len(),
            mib(removed),
            mib(before),
            mib(after)
        )?;
    }
    Ok(())
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / f64::from(1u32 << 20))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("36h"), Ok(36 * 3_600));
        assert_eq!(parse_duration("14d"), Ok(14 * 86_400));
        assert_eq!(parse_duration("1w3d"), Ok(10 * 86_400));
        for bad in [
            "",
            "3",
            "h",
            "3m",
            "0d",
            "1.5d",
            "-1d",
            "99999999999999999999w",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
