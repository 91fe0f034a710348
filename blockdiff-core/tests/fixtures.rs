//! Golden files written by the original Perl blockdiff (see
//! testdata/legacy/README.md): we restore them exactly and write them byte
//! for byte.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use blockdiff_core::{
    BackupOptions, BlockSize, Compression, DiffFormat, DigestFormat, DigestReader, DigestWriter,
    DumpOptions, DumpSource, GenerationStore, LegacySink, NoProgress, RestoreOptions, RestorePlan,
    apply_stream, backup, dump,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/legacy")
}

const SETS: [(&str, u32, Compression); 3] = [
    ("plain", 16384, Compression::None),
    ("gzip", 16384, Compression::Gzip),
    ("bs4k", 4096, Compression::None),
];

fn source(k: u64) -> Vec<u8> {
    fs::read(fixtures().join(format!("source.v{k}"))).unwrap()
}

fn diff_bytes(set: &str, k: u64, compression: Compression) -> Vec<u8> {
    let path = fixtures().join(format!("{set}.{k}{}", compression.suffix()));
    let file = fs::File::open(path).unwrap();
    let mut out = Vec::new();
    compression.reader(file).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn every_set_restores_every_generation_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (set, _, _) in SETS {
        let store = GenerationStore::new(fixtures().join(set));
        assert_eq!(store.current_generation().unwrap(), Some(3), "{set}.ver");
        for k in 1..=3 {
            let target = dir.path().join(format!("{set}-{k}.img"));
            let plan = RestorePlan::new(
                &store,
                &RestoreOptions {
                    generation: Some(k),
                    verify: true,
                    source_shrank: false,
                },
            )
            .unwrap();
            let report = plan.execute(&target, &mut NoProgress).unwrap();
            assert!(report.verified);
            assert_eq!(
                fs::read(&target).unwrap(),
                source(k),
                "{set} generation {k}"
            );
        }
    }
}

#[test]
fn applying_streams_in_order_gives_each_source() {
    let dir = tempfile::tempdir().unwrap();
    for (set, _, compression) in SETS {
        let target = dir.path().join(format!("{set}.img"));
        for k in 1..=3 {
            let path = fixtures().join(format!("{set}.{k}{}", compression.suffix()));
            apply_stream(
                fs::File::open(&path).unwrap(),
                &path,
                &target,
                &mut NoProgress,
            )
            .unwrap();
            assert_eq!(fs::read(&target).unwrap(), source(k), "{set} after {k}");
        }
    }
}

#[test]
fn dumping_against_the_previous_digest_reproduces_the_original_files() {
    for (set, bs, compression) in SETS {
        for k in 1..=3u64 {
            let mut previous = (k > 1).then(|| {
                DigestReader::open(fixtures().join(format!("{set}.{}.md5", k - 1))).unwrap()
            });
            let options = DumpOptions {
                block_size: BlockSize::new(bs).unwrap(),
                threads: 2,
                read_size: 3 * bs as usize, // several chunks even for these small files
                ..DumpOptions::default()
            };
            let mut sink = LegacySink::new(Vec::new(), "diff");
            let mut digest = DigestWriter::new(Vec::new(), "digest");
            let src = source(k);
            dump(
                DumpSource::from_bytes(&src, "source"),
                previous.as_mut(),
                &mut sink,
                &mut digest,
                &options,
                &mut NoProgress,
            )
            .unwrap();
            let diff = sink.into_inner().unwrap();
            assert_eq!(diff, diff_bytes(set, k, compression), "{set}.{k}");
            let md5 = fs::read(fixtures().join(format!("{set}.{k}.md5"))).unwrap();
            assert_eq!(digest.into_inner(), md5, "{set}.{k}.md5");
        }
    }
}

#[test]
fn a_new_store_matches_the_original_files() {
    let dir = tempfile::tempdir().unwrap();
    for (set, bs, compression) in SETS {
        let store = GenerationStore::new(dir.path().join(set));
        let options = BackupOptions {
            dump: DumpOptions {
                block_size: BlockSize::new(bs).unwrap(),
                ..DumpOptions::default()
            },
            format: Some(DiffFormat::Legacy(compression)),
        };
        for k in 1..=3u64 {
            let src = source(k);
            let report = backup(
                &store,
                DumpSource::from_bytes(&src, "source"),
                &options,
                &mut NoProgress,
            )
            .unwrap();
            assert_eq!(report.generation, k);
            let ours = store.diff_path(k, DiffFormat::Legacy(compression));
            let mut got = Vec::new();
            compression
                .reader(fs::File::open(&ours).unwrap())
                .read_to_end(&mut got)
                .unwrap();
            assert_eq!(got, diff_bytes(set, k, compression), "{}", ours.display());
            assert_eq!(
                fs::read(store.digest_path(k, DigestFormat::Legacy)).unwrap(),
                fs::read(fixtures().join(format!("{set}.{k}.md5"))).unwrap()
            );
        }
        assert_eq!(
            fs::read(store.ver_path()).unwrap(),
            fs::read(fixtures().join(format!("{set}.ver"))).unwrap()
        );
    }
}

