//! The generation store under attack and mishap (issue 11): committed
//! generations without a `.ver` to vouch for them, links planted at every
//! name a backup creates, a damaged previous digest, hidden backup names,
//! file modes, read-only and full file systems. The invariant: no run
//! exits 0 having written wrong bytes, and no committed generation is ever
//! removed or altered.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    BACKUP, PRUNE, REPAIR, StoppedRun, listing, noise, restore_generation, run, stderr, text,
};

/// Every file of the directory with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    listing(dir)
        .into_iter()
        .filter(|n| !n.ends_with(".lock"))
        .map(|n| {
            let bytes = fs::read(dir.join(&n)).unwrap_or_default();
            (n, bytes)
        })
        .collect()
}

/// A chain `db` of `n` generations of a small source in `dir`, in
/// `format`; returns the source path and each generation's bytes.
fn chain(dir: &Path, format: &str, n: usize) -> (PathBuf, Vec<Vec<u8>>) {
    let name = dir.join("db");
    let src = dir.join("src.img");
    let mut data = noise(64 << 10, 3);
    let mut all = Vec::new();
    for g in 0..n {
        data[g * 5000..g * 5000 + 3000].fill(g as u8 + 1);
        fs::write(&src, &data).unwrap();
        let o = run(
            BACKUP,
            &[&name, &src, &"--format", &format, &"-b", &"4k", &"-q"],
        );
        assert!(o.status.success(), "{}", stderr(&o));
        all.push(data.clone());
    }
    (src, all)
}

#[test]
fn generations_without_a_ver_are_reported_never_removed_and_repair_rebuilds_it() {
    for format in ["v2", "legacy"] {
        for ver in [None, Some("0\n")] {
            let dir = tempfile::tempdir().unwrap();
            let name = dir.path().join("db");
            let (src, gens) = chain(dir.path(), format, 3);
            match ver {
                None => fs::remove_file(dir.path().join("db.ver")).unwrap(),
                Some(t) => fs::write(dir.path().join("db.ver"), t).unwrap(),
            }
            let before = snapshot(dir.path());
            let o = run(BACKUP, &[&name, &src]);
            let e = stderr(&o);
            assert_eq!(o.status.code(), Some(1), "{format} {ver:?}: {e}");
            assert!(
                e.contains("has generations 1\u{2013}3 but no db.ver")
                    && e.contains("nothing was removed")
                    && e.contains(&format!("blockdiff-repair {}", name.display())),
                "{e}"
            );
            assert_eq!(snapshot(dir.path()), before, "{format} {ver:?}");

            // --dry-run says what it would write, and writes nothing.
            let o = run(REPAIR, &[&name, &"--dry-run"]);
            assert!(o.status.success(), "{}", stderr(&o));
            assert!(
                text(&o.stdout).contains("generations 1-3 verify"),
                "{}",
                text(&o.stdout)
            );
            assert_eq!(snapshot(dir.path()), before);
            let o = run(REPAIR, &[&name]);
            assert!(o.status.success(), "{}", stderr(&o));
            assert_eq!(
                fs::read_to_string(dir.path().join("db.ver")).unwrap(),
                "3\n"
            );
            assert_eq!(restore_generation(&name, 3, &dir.path().join("r")), gens[2]);
            let o = run(BACKUP, &[&name, &src]);
            assert!(o.status.success(), "{}", stderr(&o));
            assert_eq!(
                fs::read_to_string(dir.path().join("db.ver")).unwrap(),
                "4\n"
            );
        }
    }
}

