//! Shared by the object-store integration tests (each says `mod common;`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use blockdiff_core::{
    BackupOptions, DiffFormat, DumpOptions, DumpSource, NoProgress, RestoreOptions, RestorePlan,
};
use blockdiff_storage::{
    LocalDirStorage, LockOptions, ObjectChain, ObjectStorage, OpenDalStorage, back_up_to_objects,
};

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

/// Incompressible bytes of `seed`.
pub fn image(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u64::from(seed) * 0x9E37_79B9 + 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Backs `data` up to `chain` in `format` ([`options`]); the generation.
pub fn back_up(
    chain: &ObjectChain,
    data: &[u8],
    format: Option<DiffFormat>,
) -> blockdiff_core::Result<u64> {
    back_up_to_objects(
        chain,
        DumpSource::from_bytes(data, "image"),
        &options(format),
        &LockOptions::default(),
        &BTreeMap::new(),
        &mut NoProgress,
    )
    .map(|r| r.generation)
}

/// Generation `generation` of `chain`, restored to a file in `dir`.
pub fn restore(chain: &ObjectChain, generation: u64, dir: &Path) -> Vec<u8> {
    let target = dir.join(format!("restored-{generation}"));
    RestorePlan::new(
        chain,
        &RestoreOptions {
            generation: Some(generation),
            ..RestoreOptions::default()
        },
    )
    .unwrap()
    .execute(&target, &mut NoProgress)
    .unwrap();
    let bytes = std::fs::read(&target).unwrap();
    std::fs::remove_file(&target).unwrap();
    bytes
}
