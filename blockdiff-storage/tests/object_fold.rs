//! Folding generations of a chain on an object store, against both
//! implementations (OpenDAL's in-memory service and a local directory):
//! kept generations restore exactly, folded ones are gone, a fold stopped
//! at any step is finished or undone by the next run, and an interrupted
//! fold is recognised by its intent. kill -9 against a real S3 server is
//! the CLI tests' job (tools/tests/s3_cli.rs).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{each_storage, image, restore};

use blockdiff_core::{
    ChainEncryption, ChainKey, FOLD_STEPS, FoldOptions, GenerationSource, KeySecret, NoProgress,
    Progress, PruneGenerationsOptions, RestoreOptions, RestorePlan, RetentionPolicy,
    chain_generations, fold_generations, prune_generations,
};
use blockdiff_storage::{LockOptions, ObjectChain};

fn back_up(chain: &ObjectChain, data: &[u8]) -> u64 {
    common::back_up(chain, data, None).unwrap()
}

/// `n` generations: a few blocks changed each time, a hot block changed
/// every time, and the source growing at generation 4.
fn build(chain: &ObjectChain, n: u64, seed: u8) -> Vec<Vec<u8>> {
    let mut bytes = image(seed, 120_000);
    let mut images = Vec::new();
    for g in 1..=n {
        if g > 1 {
            let at = (g as usize * 7_919) % (bytes.len() - 9_000);
            bytes[at..at + 9_000].copy_from_slice(&image(seed + g as u8, 9_000));
            bytes[4_096] = g as u8;
        }
        if g == 4 {
            bytes.extend_from_slice(&image(seed * 3 + g as u8, 30_000));
        }
        assert_eq!(back_up(chain, &bytes), g);
        images.push(bytes.clone());
    }
    images
}

