//! The snapshot guard: created with a size policy and tags, removed on drop.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::lvm::{LogicalVolume, LvPath, Lvm};
use crate::{Error, Result};
use command_runner::CommandLine;

/// The tag on every snapshot this crate creates.
pub const SNAPSHOT_TAG: &str = "blockdiff";
/// Prefix of the tag naming the creating process: `blockdiff-pid-1234`.
pub const PID_TAG_PREFIX: &str = "blockdiff-pid-";
/// The tag of a thin snapshot kept after its backup as the base of the
/// next run's changed-block tracking ([`Snapshot::retain`]): never stale.
pub const RETAINED_TAG: &str = "blockdiff-retained";
/// Prefix of the tag naming the chain a retained snapshot is the base of:
/// `blockdiff-chain-` and 16 hexadecimal digits.
pub const CHAIN_TAG_PREFIX: &str = "blockdiff-chain-";
/// The tag of a snapshot kept by a restore (`--keep-before`): the volume's
/// state before the restore wrote it, so that the restore can be undone
/// (`lvconvert --merge`). Never removed by a cleanup.
pub const BEFORE_TAG: &str = "blockdiff-before";

/// How large a thick snapshot is: the space that holds the origin's blocks
/// as they were, for every block written while the snapshot exists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SnapshotSize {
    /// A number of bytes.
    Bytes(u64),
    /// A percentage of the origin's size (10–20% suits most servers).
    PercentOfOrigin(f64),
}

impl Default for SnapshotSize {
    /// 15% of the origin.
    fn default() -> Self {
        SnapshotSize::PercentOfOrigin(15.0)
    }
}

impl SnapshotSize {
    /// Bytes for an origin of `origin_bytes`, rounded up to whole extents.
    pub fn bytes_for(&self, origin_bytes: u64, extent: u64) -> u64 {
        let raw = match *self {
            SnapshotSize::Bytes(b) => b,
            SnapshotSize::PercentOfOrigin(p) => (origin_bytes as f64 * p / 100.0).ceil() as u64,
        };
        raw.max(1)
            .div_ceil(extent.max(1))
            .saturating_mul(extent.max(1))
    }
}

impl FromStr for SnapshotSize {
    type Err = Error;

    /// `15%`, or bytes with an optional unit: `512M`, `2G`, `1048576`
    /// (k, M, G, T are powers of 1024).
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "'{s}' is not a snapshot size: write a percentage of the origin (15%) or a size (512M, 2G)"
            ))
        };
        let t = s.trim();
        if let Some(p) = t.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(bad());
            }
            return Ok(SnapshotSize::PercentOfOrigin(p));
        }
        let (digits, shift) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let shift = match c.to_ascii_lowercase() {
                    'b' => 0,
                    'k' => 10,
                    'm' => 20,
                    'g' => 30,
                    't' => 40,
                    _ => return Err(bad()),
                };
                (&t[..i], shift)
            }
            _ => (t, 0),
        };
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let bytes = n.checked_shl(shift).filter(|b| b >> shift == n && *b > 0);
        bytes.map(SnapshotSize::Bytes).ok_or_else(bad)
    }
}

impl fmt::Display for SnapshotSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotSize::Bytes(b) => write!(f, "{b} bytes"),
            SnapshotSize::PercentOfOrigin(p) => write!(f, "{p}% of the origin"),
        }
    }
}

/// How a snapshot is made.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SnapshotOptions {
    /// Size of a thick snapshot (a thin snapshot shares its pool's space).
    pub size: SnapshotSize,
    /// Extra tags (`--addtag`), beside [`SNAPSHOT_TAG`] and the pid tag.
    pub extra_tags: Vec<String>,
}

/// A snapshot's fill: how much of its space (thick) or its pool (thin) is
/// used.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SnapshotUsage {
    /// Percent used: `snap_percent` of a thick snapshot, the pool's
    /// `data_percent` for a thin one.
    pub percent: f64,
    /// The snapshot overflowed and LVM invalidated it (thick only).
    pub invalid: bool,
}

