//! `blockdiff-restore` against damaged chains and hostile or mistaken
//! targets (issue 11). The invariant of every test: the restore never
//! exits 0 having written bytes that differ from the source of the
//! generation, and no store file is ever altered.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{BACKUP, RESTORE, StoppedRun, listing, noise, run, stderr};

const KIB: usize = 1024;

/// Every file of the store `name` (its directory's `NAME.*`) with its bytes.
fn store_files(name: &Path) -> BTreeMap<String, Vec<u8>> {
    let prefix = format!("{}.", name.file_name().unwrap().to_str().unwrap());
    fs::read_dir(name.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_str().unwrap().starts_with(&prefix))
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Backs up each image in turn as the next generation of `name`.
fn chain(name: &Path, images: &[&[u8]], extra: &[&str]) {
    let src = name.with_extension("src");
    for (i, image) in images.iter().enumerate() {
        fs::write(&src, image).unwrap();
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&name, &src];
        for a in extra {
            args.push(a);
        }
        let o = run(BACKUP, &args);
        assert!(o.status.success(), "backup {}: {}", i + 1, stderr(&o));
    }
    fs::remove_file(&src).unwrap();
}

/// A two-generation chain of small images: (dir, NAME, generation 2).
fn small_chain(format: &str) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let one = noise(20 * KIB + 100, 1);
    let mut two = one.clone();
    two[5000..5100].copy_from_slice(&[7; 100]);
    chain(&name, &[&one, &two], &["--format", format, "-b", "4096"]);
    (dir, name, two)
}

fn restore(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    run(RESTORE, args)
}

fn restore_with_stdin(args: &[&dyn AsRef<std::ffi::OsStr>], input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = Command::new(RESTORE)
        .args(args.iter().map(std::convert::AsRef::as_ref))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The restore may refuse before reading it all: a broken pipe is fine.
    let _ = child.stdin.take().unwrap().write_all(input);
    child.wait_with_output().unwrap()
}

