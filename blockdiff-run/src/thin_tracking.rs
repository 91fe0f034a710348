//! Changed-block tracking for thin volumes: the snapshot a backup read is
//! kept as its chain's base, and the next run asks the pool which chunks
//! differ between it and the new snapshot, so that only those are read.
//!
//! - [`ChainTracking`]: what a run knows before its snapshot: the chain's
//!   tag and the base its last generation recorded ([`TrackingRecord`],
//!   in `NAME.N.meta.json` as `tracking.*`).
//! - [`plan_tracked_read`]: the new snapshot against that base: a
//!   [`TrackedRead`] (the changed ranges, and whether to check them with a
//!   full scan) or the reason for a full scan.
//! - [`TrackingRecord`]: what a generation records of its tracking.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use blockdiff_core::TrackedChanges;
use lvm_snap::{CHAIN_TAG_PREFIX, LvPath, Lvm, Snapshot, ThinPool};

/// How a run uses changed-block tracking (part of
/// [`ConsistencyOptions`](crate::ConsistencyOptions)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrackingOptions {
    /// Keep the thin snapshot after a backup and read only what changed
    /// the next time (`--no-track` turns it off).
    pub enabled: bool,
    /// Make every Nth run of a tracked chain a full scan that also checks
    /// the tracking (0: never).
    pub full_scan_every: u32,
    /// Make this run a full scan that checks the tracking.
    pub full_scan: bool,
}

impl Default for TrackingOptions {
    fn default() -> Self {
        TrackingOptions {
            enabled: true,
            full_scan_every: 0,
            full_scan: false,
        }
    }
}

/// How a generation was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    /// Only the chunks the pool reported changed.
    Tracked,
    /// Everything, without tracking (none usable, or a resize).
    Full,
    /// Everything, with the pool's changes checked against what the scan
    /// found.
    Verified,
}

impl ScanKind {
    fn as_str(self) -> &'static str {
        match self {
            ScanKind::Tracked => "tracked",
            ScanKind::Full => "full",
            ScanKind::Verified => "verified",
        }
    }
}

/// What a generation records of its tracking: the snapshot retained as
/// the next run's base (if one was), how it was read, and why not tracked.
/// Written to `NAME.N.meta.json` as `tracking.*` strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingRecord {
    /// How this generation was read.
    pub scan: ScanKind,
    /// Why it was not read through tracking, if it was not.
    pub fallback: Option<String>,
    /// Bytes read from the snapshot.
    pub read_bytes: u64,
    /// With [`ScanKind::Verified`]: changed blocks the pool did not report.
    pub untracked_changes: u64,
    /// The snapshot kept as the next run's base, `vg/name`.
    pub retained: Option<LvPath>,
    /// Its device id in the pool.
    pub thin_id: u64,
    /// The volume's size when it was taken.
    pub size: u64,
    /// Tracked runs since the last full scan that checked the tracking.
    pub runs_since_check: u32,
}

const KEY_PREFIX: &str = "tracking.";

impl TrackingRecord {
    /// Adds the record to a generation's metadata.
    pub fn to_metadata(&self, m: &mut BTreeMap<String, String>) {
        let mut put = |k: &str, v: String| {
            m.insert(format!("{KEY_PREFIX}{k}"), v);
        };
        put("scan", self.scan.as_str().into());
        if let Some(reason) = &self.fallback {
            put("fallback", reason.clone());
        }
        put("read_bytes", self.read_bytes.to_string());
        if self.scan == ScanKind::Verified {
            put("untracked_changes", self.untracked_changes.to_string());
        }
        if let Some(snapshot) = &self.retained {
            put("snapshot", snapshot.to_string());
            put("thin_id", self.thin_id.to_string());
            put("size", self.size.to_string());
            put("runs_since_check", self.runs_since_check.to_string());
        }
    }
}

/// The base a generation left for the next run: its retained snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingBase {
    /// The generation whose metadata records it.
    pub generation: u64,
    /// The retained snapshot.
    pub snapshot: LvPath,
    /// Its device id in the pool, when it was retained.
    pub thin_id: u64,
    /// The volume's size then.
    pub size: u64,
    /// Tracked runs since the last check.
    pub runs_since_check: u32,
    /// The last check found changes the tracking missed.
    pub failed_check: bool,
}

impl TrackingBase {
    /// The base recorded in generation `generation`'s metadata: `Ok(None)`
    /// when it records none, an error naming what is malformed.
    pub fn from_metadata(
        generation: u64,
        m: &BTreeMap<String, String>,
    ) -> Result<Option<TrackingBase>, String> {
        let get = |k: &str| m.get(&format!("{KEY_PREFIX}{k}"));
        let Some(snapshot) = get("snapshot") else {
            return Ok(None);
        };
        let number = |k: &str| -> Result<u64, String> {
            let text = get(k).ok_or_else(|| format!("{KEY_PREFIX}{k} is missing"))?;
            text.parse()
                .map_err(|_| format!("{KEY_PREFIX}{k} is '{text}', not a number"))
        };
        Ok(Some(TrackingBase {
            generation,
            snapshot: snapshot
                .parse()
                .map_err(|e| format!("{KEY_PREFIX}snapshot: {e}"))?,
            thin_id: number("thin_id")?,
            size: number("size")?,
            runs_since_check: u32::try_from(number("runs_since_check")?).unwrap_or(u32::MAX),
            failed_check: get("untracked_changes").is_some_and(|n| n != "0"),
        }))
    }
}

/// What a run knows of its chain's tracking before it takes its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainTracking {
    /// The tag that names the chain on its retained snapshots.
    pub chain_tag: String,
    /// The base the chain's last generation recorded, or why there is
    /// none to use.
    pub base: Result<TrackingBase, String>,
}

