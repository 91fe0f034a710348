//! The options of a run, as plain values: how the source is made
//! consistent ([`ConsistencyOptions`]), how gently it is read
//! ([`PoliteOptions`]) and which format is written ([`FormatChoice`]).
//! They cross the wire to the agent inside its request, so they are
//! serde types.

use std::time::Duration;

use blockdiff_core::{
    Compression, DiffFormat, DumpOptions, FrameCompression, HashAlgorithm, IoPriority,
};
use lvm_snap::SnapshotSize;
use serde::{Deserialize, Serialize};

use crate::{RunError, TrackingOptions};

/// What makes a source consistent while it is read: the snapshot of an LV
/// source and the quiescers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsistencyOptions {
    /// Size of a thick snapshot (thin volumes take thin snapshots).
    #[serde(with = "snapshot_size_text")]
    pub snapshot_size: SnapshotSize,
    /// Warn when the snapshot is this full (percent).
    pub fill_warn: f64,
    /// Seconds between two polls of the snapshot's fill.
    pub fill_interval: f64,
    /// Quiesce specs (`mysql`, `cron:wait=30`, …), frozen in this order.
    pub quiesce: Vec<String>,
    /// Longest time services may stay quiesced, in seconds.
    pub freeze_limit: f64,
    /// Leave the snapshot in place after the run.
    pub keep_snapshot: bool,
    /// Changed-block tracking of thin volumes.
    #[serde(default)]
    pub tracking: TrackingOptions,
}

impl Default for ConsistencyOptions {
    fn default() -> Self {
        ConsistencyOptions {
            snapshot_size: SnapshotSize::PercentOfOrigin(15.0),
            fill_warn: 80.0,
            fill_interval: 2.0,
            quiesce: Vec::new(),
            freeze_limit: 30.0,
            keep_snapshot: false,
            tracking: TrackingOptions::default(),
        }
    }
}

impl ConsistencyOptions {
    /// Checks the ranges (a request from the wire is checked too) and the
    /// quiesce specs.
    pub fn check(&self) -> Result<(), RunError> {
        if !(self.freeze_limit > 0.0 && self.freeze_limit <= 86400.0) {
            return Err(RunError::InvalidOption(format!(
                "--freeze-limit must be between 0 and 86400 seconds, not {}",
                self.freeze_limit
            )));
        }
        if !(self.fill_interval > 0.0 && self.fill_interval <= 3600.0) {
            return Err(RunError::InvalidOption(format!(
                "--fill-interval must be between 0 and 3600 seconds, not {}",
                self.fill_interval
            )));
        }
        for spec in &self.quiesce {
            quiesce::QuiesceSpec::parse(spec)?;
        }
        Ok(())
    }

    /// The freeze limit as a duration.
    pub fn freeze_limit(&self) -> Duration {
        Duration::from_secs_f64(self.freeze_limit)
    }
}

/// How gently the source is read: rate limit, CPU and I/O priority, page
/// cache. Every setting applies on the host that reads the source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoliteOptions {
    /// Read at most this many bytes per second (`None` or 0: unlimited).
    pub max_rate: Option<u64>,
    /// CPU niceness, -20 to 19.
    pub nice: Option<i32>,
    /// I/O scheduling class.
    #[serde(with = "io_priority_text")]
    pub ionice: Option<IoPriority>,
    /// Drop what was read from the page cache.
    pub drop_cache: bool,
}

impl PoliteOptions {
    /// The read rate limit in bytes per second; `None` when unlimited.
    pub fn max_rate(&self) -> Option<u64> {
        self.max_rate.filter(|&r| r > 0)
    }

    /// The options of one of `jobs` backups running at once on a host:
    /// `--max-rate` is the host's budget, so each gets its share of it
    /// (rounded down, at least 1 byte per second); the rest is the same.
    pub fn shared_by(&self, jobs: usize) -> PoliteOptions {
        let jobs = u64::try_from(jobs.max(1)).unwrap_or(u64::MAX);
        PoliteOptions {
            max_rate: self.max_rate().map(|r| (r / jobs).max(1)),
            ..self.clone()
        }
    }

    /// Checks the niceness's range (a request from the wire is checked
    /// too).
    pub fn check(&self) -> Result<(), RunError> {
        match self.nice {
            Some(n) if !(blockdiff_core::NICE_MIN..=blockdiff_core::NICE_MAX).contains(&n) => {
                Err(RunError::InvalidOption(format!(
                    "--nice must be between {} and {}, not {n}",
                    blockdiff_core::NICE_MIN,
                    blockdiff_core::NICE_MAX
                )))
            }
            _ => Ok(()),
        }
    }

