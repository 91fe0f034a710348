use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::log::Logger;
use crate::mounts::{is_mount_point, read_mounts};
use crate::quiescer::Quiescer;

/// `_IOWR('X', 119, int)`: freeze a file system (linux/fs.h).
const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `_IOWR('X', 120, int)`: thaw it.
const FITHAW: libc::c_ulong = 0xC004_5878;

/// Freezes a mounted file system with the `FIFREEZE` ioctl (as
/// `fsfreeze -f` does) and thaws it with `FITHAW`: writes to it block,
/// and its on-disk state is consistent, until the thaw.
///
/// Do not freeze the file system that the backup, its log or its temporary
/// files are written to: those writes would block until the freeze window
/// limit thaws it. Needs root (`CAP_SYS_ADMIN`).
#[derive(Debug)]
pub struct FsFreezer {
    mount_point: PathBuf,
    frozen: Option<File>,
}

impl FsFreezer {
    /// The file system mounted at `mount_point`.
    pub fn new(mount_point: impl Into<PathBuf>) -> Self {
        FsFreezer {
            mount_point: mount_point.into(),
            frozen: None,
        }
    }

    /// The mount point.
    pub fn mount_point(&self) -> &Path {
        &self.mount_point
    }
}

fn ioctl(file: &File, request: libc::c_ulong) -> io::Result<()> {
    // SAFETY: FIFREEZE/FITHAW take an int argument that the kernel ignores;
    // the descriptor is open for the call.
    let result = unsafe { libc::ioctl(file.as_raw_fd(), request as _, 0) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Quiescer for FsFreezer {
    fn name(&self) -> String {
        format!("file system {}", self.mount_point.display())
    }

    fn prepare(&mut self, _log: &Logger) -> Result<()> {
        if !is_mount_point(&read_mounts()?, &self.mount_point) {
            return Err(Error::BadPath {
                path: self.mount_point.clone(),
                detail: "not a mount point (see /proc/mounts); fsfreeze needs the mount point of the file system".to_string(),
            });
        }
        Ok(())
    }

    fn freeze(&mut self, log: &Logger) -> Result<()> {
        let directory = File::open(&self.mount_point).ctx(&self.mount_point, "open")?;
        log.line(format!("fsfreeze: freezing {}", self.mount_point.display()));
        ioctl(&directory, FIFREEZE).map_err(|source| {
            let detail = match source.raw_os_error() {
                Some(libc::EBUSY) => {
                    "already frozen (by someone else: `fsfreeze -u` thaws it)".to_string()
                }
                Some(libc::EOPNOTSUPP) => "this file system type cannot be frozen".to_string(),
                Some(libc::EPERM) => "freezing needs root (CAP_SYS_ADMIN)".to_string(),
                _ => format!("FIFREEZE failed: {source}"),
            };
            Error::BadPath {
                path: self.mount_point.clone(),
                detail,
            }
        })?;
        self.frozen = Some(directory);
        Ok(())
    }

    fn thaw(&mut self, log: &Logger) -> Result<()> {
        let Some(directory) = self.frozen.take() else {
            return Ok(());
        };
        log.line(format!("fsfreeze: thawing {}", self.mount_point.display()));
        ioctl(&directory, FITHAW).ctx(&self.mount_point, "thaw (FITHAW)")
    }
}
