//! One suite for every `ObjectStorage`: a local directory, OpenDAL's
//! in-memory service and, when its settings are in the environment, a real
//! S3 endpoint (Garage in CI):
//!
//! - `BLOCKDIFF_TEST_S3_ENDPOINT` (`http://127.0.0.1:3900`),
//! - `BLOCKDIFF_TEST_S3_BUCKET` (an existing bucket; each run writes under
//!   its own prefix and removes what it wrote),
//! - `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, and `AWS_REGION` unless
//!   the region is `us-east-1` (Garage's default is `garage`).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blockdiff_storage::{
    LocalDirStorage, ObjectEntry, ObjectStorage, OpenDalStorage, S3Config, StorageErrorKind,
};

const MIB: usize = 1 << 20;

/// Deterministic bytes that differ at every offset of interest.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

fn keys(list: &[ObjectEntry]) -> Vec<&str> {
    list.iter().map(|e| e.key.as_str()).collect()
}

fn sizes(list: &[ObjectEntry]) -> Vec<(String, u64)> {
    list.iter().map(|e| (e.key.clone(), e.size)).collect()
}

fn read_all(s: &dyn ObjectStorage, key: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    s.reader(key)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap_or_else(|e| panic!("{key}: {e}"));
    bytes
}

/// The suite, run on an empty storage.
fn conformance(s: &dyn ObjectStorage) {
    writer_then_finish(s);
    dropped_and_aborted_writers_leave_nothing(s);
    large_object_in_odd_pieces(s);
    read_small_limits(s);
    put_replaces(s);
    list_by_prefix(s);
    delete_and_stat(s);
    keys_are_plain_names(s);
    // Everything the suite wrote was removed as it went.
    assert_eq!(keys(&s.list("").unwrap()), Vec::<&str>::new());
}

fn writer_then_finish(s: &dyn ObjectStorage) {
    let mut w = s.writer("w.1").unwrap();
    w.write_all(b"hello ").unwrap();
    w.write_all(b"world").unwrap();
    assert_eq!(s.stat("w.1").unwrap(), None, "visible before finish");
    assert_eq!(w.finish().unwrap(), 11);
    assert_eq!(s.stat("w.1").unwrap(), Some(11));
    assert_eq!(s.read_small("w.1", 11).unwrap().unwrap(), b"hello world");
    assert_eq!(read_all(s, "w.1"), b"hello world");
    assert_eq!(sizes(&s.list("w.").unwrap()), [("w.1".to_owned(), 11)]);

    // An empty object.
    let w = s.writer("w.empty").unwrap();
    assert_eq!(w.finish().unwrap(), 0);
    assert_eq!(s.stat("w.empty").unwrap(), Some(0));
    assert_eq!(s.read_small("w.empty", 0).unwrap().unwrap(), b"");
    assert_eq!(read_all(s, "w.empty"), b"");
    s.read_range("w.empty", 0, &mut []).unwrap();

    // A writer replaces an object whole.
    let mut w = s.writer("w.1").unwrap();
    w.write_all(b"new").unwrap();
    assert_eq!(s.read_small("w.1", 100).unwrap().unwrap(), b"hello world");
    w.finish().unwrap();
    assert_eq!(s.read_small("w.1", 100).unwrap().unwrap(), b"new");

    s.delete("w.1").unwrap();
    s.delete("w.empty").unwrap();
}

fn dropped_and_aborted_writers_leave_nothing(s: &dyn ObjectStorage) {
    let mut w = s.writer("gone.dropped").unwrap();
    w.write_all(&pattern(MIB + 5, 1)).unwrap();
    drop(w);
    let mut w = s.writer("gone.aborted").unwrap();
    w.write_all(b"some bytes").unwrap();
    w.abort().unwrap();
    assert_eq!(s.stat("gone.dropped").unwrap(), None);
    assert_eq!(s.stat("gone.aborted").unwrap(), None);
    assert!(s.read_small("gone.aborted", 100).unwrap().is_none());
    assert_eq!(keys(&s.list("gone").unwrap()), Vec::<&str>::new());

    // Aborting leaves an existing object as it was.
    s.put("gone.kept", b"kept").unwrap();
    let mut w = s.writer("gone.kept").unwrap();
    w.write_all(b"replacement").unwrap();
    w.abort().unwrap();
    let w = s.writer("gone.kept").unwrap();
    drop(w);
    assert_eq!(s.read_small("gone.kept", 100).unwrap().unwrap(), b"kept");
    s.delete("gone.kept").unwrap();
}

