//! Folds on a local store: every kept generation restores exactly, the
//! folded ones are gone, the chain goes on; failures at every step leave
//! it whole.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use super::*;
use crate::{
    BackupOptions, BlockSize, DumpOptions, DumpSource, NoProgress, RestoreOptions, RestorePlan,
    backup, chain_generations,
};

/// A deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

const BS: usize = 4096;

fn options() -> BackupOptions {
    BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(BS as u32).unwrap(),
            ..DumpOptions::default()
        },
        ..BackupOptions::default()
    }
}

/// `n` images, each a backup of the store: random blocks changed, a hot
/// region rewritten each time, blocks zeroed, the source grown and shrunk
/// (with a short last block).
fn chain(store: &GenerationStore, n: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng(seed);
    let mut image: Vec<u8> = (0..64 * BS + 1000).map(|i| (i * 7 % 251) as u8).collect();
    let mut images = Vec::new();
    for g in 0..n {
        if g > 0 {
            let blocks = image.len().div_ceil(BS) as u64;
            for _ in 0..1 + rng.next(4) {
                let b = rng.next(blocks) as usize * BS;
                let end = (b + BS).min(image.len());
                let v = rng.next(256) as u8;
                image[b..end].fill(v);
            }
            // The hot region.
            image[5 * BS..7 * BS].fill(g as u8);
            if rng.next(5) == 0 {
                let b = rng.next(blocks) as usize * BS;
                let end = (b + BS).min(image.len());
                image[b..end].fill(0);
            }
            match rng.next(8) {
                0 => image.resize(image.len() + BS * 3 + 17, g as u8),
                1 => image.truncate(image.len() - BS - 5),
                _ => {}
            }
        }
        backup(
            store,
            DumpSource::from_bytes(&image, "image"),
            &options(),
            &mut NoProgress,
        )
        .unwrap();
        images.push(image.clone());
    }
    images
}

fn restore(store: &GenerationStore, g: u64, dir: &Path) -> Vec<u8> {
    let target = dir.join(format!("restored-{g}"));
    let _ = fs::remove_file(&target);
    RestorePlan::new(
        store,
        &RestoreOptions {
            generation: Some(g),
            ..RestoreOptions::default()
        },
    )
    .unwrap()
    .execute(&target, &mut NoProgress)
    .unwrap();
    let bytes = fs::read(&target).unwrap();
    fs::remove_file(&target).unwrap();
    bytes
}

