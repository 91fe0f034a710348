//! LVM snapshots for backups, with a lifecycle that never leaks.
//!
//! - [`Lvm`] runs `lvs`, `vgs`, `lvcreate`, `lvremove` through a
//!   [`CommandRunner`](command_runner::CommandRunner) (from the
//!   `command-runner` crate: [`Lvm::local`] runs them on this host, tests
//!   record them) and parses `lvs --reportformat json` into
//!   [`LogicalVolume`]s.
//! - [`Snapshot`] is a guard: [`Snapshot::create`] syncs, checks the volume
//!   group's free space against the [`SnapshotSize`] policy, and creates a
//!   thick or thin snapshot with a unique, tagged name; dropping the guard
//!   removes it. [`stale_snapshots`] finds those an earlier, killed run
//!   left behind.
//! - [`FillMonitor`] polls a snapshot's fill on a thread while it is read,
//!   keeps the peak, warns at a threshold and notices an overflowed
//!   (invalid) snapshot.
//! - Changed-block tracking of thin volumes: [`Snapshot::retain`] keeps a
//!   thin snapshot as a chain's base ([`retained_snapshots`] finds them),
//!   and [`ThinPool::delta`] reads which chunks differ between two thin
//!   devices from the pool's metadata (`thin_delta` over a reserved
//!   metadata snapshot) into a [`ThinDelta`].
//!
//! What is inside a volume (the partition table of a domU's disk, a
//! partition of a snapshot mounted read-only) is the `disk-partitions`
//! crate's, which builds on this one.
//!
//! ```no_run
//! use lvm_snap::{Lvm, Snapshot, SnapshotOptions};
//!
//! let lvm = Lvm::local();
//! let snapshot = Snapshot::create(&lvm, &"vg0/data".parse()?, &SnapshotOptions::default())?;
//! let image = std::fs::File::open(snapshot.device())?;
//! // … read the image at leisure …
//! drop(image);
//! snapshot.remove()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod error;
mod lvm;
mod monitor;
mod snapshot;
mod thin_delta;
mod volume_pattern;

pub use error::{Error, Result};
pub use lvm::{LogicalVolume, LvPath, Lvm, VolumeGroup};
pub use monitor::{FillEvent, FillMonitor, FillMonitorOptions, FillStatus};
pub use snapshot::{
    BEFORE_TAG, CHAIN_TAG_PREFIX, PID_TAG_PREFIX, RETAINED_TAG, SNAPSHOT_TAG, Snapshot,
    SnapshotOptions, SnapshotSize, SnapshotUsage, SnapshotWatcher, TaggedSnapshot,
    retained_snapshots, stale_snapshots, tagged_snapshots,
};
pub use thin_delta::{ChunkRange, ThinDelta, ThinPool, ThinPoolStatus};
pub use volume_pattern::{VolumePattern, VolumeSelection, glob_matches, skip_reason};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