/// The chain holds exactly `kept`, each restoring to its image, and no
/// object of another generation or of a fold is left.
fn check_kept(chain: &ObjectChain, images: &[Vec<u8>], kept: &BTreeSet<u64>, dir: &Path) {
    let held: BTreeSet<u64> = chain_generations(chain, None)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(&held, kept);
    for &g in kept {
        assert!(
            restore(chain, g, dir) == images[g as usize - 1],
            "generation {g}"
        );
    }
    let objects: BTreeSet<u64> = chain.generation_keys().unwrap().into_keys().collect();
    assert_eq!(&objects, kept);
    let left: Vec<String> = chain
        .storage()
        .list("")
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .filter(|k| k.contains("fold"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn kept_generations_restore_exactly_and_the_chain_goes_on() {
    each_storage(|storage, dir| {
        let chain = ObjectChain::new(storage, "db", dir.join("cache")).unwrap();
        let mut images = build(&chain, 8, 11);
        // 1 goes into 2 (the new base), 3 and 4 into 5, 6 and 7 into 8.
        let kept = BTreeSet::from([2, 5, 8]);
        let folds =
            fold_generations(&chain, &kept, &FoldOptions::default(), &mut NoProgress).unwrap();
        assert_eq!(folds.len(), 3);
        assert!(folds.iter().all(|f| f.removed_bytes > 0 && f.blocks > 0));
        check_kept(&chain, &images, &kept, dir);
        // The digests the folded generations left in the cache are gone.
        let cached: Vec<String> = std::fs::read_dir(chain.cache().dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            cached
                .iter()
                .all(|c| !c.contains(".1.") && !c.contains(".3.")),
            "{cached:?}"
        );
        // The next backup continues the chain, and a policy folds it all
        // into the newest (a synthetic full).
        let mut image = images[7].clone();
        image[70_000] ^= 0xff;
        assert_eq!(back_up(&chain, &image), 9);
        images.push(image);
        let policy = RetentionPolicy {
            last: 1,
            ..RetentionPolicy::default()
        };
        let report = prune_generations(
            &chain,
            &PruneGenerationsOptions::new(policy),
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!(report.folds.len(), 1);
        check_kept(&chain, &images, &BTreeSet::from([9]), dir);
        let base = chain.find_diff(9).unwrap();
        let diff = chain.open_diff(&base).unwrap();
        let file = archive_format::DiffFile::open(diff).unwrap();
        assert_eq!(file.header().parent_generation(), None);
    });
}

#[test]
fn an_encrypted_chain_folds_sealed() {
    each_storage(|storage, dir| {
        let chain = ObjectChain::new(storage.clone(), "db", dir.join("cache"))
            .unwrap()
            .with_encryption(ChainEncryption::new(KeySecret::Key(ChainKey::from_bytes(
                [7; 32],
            ))));
        let images = build(&chain, 5, 3);
        let kept = BTreeSet::from([3, 5]);
        fold_generations(&chain, &kept, &FoldOptions::default(), &mut NoProgress).unwrap();
        check_kept(&chain, &images, &kept, dir);
        // The new diff is sealed: a chain without the key refuses it.
        let plain = ObjectChain::new(storage, "db", dir.join("cache2")).unwrap();
        assert!(RestorePlan::new(&plain, &RestoreOptions::default()).is_err());
    });
}

/// Stops a fold at one of its steps (a panic: what was not switched is
/// cleaned up as after an error; kill -9 is the CLI tests' job).
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
fn a_fold_stopped_at_any_step_is_finished_or_undone_by_the_next_backup() {
    for step in FOLD_STEPS {
        each_storage(|storage, dir| {
            let chain = ObjectChain::new(storage, "db", dir.join("cache")).unwrap();
            let images = build(&chain, 6, 29);
            let kept = BTreeSet::from([3, 6]);
            let mut stop = FailAt(step, false);
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                fold_generations(&chain, &kept, &FoldOptions::default(), &mut stop)
            }));
            assert!(result.is_err() && stop.1, "{step}");
            // Everything the chain links to restores.
            let held = chain_generations(&chain, None).unwrap();
            for &g in &held {
                assert!(
                    restore(&chain, g, dir) == images[g as usize - 1],
                    "{step}: {g}"
                );
            }
            assert!(kept.iter().all(|g| held.contains(g)), "{step}: {held:?}");
            // The next backup finishes or undoes it; a fold then completes.
            let mut image = images[5].clone();
            image[10] ^= 1;
            assert_eq!(back_up(&chain, &image), 7, "{step}");
            let mut images = images.clone();
            images.push(image);
            let kept = BTreeSet::from([3, 6, 7]);
            fold_generations(&chain, &kept, &FoldOptions::default(), &mut NoProgress).unwrap();
            check_kept(&chain, &images, &kept, dir);
        });
    }
}

#[test]
fn an_intent_whose_switch_did_not_happen_is_undone() {
    each_storage(|storage, dir| {
        let chain = ObjectChain::new(storage.clone(), "db", dir.join("cache")).unwrap();
        let images = build(&chain, 4, 5);
        // As after kill -9 in the copy: the intent and its temporary, and
        // NAME.3 still the old diff.
        storage
            .put(&chain.fold_tmp_key(3), b"a new diff, uploaded")
            .unwrap();
        storage
            .put(
                &chain.fold_intent_key(),
                br#"{"generation":3,"parent":1,"folded":[2],"new_size":20,"new_mark":"00"}"#,
            )
            .unwrap();
        // A temporary of a fold killed before its intent.
        storage.put(&chain.fold_tmp_key(4), b"partial").unwrap();
        fold_generations(
            &chain,
            &BTreeSet::from([1, 2, 3, 4]),
            &FoldOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        check_kept(&chain, &images, &BTreeSet::from([1, 2, 3, 4]), dir);
        // An intent naming a generation the chain links to, its temporary
        // gone (as if switched): refused, nothing removed.
        storage
            .put(
                &chain.fold_intent_key(),
                br#"{"generation":3,"parent":1,"folded":[2],"new_size":1,"new_mark":"00"}"#,
            )
            .unwrap();
        let err = fold_generations(
            &chain,
            &BTreeSet::from([1, 2, 3, 4]),
            &FoldOptions::default(),
            &mut NoProgress,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("still links to it"), "{err}");
        assert_eq!(chain_generations(&chain, None).unwrap(), [4, 3, 2, 1]);
        // A damaged intent vouches for nothing: undone.
        storage.put(&chain.fold_intent_key(), b"{\"gen").unwrap();
        fold_generations(
            &chain,
            &BTreeSet::from([2, 4]),
            &FoldOptions::default(),
            &mut NoProgress,
        )
        .unwrap();
        check_kept(&chain, &images, &BTreeSet::from([2, 4]), dir);
    });
}

#[test]
fn a_held_lock_fails_the_fold_at_once() {
    each_storage(|storage, dir| {
        let chain = ObjectChain::new(storage, "db", dir.join("cache")).unwrap();
        build(&chain, 3, 1);
        let lock = blockdiff_storage::ObjectLock::take(&chain, &LockOptions::default()).unwrap();
        let err = fold_generations(
            &chain,
            &BTreeSet::from([3]),
            &FoldOptions::default(),
            &mut NoProgress,
        )
        .unwrap_err();
        assert!(matches!(err, blockdiff_core::Error::Locked { .. }), "{err}");
        drop(lock);
        assert_eq!(chain_generations(&chain, None).unwrap(), [3, 2, 1]);
    });
}