fn check_kept(store: &GenerationStore, images: &[Vec<u8>], kept: &BTreeSet<u64>, dir: &Path) {
    let mut held = chain_generations(store, None).unwrap();
    held.reverse();
    assert_eq!(held, kept.iter().copied().collect::<Vec<_>>());
    for &g in kept {
        assert!(
            restore(store, g, dir) == images[g as usize - 1],
            "generation {g}"
        );
        RestorePlan::new(
            store,
            &RestoreOptions {
                generation: Some(g),
                ..RestoreOptions::default()
            },
        )
        .unwrap()
        .verify(&mut NoProgress)
        .unwrap();
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn plan_folds_groups_runs_into_the_next_kept() {
    let chain = [9, 8, 7, 6, 5, 4, 3, 2, 1];
    let groups = plan_folds(&chain, &BTreeSet::from([3, 4, 8, 9]));
    assert_eq!(
        groups,
        [
            FoldGroup {
                into: 3,
                parent: None,
                folded: vec![2, 1]
            },
            FoldGroup {
                into: 8,
                parent: Some(4),
                folded: vec![7, 6, 5]
            },
        ]
    );
    assert!(plan_folds(&chain, &chain.iter().copied().collect()).is_empty());
    // A chain with gaps already.
    assert_eq!(
        plan_folds(&[12, 8, 3], &BTreeSet::from([12])),
        [FoldGroup {
            into: 12,
            parent: None,
            folded: vec![8, 3]
        }]
    );
}

#[test]
fn kept_generations_restore_exactly_after_folds_and_the_chain_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("db"));
    let mut images = chain(&store, 20, 0x5eed);
    // Folds in the middle, at the end, and of the base.
    let kept = BTreeSet::from([4, 5, 9, 15, 19, 20]);
    let reports =
        fold_generations(&store, &kept, &FoldOptions::default(), &mut NoProgress).unwrap();
    assert_eq!(reports.len(), 4);
    assert_eq!(reports[0].group.parent, None);
    assert!(
        reports
            .iter()
            .all(|r| r.new_diff_bytes > 0 && r.removed_bytes > 0)
    );
    check_kept(&store, &images, &kept, dir.path());
    for g in 1..=20u64 {
        let gone = !store.generation_files().unwrap().contains_key(&g);
        assert_eq!(gone, !kept.contains(&g), "generation {g}");
    }
    let names = listing(dir.path());
    assert!(
        names.iter().all(|n| !n.contains("fold")),
        "leftovers: {names:?}"
    );
    // The new base holds every block; the info lists the parents.
    let info = store.info().unwrap();
    let parents: Vec<(u64, Option<u64>)> = info.iter().map(|i| (i.generation, i.parent)).collect();
    assert_eq!(
        parents,
        [
            (4, None),
            (5, Some(4)),
            (9, Some(5)),
            (15, Some(9)),
            (19, Some(15)),
            (20, Some(19))
        ]
    );
    assert_eq!(info[0].changed_blocks, info[0].blocks);

    // A folded generation is named as such.
    let err = RestorePlan::new(
        &store,
        &RestoreOptions {
            generation: Some(7),
            ..RestoreOptions::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("not in the chain") && err.contains("20, 19, 15, 9, 5, 4"),
        "{err}"
    );

    // Backups continue the chain, and a second prune folds again.
    let mut rng = Rng(99);
    for _ in 0..3 {
        let mut image = images.last().unwrap().clone();
        let b = rng.next(image.len() as u64 / BS as u64) as usize * BS;
        image[b] ^= 0xff;
        backup(
            &store,
            DumpSource::from_bytes(&image, "image"),
            &options(),
            &mut NoProgress,
        )
        .unwrap();
        images.push(image);
    }
    let kept = BTreeSet::from([15, 21, 23]);
    fold_generations(&store, &kept, &FoldOptions::default(), &mut NoProgress).unwrap();
    check_kept(&store, &images, &kept, dir.path());
}

#[test]
fn folding_everything_into_the_newest_makes_a_full() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("db"));
    let images = chain(&store, 8, 7);
    let kept = BTreeSet::from([8]);
    fold_generations(&store, &kept, &FoldOptions::default(), &mut NoProgress).unwrap();
    check_kept(&store, &images, &kept, dir.path());
    // No fold left to do.
    assert!(
        fold_generations(&store, &kept, &FoldOptions::default(), &mut NoProgress)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn encrypted_chains_fold_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let key =
        crate::ChainEncryption::new(crate::KeySecret::Key(crate::ChainKey::from_bytes([7; 32])));
    let store = GenerationStore::new(dir.path().join("db")).with_encryption(key);
    let images = chain(&store, 6, 3);
    let kept = BTreeSet::from([3, 6]);
    fold_generations(&store, &kept, &FoldOptions::default(), &mut NoProgress).unwrap();
    check_kept(&store, &images, &kept, dir.path());
    let diff = fs::read(store.find_diff(3).unwrap().path).unwrap();
    assert!(archive_format::is_sealed(&diff));
}

#[test]
fn refusals_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("db"));
    chain(&store, 4, 11);
    let before = listing(dir.path());
    for keep in [BTreeSet::from([1, 2]), BTreeSet::from([4, 9])] {
        let err = fold_generations(&store, &keep, &FoldOptions::default(), &mut NoProgress);
        assert!(matches!(err, Err(Error::InvalidOption(_))), "{err:?}");
    }
    // A backup holding the lock.
    let lock = store.lock().unwrap();
    let err = fold_generations(
        &store,
        &BTreeSet::from([4]),
        &FoldOptions::default(),
        &mut NoProgress,
    );
    assert!(matches!(err, Err(Error::Locked { .. })), "{err:?}");
    drop(lock);
    assert_eq!(listing(dir.path()), before);

    // A legacy chain.
    let legacy = GenerationStore::new(dir.path().join("old"));
    let opts = BackupOptions {
        format: Some(crate::DiffFormat::Legacy(archive_format::Compression::None)),
        ..options()
    };
    for v in 1..=3u8 {
        backup(
            &legacy,
            DumpSource::from_bytes(&[v; 9000], "image"),
            &opts,
            &mut NoProgress,
        )
        .unwrap();
    }
    let err = fold_generations(
        &legacy,
        &BTreeSet::from([3]),
        &FoldOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("original blockdiff's format"), "{err}");
}

