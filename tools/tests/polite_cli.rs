//! Polite I/O as a user sees it: `--nice` and `--ionice` on every thread of
//! a running dump, `--drop-cache` leaving the source out of the page cache,
//! and `--max-rate` changing nothing but the pace.

mod common;

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{BACKUP, DUMP, RESTORE, mkfifo, noise, stderr, wait_for};

/// The thread ids of a process.
fn threads(pid: u32) -> Vec<i32> {
    let mut tids: Vec<i32> = fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort();
    tids
}

/// A thread's niceness: field 19 of its stat line (counting from 1; the
/// fields after the command name, which is in parentheses and may hold
/// spaces, start at field 3).
fn nice_of(pid: u32, tid: i32) -> i64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).unwrap();
    let after_comm = &stat[stat.rfind(')').unwrap() + 1..];
    after_comm
        .split_whitespace()
        .nth(19 - 3)
        .unwrap()
        .parse()
        .unwrap()
}

/// A thread's I/O priority as (class, level): class 3 is idle.
fn ioprio_of(tid: i32) -> (i64, i64) {
    const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    // SAFETY: ioprio_get takes two integers and touches no memory of ours.
    let r = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, tid) };
    assert!(
        r >= 0,
        "ioprio_get({tid}): {}",
        std::io::Error::last_os_error()
    );
    (i64::from(r as i32 >> 13), i64::from(r as i32 & 0x1fff))
}

#[test]
fn nice_and_ionice_reach_every_thread_of_the_dump() {
    // SAFETY: plain integer arguments; 0 is the calling thread.
    let our_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    // SAFETY: as above.
    if our_nice > 7 && unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: this test runs at niceness {our_nice}, above 7, and is not root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("source.fifo");
    let diff = dir.path().join("diff");
    mkfifo(&fifo);
    let mut dump = Command::new(DUMP)
        .args(["--nice", "7", "--ionice", "idle", "--threads", "3", "-q"])
        .arg("-o")
        .arg(&diff)
        .arg(&fifo)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = dump.id();
    // Opening the FIFO for writing waits for the dump to open it.
    let mut writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let data = noise(5 << 20, 7);
    // Part of the source: the dump is reading, waiting for the rest.
    writer.write_all(&data[..(5 << 20) / 2]).unwrap();
    // The main thread (the in-order writer), the reader and 3 hashers.
    wait_for("the dump's five threads", || threads(pid).len() >= 5);
    let tids = threads(pid);
    for &tid in &tids {
        assert_eq!(nice_of(pid, tid), 7, "niceness of thread {tid} of {tids:?}");
        assert_eq!(ioprio_of(tid).0, 3, "I/O class of thread {tid} of {tids:?}");
    }
    writer.write_all(&data[(5 << 20) / 2..]).unwrap();
    drop(writer);
    let mut err = String::new();
    dump.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(dump.wait().unwrap().success(), "{err}");
    // The dump is whole: it restores to the source.
    let restored = dir.path().join("restored");
    let o = Command::new(RESTORE)
        .arg(&restored)
        .arg("-i")
        .arg(&diff)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        fs::read(&restored).unwrap() == data,
        "restored bytes differ"
    );
}

/// (resident pages, pages) of a file in the page cache, by `mincore` on a
/// mapping of it (which itself reads nothing).
fn resident_pages(path: &Path) -> (usize, usize) {
    let file = File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
    let pages = len.div_ceil(page);
    // SAFETY: a fresh read-only shared mapping of an open file, not
    // touched through a pointer: only its residency is queried.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    let mut vec = vec![0u8; pages];
    // SAFETY: `map` is a mapping of `len` bytes and `vec` has one byte per
    // page of it.
    let r = unsafe { libc::mincore(map, len, vec.as_mut_ptr()) };
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { libc::munmap(map, len) };
    assert_eq!(r, 0, "mincore: {}", std::io::Error::last_os_error());
    (vec.iter().filter(|&&b| b & 1 == 1).count(), pages)
}

fn read_into_cache(path: &Path) {
    let mut buf = Vec::new();
    File::open(path).unwrap().read_to_end(&mut buf).unwrap();
}

/// Why the page cache of files in `dir` cannot be watched being dropped,
/// if it cannot: a memory file system (whose pages are the data) or one
/// that ignores POSIX_FADV_DONTNEED.
fn cache_not_observable(dir: &Path) -> Option<String> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs fills the zeroed struct it is given; `c` is a valid
    // NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(
        unsafe { libc::statfs(c.as_ptr(), &raw mut st) },
        0,
        "statfs"
    );
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    const RAMFS_MAGIC: i64 = 0x8584_58f6;
    let fs_type = st.f_type as i64;
    if fs_type == TMPFS_MAGIC || fs_type == RAMFS_MAGIC {
        return Some(format!(
            "{} is on a memory file system (type {fs_type:#x})",
            dir.display()
        ));
    }
    // A probe: can the page cache of a file here be dropped at all?
    let probe = dir.join("probe");
    let mut f = File::create(&probe).unwrap();
    f.write_all(&noise(1 << 20, 9)).unwrap();
    f.sync_all().unwrap(); // dirty pages are not dropped
    read_into_cache(&probe);
    let cached = resident_pages(&probe);
    // SAFETY: integer arguments on an open descriptor.
    unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    let dropped = resident_pages(&probe);
    fs::remove_file(&probe).unwrap();
    if cached.0 < cached.1 * 9 / 10 {
        return Some(format!(
            "a file just read in {} is not in the page cache ({cached:?} pages)",
            dir.display()
        ));
    }
    if dropped.0 > dropped.1 / 10 {
        return Some(format!(
            "the file system of {} ignores POSIX_FADV_DONTNEED",
            dir.display()
        ));
    }
    None
}

