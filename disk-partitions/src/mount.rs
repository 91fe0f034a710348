//! One partition of a volume's snapshot, mounted read-only for a
//! file-level backup tool, and unmounted again by a later process.
//!
//! [`PartitionMounter::mount`] takes a snapshot (tagged [`MOUNT_TAG`]),
//! reads the partition table on it, attaches a loop device at the
//! partition's offset, runs `fsck -y` on it (which replays an unclean
//! ext3/ext4 journal into the writable snapshot) and mounts it with
//! `-o ro`. After each step it writes a state file, named after the mount
//! point, so that [`PartitionMounter::unmount`] — in another process, such
//! as a backup system's run-after hook — undoes exactly what was done, in
//! reverse. A failure undoes the steps done so far at once.
//!
//! Every command goes through the [`Lvm`]'s runner; the snapshot device is
//! read through a replaceable opener, so tests feed an in-memory image.

use std::fmt;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use command_runner::{CommandError, CommandLine, CommandOutput, run_checked};
use lvm_snap::{LvPath, Lvm, Snapshot, SnapshotOptions, TaggedSnapshot, tagged_snapshots};

use crate::partition::{PartitionTable, human_size, table_error};
use crate::{Error, Result};

/// The tag of a snapshot that backs a mounted partition: it outlives the
/// process that made it, so it is not stale while its state file exists.
pub const MOUNT_TAG: &str = "blockdiff-mount";
/// Where state files go unless [`PartitionMounter::with_state_dir`] says
/// otherwise: on a tmpfs, so a reboot (which ends every mount) clears it.
pub const DEFAULT_STATE_DIR: &str = "/run/blockdiff/mounts";
/// A state file larger than this is not one of ours.
const MAX_STATE_FILE_BYTES: u64 = 64 * 1024;
const STATE_VERSION: u64 = 1;
/// Exit codes of `fsck` up to this one mean the filesystem is usable
/// (0: clean, 1: errors corrected, 2: corrected, reboot advised).
const FSCK_WORST_USABLE: i32 = 2;

/// What a snapshot device is read through: a file, or a test's image.
pub trait DeviceReader: Read + Seek {}
impl<T: Read + Seek> DeviceReader for T {}

type OpenDevice = dyn Fn(&Path) -> io::Result<Box<dyn DeviceReader>> + Send + Sync;

/// How [`PartitionMounter::mount`] mounts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MountOptions {
    /// The partition number (as Linux numbers them). `None`: the only
    /// Linux-filesystem partition, or the whole volume if it has no
    /// partition table.
    pub partition: Option<u32>,
    /// The snapshot's size and extra tags ([`MOUNT_TAG`] is always added).
    pub snapshot: SnapshotOptions,
    /// Mount options beside `ro` (such as `nouuid` for XFS).
    pub mount_options: Vec<String>,
    /// Create the mount point if it does not exist (and remove it on
    /// unmount). Otherwise a missing mount point is an error.
    pub create_mount_point: bool,
}

/// What is mounted at a mount point, as its state file records it. A
/// step not done (or already undone) is `None` or `false`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountedPartition {
    /// The mount point, absolute and without symlinks.
    pub mount_point: PathBuf,
    /// The volume whose snapshot is mounted.
    pub origin: LvPath,
    /// The snapshot.
    pub snapshot: Option<LvPath>,
    /// The partition number, or `None` for the whole volume.
    pub partition: Option<u32>,
    /// Byte offset of the partition in the volume.
    pub offset: u64,
    /// Length of the partition in bytes.
    pub size: u64,
    /// The loop device attached to the partition.
    pub loop_device: Option<PathBuf>,
    /// Whether the loop device is mounted at the mount point.
    pub mounted: bool,
    /// Whether the mount point was created by the mount (and is removed
    /// with it).
    pub created_mount_point: bool,
}

impl MountedPartition {
    fn new(mount_point: PathBuf, origin: LvPath) -> Self {
        MountedPartition {
            mount_point,
            origin,
            snapshot: None,
            partition: None,
            offset: 0,
            size: 0,
            loop_device: None,
            mounted: false,
            created_mount_point: false,
        }
    }

    fn to_json(&self) -> Value {
        let path_text = |p: &Path| p.to_string_lossy().into_owned();
        json!({
            "version": STATE_VERSION,
            "mount_point": path_text(&self.mount_point),
            "origin": self.origin.to_string(),
            "snapshot": self.snapshot.as_ref().map(ToString::to_string),
            "partition": self.partition,
            "offset": self.offset,
            "size": self.size,
            "loop_device": self.loop_device.as_deref().map(path_text),
            "mounted": self.mounted,
            "created_mount_point": self.created_mount_point,
            "pid": std::process::id(),
        })
    }

    fn from_json(v: &Value) -> std::result::Result<Self, String> {
        let field = |k: &str| v.get(k).ok_or_else(|| format!("no field {k}"));
        let text = |k: &str| -> std::result::Result<Option<String>, String> {
            match field(k)? {
                Value::Null => Ok(None),
                Value::String(s) => Ok(Some(s.clone())),
                _ => Err(format!("{k} is not text")),
            }
        };
        let number = |k: &str| field(k)?.as_u64().ok_or(format!("{k} is not a number"));
        let flag = |k: &str| {
            field(k)?
                .as_bool()
                .ok_or(format!("{k} is not true or false"))
        };
        let lv = |k: &str| -> std::result::Result<Option<LvPath>, String> {
            text(k)?
                .map(|t| t.parse().map_err(|e: lvm_snap::Error| format!("{k}: {e}")))
                .transpose()
        };
        if number("version")? != STATE_VERSION {
            return Err(format!("version is not {STATE_VERSION}"));
        }
        let partition = match field("partition")? {
            Value::Null => None,
            p => Some(
                p.as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or("partition is not a number")?,
            ),
        };
        Ok(MountedPartition {
            mount_point: text("mount_point")?.ok_or("no mount point")?.into(),
            origin: lv("origin")?.ok_or("no origin")?,
            snapshot: lv("snapshot")?,
            partition,
            offset: number("offset")?,
            size: number("size")?,
            loop_device: text("loop_device")?.map(PathBuf::from),
            mounted: flag("mounted")?,
            created_mount_point: flag("created_mount_point")?,
        })
    }
}