fn large_object_in_odd_pieces(s: &dyn ObjectStorage) {
    let size = 20 * MIB + 12_345;
    let data = pattern(size, 2);
    let pieces = [7, MIB + 3, 4093, 3 * MIB + 1, 1, 8 * MIB - 1, 65_537];
    let mut w = s.writer("big.1").unwrap();
    let mut at = 0;
    for piece in pieces.iter().cycle() {
        if at == size {
            break;
        }
        let end = (at + piece).min(size);
        w.write_all(&data[at..end]).unwrap();
        at = end;
    }
    // In progress: neither listed nor visible.
    assert_eq!(keys(&s.list("big").unwrap()), Vec::<&str>::new());
    assert_eq!(s.stat("big.1").unwrap(), None);
    assert_eq!(w.finish().unwrap(), size as u64);

    assert_eq!(s.stat("big.1").unwrap(), Some(size as u64));
    assert_eq!(
        sizes(&s.list("big").unwrap()),
        [("big.1".to_owned(), size as u64)]
    );
    let back = read_all(s, "big.1");
    assert_eq!(back.len(), size);
    assert!(back == data, "the bytes read back differ");

    // Ranges across the write parts (8 MiB) and the read chunks (4 MiB).
    for (offset, len) in [
        (0, 1),
        (0, 4096),
        (4 * MIB - 3, 6),
        (8 * MIB - 5, 10),
        (8 * MIB, 1),
        (16 * MIB - 1, 2),
        (12 * MIB - 100, 5 * MIB),
        (size - 7, 7),
        (size - 1, 1),
    ] {
        let mut buf = vec![0u8; len];
        s.read_range("big.1", offset as u64, &mut buf)
            .unwrap_or_else(|e| panic!("{offset}+{len}: {e}"));
        assert!(buf == data[offset..offset + len], "range {offset}+{len}");
    }

    // Past the end: an error, whether the range starts inside or beyond.
    for (offset, len) in [(size - 3, 10), (size, 1), (size + 10, 1)] {
        let mut buf = vec![0u8; len];
        let e = s
            .read_range("big.1", offset as u64, &mut buf)
            .expect_err("a read past the end");
        assert_ne!(e.kind, StorageErrorKind::NotFound, "{e}");
    }
    // A missing object.
    let e = s.read_range("big.missing", 0, &mut [0u8; 4]).unwrap_err();
    assert_eq!(e.kind, StorageErrorKind::NotFound, "{e}");
    let e = s
        .reader("big.missing")
        .err()
        .expect("no reader of a missing object");
    assert_eq!(e.kind, StorageErrorKind::NotFound, "{e}");

    s.delete("big.1").unwrap();
}

fn read_small_limits(s: &dyn ObjectStorage) {
    s.put("small.1", b"0123456789A").unwrap();
    let e = s.read_small("small.1", 10).unwrap_err();
    assert_eq!(e.kind, StorageErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("small.1"), "{e}");
    assert_eq!(
        s.read_small("small.1", 11).unwrap().unwrap(),
        b"0123456789A"
    );
    assert_eq!(
        s.read_small("small.1", u64::MAX).unwrap().unwrap(),
        b"0123456789A"
    );
    assert_eq!(s.read_small("small.missing", 10).unwrap(), None);
    s.delete("small.1").unwrap();
}

fn put_replaces(s: &dyn ObjectStorage) {
    s.put("put.1", b"first version").unwrap();
    assert_eq!(s.stat("put.1").unwrap(), Some(13));
    s.put("put.1", b"second").unwrap();
    assert_eq!(s.stat("put.1").unwrap(), Some(6));
    assert_eq!(s.read_small("put.1", 100).unwrap().unwrap(), b"second");
    let mut buf = [0u8; 3];
    s.read_range("put.1", 3, &mut buf).unwrap();
    assert_eq!(&buf, b"ond");
    s.put("put.1", b"").unwrap();
    assert_eq!(s.read_small("put.1", 0).unwrap().unwrap(), b"");
    s.delete("put.1").unwrap();
}

