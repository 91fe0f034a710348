//! Encrypted chains (FORMAT.md §10): every file sealed, restored only
//! with the chain's key, and any change to any byte, any cut, any file put
//! in another's place refused with an error naming the file, never
//! restored wrongly.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use blockdiff_core::{
    BackupOptions, BlockSize, ChainEncryption, DiffFormat, DumpOptions, DumpSource,
    GenerationStore, NoProgress, RestoreOptions, RestorePlan, backup, backup_with_metadata,
};
use blockdiff_core::{ChainKey, KeySecret};

const SEALED_MAGIC: &[u8] = b"\x89BDE\r\n\x1a\n";

fn key(byte: u8) -> ChainEncryption {
    ChainEncryption::new(KeySecret::Key(ChainKey::from_bytes([byte; 32])))
}

fn passphrase(p: &str) -> ChainEncryption {
    ChainEncryption::new(KeySecret::Passphrase(p.as_bytes().to_vec().into()))
        .with_argon2_cost((64, 1, 1))
}

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

/// A source whose every block says where it is, so that it can be found
/// in a file if it is stored in clear.
fn source(len: usize, seed: u8) -> Vec<u8> {
    // Incompressible bytes (xorshift), so that diffs span several segments.
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(seed);
    let mut src: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for (i, block) in src.chunks_mut(64).enumerate() {
        let text = format!("PLAINTEXT block {i:06} seed {seed:03} ");
        let n = text.len().min(block.len());
        block[..n].copy_from_slice(&text.as_bytes()[..n]);
    }
    src
}

/// `generations` backups of a source of `len` bytes changed a little each
/// time; returns the store (with its key) and each generation's bytes.
fn chain(
    dir: &Path,
    enc: ChainEncryption,
    len: usize,
    generations: u8,
) -> (GenerationStore, Vec<Vec<u8>>) {
    let store = GenerationStore::new(dir.join("vol")).with_encryption(enc);
    let mut src = source(len, 1);
    let mut versions = Vec::new();
    for g in 0..generations {
        if g > 0 {
            let at = (usize::from(g) * 3001) % (len - 100);
            src[at..at + 100].fill(g);
        }
        let facts = BTreeMap::from([("host".to_string(), "db1.example.org".to_string())]);
        backup_with_metadata(
            &store,
            DumpSource::from_bytes(&src, "src"),
            &options(),
            &facts,
            &mut NoProgress,
        )
        .unwrap();
        versions.push(src.clone());
    }
    (store, versions)
}

fn restore(store: &GenerationStore, k: u64, target: &Path) -> Result<Vec<u8>, String> {
    let opts = RestoreOptions {
        generation: Some(k),
        ..RestoreOptions::default()
    };
    RestorePlan::new(store, &opts)
        .and_then(|p| p.execute(target, &mut NoProgress))
        .map(|_| fs::read(target).unwrap())
        .map_err(|e| e.to_string())
}

fn verify(store: &GenerationStore, k: u64) -> Result<(), String> {
    let opts = RestoreOptions {
        generation: Some(k),
        ..RestoreOptions::default()
    };
    RestorePlan::new(store, &opts)
        .and_then(|p| p.verify(&mut NoProgress))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The committed files of generations 1..=n: diff, digest, metadata.
fn files(store: &GenerationStore, n: u64) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for g in 1..=n {
        out.push(store.diff_path(g, DiffFormat::default()));
        out.push(store.digest_path(g, blockdiff_core::DigestFormat::V2));
        out.push(store.metadata_path(g));
    }
    out
}

/// Every file of the directory, by name, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn an_encrypted_chain_round_trips_and_holds_nothing_in_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (store, versions) = chain(dir.path(), key(7), 64 << 10, 3);
    for k in 1..=3u64 {
        let target = dir.path().join(format!("out{k}.img"));
        assert_eq!(
            restore(&store, k, &target).unwrap(),
            versions[k as usize - 1]
        );
        verify(&store, k).unwrap();
    }
    for path in files(&store, 3) {
        let bytes = fs::read(&path).unwrap();
        assert!(
            bytes.starts_with(SEALED_MAGIC),
            "{} is not sealed",
            path.display()
        );
        for needle in [&b"PLAINTEXT"[..], b"db1.example.org", b"source_size"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds {:?} in clear",
                path.display(),
                String::from_utf8_lossy(needle)
            );
        }
    }
    // The metadata reads back through the key.
    let meta = store.read_metadata(2).unwrap().unwrap();
    assert_eq!(meta["host"], "db1.example.org");
    assert_eq!(meta["source_size"], (64 << 10).to_string());
    // A second run (a new process: a new ChainEncryption) continues it.
    let again = GenerationStore::new(dir.path().join("vol")).with_encryption(key(7));
    let mut src = versions[2].clone();
    src[5..10].fill(9);
    let r = backup(
        &again,
        DumpSource::from_bytes(&src, "src"),
        &options(),
        &mut NoProgress,
    )
    .unwrap();
    assert_eq!((r.generation, r.dump.changed_blocks), (4, 1));
    let again = GenerationStore::new(dir.path().join("vol")).with_encryption(key(7));
    assert_eq!(
        restore(&again, 4, &dir.path().join("out4.img")).unwrap(),
        src
    );
}