/// What keeps a blockdiff snapshot, as [`PartitionMounter::snapshot_statuses`]
/// finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotState {
    /// The process that made it still runs.
    OwnerRunning,
    /// A state file records it as mounted (or half mounted) here.
    Mounted(PathBuf),
    /// Its owner is gone, but the device is open (a loop device or a
    /// reader holds it): not removed.
    Open,
    /// Kept after its backup as the base of the next run's changed-block
    /// tracking ([`lvm_snap::RETAINED_TAG`]): removed when the next
    /// backup of its chain is committed, never by a cleanup.
    Retained,
    /// Kept by a restore ([`lvm_snap::BEFORE_TAG`]): the volume as it was
    /// before the restore wrote it; `lvconvert --merge` undoes the
    /// restore, `lvremove` drops it. Never removed by a cleanup.
    Before,
    /// Nothing holds it: a killed run left it, and it can be removed.
    Stale,
}

impl fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotState::OwnerRunning => f.write_str("in use by its running owner"),
            SnapshotState::Mounted(dir) => write!(f, "mounted at {}", dir.display()),
            SnapshotState::Open => f.write_str("open, owner gone"),
            SnapshotState::Retained => f.write_str("retained: the base of its chain's tracking"),
            SnapshotState::Before => {
                f.write_str("kept by a restore: the volume before it (lvconvert --merge undoes it)")
            }
            SnapshotState::Stale => f.write_str("stale"),
        }
    }
}

/// A blockdiff snapshot with what keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotStatus {
    /// The snapshot, its owner and whether the owner runs.
    pub snapshot: TaggedSnapshot,
    /// What keeps it, if anything.
    pub state: SnapshotState,
}

/// Mounts partitions of snapshots and unmounts them, keeping state files
/// in a directory. Cheap to clone.
#[derive(Clone)]
pub struct PartitionMounter {
    lvm: Lvm,
    state_dir: PathBuf,
    open_device: Arc<OpenDevice>,
}

impl fmt::Debug for PartitionMounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionMounter")
            .field("state_dir", &self.state_dir)
            .finish_non_exhaustive()
    }
}

