//! The reader against restores: every generation of v2 and legacy chains,
//! read at random offsets and lengths from several threads, equals the
//! image; a damaged frame fails exactly the reads of its blocks.

use std::collections::BTreeMap;

use archive_format::{Compression, DiffFile, FrameCompression};

use super::*;
use crate::{
    BackupOptions, BlockSize, ChainEncryption, ChainKey, DumpOptions, DumpSource, GenerationStore,
    KeySecret, NoProgress, backup_with_metadata,
};

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// Generations of an image of `len` bytes (not a whole number of blocks):
/// compressible and random stretches, zero blocks, changes each time, a
/// growth and a shrink. Returns each generation's bytes.
fn chain(store: &GenerationStore, format: Option<DiffFormat>, len: usize) -> Vec<Vec<u8>> {
    let mut rand = xorshift(0xfeed);
    let mut image: Vec<u8> = (0..len)
        .map(|i| {
            if (i / 5000) % 3 == 0 {
                (i % 251) as u8
            } else {
                rand() as u8
            }
        })
        .collect();
    image[20_000..40_000].fill(0);
    let mut images = Vec::new();
    for g in 0..5 {
        match g {
            0 => {}
            3 => image.extend((0..3000).map(|i| i as u8)),
            4 => image.truncate(len - 1234),
            _ => {
                for _ in 0..4 {
                    let at = rand() as usize % (image.len() - 3000);
                    let n = 1 + rand() as usize % 3000;
                    let v = rand() as u8;
                    image[at..at + n].fill(v);
                }
            }
        }
        backup_with_metadata(
            store,
            DumpSource::from_bytes(&image, "image"),
            &BackupOptions {
                dump: DumpOptions {
                    block_size: BlockSize::new(1024).unwrap(),
                    // Several frames per generation.
                    read_size: 16 << 10,
                    ..DumpOptions::default()
                },
                format,
            },
            &BTreeMap::new(),
            &mut NoProgress,
        )
        .unwrap();
        images.push(image.clone());
    }
    images
}

fn open(store: &GenerationStore, g: u64) -> GenerationReader {
    GenerationReader::open(
        store,
        &ReaderOptions {
            generation: Some(g),
            cache_bytes: 40_000,
        },
    )
    .unwrap()
}

/// Random reads (some crossing blocks, some past the end) from two
/// threads, each compared with the image.
fn check_reads(reader: &GenerationReader, want: &[u8], what: &str) {
    assert_eq!(reader.size(), want.len() as u64, "{what}");
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || {
                let mut rand = xorshift(77 + t);
                let mut buf = vec![0u8; 9000];
                for _ in 0..300 {
                    let offset = rand() % (want.len() as u64 + 100);
                    let n = 1 + rand() as usize % buf.len();
                    let got = reader.read_at(&mut buf[..n], offset).unwrap();
                    let start = (offset as usize).min(want.len());
                    let end = (start + n).min(want.len());
                    assert_eq!(got, end - start, "{what}: read of {n} at {offset}");
                    assert!(buf[..got] == want[start..end], "{what}: bytes at {offset}");
                }
            });
        }
    });
    // The whole image in one read.
    let mut all = vec![0u8; want.len() + 10];
    assert_eq!(reader.read_at(&mut all, 0).unwrap(), want.len());
    assert!(all[..want.len()] == *want, "{what}: whole image");
}

#[test]
fn every_generation_of_v2_and_legacy_chains_reads_as_its_image() {
    for format in [
        None,
        Some(DiffFormat::V2 {
            compression: FrameCompression::None,
            level: 0,
        }),
        Some(DiffFormat::Legacy(Compression::None)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("vol"));
        let images = chain(&store, format, 300_500);
        for (i, want) in images.iter().enumerate() {
            let reader = open(&store, i as u64 + 1);
            check_reads(&reader, want, &format!("{format:?} generation {}", i + 1));
        }
    }
}

#[test]
fn an_encrypted_chain_reads_with_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let enc = ChainEncryption::new(KeySecret::Key(ChainKey::from_bytes([3; 32])));
    let store = GenerationStore::new(dir.path().join("vol")).with_encryption(enc);
    let images = chain(&store, None, 100_000);
    check_reads(&open(&store, 2), &images[1], "encrypted generation 2");
    let plain = GenerationStore::new(dir.path().join("vol"));
    let e = GenerationReader::open(&plain, &ReaderOptions::default()).unwrap_err();
    assert!(e.to_string().contains("give its key"), "{e}");
}

#[test]
fn a_gzip_legacy_chain_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("vol"));
    chain(&store, Some(DiffFormat::Legacy(Compression::Gzip)), 50_000);
    let e = GenerationReader::open(&store, &ReaderOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("gzip") && e.contains("blockdiff-restore"), "{e}");
}

/// The blocks generation K takes from frame `frame` of diff `diff_path`.
fn blocks_of_frame(reader: &GenerationReader, diff: u32, frame: u32) -> Vec<u64> {
    let blocks = reader.size().div_ceil(u64::from(reader.block_size()));
    (0..blocks)
        .filter(|&b| {
            matches!(reader.map.find(b).map(|r| r.place_of(b)),
                Some(Place::Data { diff: d, unit, .. }) if d == diff && unit == frame)
        })
        .collect()
}

#[test]
fn a_damaged_frame_fails_exactly_the_reads_of_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("vol"));
    let images = chain(
        &store,
        Some(DiffFormat::V2 {
            compression: FrameCompression::None,
            level: 0,
        }),
        300_500,
    );
    let want = &images[1];
    // Generation 1's frame 1 (stored uncompressed): a byte of its
    // payload changed, its CRC left as it was.
    let path = store.diff_path(
        1,
        DiffFormat::V2 {
            compression: FrameCompression::None,
            level: 0,
        },
    );
    let diff = DiffFile::open(std::fs::File::open(&path).unwrap()).unwrap();
    let entry = diff.frames()[1];
    let mut bytes = std::fs::read(&path).unwrap();
    let at = (entry.offset + u64::from(entry.len) - 10) as usize;
    bytes[at] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let reader = open(&store, 2);
    // Generation 2 is diff 1 of the chain (newest first).
    let damaged = blocks_of_frame(&reader, 1, 1);
    assert!(!damaged.is_empty());
    let bs = u64::from(reader.block_size());
    let blocks = reader.size().div_ceil(bs);
    let mut failed = Vec::new();
    for b in 0..blocks {
        let mut buf = vec![0u8; bs as usize];
        match reader.read_at(&mut buf, b * bs) {
            Ok(n) => {
                let start = (b * bs) as usize;
                assert!(buf[..n] == want[start..start + n], "block {b}: wrong bytes");
            }
            Err(e) => {
                let text = e.to_string();
                assert!(
                    text.contains(&path.display().to_string()) && text.contains("frame 1"),
                    "{text}"
                );
                failed.push(b);
            }
        }
    }
    assert_eq!(failed, damaged);
}

#[test]
fn a_block_that_does_not_hash_to_the_digest_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("vol"));
    chain(&store, Some(DiffFormat::Legacy(Compression::None)), 60_000);
    // A byte of generation 1's first record changed: the stream has no
    // checksum, the digest catches it.
    let path = store.diff_path(1, DiffFormat::Legacy(Compression::None));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[4 + 8 + 100] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let reader = open(&store, 5);
    let mut buf = [0u8; 10];
    let e = reader.read_at(&mut buf, 95).unwrap_err().to_string();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("block at offset 0"),
        "{e}"
    );
    // Blocks after it are fine.
    reader.read_at(&mut buf, 2048).unwrap();
}
