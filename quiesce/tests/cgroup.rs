//! The cgroup v2 freezer on a real cgroup: a process that keeps counting
//! makes no progress while frozen and resumes after the thaw. The test
//! cgroup is created below the cgroup2 mount found in /proc/mounts and
//! removed at the end. Needs root and a cgroup2 mount; skipped with a
//! message without them.

mod common;

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::thread;
use std::time::Duration;

use quiesce::{QuiesceStack, find_cgroup2_mount};

struct TestCgroup {
    path: PathBuf,
    counter: Child,
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::write(self.path.join("cgroup.freeze"), "0");
        let _ = fs::write(self.path.join("cgroup.kill"), "1");
        let _ = self.counter.kill();
        let _ = self.counter.wait();
        for _ in 0..100 {
            if fs::remove_dir(&self.path).is_ok() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

fn read_count(file: &std::path::Path) -> u64 {
    // The writer replaces the file by a rename, so it always holds a whole
    // number once it exists (even when frozen mid-write); retry only until
    // it first exists.
    for _ in 0..50 {
        if let Ok(text) = fs::read_to_string(file)
            && let Ok(count) = text.trim().parse()
        {
            return count;
        }
        thread::sleep(Duration::from_millis(5));
    }
    panic!("no count in {}", file.display());
}

/// Waits until the counter in `file` is above `floor` and returns it;
/// fails after 60 s, naming `what` was awaited.
fn wait_for_count_above(file: &std::path::Path, floor: u64, what: &str) -> u64 {
    let start = std::time::Instant::now();
    loop {
        if let Ok(text) = fs::read_to_string(file)
            && let Ok(count) = text.trim().parse::<u64>()
            && count > floor
        {
            return count;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what} (count still {floor} or unreadable)"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_frozen_cgroup_makes_no_progress_and_resumes_after_thaw() {
    if !common::is_root() {
        eprintln!("cgroup test skipped: needs root to create a cgroup");
        return;
    }
    let mount = match find_cgroup2_mount() {
        Ok(mount) => mount,
        Err(error) => {
            eprintln!("cgroup test skipped: {error}");
            return;
        }
    };
    let name = format!("blockdiff-quiesce-test-{}", std::process::id());
    let path = mount.join(&name);
    fs::create_dir(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let count_file = dir.path().join("count");
    let counter = Command::new("sh")
        .arg("-c")
        .arg(r#"i=0; while :; do i=$((i+1)); echo $i > "$0.new"; mv -f "$0.new" "$0"; sleep 0.01; done"#)
        .arg(&count_file)
        .spawn()
        .unwrap();
    let cgroup = TestCgroup { path, counter };
    fs::write(
        cgroup.path.join("cgroup.procs"),
        cgroup.counter.id().to_string(),
    )
    .unwrap();
    // The counter runs before the freeze: wait until it has advanced
    // (a condition, not a guess at how fast a loaded machine runs it).
    let early = wait_for_count_above(&count_file, 0, "the counter to start");
    let before = wait_for_count_above(&count_file, early, "the counter to run before the freeze");

    // Relative to the mount: no path assumed.
    let (log, _lines) = common::collecting_logger();
    let mut stack = QuiesceStack::from_spec_strings(&[format!("cgroup:{name}")], log).unwrap();
    let frozen = stack
        .run_frozen(|_| {
            let events = fs::read_to_string(cgroup.path.join("cgroup.events")).unwrap();
            let first = read_count(&count_file);
            thread::sleep(Duration::from_millis(500));
            let second = read_count(&count_file);
            (events, first, second)
        })
        .unwrap();
    let (events, first, second) = frozen.value;
    assert!(events.contains("frozen 1"), "{events}");
    assert!(first >= before);
    assert_eq!(first, second, "the counter advanced while frozen");

    wait_for_count_above(&count_file, second, "the counter to resume after the thaw");
    let events = fs::read_to_string(cgroup.path.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 0"), "{events}");
}
