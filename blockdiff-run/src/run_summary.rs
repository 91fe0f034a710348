//! [`RunSummary`]: one typed record per backup run, for monitoring
//! (`blockdiff-backup --json`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use blockdiff_core::BackupReport;
use serde::Serialize;
use serde_json::Value;

use crate::{RunFacts, ScanKind, TrackingRecord, error_line, timestamp};

/// What one backup run did (or how it failed), printed by `--json`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSummary {
    /// The chain (NAME).
    pub name: PathBuf,
    /// The source, as the metadata names it (`/srv/db.img`, `lvm:vg0/db`).
    pub source: String,
    /// When the run started (`YYYY-MM-DD HH:MM:SS`, local time).
    pub started: String,
    /// When it ended.
    pub finished: String,
    /// Its wall-clock time.
    pub duration_seconds: f64,
    /// The generation's figures; `None` when the run failed.
    pub report: Option<BackupReport>,
    /// Seconds the services stayed quiesced (without `--quiesce`, `None`).
    pub freeze_window_seconds: Option<f64>,
    /// The snapshot's peak fill (without `--lvm`, `None`).
    pub snapshot_peak_fill_percent: Option<f64>,
    /// How a thin volume's changed-block tracking went (without it,
    /// `None`).
    pub tracking: Option<TrackingRecord>,
    /// The error line of a failed run.
    pub error: Option<String>,
}

/// A run being timed: [`SummaryClock::succeeded`] or
/// [`SummaryClock::failed`] makes its [`RunSummary`].
#[derive(Debug)]
pub struct SummaryClock {
    name: PathBuf,
    source: String,
    started: String,
    clock: Instant,
}

impl RunSummary {
    /// Starts timing the run of chain `name` from `source`.
    pub fn start(name: &Path, source: impl ToString) -> SummaryClock {
        SummaryClock {
            name: name.to_owned(),
            source: source.to_string(),
            started: timestamp(),
            clock: Instant::now(),
        }
    }

    /// Whether the run succeeded.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }

    /// Block data bytes per byte of diff on disk; `None` when either is 0.
    pub fn compression_ratio(&self) -> Option<f64> {
        let r = self.report.as_ref()?;
        (r.dump.changed_bytes > 0 && r.diff_bytes > 0)
            .then(|| r.dump.changed_bytes as f64 / r.diff_bytes as f64)
    }

    /// The JSON object: `ok`, `error` (null on success), `generation`,
    /// `name`, `source`, `bytes_read` (fewer than `source_bytes` when
    /// tracking left blocks unread), `source_bytes`, `blocks`,
    /// `blocks_changed`,
    /// `zero_blocks`, `bytes_changed`, `bytes_written`,
    /// `compression_ratio`, `duration_seconds`, `freeze_window_seconds`,
    /// `snapshot_peak_fill_percent`, `tracking` (`scan`: `tracked`,
    /// `full` or `verified`; `fallback`: why not tracked;
    /// `untracked_changes`: what a verifying scan found the pool had not
    /// reported; `retained`: the snapshot kept as the next run's base; or
    /// null), `hash`, `format`, `started`, `finished`. A failed run's
    /// figures are null.
    pub fn to_json(&self) -> Value {
        let r = self.report.as_ref();
        let json = SummaryJson {
            ok: self.ok(),
            error: self.error.as_deref(),
            generation: r.map(|r| r.generation),
            name: &self.name,
            source: &self.source,
            bytes_read: r.map(|r| r.dump.read_bytes),
            source_bytes: r.map(|r| r.dump.source_bytes),
            blocks: r.map(|r| r.dump.blocks),
            blocks_changed: r.map(|r| r.dump.changed_blocks),
            zero_blocks: r.map(|r| r.dump.zero_blocks),
            bytes_changed: r.map(|r| r.dump.changed_bytes),
            bytes_written: r.map(|r| r.diff_bytes),
            compression_ratio: self.compression_ratio(),
            duration_seconds: self.duration_seconds,
            freeze_window_seconds: self.freeze_window_seconds,
            snapshot_peak_fill_percent: self.snapshot_peak_fill_percent,
            tracking: self.tracking.as_ref().map(|t| TrackingJson {
                scan: t.scan.as_str(),
                fallback: t.fallback.as_deref(),
                untracked_changes: (t.scan == ScanKind::Verified).then_some(t.untracked_changes),
                retained: t.retained.as_ref().map(ToString::to_string),
            }),
            hash: r.map(|r| r.dump.hash.name()),
            format: r.map(|r| r.format.to_string()),
            started: &self.started,
            finished: &self.finished,
        };
        // A `Value`'s keys are sorted: the object prints as it always did.
        serde_json::to_value(json).expect("a summary serialises")
    }
}

