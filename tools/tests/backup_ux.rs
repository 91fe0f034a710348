//! `blockdiff-backup`'s operator flags as a user runs them: `--log FILE`,
//! `--json`, the progress bar (none without a terminal; drawn on a pty),
//! and the command line of `--each`.

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use common::{BACKUP, backup_on_a_pty, noise, run, text};

fn backup(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    run(BACKUP, args)
}

/// `blockdiff-backup: YYYY-MM-DD HH:MM:SS ` at the start of `line`.
fn is_timestamped(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("blockdiff-backup: ") else {
        return false;
    };
    let b = rest.as_bytes();
    b.len() > 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b' '
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b' '
        && rest[..4].bytes().all(|c| c.is_ascii_digit())
}

#[test]
fn log_file_gets_every_line_and_the_final_error() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let log = dir.path().join("backup.log");
    fs::write(&src, noise(100_000, 1)).unwrap();

    let o = backup(&[&name, &src, &"--log", &log]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let first = fs::read_to_string(&log).unwrap();
    assert!(first.lines().all(is_timestamped), "{first}");
    assert!(
        first
            .lines()
            .any(|l| l.ends_with(" backup completed successfully")),
        "{first}"
    );
    assert!(first.contains(" generation 1 of "), "{first}");
    // The same lines as on stderr.
    assert_eq!(text(&o.stderr), first);

    // A failing run appends its error line; stderr shows it once.
    let missing = dir.path().join("missing.img");
    let o = backup(&[&name, &missing, &"--log", &log]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = text(&o.stderr);
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    let all = fs::read_to_string(&log).unwrap();
    assert!(all.starts_with(&first), "the log file was not appended to");
    let added: Vec<&str> = all[first.len()..].lines().collect();
    let error = added
        .iter()
        .find(|l| l.contains(" error: backup of "))
        .unwrap_or_else(|| panic!("no error line in {added:?}"));
    assert!(is_timestamped(error), "{error}");
    assert!(error.contains("missing.img"), "{error}");
    assert!(
        stderr.contains(&error[error.find("error: ").unwrap()..]),
        "{stderr}"
    );
}

#[test]
fn quiet_still_logs_to_the_file_but_prints_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let log = dir.path().join("backup.log");
    fs::write(&src, noise(50_000, 2)).unwrap();
    let o = backup(&[&name, &src, &"-q", &"--log", &log]);
    assert!(o.status.success());
    assert_eq!(text(&o.stderr), "");
    assert_eq!(text(&o.stdout), "");
    let logged = fs::read_to_string(&log).unwrap();
    assert!(logged.contains(" generation 1 of "), "{logged}");
    assert!(
        logged.contains(" backup completed successfully"),
        "{logged}"
    );
}

#[test]
fn a_log_file_that_cannot_be_opened_fails_before_anything_happens() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(10_000, 3)).unwrap();
    let log = dir.path().join("no-such-dir/backup.log");
    let o = backup(&[&name, &src, &"--log", &log]);
    assert_eq!(o.status.code(), Some(1));
    let stderr = text(&o.stderr);
    assert!(
        stderr.contains(&format!("cannot open log file {}", log.display())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!dir.path().join("db.ver").exists());
    assert!(!dir.path().join("db.1").exists());
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: stdout is {:?}", text(&o.stdout)))
}

