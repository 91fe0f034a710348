//! Chains on an object store, end to end against both implementations
//! (OpenDAL's in-memory service and a local directory): full and
//! incremental backups, restores of every generation, what an incremental
//! downloads, interrupted and failed runs, the lock object.

mod common;

use common::{back_up, each_storage, image, options, restore};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use blockdiff_core::{
    ChainEncryption, ChainKey, Compression, DiffFormat, DumpSource, GenerationSource, KeySecret,
    NoProgress, Progress, RestoreOptions, RestorePlan, chain_info,
};
use blockdiff_storage::{
    ChainLocation, LockHolder, LockOptions, ObjectChain, ObjectEntry, ObjectStorage, ObjectWriter,
    StorageError, StorageErrorKind, back_up_to_objects,
};

/// Counts the reads of each kind, and can fail a writer after a number of
/// bytes (a connection cut in the middle of an upload).
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn ObjectStorage>,
    /// Keys read by `reader`, `read_range` or `read_small`.
    reads: Mutex<Vec<String>>,
    fail_writes_after: AtomicU64,
    writers: AtomicUsize,
}

impl Recording {
    fn new(inner: Arc<dyn ObjectStorage>) -> Arc<Self> {
        Arc::new(Recording {
            inner,
            reads: Mutex::new(Vec::new()),
            fail_writes_after: AtomicU64::new(u64::MAX),
            writers: AtomicUsize::new(0),
        })
    }

    fn take_reads(&self) -> Vec<String> {
        std::mem::take(&mut self.reads.lock().unwrap())
    }

    fn note(&self, key: &str) {
        self.reads.lock().unwrap().push(key.to_owned());
    }
}

struct FailingWriter {
    inner: Box<dyn ObjectWriter>,
    left: u64,
    object: String,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "connection reset by peer",
            ));
        }
        self.left -= buf.len() as u64;
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl ObjectWriter for FailingWriter {
    fn finish(self: Box<Self>) -> Result<u64, StorageError> {
        let _ = &self.object;
        self.inner.finish()
    }
    fn abort(self: Box<Self>) -> Result<(), StorageError> {
        self.inner.abort()
    }
}

impl ObjectStorage for Recording {
    fn describe(&self, key: &str) -> String {
        self.inner.describe(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectEntry>, StorageError> {
        self.inner.list(prefix)
    }
    fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
        self.inner.stat(key)
    }
    fn read_range(&self, key: &str, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        self.note(key);
        self.inner.read_range(key, offset, buf)
    }
    fn read_small(&self, key: &str, limit: u64) -> Result<Option<Vec<u8>>, StorageError> {
        self.note(key);
        self.inner.read_small(key, limit)
    }
    fn reader(&self, key: &str) -> Result<Box<dyn Read + Send>, StorageError> {
        self.note(key);
        self.inner.reader(key)
    }
    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
        self.writers.fetch_add(1, Ordering::SeqCst);
        let inner = self.inner.writer(key)?;
        Ok(Box::new(FailingWriter {
            inner,
            left: self.fail_writes_after.load(Ordering::SeqCst),
            object: self.describe(key),
        }))
    }
    fn put(&self, key: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.inner.put(key, bytes)
    }
    fn delete(&self, key: &str) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
}

