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

use blockdiff_core::{DumpOptions, DumpReport, TrackedChanges};
use blockdiff_storage::ChainLocation;
use lvm_snap::{CHAIN_TAG_PREFIX, LvPath, Lvm, Snapshot, ThinPool};
use serde::{Deserialize, Serialize};

use crate::RunLog;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    /// Its name in the metadata and `--json`: `tracked`, `full`, `verified`.
    pub fn as_str(self) -> &'static str {
        match self {
            ScanKind::Tracked => "tracked",
            ScanKind::Full => "full",
            ScanKind::Verified => "verified",
        }
    }
}

/// What a generation records of its tracking: the snapshot retained as
/// the next run's base (if one was), how it was read, and why not tracked.
/// Written to `NAME.N.meta.json` as `tracking.*` strings; crosses the wire
/// in the agent's facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
    #[serde(with = "optional_lv_path")]
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
    /// Completes the record of a committed dump: what it read, what a
    /// checking scan found (logged: an error when the pool missed
    /// changes), and the `fallback` that made the dump read everything
    /// after all ([`apply_tracked`]).
    pub fn complete(&mut self, dump: &DumpReport, fallback: Option<String>, log: &RunLog) {
        self.read_bytes = dump.read_bytes;
        self.untracked_changes = dump.untracked_changes;
        if let Some(reason) = fallback {
            self.scan = ScanKind::Full;
            self.fallback = Some(reason);
            self.runs_since_check = 0;
        }
        if self.untracked_changes > 0 {
            log.error(format_args!(
                "tracking: the full scan found {} changed blocks the pool did not report (the first at byte {}): the tracking cannot be trusted, so the next run checks it again; this generation was read in full and is exact",
                self.untracked_changes,
                dump.first_untracked.unwrap_or(0)
            ));
        } else if self.scan == ScanKind::Verified {
            log.info(format_args!(
                "tracking: the full scan agreed with the pool's changes"
            ));
        }
    }

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackingBase {
    /// The generation whose metadata records it.
    pub generation: u64,
    /// The retained snapshot.
    #[serde(with = "lv_path")]
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

/// What a run knows of its chain's tracking before it takes its snapshot
/// (sent to the agent of a remote source, which does the tracking there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainTracking {
    /// The tag that names the chain on its retained snapshots.
    pub chain_tag: String,
    /// The base the chain's last generation recorded, or why there is
    /// none to use.
    pub base: Result<TrackingBase, String>,
}

impl ChainTracking {
    /// The tracking of `chain`: its tag, and the base its current
    /// generation recorded (or why there is none). Read under the chain's
    /// lock, the current generation is the one the next backup follows.
    pub fn of(chain: &ChainLocation) -> ChainTracking {
        let source = chain.source();
        let base = match source.current_generation() {
            Ok(None | Some(0)) => Err("the chain has no generation yet".to_owned()),
            Ok(Some(g)) => match source.read_metadata(g) {
                Ok(Some(meta)) => match TrackingBase::from_metadata(g, &meta) {
                    Ok(Some(base)) => Ok(base),
                    Ok(None) => Err(format!(
                        "generation {g} recorded no retained snapshot (the first tracked run of this chain, or one that could not keep it)"
                    )),
                    Err(e) => Err(format!("generation {g}'s metadata is damaged: {e}")),
                },
                Ok(None) => Err(format!("generation {g} has no metadata")),
                Err(e) => Err(format!("cannot read generation {g}'s metadata: {e}")),
            },
            Err(e) => Err(format!("cannot read the chain's current generation: {e}")),
        };
        ChainTracking {
            chain_tag: ChainTracking::chain_tag(&chain_identity(chain.name())),
            base,
        }
    }

    /// The tag of the chain whose full name (an absolute path, an object
    /// URL) is `identity`: [`CHAIN_TAG_PREFIX`] and the first 16
    /// hexadecimal digits of its BLAKE3.
    pub fn chain_tag(identity: &Path) -> String {
        let hash = blake3::hash(identity.as_os_str().as_encoded_bytes());
        format!("{CHAIN_TAG_PREFIX}{}", &hash.to_hex()[..16])
    }
}

/// What names a chain for its tracking tag whatever the working directory:
/// an object-store name as it is, a local one with its directory resolved.
fn chain_identity(name: &Path) -> std::path::PathBuf {
    if ChainLocation::is_object_name(name) {
        return name.to_owned();
    }
    let absolute = std::path::absolute(name).unwrap_or_else(|_| name.to_owned());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(file)) => dir
            .canonicalize()
            .map_or_else(|_| absolute.clone(), |dir| dir.join(file)),
        _ => absolute,
    }
}

