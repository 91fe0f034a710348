//! A generation mounted: the FUSE file system of its image files, and
//! with [`FsChoice`] a file system inside the image mounted read-only from
//! a loop device; undone, even after a crash, by [`unmount`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use command_runner::{CommandLine, CommandRunner, run_checked};
use fuser::{BackgroundSession, Config, MountOption};

use crate::error::io_error;
use crate::image_files::{ImageFile, ImageFiles};
use crate::image_fs::ImageFs;
use crate::mount_state::{MountState, StateDir, check_private_dir, process_start};
use crate::mount_table::mounted_at;
use crate::{ExportError, Result};

/// Which file system inside the image to mount on the mount point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsChoice {
    /// The one Linux file system: the image's if it has no partition
    /// table, else its only Linux partition.
    Auto,
    /// The whole image.
    Image,
    /// Partition N.
    Partition(u32),
}

/// How a generation is mounted.
#[derive(Debug, Clone)]
pub struct MountOptions {
    /// The mount point, an existing directory.
    pub dir: PathBuf,
    /// `None`: the mount point shows the image files; `Some`: it shows
    /// the files of that file system.
    pub fs: Option<FsChoice>,
    /// Where the mount is recorded.
    pub state_dir: PathBuf,
    /// The chain's name, for the state and for `mount`'s listing.
    pub chain: String,
    /// The generation shown.
    pub generation: u64,
}

/// A mounted generation, served by this process until it is unmounted
/// ([`unmount`], from any process).
pub struct GenerationMount {
    session: BackgroundSession,
    state: MountState,
}

impl std::fmt::Debug for GenerationMount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationMount")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

/// The absolute form of `dir`, its symbolic links resolved, checked to be
/// a directory.
fn mount_point(dir: &Path) -> Result<PathBuf> {
    let canonical = dir
        .canonicalize()
        .map_err(io_error(dir, "open mount point"))?;
    if !canonical.is_dir() {
        return Err(ExportError::Mount {
            path: dir.to_owned(),
            detail: "is not a directory".into(),
        });
    }
    Ok(canonical)
}

/// The file of `files` that `choice` names.
fn chosen_file(files: &ImageFiles, choice: FsChoice, dir: &Path) -> Result<ImageFile> {
    let list = || {
        files
            .files()
            .iter()
            .skip(1)
            .map(|f| format!("{} ({} bytes at {})", f.name, f.size, f.start))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let refuse = |detail: String| ExportError::Mount {
        path: dir.to_owned(),
        detail,
    };
    match choice {
        FsChoice::Image => Ok(files.files()[0].clone()),
        FsChoice::Partition(n) => files.partition(n).cloned().ok_or_else(|| {
            refuse(format!(
                "the image has no partition {n}; it has: {}",
                if files.files().len() > 1 {
                    list()
                } else {
                    "no partition table".into()
                }
            ))
        }),
        FsChoice::Auto => match files.files().len() {
            1 => Ok(files.files()[0].clone()),
            2 => Ok(files.files()[1].clone()),
            _ => Err(refuse(format!(
                "the image has several partitions ({}); say which with --fs N",
                list()
            ))),
        },
    }
}

/// The options that mount `fs_type` read-only without writing to it: an
/// unreplayed journal is left as it is (the file system is seen as of the
/// crash-consistent snapshot, minus the journal's last transactions).
fn read_only_options(fs_type: &str) -> &'static str {
    match fs_type {
        "ext3" | "ext4" => "ro,noload,nodev,nosuid",
        "xfs" => "ro,norecovery,nodev,nosuid",
        _ => "ro,nodev,nosuid",
    }
}