#[test]
fn equal_blocks_in_two_chains_have_different_hashes() {
    let dir = tempfile::tempdir().unwrap();
    let a = GenerationStore::new(dir.path().join("a")).with_encryption(key(1));
    let b = GenerationStore::new(dir.path().join("b")).with_encryption(key(1));
    let src = source(16 << 10, 3);
    for s in [&a, &b] {
        backup(
            s,
            DumpSource::from_bytes(&src, "src"),
            &options(),
            &mut NoProgress,
        )
        .unwrap();
    }
    let da = a.open_digest(1).unwrap();
    let mut da = da;
    let mut db = b.open_digest(1).unwrap();
    assert_eq!(da.spec().algorithm.name(), "blake3-keyed");
    let (ha, hb) = (da.entry(0).unwrap().unwrap(), db.entry(0).unwrap().unwrap());
    assert_ne!(ha, hb);
    assert_ne!(ha, *blake3::hash(&src[..1024]).as_bytes());
}

#[test]
fn a_passphrase_chain_opens_with_its_passphrase_only() {
    let dir = tempfile::tempdir().unwrap();
    let (_, versions) = chain(dir.path(), passphrase("correct horse"), 8 << 10, 2);
    let store =
        GenerationStore::new(dir.path().join("vol")).with_encryption(passphrase("correct horse"));
    let target = dir.path().join("out.img");
    assert_eq!(restore(&store, 2, &target).unwrap(), versions[1]);
    let wrong =
        GenerationStore::new(dir.path().join("vol")).with_encryption(passphrase("wrong horse"));
    let e = restore(&wrong, 2, &target).unwrap_err();
    assert!(e.starts_with("wrong key for chain"), "{e}");
    let e = restore(
        &GenerationStore::new(dir.path().join("vol")).with_encryption(key(1)),
        2,
        &target,
    )
    .unwrap_err();
    assert!(e.contains("passphrase"), "{e}");
}

