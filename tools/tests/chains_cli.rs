//! `blockdiff-backup --chain` and `blockdiff-prune` as a user runs them:
//! the chain of the period, full first generation, retention, locked
//! chains kept, dry runs, and files beside the chains left alone.

mod common;

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime};

use blockdiff_core::{ChainPeriod, CivilDate, GenerationStore};

use common::{BACKUP, PRUNE, StoppedRun, listing, noise, run, text};

/// The name of the chain of today's period. Read before and after the run
/// it is compared with, so a run across midnight is seen, not misread.
fn today_chain(period: ChainPeriod, base: &Path) -> std::path::PathBuf {
    period.chain_name(base, blockdiff_run::local_today().unwrap())
}

fn backup(name: &Path, source: &Path, extra: &[&str]) -> Output {
    let o = Command::new(BACKUP)
        .args(extra)
        .arg(name)
        .arg(source)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
    o
}

/// Files beside the chains that only look like theirs.
const BYSTANDERS: [&str; 7] = [
    "db.ver",
    "db-202001.notes",
    "db-backup.ver",
    "db-2020011.ver",
    "db-prod-202001.ver",
    "dbx-202001.ver",
    "notes.txt",
];

#[test]
fn chain_monthly_starts_a_full_chain_per_month() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let mut data = noise(200_000, 7);
    fs::write(&src, &data).unwrap();

    let before = today_chain(ChainPeriod::Monthly, &base);
    let first = backup(&base, &src, &["--chain", "monthly"]);
    data[100] ^= 1;
    fs::write(&src, &data).unwrap();
    let second = backup(&base, &src, &["--chain", "monthly"]);
    let after = today_chain(ChainPeriod::Monthly, &base);
    assert_eq!(
        before, after,
        "the month changed during the test; run it again"
    );
    let chain = before;
    let key = chain.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        key.len() == "db-YYYYMM".len() && key[3..].bytes().all(|b| b.is_ascii_digit()),
        "{key}"
    );

    let err = text(&first.stderr);
    assert!(
        err.contains(&format!(
            "chain {} (--chain monthly of {})",
            chain.display(),
            base.display()
        )),
        "{err}"
    );
    // Generation 1 of the new chain is full: every block of the source.
    assert!(
        err.contains(&format!("generation 1 of {}", chain.display()))
            && err.contains("13 of 13 blocks changed"),
        "{err}"
    );
    let err = text(&second.stderr);
    assert!(
        err.contains(&format!("generation 2 of {}", chain.display()))
            && err.contains("1 of 13 blocks changed"),
        "{err}"
    );
    let store = GenerationStore::new(&chain);
    assert_eq!(store.current_generation().unwrap(), Some(2));
    assert!(store.metadata_path(2).exists());
    // Nothing was written under the base name itself.
    assert!(!dir.path().join("db.ver").exists());
    assert!(
        listing(dir.path())
            .iter()
            .all(|f| f == "disk.img" || f.starts_with(&key))
    );

    // Weekly and daily chains are named by ISO week and by day.
    let weekly = today_chain(ChainPeriod::Weekly, &base);
    let daily = today_chain(ChainPeriod::Daily, &base);
    backup(&base, &src, &["--chain", "weekly", "--quiet"]);
    backup(&base, &src, &["--chain", "daily", "--quiet"]);
    assert_eq!(
        GenerationStore::new(&weekly).current_generation().unwrap(),
        Some(1)
    );
    assert_eq!(
        GenerationStore::new(&daily).current_generation().unwrap(),
        Some(1)
    );
    let w = weekly.file_name().unwrap().to_str().unwrap();
    assert_eq!(&w[7..8], "W", "{w}");

    // Without --chain, NAME is used as it is.
    let o = backup(&base, &src, &[]);
    assert!(text(&o.stderr).contains(&format!("generation 1 of {}", base.display())));
    assert_eq!(
        fs::read_to_string(dir.path().join("db.ver")).unwrap(),
        "1\n"
    );

    let o = run(BACKUP, &[&"--chain", &"yearly", &base, &src]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("unknown chain period \"yearly\""));
}

