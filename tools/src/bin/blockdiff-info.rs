//! `blockdiff-info`: the generations of a backup, as a table or JSON.

use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use blockdiff_core::{GenerationInfo, chain_info, civil_from_days};
use blockdiff_storage::ChainLocation;
use blockdiff_tools::{KeyArgs, StorageArgs, outln, run_main};
use clap::Parser;
use serde::Serialize;

const EXAMPLES: &str = "\
Examples:
  blockdiff-info /var/backup/db
  blockdiff-info /var/backup/db --json | jq '.generations[-1].changed_percent'
  blockdiff-info s3://backups/db --endpoint http://127.0.0.1:3900   # a chain in a bucket

Columns: generation, creation time (UTC), source size, blocks changed and
their share of the source, bytes on disk (diff + digest), compression ratio
(block data bytes per byte of diff), format and hash.

Exit status: 0 success, 1 failure (no backup under NAME, a damaged file, or
the output could not be written whole: silently when a reader such as
`head -1` closed the pipe), 2 usage error.";

/// Show the generations of a blockdiff backup.
#[derive(Debug, Parser)]
#[command(name = "blockdiff-info", version, after_help = EXAMPLES)]
struct Args {
    /// Path prefix of the backup's files, e.g. /var/backup/db, or
    /// s3://BUCKET/PREFIX/NAME on an object store
    name: std::path::PathBuf,

    /// Print one JSON object instead of a table, for monitoring
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    storage: StorageArgs,

    #[command(flatten)]
    key: KeyArgs,
}

fn main() -> ExitCode {
    run_main("blockdiff-info", run)
}

fn unix_seconds(t: Option<SystemTime>) -> Option<f64> {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
}

/// `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(t: Option<SystemTime>) -> String {
    let Some(secs) = unix_seconds(t).map(|s| s as i64) else {
        return "-".into();
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// `--json`: the chain.
#[derive(Serialize)]
struct ChainJson<'a> {
    name: &'a Path,
    current_generation: Option<u64>,
    bytes_on_disk: u64,
    generations: Vec<GenerationJson<'a>>,
}

/// `--json`: one generation.
#[derive(Serialize)]
struct GenerationJson<'a> {
    generation: u64,
    /// The generation it is laid over (null for a base).
    parent: Option<u64>,
    diff: &'a Path,
    format: String,
    hash: &'static str,
    created_unix: Option<f64>,
    source_bytes: Option<u64>,
    block_size: u32,
    blocks: u64,
    changed_blocks: u64,
    zero_blocks: u64,
    changed_percent: f64,
    raw_bytes: u64,
    diff_bytes: u64,
    digest_bytes: u64,
    compression_ratio: f64,
}

impl<'a> GenerationJson<'a> {
    fn new(g: &'a GenerationInfo) -> Self {
        GenerationJson {
            generation: g.generation,
            parent: g.parent,
            diff: &g.diff_path,
            format: g.format.to_string(),
            hash: g.hash.name(),
            created_unix: unix_seconds(g.created),
            source_bytes: g.source_size,
            block_size: g.block_size,
            blocks: g.blocks,
            changed_blocks: g.changed_blocks,
            zero_blocks: g.zero_blocks,
            changed_percent: g.changed_percent(),
            raw_bytes: g.raw_bytes,
            diff_bytes: g.diff_bytes,
            digest_bytes: g.digest_bytes,
            compression_ratio: g.compression_ratio(),
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let location = ChainLocation::open(&args.name, &args.storage.to_options())?
        .with_encryption(args.key.encryption()?);
    let generations = chain_info(location.source())?;
    if args.json {
        let total: u64 = generations
            .iter()
            .map(|g| g.diff_bytes + g.digest_bytes)
            .sum();
        let chain = ChainJson {
            name: &args.name,
            current_generation: generations.last().map(|g| g.generation),
            bytes_on_disk: total,
            generations: generations.iter().map(GenerationJson::new).collect(),
        };
        // Through a `Value`, whose keys are sorted: the output is as it was.
        let out = serde_json::to_value(chain)?;
        outln!("{out:#}")?;
        return Ok(());
    }
    outln!(
        "{:>4}  {:<19}  {:>10}  {:>16}  {:>10}  {:>6}  format",
        "gen",
        "created (UTC)",
        "source",
        "changed blocks",
        "on disk",
        "ratio"
    )?;
    for g in &generations {
        let size = match g.source_size {
            Some(s) => human(s),
            None => format!("~{}", human(g.blocks * u64::from(g.block_size))),
        };
        // After a prune folded generations: what each one is laid over.
        let link = match g.parent {
            None if g.generation > 1 => ", base (older generations folded into it)".to_owned(),
            Some(p) if p + 1 != g.generation => format!(", over {p} (those between folded)"),
            _ => String::new(),
        };
        outln!(
            "{:>4}  {:<19}  {:>10}  {:>9} {:>5.1}%  {:>10}  {:>5.2}x  {}, {}{link}",
            g.generation,
            utc(g.created),
            size,
            g.changed_blocks,
            g.changed_percent(),
            human(g.diff_bytes + g.digest_bytes),
            g.compression_ratio(),
            g.format,
            g.hash
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(Some(UNIX_EPOCH)), "1970-01-01 00:00:00");
        assert_eq!(
            utc(Some(UNIX_EPOCH + Duration::from_secs(1_763_734_567))),
            "2025-11-21 14:16:07"
        );
        assert_eq!(
            utc(Some(UNIX_EPOCH + Duration::from_secs(951_782_400))),
            "2000-02-29 00:00:00"
        );
        assert_eq!(utc(None), "-");
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human(512), "512 B");
        assert_eq!(human(1536), "1.5 KiB");
        assert_eq!(human(3 << 30), "3.0 GiB");
    }
}
