//! What a mount did, written down before and after each step so that
//! `blockdiff-umount`, in another process and after any crash, undoes
//! exactly that: `STATE_DIR/<id>.json`, and the mount's private directory
//! `STATE_DIR/<id>/` (where the FUSE file system is mounted when a file
//! system inside the image is mounted on the mount point).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::io_error;
use crate::{ExportError, Result};

/// Where mounts are recorded unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/blockdiff/mounts";

/// One mount of a generation, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountState {
    /// The mount point the user gave (absolute).
    pub dir: PathBuf,
    /// Where the FUSE file system is mounted: `dir` itself, or with a
    /// file system mounted from the image, a private directory.
    pub fuse_dir: PathBuf,
    /// The chain, as given.
    pub chain: String,
    /// The generation shown.
    pub generation: u64,
    /// The process that serves the FUSE file system.
    pub pid: u32,
    /// Its start time (`/proc/PID/stat`, field 22), so that another
    /// process that later got the same pid is never taken for it.
    pub pid_start: u64,
    /// The file of the FUSE mount a loop device was attached to.
    pub loop_file: Option<PathBuf>,
    /// The loop device, once attached.
    pub loop_device: Option<PathBuf>,
    /// The file system type found on it.
    pub fs_type: Option<String>,
}

/// The state files of one state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// The state directory `dir` (created 0700 when a mount is recorded).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        StateDir { dir: dir.into() }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// A name for mount point `mount_point` (its BLAKE3, shortened).
    fn id(mount_point: &Path) -> String {
        let hash = blake3::hash(mount_point.as_os_str().as_encoded_bytes());
        hash.to_hex()[..24].to_owned()
    }

    /// The state file of mount point `mount_point`.
    pub fn file(&self, mount_point: &Path) -> PathBuf {
        self.dir.join(format!("{}.json", Self::id(mount_point)))
    }

    /// The private directory of mount point `mount_point`.
    pub fn work_dir(&self, mount_point: &Path) -> PathBuf {
        self.dir.join(Self::id(mount_point))
    }

    /// Creates the state directory: 0700, owned by this user, never a
    /// symbolic link.
    pub(crate) fn ensure(&self) -> Result<()> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(io_error(&self.dir, "create"))?;
        check_private_dir(&self.dir)
    }

    /// Reads the state of mount point `mount_point`, if recorded.
    pub fn load(&self, mount_point: &Path) -> Result<Option<MountState>> {
        let path = self.file(mount_point);
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, "open")(e)),
        };
        let state: MountState = serde_json::from_reader(std::io::Read::take(file, 1 << 20))
            .map_err(|e| ExportError::BadState {
                path: path.clone(),
                detail: e.to_string(),
            })?;
        if state.dir != mount_point {
            return Err(ExportError::BadState {
                path,
                detail: format!("it records {}", state.dir.display()),
            });
        }
        Ok(Some(state))
    }

    /// Records `state`, atomically (a new file, fsync, rename).
    pub(crate) fn save(&self, state: &MountState) -> Result<()> {
        let path = self.file(&state.dir);
        let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
        let _ = fs::remove_file(&tmp);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
            .map_err(io_error(&tmp, "create"))?;
        let text = serde_json::to_vec_pretty(state).unwrap_or_default();
        file.write_all(&text)
            .and_then(|()| file.sync_all())
            .map_err(io_error(&tmp, "write"))?;
        fs::rename(&tmp, &path).map_err(io_error(&path, "rename into place"))
    }

    /// Forgets the mount of `mount_point`: its state file and private
    /// directory (which must be empty: nothing is mounted there any more).
    pub(crate) fn remove(&self, mount_point: &Path) -> Result<()> {
        let work = self.work_dir(mount_point);
        for dir in [work.join("image"), work.clone()] {
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_error(&dir, "remove")(e));
                }
                _ => {}
            }
        }
        // The server's log goes with it when nothing was logged.
        let log = self.file(mount_point).with_extension("log");
        if fs::symlink_metadata(&log).is_ok_and(|m| m.is_file() && m.len() == 0) {
            let _ = fs::remove_file(&log);
        }
        let path = self.file(mount_point);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&path, "remove")(e)),
            _ => Ok(()),
        }
    }
}

/// Refuses a directory that is a symbolic link, or that another user owns
/// or can write.
pub(crate) fn check_private_dir(dir: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(dir).map_err(io_error(dir, "stat"))?;
    // SAFETY: geteuid cannot fail and touches no memory.
    let me = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return Err(ExportError::Mount {
            path: dir.to_owned(),
            detail: "the state directory must be a directory of this user that no one else can write (not a symbolic link)".into(),
        });
    }
    Ok(())
}

/// The start time of process `pid` (`/proc/PID/stat` field 22), or `None`
/// if there is no such process or it has ended (a zombie no one reaped).
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count after it.
    let mut fields = stat[stat.rfind(')')? + 1..].split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_round_trips_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let states = StateDir::new(dir.path().join("mounts"));
        states.ensure().unwrap();
        let state = MountState {
            dir: PathBuf::from("/mnt/db"),
            fuse_dir: states.work_dir(Path::new("/mnt/db")).join("image"),
            chain: "/var/backup/db".into(),
            generation: 3,
            pid: 42,
            pid_start: 7,
            loop_file: None,
            loop_device: None,
            fs_type: None,
        };
        states.save(&state).unwrap();
        let file = states.file(Path::new("/mnt/db"));
        assert_eq!(fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        assert_eq!(states.load(Path::new("/mnt/db")).unwrap(), Some(state));
        assert_eq!(states.load(Path::new("/mnt/other")).unwrap(), None);
        states.remove(Path::new("/mnt/db")).unwrap();
        assert_eq!(states.load(Path::new("/mnt/db")).unwrap(), None);
    }

    #[test]
    fn a_symlinked_or_shared_state_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(StateDir::new(&link).ensure().is_err());
        fs::set_permissions(&real, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        assert!(StateDir::new(&real).ensure().is_err());
    }

    #[test]
    fn this_process_has_a_start_time() {
        assert!(process_start(std::process::id()).is_some());
        assert_eq!(process_start(u32::MAX), None);
    }
}
