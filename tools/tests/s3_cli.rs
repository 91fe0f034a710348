//! The tools against a real S3 server: Garage (scripts/garage-setup.sh
//! builds it), one node and a three-node cluster on loopback, started by
//! the tests themselves.

mod common;

use blockdiff_core::FOLD_STEPS;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{BACKUP, INFO, PRUNE, RESTORE, StoppedRun, noise, stderr, text};
use garage_harness::GarageCluster;

/// Runs a tool against `garage`: its endpoint as --endpoint, its keys in
/// the environment (never on the command line), a private digest cache.
fn s3_command(
    garage: &GarageCluster,
    bin: &str,
    cache: &Path,
    args: &[&dyn AsRef<OsStr>],
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args.iter().map(AsRef::as_ref))
        .arg("--endpoint")
        .arg(garage.endpoint())
        .arg("--cache-dir")
        .arg(cache)
        .env("AWS_ACCESS_KEY_ID", garage.access_key_id())
        .env("AWS_SECRET_ACCESS_KEY", garage.secret_access_key())
        .env("AWS_REGION", garage.region())
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL")
        .stdin(Stdio::null());
    cmd
}

fn s3_run(garage: &GarageCluster, bin: &str, cache: &Path, args: &[&dyn AsRef<OsStr>]) -> Output {
    s3_command(garage, bin, cache, args).output().unwrap()
}

fn url(garage: &GarageCluster, name: &str) -> String {
    format!("s3://{}/hosts/{name}", garage.bucket())
}

fn backup_ok(
    garage: &GarageCluster,
    cache: &Path,
    name: &str,
    source: &Path,
    extra: &[&str],
) -> String {
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"-q"];
    for a in extra {
        args.push(a);
    }
    let url = url(garage, name);
    args.push(&url);
    args.push(&source);
    let o = s3_run(garage, BACKUP, cache, &args);
    assert!(o.status.success(), "backup of {name}: {}", stderr(&o));
    text(&o.stdout)
}

fn restore_ok(garage: &GarageCluster, cache: &Path, name: &str, k: u64, out: &Path) -> Vec<u8> {
    restore_with(garage, cache, name, k, out, &[])
}

/// A restore of generation `k` of `name` to `out`, with `extra` options
/// (the key's); its bytes.
fn restore_with(
    garage: &GarageCluster,
    cache: &Path,
    name: &str,
    k: u64,
    out: &Path,
    extra: &[&str],
) -> Vec<u8> {
    let (url, k) = (url(garage, name), k.to_string());
    let mut args: Vec<&dyn AsRef<OsStr>> = vec![&"-q"];
    for e in extra {
        args.push(e);
    }
    args.extend([&out as &dyn AsRef<OsStr>, &"--from", &url, &"-g", &k]);
    let o = s3_run(garage, RESTORE, cache, &args);
    assert!(o.status.success(), "restore {name} {k}: {}", stderr(&o));
    fs::read(out).unwrap()
}

/// Changes about 1% of the 4 KiB blocks of `image`.
fn touch_blocks(image: &mut [u8], seed: u64) {
    let blocks = image.len() / 4096;
    for i in 0..blocks / 100 + 1 {
        let b = (seed as usize * 7919 + i * 104_729) % blocks;
        image[b * 4096..b * 4096 + 64].copy_from_slice(&noise(64, seed * 1000 + i as u64));
    }
}