impl GenerationMount {
    /// Mounts `fs` as `options` say, running `losetup`, `blkid` and
    /// `mount` through `runner`. Every step is recorded in the state
    /// directory before the next; a failure undoes the steps done.
    pub fn mount(
        fs: ImageFs,
        files: &ImageFiles,
        options: &MountOptions,
        runner: Arc<dyn CommandRunner>,
    ) -> Result<Self> {
        let dir = mount_point(&options.dir)?;
        let states = StateDir::new(&options.state_dir);
        states.ensure()?;
        if let Some(old) = states.load(&dir)? {
            let alive = process_start(old.pid) == Some(old.pid_start);
            let mounted = mounted_at(&old.dir)?.is_some() || mounted_at(&old.fuse_dir)?.is_some();
            if alive || mounted {
                return Err(ExportError::Mount {
                    path: dir,
                    detail: format!(
                        "generation {} of {} is mounted here already; run blockdiff-umount {} first",
                        old.generation,
                        old.chain,
                        old.dir.display()
                    ),
                });
            }
            // A mount that ended without blockdiff-umount: nothing of it
            // remains but its record.
            states.remove(&dir)?;
        }
        if let Some(m) = mounted_at(&dir)? {
            return Err(ExportError::Mount {
                path: dir,
                detail: format!(
                    "something is mounted here already ({} from {})",
                    m.fs_type, m.source
                ),
            });
        }
        let chosen = match options.fs {
            Some(choice) => Some(chosen_file(files, choice, &dir)?),
            None => None,
        };
        let fuse_dir = match chosen {
            Some(_) => {
                let work = states.work_dir(&dir);
                let image = work.join("image");
                for d in [&work, &image] {
                    match std::fs::create_dir(d) {
                        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                            return Err(io_error(d, "create")(e));
                        }
                        _ => {}
                    }
                    std::fs::set_permissions(
                        d,
                        std::os::unix::fs::PermissionsExt::from_mode(0o700),
                    )
                    .map_err(io_error(d, "chmod"))?;
                    check_private_dir(d)?;
                }
                image
            }
            None => dir.clone(),
        };
        let pid = std::process::id();
        let mut state = MountState {
            dir: dir.clone(),
            fuse_dir: fuse_dir.clone(),
            chain: options.chain.clone(),
            generation: options.generation,
            pid,
            pid_start: process_start(pid).unwrap_or(0),
            loop_file: chosen.as_ref().map(|f| fuse_dir.join(&f.name)),
            loop_device: None,
            fs_type: None,
        };
        states.save(&state)?;
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::RO,
            MountOption::FSName(format!("blockdiff:{}", options.chain)),
            MountOption::Subtype("blockdiff".into()),
            MountOption::NoDev,
            MountOption::NoSuid,
            MountOption::DefaultPermissions,
        ];
        config.n_threads = Some(2);
        let session = match fuser::spawn_mount2(fs, &fuse_dir, &config) {
            Ok(s) => s,
            Err(e) => {
                let _ = states.remove(&dir);
                return Err(ExportError::Mount {
                    path: fuse_dir,
                    detail: format!(
                        "cannot mount the FUSE file system: {e} (is /dev/fuse there, and fusermount3 installed?)"
                    ),
                });
            }
        };
        let mut mount = GenerationMount {
            session,
            state: state.clone(),
        };
        if let Some(file) = state.loop_file.clone() {
            let done = (|| -> Result<()> {
                let out = run_checked(
                    runner.as_ref(),
                    &CommandLine::new(
                        "losetup",
                        ["--read-only", "--find", "--show", &file.to_string_lossy()],
                    ),
                )?;
                let device = PathBuf::from(out.stdout_text().trim());
                state.loop_device = Some(device.clone());
                states.save(&state)?;
                let blkid = CommandLine::new(
                    "blkid",
                    ["-p", "-o", "value", "-s", "TYPE", &device.to_string_lossy()],
                );
                // Exit status 2: nothing found, told below.
                let out = runner
                    .run(&blkid)
                    .map_err(|e| command_runner::CommandError::spawn(&blkid, e))?;
                let fs_type = out.stdout_text().trim().to_owned();
                if fs_type.is_empty() {
                    return Err(ExportError::Mount {
                        path: dir.clone(),
                        detail: format!(
                            "no file system found on {} of generation {}",
                            file.file_name().unwrap_or_default().to_string_lossy(),
                            options.generation
                        ),
                    });
                }
                state.fs_type = Some(fs_type.clone());
                states.save(&state)?;
                run_checked(
                    runner.as_ref(),
                    &CommandLine::new(
                        "mount",
                        [
                            "-t",
                            fs_type.as_str(),
                            "-o",
                            read_only_options(&fs_type),
                            &device.to_string_lossy(),
                            &dir.to_string_lossy(),
                        ],
                    ),
                )?;
                Ok(())
            })();
            mount.state = state.clone();
            if let Err(e) = done {
                let _ = unmount_recorded(&states, &state, runner.as_ref(), false);
                drop(mount);
                return Err(e);
            }
        }
        Ok(mount)
    }

    /// What was mounted.
    pub fn state(&self) -> &MountState {
        &self.state
    }

    /// Serves the file system until it is unmounted.
    pub fn wait(self) -> Result<()> {
        let dir = self.state.fuse_dir.clone();
        self.session.join().map_err(io_error(dir, "serve"))
    }
}