#[test]
fn a_generation_written_in_place_by_the_original_tool_is_reported_not_removed() {
    // The original blockdiff_backup writes NAME.K in place, then NAME.ver:
    // killed in between, it leaves NAME.K (and maybe NAME.K.md5) with
    // NAME.ver = K-1.
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let (src, gens) = chain(dir.path(), "legacy", 2);
    let partial = fs::read(dir.path().join("db.2")).unwrap();
    fs::write(dir.path().join("db.3"), &partial[..partial.len() / 2]).unwrap();
    let before = snapshot(dir.path());
    let o = run(BACKUP, &[&name, &src]);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{e}");
    assert!(
        e.contains("db.3")
            && e.contains("beyond its last committed generation 2")
            && e.contains("blockdiff-repair"),
        "{e}"
    );
    assert_eq!(snapshot(dir.path()), before);
    // Repair keeps generation 2, reports 3, removes nothing.
    let o = run(REPAIR, &[&name]);
    let out = text(&o.stdout);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        out.contains("generations 1-2 verify") && out.contains("generation 3 does not verify"),
        "{out}"
    );
    assert_eq!(snapshot(dir.path()), before);
    assert_eq!(restore_generation(&name, 2, &dir.path().join("r")), gens[1]);
}

#[test]
fn backup_names_that_would_be_hidden_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.img");
    fs::write(&src, noise(10_000, 1)).unwrap();
    let sub = dir.path().join("store");
    fs::create_dir(&sub).unwrap();
    let slash = format!("{}/", sub.display());
    let dot = format!("{}/.", sub.display());
    let dotdot = format!("{}/..", sub.display());
    let hidden = sub.join(".db");
    for name in [
        &slash as &dyn AsRef<std::ffi::OsStr>,
        &dot,
        &dotdot,
        &hidden,
    ] {
        let o = run(BACKUP, &[name, &src]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{e}");
        assert!(e.contains("not a backup name"), "{e}");
        assert!(listing(&sub).is_empty(), "{:?}", listing(&sub));
    }
    assert_eq!(listing(dir.path()), ["src.img", "store"]);
}

/// A change made to a store by a test.
type Damage = fn(&Path);

#[test]
fn a_damaged_previous_digest_is_refused_before_anything_is_written() {
    // Legacy: the block size in the first bytes of db.2.md5 flipped; or
    // the digest cut at a 16-byte boundary (as an un-fsynced write of the
    // original tool leaves it). v2: another chain's digest in its place.
    let cases: [(&str, Damage); 3] = [
        ("legacy", |d| {
            let p = d.join("db.2.md5");
            let mut b = fs::read(&p).unwrap();
            b[1] ^= 0x01;
            fs::write(&p, b).unwrap();
        }),
        ("legacy", |d| {
            let p = d.join("db.2.md5");
            let len = fs::metadata(&p).unwrap().len();
            fs::OpenOptions::new()
                .write(true)
                .open(&p)
                .unwrap()
                .set_len(len - 32)
                .unwrap();
        }),
        ("v2", |d| {
            let other = d.join("other");
            let src = d.join("src.img");
            let o = run(BACKUP, &[&other, &src, &"-b", &"4k", &"-q"]);
            assert!(o.status.success(), "{}", stderr(&o));
            fs::copy(d.join("other.1.digest"), d.join("db.2.digest")).unwrap();
        }),
    ];
    for (i, (format, damage)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().join("db");
        let (src, _) = chain(dir.path(), format, 2);
        damage(dir.path());
        let before = snapshot(dir.path());
        let o = run(BACKUP, &[&name, &src]);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "case {i}: {e}");
        assert!(
            e.contains("db.2.") && e.contains("blockdiff-repair"),
            "case {i}: {e}"
        );
        assert_eq!(snapshot(dir.path()), before, "case {i}");
    }
}

/// The names a second backup of `db` creates (generation 2).
const RUN_NAMES: [&str; 9] = [
    "db.2",
    "db.2.digest",
    "db.lock",
    "db.2.tmp",
    "db.2.digest.tmp",
    "db.2.meta.json.tmp",
    "db.ver.tmp",
    "db.1.meta.json.tmp",
    "db.2.meta.json",
];