/// A directory on the target's disk: /tmp may be a tmpfs.
fn dir_on_disk() -> tempfile::TempDir {
    let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    fs::create_dir_all(&base).unwrap();
    tempfile::tempdir_in(base).unwrap()
}

#[test]
fn drop_cache_leaves_the_source_out_of_the_page_cache() {
    let dir = dir_on_disk();
    if let Some(why) = cache_not_observable(dir.path()) {
        eprintln!("skipped: {why}");
        return;
    }
    let src = dir.path().join("disk.img");
    let mut f = File::create(&src).unwrap();
    f.write_all(&noise(16 << 20, 11)).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let dump = |extra: &[&str], out: &str| {
        let o = Command::new(DUMP)
            .args(["--format", "legacy", "-q", "-o"])
            .arg(dir.path().join(out))
            .args(extra)
            .arg(&src)
            .output()
            .unwrap();
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
    };

    // Without the flag, a dump leaves the source cached.
    read_into_cache(&src);
    let (before, pages) = resident_pages(&src);
    assert!(before >= pages * 9 / 10, "{before} of {pages} pages cached");
    dump(&[], "plain");
    let (kept, _) = resident_pages(&src);
    assert!(
        kept >= pages * 9 / 10,
        "without --drop-cache {kept} of {pages} pages stay cached"
    );

    // With it, almost nothing is left.
    dump(&["--drop-cache"], "dropped");
    let (left, _) = resident_pages(&src);
    assert!(
        left <= pages / 50,
        "with --drop-cache {left} of {pages} pages are still cached"
    );
    // Even when it had to read the file from the disk first.
    dump(&["--drop-cache", "--threads", "1"], "dropped-cold");
    let (left, _) = resident_pages(&src);
    assert!(
        left <= pages / 50,
        "after a cold --drop-cache dump {left} of {pages} pages are cached"
    );
    let plain = fs::read(dir.path().join("plain")).unwrap();
    assert!(fs::read(dir.path().join("dropped")).unwrap() == plain);
    assert!(fs::read(dir.path().join("dropped-cold")).unwrap() == plain);
}

#[test]
fn max_rate_changes_nothing_but_the_pace() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let mut data = noise(3 << 20, 5);
    data[1 << 20..(1 << 20) + 100_000].fill(0);
    fs::write(&src, &data).unwrap();
    // Legacy output has no creation time: equal runs give equal bytes.
    let dump = |extra: &[&str], stdin: bool| {
        let mut cmd = Command::new(DUMP);
        cmd.args(["--format", "legacy", "-q"]).args(extra);
        if stdin {
            cmd.stdin(File::open(&src).unwrap());
        } else {
            cmd.arg(&src).stdin(Stdio::null());
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        o.stdout
    };
    let plain = dump(&[], false);
    assert!(!plain.is_empty());
    // Read by position (by every hashing thread) and as a stream (by the
    // reader thread): a limit well above what this takes, 0 (unlimited),
    // and everything together.
    for extra in [
        &["--max-rate", "64M"][..],
        &["--max-rate", "0"],
        &["--max-rate", "1G", "--threads", "1"],
        &[
            "--max-rate=256M",
            "--drop-cache",
            "--nice=3",
            "--ionice=best-effort:7",
        ],
    ] {
        assert!(dump(extra, false) == plain, "{extra:?} from a file");
        assert!(dump(extra, true) == plain, "{extra:?} from standard input");
    }
}

#[test]
fn backup_takes_the_same_flags() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let data = noise(1 << 20, 3);
    fs::write(&src, &data).unwrap();
    let name = dir.path().join("db");
    let o = Command::new(BACKUP)
        .arg(&name)
        .arg(&src)
        .args([
            "-q",
            "--max-rate",
            "512M",
            "--drop-cache",
            "--nice",
            "5",
            "--ionice",
            "idle",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let restored = dir.path().join("restored");
    let o = Command::new(RESTORE)
        .arg(&restored)
        .arg("--from")
        .arg(&name)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(&restored).unwrap() == data);
}

#[test]
fn bad_polite_values_are_usage_errors() {
    for (args, expect) in [
        (&["--max-rate", "10X"][..], "unknown unit \"X\""),
        (&["--max-rate", "fast"], "rate \"fast\" is not a number"),
        (&["--nice", "20"], "20 is not in -20..=19"),
        (&["--ionice", "idle:3"], "the idle class has no level"),
        (
            &["--ionice", "best-effort:9"],
            "level \"9\" is not a number from 0 to 7",
        ),
    ] {
        for bin in [DUMP, BACKUP] {
            let mut cmd = Command::new(bin);
            if bin == BACKUP {
                cmd.arg("name");
            }
            let o = cmd.arg("/dev/null").args(args).output().unwrap();
            assert_eq!(o.status.code(), Some(2), "{bin} {args:?}");
            assert!(stderr(&o).contains(expect), "{args:?}: {}", stderr(&o));
        }
    }
}