/// A progress that fails the run at one step, as an error there would.
struct FailAt(&'static str, bool);

impl Progress for FailAt {
    fn at_step(&mut self, step: &'static str) {
        if step == self.0 {
            self.1 = true;
            panic!("stopped at {step}");
        }
    }
}

#[test]
fn a_fold_stopped_at_any_step_leaves_every_kept_generation_and_the_next_run_completes() {
    for step in super::FOLD_STEPS {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("db"));
        let images = chain(&store, 7, 21);
        let kept = BTreeSet::from([2, 5, 7]);
        let mut stop = FailAt(step, false);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fold_generations(&store, &kept, &FoldOptions::default(), &mut stop)
        }));
        assert!(result.is_err() && stop.1, "{step}");
        // Every generation that was kept restores; the folded ones either
        // still restore (before the switch) or are gone.
        let held = chain_generations(&store, None).unwrap();
        for &g in &held {
            assert!(
                restore(&store, g, dir.path()) == images[g as usize - 1],
                "{step}: {g}"
            );
        }
        for g in kept.iter() {
            assert!(held.contains(g), "{step}: {g}");
        }
        // The next backup finishes or undoes the fold.
        let mut image = images[6].clone();
        image[100] ^= 1;
        backup(
            &store,
            DumpSource::from_bytes(&image, "image"),
            &options(),
            &mut NoProgress,
        )
        .unwrap();
        assert!(!store.fold_intent_path().exists(), "{step}");
        let names = listing(dir.path());
        assert!(
            names.iter().all(|n| !n.contains("fold")),
            "{step}: {names:?}"
        );
        let mut images = images.clone();
        images.push(image);
        let kept = BTreeSet::from([2, 5, 7, 8]);
        fold_generations(&store, &kept, &FoldOptions::default(), &mut NoProgress).unwrap();
        check_kept(&store, &images, &kept, dir.path());
    }
}

#[test]
fn recovery_finishes_a_switched_fold_and_undoes_one_that_was_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("db"));
    let images = chain(&store, 5, 5);
    // As after kill -9 just after the switch: the intent, no temporary.
    let intent = store.fold_intent_path();
    fs::write(&intent, br#"{"generation":4,"parent":null,"folded":[3]}"#).unwrap();
    // The intent names a generation the chain still links to: refused,
    // nothing removed.
    let err = fold_generations(
        &store,
        &BTreeSet::from([5]),
        &FoldOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("still links to it"), "{err}");
    assert_eq!(chain_generations(&store, None).unwrap(), [5, 4, 3, 2, 1]);
    // An intent whose temporary is there: undone.
    fs::write(store.fold_tmp_path(4), b"partial").unwrap();
    assert!(recover_interrupted_fold(&store, &mut NoProgress).unwrap());
    assert!(!intent.exists() && !store.fold_tmp_path(4).exists());
    // Damaged intent: undone.
    fs::write(&intent, b"{\"gener").unwrap();
    fs::write(store.fold_tmp_path(2), b"partial").unwrap();
    assert!(recover_interrupted_fold(&store, &mut NoProgress).unwrap());
    assert!(listing(dir.path()).iter().all(|n| !n.contains("fold")));
    check_kept(
        &store,
        &images,
        &BTreeSet::from([1, 2, 3, 4, 5]),
        dir.path(),
    );
}

#[test]
fn a_damaged_block_in_a_folded_generation_stops_the_fold_before_any_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("db"));
    let images = chain(&store, 4, 17);
    // Flip a byte inside generation 2's first frame payload.
    let path = store.find_diff(2).unwrap().path;
    let mut bytes = fs::read(&path).unwrap();
    let at = archive_format::V2_HEADER_LEN + 200;
    bytes[at] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let before = listing(dir.path());
    let err = fold_generations(
        &store,
        &BTreeSet::from([4]),
        &FoldOptions::default(),
        &mut NoProgress,
    );
    assert!(err.is_err());
    assert_eq!(listing(dir.path()), before);
    fs::write(&path, {
        bytes[at] ^= 0x40;
        &bytes
    })
    .unwrap();
    check_kept(&store, &images, &BTreeSet::from([1, 2, 3, 4]), dir.path());
}
