//! `blockdiff-prune NAME --keep-daily …`: one chain thinned by folding.
//! Backups are made on the days of a calendar with libfaketime's
//! `faketime` (Debian package faketime, installed by
//! scripts/services-setup.sh), so the policy sees real creation times.

mod common;

use blockdiff_core::FOLD_STEPS;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use blockdiff_core::{CivilDate, GenerationStore, chain_generations};
use serde_json::Value;

use common::{BACKUP, PRUNE, RESTORE, StoppedRun, listing, noise, restore_generation, stderr};

const BS: usize = 4096;

/// `cmd` run as if the clock said `when` (`YYYY-MM-DD HH:MM:SS`, UTC).
fn at_time(when: &str, program: &str) -> Command {
    let found = Command::new("faketime").arg("--version").output();
    assert!(
        found.is_ok(),
        "faketime is missing: install the Debian package faketime (scripts/services-setup.sh does)"
    );
    let mut cmd = Command::new("faketime");
    cmd.arg(when)
        .arg(program)
        .env("TZ", "UTC")
        .stdin(Stdio::null());
    cmd
}

fn date_of_day(day: u32) -> CivilDate {
    CivilDate::new(2026, 1, 1)
        .unwrap()
        .add_days(i64::from(day) - 1)
        .unwrap()
}

fn ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", stderr(o));
}

/// Day `day`'s backup of `image` into `name`, at 02:30 UTC.
fn backup_on_day(name: &Path, image: &Path, day: u32) {
    let o = at_time(&format!("{} 02:30:00", date_of_day(day)), BACKUP)
        .arg(name)
        .arg(image)
        .args(["--block-size", "4096", "--quiet"])
        .output()
        .unwrap();
    ok(&o, &format!("backup of day {day}"));
}

/// A chain `db` of `days` daily backups in `dir` of a changing image:
/// random blocks, a hot region, zeroed blocks and a growing source. The
/// images, by generation (index 0 is generation 1).
fn daily_chain(dir: &Path, days: u32, seed: u64) -> Vec<Vec<u8>> {
    let name = dir.join("db");
    let source = dir.join("source.img");
    let mut image = noise(48 * BS + 300, seed);
    let mut rng = noise(4 * days as usize + 8, seed ^ 0xabc);
    let mut images = Vec::new();
    for day in 1..=days {
        if day > 1 {
            let r = &mut rng[4 * day as usize..4 * day as usize + 4];
            let blocks = image.len() / BS;
            for (i, &b) in r.iter().take(2).enumerate() {
                let at = (b as usize % blocks) * BS;
                image[at..at + BS].fill(b.wrapping_add(i as u8));
            }
            image[2 * BS..4 * BS].fill(day as u8);
            if r[2].is_multiple_of(5) {
                let at = (r[3] as usize % blocks) * BS;
                image[at..at + BS].fill(0);
            }
            if day.is_multiple_of(17) {
                image.extend_from_slice(&noise(3 * BS + 11, u64::from(day)));
            }
        }
        fs::write(&source, &image).unwrap();
        backup_on_day(&name, &source, day);
        images.push(image.clone());
    }
    images
}