/// A snapshot of a logical volume that exists for as long as this guard:
/// dropping it removes the snapshot (best effort, since drop cannot fail;
/// call [`Snapshot::remove`] to see the error). [`Snapshot::keep`] leaves
/// it in place on purpose.
#[derive(Debug)]
pub struct Snapshot {
    lvm: Lvm,
    path: LvPath,
    origin: LvPath,
    thin_pool: Option<LvPath>,
    removed: bool,
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A snapshot name unique to this run: `ORIGIN-bd-PID-SECONDS-SEQ`, cut so
/// that LVM's 127-byte limit holds (with room for its internal suffixes).
fn unique_name(origin: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("-bd-{}-{secs}-{seq}", std::process::id());
    let keep = 100usize.saturating_sub(suffix.len()).min(origin.len());
    let mut cut = keep;
    while !origin.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{suffix}", &origin[..cut])
}

impl Snapshot {
    /// Creates a snapshot of `origin`: `sync`, then for a thick origin
    /// `lvcreate --snapshot -L SIZE` (after checking the VG has the space),
    /// for a thin origin a thin snapshot activated with `-ay -K`. The
    /// snapshot is tagged [`SNAPSHOT_TAG`] and with this process's pid, so
    /// that [`stale_snapshots`] finds it if this process dies.
    pub fn create(lvm: &Lvm, origin: &LvPath, options: &SnapshotOptions) -> Result<Snapshot> {
        let origin_lv = lvm.lv(origin)?;
        if origin_lv.is_snapshot() {
            return Err(Error::Invalid(format!(
                "{origin} is itself a snapshot; back up its origin instead"
            )));
        }
        if origin_lv.is_thin_pool() {
            return Err(Error::Invalid(format!(
                "{origin} is a thin pool, not a volume"
            )));
        }
        let name = unique_name(&origin.lv);
        let path = LvPath::new(&origin.vg, &name)?;
        let mut args: Vec<String> = vec!["--snapshot".into(), "-n".into(), name.clone()];
        let thin_pool = if origin_lv.is_thin() {
            args.extend(["-ay".into(), "-K".into()]);
            origin_lv
                .pool
                .as_deref()
                .map(|p| LvPath::new(&origin.vg, p))
                .transpose()?
        } else {
            let vg = lvm.vg(&origin.vg)?;
            let need = options.size.bytes_for(origin_lv.size, vg.extent_size);
            if need > vg.free {
                return Err(Error::NoSpace {
                    vg: vg.name,
                    origin: origin.to_string(),
                    need,
                    free: vg.free,
                });
            }
            args.extend(["-L".into(), format!("{need}b")]);
            None
        };
        let pid_tag = format!("{PID_TAG_PREFIX}{}", std::process::id());
        for tag in [SNAPSHOT_TAG, &pid_tag]
            .into_iter()
            .chain(options.extra_tags.iter().map(String::as_str))
        {
            args.extend(["--addtag".into(), tag.to_owned()]);
        }
        args.push(origin.to_string());
        lvm.sync()?;
        lvm.run(&CommandLine::new("lvcreate", args))?;
        Ok(Snapshot {
            lvm: lvm.clone(),
            path,
            origin: origin.clone(),
            thin_pool,
            removed: false,
        })
    }

    /// The snapshot, `vg/name`.
    pub fn path(&self) -> &LvPath {
        &self.path
    }

    /// The volume it is a snapshot of.
    pub fn origin(&self) -> &LvPath {
        &self.origin
    }

    /// The thin pool of a thin snapshot.
    pub fn thin_pool(&self) -> Option<&LvPath> {
        self.thin_pool.as_ref()
    }

    /// Whether it is a thin snapshot.
    pub fn is_thin(&self) -> bool {
        self.thin_pool.is_some()
    }

    /// Its device node, `/dev/vg/name`.
    pub fn device(&self) -> std::path::PathBuf {
        self.path.device()
    }

    /// A handle for watching its fill from another thread.
    pub fn watcher(&self) -> SnapshotWatcher {
        SnapshotWatcher {
            lvm: self.lvm.clone(),
            snapshot: self.path.clone(),
            thin_pool: self.thin_pool.clone(),
        }
    }

    /// How full it is now.
    pub fn usage(&self) -> Result<SnapshotUsage> {
        self.watcher().usage()
    }