#[test]
fn a_single_node_holds_full_incremental_legacy_and_period_chains_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    let mut image = noise(6 << 20, 11);
    // Some zero blocks, as a real disk has.
    image[1 << 20..2 << 20].fill(0);
    let mut images = Vec::new();
    for g in 1..=3u64 {
        if g > 1 {
            touch_blocks(&mut image, g);
        }
        fs::write(&source, &image).unwrap();
        backup_ok(&garage, &cache, "web", &source, &["-b", "4k"]);
        images.push(image.clone());
        // The legacy format, gzipped, as the original tool writes it.
        backup_ok(
            &garage,
            &cache,
            "old",
            &source,
            &["--format", "legacy", "-z", "-b", "4k"],
        );
    }
    for (i, want) in images.iter().enumerate() {
        let k = i as u64 + 1;
        for name in ["web", "old"] {
            let out = dir.path().join(format!("{name}-{k}.img"));
            assert!(
                restore_ok(&garage, &cache, name, k, &out) == *want,
                "{name} generation {k}"
            );
        }
    }
    // Verify, info.
    let o = s3_run(
        &garage,
        RESTORE,
        &cache,
        &[&"--verify-only", &"--from", &url(&garage, "web")],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("generation 3 of s3://"),
        "{}",
        stderr(&o)
    );
    let o = s3_run(&garage, INFO, &cache, &[&url(&garage, "web"), &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["current_generation"], 3);
    let gens = info["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 3);
    assert!(gens[1]["changed_blocks"].as_u64().unwrap() <= 20, "{info}");
    // --against a file.
    let o = s3_run(
        &garage,
        RESTORE,
        &cache,
        &[
            &"--verify-only",
            &"--from",
            &url(&garage, "web"),
            &"-g",
            &"2",
            &"--against",
            &source,
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("differs from generation 2"),
        "{}",
        stderr(&o)
    );
    // A chain per period.
    backup_ok(&garage, &cache, "monthly", &source, &["--chain", "monthly"]);
    let o = s3_run(&garage, INFO, &cache, &[&url(&garage, "monthly")]);
    assert!(!o.status.success(), "the base name itself holds no chain");

    // Prune: two older monthly chains (made by name), the current one
    // (--chain) and look-alikes; keep 2.
    backup_ok(&garage, &cache, "monthly-202601", &source, &[]);
    backup_ok(&garage, &cache, "monthly-202602", &source, &[]);
    backup_ok(&garage, &cache, "monthly-backup", &source, &[]);
    let o = s3_run(
        &garage,
        PRUNE,
        &cache,
        &[&url(&garage, "monthly"), &"--keep", &"2", &"--dry-run"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("would delete {}", url(&garage, "monthly-202601"))),
        "{out}"
    );
    assert_eq!(out.lines().count(), 3, "{out}");
    let o = s3_run(
        &garage,
        PRUNE,
        &cache,
        &[&url(&garage, "monthly"), &"--keep", &"2"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = text(&o.stdout);
    assert!(
        out.contains(&format!("deleted {}", url(&garage, "monthly-202601"))),
        "{out}"
    );
    let o = s3_run(&garage, INFO, &cache, &[&url(&garage, "monthly-202601")]);
    assert!(!o.status.success(), "a pruned chain is gone");
    let listed = garage
        .rclone()
        .args(["lsf", &format!("garage:{}/hosts", garage.bucket())])
        .output()
        .unwrap();
    assert!(listed.status.success(), "{}", stderr(&listed));
    let listed = text(&listed.stdout);
    assert!(!listed.contains("monthly-202601"), "{listed}");
    assert!(listed.contains("monthly-backup.1"), "{listed}");
    for name in ["monthly-202602", "monthly-backup"] {
        let out = dir.path().join(format!("{name}.img"));
        assert!(
            restore_ok(&garage, &cache, name, 1, &out) == image,
            "{name}"
        );
    }
}

#[test]
fn an_incremental_downloads_no_digest_and_a_cold_cache_fetches_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    let mut image = noise(8 << 20, 5);
    fs::write(&source, &image).unwrap();
    backup_ok(&garage, &cache, "db", &source, &[]);
    touch_blocks(&mut image, 2);
    fs::write(&source, &image).unwrap();
    let gets = garage.request_count("GetObject").unwrap();
    backup_ok(&garage, &cache, "db", &source, &[]);
    let warm = garage.request_count("GetObject").unwrap() - gets;
    // A cold cache (another backup host) downloads the digest once.
    fs::remove_dir_all(&cache).unwrap();
    touch_blocks(&mut image, 3);
    fs::write(&source, &image).unwrap();
    let gets = garage.request_count("GetObject").unwrap();
    backup_ok(&garage, &cache, "db", &source, &[]);
    let cold = garage.request_count("GetObject").unwrap() - gets;
    assert_eq!(cold, warm + 1, "warm {warm}, cold {cold}");
    // Only small objects with a warm cache: the lock, NAME.ver, NAME.fold
    // (absent), the metadata.
    assert!(warm <= 6, "warm {warm}");
    let out = dir.path().join("r.img");
    assert!(restore_ok(&garage, &cache, "db", 3, &out) == image);
}

/// The steps of a commit to an object store, in order.
const STEPS: [&str; 5] = [
    "backup:begun",
    "backup:upload-diff",
    "backup:upload-digest",
    "backup:write-meta",
    "backup:write-ver",
];

#[test]
fn kill_9_at_every_step_commits_nothing_and_the_next_run_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    let mut image = noise(3 << 20, 9);
    fs::write(&source, &image).unwrap();
    backup_ok(&garage, &cache, "db", &source, &[]);
    let first = image.clone();
    for (i, step) in STEPS.iter().enumerate() {
        touch_blocks(&mut image, 10 + i as u64);
        fs::write(&source, &image).unwrap();
        let cmd = s3_command(
            &garage,
            BACKUP,
            &cache,
            &[&"-q", &url(&garage, "db"), &source],
        );
        StoppedRun::start(cmd, step, dir.path()).kill();
        // Readers see generation 1 + i, exactly as committed.
        let out = dir.path().join(format!("r-{i}.img"));
        let k = i as u64 + 1;
        let restored = restore_ok(&garage, &cache, "db", k, &out);
        if k == 1 {
            assert!(restored == first, "{step}");
        }
        let o = s3_run(
            &garage,
            RESTORE,
            &cache,
            &[
                &out,
                &"--from",
                &url(&garage, "db"),
                &"-g",
                &(k + 1).to_string(),
            ],
        );
        assert!(!o.status.success(), "{step}: generation {} visible", k + 1);
        // The next run (the lock object is this host's and its run is
        // gone) removes the leftovers and commits.
        backup_ok(&garage, &cache, "db", &source, &[]);
        let out = dir.path().join(format!("r-{i}-next.img"));
        assert!(
            restore_ok(&garage, &cache, "db", k + 1, &out) == image,
            "{step}"
        );
    }
}

#[test]
fn folding_in_the_bucket_survives_kill_9_at_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    for (i, step) in FOLD_STEPS.iter().enumerate() {
        let name = format!("fold{i}");
        let mut image = noise(1 << 20, 40 + i as u64);
        let mut images = Vec::new();
        for g in 0..4u64 {
            touch_blocks(&mut image, 50 + g);
            fs::write(&source, &image).unwrap();
            backup_ok(&garage, &cache, &name, &source, &[]);
            images.push(image.clone());
        }
        // --keep-last 2 folds 1 and 2 into 3, the new base.
        let prune = |garage: &GarageCluster| {
            s3_command(
                garage,
                PRUNE,
                &cache,
                &[&url(garage, &name), &"--keep-last", &"2"],
            )
        };
        StoppedRun::start(prune(&garage), step, dir.path()).kill();
        for k in [3u64, 4] {
            let out = dir.path().join(format!("r-{i}-{k}.img"));
            assert!(
                restore_ok(&garage, &cache, &name, k, &out) == images[k as usize - 1],
                "{step}: generation {k} after the kill"
            );
        }
        // The next prune finishes or undoes the fold, then makes it.
        let o = prune(&garage).output().unwrap();
        assert!(o.status.success(), "{step}: {}", stderr(&o));
        for k in [3u64, 4] {
            let out = dir.path().join(format!("r-{i}-{k}-after.img"));
            assert!(
                restore_ok(&garage, &cache, &name, k, &out) == images[k as usize - 1],
                "{step}: generation {k} after the next prune"
            );
        }
        for gone in ["1", "2"] {
            let o = s3_run(
                &garage,
                RESTORE,
                &cache,
                &[
                    &dir.path().join("gone.img"),
                    &"--from",
                    &url(&garage, &name),
                    &"-g",
                    &gone,
                ],
            );
            assert!(!o.status.success(), "{step}: generation {gone} left");
        }
        let o = s3_run(&garage, INFO, &cache, &[&url(&garage, &name)]);
        assert!(o.status.success(), "{step}: {}", stderr(&o));
        let info = text(&o.stdout);
        assert!(info.contains("base"), "{step}: {info}");
        // The chain goes on.
        touch_blocks(&mut image, 99);
        fs::write(&source, &image).unwrap();
        backup_ok(&garage, &cache, &name, &source, &[]);
        let out = dir.path().join(format!("r-{i}-5.img"));
        assert!(
            restore_ok(&garage, &cache, &name, 5, &out) == image,
            "{step}"
        );
    }
}

#[test]
fn refusals_are_one_line_naming_the_bucket_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    fs::write(&source, noise(1 << 20, 3)).unwrap();
    // A wrong secret: refused, and the secret is not in the message.
    let mut cmd = s3_command(&garage, BACKUP, &cache, &[&url(&garage, "db"), &source]);
    cmd.env("AWS_SECRET_ACCESS_KEY", "0".repeat(64));
    let o = cmd.output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("s3://{}/hosts/db", garage.bucket())),
        "{err}"
    );
    assert!(
        !err.contains(&"0".repeat(64)) && !err.contains(garage.secret_access_key()),
        "{err}"
    );
    assert_eq!(
        err.trim_end()
            .lines()
            .filter(|l| l.contains("error"))
            .count(),
        1,
        "{err}"
    );
    // A missing bucket.
    let o = s3_run(
        &garage,
        BACKUP,
        &cache,
        &[&"s3://no-such-bucket/db", &source],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("s3://no-such-bucket/db"),
        "{}",
        stderr(&o)
    );
    // No credentials at all.
    let o = Command::new(BACKUP)
        .args([OsStr::new(&url(&garage, "db")), source.as_os_str()])
        .args(["--endpoint", garage.endpoint().as_str(), "--cache-dir"])
        .arg(&cache)
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("HOME", dir.path())
        .env_remove("AWS_SHARED_CREDENTIALS_FILE")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("AWS_ACCESS_KEY_ID"), "{}", stderr(&o));
    // Nothing was committed by any of them.
    let o = s3_run(&garage, INFO, &cache, &[&url(&garage, "db")]);
    assert!(!o.status.success());
}