/// Copies a fixture set into a scratch directory, to damage it.
fn scratch_copy(set: &str) -> (tempfile::TempDir, GenerationStore) {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(fixtures()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        if name.starts_with(&format!("{set}.")) {
            fs::copy(entry.path(), dir.path().join(&name)).unwrap();
        }
    }
    let store = GenerationStore::new(dir.path().join(set));
    (dir, store)
}

fn restore_error(store: &GenerationStore, k: u64) -> String {
    let target = store.dir().join("restored.img");
    let result = RestorePlan::new(
        store,
        &RestoreOptions {
            generation: Some(k),
            verify: true,
            source_shrank: false,
        },
    )
    .and_then(|plan| plan.execute(&target, &mut NoProgress));
    let err = result.expect_err("restore must fail").to_string();
    assert!(
        !target.exists(),
        "a failed restore must not leave a target behind"
    );
    err
}

#[test]
fn truncated_newest_diff_is_detected_by_the_digest() {
    // Cut generation 3 at a record boundary: the stream itself looks fine.
    let (_dir, store) = scratch_copy("plain");
    let path = store.diff_path(3, DiffFormat::Legacy(Compression::None));
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..4 + 8 + 16384]).unwrap();
    let e = restore_error(&store, 3);
    assert!(e.contains("plain.3.md5") && e.contains("offset"), "{e}");
    // Cut inside the data of the last record.
    fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let e = restore_error(&store, 3);
    assert!(e.contains("plain.3") && e.contains("does not match"), "{e}");
    // Cut inside a record header.
    fs::write(&path, &bytes[..4 + 8 + 16384 + 5]).unwrap();
    let e = restore_error(&store, 3);
    assert!(
        e.contains("plain.3") && e.contains("inside a record header at offset 16396"),
        "{e}"
    );
}

#[test]
fn flipped_byte_in_an_older_generation_is_detected() {
    let (_dir, store) = scratch_copy("plain");
    let path = store.diff_path(1, DiffFormat::Legacy(Compression::None));
    let mut bytes = fs::read(&path).unwrap();
    // Block 3 of generation 1 is used by every later generation.
    bytes[4 + 3 * (8 + 16384) + 8 + 100] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let e = restore_error(&store, 3);
    assert!(
        e.contains("plain.1")
            && e.contains("block at offset 49152")
            && e.contains("does not match"),
        "{e}"
    );
}

#[test]
fn chain_problems_are_refused_before_writing() {
    let (_dir, store) = scratch_copy("plain");
    fs::remove_file(store.diff_path(2, DiffFormat::Legacy(Compression::None))).unwrap();
    let e = restore_error(&store, 3);
    assert!(
        e.contains("plain.2") && e.contains("generation 2 is missing"),
        "{e}"
    );

    let (_dir, store) = scratch_copy("plain");
    let md5 = store.digest_path(3, DigestFormat::Legacy);
    let bytes = fs::read(&md5).unwrap();
    fs::write(&md5, &bytes[..bytes.len() - 3]).unwrap();
    let e = restore_error(&store, 3);
    assert!(e.contains("plain.3.md5") && e.contains("offset 244"), "{e}");

    let (_dir, store) = scratch_copy("plain");
    fs::write(store.ver_path(), "3a\n").unwrap();
    let e = restore_error(&store, 3);
    assert!(
        e.contains("plain.ver") && e.contains("not a generation number"),
        "{e}"
    );

    let (_dir, store) = scratch_copy("plain");
    let e = restore_error(&store, 4);
    assert!(e.contains("not committed") && e.contains("says 3"), "{e}");

    // A generation of another block size does not belong to the chain.
    let (dir, store) = scratch_copy("plain");
    fs::copy(fixtures().join("bs4k.2"), dir.path().join("plain.2")).unwrap();
    let e = restore_error(&store, 3);
    assert!(
        e.contains("plain.2") && e.contains("block size is 4096"),
        "{e}"
    );
}