    /// Removes the snapshot, reporting failure.
    pub fn remove(mut self) -> Result<()> {
        self.removed = true;
        self.lvm.remove(&self.path)
    }

    /// Keeps a thin snapshot as the base of the next run's changed-block
    /// tracking for the chain tagged `chain_tag` ([`CHAIN_TAG_PREFIX`]):
    /// tags it [`RETAINED_TAG`] and `chain_tag`, drops its pid tag (so that
    /// it is never taken for a killed run's), and deactivates it (only the
    /// pool's metadata is read from it again). Fails for a thick snapshot,
    /// which would fill and be invalidated; on failure the snapshot is
    /// removed, as a guard's is.
    pub fn retain(mut self, chain_tag: &str) -> Result<LvPath> {
        if !self.is_thin() {
            return Err(Error::Invalid(format!(
                "{} is a thick snapshot: only a thin one can be kept for tracking",
                self.path
            )));
        }
        let pid_tag = format!("{PID_TAG_PREFIX}{}", std::process::id());
        let target = self.path.to_string();
        self.lvm.run(&CommandLine::new(
            "lvchange",
            [
                "--addtag",
                RETAINED_TAG,
                "--addtag",
                chain_tag,
                "--deltag",
                &pid_tag,
                &target,
            ],
        ))?;
        self.lvm
            .run(&CommandLine::new("lvchange", ["-an", &target]))?;
        self.removed = true;
        Ok(self.path.clone())
    }

    /// Keeps the snapshot as the state of its origin before a restore
    /// writes it: tags it [`BEFORE_TAG`] and drops its pid tag (so that it
    /// is never taken for a killed run's), leaving it active. On failure the
    /// snapshot is removed, as a guard's is.
    pub fn keep_as_before(mut self) -> Result<LvPath> {
        let pid_tag = format!("{PID_TAG_PREFIX}{}", std::process::id());
        let target = self.path.to_string();
        self.lvm.run(&CommandLine::new(
            "lvchange",
            ["--addtag", BEFORE_TAG, "--deltag", &pid_tag, &target],
        ))?;
        self.removed = true;
        Ok(self.path.clone())
    }

    /// Leaves the snapshot in place (for debugging) and returns its name.
    pub fn keep(mut self) -> LvPath {
        self.removed = true;
        self.path.clone()
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.lvm.remove(&self.path);
        }
    }
}

/// Reads a snapshot's fill; `Send`, for a monitoring thread.
#[derive(Debug, Clone)]
pub struct SnapshotWatcher {
    lvm: Lvm,
    snapshot: LvPath,
    thin_pool: Option<LvPath>,
}

impl SnapshotWatcher {
    /// The snapshot watched.
    pub fn snapshot(&self) -> &LvPath {
        &self.snapshot
    }

    /// How full it is now: for a thick snapshot its own `snap_percent` and
    /// whether it was invalidated; for a thin one its pool's `data_percent`.
    pub fn usage(&self) -> Result<SnapshotUsage> {
        let lv = self.lvm.lv(&self.snapshot)?;
        if let Some(pool) = &self.thin_pool {
            let pool = self.lvm.lv(pool)?;
            return Ok(SnapshotUsage {
                percent: pool.data_percent.unwrap_or(0.0),
                invalid: false,
            });
        }
        let invalid = lv.is_invalid_snapshot();
        Ok(SnapshotUsage {
            percent: if invalid {
                100.0
            } else {
                lv.data_percent.unwrap_or(0.0)
            },
            invalid,
        })
    }
}

/// A snapshot made by this crate, as found by [`tagged_snapshots`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaggedSnapshot {
    /// The snapshot.
    pub lv: LogicalVolume,
    /// The pid of the process that made it, from its tag.
    pub pid: Option<u32>,
    /// Whether that process still runs (and is a blockdiff process).
    pub owner_running: bool,
}

