//! [`RunFacts`]: what a run learnt about its source (snapshot, fill,
//! freeze window, the quiescers' records), kept as typed values and
//! written to `NAME.N.meta.json` and the agent's report.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::TrackingRecord;

/// The facts of one run. `NAME.N.meta.json` is a flat JSON object of
/// strings (FORMAT.md); [`RunFacts::to_metadata`] writes these facts in
/// that shape, with the numbers formatted as they always were (`0.250`
/// seconds, `12.5` percent).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFacts {
    /// When the run started (`YYYY-MM-DD HH:MM:SS`, local time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<String>,
    /// When the generation was committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The remote host (`[user@]host`) of a remote source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// What was read (`/srv/db.img`, `lvm:vg0/db`, `db1:lvm:vg0/db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The generation committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// The snapshot that was read (`vg0/db-bd-…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// `thin` or `thick`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_kind: Option<String>,
    /// The snapshot's peak fill, in percent (to 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_peak_fill_percent: Option<f64>,
    /// How long the services stayed quiesced, in seconds (to 0.001).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_window_seconds: Option<f64>,
    /// The quiescers frozen, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quiesced: Vec<String>,
    /// What the quiescers recorded while frozen (`mysql.binlog_file`,
    /// `mysql.binlog_position`, …).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recorded: BTreeMap<String, String>,
    /// How a thin volume's changed-block tracking went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingRecord>,
}

impl RunFacts {
    /// Facts of a run that started at `started`.
    pub fn started_at(started: impl Into<String>) -> Self {
        RunFacts {
            started: Some(started.into()),
            ..RunFacts::default()
        }
    }

    /// Records a freeze: its window (rounded to the millisecond, as it is
    /// written), the quiescers and what they recorded.
    pub fn record_freeze(&mut self, report: &quiesce::FreezeReport) {
        self.freeze_window_seconds = Some(round_to(report.window, 1000.0));
        if !report.quiescers.is_empty() {
            self.quiesced.clone_from(&report.quiescers);
        }
        for (k, v) in &report.metadata {
            self.recorded.insert(k.clone(), v.clone());
        }
    }

    /// Records the snapshot's peak fill, rounded to 0.1 % as it is written.
    pub fn record_peak_fill(&mut self, percent: f64) {
        self.snapshot_peak_fill_percent = Some((percent * 10.0).round() / 10.0);
    }

    /// Adds the facts of `other` that are set (the agent's, on the backup
    /// host).
    pub fn merge(&mut self, other: RunFacts) {
        let RunFacts {
            started,
            finished,
            host,
            source,
            generation,
            snapshot,
            snapshot_kind,
            snapshot_peak_fill_percent,
            freeze_window_seconds,
            quiesced,
            recorded,
            tracking,
        } = other;
        fn take<T>(mine: &mut Option<T>, theirs: Option<T>) {
            if theirs.is_some() {
                *mine = theirs;
            }
        }
        take(&mut self.started, started);
        take(&mut self.finished, finished);
        take(&mut self.host, host);
        take(&mut self.source, source);
        take(&mut self.generation, generation);
        take(&mut self.snapshot, snapshot);
        take(&mut self.snapshot_kind, snapshot_kind);
        take(
            &mut self.snapshot_peak_fill_percent,
            snapshot_peak_fill_percent,
        );
        take(&mut self.freeze_window_seconds, freeze_window_seconds);
        if !quiesced.is_empty() {
            self.quiesced = quiesced;
        }
        self.recorded.extend(recorded);
        take(&mut self.tracking, tracking);
    }

    /// The facts as `NAME.N.meta.json` holds them: one string per key.
    /// The quiescers' records come first, so that a quiescer cannot
    /// overwrite a fact of the run.
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = self.recorded.clone();
        let mut put = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                m.insert(k.to_owned(), v);
            }
        };
        put("started", self.started.clone());
        put("finished", self.finished.clone());
        put("host", self.host.clone());
        put("source", self.source.clone());
        put("generation", self.generation.map(|g| g.to_string()));
        put("snapshot", self.snapshot.clone());
        put("snapshot_kind", self.snapshot_kind.clone());
        put(
            "snapshot_peak_fill_percent",
            self.snapshot_peak_fill_percent.map(|p| format!("{p:.1}")),
        );
        put(
            "freeze_window_seconds",
            self.freeze_window_seconds.map(|s| format!("{s:.3}")),
        );
        if !self.quiesced.is_empty() {
            put("quiesced", Some(self.quiesced.join(",")));
        }
        if let Some(tracking) = &self.tracking {
            tracking.to_metadata(&mut m);
        }
        m
    }
}

fn round_to(d: Duration, per_second: f64) -> f64 {
    (d.as_secs_f64() * per_second).round() / per_second
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn freeze() -> quiesce::FreezeReport {
        quiesce::FreezeReport {
            started: SystemTime::UNIX_EPOCH,
            window: Duration::from_micros(250_400),
            quiescers: vec!["mysql".into(), "cron".into()],
            metadata: vec![
                ("mysql.binlog_file".into(), "binlog.000003".into()),
                ("mysql.binlog_position".into(), "1234".into()),
            ],
        }
    }

    #[test]
    fn metadata_has_the_shape_it_always_had() {
        let mut f = RunFacts::started_at("2026-12-01 01:02:03");
        f.source = Some("lvm:vg0/db".into());
        f.snapshot = Some("vg0/db-bd-1-2-3".into());
        f.snapshot_kind = Some("thick".into());
        f.record_peak_fill(12.46);
        f.record_freeze(&freeze());
        f.generation = Some(7);
        let m = f.to_metadata();
        let expected: BTreeMap<String, String> = [
            ("started", "2026-12-01 01:02:03"),
            ("source", "lvm:vg0/db"),
            ("snapshot", "vg0/db-bd-1-2-3"),
            ("snapshot_kind", "thick"),
            ("snapshot_peak_fill_percent", "12.5"),
            ("freeze_window_seconds", "0.250"),
            ("quiesced", "mysql,cron"),
            ("mysql.binlog_file", "binlog.000003"),
            ("mysql.binlog_position", "1234"),
            ("generation", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(m, expected);
        // The values the summary shows are the ones written.
        assert_eq!(f.freeze_window_seconds, Some(0.25));
        assert_eq!(f.snapshot_peak_fill_percent, Some(12.5));
    }

    #[test]
    fn facts_survive_the_wire_and_merge() {
        let mut remote = RunFacts::default();
        remote.record_freeze(&freeze());
        remote.source = Some("lvm:vg0/db".into());
        let wire = serde_json::to_vec(&remote).unwrap();
        let back: RunFacts = serde_json::from_slice(&wire).unwrap();
        assert_eq!(back, remote);
        let mut local = RunFacts::started_at("then");
        local.host = Some("db1".into());
        local.merge(back);
        assert_eq!(local.started.as_deref(), Some("then"));
        assert_eq!(local.host.as_deref(), Some("db1"));
        assert_eq!(local.quiesced, ["mysql", "cron"]);
        assert_eq!(local.recorded.len(), 2);
        // A quiescer's record cannot pose as a fact of the run.
        let mut f = RunFacts::started_at("real");
        f.recorded.insert("started".into(), "forged".into());
        assert_eq!(f.to_metadata()["started"], "real");
    }
}
