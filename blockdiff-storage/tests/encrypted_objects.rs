//! Encrypted chains on an object store (FORMAT.md §10), against both
//! implementations (OpenDAL's in-memory service and a local directory):
//! every object and every cached digest sealed, the incremental still
//! downloading nothing, and a wrong key, a missing key, a changed or
//! misplaced object each refused, never restored wrongly.

mod common;

use common::{each_storage, options};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use blockdiff_core::{
    ChainEncryption, ChainKey, Compression, DiffFormat, DumpSource, GenerationSource, KeySecret,
    NoProgress, RestoreOptions, RestorePlan, chain_info,
};
use blockdiff_storage::{LockOptions, ObjectChain, ObjectStorage, back_up_to_objects};

const SEALED_MAGIC: &[u8] = b"\x89BDE\r\n\x1a\n";

fn key(byte: u8) -> ChainEncryption {
    ChainEncryption::new(KeySecret::Key(ChainKey::from_bytes([byte; 32])))
}

/// Incompressible bytes, each 64-byte piece starting with a text naming
/// it, so that a piece stored in clear is found in an object.
fn image(seed: u8, len: usize) -> Vec<u8> {
    let mut bytes = common::image(seed, len);
    for (i, piece) in bytes.chunks_mut(64).enumerate() {
        let text = format!("PLAINTEXT {i:06} ");
        let n = text.len().min(piece.len());
        piece[..n].copy_from_slice(&text.as_bytes()[..n]);
    }
    bytes
}

fn back_up(
    chain: &ObjectChain,
    data: &[u8],
    format: Option<DiffFormat>,
) -> blockdiff_core::Result<u64> {
    let facts = BTreeMap::from([("host".to_string(), "db1.example.org".to_string())]);
    back_up_to_objects(
        chain,
        DumpSource::from_bytes(data, "image"),
        &options(format),
        &LockOptions::default(),
        &facts,
        &mut NoProgress,
    )
    .map(|r| r.generation)
}

fn restore(chain: &ObjectChain, generation: u64, dir: &Path) -> Result<Vec<u8>, String> {
    let target = dir.join(format!("restored-{generation}"));
    let _ = std::fs::remove_file(&target);
    RestorePlan::new(
        chain,
        &RestoreOptions {
            generation: Some(generation),
            ..RestoreOptions::default()
        },
    )
    .and_then(|plan| plan.execute(&target, &mut NoProgress))
    .map_err(|e| e.to_string())?;
    Ok(std::fs::read(&target).unwrap())
}