#[test]
fn a_wrong_or_missing_key_is_one_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, versions) = chain(dir.path(), key(7), 8 << 10, 2);
    let before = snapshot(dir.path());
    let target = dir.path().join("out.img");
    let name = dir.path().join("vol");

    let wrong = GenerationStore::new(&name).with_encryption(key(8));
    let e = restore(&wrong, 2, &target).unwrap_err();
    assert!(
        e.starts_with(&format!("wrong key for chain {}", name.display())),
        "{e}"
    );
    assert!(verify(&wrong, 1).unwrap_err().starts_with("wrong key"));
    let e = backup(
        &wrong,
        DumpSource::from_bytes(&versions[1], "src"),
        &options(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("wrong key for chain"), "{e}");

    let plain = GenerationStore::new(&name);
    let e = restore(&plain, 2, &target).unwrap_err();
    assert!(e.contains("is encrypted: give its key"), "{e}");
    let e = backup(
        &plain,
        DumpSource::from_bytes(&versions[1], "src"),
        &options(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is encrypted: give its key"), "{e}");
    assert!(plain.read_metadata(1).is_err());

    assert!(!target.exists());
    let after: BTreeMap<_, _> = snapshot(dir.path())
        .into_iter()
        .filter(|(n, _)| n != "vol.lock")
        .collect();
    let before: BTreeMap<_, _> = before
        .into_iter()
        .filter(|(n, _)| n != "vol.lock")
        .collect();
    assert_eq!(before, after, "a refused run changed the store");
}

#[test]
fn a_plain_chain_is_not_continued_encrypted_nor_is_a_legacy_one_started() {
    let dir = tempfile::tempdir().unwrap();
    let plain = GenerationStore::new(dir.path().join("vol"));
    let src = source(8 << 10, 1);
    backup(
        &plain,
        DumpSource::from_bytes(&src, "src"),
        &options(),
        &mut NoProgress,
    )
    .unwrap();
    let before = snapshot(dir.path());
    let keyed = GenerationStore::new(dir.path().join("vol")).with_encryption(key(1));
    let e = backup(
        &keyed,
        DumpSource::from_bytes(&src, "src"),
        &options(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("is not encrypted, but a key was given"), "{e}");
    let e = restore(&keyed, 1, &dir.path().join("out.img")).unwrap_err();
    assert!(e.contains("is not encrypted, but a key was given"), "{e}");
    assert_eq!(snapshot(dir.path()), before);

    let legacy = GenerationStore::new(dir.path().join("old")).with_encryption(key(1));
    let opts = BackupOptions {
        format: Some(DiffFormat::Legacy(blockdiff_core::Compression::None)),
        ..options()
    };
    let e = backup(
        &legacy,
        DumpSource::from_bytes(&src, "src"),
        &opts,
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("cannot be encrypted"), "{e}");
    assert!(legacy.current_generation().unwrap().is_none());
    assert!(!dir.path().join("old.1").exists());
}

/// Every byte of every file of a two-generation chain flipped in turn:
/// generation 2 restores exactly or fails naming the file, and the
/// damaged file's own generation fails verification (its metadata fails
/// to read).
#[test]
fn every_flipped_byte_is_refused_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (store, versions) = chain(dir.path(), key(7), 6 << 10, 2);
    let target = dir.path().join("out.img");
    for path in files(&store, 2) {
        let good = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            fs::write(&path, &bad).unwrap();
            check_damage(
                &store,
                &name,
                &versions[1],
                &target,
                &format!("flip at {at}"),
            );
        }
        fs::write(&path, &good).unwrap();
    }
    assert!(restore(&store, 2, &target).unwrap() == versions[1]);
}

/// Every file cut at every length: refused as a flipped byte is.
#[test]
fn every_truncation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, versions) = chain(dir.path(), key(7), 6 << 10, 2);
    let target = dir.path().join("out.img");
    for path in files(&store, 2) {
        let good = fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for len in 0..good.len() {
            fs::write(&path, &good[..len]).unwrap();
            check_damage(
                &store,
                &name,
                &versions[1],
                &target,
                &format!("cut to {len}"),
            );
        }
        fs::write(&path, &good).unwrap();
    }
}

/// With file `name` damaged: generation 2 restores exactly or fails
/// naming the file, leaving no target; only what a restore of generation
/// 2 does not need (generation 1's digest, the metadata) may go unnoticed
/// by it; the file's generation fails verification, or its metadata fails
/// to read.
fn check_damage(store: &GenerationStore, name: &str, want: &[u8], target: &Path, what: &str) {
    let is_meta = name.ends_with(".meta.json");
    let _ = fs::remove_file(target);
    match restore(store, 2, target) {
        Ok(image) => {
            assert!(image == want, "{what} of {name} restored wrongly");
            assert!(
                is_meta || name == "vol.1.digest",
                "{what} of {name} went unnoticed"
            );
        }
        Err(e) => {
            assert!(e.contains(name), "{what} of {name}: {e}");
            assert!(!target.exists(), "{what} of {name} left a target");
        }
    }
    let generation = if name.starts_with("vol.1") { 1 } else { 2 };
    if is_meta {
        assert!(store.read_metadata(generation).is_err(), "{what} of {name}");
    } else {
        assert!(
            verify(store, generation).is_err(),
            "verify missed {what} of {name}"
        );
    }
}