#[test]
fn backup_against_a_corrupt_digest_fails_and_keeps_the_chain() {
    let (_dir, store) = scratch_copy("plain");
    let md5 = store.digest_path(3, DigestFormat::Legacy);
    let bytes = fs::read(&md5).unwrap();
    fs::write(&md5, &bytes[..bytes.len() - 1]).unwrap();
    let src = source(3);
    let e = backup(
        &store,
        DumpSource::from_bytes(&src, "source"),
        &BackupOptions::default(),
        &mut NoProgress,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("plain.3.md5") && e.contains("offset 244"), "{e}");
    assert_eq!(store.current_generation().unwrap(), Some(3));
    assert!(
        !store
            .diff_path(4, DiffFormat::Legacy(Compression::None))
            .exists()
    );
    assert!(!store.digest_path(4, DigestFormat::Legacy).exists());
}

#[test]
fn short_block_that_is_not_the_last_is_refused() {
    // Generation 3 replaced by a stream whose only record is a short block
    // at offset 0: the stream parses, but the source has 16 blocks.
    let (_dir, store) = scratch_copy("plain");
    let mut w = 16384u32.to_le_bytes().to_vec();
    w.extend_from_slice(&[0u8; 8]);
    w.extend_from_slice(&[1u8; 100]);
    fs::write(
        store.diff_path(3, DiffFormat::Legacy(Compression::None)),
        &w,
    )
    .unwrap();
    let e = restore_error(&store, 3);
    assert!(
        e.contains("plain.3")
            && e.contains(
                "stream offset 4: short block at offset 0 is not the source's last block"
            ),
        "{e}"
    );
}

fn v2_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/v2")
}

/// The v2 chains in testdata/v2, written by an earlier build of the tools:
/// a reader that changed the format would fail here.
#[test]
fn golden_v2_chains_restore_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    for set in ["chain", "md5"] {
        let store = GenerationStore::new(v2_fixtures().join(set));
        for k in 1..=3 {
            let target = dir.path().join(format!("{set}-{k}.img"));
            let opts = RestoreOptions {
                generation: Some(k),
                verify: true,
                source_shrank: false,
            };
            let report = RestorePlan::new(&store, &opts)
                .unwrap()
                .execute(&target, &mut NoProgress)
                .unwrap();
            assert!(report.verified);
            assert_eq!(
                fs::read(&target).unwrap(),
                source(k),
                "{set} generation {k}"
            );
            RestorePlan::new(&store, &opts)
                .unwrap()
                .verify(&mut NoProgress)
                .unwrap();
        }
    }
    // Applied as streams, the chain gives the same images.
    let target = dir.path().join("streamed.img");
    for k in 1..=3 {
        let path = v2_fixtures().join(format!("chain.{k}"));
        apply_stream(
            fs::File::open(&path).unwrap(),
            &path,
            &target,
            &mut NoProgress,
        )
        .unwrap();
        assert_eq!(
            fs::read(&target).unwrap(),
            source(k),
            "streamed generation {k}"
        );
    }
}

/// Dumping the fixture sources again gives the same content as the golden
/// v2 files, apart from the creation time in the header.
#[test]
fn golden_v2_chain_is_reproduced() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("chain"));
    let options = BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(4096).unwrap(),
            ..DumpOptions::default()
        },
        format: None,
    };
    for k in 1..=3u64 {
        backup(
            &store,
            DumpSource::from_bytes(&source(k), "source"),
            &options,
            &mut NoProgress,
        )
        .unwrap();
        let ours = fs::read(store.find_diff(k).unwrap().path).unwrap();
        let golden = fs::read(v2_fixtures().join(format!("chain.{k}"))).unwrap();
        assert_eq!(ours.len(), golden.len(), "chain.{k}");
        // Bytes 40..52 hold the creation time and 124..128 the header CRC.
        let differing: Vec<usize> = (0..ours.len()).filter(|&i| ours[i] != golden[i]).collect();
        assert!(
            differing
                .iter()
                .all(|&i| (40..52).contains(&i) || (124..128).contains(&i)),
            "chain.{k}: {differing:?}"
        );
        assert_eq!(
            fs::read(store.find_digest(k).unwrap().0).unwrap(),
            fs::read(v2_fixtures().join(format!("chain.{k}.digest"))).unwrap(),
            "chain.{k}.digest"
        );
    }
}