impl ChainTracking {
    /// The tag of the chain whose full name (an absolute path, an object
    /// URL) is `identity`: [`CHAIN_TAG_PREFIX`] and the first 16
    /// hexadecimal digits of its BLAKE3.
    pub fn chain_tag(identity: &Path) -> String {
        let hash = blake3::hash(identity.as_os_str().as_encoded_bytes());
        format!("{CHAIN_TAG_PREFIX}{}", &hash.to_hex()[..16])
    }
}

/// What the pool says changed since the chain's base, for the dump step.
#[derive(Debug, Clone)]
pub struct TrackedRead {
    /// The generation the changes are relative to: the dump may use them
    /// only when it writes the next one.
    pub base_generation: u64,
    /// The changed byte ranges.
    pub changes: Arc<TrackedChanges>,
    /// Read everything anyway and check the changes (a full scan).
    pub verify: bool,
}

/// Plans how the new `snapshot` (thin, device id `new_id`, of a volume of
/// `size` bytes) is read: against the chain's base, the pool's changes,
/// or the reason it must be read whole. Every reason names what was
/// found.
pub fn plan_tracked_read(
    lvm: &Lvm,
    pool: &LvPath,
    snapshot: &Snapshot,
    new_id: u64,
    size: u64,
    chain: &ChainTracking,
    options: &TrackingOptions,
) -> Result<TrackedRead, String> {
    let base = chain.base.as_ref().map_err(Clone::clone)?;
    let name = &base.snapshot;
    if name.vg != snapshot.origin().vg {
        return Err(format!(
            "the retained snapshot {name} is in another volume group than {}",
            snapshot.origin()
        ));
    }
    let retained = match lvm.lv(name) {
        Ok(lv) => lv,
        Err(lvm_snap::Error::NotFound { .. }) => {
            return Err(format!(
                "the retained snapshot {name} of generation {} is gone",
                base.generation
            ));
        }
        Err(e) => return Err(format!("cannot look at the retained snapshot {name}: {e}")),
    };
    if retained.origin.as_deref() != Some(snapshot.origin().lv.as_str())
        || retained.pool.as_deref() != Some(pool.lv.as_str())
    {
        return Err(format!(
            "{name} is not a thin snapshot of {} in pool {pool}",
            snapshot.origin()
        ));
    }
    let id = lvm
        .thin_id(name)
        .map_err(|e| format!("cannot read the thin id of {name}: {e}"))?;
    if id != base.thin_id {
        return Err(format!(
            "{name} has thin id {id}, but generation {} was read from thin id {}: it is not the snapshot the chain's last generation came from",
            base.generation, base.thin_id
        ));
    }
    if size != base.size {
        return Err(format!(
            "the volume was resized from {} to {size} bytes since generation {}",
            base.size, base.generation
        ));
    }
    let delta = ThinPool::new(lvm, pool.clone())
        .delta(base.thin_id, new_id)
        .map_err(|e| format!("cannot read the pool's metadata: {e}"))?;
    let verify = options.full_scan
        || base.failed_check
        || (options.full_scan_every > 0
            && base.runs_since_check.saturating_add(1) >= options.full_scan_every);
    Ok(TrackedRead {
        base_generation: base.generation,
        changes: Arc::new(TrackedChanges::from_byte_ranges(delta.byte_ranges())),
        verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_is_read_back_as_the_next_runs_base() {
        let record = TrackingRecord {
            scan: ScanKind::Tracked,
            fallback: None,
            read_bytes: 4096,
            untracked_changes: 0,
            retained: Some("vg0/www-bd-1-2-0".parse().unwrap()),
            thin_id: 7,
            size: 1 << 30,
            runs_since_check: 2,
        };
        let mut m = BTreeMap::new();
        record.to_metadata(&mut m);
        assert_eq!(m["tracking.scan"], "tracked");
        let base = TrackingBase::from_metadata(5, &m).unwrap().unwrap();
        assert_eq!(
            base,
            TrackingBase {
                generation: 5,
                snapshot: "vg0/www-bd-1-2-0".parse().unwrap(),
                thin_id: 7,
                size: 1 << 30,
                runs_since_check: 2,
                failed_check: false,
            }
        );
        // A check that failed makes the next run check again.
        let failed = TrackingRecord {
            scan: ScanKind::Verified,
            untracked_changes: 3,
            ..record.clone()
        };
        let mut m = BTreeMap::new();
        failed.to_metadata(&mut m);
        assert!(
            TrackingBase::from_metadata(5, &m)
                .unwrap()
                .unwrap()
                .failed_check
        );
        // None retained: no base. A damaged record: a reason.
        let mut m = BTreeMap::new();
        TrackingRecord {
            retained: None,
            ..record
        }
        .to_metadata(&mut m);
        assert_eq!(TrackingBase::from_metadata(5, &m), Ok(None));
        m.insert("tracking.snapshot".into(), "vg0/x".into());
        m.insert("tracking.thin_id".into(), "seven".into());
        let err = TrackingBase::from_metadata(5, &m).unwrap_err();
        assert_eq!(err, "tracking.thin_id is 'seven', not a number");
    }

    #[test]
    fn chain_tags_are_stable_valid_lvm_tags() {
        let a = ChainTracking::chain_tag(Path::new("/var/backup/www"));
        assert_eq!(a, ChainTracking::chain_tag(Path::new("/var/backup/www")));
        assert_ne!(a, ChainTracking::chain_tag(Path::new("/var/backup/db")));
        assert!(a.starts_with(CHAIN_TAG_PREFIX) && a.len() == CHAIN_TAG_PREFIX.len() + 16);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }
}
