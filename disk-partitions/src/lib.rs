//! Disk images inside logical volumes (a Xen domU's disk): their partition
//! tables, and one partition of a snapshot mounted read-only for a
//! file-level backup.
//!
//! - [`PartitionTable::read`] reads the MBR (primaries, and the logical
//!   partitions of an extended partition's chain, numbered from 5 as Linux
//!   numbers them) or the GPT (CRC32s checked, 512- or 4096-byte sectors,
//!   the backup header when the primary is damaged) of a device or image
//!   itself, without the kernel. The bytes are untrusted, the guest's: every
//!   length is bounded before anything is allocated, and a bad table is an
//!   [`Error::PartitionTable`] naming the device and the offset, never a
//!   panic. Each [`Partition`] has its number, byte range, [`PartitionType`]
//!   (an MBR id or a GPT type [`Guid`]) and GPT name.
//! - [`PartitionMounter::mount`] takes a snapshot of a volume (through
//!   `lvm-snap`, tagged [`MOUNT_TAG`]), finds the partition on it, attaches a
//!   loop device at its offset, runs `fsck -y` (replaying an unclean journal
//!   into the snapshot) and mounts it `-o ro`, recording each step in a
//!   state file (in [`DEFAULT_STATE_DIR`] unless told otherwise) so that
//!   [`PartitionMounter::unmount`], in a later process, undoes exactly that,
//!   in reverse: the [`MountedPartition`]. [`MountOptions`] choose the
//!   partition, the snapshot's size and extra mount options.
//! - [`PartitionMounter::snapshot_statuses`] tells, for every blockdiff
//!   snapshot, what keeps it ([`SnapshotStatus`], [`SnapshotState`]): its
//!   running owner, a mount, an open device, or nothing (stale).
//!
//! Commands (`losetup`, `fsck`, `mount`, `umount`) run through the
//! [`Lvm`](lvm_snap::Lvm)'s `CommandRunner`, and snapshot devices are read
//! through a replaceable opener (any [`DeviceReader`]), so the whole mount
//! and unmount is tested on in-memory images.
//!
//! ```
//! use std::io::Cursor;
//! use std::path::Path;
//! use disk_partitions::{PartitionTable, PartitionType};
//!
//! // A 4 MiB image with an MBR: partition 1, type 0x83, 2 MiB at 1 MiB.
//! let mut image = vec![0u8; 4 << 20];
//! let entry = &mut image[446..462];
//! entry[4] = 0x83;
//! entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
//! entry[12..16].copy_from_slice(&4096u32.to_le_bytes());
//! image[510..512].copy_from_slice(&[0x55, 0xAA]);
//!
//! let table = PartitionTable::read(Cursor::new(&image), Path::new("disk.img"))?;
//! assert_eq!(table.label(), "dos");
//! let root = table.partition(1).unwrap();
//! assert_eq!((root.start, root.size), (1 << 20, 2 << 20));
//! assert_eq!(root.kind, PartitionType::Mbr(0x83));
//! assert_eq!(root.to_string(), "1: Linux, 2 MiB at offset 1048576");
//!
//! // A partition past the end of the device is an error naming the entry.
//! let err = PartitionTable::read(Cursor::new(&image[..2 << 20]), Path::new("disk.img"))
//!     .unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "disk.img: offset 446: partition 1 ends at byte 3145728, beyond the end of the device (2097152 bytes)"
//! );
//! # Ok::<(), disk_partitions::Error>(())
//! ```
#![deny(missing_docs)]

mod error;
mod mount;
mod partition;

pub use error::{Error, Result};
pub use mount::{
    DEFAULT_STATE_DIR, DeviceReader, MOUNT_TAG, MountOptions, MountedPartition, PartitionMounter,
    SnapshotState, SnapshotStatus,
};
pub use partition::{Guid, Partition, PartitionTable, PartitionType};

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