/// What [`unmount`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnmountReport {
    /// The file system of the image was unmounted from the mount point.
    pub fs_unmounted: bool,
    /// The loop devices detached.
    pub loops_detached: Vec<PathBuf>,
    /// The FUSE file system was unmounted.
    pub fuse_unmounted: bool,
    /// The serving process had died (killed) rather than ended.
    pub server_was_dead: bool,
}

/// Unmounts what was mounted on `dir` (as recorded in `state_dir`), in
/// reverse: the file system inside the image, its loop device, the FUSE
/// file system; then waits for the serving process to end, and forgets
/// the mount. Works after any crash of the serving process or of an
/// earlier unmount; a mount point still in use is an error, and nothing
/// after it is undone.
pub fn unmount(dir: &Path, state_dir: &Path, runner: &dyn CommandRunner) -> Result<UnmountReport> {
    // A dead FUSE mount cannot be stat'ed: resolve the path without it.
    let absolute = std::path::absolute(dir).map_err(io_error(dir, "resolve"))?;
    let states = StateDir::new(state_dir);
    let state = match states.load(&absolute)? {
        Some(s) => s,
        None => match dir.canonicalize().ok().map(|c| states.load(&c)) {
            Some(Ok(Some(s))) => s,
            _ => {
                return Err(ExportError::Mount {
                    path: dir.to_owned(),
                    detail: format!(
                        "no blockdiff mount is recorded here (in {})",
                        state_dir.display()
                    ),
                });
            }
        },
    };
    unmount_recorded(&states, &state, runner, true)
}

fn unmount_recorded(
    states: &StateDir,
    state: &MountState,
    runner: &dyn CommandRunner,
    wait_for_server: bool,
) -> Result<UnmountReport> {
    let mut report = UnmountReport::default();
    if state.fuse_dir != state.dir
        && let Some(m) = mounted_at(&state.dir)?
        && state
            .loop_device
            .as_ref()
            .is_none_or(|d| Path::new(&m.source) == d)
    {
        run_checked(
            runner,
            &CommandLine::new("umount", [state.dir.to_string_lossy()]),
        )?;
        report.fs_unmounted = true;
    }
    if let Some(file) = &state.loop_file {
        let out = run_checked(
            runner,
            &CommandLine::new(
                "losetup",
                [
                    "--list",
                    "--noheadings",
                    "--raw",
                    "--output",
                    "NAME,BACK-FILE",
                ],
            ),
        )?;
        for line in out.stdout_text().lines() {
            let Some((name, back)) = line.split_once(' ') else {
                continue;
            };
            // losetup shows a back file as the kernel names it, possibly
            // followed by " (deleted)".
            let back = back.trim_end_matches(" (deleted)");
            if Path::new(back) == file {
                run_checked(runner, &CommandLine::new("losetup", ["-d", name]))?;
                report.loops_detached.push(PathBuf::from(name));
            }
        }
    }
    if mounted_at(&state.fuse_dir)?.is_some_and(|m| m.fs_type.starts_with("fuse")) {
        let gentle = runner
            .run(&CommandLine::new(
                "fusermount3",
                ["-u", &state.fuse_dir.to_string_lossy()],
            ))
            .is_ok_and(|o| o.success());
        if !gentle {
            // A server that was killed leaves a mount that only a lazy
            // unmount removes.
            run_checked(
                runner,
                &CommandLine::new("umount", ["-l", &state.fuse_dir.to_string_lossy()]),
            )?;
        }
        report.fuse_unmounted = true;
    }
    let alive = || process_start(state.pid) == Some(state.pid_start);
    report.server_was_dead = !alive();
    if wait_for_server && state.pid != std::process::id() {
        // Its session ended with the unmount: it exits on its own.
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive() {
            // SAFETY: kill touches no memory; the pid and its start time
            // were checked to be the server's.
            unsafe { libc::kill(state.pid as i32, libc::SIGKILL) };
        }
    }
    states.remove(&state.dir)?;
    Ok(report)
}