/// `blockdiff-prune NAME ARGS --json` at `when`; its JSON.
fn prune_json(name: &Path, when: &str, args: &[&str]) -> Value {
    let o = at_time(when, PRUNE)
        .arg(name)
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    ok(&o, &format!("prune {args:?}"));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn kept_of(json: &Value) -> BTreeSet<u64> {
    json["generations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["kept"].as_bool().unwrap())
        .map(|g| g["generation"].as_u64().unwrap())
        .collect()
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// Every generation of `kept` restores to its image and verifies; the
/// chain holds exactly them; no other generation has a file left.
fn check_chain(name: &Path, images: &[Vec<u8>], kept: &BTreeSet<u64>, scratch: &Path) {
    let store = GenerationStore::new(name);
    let mut held = chain_generations(&store, None).unwrap();
    held.reverse();
    assert_eq!(held, kept.iter().copied().collect::<Vec<_>>());
    let files: BTreeSet<u64> = store.generation_files().unwrap().into_keys().collect();
    assert_eq!(&files, kept);
    for &g in kept {
        let out = scratch.join(format!("restored-{g}"));
        let _ = fs::remove_file(&out);
        assert!(
            restore_generation(name, g, &out) == images[g as usize - 1],
            "generation {g}"
        );
        fs::remove_file(&out).unwrap();
        let o = Command::new(RESTORE)
            .arg("--verify-only")
            .arg("--from")
            .arg(name)
            .args(["--generation", &g.to_string()])
            .output()
            .unwrap();
        ok(&o, &format!("verify {g}"));
    }
    assert!(
        listing(name.parent().unwrap())
            .iter()
            .all(|n| !n.contains("fold")),
        "leftovers"
    );
}

#[test]
fn sixty_daily_generations_pruned_by_several_policies() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    fs::create_dir(&base).unwrap();
    let mut images = daily_chain(&base, 60, 0x60);
    // 2026-01-01 + 59 days is Sunday 1 March 2026 (the end of ISO week 9).
    assert_eq!(date_of_day(60), CivilDate::new(2026, 3, 1).unwrap());
    let now = "2026-03-01 12:00:00";
    let policies: [(&[&str], BTreeSet<u64>); 4] = [
        (
            &[
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "3",
            ],
            // Days 54-60; Sundays 8, 15, 22 Feb (days 39, 46, 53) and 1
            // March; 31 Jan (31), 28 Feb (59) and 1 March.
            [31, 39, 46, 53, 54, 55, 56, 57, 58, 59, 60].into(),
        ),
        (&["--keep-last", "4"], [57, 58, 59, 60].into()),
        (
            // Made less than 10 days before noon on 1 March: from day 51
            // (20 Feb, 02:30) on; and the last of each of 2 months.
            &["--keep-within", "1w3d", "--keep-monthly", "2"],
            (51..=60).chain([59]).collect(),
        ),
        (
            &["--keep-weekly", "2", "--keep-yearly", "1"],
            [53, 60].into(),
        ),
    ];
    for (i, (args, expected)) in policies.iter().enumerate() {
        let work = dir.path().join(format!("policy-{i}"));
        copy_dir(&base, &work);
        let name = work.join("db");
        // A dry run changes nothing and says the same.
        let before = listing(&work);
        let dry = prune_json(&name, now, &[args, &["--dry-run"][..]].concat());
        assert_eq!(&kept_of(&dry), expected, "{args:?}");
        assert_eq!(listing(&work), before);

        let json = prune_json(&name, now, args);
        assert_eq!(&kept_of(&json), expected, "{args:?}");
        assert_eq!(
            json["folded_count"].as_u64().unwrap(),
            60 - expected.len() as u64
        );
        check_chain(&name, &images, expected, &work);
        // Pruning again with the same policy folds nothing.
        let again = prune_json(&name, now, args);
        assert!(again["folds"].as_array().unwrap().is_empty(), "{again:#}");
    }
    // The chain goes on after a prune: day 61's backup, then a prune.
    let work = dir.path().join("policy-0");
    let name = work.join("db");
    let mut image = images.last().unwrap().clone();
    image[7 * BS] ^= 0x55;
    fs::write(work.join("source.img"), &image).unwrap();
    backup_on_day(&name, &work.join("source.img"), 61);
    images.push(image);
    let json = prune_json(&name, "2026-03-02 12:00:00", &["--keep-last", "2"]);
    let kept: BTreeSet<u64> = [60, 61].into();
    assert_eq!(kept_of(&json), kept);
    check_chain(&name, &images, &kept, &work);
}

#[test]
fn kill_9_at_every_step_of_a_fold_leaves_every_kept_generation() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base");
    fs::create_dir(&base).unwrap();
    let images = daily_chain(&base, 9, 0x99);
    let args = ["--keep-last", "3"];
    let kept: BTreeSet<u64> = [7, 8, 9].into();
    for (i, step) in FOLD_STEPS.iter().enumerate() {
        for next in ["prune", "backup"] {
            let work = dir.path().join(format!("kill-{i}-{next}"));
            copy_dir(&base, &work);
            let name = work.join("db");
            let mut cmd = Command::new(PRUNE);
            cmd.arg(&name).args(args).env("TZ", "UTC");
            StoppedRun::start(cmd, step, &work).kill();
            // Every generation the chain links to restores exactly, and
            // the kept ones are among them.
            let store = GenerationStore::new(&name);
            let held = chain_generations(&store, None).unwrap();
            assert!(kept.iter().all(|g| held.contains(g)), "{step}: {held:?}");
            for &g in &held {
                let out = work.join("restored");
                let _ = fs::remove_file(&out);
                assert!(
                    restore_generation(&name, g, &out) == images[g as usize - 1],
                    "{step}: generation {g}"
                );
            }
            if next == "prune" {
                // The next prune finishes (or undoes and redoes) the fold.
                let o = Command::new(PRUNE).arg(&name).args(args).output().unwrap();
                ok(&o, step);
                check_chain(&name, &images, &kept, &work);
            } else {
                // The next backup finishes or undoes it, then a prune ends
                // where an uninterrupted one would.
                backup_on_day(&name, &work.join("source.img"), 10);
                assert!(!store.fold_intent_path().exists(), "{step}");
                let mut images = images.clone();
                images.push(images[8].clone());
                let o = Command::new(PRUNE).arg(&name).args(args).output().unwrap();
                ok(&o, step);
                check_chain(&name, &images, &[8, 9, 10].into(), &work);
            }
        }
    }
}

#[test]
fn a_running_backup_fails_the_prune_or_makes_it_wait() {
    let dir = tempfile::tempdir().unwrap();
    let images = daily_chain(dir.path(), 4, 0x44);
    let name = dir.path().join("db");
    let source = dir.path().join("source.img");
    let mut cmd = Command::new(BACKUP);
    cmd.arg(&name).arg(&source).arg("--quiet");
    let backup = StoppedRun::start(cmd, "backup:begun", dir.path());
    let o = Command::new(PRUNE)
        .arg(&name)
        .args(["--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("lock") && err.contains(&format!("pid {}", backup.pid())),
        "{err}"
    );
    assert_eq!(
        chain_generations(&GenerationStore::new(&name), None).unwrap(),
        [4, 3, 2, 1]
    );
    // With --wait, it runs once the backup has committed generation 5.
    let waiting = Command::new(PRUNE)
        .arg(&name)
        .args(["--keep-last", "1", "--wait", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Blocked on the lock: /proc/locks lists a waiter ("->") of its pid.
    let pid = format!(" {} ", waiting.id());
    common::wait_for("the prune to wait for the lock", || {
        fs::read_to_string("/proc/locks").is_ok_and(|locks| {
            locks
                .lines()
                .any(|l| l.contains("->") && l.contains("FLOCK") && l.contains(&pid))
        })
    });
    let b = backup.resume();
    ok(&b, "backup");
    let o = waiting.wait_with_output().unwrap();
    ok(&o, "prune --wait");
    let json: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(kept_of(&json), [5].into());
    let mut images = images;
    images.push(images[3].clone());
    check_chain(&name, &images, &[5].into(), dir.path());
}

#[test]
fn refusals_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let name: PathBuf = dir.path().join("old");
    let source = dir.path().join("source.img");
    for v in 1..=3u8 {
        fs::write(&source, vec![v; 10_000]).unwrap();
        let o = Command::new(BACKUP)
            .arg(&name)
            .arg(&source)
            .args(["--format", "legacy", "--quiet"])
            .output()
            .unwrap();
        ok(&o, "legacy backup");
    }
    let before = listing(dir.path());
    let o = Command::new(PRUNE)
        .arg(&name)
        .args(["--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("original blockdiff's format") && err.lines().count() == 1,
        "{err}"
    );
    assert_eq!(listing(dir.path()), before);
    for args in [
        &["--keep", "3", "--keep-daily", "2"][..],
        &["--keep-within", "3m"],
        &["--keep-within", "0d"],
        &["--keep-days", "3", "--wait"],
    ] {
        let o = Command::new(PRUNE).arg(&name).args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = Command::new(PRUNE)
        .arg(&name)
        .args(["--keep-last", "0"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("keeps nothing but the newest"),
        "{}",
        stderr(&o)
    );
    assert_eq!(listing(dir.path()), before);
}
