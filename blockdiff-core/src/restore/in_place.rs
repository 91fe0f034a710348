//! The existing file or block device a delta restore updates in place:
//! opened once, without following links (the rules of [`look`]), read to
//! compare and written through the same handle.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::{Error, Result};

use super::target::{Existing, look, open_at};

/// A target written in place.
#[derive(Debug)]
pub(super) struct InPlaceTarget {
    file: File,
    path: PathBuf,
    /// Its size when opened (a device's) or as last set (a file's).
    size: u64,
    device: bool,
}

impl InPlaceTarget {
    /// Opens an existing regular file (one with no other hard link: an
    /// update in place would change the other names' file too) or block
    /// device for reading and writing. A block device is opened
    /// exclusively (`O_EXCL`: the kernel refuses it while it is mounted,
    /// or held by device-mapper, md or another exclusive opener) unless
    /// `force`.
    pub(super) fn open(path: &Path, force: bool) -> Result<InPlaceTarget> {
        Self::open_or_create(path, force, false).map(|(target, _)| target)
    }

    /// As [`open`](Self::open); with `create`, a missing regular file is
    /// created (exclusively, mode 0600, empty; never under `/dev`), and
    /// the second value says so.
    pub(super) fn open_or_create(
        path: &Path,
        force: bool,
        create: bool,
    ) -> Result<(InPlaceTarget, bool)> {
        let bad = |detail: String| {
            Err(Error::BadTarget {
                path: path.to_owned(),
                detail,
            })
        };
        let (dir, name, existing) = look(path)?;
        let mut created = false;
        let (file, device) = match existing {
            Existing::Absent if create => {
                let file = open_at(
                    &dir,
                    &name,
                    libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .ctx(path, "create")?;
                created = true;
                (file, false)
            }
            Existing::Absent => {
                return bad(
                    "does not exist; a delta restore updates an existing file or device (a full restore creates a file)".into(),
                );
            }
            Existing::File(st) if st.st_nlink > 1 => {
                return bad(format!(
                    "has {} hard links; updating it in place would change the files of the other names too (one may be a backup's): copy it first, or restore to another path",
                    st.st_nlink
                ));
            }
            Existing::File(_) => (
                open_at(&dir, &name, libc::O_RDWR | libc::O_NOFOLLOW, 0).ctx(path, "open")?,
                false,
            ),
            Existing::BlockDevice => {
                let exclusive = if force { 0 } else { libc::O_EXCL };
                match open_at(&dir, &name, libc::O_RDWR | libc::O_NOFOLLOW | exclusive, 0) {
                    Ok(f) => (f, true),
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                        return bad(
                            "the device is in use (mounted, or held by another program); restoring under a mounted file system corrupts it: unmount it, or give --force if you are sure".into(),
                        );
                    }
                    Err(e) => return Err(e).ctx(path, "open device"),
                }
            }
        };
        let meta = file.metadata().ctx(path, "stat")?;
        let still = if device {
            std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type())
        } else {
            meta.is_file() && meta.nlink() == 1
        };
        if !still {
            return bad("changed while it was opened; not restoring".into());
        }
        let size = if device {
            // SAFETY: a valid fd.
            let end = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
            if end < 0 {
                return Err(io::Error::last_os_error()).ctx(path, "find the device's size");
            }
            // SAFETY: a valid fd; back to the start for the comparison's
            // sequential reads.
            if unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
                return Err(io::Error::last_os_error()).ctx(path, "seek");
            }
            end as u64
        } else {
            meta.len()
        };
        Ok((
            InPlaceTarget {
                file,
                path: path.to_owned(),
                size,
                device,
            },
            created,
        ))
    }

    /// The target as given, for messages.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file this target created, if its name still leads to
    /// it (never a file put there since, nor a device).
    pub(super) fn remove_created(self) -> Result<()> {
        let ours = self.file.metadata().ctx(&self.path, "stat")?;
        match std::fs::symlink_metadata(&self.path) {
            Ok(now) if !self.device && now.dev() == ours.dev() && now.ino() == ours.ino() => {
                std::fs::remove_file(&self.path).ctx(&self.path, "remove")
            }
            _ => Ok(()),
        }
    }

    /// A second handle, read from its start, for a comparison.
    pub(super) fn reader(&self) -> Result<File> {
        let file = self
            .file
            .try_clone()
            .ctx(&self.path, "duplicate the target's handle")?;
        // SAFETY: a valid fd (shared with `self.file`, which is only
        // written by position).
        if unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_SET) } < 0 {
            return Err(io::Error::last_os_error()).ctx(&self.path, "seek");
        }
        Ok(file)
    }

    /// Fits the target to an image of `size` bytes (`what` names it in
    /// messages): a device must be at least that large (its bytes past
    /// the end are kept); a regular file of another size is refused unless
    /// `resize`, which sets its length.
    pub(super) fn fit(&mut self, size: u64, resize: bool, what: &str) -> Result<()> {
        if self.device {
            if self.size < size {
                return Err(Error::TargetTooSmall {
                    path: self.path.clone(),
                    need: size,
                    have: self.size,
                });
            }
            return Ok(());
        }
        if self.size != size {
            if !resize {
                return Err(Error::BadTarget {
                    path: self.path.clone(),
                    detail: format!(
                        "is {} bytes and {what} is {size}: give --resize to make it {size} bytes, or restore in full to another path",
                        self.size
                    ),
                });
            }
            self.file.set_len(size).ctx(&self.path, "set the size")?;
            self.size = size;
        }
        Ok(())
    }

    /// Writes `data` at `offset`, never past the end of a device.
    pub(super) fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let end = offset + data.len() as u64;
        if self.device && end > self.size {
            return Err(Error::TargetTooSmall {
                path: self.path.clone(),
                need: end,
                have: self.size,
            });
        }
        self.file
            .write_all_at(data, offset)
            .ctx(&self.path, "write")
    }

    /// Flushes what was written to stable storage.
    pub(super) fn sync(&self) -> Result<()> {
        self.file.sync_all().ctx(&self.path, "sync")
    }
}