#[test]
fn generations_restore_exactly_and_an_incremental_downloads_nothing() {
    for format in [
        None,
        Some(DiffFormat::Legacy(Compression::Gzip)),
        Some(DiffFormat::Legacy(Compression::None)),
    ] {
        each_storage(|storage, dir| {
            let recording = Recording::new(storage);
            let chain = ObjectChain::new(recording.clone(), "db", dir.join("cache")).unwrap();
            let mut images = vec![image(1, 300_000)];
            assert_eq!(back_up(&chain, &images[0], format).unwrap(), 1);
            for g in 2..=4u8 {
                let mut next = images.last().unwrap().clone();
                let at = usize::from(g) * 40_000;
                next[at..at + 5000].copy_from_slice(&image(g, 5000));
                recording.take_reads();
                assert_eq!(back_up(&chain, &next, format).unwrap(), u64::from(g));
                // Only NAME.ver, NAME.lock, NAME.fold (the intent of a
                // fold a killed prune left; absent) and the metadata (which
                // tells the previous diff's format): no diff, no digest.
                let reads = recording.take_reads();
                assert!(
                    reads.iter().all(|k| k.ends_with(".ver")
                        || k.ends_with(".lock")
                        || k.ends_with(".fold")
                        || k.ends_with(".meta.json")),
                    "{format:?}: {reads:?}"
                );
                assert!(
                    !reads
                        .iter()
                        .any(|k| k.ends_with(".digest") || k.ends_with(".md5")),
                    "{reads:?}"
                );
                images.push(next);
            }
            for (i, want) in images.iter().enumerate() {
                assert_eq!(
                    &restore(&chain, i as u64 + 1, dir),
                    want,
                    "{format:?} gen {}",
                    i + 1
                );
            }
            let info = chain_info(&chain).unwrap();
            assert_eq!(info.len(), 4);
            assert_eq!(info[0].blocks, 74);
            assert!(info[1].changed_blocks < 5, "{:?}", info[1]);
            // Verify, as blockdiff-restore --verify-only does.
            RestorePlan::new(&chain, &RestoreOptions::default())
                .unwrap()
                .verify(&mut NoProgress)
                .unwrap();
        });
    }
}

#[test]
fn an_encrypted_incremental_downloads_only_small_objects_too() {
    each_storage(|storage, dir| {
        let recording = Recording::new(storage);
        let chain = ObjectChain::new(recording.clone(), "db", dir.join("cache"))
            .unwrap()
            .with_encryption(ChainEncryption::new(KeySecret::Key(ChainKey::from_bytes(
                [5; 32],
            ))));
        let mut data = image(4, 200_000);
        back_up(&chain, &data, None).unwrap();
        for g in 2..=3u64 {
            data[g as usize * 1000] ^= 1;
            recording.take_reads();
            assert_eq!(back_up(&chain, &data, None).unwrap(), g);
            // The sealed metadata tells the diff's format and the cached
            // digest's hash; the digest is read from the cache.
            let reads = recording.take_reads();
            assert!(
                reads.iter().all(|k| k.ends_with(".ver")
                    || k.ends_with(".lock")
                    || k.ends_with(".fold")
                    || k.ends_with(".meta.json")),
                "{reads:?}"
            );
        }
        assert_eq!(restore(&chain, 3, dir), data);
    });
}

#[test]
fn a_stale_or_missing_cache_is_fetched_once_and_a_changed_digest_object_is_refused() {
    each_storage(|storage, dir| {
        let recording = Recording::new(storage.clone());
        let cache = dir.join("cache");
        let chain = ObjectChain::new(recording.clone(), "db", &cache).unwrap();
        let mut data = image(3, 100_000);
        back_up(&chain, &data, None).unwrap();
        // Another machine's cache: empty.
        std::fs::remove_dir_all(&cache).unwrap();
        data[0] ^= 1;
        recording.take_reads();
        back_up(&chain, &data, None).unwrap();
        let fetched: Vec<_> = recording
            .take_reads()
            .into_iter()
            .filter(|k| k.ends_with(".digest"))
            .collect();
        assert_eq!(fetched, ["db.1.digest"]);
        // A damaged cached copy is fetched again.
        let cached = chain.cache().path("db.2.digest");
        let mut bytes = std::fs::read(&cached).unwrap();
        let n = bytes.len();
        bytes[n - 40] ^= 0xff;
        std::fs::write(&cached, &bytes).unwrap();
        data[1] ^= 1;
        back_up(&chain, &data, None).unwrap();
        assert!(recording.take_reads().iter().any(|k| k == "db.2.digest"));
        // The digest object itself changed after its commit: refused.
        let mut object = Vec::new();
        storage
            .reader("db.3.digest")
            .unwrap()
            .read_to_end(&mut object)
            .unwrap();
        let n = object.len();
        object[n - 40] ^= 0xff;
        storage.put("db.3.digest", &object).unwrap();
        std::fs::remove_dir_all(&cache).unwrap();
        let e = back_up(&chain, &data, None).unwrap_err().to_string();
        assert!(
            e.contains("db.3.digest") && e.contains("changed or damaged"),
            "{e}"
        );
        assert_eq!(chain.current_generation().unwrap(), Some(3));
    });
}