    /// Sets the niceness and I/O priority on the calling thread; the
    /// threads it starts afterwards inherit both (on Linux they are per
    /// thread).
    pub fn apply_priorities(&self) -> blockdiff_core::Result<()> {
        if let Some(n) = self.nice {
            blockdiff_core::set_nice(n)?;
        }
        if let Some(p) = self.ionice {
            p.apply()?;
        }
        Ok(())
    }

    /// Fills the rate limit and the cache dropping into dump options.
    pub fn fill_dump_options(&self, options: &mut DumpOptions) {
        options.max_rate = self.max_rate();
        options.drop_cache = self.drop_cache;
    }
}

/// The format asked for: `None` fields follow the chain (or the defaults
/// of a new chain). [`FormatChoice::requested`] and
/// [`FormatChoice::hash_for`] are the one place that turns the options
/// into a format and a hash; the chain's own format, block size and hash
/// are then kept by the backup ([`blockdiff_core::PreparedBackup`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatChoice {
    /// `legacy` or `v2`.
    pub format: Option<FormatKind>,
    /// zstd level of a v2 diff (0 stores blocks uncompressed).
    pub zstd_level: Option<i32>,
    /// Compress a legacy diff with gzip.
    pub gzip: bool,
    /// Block hash of a new chain.
    #[serde(with = "hash_text")]
    pub hash: Option<HashAlgorithm>,
}

/// The diff formats, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FormatKind {
    /// Checked, zstd-compressed, indexed.
    V2,
    /// The original blockdiff's stream and `.md5` digest.
    Legacy,
}

impl FormatChoice {
    /// The choice that asks for exactly `format` (and `hash`, for v2): what
    /// a backup host sends its agent once the chain has decided.
    pub fn exactly(format: DiffFormat, hash: HashAlgorithm) -> Self {
        match format {
            DiffFormat::Legacy(c) => FormatChoice {
                format: Some(FormatKind::Legacy),
                zstd_level: None,
                gzip: c == Compression::Gzip,
                hash: None,
            },
            DiffFormat::V2 { compression, level } => FormatChoice {
                format: Some(FormatKind::V2),
                zstd_level: Some(match compression {
                    FrameCompression::None => 0,
                    FrameCompression::Zstd => level,
                }),
                gzip: false,
                hash: Some(hash),
            },
        }
    }

    /// The format asked for, if any (`None`: follow the chain), checked for
    /// options that do not go together.
    pub fn requested(&self) -> Result<Option<DiffFormat>, RunError> {
        let legacy =
            self.format == Some(FormatKind::Legacy) || (self.format.is_none() && self.gzip);
        if let Some(level) = self.zstd_level
            && !(0..=19).contains(&level)
        {
            return Err(RunError::InvalidOption(format!(
                "--zstd-level must be between 0 and 19, not {level}"
            )));
        }
        if legacy {
            if self.zstd_level.is_some() {
                return Err(RunError::InvalidOption(
                    "--zstd-level applies to the v2 format, not legacy".into(),
                ));
            }
            if self.hash == Some(HashAlgorithm::Blake3) {
                return Err(RunError::InvalidOption(
                    "the legacy format holds MD5 hashes only: drop --hash blake3".into(),
                ));
            }
            let c = if self.gzip {
                Compression::Gzip
            } else {
                Compression::None
            };
            return Ok(Some(DiffFormat::Legacy(c)));
        }
        if self.gzip {
            return Err(RunError::InvalidOption(
                "--gzip applies to the legacy format; v2 compresses with zstd (--zstd-level)"
                    .into(),
            ));
        }
        if self.format.is_none() && self.zstd_level.is_none() {
            return Ok(None);
        }
        Ok(Some(match self.zstd_level {
            Some(0) => DiffFormat::V2 {
                compression: FrameCompression::None,
                level: 0,
            },
            Some(level) => DiffFormat::V2 {
                compression: FrameCompression::Zstd,
                level,
            },
            None => DiffFormat::default(),
        }))
    }

    /// The hash of a new chain written in `format`.
    pub fn hash_for(&self, format: Option<DiffFormat>) -> HashAlgorithm {
        match (self.hash, format) {
            (Some(h), _) => h,
            (None, Some(DiffFormat::Legacy(_))) => HashAlgorithm::Md5,
            (None, _) => HashAlgorithm::Blake3,
        }
    }
}