#[test]
fn links_planted_at_every_name_a_backup_creates_are_never_written_through() {
    for hard in [false, true] {
        for planted in RUN_NAMES {
            let dir = tempfile::tempdir().unwrap();
            let name = dir.path().join("db");
            let (src, mut gens) = chain(dir.path(), "v2", 1);
            let victim = dir.path().join("victim");
            fs::write(&victim, b"precious").unwrap();
            let at = dir.path().join(planted);
            let _ = fs::remove_file(&at);
            if hard {
                fs::hard_link(&victim, &at).unwrap();
            } else {
                symlink(&victim, &at).unwrap();
            }
            let mut data = gens[0].clone();
            data[..4096].fill(0xee);
            fs::write(&src, &data).unwrap();
            let o = run(BACKUP, &[&name, &src]);
            let what = format!(
                "{} at {planted}",
                if hard { "hard link" } else { "symlink" }
            );
            assert_eq!(
                fs::read(&victim).unwrap(),
                b"precious",
                "{what}: {}",
                stderr(&o)
            );
            if o.status.success() {
                gens.push(data);
            }
            let ver = fs::read_to_string(dir.path().join("db.ver")).unwrap();
            assert_eq!(ver, format!("{}\n", gens.len()), "{what}");
            let k = gens.len() as u64;
            assert_eq!(
                &restore_generation(&name, k, &dir.path().join("r")),
                gens.last().unwrap(),
                "{what}"
            );
        }
    }
}