/// A tmpfs mounted for a test, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        fs::create_dir_all(path).unwrap();
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mounting a tmpfs (this test needs root): {}",
            stderr(&o)
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_on_the_server_is_one_line_and_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Garage's data directory on a 3 MiB tmpfs (dropped after the server).
    let _full = Tmpfs::mount(&dir.path().join("garage/node0/data"), "3m");
    let garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    let small = noise(256 << 10, 5);
    fs::write(&source, &small).unwrap();
    backup_ok(&garage, &cache, "db", &source, &[]);
    // Incompressible, larger than the disk.
    fs::write(&source, noise(12 << 20, 6)).unwrap();
    // A server that stops answering (Garage may leave a part's request
    // unanswered once its disk is full) is given up on after --timeout.
    let o = s3_run(
        &garage,
        BACKUP,
        &cache,
        &[&url(&garage, "db"), &source, &"--timeout", &"3"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let errors: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains(&format!("s3://{}/hosts/db.2", garage.bucket())),
        "{err}"
    );
    assert!(!err.contains(garage.secret_access_key()), "{err}");
    // Generation 1 is still the chain, whole.
    let o = s3_run(&garage, INFO, &cache, &[&url(&garage, "db"), &"--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["current_generation"], 1, "{info}");
    let out = dir.path().join("r1.img");
    assert!(restore_ok(&garage, &cache, "db", 1, &out) == small);
}

#[test]
fn the_server_gone_in_the_middle_of_an_upload_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    let mut image = noise(4 << 20, 21);
    fs::write(&source, &image).unwrap();
    backup_ok(&garage, &cache, "db", &source, &[]);
    let first = image.clone();
    touch_blocks(&mut image, 4);
    image[..2 << 20].copy_from_slice(&noise(2 << 20, 77));
    fs::write(&source, &image).unwrap();
    let cmd = s3_command(&garage, BACKUP, &cache, &[&url(&garage, "db"), &source]);
    let run = StoppedRun::start(cmd, "backup:begun", dir.path());
    garage.kill(0).unwrap();
    let o = run.resume();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("s3://") && err.contains("/hosts/db"), "{err}");
    garage.restart(0).unwrap();
    let out = dir.path().join("r1.img");
    assert!(restore_ok(&garage, &cache, "db", 1, &out) == first);
    let o = s3_run(
        &garage,
        RESTORE,
        &cache,
        &[&out, &"--from", &url(&garage, "db"), &"-g", &"2"],
    );
    assert!(!o.status.success());
    backup_ok(&garage, &cache, "db", &source, &[]);
    let out = dir.path().join("r2.img");
    assert!(restore_ok(&garage, &cache, "db", 2, &out) == image);
}

