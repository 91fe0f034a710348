use std::fs;
use std::path::{Component, Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::log::Logger;
use crate::mounts::{Mount, PROC_MOUNTS, read_mounts};
use crate::quiescer::Quiescer;

/// Finds the cgroup2 mount point in a mount table (`/sys/fs/cgroup` on a
/// unified layout, `/sys/fs/cgroup/unified` on a hybrid one).
pub fn find_cgroup2_mount() -> Result<PathBuf> {
    cgroup2_mount_in(&read_mounts()?)
}

fn cgroup2_mount_in(mounts: &[Mount]) -> Result<PathBuf> {
    mounts
        .iter()
        .find(|mount| mount.fs_type == "cgroup2")
        .map(|mount| mount.mount_point.clone())
        .ok_or(Error::NoCgroup2Mount {
            mounts: PROC_MOUNTS.into(),
        })
}

/// Resolves a cgroup as given in a spec: an absolute path must lie inside
/// the cgroup2 mount; a relative one is taken from the mount.
fn resolve_cgroup(given: &Path, mount: &Path) -> Result<PathBuf> {
    if given.components().any(|c| c == Component::ParentDir) {
        return Err(Error::BadPath {
            path: given.to_path_buf(),
            detail: "a cgroup path may not contain `..`".to_string(),
        });
    }
    if given.is_absolute() {
        if given.starts_with(mount) && given != mount {
            Ok(given.to_path_buf())
        } else {
            Err(Error::BadPath {
                path: given.to_path_buf(),
                detail: format!(
                    "not a cgroup below the cgroup2 mount {} (give a path below it, or one relative to it)",
                    mount.display()
                ),
            })
        }
    } else {
        Ok(mount.join(given))
    }
}

/// Freezes a cgroup v2 with its `cgroup.freeze` file: writes 1, waits until
/// `cgroup.events` says `frozen 1`; thaw writes 0 and waits for
/// `frozen 0`. A cgroup that is already frozen is left frozen.
#[derive(Debug)]
pub struct CgroupFreezer {
    path: PathBuf,
    timeout: Duration,
    froze_it: bool,
}

impl CgroupFreezer {
    /// The cgroup at `path` (absolute below the cgroup2 mount, or relative
    /// to it), found through `/proc/mounts`; `timeout` bounds each wait for
    /// `cgroup.events`.
    pub fn new(path: &Path, timeout: Duration) -> Result<Self> {
        let mount = find_cgroup2_mount()?;
        Ok(CgroupFreezer {
            path: resolve_cgroup(path, &mount)?,
            timeout,
            froze_it: false,
        })
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn frozen_state(&self) -> Result<Option<u8>> {
        let events = self.path.join("cgroup.events");
        let text = fs::read_to_string(&events).ctx(&events, "read")?;
        Ok(text
            .lines()
            .find_map(|line| line.strip_prefix("frozen "))
            .and_then(|value| value.trim().parse().ok()))
    }

    fn write_freeze(&self, value: &str) -> Result<()> {
        let file = self.path.join("cgroup.freeze");
        fs::write(&file, value).ctx(&file, "write")
    }

    fn wait_for(&self, want: u8) -> Result<()> {
        let start = Instant::now();
        loop {
            if self.frozen_state()? == Some(want) {
                return Ok(());
            }
            if start.elapsed() >= self.timeout {
                return Err(Error::CgroupFreezeTimeout {
                    path: self.path.clone(),
                    want,
                    waited: self.timeout,
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Quiescer for CgroupFreezer {
    fn name(&self) -> String {
        format!("cgroup {}", self.path.display())
    }

    fn prepare(&mut self, _log: &Logger) -> Result<()> {
        if !self.path.join("cgroup.freeze").is_file() {
            return Err(Error::BadPath {
                path: self.path.clone(),
                detail: "no cgroup.freeze here: not a non-root cgroup v2 directory".to_string(),
            });
        }
        Ok(())
    }

    fn freeze(&mut self, log: &Logger) -> Result<()> {
        if self.frozen_state()? == Some(1) {
            log.line(format!(
                "cgroup {}: already frozen; leaving it as it is",
                self.path.display()
            ));
            return Ok(());
        }
        log.line(format!(
            "cgroup {}: writing 1 to cgroup.freeze",
            self.path.display()
        ));
        self.write_freeze("1")?;
        if let Err(error) = self.wait_for(1) {
            let _ = self.write_freeze("0");
            return Err(error);
        }
        self.froze_it = true;
        log.line(format!("cgroup {}: frozen", self.path.display()));
        Ok(())
    }

    fn thaw(&mut self, log: &Logger) -> Result<()> {
        if !self.froze_it {
            return Ok(());
        }
        log.line(format!(
            "cgroup {}: writing 0 to cgroup.freeze",
            self.path.display()
        ));
        self.write_freeze("0")?;
        self.froze_it = false;
        self.wait_for(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mounts::parse_mounts;

    #[test]
    fn finds_the_cgroup2_mount_of_a_hybrid_layout() {
        let mounts = parse_mounts(
            "tmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup /sys/fs/cgroup/freezer cgroup rw,freezer 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n",
        );
        assert_eq!(
            cgroup2_mount_in(&mounts).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified")
        );
        assert!(matches!(
            cgroup2_mount_in(&mounts[..2]),
            Err(Error::NoCgroup2Mount { .. })
        ));
    }

    #[test]
    fn resolves_paths_against_the_mount() {
        let mount = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(
            resolve_cgroup(Path::new("app"), mount).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/app")
        );
        assert_eq!(
            resolve_cgroup(Path::new("/sys/fs/cgroup/unified/a/b"), mount).unwrap(),
            PathBuf::from("/sys/fs/cgroup/unified/a/b")
        );
        let error = resolve_cgroup(Path::new("/sys/fs/cgroup/app"), mount).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("not a cgroup below the cgroup2 mount /sys/fs/cgroup/unified")
        );
        assert!(resolve_cgroup(Path::new("a/../../etc"), mount).is_err());
        assert!(resolve_cgroup(mount, mount).is_err());
    }
}
