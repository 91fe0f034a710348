//! The FUSE file system of a mounted generation: a read-only directory
//! of the [`ImageFiles`], served from a [`GenerationReader`].

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blockdiff_core::GenerationReader;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenAccMode, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen,
    ReplyStatfs, Request,
};

use crate::image_files::ImageFiles;

/// Nothing in the mount ever changes: the kernel may keep what it saw.
const TTL: Duration = Duration::from_secs(3600);

/// Largest read served at once (the kernel asks for at most 128 KiB by
/// default; a larger request is cut, as a short read).
const MAX_READ: u32 = 1 << 20;

/// Called with every read that failed (a damaged block): the reader
/// answered EIO, and whoever mounted says why, in a log.
pub type ReadErrorLog = Arc<dyn Fn(&blockdiff_core::Error) + Send + Sync>;

/// The read-only file system of one generation: `/image` and `/partN`,
/// mode 0400, owned by `uid`:`gid`, all with time `time`.
pub struct ImageFs {
    reader: Arc<GenerationReader>,
    files: ImageFiles,
    time: SystemTime,
    uid: u32,
    gid: u32,
    on_error: Option<ReadErrorLog>,
}

impl std::fmt::Debug for ImageFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageFs")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ImageFs {
    /// The file system of `files` read from `reader`, owned by this
    /// process's user and group, with time `time` (the generation's).
    pub fn new(reader: Arc<GenerationReader>, files: ImageFiles, time: SystemTime) -> Self {
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        ImageFs {
            reader,
            files,
            time,
            uid,
            gid,
            on_error: None,
        }
    }

    /// Calls `log` with the error of every read that failed.
    pub fn with_error_log(mut self, log: ReadErrorLog) -> Self {
        self.on_error = Some(log);
        self
    }

    fn file_index(ino: INodeNo) -> Option<usize> {
        usize::try_from(ino.0.checked_sub(2)?).ok()
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = if ino == INodeNo::ROOT {
            (FileType::Directory, 0o500, 0, 2)
        } else {
            let file = self.files.files().get(Self::file_index(ino)?)?;
            (FileType::RegularFile, 0o400, file.size, 1)
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.time,
            mtime: self.time,
            ctime: self.time,
            crtime: self.time,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl Filesystem for ImageFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        if parent != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let found = self
            .files
            .files()
            .iter()
            .position(|f| OsStr::new(&f.name) == name)
            .and_then(|i| self.attr(INodeNo(i as u64 + 2)));
        match found {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if ino == INodeNo::ROOT {
            return reply.error(Errno::EISDIR);
        }
        if self.attr(ino).is_none() {
            return reply.error(Errno::ENOENT);
        }
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        // The bytes never change: the page cache may keep them across
        // opens.
        reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = Self::file_index(ino).and_then(|i| self.files.files().get(i)) else {
            return reply.error(Errno::ENOENT);
        };
        if offset >= file.size {
            return reply.data(&[]);
        }
        let len = u64::from(size.min(MAX_READ)).min(file.size - offset) as usize;
        let mut buf = vec![0u8; len];
        match self.reader.read_at(&mut buf, file.start + offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => {
                if let Some(log) = &self.on_error {
                    log(&e);
                }
                reply.error(Errno::EIO);
            }
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let mut entries = vec![
            (INodeNo::ROOT, FileType::Directory, ".".to_owned()),
            (INodeNo::ROOT, FileType::Directory, "..".to_owned()),
        ];
        for (i, f) in self.files.files().iter().enumerate() {
            entries.push((INodeNo(i as u64 + 2), FileType::RegularFile, f.name.clone()));
        }
        for (i, (ino, kind, name)) in entries.into_iter().enumerate().skip(offset as usize) {
            if reply.add(ino, i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let bytes: u64 = self.files.files().iter().map(|f| f.size).sum();
        reply.statfs(
            bytes.div_ceil(4096),
            0,
            0,
            self.files.files().len() as u64 + 1,
            0,
            4096,
            255,
            4096,
        );
    }
}