/// Three old chains (two generations each, one with an interrupted run's
/// leftovers), the current month's, and the bystanders.
fn old_and_current_chains(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = dir.join("db");
    let src = dir.join("disk.img");
    let mut data = noise(100_000, 3);
    for key in ["202001", "202002", "202003"] {
        let name = dir.join(format!("db-{key}"));
        for _ in 0..2 {
            data[5] ^= 1;
            fs::write(&src, &data).unwrap();
            backup(&name, &src, &["--quiet"]);
        }
    }
    // What a run killed mid-dump leaves.
    fs::write(dir.join("db-202001.3.tmp"), b"partial").unwrap();
    fs::write(dir.join("db-202001.3.digest.tmp"), b"partial").unwrap();
    for f in BYSTANDERS {
        fs::write(dir.join(f), format!("{f} is not a chain")).unwrap();
    }
    backup(&base, &src, &["--chain", "monthly", "--quiet"]);
    let current = today_chain(ChainPeriod::Monthly, &base);
    assert!(GenerationStore::new(&current).ver_path().exists());
    (base, current)
}

fn bystanders_untouched(dir: &Path) {
    for f in BYSTANDERS {
        assert_eq!(
            fs::read_to_string(dir.join(f)).unwrap(),
            format!("{f} is not a chain"),
            "{f}"
        );
    }
}

#[test]
fn prune_keeps_the_newest_and_removes_old_chains_entirely() {
    let dir = tempfile::tempdir().unwrap();
    let (base, current) = old_and_current_chains(dir.path());
    let current_key = current.file_name().unwrap().to_str().unwrap().to_owned();

    // A dry run reports and deletes nothing.
    let before = listing(dir.path());
    let o = run(PRUNE, &[&base, &"--keep", &"2", &"--dry-run"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!(
            "would delete {}: older than the newest 2 (10 files)",
            dir.path().join("db-202001").display()
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "keep         {}: the newest chain",
            current.display()
        )),
        "{out}"
    );
    assert_eq!(listing(dir.path()), before);

    let o = run(PRUNE, &[&base, &"--keep", &"2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            format!(
                "deleted {}: older than the newest 2 (10 files)",
                dir.path().join("db-202001").display()
            ),
            format!(
                "deleted {}: older than the newest 2 (8 files)",
                dir.path().join("db-202002").display()
            ),
            format!(
                "kept    {}: number 2 of the newest 2",
                dir.path().join("db-202003").display()
            ),
            format!("kept    {}: the newest chain", current.display()),
        ],
        "{out}"
    );
    // The deleted chains are gone, every file of them: .ver, diffs,
    // digests, meta.json, leftovers, lock.
    let mut expect: Vec<String> = BYSTANDERS
        .iter()
        .map(std::string::ToString::to_string)
        .collect();
    expect.push("disk.img".into());
    for key in ["202003", current_key.trim_start_matches("db-")] {
        for suffix in [
            ".1",
            ".1.digest",
            ".1.meta.json",
            ".2",
            ".2.digest",
            ".2.meta.json",
            ".lock",
            ".ver",
        ] {
            if key != "202003" && suffix.starts_with(".2") {
                continue;
            }
            expect.push(format!("db-{key}{suffix}"));
        }
    }
    expect.sort();
    assert_eq!(listing(dir.path()), expect);
    bystanders_untouched(dir.path());

    // Quiet: nothing to say, nothing left to do.
    let o = run(PRUNE, &[&base, &"--keep", &"2", &"--quiet"]);
    assert!(o.status.success() && o.stdout.is_empty() && o.stderr.is_empty());
    assert_eq!(listing(dir.path()), expect);
}

