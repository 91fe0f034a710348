//! `blockdiff-restore --threads N`: the same image with any count, and a
//! count out of range is a usage error.

mod common;

use std::fs;

use common::{BACKUP, RESTORE, noise, run, stderr};

#[test]
fn every_thread_count_restores_the_same_image() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk.img");
    let mut data = noise(600_000, 7);
    data[100_000..200_000].fill(0);
    for g in 1..=3u8 {
        data[usize::from(g) * 90_000..usize::from(g) * 90_000 + 150_000].fill(g);
        fs::write(&src, &data).unwrap();
        for format in ["v2", "legacy"] {
            let o = run(
                BACKUP,
                &[
                    &dir.path().join(format!("{format}-db")),
                    &src,
                    &"--format",
                    &format,
                    &"--block-size",
                    &"4096",
                    &"-q",
                ],
            );
            assert!(o.status.success(), "{format}: {}", stderr(&o));
        }
    }
    for format in ["v2", "legacy"] {
        let name = dir.path().join(format!("{format}-db"));
        for threads in ["1", "2", "5"] {
            let target = dir.path().join(format!("{format}-{threads}"));
            let o = run(
                RESTORE,
                &[&target, &"--from", &name, &"--threads", &threads, &"-q"],
            );
            assert!(o.status.success(), "{format} {threads}: {}", stderr(&o));
            assert!(fs::read(&target).unwrap() == data, "{format} {threads}");
            let o = run(
                RESTORE,
                &[&"--verify-only", &"--from", &name, &"--threads", &threads],
            );
            assert!(o.status.success(), "{format} {threads}: {}", stderr(&o));
            let o = run(
                RESTORE,
                &[
                    &"--verify-only",
                    &"--from",
                    &name,
                    &"--against",
                    &src,
                    &"--threads",
                    &threads,
                ],
            );
            assert!(o.status.success(), "{format} {threads}: {}", stderr(&o));
        }
    }
}

#[test]
fn an_absurd_thread_count_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("db");
    let src = dir.path().join("disk.img");
    fs::write(&src, noise(10_000, 4)).unwrap();
    let o = run(BACKUP, &[&name, &src, &"-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let target = dir.path().join("restored");
    let o = run(
        RESTORE,
        &[&target, &"--from", &name, &"--threads", &"100000"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--threads 100000 is too many"),
        "{}",
        stderr(&o)
    );
    assert!(!target.exists());
    // Applying one stream runs on one thread: --threads needs --from.
    let o = run(RESTORE, &[&target, &"--threads", &"2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!target.exists());
}