impl PartitionMounter {
    /// Runs commands through `lvm`, keeps state in [`DEFAULT_STATE_DIR`]
    /// and reads snapshot devices as files.
    pub fn new(lvm: &Lvm) -> Self {
        PartitionMounter {
            lvm: lvm.clone(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            open_device: Arc::new(|path: &Path| {
                fs::File::open(path).map(|f| Box::new(f) as Box<dyn DeviceReader>)
            }),
        }
    }

    /// Keeps state files in `dir` (created when needed).
    pub fn with_state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    /// Reads snapshot devices through `open` (tests: an in-memory image).
    pub fn with_device_opener(
        mut self,
        open: impl Fn(&Path) -> io::Result<Box<dyn DeviceReader>> + Send + Sync + 'static,
    ) -> Self {
        self.open_device = Arc::new(open);
        self
    }

    /// The directory of state files.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The state file of a mount point (absolute, without symlinks):
    /// `/srv/backup/domu-a` → `srv-backup-domu\x2da.json` in the state
    /// directory, escaped as systemd escapes paths.
    pub fn state_file(&self, mount_point: &Path) -> Result<PathBuf> {
        let bytes = mount_point.as_os_str().as_bytes();
        let trimmed = bytes.strip_prefix(b"/").unwrap_or(bytes);
        let trimmed = trimmed.strip_suffix(b"/").unwrap_or(trimmed);
        let mut name = String::new();
        for (i, &b) in trimmed.iter().enumerate() {
            match b {
                b'/' => name.push('-'),
                b'.' if i == 0 => name.push_str("\\x2e"),
                b if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' => name.push(b as char),
                b => name.push_str(&format!("\\x{b:02x}")),
            }
        }
        if name.is_empty() {
            name.push('-');
        }
        if name.len() > 240 {
            return Err(Error::MountPointTooLong {
                path: mount_point.to_owned(),
            });
        }
        Ok(self.state_dir.join(format!("{name}.json")))
    }

    /// Mounts a partition of a new snapshot of `origin` read-only at
    /// `mount_point`: snapshot, partition table, `losetup`, `fsck -y`,
    /// `mount -o ro`, each step reported through `on_step` and recorded in
    /// the state file. On failure the steps done are undone in reverse
    /// (reported as `undo: …`), and the error is returned; if undoing fails
    /// too, the state file keeps what is left, for [`Self::unmount`].
    pub fn mount(
        &self,
        origin: &LvPath,
        mount_point: &Path,
        options: &MountOptions,
        on_step: &mut dyn FnMut(&str),
    ) -> Result<MountedPartition> {
        let (mount_point, exists) = resolve_mount_point(mount_point, options.create_mount_point)?;
        let state_file = self.state_file(&mount_point)?;
        if let Some(old) = self.load(&state_file)? {
            return Err(Error::AlreadyMounted {
                mount_point,
                origin: old.origin,
                state_file,
            });
        }
        fs::create_dir_all(&self.state_dir).map_err(|source| Error::Io {
            path: self.state_dir.clone(),
            op: "creating the state directory",
            source,
        })?;
        let mut record = MountedPartition::new(mount_point, origin.clone());
        if !exists {
            fs::create_dir(&record.mount_point).map_err(|source| Error::Io {
                path: record.mount_point.clone(),
                op: "creating the mount point",
                source,
            })?;
            record.created_mount_point = true;
            on_step(&format!(
                "created mount point {}",
                record.mount_point.display()
            ));
        }
        match self.mount_steps(&mut record, options, on_step) {
            Ok(()) => Ok(record),
            Err(error) => {
                if let Err(undo_error) = self.teardown(&mut record, "undo: ", on_step) {
                    on_step(&format!(
                        "undo failed: {undo_error}; unmount {} again to finish",
                        record.mount_point.display()
                    ));
                }
                Err(error)
            }
        }
    }

    fn mount_steps(
        &self,
        record: &mut MountedPartition,
        options: &MountOptions,
        on_step: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let mut snapshot_options = options.snapshot.clone();
        if !snapshot_options.extra_tags.iter().any(|t| t == MOUNT_TAG) {
            snapshot_options.extra_tags.push(MOUNT_TAG.to_owned());
        }
        let origin = record.origin.clone();
        let snapshot = Snapshot::create(&self.lvm, &origin, &snapshot_options)?.keep();
        record.snapshot = Some(snapshot.clone());
        on_step(&format!("created snapshot {snapshot} of {origin}"));
        self.save(record)?;

        let device = snapshot.device();
        self.choose_partition(record, &device, options.partition, on_step)?;

        let mut args = vec!["--find".to_owned(), "--show".to_owned()];
        if record.partition.is_some() {
            args.extend([
                "--offset".to_owned(),
                record.offset.to_string(),
                "--sizelimit".to_owned(),
                record.size.to_string(),
            ]);
        }
        args.push(device.to_string_lossy().into_owned());
        let losetup = CommandLine::new("losetup", args);
        let out = self.run(&losetup)?;
        let loop_device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !loop_device.starts_with("/dev/") || loop_device.contains(char::is_whitespace) {
            return Err(Error::Parse {
                command: losetup.to_string(),
                detail: format!("'{loop_device}' is not a loop device"),
            });
        }
        let loop_device = PathBuf::from(loop_device);
        record.loop_device = Some(loop_device.clone());
        self.save(record)?;
        on_step(&format!(
            "attached {} to {} at offset {}",
            loop_device.display(),
            device.display(),
            record.offset
        ));

        let fsck = CommandLine::new("fsck", ["-y".to_owned(), path_arg(&loop_device)]);
        let out = self.run_unchecked(&fsck)?;
        match out.status {
            Some(code) if (0..=FSCK_WORST_USABLE).contains(&code) => {
                on_step(&format!(
                    "{fsck}: exit status {code}: {}",
                    output_line(&out)
                ));
            }
            _ => {
                return Err(Error::Command(CommandError::Failed {
                    command: fsck.to_string(),
                    status: match out.status {
                        Some(_) => {
                            format!("{}: the filesystem has errors it left", out.status_text())
                        }
                        None => out.status_text(),
                    },
                    stderr: output_line(&out),
                }));
            }
        }

        let mut mount_options = vec!["ro".to_owned()];
        mount_options.extend(options.mount_options.iter().cloned());
        let mount = CommandLine::new(
            "mount",
            [
                "-o".to_owned(),
                mount_options.join(","),
                path_arg(&loop_device),
                path_arg(&record.mount_point),
            ],
        );
        self.run(&mount)?;
        record.mounted = true;
        self.save(record)?;
        on_step(&format!(
            "mounted {} read-only at {}",
            loop_device.display(),
            record.mount_point.display()
        ));
        Ok(())
    }

    /// Reads the snapshot's partition table and records the partition to
    /// mount: the one asked for, or the only Linux filesystem, or the
    /// whole volume if there is no table.
    fn choose_partition(
        &self,
        record: &mut MountedPartition,
        device: &Path,
        wanted: Option<u32>,
        on_step: &mut dyn FnMut(&str),
    ) -> Result<()> {
        let reader = (self.open_device)(device).map_err(|source| Error::Io {
            path: device.to_owned(),
            op: "opening",
            source,
        })?;
        let mut reader = reader;
        let table = PartitionTable::read(&mut reader, device)?;
        let size = reader
            .seek(io::SeekFrom::End(0))
            .map_err(|source| Error::Io {
                path: device.to_owned(),
                op: "finding the size of",
                source,
            })?;
        let listing = || {
            table
                .partitions()
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        if let PartitionTable::None = table {
            if let Some(n) = wanted {
                return Err(table_error(
                    device,
                    0,
                    format!(
                        "there is no partition table, so no partition {n}: leave out the partition number to mount the whole volume"
                    ),
                ));
            }
            record.size = size;
            on_step(&format!(
                "no partition table on {}: mounting the whole volume ({})",
                record.origin,
                human_size(size)
            ));
            return Ok(());
        }
        let partition = match wanted {
            Some(n) => table.partition(n).ok_or_else(|| {
                table_error(
                    device,
                    0,
                    format!(
                        "the {} partition table has no partition {n}; it has {}",
                        table.label(),
                        if table.partitions().is_empty() {
                            "none".to_owned()
                        } else {
                            listing()
                        }
                    ),
                )
            })?,
            None => {
                let linux: Vec<_> = table
                    .partitions()
                    .iter()
                    .filter(|p| p.is_linux_filesystem())
                    .collect();
                match linux.as_slice() {
                    [only] => *only,
                    _ => {
                        return Err(table_error(
                            device,
                            0,
                            format!(
                                "the {} partition table has {} Linux filesystem partitions, so choose one by number: {}",
                                table.label(),
                                linux.len(),
                                if table.partitions().is_empty() {
                                    "it has no partitions at all".to_owned()
                                } else {
                                    listing()
                                }
                            ),
                        ));
                    }
                }
            }
        };
        record.partition = Some(partition.number);
        record.offset = partition.start;
        record.size = partition.size;
        on_step(&format!(
            "{} partition table on {}: partition {partition}",
            table.label(),
            record.origin
        ));
        Ok(())
    }

    /// Unmounts what [`Self::mount`] mounted at `mount_point` (perhaps in
    /// another process): `umount`, `losetup -d`, removes the snapshot and
    /// the state file, each step reported through `on_step`. A step
    /// already undone (the mount or loop device gone) is skipped, so a
    /// failed unmount can be run again.
    pub fn unmount(
        &self,
        mount_point: &Path,
        on_step: &mut dyn FnMut(&str),
    ) -> Result<MountedPartition> {
        let absolute = fs::canonicalize(mount_point)
            .or_else(|_| std::path::absolute(mount_point))
            .map_err(|source| Error::Io {
                path: mount_point.to_owned(),
                op: "resolving",
                source,
            })?;
        let state_file = self.state_file(&absolute)?;
        let Some(mut record) = self.load(&state_file)? else {
            return Err(Error::NotMounted {
                mount_point: absolute,
                state_file,
            });
        };
        let mounted = record.clone();
        self.teardown(&mut record, "", on_step)?;
        Ok(mounted)
    }

    /// Undoes what `record` says was done, in reverse, updating the state
    /// file after each step and removing it at the end.
    fn teardown(
        &self,
        record: &mut MountedPartition,
        prefix: &str,
        on_step: &mut dyn FnMut(&str),
    ) -> Result<()> {
        // State updates are best effort here: every step below can be
        // repeated safely, so a stale record costs nothing.
        if record.mounted {
            let umount = CommandLine::new("umount", [path_arg(&record.mount_point)]);
            let out = self.run_unchecked(&umount)?;
            if !out.success() && !out.stderr_line().contains("not mounted") {
                return Err(CommandError::failed(&umount, &out).into());
            }
            record.mounted = false;
            let _ = self.save(record);
            on_step(&format!(
                "{prefix}unmounted {}",
                record.mount_point.display()
            ));
        }
        if let Some(loop_device) = record.loop_device.clone() {
            let detach = CommandLine::new("losetup", ["-d".to_owned(), path_arg(&loop_device)]);
            let out = self.run_unchecked(&detach)?;
            if !out.success() && !out.stderr_line().contains("No such device") {
                return Err(CommandError::failed(&detach, &out).into());
            }
            record.loop_device = None;
            let _ = self.save(record);
            on_step(&format!("{prefix}detached {}", loop_device.display()));
        }
        if let Some(snapshot) = record.snapshot.clone() {
            match self.lvm.remove(&snapshot) {
                Ok(()) => {}
                Err(lvm_snap::Error::Command(CommandError::Failed { stderr, .. }))
                    if stderr.contains("Failed to find") => {}
                Err(e) => return Err(e.into()),
            }
            record.snapshot = None;
            let _ = self.save(record);
            on_step(&format!("{prefix}removed snapshot {snapshot}"));
        }
        if record.created_mount_point {
            match fs::remove_dir(&record.mount_point) {
                Ok(()) => on_step(&format!(
                    "{prefix}removed mount point {}",
                    record.mount_point.display()
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => on_step(&format!(
                    "{prefix}left mount point {}: {e}",
                    record.mount_point.display()
                )),
            }
            record.created_mount_point = false;
        }
        let state_file = self.state_file(&record.mount_point)?;
        match fs::remove_file(&state_file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::Io {
                path: state_file,
                op: "removing",
                source,
            }),
        }
    }

    /// Every mount recorded in the state directory, by mount point.
    pub fn mounts(&self) -> Result<Vec<MountedPartition>> {
        let entries = match fs::read_dir(&self.state_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(Error::Io {
                    path: self.state_dir.clone(),
                    op: "listing",
                    source,
                });
            }
        };
        let mut mounts = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| Error::Io {
                path: self.state_dir.clone(),
                op: "listing",
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "json")
                && let Some(record) = self.load(&path)?
            {
                mounts.push(record);
            }
        }
        mounts.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
        Ok(mounts)
    }

    /// Every blockdiff snapshot (in `vg`, or all) with what keeps it: its
    /// running owner, a mount's state file, an open device, or nothing
    /// ([`SnapshotState::Stale`]: safe to remove). A mount's snapshot whose
    /// state file is gone (the state directory was cleared) and whose
    /// device nobody holds open is stale too.
    pub fn snapshot_statuses(&self, vg: Option<&str>) -> Result<Vec<SnapshotStatus>> {
        let mounts = self.mounts()?;
        Ok(tagged_snapshots(&self.lvm, vg)?
            .into_iter()
            .map(|snapshot| {
                let mount = mounts
                    .iter()
                    .find(|m| m.snapshot.as_ref() == Some(&snapshot.lv.path));
                let open = snapshot.lv.is_open();
                let state = match mount {
                    Some(m) => SnapshotState::Mounted(m.mount_point.clone()),
                    None if snapshot.owner_running => SnapshotState::OwnerRunning,
                    None if snapshot.lv.tags.iter().any(|t| t == lvm_snap::RETAINED_TAG) => {
                        SnapshotState::Retained
                    }
                    None if snapshot.lv.tags.iter().any(|t| t == lvm_snap::BEFORE_TAG) => {
                        SnapshotState::Before
                    }
                    None if open => SnapshotState::Open,
                    None => SnapshotState::Stale,
                };
                SnapshotStatus { snapshot, state }
            })
            .collect())
    }

    /// Runs a command beside LVM's through the [`Lvm`]'s runner and fails
    /// unless it exits with 0.
    fn run(&self, command: &CommandLine) -> Result<CommandOutput> {
        Ok(run_checked(self.lvm.runner().as_ref(), command)?)
    }

    /// Runs a command beside LVM's; a failing exit status is returned, not
    /// an error.
    fn run_unchecked(&self, command: &CommandLine) -> Result<CommandOutput> {
        self.lvm
            .runner()
            .run(command)
            .map_err(|source| CommandError::spawn(command, source).into())
    }

    /// The record in `state_file`, or `None` if there is none.
    fn load(&self, state_file: &Path) -> Result<Option<MountedPartition>> {
        let io_error = |source| Error::Io {
            path: state_file.to_owned(),
            op: "reading",
            source,
        };
        let file = match fs::File::open(state_file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        let mut text = Vec::new();
        file.take(MAX_STATE_FILE_BYTES + 1)
            .read_to_end(&mut text)
            .map_err(io_error)?;
        let bad = |detail: String| Error::StateFile {
            path: state_file.to_owned(),
            detail,
        };
        if text.len() as u64 > MAX_STATE_FILE_BYTES {
            return Err(bad(format!("larger than {MAX_STATE_FILE_BYTES} bytes")));
        }
        let json: Value = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        MountedPartition::from_json(&json).map(Some).map_err(bad)
    }

    /// Writes `record` to its state file: a temporary file, fsynced and
    /// renamed into place, so a reader never sees half a record.
    fn save(&self, record: &MountedPartition) -> Result<()> {
        let state_file = self.state_file(&record.mount_point)?;
        let temp = state_file.with_extension("json.tmp");
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io {
                path,
                op: "writing",
                source,
            }
        };
        let mut file = fs::File::create(&temp).map_err(io_error(&temp))?;
        let mut text = serde_json::to_vec_pretty(&record.to_json()).expect("JSON of a record");
        text.push(b'\n');
        file.write_all(&text).map_err(io_error(&temp))?;
        file.sync_all().map_err(io_error(&temp))?;
        fs::rename(&temp, &state_file).map_err(io_error(&state_file))
    }
}

/// The mount point, absolute and without symlinks, and whether it exists.
/// It must be a directory; a missing one is an error unless `create`
/// (then its parent must exist).
fn resolve_mount_point(dir: &Path, create: bool) -> Result<(PathBuf, bool)> {
    let io_error = |path: &Path, op| {
        let path = path.to_owned();
        move |source| Error::Io { path, op, source }
    };
    match fs::canonicalize(dir) {
        Ok(path) => {
            if !path.is_dir() {
                return Err(Error::NotADirectory {
                    path: dir.to_owned(),
                });
            }
            Ok((path, true))
        }
        Err(e) if create && e.kind() == io::ErrorKind::NotFound => {
            let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
                return Err(io_error(dir, "finding the mount point")(e));
            };
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            let parent = fs::canonicalize(parent)
                .map_err(io_error(parent, "finding the mount point's parent"))?;
            Ok((parent.join(name), false))
        }
        Err(e) => Err(io_error(dir, "finding the mount point")(e)),
    }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A command's output (standard output, then standard error) on one line.
fn output_line(out: &CommandOutput) -> String {
    let stdout = CommandOutput {
        stderr: out.stdout.clone(),
        ..CommandOutput::default()
    }
    .stderr_line();
    [stdout, out.stderr_line()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::tests::{gpt_image, mbr_image};
    use command_runner::{CommandOutput, RecordingRunner};
    use std::io::Cursor;

    const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
    const EFI: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";

    fn lv_row(name: &str, attr: &str, origin: &str, tags: &str) -> String {
        format!(
            r#"{{"lv_name":"{name}", "vg_name":"vg0", "lv_attr":"{attr}", "lv_size":"10485760", "origin":"{origin}", "pool_lv":"", "data_percent":"{}", "lv_tags":"{tags}"}}"#,
            if origin.is_empty() { "" } else { "2.00" }
        )
    }

    fn report(rows: &[String]) -> String {
        format!(r#"{{"report": [{{"lv": [{}]}}]}}"#, rows.join(","))
    }

    /// A runner on which every step succeeds: a thick LV vg0/domu-a, a
    /// loop device /dev/loop7, fsck replaying the journal.
    fn host() -> Arc<RecordingRunner> {
        let r = Arc::new(RecordingRunner::strict());
        let origin = report(&[lv_row("domu-a", "-wi-ao----", "", "")]);
        r.on("lvs", move |_| CommandOutput::ok(origin.as_str()));
        r.on("vgs", |_| {
            CommandOutput::ok(r#"{"report": [{"vg": [{"vg_name":"vg0", "vg_size":"1073741824", "vg_free":"536870912", "vg_extent_size":"4194304"}]}]}"#)
        });
        r.on("sync", |_| CommandOutput::ok(""));
        r.on("lvcreate", |_| {
            CommandOutput::ok("  Logical volume created.\n")
        });
        r.on("losetup", |_| CommandOutput::ok("/dev/loop7\n"));
        r.on("losetup -d", |_| CommandOutput::ok(""));
        r.on("fsck", |_| CommandOutput {
            status: Some(1),
            stdout: b"fsck from util-linux 2.38.1\n/dev/loop7: recovering journal\n/dev/loop7: clean, 12/2560 files\n".to_vec(),
            stderr: Vec::new(),
        });
        r.on("mount", |_| CommandOutput::ok(""));
        r.on("umount", |_| CommandOutput::ok(""));
        r.on("lvremove", |_| CommandOutput::ok(""));
        r
    }

    struct Fixture {
        runner: Arc<RecordingRunner>,
        mounter: PartitionMounter,
        dir: tempfile::TempDir,
        mount_point: PathBuf,
    }

    /// A mounter whose snapshot devices read as `image`, with its state
    /// directory and an existing mount point in a temporary directory.
    fn fixture(image: Vec<u8>) -> Fixture {
        let runner = host();
        let dir = tempfile::tempdir().unwrap();
        let mount_point = dir.path().join("mnt");
        fs::create_dir(&mount_point).unwrap();
        let image = Arc::new(image);
        let mounter = PartitionMounter::new(&Lvm::with_runner(runner.clone()))
            .with_state_dir(dir.path().join("state"))
            .with_device_opener(move |path| {
                assert!(
                    path.to_string_lossy().starts_with("/dev/vg0/domu-a-bd-"),
                    "{path:?}"
                );
                Ok(Box::new(Cursor::new(image.as_ref().clone())))
            });
        let mount_point = fs::canonicalize(mount_point).unwrap();
        Fixture {
            runner,
            mounter,
            dir,
            mount_point,
        }
    }

    /// 8 MiB with an MBR: partition 1 is swap, 2 is Linux at 2 MiB.
    fn mbr_disk() -> Vec<u8> {
        mbr_image(16384, &[(0x82, 2048, 2048), (0x83, 4096, 8192)], &[])
    }

    fn origin() -> LvPath {
        "vg0/domu-a".parse().unwrap()
    }

    /// The commands after the snapshot's creation, with its name as SNAP.
    fn commands_after_create(r: &RecordingRunner) -> Vec<String> {
        let cmds = r.calls();
        let create = cmds.iter().position(|c| c.starts_with("lvcreate")).unwrap();
        let name = cmds[create].split_whitespace().nth(3).unwrap().to_owned();
        assert!(
            cmds[create].contains(" --addtag blockdiff-mount vg0/domu-a"),
            "{}",
            cmds[create]
        );
        cmds[create + 1..]
            .iter()
            .map(|c| c.replace(&name, "SNAP"))
            .collect()
    }

    fn mount(f: &Fixture, options: &MountOptions) -> (Result<MountedPartition>, Vec<String>) {
        let mut steps = Vec::new();
        let result = f
            .mounter
            .mount(&origin(), &f.mount_point, options, &mut |s| {
                steps.push(s.to_owned());
            });
        (result, steps)
    }

    fn state_files(f: &Fixture) -> Vec<PathBuf> {
        match fs::read_dir(f.dir.path().join("state")) {
            Ok(d) => d.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn mount_then_a_later_process_unmounts_in_reverse() {
        let f = fixture(mbr_disk());
        let (result, steps) = mount(&f, &MountOptions::default());
        let mounted = result.unwrap();
        let mp = f.mount_point.display().to_string();
        assert_eq!(
            commands_after_create(&f.runner),
            [
                "losetup --find --show --offset 2097152 --sizelimit 4194304 /dev/vg0/SNAP"
                    .to_owned(),
                "fsck -y /dev/loop7".to_owned(),
                format!("mount -o ro /dev/loop7 {mp}"),
            ]
        );
        assert_eq!(mounted.partition, Some(2));
        assert_eq!((mounted.offset, mounted.size), (2 << 20, 4 << 20));
        assert_eq!(steps.len(), 5, "{steps:?}");
        assert!(
            steps[1].starts_with(
                "dos partition table on vg0/domu-a: partition 2: Linux, 4 MiB at offset 2097152"
            ),
            "{steps:?}"
        );
        assert!(steps[3].contains("recovering journal"), "{steps:?}");
        // The state file, as a later process finds it.
        let state = f.mounter.state_file(&f.mount_point).unwrap();
        assert!(state.exists());
        let later = PartitionMounter::new(&Lvm::with_runner(f.runner.clone()))
            .with_state_dir(f.mounter.state_dir());
        assert_eq!(later.mounts().unwrap(), std::slice::from_ref(&mounted));
        let before = f.runner.calls().len();
        let mut steps = Vec::new();
        let unmounted = later
            .unmount(&f.mount_point, &mut |s| steps.push(s.to_owned()))
            .unwrap();
        assert_eq!(unmounted, mounted);
        let snap = mounted.snapshot.unwrap().to_string();
        assert_eq!(
            f.runner.calls()[before..],
            [
                format!("umount {mp}"),
                "losetup -d /dev/loop7".to_owned(),
                format!("lvremove -f -y {snap}"),
            ]
        );
        assert_eq!(
            steps,
            [
                format!("unmounted {mp}"),
                "detached /dev/loop7".to_owned(),
                format!("removed snapshot {snap}"),
            ]
        );
        assert!(state_files(&f).is_empty());
        // Nothing is mounted there any more.
        let err = later.unmount(&f.mount_point, &mut |_| {}).unwrap_err();
        assert!(err.to_string().starts_with("blockdiff mount at "), "{err}");
    }

    #[test]
    fn a_failure_at_each_step_undoes_the_steps_before_it_in_reverse() {
        // (the failing command, what the mount runs after lvcreate)
        let cases: [(&str, &[&str]); 4] = [
            ("lvcreate", &[]),
            ("losetup --find", &["losetup --find", "lvremove"]),
            (
                "fsck",
                &["losetup --find", "fsck", "losetup -d", "lvremove"],
            ),
            (
                "mount",
                &["losetup --find", "fsck", "mount", "losetup -d", "lvremove"],
            ),
        ];
        for (failing, expected) in cases {
            let f = fixture(mbr_disk());
            f.runner
                .on(failing, |_| CommandOutput::failed(4, "it broke"));
            let (result, steps) = mount(&f, &MountOptions::default());
            let err = result.unwrap_err().to_string();
            assert!(err.contains("exited with status 4"), "{failing}: {err}");
            let cmds = f.runner.calls();
            let create = cmds.iter().position(|c| c.starts_with("lvcreate")).unwrap();
            let ran: Vec<_> = cmds[create + 1..]
                .iter()
                .map(|c| {
                    expected
                        .iter()
                        .find(|e| c.starts_with(*e))
                        .copied()
                        .unwrap_or(c)
                })
                .collect();
            assert_eq!(ran, expected, "{failing}");
            if failing != "lvcreate" {
                assert!(
                    steps
                        .last()
                        .unwrap()
                        .starts_with("undo: removed snapshot vg0/domu-a-bd-"),
                    "{failing}: {steps:?}"
                );
            }
            assert!(state_files(&f).is_empty(), "{failing}");
        }
    }

    #[test]
    fn a_bad_or_missing_partition_removes_the_snapshot() {
        for (image, partition, message) in [
            (
                mbr_disk(),
                Some(3),
                "the dos partition table has no partition 3; it has 1: Linux swap, 1 MiB at offset 1048576; 2: Linux, 4 MiB at offset 2097152",
            ),
            (
                mbr_image(16384, &[(0x83, 2048, 2048), (0x83, 4096, 8192)], &[]),
                None,
                "the dos partition table has 2 Linux filesystem partitions, so choose one by number",
            ),
            (
                vec![0; 4096],
                Some(1),
                "there is no partition table, so no partition 1",
            ),
            (
                {
                    let mut img = mbr_disk();
                    img[446 + 16 + 15] = 0x01; // partition 2 far too long
                    img
                },
                None,
                "offset 462: partition 2 ends at byte",
            ),
        ] {
            let f = fixture(image);
            let options = MountOptions {
                partition,
                ..MountOptions::default()
            };
            let err = mount(&f, &options).0.unwrap_err().to_string();
            assert!(
                err.starts_with("/dev/vg0/domu-a-bd-") && err.contains(message),
                "{err}"
            );
            let after = commands_after_create(&f.runner);
            assert_eq!(after, ["lvremove -f -y vg0/SNAP"], "{err}");
            assert!(state_files(&f).is_empty());
        }
    }

    #[test]
    fn gpt_picks_the_linux_filesystem_and_no_table_mounts_the_whole_volume() {
        let gpt = gpt_image(
            512,
            16384,
            &[(EFI, 2048, 4095, "efi"), (LINUX, 4096, 12287, "root")],
        );
        let f = fixture(gpt);
        let mounted = mount(&f, &MountOptions::default()).0.unwrap();
        assert_eq!(mounted.partition, Some(2));
        assert_eq!(
            commands_after_create(&f.runner)[0],
            "losetup --find --show --offset 2097152 --sizelimit 4194304 /dev/vg0/SNAP"
        );

        let f = fixture(vec![0; 1 << 20]);
        let options = MountOptions {
            mount_options: vec!["noexec".into(), "nouuid".into()],
            ..MountOptions::default()
        };
        let mounted = mount(&f, &options).0.unwrap();
        assert_eq!((mounted.partition, mounted.size), (None, 1 << 20));
        let after = commands_after_create(&f.runner);
        assert_eq!(after[0], "losetup --find --show /dev/vg0/SNAP");
        assert_eq!(
            after[2],
            format!(
                "mount -o ro,noexec,nouuid /dev/loop7 {}",
                f.mount_point.display()
            )
        );
    }

    #[test]
    fn a_failed_undo_keeps_the_state_for_a_later_unmount() {
        let f = fixture(mbr_disk());
        f.runner.on("mount", |_| {
            CommandOutput::failed(32, "mount: wrong fs type")
        });
        f.runner.on("lvremove", |_| {
            CommandOutput::failed(5, "Logical volume in use.")
        });
        let (result, steps) = mount(&f, &MountOptions::default());
        assert!(result.unwrap_err().to_string().contains("wrong fs type"));
        assert!(
            steps.last().unwrap().starts_with("undo failed: `lvremove"),
            "{steps:?}"
        );
        let left = f.mounter.mounts().unwrap();
        assert_eq!(left.len(), 1);
        assert!(left[0].snapshot.is_some() && left[0].loop_device.is_none() && !left[0].mounted);
        // Later the snapshot can go: unmount removes just it.
        f.runner.on("lvremove", |_| CommandOutput::ok(""));
        let before = f.runner.calls().len();
        f.mounter.unmount(&f.mount_point, &mut |_| {}).unwrap();
        let after = &f.runner.calls()[before..];
        assert_eq!(after.len(), 1);
        assert!(
            after[0].starts_with("lvremove -f -y vg0/domu-a-bd-"),
            "{after:?}"
        );
        assert!(state_files(&f).is_empty());
    }

    #[test]
    fn unmount_skips_what_is_already_gone() {
        let f = fixture(mbr_disk());
        mount(&f, &MountOptions::default()).0.unwrap();
        f.runner.on("umount", |_| {
            CommandOutput::failed(32, "umount: /mnt: not mounted.")
        });
        f.runner.on("losetup -d", |_| {
            CommandOutput::failed(
                1,
                "losetup: /dev/loop7: detach failed: No such device or address",
            )
        });
        f.runner.on("lvremove", |_| {
            CommandOutput::failed(5, "Failed to find logical volume \"vg0/x\"")
        });
        f.mounter.unmount(&f.mount_point, &mut |_| {}).unwrap();
        assert!(state_files(&f).is_empty());
    }

    #[test]
    fn refusals_run_no_command() {
        let f = fixture(mbr_disk());
        // A missing mount point.
        let mut steps = Vec::new();
        let err = f
            .mounter
            .mount(
                &origin(),
                &f.dir.path().join("nope"),
                &MountOptions::default(),
                &mut |s| steps.push(s.to_owned()),
            )
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("finding the mount point "), "{err}");
        assert!(f.runner.calls().is_empty() && steps.is_empty());
        // A file is no mount point.
        let file = f.dir.path().join("file");
        fs::write(&file, "").unwrap();
        let err = f
            .mounter
            .mount(&origin(), &file, &MountOptions::default(), &mut |_| {})
            .unwrap_err();
        assert!(err.to_string().ends_with("is not a directory"), "{err}");
        // A second mount at the same place.
        mount(&f, &MountOptions::default()).0.unwrap();
        let n = f.runner.calls().len();
        let err = mount(&f, &MountOptions::default())
            .0
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("already holds a blockdiff mount of vg0/domu-a"),
            "{err}"
        );
        assert_eq!(f.runner.calls().len(), n);
    }

    #[test]
    fn a_created_mount_point_goes_with_the_mount() {
        let f = fixture(mbr_disk());
        let dir = f.dir.path().join("each").join("domu-a");
        fs::create_dir(f.dir.path().join("each")).unwrap();
        let options = MountOptions {
            create_mount_point: true,
            ..MountOptions::default()
        };
        let mut steps = Vec::new();
        let mounted = f
            .mounter
            .mount(&origin(), &dir, &options, &mut |s| steps.push(s.to_owned()))
            .unwrap();
        assert!(mounted.created_mount_point && dir.is_dir());
        assert!(steps[0].starts_with("created mount point "), "{steps:?}");
        f.mounter.unmount(&dir, &mut |_| {}).unwrap();
        assert!(!dir.exists());
        // And on failure.
        f.runner.on("fsck", |_| {
            CommandOutput::failed(8, "fsck.ext4: bad superblock")
        });
        let err = f
            .mounter
            .mount(&origin(), &dir, &options, &mut |_| {})
            .unwrap_err();
        assert!(err.to_string().contains("bad superblock"), "{err}");
        assert!(!dir.exists());
    }

    #[test]
    fn state_files_are_named_after_the_mount_point() {
        let m = PartitionMounter::new(&Lvm::with_runner(host())).with_state_dir("/run/x");
        let name = |p: &str| m.state_file(Path::new(p)).unwrap();
        assert_eq!(
            name("/srv/backup/domu-a"),
            Path::new("/run/x/srv-backup-domu\\x2da.json")
        );
        assert_eq!(name("/"), Path::new("/run/x/-.json"));
        assert_eq!(
            name("/.hidden/a b"),
            Path::new("/run/x/\\x2ehidden-a\\x20b.json")
        );
        assert_ne!(name("/a-b"), name("/a/b"));
        assert!(m.state_file(&Path::new("/").join("x".repeat(300))).is_err());
    }

    #[test]
    fn broken_state_files_are_errors_not_panics() {
        let f = fixture(mbr_disk());
        let state = f.mounter.state_file(&f.mount_point).unwrap();
        fs::create_dir_all(state.parent().unwrap()).unwrap();
        for content in [
            "".to_owned(),
            "[]".to_owned(),
            r#"{"version": 1}"#.to_owned(),
            r#"{"version": 2, "mount_point": "/x"}"#.to_owned(),
            " ".repeat(100_000),
        ] {
            fs::write(&state, &content).unwrap();
            let err = f.mounter.unmount(&f.mount_point, &mut |_| {}).unwrap_err();
            assert!(
                err.to_string().contains("not a blockdiff mount state file"),
                "{err}"
            );
        }
        assert!(f.runner.calls().is_empty());
    }

    #[test]
    fn snapshot_statuses_tell_mounted_running_open_and_stale_apart() {
        let f = fixture(mbr_disk());
        let mounted = mount(&f, &MountOptions::default()).0.unwrap();
        let snap = mounted.snapshot.unwrap().lv;
        let rows = report(&[
            lv_row("domu-a", "owi-aos---", "", ""),
            lv_row(
                &snap,
                "swi-aos---",
                "domu-a",
                "blockdiff,blockdiff-pid-9,blockdiff-mount",
            ),
            lv_row("run", "swi-a-s---", "domu-a", "blockdiff,blockdiff-pid-10"),
            lv_row("open", "swi-aos---", "domu-a", "blockdiff,blockdiff-pid-9"),
            lv_row(
                "lost",
                "swi-a-s---",
                "domu-a",
                "blockdiff,blockdiff-pid-9,blockdiff-mount",
            ),
            lv_row("old", "swi-a-s---", "domu-a", "blockdiff,blockdiff-pid-9"),
        ]);
        f.runner
            .on("lvs", move |_| CommandOutput::ok(rows.as_str()));
        f.runner.on("cat /proc/9/comm", |_| {
            CommandOutput::failed(1, "No such file")
        });
        f.runner.on("cat /proc/10/comm", |_| {
            CommandOutput::ok("blockdiff-backu\n")
        });
        let states: Vec<_> = f
            .mounter
            .snapshot_statuses(Some("vg0"))
            .unwrap()
            .into_iter()
            .map(|s| (s.snapshot.lv.path.lv, s.state))
            .collect();
        assert_eq!(
            states,
            [
                (snap, SnapshotState::Mounted(f.mount_point.clone())),
                ("run".into(), SnapshotState::OwnerRunning),
                ("open".into(), SnapshotState::Open),
                ("lost".into(), SnapshotState::Stale),
                ("old".into(), SnapshotState::Stale),
            ]
        );
    }
}
