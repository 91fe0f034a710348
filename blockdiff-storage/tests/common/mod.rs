//! Shared by the object-store integration tests (each says `mod common;`).

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use blockdiff_core::{BackupOptions, DiffFormat, DumpOptions};
use blockdiff_storage::{LocalDirStorage, ObjectStorage, OpenDalStorage};

/// 4 KiB blocks, two threads, `format` (the default when `None`).
pub fn options(format: Option<DiffFormat>) -> BackupOptions {
    BackupOptions {
        dump: DumpOptions {
            block_size: "4k".parse().unwrap(),
            threads: 2,
            ..DumpOptions::default()
        },
        format,
    }
}

/// Runs `test` against both implementations: OpenDAL's in-memory service
/// and a local directory, each with a directory of its own for caches.
pub fn each_storage(test: impl Fn(Arc<dyn ObjectStorage>, &Path)) {
    let memory = tempfile::tempdir().unwrap();
    test(Arc::new(OpenDalStorage::memory().unwrap()), memory.path());
    let local = tempfile::tempdir().unwrap();
    let bucket = local.path().join("bucket");
    std::fs::create_dir(&bucket).unwrap();
    test(Arc::new(LocalDirStorage::new(bucket)), local.path());
}