/// The `--json` object's fields.
#[derive(Serialize)]
struct SummaryJson<'a> {
    ok: bool,
    error: Option<&'a str>,
    generation: Option<u64>,
    name: &'a Path,
    source: &'a str,
    bytes_read: Option<u64>,
    source_bytes: Option<u64>,
    blocks: Option<u64>,
    blocks_changed: Option<u64>,
    zero_blocks: Option<u64>,
    bytes_changed: Option<u64>,
    bytes_written: Option<u64>,
    compression_ratio: Option<f64>,
    duration_seconds: f64,
    freeze_window_seconds: Option<f64>,
    snapshot_peak_fill_percent: Option<f64>,
    tracking: Option<TrackingJson<'a>>,
    hash: Option<&'static str>,
    format: Option<String>,
    started: &'a str,
    finished: &'a str,
}

/// The `--json` object's `tracking`.
#[derive(Serialize)]
struct TrackingJson<'a> {
    scan: &'static str,
    fallback: Option<&'a str>,
    untracked_changes: Option<u64>,
    retained: Option<String>,
}

impl SummaryClock {
    /// When the run started, as the summary shows it (also the metadata's
    /// `started`).
    pub fn started(&self) -> &str {
        &self.started
    }

    /// The summary of a run that committed `report`; `facts` give the
    /// freeze window and the snapshot's peak fill.
    pub fn succeeded(self, report: &BackupReport, facts: &RunFacts) -> RunSummary {
        RunSummary {
            report: Some(report.clone()),
            freeze_window_seconds: facts.freeze_window_seconds,
            snapshot_peak_fill_percent: facts.snapshot_peak_fill_percent,
            tracking: facts.tracking.clone(),
            ..self.finish(None)
        }
    }