fn list_by_prefix(s: &dyn ObjectStorage) {
    s.put("lst.b", b"bb").unwrap();
    s.put("lst.a", b"a").unwrap();
    s.put("lst.c.digest", b"ccc").unwrap();
    s.put("lstx", b"xxxx").unwrap();
    s.put("other", b"").unwrap();
    let mut in_progress = s.writer("lst.d").unwrap();
    in_progress.write_all(b"not yet").unwrap();

    let entry = |key: &str, size| (key.to_owned(), size);
    let listed = s.list("lst.").unwrap();
    // Every store that keeps backups says when an object was written (the
    // age of a chain is that of its `.ver`); OpenDAL's in-memory service,
    // for tests only, does not.
    let now = SystemTime::now();
    let keeps_times = !s.describe("").starts_with("memory:");
    for e in listed.iter().filter(|_| keeps_times) {
        let modified = e
            .modified
            .unwrap_or_else(|| panic!("{}: no modification time", e.key));
        let age = now.duration_since(modified).unwrap_or_default();
        assert!(
            age < Duration::from_secs(3600),
            "{}: modified {age:?} ago",
            e.key
        );
    }
    assert_eq!(
        sizes(&listed),
        [
            entry("lst.a", 1),
            entry("lst.b", 2),
            entry("lst.c.digest", 3)
        ]
    );
    assert_eq!(
        keys(&s.list("lst").unwrap()),
        ["lst.a", "lst.b", "lst.c.digest", "lstx"]
    );
    assert_eq!(
        keys(&s.list("").unwrap()),
        ["lst.a", "lst.b", "lst.c.digest", "lstx", "other"]
    );
    assert_eq!(keys(&s.list("lst.b").unwrap()), ["lst.b"]);
    assert_eq!(keys(&s.list("nothing").unwrap()), Vec::<&str>::new());
    assert_eq!(keys(&s.list("lst/").unwrap()), Vec::<&str>::new());

    in_progress.abort().unwrap();
    for key in ["lst.a", "lst.b", "lst.c.digest", "lstx", "other"] {
        s.delete(key).unwrap();
    }
}

fn delete_and_stat(s: &dyn ObjectStorage) {
    assert_eq!(s.stat("del.1").unwrap(), None);
    s.delete("del.1").unwrap();
    s.put("del.1", b"x").unwrap();
    assert_eq!(s.stat("del.1").unwrap(), Some(1));
    s.delete("del.1").unwrap();
    assert_eq!(s.stat("del.1").unwrap(), None);
    s.delete("del.1").unwrap();
}

fn keys_are_plain_names(s: &dyn ObjectStorage) {
    for bad in ["", "a/b", "/a", ".hidden", ".", ".."] {
        let e = s.stat(bad).expect_err(bad);
        assert_eq!(e.kind, StorageErrorKind::Invalid, "{bad:?}: {e}");
        assert_eq!(
            s.put(bad, b"x").unwrap_err().kind,
            StorageErrorKind::Invalid,
            "{bad:?}"
        );
        assert!(s.writer(bad).is_err(), "{bad:?}");
        assert!(s.read_small(bad, 10).is_err(), "{bad:?}");
        assert!(s.delete(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn local_dir_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalDirStorage::new(dir.path().to_path_buf());
    conformance(&s);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "files left behind"
    );
}

#[test]
fn memory_conformance() {
    let s = OpenDalStorage::memory().unwrap();
    conformance(&s);
    assert_eq!(s.abort_incomplete_uploads("").unwrap(), 0);
    assert_eq!(s.describe("k"), "memory:/k");
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn local_dir_symlinks_are_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    std::fs::write(&target, b"target bytes").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("link.1")).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("link.2")).unwrap();
    std::os::unix::fs::symlink("/nonexistent", dir.path().join("link.3")).unwrap();
    let s = LocalDirStorage::new(dir.path().to_path_buf());

    for key in ["link.1", "link.3"] {
        let e = s.stat(key).unwrap_err();
        assert_eq!(e.kind, StorageErrorKind::Invalid, "{e}");
    }
    let e = s.read_small("link.1", 100).unwrap_err();
    assert_eq!(e.kind, StorageErrorKind::Invalid, "{e}");
    assert!(e.to_string().contains("symbolic link"), "{e}");
    let e = s.read_range("link.1", 0, &mut [0u8; 4]).unwrap_err();
    assert_eq!(e.kind, StorageErrorKind::Invalid, "{e}");
    let e = s.reader("link.1").err().unwrap();
    assert_eq!(e.kind, StorageErrorKind::Invalid, "{e}");
    // Links are not objects.
    assert_eq!(keys(&s.list("link").unwrap()), Vec::<&str>::new());

    // Writing a key replaces the link, never what it points to.
    s.put("link.1", b"new").unwrap();
    let mut w = s.writer("link.2").unwrap();
    w.write_all(b"newer").unwrap();
    w.finish().unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), b"target bytes");
    for (key, bytes) in [("link.1", &b"new"[..]), ("link.2", b"newer")] {
        let meta = std::fs::symlink_metadata(dir.path().join(key)).unwrap();
        assert!(meta.file_type().is_file(), "{key}");
        assert_eq!(s.read_small(key, 100).unwrap().unwrap(), bytes);
    }
    // Deleting a link removes the link.
    s.delete("link.3").unwrap();
    assert_eq!(names_in(dir.path()), ["link.1", "link.2"]);
}