/// Every snapshot tagged [`SNAPSHOT_TAG`], in one VG or all, with whether
/// the process that made it still runs (checked through the runner, so it
/// holds for a remote host too).
pub fn tagged_snapshots(lvm: &Lvm, vg: Option<&str>) -> Result<Vec<TaggedSnapshot>> {
    let mut found = Vec::new();
    for lv in lvm.list(vg)? {
        if !lv.tags.iter().any(|t| t == SNAPSHOT_TAG) {
            continue;
        }
        let pid = lv
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(PID_TAG_PREFIX)?.parse::<u32>().ok());
        let owner_running = match pid {
            Some(pid) => {
                let comm =
                    lvm.run_unchecked(&CommandLine::new("cat", [format!("/proc/{pid}/comm")]))?;
                comm.success() && String::from_utf8_lossy(&comm.stdout).starts_with("blockdiff")
            }
            None => false,
        };
        found.push(TaggedSnapshot {
            lv,
            pid,
            owner_running,
        });
    }
    Ok(found)
}

/// The snapshots retained as the base of changed-block tracking
/// ([`Snapshot::retain`]), in one VG or all, of the chain tagged
/// `chain_tag` or of every chain.
pub fn retained_snapshots(
    lvm: &Lvm,
    vg: Option<&str>,
    chain_tag: Option<&str>,
) -> Result<Vec<LogicalVolume>> {
    Ok(lvm
        .list(vg)?
        .into_iter()
        .filter(|lv| {
            lv.tags.iter().any(|t| t == RETAINED_TAG)
                && chain_tag.is_none_or(|c| lv.tags.iter().any(|t| t == c))
        })
        .collect())
}