/// Files put in other files' places: an older generation's files under a
/// newer generation's names, a diff from another chain with the same key,
/// a segment of another generation's diff spliced in.
#[test]
fn files_and_segments_out_of_place_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = chain(dir.path(), key(7), 200 << 10, 3);
    let other_dir = dir.path().join("other");
    fs::create_dir(&other_dir).unwrap();
    let (other, _) = chain(&other_dir, key(7), 200 << 10, 3);
    let target = dir.path().join("out.img");
    let diff = |s: &GenerationStore, g| s.diff_path(g, DiffFormat::default());
    let digest = |s: &GenerationStore, g| s.digest_path(g, blockdiff_core::DigestFormat::V2);

    let check = |what: &str, expect: &str| {
        let e = restore(&store, 3, &target).unwrap_err();
        assert!(e.contains(expect), "{what}: {e}");
        assert!(verify(&store, 3).is_err(), "{what}");
        assert!(!target.exists());
    };
    let swap = |path: &Path, bytes: &[u8], what: &str, expect: &str| {
        let good = fs::read(path).unwrap();
        fs::write(path, bytes).unwrap();
        check(what, expect);
        fs::write(path, good).unwrap();
    };

    // A whole generation replaced by an older one.
    let (d3, g3) = (
        fs::read(diff(&store, 3)).unwrap(),
        fs::read(digest(&store, 3)).unwrap(),
    );
    fs::copy(diff(&store, 2), diff(&store, 3)).unwrap();
    fs::copy(digest(&store, 2), digest(&store, 3)).unwrap();
    check("generation 2 as generation 3", "not generation 3");
    fs::write(diff(&store, 3), d3).unwrap();
    fs::write(digest(&store, 3), g3).unwrap();

    // The diff of another chain with the same key.
    swap(
        &diff(&store, 2),
        &fs::read(diff(&other, 2)).unwrap(),
        "another chain's diff",
        "another chain",
    );
    // A digest in a diff's place.
    swap(
        &diff(&store, 2),
        &fs::read(digest(&store, 2)).unwrap(),
        "a digest as a diff",
        "not a diff",
    );
    // The second segment of generation 1's diff spliced into generation
    // 2's at the same place, in a chain whose generation 2 is a new
    // source (both diffs span several segments).
    let big_dir = dir.path().join("big");
    fs::create_dir(&big_dir).unwrap();
    let big = GenerationStore::new(big_dir.join("vol")).with_encryption(key(7));
    let sources = [source(400 << 10, 1), source(400 << 10, 2)];
    for src in &sources {
        backup(
            &big,
            DumpSource::from_bytes(src, "src"),
            &options(),
            &mut NoProgress,
        )
        .unwrap();
    }
    let seg = 128 + 65536 + 16;
    let d1 = fs::read(diff(&big, 1)).unwrap();
    let good = fs::read(diff(&big, 2)).unwrap();
    assert!(
        d1.len() > 2 * seg && good.len() > 2 * seg,
        "{} {}",
        d1.len(),
        good.len()
    );
    let mut spliced = good.clone();
    spliced[seg..2 * seg - 128].copy_from_slice(&d1[seg..2 * seg - 128]);
    fs::write(diff(&big, 2), &spliced).unwrap();
    let e = restore(&big, 2, &target).unwrap_err();
    assert!(e.contains("vol.2") && e.contains(&seg.to_string()), "{e}");
    assert!(!target.exists());
    fs::write(diff(&big, 2), &good).unwrap();
    assert!(restore(&big, 2, &target).unwrap() == sources[1]);
    fs::remove_file(&target).unwrap();
    // Two segments of one file swapped.
    let mut swapped = d1.clone();
    let stride = 65536 + 16;
    let (a, b) = (128, 128 + stride);
    let first: Vec<u8> = swapped[a..a + stride].to_vec();
    let second: Vec<u8> = swapped[b..b + stride].to_vec();
    swapped[a..a + stride].copy_from_slice(&second);
    swapped[b..b + stride].copy_from_slice(&first);
    fs::write(diff(&big, 1), &swapped).unwrap();
    let e = restore(&big, 1, &target).unwrap_err();
    assert!(e.contains("vol.1") && e.contains("segment 0"), "{e}");
    assert!(!target.exists());
    fs::write(diff(&big, 1), &d1).unwrap();
    // Everything put back restores.
    restore(&store, 3, &target).unwrap();
}

/// The encrypted fixture chain (testdata/v2-encrypted, written by an
/// earlier build with the published test key) restores to the legacy
/// fixtures' sources, with the key file (once private) and only with it.
#[test]
fn the_encrypted_fixture_chain_restores_with_the_published_key() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata");
    let dir = tempfile::tempdir().unwrap();
    for f in fs::read_dir(data.join("v2-encrypted")).unwrap() {
        let f = f.unwrap();
        fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let key_path = dir.path().join("test.key");
    // Git keeps no modes: the checkout's key file is refused until private.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(blockdiff_core::read_key_file(&key_path).is_err());
    fs::set_permissions(&key_path, fs::Permissions::from_mode(0o600)).unwrap();
    let published = blockdiff_core::read_key_file(&key_path).unwrap();
    let store = GenerationStore::new(dir.path().join("chain"))
        .with_encryption(ChainEncryption::new(KeySecret::Key(published)));
    for k in 1..=2u64 {
        let want = fs::read(data.join(format!("legacy/source.v{k}"))).unwrap();
        let out = dir.path().join(format!("out{k}"));
        assert!(restore(&store, k, &out).unwrap() == want, "generation {k}");
        verify(&store, k).unwrap();
    }
    let e = restore(
        &GenerationStore::new(dir.path().join("chain")).with_encryption(key(9)),
        2,
        &dir.path().join("x"),
    )
    .unwrap_err();
    assert!(e.starts_with("wrong key for chain"), "{e}");
}