#[test]
fn prune_keeps_a_chain_another_run_has_locked() {
    let dir = tempfile::tempdir().unwrap();
    let (base, current) = old_and_current_chains(dir.path());

    // db-202002's lock, held as a backup holds it.
    let held = GenerationStore::new(dir.path().join("db-202002"))
        .lock()
        .unwrap();
    // db-202003: a backup really running, stopped once it holds the lock
    // and has begun generation 3 (the test hook, no timer).
    let src = dir.path().join("source.img");
    fs::write(&src, noise(50_000, 9)).unwrap();
    let mut cmd = Command::new(BACKUP);
    cmd.arg(dir.path().join("db-202003"))
        .arg(&src)
        .arg("--quiet");
    let running = StoppedRun::start(cmd, "backup:begun", dir.path());

    let o = run(PRUNE, &[&base, &"--keep", &"1", &"--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kept: Vec<(String, String)> = report["kept"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let current_key = current.to_str().unwrap().rsplit('-').next().unwrap();
    assert_eq!(
        kept,
        [
            (
                "202002".into(),
                format!("locked by another run (pid {})", std::process::id())
            ),
            (
                "202003".into(),
                format!("locked by another run (pid {})", running.pid())
            ),
            (current_key.into(), "the newest chain".into()),
        ],
        "{report:#}"
    );
    let deleted = report["deleted"].as_array().unwrap();
    assert_eq!(deleted.len(), 1, "{report:#}");
    assert_eq!(deleted[0]["key"], "202001");
    assert_eq!(
        deleted[0]["files"][0],
        json_path(&dir.path().join("db-202001.ver"))
    );
    assert_eq!(deleted[0]["files"].as_array().unwrap().len(), 10);
    assert_eq!(report["deleted_count"], 1);
    assert_eq!(report["dry_run"], false);
    assert_eq!(report["policy"]["keep"], 1);

    // The locked chains are whole; the running backup commits.
    assert!(dir.path().join("db-202002.2.meta.json").exists());
    assert!(dir.path().join("db-202003.2").exists());
    let out = running.resume();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        GenerationStore::new(dir.path().join("db-202003"))
            .current_generation()
            .unwrap(),
        Some(3)
    );

    // Released, they go on the next run.
    drop(held);
    let o = run(PRUNE, &[&base, &"--keep", &"1"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let left: Vec<String> = listing(dir.path())
        .into_iter()
        .filter(|f| f.starts_with("db-2020") && !BYSTANDERS.contains(&f.as_str()))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    bystanders_untouched(dir.path());
}

fn json_path(p: &Path) -> serde_json::Value {
    serde_json::Value::String(p.to_str().unwrap().to_owned())
}

#[test]
fn prune_by_age_of_the_last_backup() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(20_000, 5)).unwrap();
    let base = dir.path().join("db");
    for key in ["2020W01", "2020W02", "2020W53"] {
        backup(&dir.path().join(format!("db-{key}")), &src, &["--quiet"]);
    }
    let age = |key: &str, days: u64| {
        File::options()
            .write(true)
            .open(dir.path().join(format!("db-{key}.ver")))
            .unwrap()
            .set_modified(SystemTime::now() - Duration::from_secs(days * 86_400 + 60))
            .unwrap();
    };
    age("2020W01", 40);
    age("2020W02", 10);
    age("2020W53", 50);
    let o = run(PRUNE, &[&base, &"--keep-days", &"30"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!(
            "deleted {}: last backup 40 day(s) ago, not within 30 day(s)",
            dir.path().join("db-2020W01").display()
        )),
        "{out}"
    );
    assert!(
        out.contains("db-2020W02: last backup 10 day(s) ago, within 30 day(s)"),
        "{out}"
    );
    // The newest by period stays, however old.
    assert!(out.contains("db-2020W53: the newest chain"), "{out}");
    assert_eq!(
        listing(dir.path())
            .iter()
            .filter(|f| f.ends_with(".ver"))
            .collect::<Vec<_>>(),
        ["db-2020W02.ver", "db-2020W53.ver"]
    );
}

#[test]
fn prune_usage_errors_and_empty_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("db");
    for args in [
        vec![],
        vec!["--keep", "2", "--keep-days", "3"],
        vec!["--keep", "0"],
        vec!["--keep-days", "x"],
    ] {
        let o = Command::new(PRUNE).arg(&base).args(&args).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o.stderr));
    }
    let o = run(PRUNE, &[&base, &"--keep", &"1"]);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).starts_with("no period chains of"),
        "{}",
        text(&o.stdout)
    );
    let o = run(PRUNE, &[&dir.path().join("missing/db"), &"--keep", &"1"]);
    assert_eq!(o.status.code(), Some(1));
    let err = text(&o.stderr);
    assert!(
        err.starts_with("blockdiff-prune: error: ") && err.contains("cannot read directory"),
        "{err}"
    );
    // CivilDate is what the tools hand the library.
    assert_eq!(
        ChainPeriod::Weekly.key(CivilDate::new(2027, 1, 1).unwrap()),
        "2026W53"
    );
}