/// Whether the file at `path` holds exactly `bytes` (no byte dump when not).
fn same(path: &Path, bytes: &[u8]) -> bool {
    fs::read(path).unwrap() == bytes
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Item 1: a legacy digest cut at a 16-byte boundary.
#[test]
fn a_legacy_digest_cut_short_is_refused_by_restore_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let one = noise(2 << 20, 3);
    let mut two = one.clone();
    // A change inside the part the cut digest still lists, and one past it.
    two[10 * 4096] ^= 1;
    let mut three = two.clone();
    three[10 * 4096 + 1] ^= 1;
    chain(
        &name,
        &[&one, &two, &three],
        &["--format", "legacy", "-b", "4096"],
    );
    let target = dir.path().join("restored.img");
    for (generation, cut) in [("2", "db.2.md5"), ("1", "db.1.md5"), ("3", "db.3.md5")] {
        let md5 = dir.path().join(cut);
        let whole = fs::read(&md5).unwrap();
        // The case: 100 blocks of 4 KiB listed out of 512.
        fs::write(&md5, &whole[..1604]).unwrap();
        let before = store_files(&name);
        let o = restore(&[&target, &"--from", &name, &"-g", &generation]);
        assert_eq!(o.status.code(), Some(1), "gen {generation}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(cut),
            "the message names the digest: {}",
            stderr(&o)
        );
        assert!(!target.exists(), "gen {generation}: nothing restored");
        let o = restore(&[&"--verify-only", &"--from", &name, &"-g", &generation]);
        assert_eq!(
            o.status.code(),
            Some(1),
            "verify {generation}: {}",
            stderr(&o)
        );
        assert!(store_files(&name) == before, "a store file was altered");
        fs::write(&md5, whole).unwrap();
    }
    // Whole again, each generation restores exactly.
    for (k, image) in [(1, &one), (2, &two), (3, &three)] {
        let o = restore(&[&target, &"--from", &name, &"-g", &k.to_string()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(same(&target, image), "{} differs", target.display());
    }
}

/// Item 1: a source that really shrank needs the operator's word or the
/// generation's metadata; a metadata size that disagrees is refused in
/// both formats, and unusable metadata is only a notice.
#[test]
fn a_shrunk_legacy_source_needs_confirmation_and_metadata_sizes_are_checked() {
    for format in ["legacy", "v2"] {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().join("db");
        let one = noise(40 * KIB, 4);
        let two = one[..17 * KIB + 5].to_vec();
        chain(&name, &[&one, &two], &["--format", format, "-b", "4096"]);
        let target = dir.path().join("restored.img");
        let meta = dir.path().join("db.2.meta.json");
        let _ = fs::remove_file(&meta);
        let o = restore(&[&target, &"--from", &name]);
        if format == "legacy" {
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
            assert!(stderr(&o).contains("--source-shrank"), "{}", stderr(&o));
            assert!(!target.exists());
            let o = restore(&[&target, &"--from", &name, &"--source-shrank"]);
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(same(&target, &two), "{} differs", target.display());
            fs::remove_file(&target).unwrap();
        } else {
            assert!(o.status.success(), "{}", stderr(&o));
            fs::remove_file(&target).unwrap();
        }
        // The metadata confirms the size: no option needed.
        let size = format!("{{\"source_size\": \"{}\"}}", two.len());
        fs::write(&meta, size).unwrap();
        let o = restore(&[&target, &"--from", &name]);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        assert!(same(&target, &two), "{} differs", target.display());
        fs::remove_file(&target).unwrap();
        // The metadata disagrees with the chain: refused.
        for wrong in [two.len() - 1, two.len() + 1, 40 * KIB] {
            fs::write(&meta, format!("{{\"source_size\": \"{wrong}\"}}")).unwrap();
            let o = restore(&[&target, &"--from", &name, &"--source-shrank"]);
            assert_eq!(o.status.code(), Some(1), "{format} {wrong}: {}", stderr(&o));
            assert!(stderr(&o).contains("db.2"), "{}", stderr(&o));
            assert!(!target.exists());
            let o = restore(&[&"--verify-only", &"--from", &name, &"--source-shrank"]);
            assert_eq!(o.status.code(), Some(1), "{format} {wrong}: {}", stderr(&o));
        }
        // Unparsable metadata: a notice, not an error.
        fs::write(&meta, "{not json").unwrap();
        let o = restore(&[&target, &"--from", &name, &"--source-shrank"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(stderr(&o).contains("db.2.meta.json"), "{}", stderr(&o));
        assert!(same(&target, &two), "{} differs", target.display());
    }
}

/// Item 2: the chain's own files, however spelled, and other stores'.
#[test]
fn a_store_file_is_never_a_restore_target() {
    let (dir, name, _) = small_chain("v2");
    let d = dir.path();
    fs::create_dir(d.join("sub")).unwrap();
    fs::create_dir(d.join("elsewhere")).unwrap();
    fs::hard_link(d.join("db.1"), d.join("elsewhere/innocent.img")).unwrap();
    let other = d.join("other");
    chain(&other, &[&noise(9000, 8)], &["--format", "legacy"]);
    let before = (store_files(&name), store_files(&other));
    let targets: Vec<PathBuf> = vec![
        d.join("db.1"),
        d.join("db.2"),
        d.join("db.2.digest"),
        d.join("db.ver"),
        d.join("sub/../db.1"),
        d.join("db.7"),
        d.join("elsewhere/innocent.img"),
        d.join("other.1"),
        d.join("other.ver"),
        d.join("other.5.md5"),
    ];
    for t in &targets {
        let o = restore(&[t, &"--from", &name]);
        assert_eq!(o.status.code(), Some(1), "{}: {}", t.display(), stderr(&o));
        assert!(
            stderr(&o).contains(t.to_str().unwrap()),
            "names the target typed: {}",
            stderr(&o)
        );
        // A single stream onto a store file is refused too.
        let diff = fs::read(d.join("db.1")).unwrap();
        let o = restore_with_stdin(&[t], &diff);
        assert_eq!(o.status.code(), Some(1), "{}: {}", t.display(), stderr(&o));
    }
    assert!(
        (store_files(&name), store_files(&other)) == before,
        "a store file was altered"
    );
    assert!(!d.join("db.7").exists());
    let o = restore(&[&"--verify-only", &"--from", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    // A file beside the store that is not one of its names is an ordinary
    // target (`restore /backup/db.img --from /backup/db`).
    let beside = d.join("db.img");
    let o = restore(&[&beside, &"--from", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    fs::remove_file(&beside).unwrap();
    assert!(
        (store_files(&name), store_files(&other)) == before,
        "a store file was altered"
    );
}

/// Item 4: links planted where a restore used to write, and at the target.
#[test]
fn planted_links_are_never_written_through() {
    let (dir, name, image) = small_chain("legacy");
    let d = dir.path();
    let victim = d.join("victim");
    fs::write(&victim, b"precious").unwrap();
    let target = d.join("restored.img");
    // The fixed temporary name of earlier versions, as a symlink and as a
    // hard link to the victim.
    symlink(&victim, d.join("restored.img.blockdiff-partial")).unwrap();
    fs::hard_link(&victim, d.join("other.img.blockdiff-partial")).unwrap();
    let store = store_files(&name);
    for t in [&target, &d.join("other.img")] {
        let o = restore(&[t, &"--from", &name]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(same(t, &image), "{} differs", t.display());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }
    // The target itself a symlink (to the victim, or dangling): refused,
    // the link and the victim unchanged.
    for (link, to) in [
        ("link.img", victim.clone()),
        ("dangling.img", d.join("nowhere")),
    ] {
        let l = d.join(link);
        symlink(&to, &l).unwrap();
        let o = restore(&[&l, &"--from", &name]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
        assert!(stderr(&o).contains(link), "{}", stderr(&o));
        assert_eq!(fs::read_link(&l).unwrap(), to);
        let o = restore_with_stdin(&[&l], &fs::read(d.join("db.1")).unwrap());
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    }
    assert_eq!(fs::read(&victim).unwrap(), b"precious");
    assert!(!d.join("nowhere").exists());
    assert!(store_files(&name) == store, "a store file was altered");
    let others: Vec<String> = listing(d)
        .into_iter()
        .filter(|n| !n.starts_with("db."))
        .collect();
    assert_eq!(
        others,
        [
            "dangling.img",
            "link.img",
            "other.img",
            "other.img.blockdiff-partial",
            "restored.img",
            "restored.img.blockdiff-partial",
            "victim"
        ],
        "nothing left beside the targets"
    );
}

/// Item 4 (and 14): kill -9 at every step of a restore, onto a new and an
/// existing target: the target is as it was, and nothing is left beside it.
#[test]
fn a_restore_killed_at_any_step_leaves_the_target_as_it_was() {
    let (dir, name, image) = small_chain("v2");
    let d = dir.path();
    let store = store_files(&name);
    for step in ["restore:write", "restore:sync", "restore:rename-target"] {
        for existing in [false, true] {
            let target = d.join("restored.img");
            let _ = fs::remove_file(&target);
            if existing {
                fs::write(&target, b"old contents").unwrap();
            }
            let before = listing(d);
            let mut cmd = Command::new(RESTORE);
            cmd.arg(&target).arg("--from").arg(&name);
            let run = StoppedRun::start(cmd, step, d);
            run.kill();
            assert_eq!(listing(d), before, "{step}, existing {existing}");
            if existing {
                assert_eq!(fs::read(&target).unwrap(), b"old contents");
            }
            // And a run let go at that step completes.
            let mut cmd = Command::new(RESTORE);
            cmd.arg(&target).arg("--from").arg(&name);
            let o = StoppedRun::start(cmd, step, d).resume();
            assert!(o.status.success(), "{step}: {}", stderr(&o));
            assert!(same(&target, &image), "{} differs", target.display());
        }
    }
    assert!(store_files(&name) == store, "a store file was altered");
}

/// SIGINT and SIGTERM at every step stop the restore: exit 1, the target
/// as it was, nothing beside it.
#[test]
fn a_restore_interrupted_by_a_signal_leaves_the_target_as_it_was() {
    let (dir, name, _) = small_chain("legacy");
    let d = dir.path();
    let target = d.join("restored.img");
    fs::write(&target, b"old contents").unwrap();
    let before = listing(d);
    for step in ["restore:write", "restore:sync", "restore:rename-target"] {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            let mut cmd = Command::new(RESTORE);
            cmd.arg(&target).arg("--from").arg(&name);
            let run = StoppedRun::start(cmd, step, d);
            // SAFETY: a plain kill(2) of our own child.
            assert_eq!(unsafe { libc::kill(run.pid() as libc::pid_t, signal) }, 0);
            let o = run.resume();
            assert_eq!(o.status.code(), Some(1), "{step}: {}", stderr(&o));
            assert!(stderr(&o).contains("interrupted by SIG"), "{}", stderr(&o));
            assert!(stderr(&o).contains("restored.img"), "{}", stderr(&o));
            assert_eq!(fs::read(&target).unwrap(), b"old contents");
            assert_eq!(listing(d), before, "{step}");
        }
    }
}

/// `/dev/VG/LV` is root's symbolic link to `/dev/dm-N`: a link to a block
/// device is followed when root or the user running the restore owns it,
/// never when another user does (a link planted under /tmp).
#[test]
fn a_link_to_a_block_device_is_followed_only_when_root_or_the_user_owns_it() {
    if !is_root() || std::env::var_os("BLOCKDIFF_SKIP_LOOP").is_some() {
        eprintln!("needs root and loop devices: skipped");
        return;
    }
    let (dir, name, image) = small_chain("v2");
    let d = dir.path();
    let backing = d.join("backing");
    fs::write(&backing, vec![0xAA; 64 * KIB]).unwrap();
    let o = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    if !o.status.success() {
        eprintln!("losetup failed ({}): skipped", stderr(&o));
        return;
    }
    let dev = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
    let link = d.join("lv");
    symlink(&dev, &link).unwrap();
    let o = restore(&[&link, &"--from", &name]);
    let owned_ok = o.status.code();
    let device = fs::read(&dev).unwrap();
    // Now the link belongs to another user.
    let c = std::ffi::CString::new(link.to_str().unwrap()).unwrap();
    // SAFETY: valid path.
    assert_eq!(unsafe { libc::lchown(c.as_ptr(), 65534, 65534) }, 0);
    fs::write(&dev, vec![0x55; 64 * KIB]).unwrap();
    let refused = restore(&[&link, &"--from", &name]);
    let untouched = fs::read(&dev).unwrap();
    let _ = Command::new("losetup").arg("-d").arg(&dev).status();
    assert_eq!(owned_ok, Some(0), "{}", stderr(&o));
    assert!(
        device[..image.len()] == image[..],
        "restored through root's link"
    );
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("symbolic link"),
        "{}",
        stderr(&refused)
    );
    assert!(
        untouched == vec![0x55; 64 * KIB],
        "another user's link was followed"
    );
}

/// Item 8: no regular file under /dev; other device nodes refused.
#[test]
fn missing_dev_paths_and_character_devices_are_refused() {
    let (_dir, name, _) = small_chain("v2");
    let missing = PathBuf::from(format!(
        "/dev/blockdiff-test-missing-{}",
        std::process::id()
    ));
    let in_missing_vg = PathBuf::from("/dev/blockdiff-no-such-vg/lv");
    for t in [&missing, &in_missing_vg] {
        let o = restore(&[t, &"--from", &name]);
        let created = t.exists();
        let _ = fs::remove_file(t);
        assert_eq!(o.status.code(), Some(1), "{}: {}", t.display(), stderr(&o));
        assert!(!created, "{} was created", t.display());
        assert!(stderr(&o).contains(t.to_str().unwrap()), "{}", stderr(&o));
    }
    let o = restore(&[&"/dev/null", &"--from", &name]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    // A regular file under /dev (left by an earlier mistaken run) is not
    // a device either.
    let stray = PathBuf::from(format!("/dev/blockdiff-test-stray-{}", std::process::id()));
    if fs::write(&stray, b"stray").is_ok() {
        let o = restore(&[&stray, &"--from", &name]);
        let left = fs::read(&stray).unwrap();
        fs::remove_file(&stray).unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_eq!(left, b"stray");
    }
    // A file system mounted below /dev (/dev/shm) is not /dev itself: an
    // image may be restored there.
    let shm = Path::new("/dev/shm");
    let dev = fs::metadata("/dev").unwrap().dev();
    if fs::metadata(shm).is_ok_and(|m| m.is_dir() && m.dev() != dev) {
        let t = shm.join(format!("blockdiff-test-restore-{}", std::process::id()));
        let o = restore(&[&t, &"--from", &name]);
        let ok = o.status.success() && t.exists();
        let _ = fs::remove_file(&t);
        assert!(ok, "{}: {}", t.display(), stderr(&o));
    }
}

/// Item 9: a replaced file keeps its owner, group and mode; a new one is
/// 0600.
#[test]
fn a_restore_keeps_the_targets_owner_and_mode_and_creates_private_files() {
    let (dir, name, image) = small_chain("v2");
    let d = dir.path();
    // The store directory is world-readable: the new file still is not.
    fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    let fresh = d.join("fresh.img");
    let o = restore(&[&fresh, &"--from", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::metadata(&fresh).unwrap().mode() & 0o7777, 0o600);
    let diff = fs::read(d.join("db.1")).unwrap();
    let o = restore_with_stdin(&[&d.join("fresh2.img")], &diff);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::metadata(d.join("fresh2.img")).unwrap().mode() & 0o7777,
        0o600
    );
    let existing = d.join("existing.img");
    fs::write(&existing, b"x").unwrap();
    fs::set_permissions(&existing, fs::Permissions::from_mode(0o640)).unwrap();
    let owner = if is_root() {
        let c = std::ffi::CString::new(existing.to_str().unwrap()).unwrap();
        // SAFETY: valid path.
        assert_eq!(unsafe { libc::chown(c.as_ptr(), 65534, 65534) }, 0);
        (65534, 65534)
    } else {
        eprintln!("not root: the owner part of this test is skipped");
        let m = fs::metadata(&existing).unwrap();
        (m.uid(), m.gid())
    };
    let o = restore(&[&existing, &"--from", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m = fs::metadata(&existing).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (owner.0, owner.1, 0o640)
    );
    assert!(same(&existing, &image), "{} differs", existing.display());
}

/// Item 13: comparing with an endless source stops at the generation's
/// size.
#[test]
fn verify_against_an_endless_source_ends() {
    let (_dir, name, _) = small_chain("v2");
    for endless in ["/dev/zero", "/dev/urandom"] {
        let mut child = Command::new(RESTORE)
            .args(["--verify-only", "--from"])
            .arg(&name)
            .args(["--against", endless])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Not a timing assertion: a bound so that the bug fails the test
        // instead of hanging the suite.
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(120) {
                child.kill().unwrap();
                panic!("--against {endless} never ended");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("differs"), "{}", stderr(&o));
    }
}

/// Item 14: garbage on standard input leaves the target as it was.
#[test]
fn garbage_on_stdin_leaves_the_target_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let target = d.join("disk.img");
    for garbage in [
        &b""[..],
        b"hello, this is not a diff\n",
        b"\x00\x10\x00\x00garbage after a plausible block size",
        b"\x1f\x8b\x08 not really gzip",
        b"BDIFF2\r\n and then nonsense",
    ] {
        let o = restore_with_stdin(&[&target], garbage);
        assert_eq!(o.status.code(), Some(1), "{garbage:?}: {}", stderr(&o));
        assert!(!target.exists(), "{garbage:?} left {}", target.display());
        assert_eq!(listing(d), Vec::<String>::new());
        fs::write(&target, b"untouched").unwrap();
        let o = restore_with_stdin(&[&target], garbage);
        assert_eq!(o.status.code(), Some(1), "{garbage:?}: {}", stderr(&o));
        assert_eq!(fs::read(&target).unwrap(), b"untouched");
        fs::remove_file(&target).unwrap();
    }
}

/// A small tmpfs mounted for one test (root only).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, options: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("not root: cannot mount a tmpfs, test skipped");
            return None;
        }
        fs::create_dir_all(at).unwrap();
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        if !o.status.success() {
            eprintln!("cannot mount a tmpfs ({}), test skipped", stderr(&o));
            return None;
        }
        Some(Tmpfs(at.to_owned()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Item 15 and the file-system classes: a full and a read-only file
/// system fail the restore, name the target typed, leave nothing behind
/// and leave an existing target as it was.
#[test]
fn full_and_read_only_file_systems_fail_cleanly_naming_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let image = noise(512 * KIB, 9);
    chain(&name, &[&image], &[]);
    let diff = fs::read(dir.path().join("db.1")).unwrap();
    let mnt = dir.path().join("mnt");
    {
        let Some(_fs) = Tmpfs::mount(&mnt, "size=128k,mode=0700") else {
            return;
        };
        let target = mnt.join("restored.img");
        for existing in [false, true] {
            if existing {
                fs::write(&target, b"old").unwrap();
            }
            let o = restore(&[&target, &"--from", &name]);
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
            let e = stderr(&o);
            assert!(e.contains(target.to_str().unwrap()), "{e}");
            assert!(!e.contains("blockdiff-partial"), "{e}");
            let o = restore_with_stdin(&[&mnt.join("stream.img")], &diff);
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
            assert!(stderr(&o).contains("stream.img"), "{}", stderr(&o));
            if existing {
                assert_eq!(fs::read(&target).unwrap(), b"old");
                assert_eq!(listing(&mnt), ["restored.img"]);
            } else {
                assert_eq!(listing(&mnt), Vec::<String>::new());
            }
        }
    }
    {
        let Some(_fs) = Tmpfs::mount(&mnt, "size=1m,ro") else {
            return;
        };
        let target = mnt.join("restored.img");
        let o = restore(&[&target, &"--from", &name]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).contains(target.to_str().unwrap()),
            "{}",
            stderr(&o)
        );
        assert!(!target.exists());
    }
    let o = restore(&[&"--verify-only", &"--from", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
}