#[test]
fn local_dir_special_files_are_not_objects() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let s = LocalDirStorage::new(dir.path().to_path_buf());
    assert_eq!(keys(&s.list("").unwrap()), Vec::<&str>::new());
    // Opening the FIFO must not block waiting for a writer.
    let e = s.read_small("fifo", 10).unwrap_err();
    assert_eq!(e.kind, StorageErrorKind::Invalid, "{e}");
    let e = s.stat("sub").unwrap_err();
    assert_eq!(e.kind, StorageErrorKind::Invalid, "{e}");
}

#[test]
fn local_dir_new_files_are_private() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalDirStorage::new(dir.path().to_path_buf());
    s.put("p.1", b"x").unwrap();
    let mut w = s.writer("p.2").unwrap();
    w.write_all(b"y").unwrap();
    w.finish().unwrap();
    for key in ["p.1", "p.2"] {
        let mode = std::fs::metadata(dir.path().join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}: {mode:o}");
    }
}

#[test]
fn local_dir_temporaries_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let s = LocalDirStorage::new(dir.path().to_path_buf());
    let mut w = s.writer("t.1").unwrap();
    w.write_all(&pattern(3 * MIB, 3)).unwrap();
    w.flush().unwrap();
    let names = names_in(dir.path());
    assert_eq!(names.len(), 1);
    assert!(
        names[0].starts_with(".t.1.tmp-"),
        "temporary named {}",
        names[0]
    );
    assert_eq!(keys(&s.list("").unwrap()), Vec::<&str>::new());
    w.abort().unwrap();
    assert_eq!(names_in(dir.path()), Vec::<String>::new());

    let mut w = s.writer("t.1").unwrap();
    w.write_all(b"dropped").unwrap();
    drop(w);
    assert_eq!(names_in(dir.path()), Vec::<String>::new());

    // Two writers of one key at once: distinct temporaries, last one wins.
    let mut a = s.writer("t.2").unwrap();
    let mut b = s.writer("t.2").unwrap();
    a.write_all(b"a").unwrap();
    b.write_all(b"b").unwrap();
    assert_eq!(names_in(dir.path()).len(), 2);
    a.finish().unwrap();
    b.finish().unwrap();
    assert_eq!(names_in(dir.path()), ["t.2"]);
    assert_eq!(s.read_small("t.2", 10).unwrap().unwrap(), b"b");

    // A missing directory is an error, not an empty listing.
    let gone = LocalDirStorage::new(dir.path().join("missing"));
    assert_eq!(gone.list("").unwrap_err().kind, StorageErrorKind::NotFound);
    assert_eq!(
        gone.writer("x").err().unwrap().kind,
        StorageErrorKind::NotFound
    );
    assert_eq!(
        s.describe("t.2"),
        dir.path().join("t.2").display().to_string()
    );
}

/// The S3 settings of the environment, or why the S3 tests are skipped.
fn s3_settings() -> Result<(S3Config, String), String> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let missing: Vec<&str> = [
        "BLOCKDIFF_TEST_S3_ENDPOINT",
        "BLOCKDIFF_TEST_S3_BUCKET",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ]
    .into_iter()
    .filter(|name| var(name).is_none())
    .collect();
    if !missing.is_empty() {
        return Err(format!("{} not set", missing.join(", ")));
    }
    let endpoint = var("BLOCKDIFF_TEST_S3_ENDPOINT").unwrap_or_default();
    let bucket = var("BLOCKDIFF_TEST_S3_BUCKET").unwrap_or_default();
    let config =
        S3Config::from_env_and_options(Some(&endpoint), None, None).map_err(|e| e.to_string())?;
    Ok((config, bucket))
}

/// A prefix of its own for each run.
fn unique_prefix(what: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("blockdiff-test/{what}-{}-{nanos}", std::process::id())
}

#[test]
fn s3_conformance() {
    let (config, bucket) = match s3_settings() {
        Ok(settings) => settings,
        Err(why) => {
            println!("skipping the S3 conformance test: {why}");
            return;
        }
    };
    let prefix = unique_prefix("conformance");
    let s = OpenDalStorage::s3(&config, &bucket, &prefix).unwrap();
    assert_eq!(s.describe("k"), format!("s3://{bucket}/{prefix}/k"));
    conformance(&s);
}

