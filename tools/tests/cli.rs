//! The three tools as a user runs them: exit codes, one-line errors,
//! byte-compatible output, the lock, and a real process killed mid-run.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use common::{
    BACKUP, DUMP, INFO, RESTORE, StoppedRun, listing, mkfifo, noise, restore_generation, run,
    stderr, wait_for,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/legacy")
}

/// Four generations of one source, each backed up with the options given
/// for it, then every generation restored and compared.
fn chain_round_trip(per_generation: [&[&str]; 4], expect_files: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let mut versions = Vec::new();
    let mut data = noise(300_000, 1);
    data.extend_from_slice(&vec![0u8; 100_000]);
    for (g, extra) in (1..=4u8).zip(per_generation) {
        data[g as usize * 20_000] ^= 0xff;
        data.extend_from_slice(&[g; 1000]);
        fs::write(&src, &data).unwrap();
        let o = Command::new(BACKUP)
            .arg(&name)
            .arg(&src)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains(&format!("generation {g} of")),
            "{}",
            stderr(&o)
        );
        assert!(stderr(&o).contains("backup completed successfully"));
        versions.push(data.clone());
    }
    assert_eq!(
        fs::read_to_string(dir.path().join("db.ver")).unwrap(),
        "4\n"
    );
    for f in expect_files {
        assert!(dir.path().join(f).exists(), "{f} is missing");
    }
    for (i, expected) in versions.iter().enumerate() {
        let k = (i + 1).to_string();
        let target = dir.path().join(format!("restored-{k}"));
        let o = run(RESTORE, &[&target, &"--from", &name, &"--generation", &k]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(&fs::read(&target).unwrap(), expected, "generation {k}");
    }
    // Without --generation: the last committed one.
    let target = dir.path().join("latest");
    let o = run(RESTORE, &[&target, &"--from", &name, &"-q"]);
    assert!(o.status.success() && o.stderr.is_empty(), "{}", stderr(&o));
    assert_eq!(&fs::read(&target).unwrap(), versions.last().unwrap());
    // The chain verifies, and the last source matches the last generation.
    let o = run(RESTORE, &[&"--verify-only", &"--from", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("generation 4 of"), "{}", stderr(&o));
    let o = run(
        RESTORE,
        &[&"--verify-only", &"--from", &name, &"--against", &src],
    );
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn v2_chain_backup_then_restore_every_generation() {
    chain_round_trip(
        [&[], &["--zstd-level", "9"], &["--zstd-level", "0"], &[]],
        &["db.1", "db.1.digest", "db.4", "db.4.digest"],
    );
}

#[test]
fn legacy_chain_backup_then_restore_every_generation() {
    chain_round_trip(
        [
            &["--format", "legacy"],
            &["-z"],
            &[],
            &["--format", "legacy"],
        ],
        &["db.1", "db.1.md5", "db.2.gz", "db.3.gz", "db.4", "db.4.md5"],
    );
}

#[test]
fn a_chain_keeps_its_format() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(50_000, 9)).unwrap();
    assert!(run(BACKUP, &[&name, &src]).status.success());
    let o = run(BACKUP, &[&name, &src, &"--format", &"legacy"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("db.1: this chain is v2+zstd-1 but legacy was asked for"),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("db.ver")).unwrap(),
        "1\n"
    );
}

#[test]
fn verify_only_reports_damage_and_against_lists_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let mut data = noise(200_000, 4);
    fs::write(&src, &data).unwrap();
    assert!(run(BACKUP, &[&name, &src]).status.success());
    // A changed file: two ranges differ.
    data[20_000] ^= 1;
    data[100_000] ^= 1;
    let changed = dir.path().join("changed.img");
    fs::write(&changed, &data).unwrap();
    let o = run(
        RESTORE,
        &[&"--verify-only", &"--from", &name, &"--against", &changed],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out, "16384-32768\t16384 bytes\n98304-114688\t16384 bytes\n");
    assert!(
        stderr(&o).contains("differs from generation 1 in 2 range(s)"),
        "{}",
        stderr(&o)
    );
    // A damaged diff: one flipped byte in the middle of the frames.
    let diff = dir.path().join("db.1");
    let mut bytes = fs::read(&diff).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x20;
    fs::write(&diff, &bytes).unwrap();
    let o = run(RESTORE, &[&"--verify-only", &"--from", &name]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("db.1: frame 0 at offset 128: CRC32 mismatch"),
        "{e}"
    );
    // And a restore of it writes nothing.
    let target = dir.path().join("t.img");
    let o = run(RESTORE, &[&target, &"--from", &name]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!target.exists());
}

