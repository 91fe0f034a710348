//! `blockdiff-backup --quiesce` around a plain file: hooks run in order,
//! the freeze window is recorded in the generation's metadata, and a
//! failing hook or an exceeded freeze window commits nothing.

mod common;

use std::ffi::OsStr;
use std::fs;
use std::process::Output;

use common::{BACKUP, run, stderr};

fn backup(args: &[String]) -> Output {
    let args: Vec<&dyn AsRef<OsStr>> = args.iter().map(|a| a as _).collect();
    run(BACKUP, &args)
}

#[test]
fn hooks_wrap_the_whole_dump_of_a_plain_file_and_the_window_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    let log = dir.path().join("hooks.log");
    fs::write(&src, vec![3u8; 200_000]).unwrap();
    let hook = |stage: &str| format!("hook:{stage}=echo {stage} >> '{}'", log.display());
    let args: Vec<String> = vec![
        name.display().to_string(),
        src.display().to_string(),
        "--quiesce".into(),
        hook("post-thaw"),
        "--quiesce".into(),
        hook("pre-freeze"),
    ];
    let o = backup(&args);
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("no snapshot: "), "{err}");
    assert_eq!(fs::read_to_string(&log).unwrap(), "pre-freeze\npost-thaw\n");
    let meta = fs::read_to_string(dir.path().join("db.1.meta.json")).unwrap();
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    let window: f64 = meta["freeze_window_seconds"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(window >= 0.0);
    assert_eq!(meta["generation"], "1");
    assert_eq!(meta["source"], src.display().to_string());
}

#[test]
fn a_failing_hook_or_an_exceeded_window_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    fs::write(&src, vec![3u8; 200_000]).unwrap();
    let base = vec![name.display().to_string(), src.display().to_string()];

    let mut failing = base.clone();
    failing.extend(["--quiesce".into(), "hook:pre-freeze=exit 7".into()]);
    let o = backup(&failing);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("exit 7") || err.contains("status 7"), "{err}");
    assert!(!dir.path().join("db.ver").exists());

    let mut slow = base.clone();
    slow.extend([
        "--quiesce".into(),
        "hook:post-freeze=sleep 2".into(),
        "--freeze-limit".into(),
        "0.5".into(),
    ]);
    let o = backup(&slow);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("freeze window"), "{err}");
    assert!(!dir.path().join("db.ver").exists());

    let mut bad = base;
    bad.extend(["--quiesce".into(), "mysql:password=x".into()]);
    let o = backup(&bad);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("password"), "{err}");
}