#[test]
fn s3_incomplete_uploads_are_aborted() {
    let (config, bucket) = match s3_settings() {
        Ok(settings) => settings,
        Err(why) => {
            println!("skipping the S3 incomplete-upload test: {why}");
            return;
        }
    };
    let prefix = unique_prefix("abort");
    let s = OpenDalStorage::s3(&config, &bucket, &prefix).unwrap();
    assert_eq!(s.abort_incomplete_uploads("").unwrap(), 0);
    // A writer that is never finished nor dropped, as in a killed
    // process: past two parts (the first is held back, in case it is the
    // whole object), its multipart upload has begun.
    for key in ["db1.5", "db2.1"] {
        let mut w = s.writer(key).unwrap();
        w.write_all(&pattern(17 * MIB, 4)).unwrap();
        std::mem::forget(w);
    }
    s.put("db1.4", b"kept").unwrap();
    assert_eq!(s.abort_incomplete_uploads("db1.").unwrap(), 1);
    assert_eq!(s.abort_incomplete_uploads("db1.").unwrap(), 0);
    assert_eq!(s.abort_incomplete_uploads("").unwrap(), 1);
    assert_eq!(s.read_small("db1.4", 10).unwrap().unwrap(), b"kept");
    assert_eq!(keys(&s.list("").unwrap()), ["db1.4"]);
    s.delete("db1.4").unwrap();
}

#[test]
fn s3_errors_are_recognisable_and_hide_the_secret() {
    let (config, bucket) = match s3_settings() {
        Ok(settings) => settings,
        Err(why) => {
            println!("skipping the S3 error test: {why}");
            return;
        }
    };
    let prefix = unique_prefix("errors");

    let missing = OpenDalStorage::s3(&config, "blockdiff-no-such-bucket", &prefix).unwrap();
    let e = missing.list("").unwrap_err();
    println!("missing bucket: {e}");
    assert_eq!(e.kind, StorageErrorKind::NotFound, "{e}");
    assert!(e.detail.contains("NoSuchBucket"), "{e}");

    let wrong_secret = S3Config {
        secret_access_key: "WrongSecretKeyForTheTest0123456789abcdef".into(),
        ..config.clone()
    };
    let s = OpenDalStorage::s3(&wrong_secret, &bucket, &prefix).unwrap();
    let e = s.list("").unwrap_err();
    println!("wrong secret: {e}");
    assert_eq!(e.kind, StorageErrorKind::PermissionDenied, "{e}");
    assert!(
        [
            "SignatureDoesNotMatch",
            "AccessDenied",
            "InvalidAccessKeyId",
            "Forbidden"
        ]
        .iter()
        .any(|code| e.detail.contains(code)),
        "{e}"
    );
    let text = format!("{e} {e:?}");
    assert!(!text.contains(&wrong_secret.secret_access_key), "{text}");
    assert!(!text.contains(&config.secret_access_key), "{text}");

    let wrong_key = S3Config {
        access_key_id: "GKnosuchkey000000000000000".into(),
        ..config.clone()
    };
    let s = OpenDalStorage::s3(&wrong_key, &bucket, &prefix).unwrap();
    let e = s.put("x", b"x").unwrap_err();
    println!("unknown key id: {e}");
    let stat = s.stat("x").unwrap_err();
    println!("unknown key id, stat: {stat}");
    assert_eq!(stat.kind, StorageErrorKind::PermissionDenied, "{stat}");
    assert_eq!(e.kind, StorageErrorKind::PermissionDenied, "{e}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains(&config.secret_access_key), "{text}");
}

#[test]
fn s3_reader_never_mixes_versions() {
    let (config, bucket) = match s3_settings() {
        Ok(settings) => settings,
        Err(why) => {
            println!("skipping the S3 replaced-while-read test: {why}");
            return;
        }
    };
    let prefix = unique_prefix("replaced");
    let s = OpenDalStorage::s3(&config, &bucket, &prefix).unwrap();
    let old = pattern(20 * MIB, 5);
    s.put("db1.1", &old).unwrap();
    let mut reader = s.reader("db1.1").unwrap();
    let mut first = vec![0u8; MIB];
    reader.read_exact(&mut first).unwrap();
    assert!(first == old[..MIB]);
    s.put("db1.1", &pattern(20 * MIB, 6)).unwrap();
    let mut rest = Vec::new();
    match reader.read_to_end(&mut rest) {
        Ok(n) => panic!("read {n} more bytes of a replaced object without an error"),
        Err(e) => println!("replaced while read: {e}"),
    }
    s.delete("db1.1").unwrap();
}