    /// The summary of a run that failed with `error` (its causes on one
    /// line, as [`error_line`] writes them).
    pub fn failed(self, error: &(dyn std::error::Error + 'static)) -> RunSummary {
        self.finish(Some(error_line(error)))
    }

    fn finish(self, error: Option<String>) -> RunSummary {
        RunSummary {
            name: self.name,
            source: self.source,
            started: self.started,
            finished: timestamp(),
            duration_seconds: self.clock.elapsed().as_secs_f64(),
            report: None,
            freeze_window_seconds: None,
            snapshot_peak_fill_percent: None,
            tracking: None,
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockdiff_core::{DiffFormat, DumpReport};

    fn report() -> BackupReport {
        BackupReport {
            generation: 3,
            format: DiffFormat::default(),
            dump: DumpReport {
                block_size: 16384,
                source_bytes: 10 * 16384,
                read_bytes: 10 * 16384,
                blocks: 10,
                changed_blocks: 2,
                changed_bytes: 2 * 16384,
                zero_blocks: 1,
                ..DumpReport::default()
            },
            diff_bytes: 8192,
        }
    }

    #[test]
    fn a_successful_run_has_every_figure() {
        let mut facts = RunFacts::default();
        facts.record_peak_fill(12.5);
        let clock = RunSummary::start(Path::new("/b/db"), "lvm:vg0/db");
        assert_eq!(clock.started().len(), 19);
        let s = clock.succeeded(&report(), &facts);
        assert!(s.ok());
        let v = s.to_json();
        assert_eq!(v["ok"], true);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["generation"], 3);
        assert_eq!(v["name"], "/b/db");
        assert_eq!(v["source"], "lvm:vg0/db");
        assert_eq!(v["bytes_read"], 163840);
        assert_eq!(v["source_bytes"], 163840);
        assert_eq!(v["tracking"], Value::Null);
        assert_eq!(v["blocks"], 10);
        assert_eq!(v["blocks_changed"], 2);
        assert_eq!(v["zero_blocks"], 1);
        assert_eq!(v["bytes_changed"], 32768);
        assert_eq!(v["bytes_written"], 8192);
        assert_eq!(v["compression_ratio"], 4.0);
        assert_eq!(v["freeze_window_seconds"], Value::Null);
        assert_eq!(v["snapshot_peak_fill_percent"], 12.5);
        assert_eq!(v["hash"], "blake3");
        assert_eq!(v["format"], DiffFormat::default().to_string());
        assert!(v["duration_seconds"].as_f64().unwrap() >= 0.0);
        assert_eq!(v["started"].as_str().unwrap().len(), 19);
        assert_eq!(v["finished"].as_str().unwrap().len(), 19);
    }

    #[test]
    fn a_tracked_run_says_how_it_read() {
        let mut r = report();
        r.dump.read_bytes = 16384;
        let facts = RunFacts {
            tracking: Some(TrackingRecord {
                scan: ScanKind::Verified,
                fallback: None,
                read_bytes: 16384,
                untracked_changes: 2,
                retained: Some("vg0/db-bd-1-2-0".parse().unwrap()),
                thin_id: 4,
                size: 10 * 16384,
                runs_since_check: 0,
            }),
            ..RunFacts::default()
        };
        let v = RunSummary::start(Path::new("db"), "lvm:vg0/db")
            .succeeded(&r, &facts)
            .to_json();
        assert_eq!(
            (v["bytes_read"].as_u64(), v["source_bytes"].as_u64()),
            (Some(16384), Some(163840))
        );
        assert_eq!(
            v["tracking"],
            serde_json::json!({"scan": "verified", "fallback": null, "untracked_changes": 2, "retained": "vg0/db-bd-1-2-0"})
        );
    }

    #[test]
    fn nothing_changed_has_no_ratio_and_a_failure_no_figures() {
        let mut r = report();
        r.dump.changed_blocks = 0;
        r.dump.changed_bytes = 0;
        let facts = RunFacts {
            freeze_window_seconds: Some(0.25),
            ..RunFacts::default()
        };
        let v = RunSummary::start(Path::new("db"), "/srv/db.img")
            .succeeded(&r, &facts)
            .to_json();
        assert_eq!(v["compression_ratio"], Value::Null);
        assert_eq!(v["freeze_window_seconds"], 0.25);
        assert_eq!(v["snapshot_peak_fill_percent"], Value::Null);

        let err = crate::RunError::Backup {
            source_name: "/srv/db.img".into(),
            name: "db".into(),
            source: Box::new(crate::RunError::InvalidOption(
                "/srv/db.img: cannot open source: No such file".into(),
            )),
        };
        let s = RunSummary::start(Path::new("db"), "/srv/db.img").failed(&err);
        assert!(!s.ok());
        let v = s.to_json();
        assert_eq!(v["ok"], false);
        assert_eq!(
            v["error"],
            "backup of /srv/db.img to db failed: /srv/db.img: cannot open source: No such file"
        );
        assert_eq!(v["generation"], Value::Null);
        assert_eq!(v["bytes_written"], Value::Null);
        assert_eq!(v["source"], "/srv/db.img");
    }
}