#[test]
fn info_shows_every_generation() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let mut data = noise(1 << 20, 4);
    data.extend_from_slice(&vec![0u8; 1 << 20]);
    fs::write(&src, &data).unwrap();
    assert!(run(BACKUP, &[&name, &src]).status.success());
    data[5] ^= 1;
    fs::write(&src, &data).unwrap();
    assert!(run(BACKUP, &[&name, &src]).status.success());
    let o = run(INFO, &[&name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(
        table.lines().nth(1).unwrap().contains("128 100.0%"),
        "{table}"
    );
    assert!(
        table.lines().nth(2).unwrap().contains("1   0.8%"),
        "{table}"
    );
    let o = run(INFO, &[&name, &"--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["current_generation"], 2);
    let g1 = &v["generations"][0];
    assert_eq!(g1["source_bytes"], 2 << 20);
    assert_eq!(g1["changed_blocks"], 128);
    assert_eq!(g1["zero_blocks"], 64);
    assert_eq!(g1["hash"], "blake3");
    assert_eq!(v["generations"][1]["changed_blocks"], 1);
}

#[test]
fn dump_tool_reproduces_the_original_files() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixtures();
    for k in 1..=3 {
        let diff = dir.path().join(format!("plain.{k}"));
        let md5 = dir.path().join(format!("plain.{k}.md5"));
        let src = f.join(format!("source.v{k}"));
        let prev = f.join(format!("plain.{}.md5", k - 1));
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"--format",
            &"legacy",
            &"--new-digest",
            &md5,
            &"-o",
            &diff,
            &src,
        ];
        if k > 1 {
            args.extend_from_slice(&[&"--old-digest", &prev]);
        }
        let o = run(DUMP, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(
            fs::read(&diff).unwrap(),
            fs::read(f.join(format!("plain.{k}"))).unwrap(),
            "plain.{k}"
        );
        assert_eq!(
            fs::read(&md5).unwrap(),
            fs::read(f.join(format!("plain.{k}.md5"))).unwrap()
        );
    }
}

#[test]
fn dump_to_stdout_and_merge_from_stdin_like_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixtures().join("source.v2");
    let mut dump = Command::new(DUMP)
        .args(["-z", "-q", "--block-size", "4k"])
        .arg(&src)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let target = dir.path().join("merged.img");
    let restore = Command::new(RESTORE)
        .arg(&target)
        .stdin(dump.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(dump.wait().unwrap().success());
    assert!(restore.status.success(), "{}", stderr(&restore));
    assert_eq!(fs::read(&target).unwrap(), fs::read(&src).unwrap());
}

#[test]
fn block_size_disagreeing_with_the_digest_is_a_notice_and_the_digest_wins() {
    let dir = tempfile::tempdir().unwrap();
    let f = fixtures();
    let diff = dir.path().join("out");
    let o = run(
        DUMP,
        &[
            &"-b",
            &"4096",
            &"--old-digest",
            &f.join("plain.2.md5"),
            &"-o",
            &diff,
            &f.join("source.v3"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("plain.2.md5: block size is 16384, not the 4096 asked for"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        fs::read(&diff).unwrap(),
        fs::read(f.join("plain.3")).unwrap()
    );
}

#[test]
fn exit_codes_and_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    // Usage errors: 2.
    for args in [
        &["--bogus"][..],
        &[][..],
        &["name", "src", "--block-size", "0"][..],
    ] {
        let o = run(
            BACKUP,
            &args
                .iter()
                .map(|a| a as &dyn AsRef<std::ffi::OsStr>)
                .collect::<Vec<_>>(),
        );
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
    let o = run(RESTORE, &[&"x", &"--generation", &"2"]);
    assert_eq!(o.status.code(), Some(2), "--generation needs --from");
    // --help teaches and succeeds.
    let o = run(BACKUP, &[&"--help"]);
    assert_eq!(o.status.code(), Some(0));
    let help = String::from_utf8_lossy(&o.stdout);
    assert!(
        help.contains("Examples:") && help.contains("NAME.ver"),
        "{help}"
    );

    // Failures: 1, with one line naming the file.
    let missing = dir.path().join("no-such-source");
    let o = run(BACKUP, &[&dir.path().join("db"), &missing]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.starts_with("blockdiff-backup: error: ") && e.contains("no-such-source"),
        "{e}"
    );

    fs::write(dir.path().join("db.ver"), "seven\n").unwrap();
    let src = dir.path().join("src");
    fs::write(&src, b"data").unwrap();
    let o = run(BACKUP, &[&dir.path().join("db"), &src]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(
        e.contains("db.ver: not a generation number: \"seven\\n\""),
        "{e}"
    );

    // A diff cut inside a record header, on stdin.
    let mut cut = fs::read(fixtures().join("plain.2")).unwrap();
    cut.truncate(4 + 8 + 16384 + 3);
    let mut child = Command::new(RESTORE)
        .arg(dir.path().join("t.img"))
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&cut).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("standard input: stream ends inside a record header at offset 16396"),
        "{e}"
    );
}

#[test]
fn a_diff_cut_short_by_a_broken_pipe_fails_the_dump() {
    // A pipe nobody reads, closed before the dump starts (`| head -c 0`).
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = Command::new(DUMP)
        .arg(fixtures().join("source.v3"))
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    // The diff was lost: a failure (tests/adversarial_pipes.rs has more).
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
}

/// Starts a backup reading from a FIFO, so the test decides when the
/// source ends.
fn backup_from_fifo(name: &Path, fifo: &Path) -> Child {
    Command::new(BACKUP)
        .arg(name)
        .arg(fifo)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn second_backup_of_the_same_name_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let fifo = dir.path().join("source.fifo");
    mkfifo(&fifo);
    let mut first = backup_from_fifo(&name, &fifo);
    // Opening the FIFO for writing waits for the backup to open it.
    let mut writer = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    writer.write_all(&noise(100_000, 3)).unwrap();
    // The first run holds the lock while it waits for more data.
    wait_for("the first backup's temporary files", || {
        dir.path().join("db.1.tmp").exists()
    });
    let src = dir.path().join("other-source");
    fs::write(&src, b"x").unwrap();
    let second = run(BACKUP, &[&name, &src]);
    assert_eq!(second.status.code(), Some(1));
    let e = stderr(&second);
    assert!(
        e.contains("db.lock") && e.contains("another blockdiff run holds this backup's lock"),
        "{e}"
    );
    assert!(e.contains(&format!("pid {}", first.id())), "{e}");
    // It did not wait: it returned while the first still holds the lock
    // (blocked on the FIFO, which only this test can feed).
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run ended before the second returned"
    );
    // The first completes normally.
    drop(writer);
    let o = first.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        fs::read_to_string(dir.path().join("db.ver")).unwrap(),
        "1\n"
    );
}

#[test]
fn killed_backup_leaves_committed_generations_and_the_next_run_succeeds() {
    // kill -9 at every named step of a backup (FORMAT.md §6), both
    // formats: a run killed before `backup:rename-ver` has committed
    // nothing, one killed after it has committed; every committed
    // generation restores, and the next run cleans up and succeeds.
    for format in ["v2", "legacy"] {
        let dir = tempfile::tempdir().unwrap();
        let name = dir.path().join("db");
        let src = dir.path().join("disk.img");
        let v1 = noise(200_000, 5);
        fs::write(&src, &v1).unwrap();
        let o = run(BACKUP, &[&name, &src, &"--format", &format, &"-b", &"4k"]);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut committed = vec![v1];
        for (i, step) in STEPS.into_iter().enumerate() {
            let mut data = committed.last().unwrap().clone();
            let at = (i * 17_001) % data.len();
            let end = (at + 9_000).min(data.len());
            data[at..end].fill(i as u8 + 11);
            fs::write(&src, &data).unwrap();
            let mut cmd = Command::new(BACKUP);
            cmd.arg(&name).arg(&src);
            StoppedRun::start(cmd, step, dir.path()).kill();
            if step == "backup:sync-dir" {
                committed.push(data);
            }
            let ver = fs::read_to_string(dir.path().join("db.ver")).unwrap();
            assert_eq!(ver, format!("{}\n", committed.len()), "{format} {step}");
            let k = committed.len() as u64;
            assert_eq!(
                &restore_generation(&name, k, &dir.path().join("r")),
                committed.last().unwrap(),
                "{format} {step}"
            );
        }
        // A final run completes, cleaning what the killed runs left.
        let mut last = committed.last().unwrap().clone();
        last[..100].fill(99);
        fs::write(&src, &last).unwrap();
        let o = run(BACKUP, &[&name, &src]);
        assert!(o.status.success(), "{format}: {}", stderr(&o));
        committed.push(last);
        for (i, expected) in committed.iter().enumerate() {
            assert_eq!(
                &restore_generation(&name, i as u64 + 1, &dir.path().join("r")),
                expected,
                "{format}"
            );
        }
        let leftovers: Vec<_> = listing(dir.path())
            .into_iter()
            .filter(|n| n.ends_with(".tmp") || n.ends_with("partial"))
            .collect();
        assert!(leftovers.is_empty(), "{format}: {leftovers:?}");
    }
}

/// Every named step of a backup, in order.
const STEPS: [&str; 10] = [
    "backup:begun",
    "backup:sync-diff",
    "backup:sync-digest",
    "backup:write-meta",
    "backup:write-intent",
    "backup:rename-diff",
    "backup:rename-digest",
    "backup:rename-meta",
    "backup:rename-ver",
    "backup:sync-dir",
];