#[test]
fn three_nodes_one_killed_mid_upload_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut garage = GarageCluster::start(&dir.path().join("garage"), 3).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    let mut image = noise(6 << 20, 31);
    fs::write(&source, &image).unwrap();
    backup_ok(&garage, &cache, "db", &source, &[]);
    let mut committed: Vec<Vec<u8>> = vec![image.clone()];
    touch_blocks(&mut image, 5);
    image[..3 << 20].copy_from_slice(&noise(3 << 20, 55));
    fs::write(&source, &image).unwrap();
    // Node 2 dies (SIGKILL) while the diff is being uploaded.
    let cmd = s3_command(&garage, BACKUP, &cache, &[&url(&garage, "db"), &source]);
    let run = StoppedRun::start(cmd, "backup:begun", dir.path());
    garage.kill(2).unwrap();
    let o = run.resume();
    let restore_all = |garage: &GarageCluster, committed: &[Vec<u8>], tag: &str| {
        for (i, want) in committed.iter().enumerate() {
            let out = dir.path().join(format!("{tag}-{i}.img"));
            assert!(
                restore_ok(garage, &cache, "db", i as u64 + 1, &out) == *want,
                "{tag} {}",
                i + 1
            );
        }
        let o = s3_run(
            garage,
            RESTORE,
            &cache,
            &[
                &dir.path().join("x.img"),
                &"--from",
                &url(garage, "db"),
                &"-g",
                &(committed.len() as u64 + 1).to_string(),
            ],
        );
        assert!(
            !o.status.success(),
            "{tag}: an uncommitted generation is visible"
        );
    };
    if o.status.success() {
        committed.push(image.clone());
    } else {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    }
    // With the node down, every committed generation restores.
    restore_all(&garage, &committed, "down");
    // With it back, the next backup succeeds and nothing is lost.
    garage.restart(2).unwrap();
    touch_blocks(&mut image, 6);
    fs::write(&source, &image).unwrap();
    backup_ok(&garage, &cache, "db", &source, &[]);
    committed.push(image.clone());
    restore_all(&garage, &committed, "back");
}

