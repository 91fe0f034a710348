//! `blockdiff-restore --delta`: an existing file or device brought to a
//! generation by writing only the blocks that differ. Killed or
//! interrupted at each step, the target is never claimed restored and a
//! rerun completes it; a mounted device is refused. The device case needs
//! root and loop devices, as CI has (BLOCKDIFF_SKIP_LOOP=1 skips it).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{BACKUP, RESTORE, StoppedRun, noise, run, stderr};

const BS: usize = 4096;
/// 1024 blocks of 4 KiB.
const SIZE: usize = 4 << 20;

/// A chain of two generations in `dir`: (NAME, generation 1, generation 2),
/// the second differing from the first in 20 blocks spread over the image.
fn chain(dir: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    let name = dir.join("vol");
    let src = dir.join("source");
    let one = noise(SIZE, 11);
    let mut two = one.clone();
    for i in 0..20 {
        let at = i * 50 * BS + 100;
        two[at..at + 10].fill(0xa5);
    }
    for image in [&one, &two] {
        fs::write(&src, image).unwrap();
        let o = run(BACKUP, &[&name, &src, &"-b", &"4096", &"-q"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    fs::remove_file(&src).unwrap();
    (name, one, two)
}

/// `image` with 1% of its blocks (10, spread out, the last included)
/// damaged.
fn damaged(image: &[u8]) -> Vec<u8> {
    let mut d = image.to_vec();
    for i in 0..10 {
        let block = if i == 9 { SIZE / BS - 1 } else { i * 101 + 7 };
        d[block * BS + 1] ^= 0xff;
    }
    d
}

fn delta(name: &Path, target: &Path, extra: &[&str]) -> Output {
    let mut cmd = Command::new(RESTORE);
    cmd.arg(target).arg("--from").arg(name).arg("--delta");
    cmd.args(extra);
    cmd.output().unwrap()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn only_the_blocks_that_differ_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let (name, one, two) = chain(dir.path());
    let target = dir.path().join("disk.img");
    fs::write(&target, damaged(&two)).unwrap();
    let o = delta(&name, &target, &["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), two);
    let j = json(&o);
    assert_eq!(j["mode"], "delta");
    assert_eq!(j["generation"], 2);
    assert_eq!(j["source_size"], SIZE as u64);
    assert_eq!(j["bytes_compared"], SIZE as u64);
    assert_eq!(j["ranges_differing"], 10);
    assert_eq!(j["bytes_written"], 10 * BS as u64);
    assert_eq!(j["verified"], true);
    assert!(stderr(&o).contains("in place"), "{}", stderr(&o));

    // Back to generation 1: the 20 blocks the second changed.
    let o = delta(&name, &target, &["-g", "1", "--json", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), one);
    assert_eq!(json(&o)["bytes_written"], 20 * BS as u64);
    assert!(o.stderr.is_empty(), "-q: {}", stderr(&o));

    // Nothing differs: nothing is written.
    let o = delta(&name, &target, &["-g", "1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(json(&o)["bytes_written"], 0);
}

#[test]
fn what_cannot_be_updated_in_place_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (name, _, two) = chain(dir.path());
    // No target.
    let missing = dir.path().join("missing.img");
    let o = delta(&name, &missing, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    assert!(!missing.exists());
    // Another size: refused, untouched; --resize makes it fit.
    let target = dir.path().join("disk.img");
    let short = damaged(&two)[..SIZE - 3 * BS].to_vec();
    fs::write(&target, &short).unwrap();
    let o = delta(&name, &target, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("--resize"), "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), short);
    let o = delta(&name, &target, &["--resize"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), two);
    // Options that need --delta, and --delta without a chain: usage errors.
    for args in [vec!["--force"], vec!["--resize"]] {
        let mut cmd = Command::new(RESTORE);
        cmd.arg(&target).arg("--from").arg(&name).args(&args);
        let o = cmd.output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = Command::new(RESTORE)
        .arg(&target)
        .arg("--delta")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `--log FILE` keeps the result line and, on failure, the error line,
/// with timestamps, even with `-q`.
#[test]
fn the_log_file_keeps_the_result_and_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let (name, _, two) = chain(dir.path());
    let target = dir.path().join("disk.img");
    let log = dir.path().join("restore.log");
    fs::write(&target, damaged(&two)).unwrap();
    let log_arg = log.display().to_string();
    let o = delta(&name, &target, &["-q", "--log", &log_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(o.stderr.is_empty(), "-q: {}", stderr(&o));
    let missing = dir.path().join("missing.img");
    let o = delta(&name, &missing, &["-q", "--log", &log_arg]);
    assert_eq!(o.status.code(), Some(1));
    let text = fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("generation 2 restored to") && lines[0].contains("in place"),
        "{text}"
    );
    assert!(
        lines[1].contains("error") && lines[1].contains("does not exist"),
        "{text}"
    );
    // Each line has its date.
    let dated = |l: &str| {
        l.split_whitespace()
            .any(|w| w.len() == 10 && w.as_bytes()[4] == b'-' && w.as_bytes()[7] == b'-')
    };
    assert!(lines.iter().all(|l| dated(l)), "{text}");
}

/// kill -9 at each step: the run never reports success, and running the
/// same command again leaves the target exactly the generation.
#[test]
fn a_delta_restore_killed_at_any_step_is_completed_by_a_rerun() {
    let dir = tempfile::tempdir().unwrap();
    let (name, _, two) = chain(dir.path());
    let target = dir.path().join("disk.img");
    let before = damaged(&two);
    for step in blockdiff_core::DELTA_STEPS {
        fs::write(&target, &before).unwrap();
        let mut cmd = Command::new(RESTORE);
        cmd.arg(&target).arg("--from").arg(&name).arg("--delta");
        StoppedRun::start(cmd, step, dir.path()).kill();
        if step == "delta:compared" {
            assert_eq!(fs::read(&target).unwrap(), before, "killed before writing");
        }
        let o = delta(&name, &target, &[]);
        assert!(o.status.success(), "{step}: {}", stderr(&o));
        assert_eq!(fs::read(&target).unwrap(), two, "{step}");
    }
}

/// SIGTERM once the first range is written: exit 1, the error says the
/// target is partly restored and what to do; a rerun completes it.
#[test]
fn an_interrupted_delta_restore_says_partly_restored() {
    let dir = tempfile::tempdir().unwrap();
    let (name, _, two) = chain(dir.path());
    let target = dir.path().join("disk.img");
    // Two ranges, each larger than what is written between two checks
    // for a stop (1 MiB).
    let mut before = two.clone();
    before[..(1 << 20) + BS].fill(0);
    before[SIZE - (1 << 20) - BS..].fill(0);
    fs::write(&target, &before).unwrap();
    let mut cmd = Command::new(RESTORE);
    cmd.arg(&target).arg("--from").arg(&name).arg("--delta");
    let run = StoppedRun::start(cmd, "delta:wrote-first", dir.path());
    // SAFETY: a plain kill(2) of our own child.
    assert_eq!(
        unsafe { libc::kill(run.pid() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let o = run.resume();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("partly restored"), "{e}");
    assert!(e.contains("interrupted by SIGTERM"), "{e}");
    assert!(e.contains("run the same restore again"), "{e}");
    let partly = fs::read(&target).unwrap();
    assert_ne!(partly, before);
    assert_ne!(partly, two);
    let o = delta(&name, &target, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&target).unwrap(), two);
}

/// A loop device with a file system: refused while mounted (the kernel
/// holds it), rolled back once unmounted.
#[test]
fn a_mounted_device_is_refused_and_an_unmounted_one_rolled_back() {
    // SAFETY: geteuid has no preconditions.
    if std::env::var_os("BLOCKDIFF_SKIP_LOOP").is_some() || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root and loop devices (BLOCKDIFF_SKIP_LOOP is set, or not root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let backing = d.join("backing.img");
    fs::write(&backing, vec![0u8; 8 << 20]).unwrap();
    let o = Command::new("losetup")
        .args(["-f", "--show"])
        .arg(&backing)
        .output()
        .unwrap();
    assert!(o.status.success(), "losetup: {}", stderr(&o));
    let dev = PathBuf::from(String::from_utf8(o.stdout).unwrap().trim());
    struct Detach(PathBuf, PathBuf);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.1).status();
            let _ = Command::new("losetup").arg("-d").arg(&self.0).status();
        }
    }
    let mnt = d.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let _detach = Detach(dev.clone(), mnt.clone());
    let ok = |o: Output, what: &str| assert!(o.status.success(), "{what}: {}", stderr(&o));
    ok(
        Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&dev)
            .output()
            .unwrap(),
        "mkfs",
    );
    let name = d.join("fs");
    ok(run(BACKUP, &[&name, &dev, &"-q"]), "backup");
    let generation = fs::read(&dev).unwrap();
    // A bad day: files written and removed after the backup.
    ok(
        Command::new("mount").arg(&dev).arg(&mnt).output().unwrap(),
        "mount",
    );
    fs::write(mnt.join("migration.sql"), noise(1 << 20, 3)).unwrap();
    let o = delta(&name, &dev, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("in use"), "{}", stderr(&o));
    ok(Command::new("umount").arg(&mnt).output().unwrap(), "umount");
    let changed = fs::read(&dev).unwrap();
    assert_ne!(changed, generation, "the mounted file system was written");
    let o = delta(&name, &dev, &["--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(fs::read(&dev).unwrap(), generation);
    let written = json(&o)["bytes_written"].as_u64().unwrap();
    assert!(
        written > 0 && written < (8 << 20) / 2,
        "{written} bytes written"
    );
}