fn verify(chain: &ObjectChain, generation: u64) -> Result<(), String> {
    RestorePlan::new(
        chain,
        &RestoreOptions {
            generation: Some(generation),
            ..RestoreOptions::default()
        },
    )
    .and_then(|plan| plan.verify(&mut NoProgress))
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn object(storage: &dyn ObjectStorage, key: &str) -> Vec<u8> {
    let mut bytes = Vec::new();
    storage
        .reader(key)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// Every object of the store, by key.
fn objects(storage: &dyn ObjectStorage) -> BTreeMap<String, Vec<u8>> {
    storage
        .list("")
        .unwrap()
        .into_iter()
        .map(|e| {
            let bytes = object(storage, &e.key);
            (e.key, bytes)
        })
        .collect()
}

/// A chain of four generations under key 7, and each generation's bytes.
fn encrypted_chain(storage: Arc<dyn ObjectStorage>, dir: &Path) -> (ObjectChain, Vec<Vec<u8>>) {
    let chain = ObjectChain::new(storage, "db", dir.join("cache"))
        .unwrap()
        .with_encryption(key(7));
    let mut images = vec![image(1, 300_000)];
    assert_eq!(back_up(&chain, &images[0], None).unwrap(), 1);
    for g in 2..=4u8 {
        let mut next = images.last().unwrap().clone();
        let at = usize::from(g) * 40_000;
        next[at..at + 5000].copy_from_slice(&image(g, 5000));
        assert_eq!(back_up(&chain, &next, None).unwrap(), u64::from(g));
        images.push(next);
    }
    (chain, images)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn an_encrypted_object_chain_round_trips_and_the_store_holds_nothing_in_clear() {
    each_storage(|storage, dir| {
        let (chain, images) = encrypted_chain(storage.clone(), dir);
        for (i, want) in images.iter().enumerate() {
            let g = i as u64 + 1;
            assert_eq!(&restore(&chain, g, dir).unwrap(), want, "generation {g}");
            verify(&chain, g).unwrap();
        }
        let info = chain_info(&chain).unwrap();
        assert_eq!(info.len(), 4);
        assert_eq!(info[0].blocks, 74);
        assert!(info[1].changed_blocks < 5, "{:?}", info[1]);

        // Every object of a generation is sealed; its metadata (host
        // names) and its blocks are nowhere in clear, in the store or in
        // the digest cache.
        let all = objects(storage.as_ref());
        let mut sealed = 0;
        for (key, bytes) in &all {
            if key.ends_with(".ver") || key.ends_with(".lock") {
                continue;
            }
            assert!(bytes.starts_with(SEALED_MAGIC), "{key} is not sealed");
            assert!(
                !contains(bytes, b"PLAINTEXT 0"),
                "{key} holds blocks in clear"
            );
            assert!(
                !contains(bytes, b"db1.example"),
                "{key} holds metadata in clear"
            );
            sealed += 1;
        }
        assert_eq!(sealed, 12, "{:?}", all.keys().collect::<Vec<_>>());
        let cached = std::fs::read(chain.cache().path("db.4.digest")).unwrap();
        assert_eq!(
            cached, all["db.4.digest"],
            "the cache holds the sealed object"
        );

        // A plain chain of the same bytes does hold them in clear (so the
        // checks above can fail).
        let plain = ObjectChain::new(storage.clone(), "plain", dir.join("cache")).unwrap();
        back_up(&plain, &images[0], None).unwrap();
        assert!(contains(
            &object(storage.as_ref(), "plain.1"),
            b"PLAINTEXT 0"
        ));
    });
}

#[test]
fn a_wrong_or_missing_key_is_one_clear_error_and_writes_nothing() {
    each_storage(|storage, dir| {
        let (_, images) = encrypted_chain(storage.clone(), dir);
        let before = objects(storage.as_ref());

        // Another machine with the wrong key: its cache is empty.
        let wrong = ObjectChain::new(storage.clone(), "db", dir.join("cache-wrong"))
            .unwrap()
            .with_encryption(key(8));
        let e = restore(&wrong, 4, dir).unwrap_err();
        assert!(e.contains("wrong key for chain"), "{e}");
        let e = back_up(&wrong, &images[3], None).unwrap_err().to_string();
        assert!(e.contains("wrong key for chain"), "{e}");

        let none = ObjectChain::new(storage.clone(), "db", dir.join("cache-none")).unwrap();
        let e = restore(&none, 4, dir).unwrap_err();
        assert!(e.contains("give"), "{e}");
        let e = back_up(&none, &images[3], None).unwrap_err().to_string();
        assert!(e.contains("key"), "{e}");
        assert!(!e.contains("PLAINTEXT"), "nothing decrypted is shown: {e}");

        let after = objects(storage.as_ref());
        assert_eq!(after, before, "a refused run changed the store");
    });
}

#[test]
fn a_plain_chain_is_not_continued_encrypted_nor_a_legacy_one_started() {
    each_storage(|storage, dir| {
        let plain = ObjectChain::new(storage.clone(), "db", dir.join("cache")).unwrap();
        let data = image(2, 50_000);
        back_up(&plain, &data, None).unwrap();
        let keyed = plain.clone().with_encryption(key(7));
        let e = back_up(&keyed, &data, None).unwrap_err().to_string();
        assert!(e.contains("is not encrypted"), "{e}");
        let e = restore(&keyed, 1, dir).unwrap_err();
        assert!(e.contains("is not encrypted"), "{e}");
        assert_eq!(plain.current_generation().unwrap(), Some(1));

        let legacy = ObjectChain::new(storage.clone(), "old", dir.join("cache"))
            .unwrap()
            .with_encryption(key(7));
        for format in [Compression::None, Compression::Gzip] {
            let e = back_up(&legacy, &data, Some(DiffFormat::Legacy(format)))
                .unwrap_err()
                .to_string();
            assert!(e.contains("cannot be encrypted"), "{e}");
        }
        assert!(storage.list("old.").unwrap().is_empty());
    });
}

#[test]
fn changed_or_misplaced_objects_are_refused_never_restored_wrongly() {
    each_storage(|storage, dir| {
        let (_, images) = encrypted_chain(storage.clone(), dir);
        let original = objects(storage.as_ref());
        // A new reader each time, as a new process is: a chain's chunk
        // cache keeps what it read of an object.
        let chain = || {
            ObjectChain::new(storage.clone(), "db", dir.join("cache"))
                .unwrap()
                .with_encryption(key(7))
        };
        let reset = || {
            for (k, v) in &original {
                storage.put(k, v).unwrap();
            }
            let _ = std::fs::remove_dir_all(dir.join("cache"));
        };
        // Each object of generation 3 with one byte flipped, in its
        // header, its first segment and its last: every byte is
        // authenticated, so each is refused naming the object (the
        // metadata when it is read: a restore does not need it).
        for suffix in ["", ".digest", ".meta.json"] {
            let key = format!("db.3{suffix}");
            let len = original[&key].len();
            for at in [10, 100, 200, len / 2, len - 1] {
                let mut bytes = original[&key].clone();
                bytes[at] ^= 0x20;
                storage.put(&key, &bytes).unwrap();
                let _ = std::fs::remove_dir_all(dir.join("cache"));
                if suffix == ".meta.json" {
                    let e = chain().read_metadata(3).unwrap_err().to_string();
                    assert!(e.contains(&key), "{key} byte {at}: {e}");
                    assert_eq!(restore(&chain(), 3, dir).unwrap(), images[2]);
                } else {
                    let e = restore(&chain(), 3, dir).unwrap_err();
                    assert!(e.contains(&key), "{key} byte {at}: {e}");
                }
                reset();
            }
        }
        // An object put in another generation's place (the digest with
        // its metadata, so that the cache's hash check agrees): refused by
        // its header.
        for suffix in ["", ".digest"] {
            let from = format!("db.2{suffix}");
            let to = format!("db.3{suffix}");
            storage.put(&to, &original[&from]).unwrap();
            if suffix == ".digest" {
                storage
                    .put("db.3.meta.json", &original["db.2.meta.json"])
                    .unwrap();
            }
            let e = restore(&chain(), 3, dir).unwrap_err();
            assert!(e.contains("db.3"), "{to} from {from}: {e}");
            reset();
        }
        storage
            .put("db.3.meta.json", &original["db.2.meta.json"])
            .unwrap();
        let e = chain().read_metadata(3).unwrap_err().to_string();
        assert!(e.contains("db.3.meta.json"), "{e}");
        reset();
        // Another chain's object under the same key: refused.
        let other = ObjectChain::new(storage.clone(), "other", dir.join("cache-other"))
            .unwrap()
            .with_encryption(key(7));
        back_up(&other, &images[0], None).unwrap();
        storage
            .put("db.1", &object(storage.as_ref(), "other.1"))
            .unwrap();
        let e = restore(&chain(), 1, dir).unwrap_err();
        assert!(e.contains("db.1"), "{e}");
        reset();
        assert_eq!(restore(&chain(), 3, dir).unwrap(), images[2]);
    });
}
