//! The file or device a restore writes to, opened without following links
//! and written through a temporary nobody else can open.
//!
//! A regular-file target is written to an anonymous file (`O_TMPFILE`) in
//! the target's directory: it has no name while it is written, so a crash
//! leaves nothing behind, and nobody can plant a link at it. At the end it
//! is given a name with `linkat` (the target's own name when the target
//! does not exist; otherwise an unpredictable name, created exclusively,
//! then renamed over the target). Where the file system has no `O_TMPFILE`
//! the file is created under an unpredictable name with
//! `O_CREAT|O_EXCL|O_NOFOLLOW`, and removed on every failure path.
//! Every name is resolved relative to the directory opened once, and no
//! call follows a symbolic link at the target's name.

use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::block::is_zero;
use crate::error::IoContext;
use crate::progress::Progress;
use crate::{Error, Result};

use super::RestoreReport;

fn cstr(name: &OsStr) -> CString {
    // A file name from `Path::file_name` holds no NUL byte.
    CString::new(name.as_bytes()).unwrap_or_default()
}

fn last_error<T>(path: &Path, op: &'static str) -> Result<T> {
    Err(io::Error::last_os_error()).ctx(path, op)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; `None` if it does not exist.
fn stat_at(dir: &File, name: &CString, path: &Path) -> Result<Option<libc::stat>> {
    // SAFETY: an all-zero `stat` is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd, NUL-terminated name, and a stat buffer we own.
    let r = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            name.as_ptr(),
            &raw mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if r == 0 {
        return Ok(Some(st));
    }
    let e = io::Error::last_os_error();
    if e.kind() == io::ErrorKind::NotFound {
        Ok(None)
    } else {
        Err(e).ctx(path, "stat")
    }
}

pub(super) fn open_at(
    dir: &File,
    name: &CString,
    flags: libc::c_int,
    mode: libc::c_uint,
) -> io::Result<File> {
    // SAFETY: valid fd and NUL-terminated name; the returned fd is owned
    // by the File.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode,
        )
    };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        // SAFETY: `fd` was just opened and is owned by nobody else.
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

/// How many blocks a restore writes between two
/// [`Progress::should_stop`] checks.
const STOP_CHECK_BLOCKS: u64 = 4096;