/// Sets `dump` to read only the `tracked` changes when they are relative
/// to the generation before `generation` (the one being written); returns
/// why not when they are not (another backup committed in between), for
/// [`TrackingRecord::complete`].
pub fn apply_tracked(
    tracked: Option<TrackedRead>,
    generation: u64,
    dump: &mut DumpOptions,
) -> Option<String> {
    let t = tracked?;
    if generation == t.base_generation + 1 {
        dump.tracked = Some(t.changes);
        dump.verify_tracked = t.verify;
        None
    } else {
        Some(format!(
            "the changes are relative to generation {}, but this run writes generation {generation} (another backup committed in between)",
            t.base_generation
        ))
    }
}

/// An [`LvPath`] as its `vg/lv` text.
mod lv_path {
    use lvm_snap::LvPath;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(path: &LvPath, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(path)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<LvPath, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// An optional [`LvPath`] as its `vg/lv` text, or null.
mod optional_lv_path {
    use lvm_snap::LvPath;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(path: &Option<LvPath>, s: S) -> Result<S::Ok, S::Error> {
        match path {
            Some(p) => s.collect_str(p),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LvPath>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(serde::de::Error::custom))
            .transpose()
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
    plan_tracked_read_in(lvm, pool, snapshot, new_id, size, chain, options, None)
}

/// [`plan_tracked_read`] with the pool's lock file in `lock_dir` (tests;
/// `None`: where [`ThinPool`] keeps it).
#[allow(clippy::too_many_arguments)]
fn plan_tracked_read_in(
    lvm: &Lvm,
    pool: &LvPath,
    snapshot: &Snapshot,
    new_id: u64,
    size: u64,
    chain: &ChainTracking,
    options: &TrackingOptions,
    lock_dir: Option<&Path>,
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
    let thin_pool = ThinPool::new(lvm, pool.clone());
    let thin_pool = match lock_dir {
        Some(dir) => thin_pool.with_lock_dir(dir),
        None => thin_pool,
    };
    let delta = thin_pool
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
    use command_runner::{CommandOutput, RecordingRunner};
    use lvm_snap::SnapshotOptions;

    const LV_FIELDS: &str = "lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_attr,lv_size,origin,pool_lv,data_percent,lv_tags";

    fn lv_report(name: &str, size: u64, origin: &str) -> CommandOutput {
        CommandOutput::ok(format!(
            r#"{{"report": [{{"lv": [{{"lv_name":"{name}", "vg_name":"vg0", "lv_attr":"Vwi-a-tz--", "lv_size":"{size}", "origin":"{origin}", "pool_lv":"pool", "data_percent":"1.00", "lv_tags":""}}]}}]}}"#
        ))
    }

    fn thin_id(id: u64) -> CommandOutput {
        CommandOutput::ok(format!(
            r#"{{"report": [{{"lv": [{{"thin_id":"{id}"}}]}}]}}"#
        ))
    }

    /// A pool where vg0/data (64 MiB) has the retained snapshot vg0/base
    /// (thin id 3) and a new snapshot (thin id 9); `thin_delta` reports
    /// chunks 2 and 3 (64 KiB each) changed.
    fn pool() -> Arc<RecordingRunner> {
        let r = Arc::new(RecordingRunner::strict());
        r.reply(
            format!("{LV_FIELDS} vg0/data"),
            lv_report("data", 64 << 20, ""),
        );
        r.reply(
            format!("{LV_FIELDS} vg0/base"),
            lv_report("base", 64 << 20, "data"),
        );
        r.reply(
            "lvs --reportformat json --units b --nosuffix -o thin_id vg0/base",
            thin_id(3),
        );
        r.reply("sync", CommandOutput::ok(""));
        r.reply("lvcreate", CommandOutput::ok(""));
        r.reply("lvremove", CommandOutput::ok(""));
        r.reply("dmsetup", CommandOutput::ok(""));
        r.reply(
            "thin_delta -m --snap1 3 --snap2 9 ",
            CommandOutput::ok(
                r#"<superblock uuid="" time="1" transaction="2" data_block_size="128" nr_data_blocks="1000"><diff left="3" right="9"><different begin="2" length="2"/></diff></superblock>"#,
            ),
        );
        r
    }

    fn base(runs_since_check: u32) -> TrackingBase {
        TrackingBase {
            generation: 4,
            snapshot: "vg0/base".parse().unwrap(),
            thin_id: 3,
            size: 64 << 20,
            runs_since_check,
            failed_check: false,
        }
    }

    fn plan(
        r: &Arc<RecordingRunner>,
        base: Result<TrackingBase, String>,
        size: u64,
        options: TrackingOptions,
    ) -> Result<TrackedRead, String> {
        let lvm = Lvm::with_runner(r.clone());
        let lock_dir = tempfile::tempdir().unwrap();
        let snapshot = Snapshot::create(
            &lvm,
            &"vg0/data".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap();
        let chain = ChainTracking {
            chain_tag: ChainTracking::chain_tag(Path::new("/b/data")),
            base,
        };
        let pool: LvPath = "vg0/pool".parse().unwrap();
        plan_tracked_read_in(
            &lvm,
            &pool,
            &snapshot,
            9,
            size,
            &chain,
            &options,
            Some(lock_dir.path()),
        )
    }

    #[test]
    fn the_pools_changes_are_used_only_against_the_recorded_base() {
        let r = pool();
        let read = plan(&r, Ok(base(0)), 64 << 20, TrackingOptions::default()).unwrap();
        assert_eq!(read.base_generation, 4);
        assert_eq!(read.changes.ranges(), [(2 << 16, 4 << 16)]);
        assert!(!read.verify);
        // The metadata snapshot was reserved and released around thin_delta.
        let calls = r.calls();
        let i = calls
            .iter()
            .position(|c| c.starts_with("thin_delta"))
            .unwrap();
        assert!(calls[i - 1].ends_with("reserve_metadata_snap"), "{calls:?}");
        assert!(calls[i + 1].ends_with("release_metadata_snap"), "{calls:?}");

        // The Nth run checks; --full-scan checks; a failed check checks again.
        let every3 = TrackingOptions {
            full_scan_every: 3,
            ..TrackingOptions::default()
        };
        assert!(!plan(&pool(), Ok(base(1)), 64 << 20, every3).unwrap().verify);
        assert!(plan(&pool(), Ok(base(2)), 64 << 20, every3).unwrap().verify);
        let once = TrackingOptions {
            full_scan: true,
            ..TrackingOptions::default()
        };
        assert!(plan(&pool(), Ok(base(0)), 64 << 20, once).unwrap().verify);
        let failed = TrackingBase {
            failed_check: true,
            ..base(0)
        };
        assert!(
            plan(&pool(), Ok(failed), 64 << 20, TrackingOptions::default())
                .unwrap()
                .verify
        );
    }

    #[test]
    fn every_fallback_names_its_reason() {
        let d = TrackingOptions::default();
        let reason = |r: Arc<RecordingRunner>, base: Result<TrackingBase, String>, size: u64| {
            plan(&r, base, size, d).unwrap_err()
        };
        assert_eq!(reason(pool(), Err("no base".into()), 64 << 20), "no base");
        let gone = pool();
        gone.on(format!("{LV_FIELDS} vg0/base"), |_| {
            CommandOutput::failed(5, "  Failed to find logical volume \"vg0/base\"\n")
        });
        assert_eq!(
            reason(gone, Ok(base(0)), 64 << 20),
            "the retained snapshot vg0/base of generation 4 is gone"
        );
        let other_origin = pool();
        other_origin.on(format!("{LV_FIELDS} vg0/base"), |_| {
            lv_report("base", 64 << 20, "www")
        });
        assert_eq!(
            reason(other_origin, Ok(base(0)), 64 << 20),
            "vg0/base is not a thin snapshot of vg0/data in pool vg0/pool"
        );
        let other_id = pool();
        other_id.on(
            "lvs --reportformat json --units b --nosuffix -o thin_id vg0/base",
            |_| thin_id(5),
        );
        assert!(
            reason(other_id, Ok(base(0)), 64 << 20)
                .starts_with("vg0/base has thin id 5, but generation 4 was read from thin id 3"),
        );
        assert_eq!(
            reason(pool(), Ok(base(0)), 68 << 20),
            format!(
                "the volume was resized from {} to {} bytes since generation 4",
                64 << 20,
                68 << 20
            )
        );
        let unreadable = pool();
        unreadable.on("thin_delta -m --snap1 3 --snap2 9 ", |_| {
            CommandOutput::failed(1, "bad checksum in superblock")
        });
        let why = reason(unreadable, Ok(base(0)), 64 << 20);
        assert!(
            why.starts_with("cannot read the pool's metadata: `thin_delta -m --snap1 3 --snap2 9 /dev/mapper/vg0-pool_tmeta` exited with status 1: bad checksum"),
            "{why}"
        );
    }

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