#[test]
fn json_summary_describes_the_generation() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let block = 16384;
    let mut data = noise(40 * block, 4);
    fs::write(&src, &data).unwrap();

    let o = backup(&[&name, &src, &"--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["ok"], true);
    assert_eq!(v["generation"], 1);
    assert_eq!(v["bytes_read"], data.len() as u64);
    assert_eq!(v["blocks"], 40);
    assert_eq!(v["blocks_changed"], 40);
    assert_eq!(v["name"], name.to_str().unwrap());
    assert_eq!(v["source"], src.to_str().unwrap());
    assert_eq!(v["hash"], "blake3");
    assert_eq!(
        v["bytes_written"],
        fs::metadata(dir.path().join("db.1")).unwrap().len()
    );
    assert_eq!(v["freeze_window_seconds"], serde_json::Value::Null);
    assert_eq!(v["snapshot_peak_fill_percent"], serde_json::Value::Null);

    // One byte changed in one block.
    data[17 * block + 5] ^= 0xff;
    fs::write(&src, &data).unwrap();
    let o = backup(&[&name, &src, &"--json", &"-q"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v = json(&o);
    assert_eq!(v["generation"], 2);
    assert_eq!(v["bytes_read"], data.len() as u64);
    assert_eq!(v["blocks_changed"], 1);
    assert_eq!(v["bytes_changed"], block as u64);
    assert_eq!(v["zero_blocks"], 0);
    let diff = fs::metadata(dir.path().join("db.2")).unwrap().len();
    assert_eq!(v["bytes_written"], diff);
    let ratio = v["compression_ratio"].as_f64().unwrap();
    assert!((ratio - block as f64 / diff as f64).abs() < 1e-9, "{ratio}");
    for key in ["started", "finished", "format"] {
        assert!(v[key].is_string(), "{key}: {v}");
    }
    assert!(v["duration_seconds"].as_f64().unwrap() >= 0.0);

    // A failed run: ok false, the error, and exit 1.
    let o = backup(&[&name, &dir.path().join("missing.img"), &"--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("missing.img"), "{v}");
    assert_eq!(v["generation"], serde_json::Value::Null);
    assert_eq!(
        fs::read_to_string(dir.path().join("db.ver")).unwrap(),
        "2\n"
    );
}

#[test]
fn no_bar_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(4 << 20, 5)).unwrap();
    for extra in [&[][..], &["--no-progress"]] {
        let o = Command::new(BACKUP)
            .arg(&name)
            .arg(&src)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        let stderr = text(&o.stderr);
        assert!(!stderr.contains(['\r', '\x1b']), "{stderr:?}");
        assert!(
            !stderr.contains("ETA") && !stderr.contains("[="),
            "{stderr}"
        );
        assert!(stderr.lines().all(is_timestamped), "{stderr}");
        assert!(stderr.contains("backup completed successfully"));
    }
}

#[test]
fn on_a_terminal_the_bar_is_drawn_unless_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(8 << 20, 6)).unwrap();
    let q = |p: &Path| format!("'{}'", p.display());
    let Some(o) = backup_on_a_pty(80, &format!("{} {}", q(&name), q(&src))) else {
        eprintln!("skipped: no `script` (util-linux) here");
        return;
    };
    let out = text(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("disk.img ["), "{out:?}");
    assert!(out.contains("/8.00 MiB") && out.contains("ETA"), "{out:?}");
    assert!(out.contains("backup completed successfully"), "{out:?}");
    // The bar is gone before the last lines: they are whole.
    let last = out.rsplit("\r\n").find(|l| !l.is_empty()).unwrap();
    assert!(
        last.starts_with("blockdiff-backup: ") && last.ends_with("backup completed successfully"),
        "{last:?}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("db.ver")).unwrap(),
        "1\n"
    );

    for off in ["--no-progress", "--quiet"] {
        let o = backup_on_a_pty(80, &format!("{} {} {off}", q(&name), q(&src))).unwrap();
        let out = text(&o.stdout);
        assert!(o.status.success(), "{off}: {out}");
        assert!(
            !out.contains("ETA") && !out.contains('\x1b'),
            "{off}: {out:?}"
        );
    }
}

#[test]
fn each_is_a_source_of_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("vms");
    let src = dir.path().join("disk.img");
    fs::write(&src, b"x").unwrap();
    for bad in [
        &[
            &"--each" as &dyn AsRef<std::ffi::OsStr>,
            &"vg0/domu-*",
            &src,
        ][..],
        &[&"--each", &"vg0/domu-*", &"--lvm", &"vg0/db"],
        &[&"--each", &"vg0"],
        &[&"--each", &"vg*/x"],
        // The snapshot options still need a snapshot.
        &[&src, &"--snapshot-size", &"50%"],
        // A list is a source of its own too, and --jobs needs several.
        &[&"--sources", &src, &src],
        &[&"--sources", &src, &"--each", &"vg0/x"],
        &[&"--sources", &src, &"--lvm", &"vg0/db"],
        &[&src, &"--jobs", &"2"],
        // A list that is not one (a line without a source).
        &[&"--sources", &src],
    ] {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&name];
        args.extend_from_slice(bad);
        let o = backup(&args);
        assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    }
    assert!(!name.exists());
    let help = text(&backup(&[&"--help"]).stdout);
    for flag in [
        "--each",
        "--sources",
        "--jobs",
        "--log",
        "--json",
        "--no-progress",
    ] {
        assert!(help.contains(flag), "{flag} not in --help");
    }
}