const KEYGEN: &str = env!("CARGO_BIN_EXE_blockdiff-key");

/// The bytes of object `hosts/NAME` in the bucket, through rclone (not
/// through blockdiff).
fn object_bytes(garage: &GarageCluster, name: &str) -> Vec<u8> {
    let o = garage
        .rclone()
        .args(["cat", &format!("garage:{}/hosts/{name}", garage.bucket())])
        .output()
        .unwrap();
    assert!(o.status.success(), "rclone cat {name}: {}", stderr(&o));
    o.stdout
}

#[test]
fn an_encrypted_chain_on_garage_round_trips_and_the_bucket_sees_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    let key = dir.path().join("chain.key");
    let o = Command::new(KEYGEN).arg("new").arg(&key).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let key_args = ["--key-file", key.to_str().unwrap()];
    // Incompressible blocks, each starting with a marker, so that a block
    // stored in clear is found in an object.
    let mut image = noise(6 << 20, 21);
    for (i, block) in image.chunks_mut(4096).enumerate() {
        let marker = format!("CLEARTEXT {i:06}");
        block[..marker.len()].copy_from_slice(marker.as_bytes());
    }
    let mut images = Vec::new();
    let mut gets = Vec::new();
    for g in 1..=3u64 {
        if g > 1 {
            touch_blocks(&mut image, g);
        }
        fs::write(&source, &image).unwrap();
        let before = garage.request_count("GetObject").unwrap();
        backup_ok(
            &garage,
            &cache,
            "vault",
            &source,
            &["--encrypt", key_args[0], key_args[1], "-b", "4k"],
        );
        gets.push(garage.request_count("GetObject").unwrap() - before);
        images.push(image.clone());
    }
    // An encrypted incremental downloads no more than a plain one: the
    // small objects, never the digest (the cache holds it, sealed).
    assert!(gets[1] <= 6 && gets[2] <= 6, "GETs per backup: {gets:?}");

    for (i, want) in images.iter().enumerate() {
        let k = i as u64 + 1;
        let out = dir.path().join(format!("vault-{k}.img"));
        let got = restore_with(&garage, &cache, "vault", k, &out, &key_args);
        assert!(got == *want, "generation {k}");
    }
    let o = s3_run(
        &garage,
        RESTORE,
        &cache,
        &[
            &key_args[0],
            &key_args[1],
            &"--verify-only",
            &"--from",
            &url(&garage, "vault"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = s3_run(
        &garage,
        INFO,
        &cache,
        &[
            &key_args[0],
            &key_args[1],
            &url(&garage, "vault"),
            &"--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["current_generation"], 3);

    // What the bucket holds: sealed objects only, no block in clear.
    let listed = garage
        .rclone()
        .args(["lsf", &format!("garage:{}/hosts", garage.bucket())])
        .output()
        .unwrap();
    let listed = text(&listed.stdout);
    let mut sealed = 0;
    for name in listed.lines().filter(|n| !n.ends_with(".ver")) {
        let bytes = object_bytes(&garage, name);
        assert!(
            bytes.starts_with(b"\x89BDE\r\n\x1a\n"),
            "{name} is not sealed"
        );
        assert!(
            !bytes.windows(10).any(|w| w == b"CLEARTEXT "),
            "{name} holds a block in clear"
        );
        sealed += 1;
    }
    assert_eq!(sealed, 9, "{listed}");

    // Without the key, with another key, from another host (cold cache):
    // one line, exit 1, nothing written.
    let other = dir.path().join("other.key");
    let o = Command::new(KEYGEN)
        .arg("new")
        .arg(&other)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cold = dir.path().join("cold-cache");
    let out = dir.path().join("refused.img");
    for (args, expect) in [
        (vec![], "key (--key-file"),
        (
            vec!["--key-file", other.to_str().unwrap()],
            "wrong key for chain",
        ),
    ] {
        let mut restore: Vec<&dyn AsRef<OsStr>> = vec![];
        for a in &args {
            restore.push(a);
        }
        let from = url(&garage, "vault");
        restore.extend([&"--from" as &dyn AsRef<OsStr>, &from, &out]);
        let o = s3_run(&garage, RESTORE, &cold, &restore);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(expect), "{}", stderr(&o));
        assert_eq!(stderr(&o).lines().count(), 1, "{}", stderr(&o));
        assert!(!out.exists());
        if !args.is_empty() {
            let mut backup: Vec<&dyn AsRef<OsStr>> = vec![&"-q", &"--encrypt"];
            for a in &args {
                backup.push(a);
            }
            backup.extend([&from as &dyn AsRef<OsStr>, &source]);
            let o = s3_run(&garage, BACKUP, &cold, &backup);
            assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
            assert!(stderr(&o).contains(expect), "{}", stderr(&o));
        }
    }
    let o = s3_run(&garage, INFO, &cache, &[&url(&garage, "vault"), &"--json"]);
    assert!(!o.status.success());
    let o = s3_run(
        &garage,
        INFO,
        &cache,
        &[
            &key_args[0],
            &key_args[1],
            &url(&garage, "vault"),
            &"--json",
        ],
    );
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(info["current_generation"], 3, "a refused run committed");

    // --chain monthly: the period's chain is encrypted too.
    backup_ok(
        &garage,
        &cache,
        "monthly",
        &source,
        &["--encrypt", key_args[0], key_args[1], "--chain", "monthly"],
    );
    let listed = garage
        .rclone()
        .args(["lsf", &format!("garage:{}/hosts", garage.bucket())])
        .output()
        .unwrap();
    let listed = text(&listed.stdout);
    let period = listed
        .lines()
        .find(|n| n.starts_with("monthly-") && n.ends_with(".1"))
        .unwrap_or_else(|| panic!("{listed}"))
        .trim_end_matches(".1")
        .to_owned();
    assert!(object_bytes(&garage, &format!("{period}.1")).starts_with(b"\x89BDE\r\n\x1a\n"));
    let out = dir.path().join("monthly.img");
    let generation = 1;
    assert!(restore_with(&garage, &cache, &period, generation, &out, &key_args) == image);
}

const NBD: &str = env!("CARGO_BIN_EXE_blockdiff-nbd");
const MOUNT: &str = env!("CARGO_BIN_EXE_blockdiff-mount");
const UMOUNT: &str = env!("CARGO_BIN_EXE_blockdiff-umount");

#[test]
fn a_generation_in_the_bucket_is_served_over_nbd_and_mounted_with_ranged_gets() {
    let dir = tempfile::tempdir().unwrap();
    let garage = GarageCluster::start_single(&dir.path().join("garage")).unwrap();
    let cache = dir.path().join("cache");
    let source = dir.path().join("disk.img");
    let mut image = noise(4 << 20, 31);
    let mut images = Vec::new();
    for g in 1..=2u64 {
        if g > 1 {
            touch_blocks(&mut image, g);
        }
        fs::write(&source, &image).unwrap();
        backup_ok(&garage, &cache, "vm", &source, &["-b", "4k"]);
        images.push(image.clone());
    }
    // NBD: qemu-img reads generation 1 through nbdkit and the plugin.
    let out = dir.path().join("nbd.img");
    let socket = dir.path().join("nbd.sock");
    let script = format!("qemu-img convert -f raw \"$uri\" {}", out.display());
    let o = s3_run(
        &garage,
        NBD,
        &cache,
        &[
            &"-g",
            &"1",
            &"--socket",
            &socket,
            &"--run",
            &script,
            &url(&garage, "vm"),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(fs::read(&out).unwrap() == images[0]);

    // FUSE: the image of generation 2.
    let mnt = dir.path().join("mnt");
    let state = dir.path().join("state");
    fs::create_dir_all(&mnt).unwrap();
    let o = s3_run(
        &garage,
        MOUNT,
        &cache,
        &[&"--state-dir", &state, &url(&garage, "vm"), &mnt],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got = fs::read(mnt.join("image"));
    let o = Command::new(UMOUNT)
        .arg("--state-dir")
        .arg(&state)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(got.unwrap() == images[1]);
}