/// Bytes written between two starts of write-back: every 32 MiB the
/// kernel is asked to start writing the target's dirty pages
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`, which does not wait for
/// them), so that the disk writes while the restore decompresses, and the
/// fsync at the end waits only for the last stretch instead of the whole
/// target. It also keeps a restore from filling the host's memory with
/// dirty pages. Measured on a 1 GiB generation: the fsync at the end took
/// 0.45-0.57 s of a 1.7 s restore before.
const WRITE_BEHIND: u64 = 32 << 20;

/// An unpredictable temporary name beside `name`: `.NAME.blockdiff-HEX`.
fn random_name(name: &OsStr) -> CString {
    let mut bytes = [0u8; 12];
    // SAFETY: the buffer is ours and its length is given.
    let got = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if got != bytes.len() as isize {
        // getrandom(2) does not fail for 12 bytes once the pool is ready;
        // should it, mix the time and pid in instead.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let x = t ^ (u128::from(std::process::id()) << 64);
        bytes.copy_from_slice(&x.to_le_bytes()[..12]);
    }
    let mut s = OsString::from(".");
    s.push(name);
    s.push(".blockdiff-");
    for b in bytes {
        s.push(format!("{b:02x}"));
    }
    cstr(&s)
}

#[cfg(test)]
thread_local! {
    /// Tests of the fallback: act as if the file system had no `O_TMPFILE`.
    pub(super) static WITHOUT_TMPFILE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[cfg(test)]
fn without_tmpfile() -> bool {
    WITHOUT_TMPFILE.with(std::cell::Cell::get)
}

#[cfg(not(test))]
fn without_tmpfile() -> bool {
    false
}

/// Where a fresh file's data goes before it takes the target's name.
#[derive(Debug)]
enum Temp {
    /// An `O_TMPFILE`: no name until the end.
    Anonymous,
    /// A named file created exclusively (no `O_TMPFILE` here); removed
    /// unless the restore finished.
    Named(CString),
}

#[derive(Debug)]
struct Fresh {
    dir: File,
    name: CString,
    temp: Temp,
    /// Whether the target existed when the restore began.
    replaces: bool,
}

/// The file or device a restore writes to (or nothing, to verify).
#[derive(Debug)]
pub(super) struct Target {
    file: Option<File>,
    /// The target as the user gave it: every message names it.
    path: PathBuf,
    fresh: Option<Fresh>,
    /// For a block device: its size.
    pub(super) device_size: Option<u64>,
    finished: bool,
    wrote: bool,
    /// Bytes written since write-back was last started ([`WRITE_BEHIND`]).
    unflushed: u64,
    /// The thread that starts write-back, once started.
    behind: Option<WriteBehind>,
}

/// A thread that starts the write-back of the target's dirty pages when
/// asked ([`WRITE_BEHIND`]). Starting it is not free: on ext4 the call
/// allocates the blocks and submits the writes before it returns (20-50 ms
/// per 32 MiB of scattered blocks were measured), so it is made here, beside
/// the restore, rather than on the thread that writes.
#[derive(Debug)]
struct WriteBehind {
    ask: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl WriteBehind {
    /// `None` if the fd cannot be duplicated or no thread started: the
    /// restore then simply does without.
    fn start(file: &File) -> Option<WriteBehind> {
        let file = file.try_clone().ok()?;
        let (ask, asked) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("write-behind".into())
            .spawn(move || {
                for () in asked {
                    // SAFETY: a valid fd; the call only starts write-back.
                    // Its failure is not an error: the fsync at the end
                    // reports any page that could not be written.
                    unsafe {
                        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
                    }
                }
            })
            .ok()?;
        Some(WriteBehind { ask, thread })
    }

    /// Asks for write-back; false if the thread is still busy with the
    /// last request.
    fn ask(&self) -> bool {
        self.ask.try_send(()).is_ok()
    }

    /// Waits for the thread to end.
    fn stop(self) {
        drop(self.ask);
        let _ = self.thread.join();
    }
}

/// What is at the target's name.
pub(super) enum Existing {
    /// Nothing.
    Absent,
    /// A regular file, with its device, inode, owner, group and mode.
    File(libc::stat),
    /// A block device.
    BlockDevice,
}

/// The device of the file system mounted at `/dev` (devtmpfs), where
/// device nodes live and a regular file is always a mistake. Other file
/// systems mounted below it (`/dev/shm`, `/dev/pts`) are not it.
fn dev_file_system() -> Option<u64> {
    std::fs::metadata("/dev").ok().map(|m| m.dev())
}

/// Whether the nearest existing ancestor of `path` is on the `/dev` file
/// system (`/dev/no-such-vg/lv`: the volume group's directory is missing).
fn on_dev_file_system(path: &Path) -> bool {
    let Some(dev) = dev_file_system() else {
        return false;
    };
    let Ok(absolute) = std::path::absolute(path) else {
        return false;
    };
    absolute
        .ancestors()
        .find_map(|a| std::fs::metadata(a).ok())
        .is_some_and(|m| m.dev() == dev)
}

/// Opens the target's directory and looks at the target's name without
/// following a link.
pub(super) fn look(path: &Path) -> Result<(File, CString, Existing)> {
    let Some(name) = path.file_name() else {
        return Err(Error::BadTarget {
            path: path.to_owned(),
            detail: "the restore target must name a file or a block device".into(),
        });
    };
    let dir_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = match File::open(dir_path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound && on_dev_file_system(dir_path) => {
            return Err(Error::BadTarget {
                path: path.to_owned(),
                detail: "no such device; a restore writes no files under /dev (is the logical volume created and active?)".into(),
            });
        }
        Err(e) => return Err(e).ctx(path, "open its directory"),
    };
    let name = cstr(name);
    let existing = match stat_at(&dir, &name, path)? {
        None => Existing::Absent,
        Some(st) => match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Existing::File(st),
            libc::S_IFBLK => Existing::BlockDevice,
            libc::S_IFLNK => return follow_device_link(path, &st),
            _ => {
                return Err(Error::BadTarget {
                    path: path.to_owned(),
                    detail: "the restore target must be a regular file or a block device".into(),
                });
            }
        },
    };
    if !matches!(existing, Existing::BlockDevice) {
        let dir_dev = dir.metadata().ctx(path, "stat its directory")?.dev();
        if dev_file_system() == Some(dir_dev) {
            let what = match existing {
                Existing::Absent => "no such device",
                _ => "a regular file, not a device (left by a mistaken earlier run?)",
            };
            return Err(Error::BadTarget {
                path: path.to_owned(),
                detail: format!(
                    "{what}; a restore writes no files under /dev (is the logical volume created and active?)"
                ),
            });
        }
    }
    Ok((dir, name, existing))
}

/// A symbolic link is followed only to a block device, and only when the
/// link belongs to root or to the user running the restore (`/dev/VG/LV`
/// and `/dev/mapper/*` are root's links to `/dev/dm-N`): a link another
/// user planted, say under `/tmp`, is never followed.
fn follow_device_link(path: &Path, link: &libc::stat) -> Result<(File, CString, Existing)> {
    let refuse = || {
        Err(Error::BadTarget {
            path: path.to_owned(),
            detail: "the restore target is a symbolic link; a restore never writes through a link (except root's or your own to a block device): give the path it points to".into(),
        })
    };
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if link.st_uid != 0 && link.st_uid != euid {
        return refuse();
    }
    let Ok(resolved) = std::fs::canonicalize(path) else {
        return refuse();
    };
    match look(&resolved)? {
        (dir, name, Existing::BlockDevice) => Ok((dir, name, Existing::BlockDevice)),
        _ => refuse(),
    }
}

/// The device and inode of whatever `path` names (a link itself, not its
/// target), for the check that a restore never writes over a store file.
pub(super) fn identity(path: &Path) -> Result<Option<(u64, u64)>> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some((m.dev(), m.ino()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx(path, "stat"),
    }
}

impl Target {
    /// Opens `path`. With `fresh`, a regular file is written anew as a
    /// temporary and takes the target's name at the end (all-zero blocks
    /// become holes); without, an existing regular file is updated in place
    /// (a missing one is still written fresh). A block device is written in
    /// place.
    pub(super) fn open(path: &Path, fresh: bool) -> Result<Target> {
        let (dir, name, existing) = look(path)?;
        let mut target = Target {
            file: None,
            path: path.to_owned(),
            fresh: None,
            device_size: None,
            finished: false,
            wrote: false,
            unflushed: 0,
            behind: None,
        };
        match existing {
            Existing::BlockDevice => {
                let file = open_at(&dir, &name, libc::O_WRONLY | libc::O_NOFOLLOW, 0)
                    .ctx(path, "open device")?;
                let meta = file.metadata().ctx(path, "stat")?;
                if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
                    return Err(Error::BadTarget {
                        path: path.to_owned(),
                        detail: "changed while it was opened; not restoring".into(),
                    });
                }
                // SAFETY: valid fd.
                let size = unsafe { libc::lseek(file.as_raw_fd(), 0, libc::SEEK_END) };
                if size < 0 {
                    return last_error(path, "find device size");
                }
                target.device_size = Some(size as u64);
                target.file = Some(file);
            }
            Existing::File(st) if !fresh && st.st_nlink > 1 => {
                return Err(Error::BadTarget {
                    path: path.to_owned(),
                    detail: format!(
                        "has {} hard links; updating it in place would change the files of the other names too (one may be a backup's): copy it first, or restore to another path",
                        st.st_nlink
                    ),
                });
            }
            Existing::File(_) if !fresh => {
                let file =
                    open_at(&dir, &name, libc::O_RDWR | libc::O_NOFOLLOW, 0).ctx(path, "open")?;
                if !file.metadata().ctx(path, "stat")?.is_file() {
                    return Err(Error::BadTarget {
                        path: path.to_owned(),
                        detail: "changed while it was opened; not restoring".into(),
                    });
                }
                target.file = Some(file);
            }
            Existing::File(st) => target.create_fresh(dir, name, Some(st))?,
            Existing::Absent => target.create_fresh(dir, name, None)?,
        }
        Ok(target)
    }

    fn create_fresh(
        &mut self,
        dir: File,
        name: CString,
        existing: Option<libc::stat>,
    ) -> Result<()> {
        let path = self.path.clone();
        let anonymous = if without_tmpfile() {
            Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP))
        } else {
            open_at(
                &dir,
                &cstr(OsStr::new(".")),
                libc::O_TMPFILE | libc::O_WRONLY,
                0o600,
            )
        };
        let (file, temp) = match anonymous {
            Ok(f) => (f, Temp::Anonymous),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL)
                ) =>
            {
                let mut tries = 0;
                loop {
                    let tmp = random_name(OsStr::from_bytes(name.as_bytes()));
                    match open_at(
                        &dir,
                        &tmp,
                        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                        0o600,
                    ) {
                        Ok(f) => break (f, Temp::Named(tmp)),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => {
                            tries += 1;
                        }
                        Err(e) => return Err(e).ctx(&path, "create a temporary file beside it"),
                    }
                }
            }
            Err(e) => return Err(e).ctx(&path, "create a temporary file beside it"),
        };
        self.fresh = Some(Fresh {
            dir,
            name,
            temp,
            replaces: existing.is_some(),
        });
        self.file = Some(file);
        if let Some(st) = existing {
            // The restored file keeps the owner, group and mode of the one
            // it replaces (chown first: it clears set-id bits).
            let fd = self
                .file
                .as_ref()
                .map_or(-1, std::os::fd::AsRawFd::as_raw_fd);
            // SAFETY: geteuid and getegid have no preconditions.
            let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
            if (st.st_uid != uid || st.st_gid != gid)
                // SAFETY: `fd` is the open temporary file.
                && unsafe { libc::fchown(fd, st.st_uid, st.st_gid) } != 0
            {
                return last_error(&path, "give the restored image its owner and group");
            }
            // SAFETY: valid fd.
            if unsafe { libc::fchmod(fd, st.st_mode & 0o7777) } != 0 {
                return last_error(&path, "give the restored image its mode");
            }
        }
        Ok(())
    }

    /// A target that drops what it is given: verification.
    pub(super) fn discard() -> Target {
        Target {
            file: None,
            path: PathBuf::from("(verification)"),
            fresh: None,
            device_size: None,
            finished: true,
            wrote: false,
            unflushed: 0,
            behind: None,
        }
    }

    /// Writes one block and counts it in `report`; the first write is the
    /// step `restore:write`.
    pub(super) fn put(
        &mut self,
        offset: u64,
        data: &[u8],
        report: &mut RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let len = data.len();
        self.put_run(offset, data, len.max(1), report, progress)
    }

    /// Writes a run of consecutive blocks of `block_len` bytes (the last
    /// may be shorter) and counts each in `report`: one positional write
    /// per stretch of blocks that are written (all of them, except the
    /// all-zero blocks a fresh file leaves as holes), instead of one per
    /// block.
    pub(super) fn put_run(
        &mut self,
        offset: u64,
        data: &[u8],
        block_len: usize,
        report: &mut RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        self.put_pieces(offset, &[data], block_len, report, progress)
    }

    /// As [`put_run`](Self::put_run), with the run's bytes in `pieces`,
    /// one after the other (each a whole number of blocks, except that the
    /// last may end with the short last block): written from where they
    /// lie, by vectored writes.
    pub(super) fn put_pieces(
        &mut self,
        offset: u64,
        pieces: &[&[u8]],
        block_len: usize,
        report: &mut RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let len = pieces.iter().map(|p| p.len() as u64).sum::<u64>();
        let end = offset + len;
        if let Some(size) = self.device_size
            && end > size
        {
            return Err(Error::TargetTooSmall {
                path: self.path.clone(),
                need: end,
                have: size,
            });
        }
        let blocks = pieces
            .iter()
            .map(|p| p.len().div_ceil(block_len) as u64)
            .sum::<u64>();
        let (holes, hole_bytes) = match self.file.is_some() && self.sparse() {
            true => self.write_skipping_zeros(offset, pieces, block_len)?,
            false => {
                self.write_at(offset, pieces)?;
                (0, 0)
            }
        };
        report.holes += holes;
        report.bytes_written += len - hole_bytes;
        let before = report.blocks;
        report.blocks += blocks;
        if before / STOP_CHECK_BLOCKS != report.blocks / STOP_CHECK_BLOCKS {
            self.check_stop(progress)?;
        }
        if !self.wrote && self.file.is_some() {
            self.wrote = true;
            progress.at_step("restore:write");
        }
        Ok(())
    }

    /// Writes the blocks of `pieces` that are not all zero, a stretch at a
    /// time (one vectored write each); returns how many blocks, and bytes,
    /// were left as holes.
    fn write_skipping_zeros(
        &mut self,
        offset: u64,
        pieces: &[&[u8]],
        block_len: usize,
    ) -> Result<(u64, u64)> {
        let (mut holes, mut hole_bytes) = (0, 0);
        // The stretch of non-zero blocks not yet written: where it starts
        // in the target, and its bytes (whole pieces or parts of them).
        let mut stretch: Vec<&[u8]> = Vec::new();
        let mut stretch_at = offset;
        let mut at = offset;
        for piece in pieces {
            // The part of this piece in the stretch: [from, to).
            let (mut from, mut to) = (0usize, 0usize);
            for block in piece.chunks(block_len) {
                let next = to + block.len();
                if is_zero(block) {
                    holes += 1;
                    hole_bytes += block.len() as u64;
                    if to > from {
                        stretch.push(&piece[from..to]);
                    }
                    if !stretch.is_empty() {
                        self.write_at(stretch_at, &stretch)?;
                        stretch.clear();
                    }
                    stretch_at = at + next as u64;
                    from = next;
                }
                to = next;
            }
            if to > from {
                stretch.push(&piece[from..to]);
            }
            at += piece.len() as u64;
        }
        if !stretch.is_empty() {
            self.write_at(stretch_at, &stretch)?;
        }
        Ok((holes, hole_bytes))
    }

    /// One positional write of `bufs`, one after the other, and write-back
    /// started every [`WRITE_BEHIND`] bytes.
    fn write_at(&mut self, offset: u64, bufs: &[&[u8]]) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        match bufs {
            [one] => file.write_all_at(one, offset),
            _ => super::vectored::write_all_at(file, offset, bufs),
        }
        .ctx(&self.path, "write")?;
        self.unflushed += bufs.iter().map(|b| b.len() as u64).sum::<u64>();
        if self.unflushed >= WRITE_BEHIND {
            if self.behind.is_none() {
                self.behind = WriteBehind::start(file);
            }
            // Busy: asked again after the next write.
            if self.behind.as_ref().is_none_or(WriteBehind::ask) {
                self.unflushed = 0;
            }
        }
        Ok(())
    }

    /// Fails with [`Error::RestoreStopped`] if the caller asks to stop (a
    /// signal): the temporary is dropped, the target left as it was.
    fn check_stop(&self, progress: &mut dyn Progress) -> Result<()> {
        if self.file.is_none() {
            return Ok(());
        }
        match progress.should_stop() {
            None => Ok(()),
            Some(reason) => Err(Error::RestoreStopped {
                path: self.path.clone(),
                reason,
                state: if self.fresh.is_some() {
                    "the target is as it was"
                } else {
                    "it is partly written (a device or an existing file is written in place)"
                },
            }),
        }
    }

    /// Whether all-zero blocks are left as holes (a fresh file).
    pub(super) fn sparse(&self) -> bool {
        self.fresh.is_some()
    }

    pub(super) fn current_len(&self) -> Result<u64> {
        match (self.device_size, &self.file) {
            (Some(size), _) => Ok(size),
            (None, Some(f)) => Ok(f.metadata().ctx(&self.path, "stat")?.len()),
            (None, None) => Ok(0),
        }
    }

    /// Sets a file's size to `size`, syncs (step `restore:sync`), and gives
    /// a fresh file the target's name (step `restore:rename-target`). Asks
    /// [`Progress::should_stop`] before the fsync and once more just before
    /// the name is given.
    pub(super) fn finish(mut self, size: u64, progress: &mut dyn Progress) -> Result<()> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        if self.device_size.is_none() {
            file.set_len(size).ctx(&self.path, "set the size")?;
        }
        if let Some(behind) = self.behind.take() {
            behind.stop();
        }
        self.check_stop(progress)?;
        progress.at_step("restore:sync");
        file.sync_all().ctx(&self.path, "fsync")?;
        if let Some(fresh) = &self.fresh {
            progress.at_step("restore:rename-target");
            self.check_stop(progress)?;
            self.link_into_place(fresh, file)?;
            // SAFETY: valid fd.
            if unsafe { libc::fsync(fresh.dir.as_raw_fd()) } != 0 {
                return last_error(&self.path, "fsync its directory");
            }
        }
        self.finished = true;
        Ok(())
    }

    fn link_into_place(&self, fresh: &Fresh, file: &File) -> Result<()> {
        let dir = fresh.dir.as_raw_fd();
        let path = &self.path;
        let rename = |from: &CString| -> Result<()> {
            // SAFETY: valid fds and NUL-terminated names.
            if unsafe { libc::renameat(dir, from.as_ptr(), dir, fresh.name.as_ptr()) } != 0 {
                let e = io::Error::last_os_error();
                // SAFETY: as above; the name is our own temporary's.
                unsafe { libc::unlinkat(dir, from.as_ptr(), 0) };
                return Err(e).ctx(path, "rename the restored image into place");
            }
            Ok(())
        };
        match &fresh.temp {
            Temp::Named(tmp) => rename(tmp),
            Temp::Anonymous => {
                if !fresh.replaces {
                    match link_anonymous(file, dir, &fresh.name) {
                        Ok(()) => return Ok(()),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                        Err(e) => return Err(e).ctx(path, "create"),
                    }
                }
                let mut tries = 0;
                loop {
                    let tmp = random_name(OsStr::from_bytes(fresh.name.as_bytes()));
                    match link_anonymous(file, dir, &tmp) {
                        Ok(()) => return rename(&tmp),
                        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => {
                            tries += 1;
                        }
                        Err(e) => return Err(e).ctx(path, "name the restored image"),
                    }
                }
            }
        }
    }
}

/// Gives an `O_TMPFILE` the name `name` in `dir` (fails if it exists).
fn link_anonymous(file: &File, dir: libc::c_int, name: &CString) -> io::Result<()> {
    let proc_path = cstr(OsStr::new(&format!("/proc/self/fd/{}", file.as_raw_fd())));
    // SAFETY: NUL-terminated paths and valid fds.
    let r = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            proc_path.as_ptr(),
            dir,
            name.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.kind() != io::ErrorKind::NotFound {
        return Err(e);
    }
    // No /proc: AT_EMPTY_PATH (needs CAP_DAC_READ_SEARCH).
    let empty = cstr(OsStr::new(""));
    // SAFETY: as above.
    let r = unsafe {
        libc::linkat(
            file.as_raw_fd(),
            empty.as_ptr(),
            dir,
            name.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(behind) = self.behind.take() {
            behind.stop();
        }
        if let (false, Some(fresh)) = (self.finished, &self.fresh)
            && let Temp::Named(tmp) = &fresh.temp
        {
            // SAFETY: valid fd and NUL-terminated name.
            unsafe { libc::unlinkat(fresh.dir.as_raw_fd(), tmp.as_ptr(), 0) };
        }
    }
}