/// Stops a backup at one of its steps (a panic: the process's cleanup
/// runs; kill -9 itself is the CLI tests' job).
struct FailAt(&'static str);

#[derive(Debug)]
struct Stopped;

impl Progress for FailAt {
    fn at_step(&mut self, step: &'static str) {
        if step == self.0 {
            std::panic::panic_any(Stopped);
        }
    }
}

#[test]
fn a_run_stopped_at_any_step_leaves_nothing_a_reader_sees_and_the_next_run_succeeds() {
    for step in [
        "backup:begun",
        "backup:upload-diff",
        "backup:upload-digest",
        "backup:write-meta",
        "backup:write-ver",
    ] {
        each_storage(|storage, dir| {
            let chain = ObjectChain::new(storage.clone(), "db", dir.join("cache")).unwrap();
            let first = image(5, 200_000);
            back_up(&chain, &first, None).unwrap();
            let mut second = first.clone();
            second[1000..9000].copy_from_slice(&image(6, 8000));
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = back_up_to_objects(
                    &chain,
                    DumpSource::from_bytes(&second, "image"),
                    &options(None),
                    &LockOptions::default(),
                    &BTreeMap::new(),
                    &mut FailAt(step),
                );
            }));
            assert!(result.is_err(), "{step}: the run was not stopped");
            // Readers trust NAME.ver alone: generation 1, exactly.
            assert_eq!(chain.current_generation().unwrap(), Some(1), "{step}");
            assert_eq!(restore(&chain, 1, dir), first, "{step}");
            // The next run commits generation 2.
            let mut third = second.clone();
            third[50_000] ^= 0x55;
            assert_eq!(back_up(&chain, &third, None).unwrap(), 2, "{step}");
            assert_eq!(restore(&chain, 2, dir), third, "{step}");
            let keys = chain.generation_keys().unwrap();
            assert_eq!(keys.keys().copied().collect::<Vec<_>>(), [1, 2], "{step}");
        });
    }
}