/// The tagged snapshots whose owner no longer runs: left by a run that was
/// killed (SIGKILL, a crash of the host) before it could remove them.
/// Snapshots carrying a tag in `exclude_tags` (such as a mounted
/// partition's) are not stale, nor is a retained one ([`RETAINED_TAG`]) or
/// one kept by a restore ([`BEFORE_TAG`]).
pub fn stale_snapshots(
    lvm: &Lvm,
    vg: Option<&str>,
    exclude_tags: &[&str],
) -> Result<Vec<TaggedSnapshot>> {
    Ok(tagged_snapshots(lvm, vg)?
        .into_iter()
        .filter(|s| {
            !s.owner_running
                && !s.lv.tags.iter().any(|t| {
                    t == RETAINED_TAG || t == BEFORE_TAG || exclude_tags.contains(&t.as_str())
                })
        })
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use command_runner::{CommandOutput, RecordingRunner};
    use std::sync::Arc;

    pub(crate) fn lv_row(
        name: &str,
        attr: &str,
        size: u64,
        origin: &str,
        pool: &str,
        pct: &str,
        tags: &str,
    ) -> String {
        format!(
            r#"{{"lv_name":"{name}", "vg_name":"vg0", "lv_attr":"{attr}", "lv_size":"{size}", "origin":"{origin}", "pool_lv":"{pool}", "data_percent":"{pct}", "lv_tags":"{tags}"}}"#
        )
    }

    pub(crate) fn report(rows: &[String]) -> String {
        format!(r#"{{"report": [{{"lv": [{}]}}]}}"#, rows.join(","))
    }

    /// A VG with 100 MiB origin `data` and `free` bytes free, where every
    /// command succeeds.
    pub(crate) fn thick_vg(free: u64) -> Arc<RecordingRunner> {
        let r = Arc::new(RecordingRunner::strict());
        let origin = report(&[lv_row("data", "-wi-ao----", 100 << 20, "", "", "", "")]);
        r.on("lvs", move |_| CommandOutput::ok(&origin));
        r.on("vgs", move |_| {
            CommandOutput::ok(format!(
                r#"{{"report": [{{"vg": [{{"vg_name":"vg0", "vg_size":"1073741824", "vg_free":"{free}", "vg_extent_size":"4194304"}}]}}]}}"#
            ))
        });
        r.on("sync", |_| CommandOutput::ok(""));
        r.on("lvcreate", |_| {
            CommandOutput::ok("  Logical volume created.\n")
        });
        r.on("lvremove", |_| CommandOutput::ok(""));
        r
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(
            "15%".parse::<SnapshotSize>().unwrap(),
            SnapshotSize::PercentOfOrigin(15.0)
        );
        assert_eq!(
            "512M".parse::<SnapshotSize>().unwrap(),
            SnapshotSize::Bytes(512 << 20)
        );
        assert_eq!(
            "2g".parse::<SnapshotSize>().unwrap(),
            SnapshotSize::Bytes(2 << 30)
        );
        assert_eq!(
            "4096".parse::<SnapshotSize>().unwrap(),
            SnapshotSize::Bytes(4096)
        );
        for bad in ["", "0", "0%", "101%", "12X", "-5M", "99999999999T", "M"] {
            let err = bad.parse::<SnapshotSize>().unwrap_err().to_string();
            assert!(err.contains("is not a snapshot size"), "{bad}: {err}");
        }
        // Rounded up to whole extents.
        let ext = 4 << 20;
        assert_eq!(
            SnapshotSize::PercentOfOrigin(10.0).bytes_for(100 << 20, ext),
            12 << 20
        );
        assert_eq!(SnapshotSize::Bytes(1).bytes_for(100 << 20, ext), ext);
    }

    #[test]
    fn thick_snapshot_is_synced_sized_tagged_and_removed_on_drop() {
        let r = thick_vg(1 << 30);
        let lvm = Lvm::with_runner(r.clone());
        let snap = Snapshot::create(
            &lvm,
            &"vg0/data".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap();
        let name = snap.path().lv.clone();
        assert!(
            name.starts_with(&format!("data-bd-{}-", std::process::id())),
            "{name}"
        );
        assert!(!snap.is_thin());
        drop(snap);
        let cmds = r.calls();
        let pid = std::process::id();
        // 15% of 100 MiB, rounded up to 4 MiB extents: 16 MiB.
        assert_eq!(
            cmds[2..],
            [
                "sync".to_owned(),
                format!(
                    "lvcreate --snapshot -n {name} -L 16777216b --addtag blockdiff --addtag blockdiff-pid-{pid} vg0/data"
                ),
                format!("lvremove -f -y vg0/{name}"),
            ]
        );
    }

    #[test]
    fn too_little_free_space_creates_nothing() {
        let r = thick_vg(8 << 20);
        let lvm = Lvm::with_runner(r.clone());
        let err = Snapshot::create(
            &lvm,
            &"vg0/data".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "volume group vg0 has 8388608 bytes free, but the snapshot of vg0/data needs 16777216 bytes; free space in vg0 or choose a smaller --snapshot-size"
        );
        assert!(
            !r.calls()
                .iter()
                .any(|c| c.starts_with("lvcreate") || c.starts_with("sync"))
        );
    }

    #[test]
    fn failed_lvcreate_names_the_command_and_stderr() {
        let r = thick_vg(1 << 30);
        r.on("lvcreate", |_| {
            CommandOutput::failed(5, "  Snapshot origin LV data is busy.\n")
        });
        let lvm = Lvm::with_runner(r.clone());
        let err = Snapshot::create(
            &lvm,
            &"vg0/data".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("exited with status 5: Snapshot origin LV data is busy."),
            "{err}"
        );
        assert!(!r.calls().iter().any(|c| c.starts_with("lvremove")));
    }

    #[test]
    fn thin_snapshot_is_activated_and_watches_its_pool() {
        let r = Arc::new(RecordingRunner::strict());
        let rows = report(&[lv_row(
            "thin",
            "Vwi-a-tz--",
            16 << 20,
            "",
            "pool",
            "3.00",
            "",
        )]);
        r.on("lvs", move |_| CommandOutput::ok(&rows));
        let pool = report(&[lv_row("pool", "twi-aotz--", 32 << 20, "", "", "42.50", "")]);
        r.on("lvs --reportformat json --units b --nosuffix -o lv_name,vg_name,lv_attr,lv_size,origin,pool_lv,data_percent,lv_tags vg0/pool", move |_| CommandOutput::ok(&pool));
        r.on("sync", |_| CommandOutput::ok(""));
        r.on("lvcreate", |_| CommandOutput::ok(""));
        r.on("lvremove", |_| CommandOutput::ok(""));
        let lvm = Lvm::with_runner(r.clone());
        let snap = Snapshot::create(
            &lvm,
            &"vg0/thin".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap();
        assert!(snap.is_thin());
        let usage = snap.usage().unwrap();
        assert_eq!(
            usage,
            SnapshotUsage {
                percent: 42.5,
                invalid: false
            }
        );
        snap.remove().unwrap();
        let create = r
            .calls()
            .into_iter()
            .find(|c| c.starts_with("lvcreate"))
            .unwrap();
        assert!(
            create.contains(" -ay -K ") && !create.contains(" -L "),
            "{create}"
        );
        assert!(!r.calls().iter().any(|c| c.starts_with("vgs")));
    }

    #[test]
    fn a_retained_thin_snapshot_is_retagged_deactivated_and_never_stale() {
        let r = Arc::new(RecordingRunner::strict());
        let rows = report(&[lv_row(
            "thin",
            "Vwi-a-tz--",
            16 << 20,
            "",
            "pool",
            "3.00",
            "",
        )]);
        r.on("lvs", move |_| CommandOutput::ok(&rows));
        r.on("sync", |_| CommandOutput::ok(""));
        r.on("lvcreate", |_| CommandOutput::ok(""));
        r.on("lvchange", |_| CommandOutput::ok(""));
        let lvm = Lvm::with_runner(r.clone());
        let snap = Snapshot::create(
            &lvm,
            &"vg0/thin".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap();
        let name = snap.path().to_string();
        let kept = snap.retain("blockdiff-chain-0123456789abcdef").unwrap();
        assert_eq!(kept.to_string(), name);
        let calls = r.calls();
        let pid = std::process::id();
        assert_eq!(
            calls[calls.len() - 2..],
            [
                format!(
                    "lvchange --addtag blockdiff-retained --addtag blockdiff-chain-0123456789abcdef --deltag blockdiff-pid-{pid} {name}"
                ),
                format!("lvchange -an {name}"),
            ]
        );
        // Nothing removed it: the guard is defused.
        assert!(!calls.iter().any(|c| c.starts_with("lvremove")));

        // Listed as retained for its chain, never as stale.
        let r = Arc::new(RecordingRunner::strict());
        let rows = report(&[
            lv_row("thin", "Vwi-a-tz--", 16 << 20, "", "pool", "3.00", ""),
            lv_row(
                "thin-bd-1-2-0",
                "Vwi---tz-k",
                16 << 20,
                "thin",
                "pool",
                "",
                "blockdiff,blockdiff-retained,blockdiff-chain-0123456789abcdef",
            ),
            lv_row(
                "thin-bd-9-2-0",
                "Vwi---tz-k",
                16 << 20,
                "thin",
                "pool",
                "",
                "blockdiff,blockdiff-retained,blockdiff-chain-ffffffffffffffff",
            ),
            lv_row(
                "thin-bd-5-2-0",
                "Vwi-a-tz-k",
                16 << 20,
                "thin",
                "pool",
                "",
                "blockdiff,blockdiff-pid-5",
            ),
        ]);
        r.on("lvs", move |_| CommandOutput::ok(&rows));
        r.on("cat", |_| {
            CommandOutput::failed(1, "No such file or directory")
        });
        let lvm = Lvm::with_runner(r);
        let mine = retained_snapshots(&lvm, Some("vg0"), Some("blockdiff-chain-0123456789abcdef"))
            .unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].path.lv, "thin-bd-1-2-0");
        assert_eq!(retained_snapshots(&lvm, None, None).unwrap().len(), 2);
        let stale = stale_snapshots(&lvm, None, &[]).unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(stale[0].lv.path.lv, "thin-bd-5-2-0");
    }

    #[test]
    fn a_snapshot_kept_before_a_restore_is_retagged_left_active_and_never_stale() {
        let r = thick_vg(1 << 30);
        r.on("lvchange", |_| CommandOutput::ok(""));
        let lvm = Lvm::with_runner(r.clone());
        let snap = Snapshot::create(
            &lvm,
            &"vg0/data".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap();
        let name = snap.path().to_string();
        assert_eq!(snap.keep_as_before().unwrap().to_string(), name);
        let calls = r.calls();
        let pid = std::process::id();
        assert_eq!(
            calls.last().unwrap(),
            &format!("lvchange --addtag blockdiff-before --deltag blockdiff-pid-{pid} {name}")
        );
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("lvremove") || c.contains("-an"))
        );

        let r = Arc::new(RecordingRunner::strict());
        let rows = report(&[
            lv_row("data", "owi-aos---", 16 << 20, "", "", "", ""),
            lv_row(
                "data-bd-1-2-0",
                "swi-a-s---",
                8 << 20,
                "data",
                "",
                "1.00",
                "blockdiff,blockdiff-before",
            ),
        ]);
        r.on("lvs", move |_| CommandOutput::ok(&rows));
        let lvm = Lvm::with_runner(r);
        assert!(stale_snapshots(&lvm, None, &[]).unwrap().is_empty());
    }

    #[test]
    fn a_thick_snapshot_cannot_be_retained() {
        let r = thick_vg(1 << 30);
        let lvm = Lvm::with_runner(r.clone());
        let snap = Snapshot::create(
            &lvm,
            &"vg0/data".parse().unwrap(),
            &SnapshotOptions::default(),
        )
        .unwrap();
        let err = snap
            .retain("blockdiff-chain-0123456789abcdef")
            .unwrap_err()
            .to_string();
        assert!(err.contains("thick snapshot"), "{err}");
        // Refused and removed, as a dropped guard is.
        assert!(r.calls().iter().any(|c| c.starts_with("lvremove")));
    }

    #[test]
    fn invalid_thick_snapshot_is_reported_full() {
        let r = Arc::new(RecordingRunner::strict());
        let rows = report(&[lv_row(
            "s",
            "swi-I-s---",
            8 << 20,
            "data",
            "",
            "100.00",
            "blockdiff",
        )]);
        r.on("lvs", move |_| CommandOutput::ok(&rows));
        let w = SnapshotWatcher {
            lvm: Lvm::with_runner(r),
            snapshot: "vg0/s".parse().unwrap(),
            thin_pool: None,
        };
        assert_eq!(
            w.usage().unwrap(),
            SnapshotUsage {
                percent: 100.0,
                invalid: true
            }
        );
    }

    #[test]
    fn stale_snapshots_are_those_whose_owner_is_gone() {
        let r = Arc::new(RecordingRunner::strict());
        let rows = report(&[
            lv_row("data", "owi-a-s---", 100 << 20, "", "", "", ""),
            lv_row(
                "a",
                "swi-a-s---",
                8 << 20,
                "data",
                "",
                "1.00",
                "blockdiff,blockdiff-pid-11",
            ),
            lv_row(
                "b",
                "swi-a-s---",
                8 << 20,
                "data",
                "",
                "1.00",
                "blockdiff,blockdiff-pid-22",
            ),
            lv_row(
                "c",
                "swi-a-s---",
                8 << 20,
                "data",
                "",
                "1.00",
                "blockdiff,blockdiff-pid-33",
            ),
            lv_row(
                "m",
                "swi-a-s---",
                8 << 20,
                "data",
                "",
                "1.00",
                "blockdiff,blockdiff-mount",
            ),
            lv_row("other", "swi-a-s---", 8 << 20, "data", "", "1.00", ""),
        ]);
        r.on("lvs", move |_| CommandOutput::ok(&rows));
        r.on("cat /proc/11/comm", |_| {
            CommandOutput::ok("blockdiff-backu\n")
        });
        r.on("cat /proc/22/comm", |_| {
            CommandOutput::failed(1, "cat: /proc/22/comm: No such file or directory")
        });
        r.on("cat /proc/33/comm", |_| CommandOutput::ok("bash\n"));
        let lvm = Lvm::with_runner(r);
        let all = tagged_snapshots(&lvm, Some("vg0")).unwrap();
        assert_eq!(all.len(), 4);
        let stale: Vec<_> = stale_snapshots(&lvm, Some("vg0"), &["blockdiff-mount"])
            .unwrap()
            .into_iter()
            .map(|s| s.lv.path.lv)
            .collect();
        // 11 still runs; 22 is gone; 33 is another program reusing the pid.
        assert_eq!(stale, ["b", "c"]);
    }

    #[test]
    fn names_are_unique_and_bounded() {
        let a = unique_name("data");
        let b = unique_name("data");
        assert_ne!(a, b);
        let long = unique_name(&"x".repeat(127));
        assert!(
            long.len() <= 100 && LvPath::new("vg", &long).is_ok(),
            "{long}"
        );
    }
}