/// `15%` or a byte count, as `--snapshot-size` reads it.
mod snapshot_size_text {
    use lvm_snap::SnapshotSize;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(size: &SnapshotSize, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&match size {
            SnapshotSize::Bytes(b) => b.to_string(),
            SnapshotSize::PercentOfOrigin(p) => format!("{p}%"),
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SnapshotSize, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An I/O priority by name (`idle`, `best-effort:4`).
mod io_priority_text {
    use blockdiff_core::IoPriority;
    use serde::{Deserialize, Deserializer, Serializer};

    // serde's `with` passes the field by reference.
    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(
        p: &Option<IoPriority>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => s.serialize_some(&p.to_string()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<IoPriority>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// A hash algorithm by name (`blake3`, `md5`).
mod hash_text {
    use blockdiff_core::HashAlgorithm;
    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub(super) fn serialize<S: Serializer>(
        h: &Option<HashAlgorithm>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match h {
            Some(h) => s.serialize_some(h.name()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<HashAlgorithm>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_on_one_host_share_its_rate_limit() {
        let polite = PoliteOptions {
            max_rate: Some(60 << 20),
            nice: Some(10),
            ..PoliteOptions::default()
        };
        assert_eq!(polite.shared_by(3).max_rate, Some(20 << 20));
        assert_eq!(polite.shared_by(3).nice, Some(10));
        assert_eq!(polite.shared_by(0), polite);
        let slow = PoliteOptions {
            max_rate: Some(2),
            ..PoliteOptions::default()
        };
        assert_eq!(slow.shared_by(5).max_rate, Some(1));
        // Unlimited stays unlimited.
        assert_eq!(PoliteOptions::default().shared_by(4).max_rate, None);
    }

    fn choice(format: Option<FormatKind>, level: Option<i32>, gzip: bool) -> FormatChoice {
        FormatChoice {
            format,
            zstd_level: level,
            gzip,
            hash: None,
        }
    }

    #[test]
    fn formats_from_options() {
        assert_eq!(FormatChoice::default().requested().unwrap(), None);
        assert_eq!(
            choice(None, None, true).requested().unwrap(),
            Some(DiffFormat::Legacy(Compression::Gzip))
        );
        assert_eq!(
            choice(Some(FormatKind::Legacy), None, false)
                .requested()
                .unwrap(),
            Some(DiffFormat::Legacy(Compression::None))
        );
        assert_eq!(
            choice(Some(FormatKind::V2), None, false)
                .requested()
                .unwrap(),
            Some(DiffFormat::default())
        );
        assert_eq!(
            choice(None, Some(0), false).requested().unwrap(),
            Some(DiffFormat::V2 {
                compression: FrameCompression::None,
                level: 0
            })
        );
        assert!(
            choice(Some(FormatKind::V2), None, true)
                .requested()
                .is_err()
        );
        assert!(
            choice(Some(FormatKind::Legacy), Some(3), false)
                .requested()
                .is_err()
        );
        let legacy_blake3 = FormatChoice {
            hash: Some(HashAlgorithm::Blake3),
            ..choice(Some(FormatKind::Legacy), None, false)
        };
        assert!(legacy_blake3.requested().is_err());
        assert!(choice(None, Some(20), false).requested().is_err());
    }

    #[test]
    fn an_exact_choice_asks_for_that_format_and_hash() {
        for (format, hash) in [
            (DiffFormat::Legacy(Compression::Gzip), HashAlgorithm::Md5),
            (DiffFormat::Legacy(Compression::None), HashAlgorithm::Md5),
            (DiffFormat::default(), HashAlgorithm::Blake3),
            (
                DiffFormat::V2 {
                    compression: FrameCompression::None,
                    level: 0,
                },
                HashAlgorithm::Md5,
            ),
            (
                DiffFormat::V2 {
                    compression: FrameCompression::Zstd,
                    level: 7,
                },
                HashAlgorithm::Blake3,
            ),
        ] {
            let c = FormatChoice::exactly(format, hash);
            assert_eq!(c.requested().unwrap(), Some(format));
            assert_eq!(c.hash_for(Some(format)), hash);
        }
    }

    #[test]
    fn options_out_of_range_are_refused() {
        let mut c = ConsistencyOptions::default();
        c.check().unwrap();
        c.freeze_limit = 0.0;
        assert!(c.check().unwrap_err().is_invalid_option());
        let c = ConsistencyOptions {
            fill_interval: f64::NAN,
            ..ConsistencyOptions::default()
        };
        assert!(c.check().is_err());
        let c = ConsistencyOptions {
            quiesce: vec!["nonsense:x".into()],
            ..ConsistencyOptions::default()
        };
        assert!(c.check().is_err());
        let p = PoliteOptions {
            nice: Some(40),
            ..PoliteOptions::default()
        };
        assert!(p.check().unwrap_err().is_invalid_option());
    }
}