#[test]
fn a_connection_cut_in_an_upload_commits_nothing_and_names_the_object() {
    each_storage(|storage, dir| {
        let recording = Recording::new(storage);
        let chain = ObjectChain::new(recording.clone(), "db", dir.join("cache")).unwrap();
        let first = image(7, 400_000);
        back_up(&chain, &first, None).unwrap();
        let mut second = first.clone();
        second[..100_000].copy_from_slice(&image(8, 100_000));
        recording.fail_writes_after.store(30_000, Ordering::SeqCst);
        let e = back_up(&chain, &second, None).unwrap_err().to_string();
        assert!(e.contains("db.2") && e.contains("connection reset"), "{e}");
        assert_eq!(chain.current_generation().unwrap(), Some(1));
        // Nothing of generation 2 is left: its writers were aborted.
        assert_eq!(
            chain
                .generation_keys()
                .unwrap()
                .keys()
                .copied()
                .collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(restore(&chain, 1, dir), first);
        recording
            .fail_writes_after
            .store(u64::MAX, Ordering::SeqCst);
        assert_eq!(back_up(&chain, &second, None).unwrap(), 2);
        assert_eq!(restore(&chain, 2, dir), second);
    });
}

#[test]
fn a_lock_of_another_host_is_reported_and_taken_over_only_when_asked() {
    each_storage(|storage, dir| {
        let chain = ObjectChain::new(storage.clone(), "db", dir.join("cache")).unwrap();
        let other = LockHolder {
            host: "backup2.example".into(),
            pid: 4242,
            started: 1_790_000_000,
            run: "0123".into(),
        };
        storage
            .put("db.lock", &serde_json::to_vec(&other).unwrap())
            .unwrap();
        let data = image(9, 50_000);
        let e = back_up(&chain, &data, None).unwrap_err().to_string();
        assert!(
            e.contains("backup2.example") && e.contains("4242") && e.contains("--break-lock"),
            "{e}"
        );
        assert_eq!(chain.current_generation().unwrap(), None);
        let report = back_up_to_objects(
            &chain,
            DumpSource::from_bytes(&data, "image"),
            &options(None),
            &LockOptions {
                break_lock: true,
                ..LockOptions::default()
            },
            &BTreeMap::new(),
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!(report.generation, 1);
        // The run removed its own lock object when it ended.
        assert_eq!(storage.stat("db.lock").unwrap(), None);
        // Two runs on this host: the second fails at once.
        let _held = blockdiff_storage::ObjectLock::take(&chain, &LockOptions::default()).unwrap();
        let e = back_up(&chain, &data, None).unwrap_err().to_string();
        assert!(e.contains("another run on this host"), "{e}");
    });
}

#[test]
fn a_refusing_store_is_one_error_naming_the_object() {
    #[derive(Debug)]
    struct Refusing;
    impl ObjectStorage for Refusing {
        fn describe(&self, key: &str) -> String {
            format!("s3://backups/{key}")
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectEntry>, StorageError> {
            Err(self.denied("list"))
        }
        fn stat(&self, key: &str) -> Result<Option<u64>, StorageError> {
            Err(StorageError::new(
                self.describe(key),
                "stat",
                StorageErrorKind::PermissionDenied,
                "AccessDenied: forbidden",
            ))
        }
        fn read_range(&self, _: &str, _: u64, _: &mut [u8]) -> Result<(), StorageError> {
            Err(self.denied("read"))
        }
        fn read_small(&self, key: &str, _: u64) -> Result<Option<Vec<u8>>, StorageError> {
            Err(StorageError::new(
                self.describe(key),
                "read",
                StorageErrorKind::PermissionDenied,
                "AccessDenied: forbidden",
            ))
        }
        fn reader(&self, _: &str) -> Result<Box<dyn Read + Send>, StorageError> {
            Err(self.denied("read"))
        }
        fn writer(&self, _: &str) -> Result<Box<dyn ObjectWriter>, StorageError> {
            Err(self.denied("upload"))
        }
        fn put(&self, _: &str, _: &[u8]) -> Result<(), StorageError> {
            Err(self.denied("upload"))
        }
        fn delete(&self, _: &str) -> Result<(), StorageError> {
            Err(self.denied("delete"))
        }
    }
    impl Refusing {
        fn denied(&self, action: &'static str) -> StorageError {
            StorageError::new(
                "s3://backups/",
                action,
                StorageErrorKind::PermissionDenied,
                "AccessDenied",
            )
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let chain = ObjectChain::new(Arc::new(Refusing), "db", dir.path()).unwrap();
    let e = back_up(&chain, &image(1, 10_000), None)
        .unwrap_err()
        .to_string();
    assert_eq!(
        e,
        "s3://backups/db.lock: cannot read: AccessDenied: forbidden"
    );
}

#[test]
fn repair_rebuilds_ver_from_what_verifies_and_removes_nothing() {
    each_storage(|storage, dir| {
        let chain = ObjectChain::new(Arc::clone(&storage), "db", dir.join("cache")).unwrap();
        let first = image(1, 200_000);
        let mut second = first.clone();
        second[10_000..20_000].copy_from_slice(&image(2, 10_000));
        back_up(&chain, &first, None).unwrap();
        back_up(&chain, &second, None).unwrap();
        // NAME.ver lost, and a damaged generation 3 beyond it.
        storage.delete("db.ver").unwrap();
        storage.put("db.3", b"not a diff").unwrap();
        assert_eq!(chain.current_generation().unwrap(), None);
        let location = ChainLocation::Objects(chain.clone());
        let dry = location
            .repair(true, &LockOptions::default(), &mut NoProgress)
            .unwrap();
        assert_eq!((dry.previous, dry.verified, dry.written), (None, 2, false));
        assert_eq!(
            chain.current_generation().unwrap(),
            None,
            "a dry run writes nothing"
        );
        let report = location
            .repair(false, &LockOptions::default(), &mut NoProgress)
            .unwrap();
        assert_eq!((report.verified, report.written), (2, true));
        assert_eq!(report.beyond.len(), 1);
        assert!(report.beyond[0].1[0].ends_with("db.3"), "{report:?}");
        assert!(report.first_failure.is_some());
        assert_eq!(chain.current_generation().unwrap(), Some(2));
        assert_eq!(
            storage.read_small("db.3", 100).unwrap().unwrap(),
            b"not a diff"
        );
        assert_eq!(restore(&chain, 2, dir), second);
        // The lock object is gone with the run.
        assert_eq!(storage.stat("db.lock").unwrap(), None);
    });
}