#[test]
fn store_files_are_private_or_the_setgid_groups_and_never_wider() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("src.img");
    fs::write(&src, noise(20_000, 2)).unwrap();
    fs::set_permissions(&src, fs::Permissions::from_mode(0o600)).unwrap();
    for _ in 0..2 {
        let o = run(BACKUP, &[&name, &src]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for n in listing(dir.path()) {
        if n.starts_with("db") {
            let mode = fs::metadata(dir.path().join(&n))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777;
            assert_eq!(mode, 0o600, "{n}: {mode:o}");
        }
    }

    // A setgid store directory (an operator's backup group): 0640, the
    // directory's group.
    let group_dir = dir.path().join("grouped");
    fs::create_dir(&group_dir).unwrap();
    let gid = 4242;
    if std::os::unix::fs::chown(&group_dir, None, Some(gid)).is_err() {
        eprintln!("skipped the setgid part: cannot chown (not root)");
        return;
    }
    fs::set_permissions(&group_dir, fs::Permissions::from_mode(0o2750)).unwrap();
    let name = group_dir.join("db");
    for _ in 0..2 {
        let o = run(BACKUP, &[&name, &src]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    for n in listing(&group_dir) {
        let meta = fs::metadata(group_dir.join(&n)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640, "{n}");
        assert_eq!(meta.gid(), gid, "{n}");
    }
}

/// A tmpfs mounted for one test, unmounted when dropped; `None` when not
/// root (or mounting is not allowed here).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("skipped: cannot mount a tmpfs here");
            return None;
        }
        Some(Tmpfs(at.to_owned()))
    }

    fn remount(&self, opts: &str) {
        let s = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(s.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_or_read_only_file_system_fails_the_run_and_keeps_every_generation() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs_) = Tmpfs::mount(&dir.path().join("mnt"), "400k") else {
        return;
    };
    let store = fs_.0.clone();
    let name = store.join("db");
    let src = dir.path().join("src.img");
    let v1 = noise(128 << 10, 4);
    fs::write(&src, &v1).unwrap();
    let o = run(BACKUP, &[&name, &src, &"--zstd-level", &"0"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Full: generation 2 (incompressible, 1 MiB) does not fit.
    fs::write(&src, noise(1 << 20, 5)).unwrap();
    let before = snapshot(&store);
    let o = run(BACKUP, &[&name, &src]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("No space left"), "{}", stderr(&o));
    assert_eq!(snapshot(&store), before);
    assert_eq!(restore_generation(&name, 1, &dir.path().join("r")), v1);

    // Read-only: refused at once, nothing changed.
    fs::write(&src, &v1[..64 << 10]).unwrap();
    fs_.remount("ro");
    let o = run(BACKUP, &[&name, &src]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("Read-only file system"),
        "{}",
        stderr(&o)
    );
    assert_eq!(snapshot(&store), before);
    // Prune on the read-only file system: fails, deletes nothing.
    for key in ["202001", "202002"] {
        fs_.remount("rw");
        let o = run(BACKUP, &[&store.join(format!("db-{key}")), &src, &"-q"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    fs_.remount("ro");
    let chains = snapshot(&store);
    let o = run(PRUNE, &[&name, &"--keep", &"1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(snapshot(&store), chains);
    fs_.remount("rw");
    let o = run(BACKUP, &[&name, &src]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        restore_generation(&name, 2, &dir.path().join("r")),
        &v1[..64 << 10]
    );
    assert_eq!(restore_generation(&name, 1, &dir.path().join("r")), v1);
}

#[test]
fn kill_during_repair_or_prune_keeps_every_generation() {
    // repair: killed before it renames its NAME.ver.tmp, the store is as
    // it was; the next backup removes the temporary and is refused as
    // before, and a new repair succeeds.
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let (src, gens) = chain(dir.path(), "v2", 2);
    fs::remove_file(dir.path().join("db.ver")).unwrap();
    let mut cmd = Command::new(REPAIR);
    cmd.arg(&name);
    StoppedRun::start(cmd, "repair:rename-ver", dir.path()).kill();
    assert!(!dir.path().join("db.ver").exists());
    assert!(dir.path().join("db.2").exists() && dir.path().join("db.1").exists());
    let o = run(REPAIR, &[&name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(restore_generation(&name, 2, &dir.path().join("r")), gens[1]);
    let o = run(BACKUP, &[&name, &src]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!listing(dir.path()).iter().any(|n| n.ends_with(".tmp")));
}

#[test]
fn prune_killed_at_every_step_keeps_every_kept_chain() {
    for step in ["prune:locked", "prune:removed-ver", "prune:removed-files"] {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.img");
        let data = noise(20_000, 7);
        fs::write(&src, &data).unwrap();
        for key in ["202001", "202002", "202003"] {
            let o = run(
                BACKUP,
                &[&dir.path().join(format!("db-{key}")), &src, &"-q"],
            );
            assert!(o.status.success(), "{}", stderr(&o));
        }
        fs::write(dir.path().join("db-notes"), b"not a chain").unwrap();
        let kept = |d: &Path| -> BTreeMap<String, Vec<u8>> {
            snapshot(d)
                .into_iter()
                .filter(|(n, _)| n.starts_with("db-202003") || n == "db-notes")
                .collect()
        };
        let before = kept(dir.path());
        let base = dir.path().join("db");
        if step == "prune:locked" {
            // A link planted at a chain's lock: the prune fails, and
            // writes nothing through it.
            let victim = dir.path().join("victim");
            fs::write(&victim, b"precious").unwrap();
            let lock = dir.path().join("db-202001.lock");
            let _ = fs::remove_file(&lock);
            symlink(&victim, &lock).unwrap();
            let o = run(PRUNE, &[&base, &"--keep", &"1"]);
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
            assert!(stderr(&o).contains("db-202001.lock"), "{}", stderr(&o));
            assert_eq!(fs::read(&victim).unwrap(), b"precious");
            assert_eq!(kept(dir.path()), before);
            fs::remove_file(&lock).unwrap();
            fs::remove_file(&victim).unwrap();
        }
        let mut cmd = Command::new(PRUNE);
        cmd.arg(&base).args(["--keep", "1"]);
        StoppedRun::start(cmd, step, dir.path()).kill();
        assert_eq!(kept(dir.path()), before, "{step}");
        let o = run(PRUNE, &[&base, &"--keep", &"1"]);
        assert!(o.status.success(), "{step}: {}", stderr(&o));
        let mut left = listing(dir.path());
        left.retain(|n| n.starts_with("db-"));
        assert_eq!(
            left,
            [
                "db-202003.1",
                "db-202003.1.digest",
                "db-202003.1.meta.json",
                "db-202003.lock",
                "db-202003.ver",
                "db-notes"
            ],
            "{step}"
        );
        assert_eq!(kept(dir.path()), before, "{step}");
        assert_eq!(
            restore_generation(&dir.path().join("db-202003"), 1, &dir.path().join("r")),
            data
        );
    }
}
