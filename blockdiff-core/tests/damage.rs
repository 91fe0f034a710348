//! A damaged v2 chain is never restored wrongly: flipping any byte or
//! truncating any file of the chain makes restore fail with an error naming
//! the file (or restore still yields the exact image, when the damage is in
//! a part that generation does not need), and `verify` always fails.

use std::fs;
use std::os::unix::fs::MetadataExt;

use blockdiff_core::{
    BackupOptions, BlockSize, DumpOptions, DumpSource, GenerationStore, NoProgress, RestoreOptions,
    RestorePlan, backup,
};
use proptest::prelude::*;

fn options() -> BackupOptions {
    BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(1024).unwrap(),
            read_size: 4096,
            ..DumpOptions::default()
        },
        format: None,
    }
}

/// Three generations of a 20 KiB source with zero and repetitive blocks.
fn chain(dir: &std::path::Path, seed: u8) -> (GenerationStore, Vec<Vec<u8>>) {
    let store = GenerationStore::new(dir.join("vol"));
    let mut src: Vec<u8> = (0..20_000u32).map(|i| (i / 7) as u8 ^ seed).collect();
    src[4096..8192].fill(0);
    let mut versions = Vec::new();
    for g in 0..3u8 {
        if g > 0 {
            let at = 1000 + usize::from(g) * 5000;
            src[at..at + 700].fill(g ^ seed);
        }
        backup(
            &store,
            DumpSource::from_bytes(&src, "src"),
            &options(),
            &mut NoProgress,
        )
        .unwrap();
        versions.push(src.clone());
    }
    (store, versions)
}

fn restore(store: &GenerationStore, k: u64, target: &std::path::Path) -> Result<Vec<u8>, String> {
    let opts = RestoreOptions {
        generation: Some(k),
        verify: true,
        source_shrank: false,
    };
    RestorePlan::new(store, &opts)
        .and_then(|p| p.execute(target, &mut NoProgress))
        .map(|_| fs::read(target).unwrap())
        .map_err(|e| e.to_string())
}

fn verify(store: &GenerationStore, k: u64) -> Result<(), String> {
    let opts = RestoreOptions {
        generation: Some(k),
        verify: true,
        source_shrank: false,
    };
    RestorePlan::new(store, &opts)
        .and_then(|p| p.verify(&mut NoProgress))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The files of generations 1..=3 (diffs and digests).
fn chain_files(store: &GenerationStore) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for g in 1..=3 {
        files.push(store.find_diff(g).unwrap().path);
        files.push(store.find_digest(g).unwrap().0);
    }
    files
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn flipped_byte_is_never_restored_wrongly(
        file in 0usize..6,
        pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
        k in 1u64..=3,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, versions) = chain(dir.path(), 3);
        let path = chain_files(&store)[file].clone();
        let mut bytes = fs::read(&path).unwrap();
        let at = pick.index(bytes.len());
        bytes[at] ^= 1 << bit;
        fs::write(&path, &bytes).unwrap();
        let target = dir.path().join("out.img");
        match restore(&store, k, &target) {
            Ok(image) => prop_assert!(image == versions[k as usize - 1], "flip at {} of {} restored wrongly", at, path.display()),
            Err(e) => {
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                // The error names the damaged file, or (a damaged digest
                // entry) the diff whose block no longer matches it.
                prop_assert!(e.contains(&name) || e.contains("does not match"), "{e}");
                prop_assert!(!target.exists());
            }
        }
        // A generation that uses the damaged file fails verification.
        let g_of_file = (file / 2) as u64 + 1;
        let is_digest = file % 2 == 1;
        if g_of_file <= k && (!is_digest || g_of_file == k) {
            prop_assert!(verify(&store, k).is_err(), "verify missed a flip at {} of {}", at, path.display());
        }
    }

    #[test]
    fn truncation_is_never_restored_wrongly(file in 0usize..6, pick in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        let (store, versions) = chain(dir.path(), 5);
        let path = chain_files(&store)[file].clone();
        let bytes = fs::read(&path).unwrap();
        let cut = pick.index(bytes.len());
        fs::write(&path, &bytes[..cut]).unwrap();
        let target = dir.path().join("out.img");
        let g_of_file = (file / 2) as u64 + 1;
        match restore(&store, 3, &target) {
            Ok(image) => {
                prop_assert!(image == versions[2]);
                // Only an older digest may be cut without restore noticing.
                prop_assert!(file % 2 == 1 && g_of_file < 3, "cut of {} went unnoticed", path.display());
            }
            Err(e) => prop_assert!(e.contains(path.file_name().unwrap().to_str().unwrap()), "{e}"),
        }
    }
}

#[test]
fn a_generation_from_another_chain_is_refused_before_writing() {
    let dir = tempfile::tempdir().unwrap();
    let (a, _) = chain(&mkdir(dir.path().join("a")), 1);
    let (b, _) = chain(&mkdir(dir.path().join("b")), 2);
    // Generation 2 of chain B, put into chain A: same names, same sizes,
    // but its parent is B's generation 1.
    for (from, to) in [
        (b.find_diff(2).unwrap().path, a.find_diff(2).unwrap().path),
        (b.find_digest(2).unwrap().0, a.find_digest(2).unwrap().0),
    ] {
        fs::copy(from, to).unwrap();
    }
    let target = dir.path().join("out.img");
    let e = restore(&a, 3, &target).unwrap_err();
    assert!(
        e.contains("vol.3") && e.contains("belongs to another chain"),
        "{e}"
    );
    assert!(!target.exists(), "nothing may be written");
    let e = restore(&a, 2, &target).unwrap_err();
    assert!(
        e.contains("vol.2") && e.contains("belongs to another chain"),
        "{e}"
    );
}

#[test]
fn zero_extents_become_holes() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("vol"));
    let mut src = vec![0u8; 8 << 20];
    src[..4096].fill(7);
    let report = backup(
        &store,
        DumpSource::from_bytes(&src, "src"),
        &BackupOptions::default(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!(report.dump.zero_blocks, 511);
    // The diff holds one data block; the zero blocks take no space.
    assert!(report.diff_bytes < 2048, "{}", report.diff_bytes);
    let target = dir.path().join("out.img");
    let r = RestorePlan::new(&store, &RestoreOptions::default())
        .unwrap()
        .execute(&target, &mut NoProgress)
        .unwrap();
    assert_eq!(r.holes, 511);
    assert_eq!(fs::read(&target).unwrap(), src);
    let allocated = fs::metadata(&target).unwrap().blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "target is not sparse: {allocated} bytes allocated"
    );
}

fn mkdir(path: std::path::PathBuf) -> std::path::PathBuf {
    fs::create_dir_all(&path).unwrap();
    path
}
