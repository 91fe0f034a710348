//! The reader against restores: every generation of v2 and legacy chains,
//! read at random offsets and lengths from several threads, equals the
//! image; a damaged compressed frame fails exactly the reads of its
//! blocks, a damaged block of a frame stored uncompressed only its own.

use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Generation 2 of a chain whose generation-1 diff has a payload byte of
/// one frame changed (its CRC left as it was): which blocks fail to read,
/// and the blocks of that frame generation 2 takes.
fn read_with_a_damaged_frame(compression: FrameCompression) -> (Vec<u64>, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("vol"));
    let format = DiffFormat::V2 {
        compression,
        level: 1,
    };
    let images = chain(&store, Some(format), 300_500);
    let want = &images[1];
    let path = store.diff_path(1, format);
    let diff = DiffFile::open(std::fs::File::open(&path).unwrap()).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    let reader = open(&store, 2);
    // Generation 2 is diff 1 of the chain (newest first). The first frame
    // of generation 1 that generation 2 still reads, stored as the test
    // wants it (compression byte 0 or 1).
    let wanted = u8::from(compression != FrameCompression::None);
    let (frame, taken) = (0..diff.frames().len() as u32)
        .map(|f| (f, blocks_of_frame(&reader, 1, f)))
        .find(|(f, taken)| {
            !taken.is_empty() && bytes[diff.frames()[*f as usize].offset as usize + 4] == wanted
        })
        .expect("a frame of that kind");
    let entry = diff.frames()[frame as usize];
    let payload = entry.offset as usize + 24 + 16 * entry.extents as usize;
    // A byte in the middle of the first block taken from it.
    let Some(Place::Data { at, .. }) = reader.map.find(taken[0]).map(|r| r.place_of(taken[0]))
    else {
        unreachable!("a block of the frame")
    };
    let hit = if compression == FrameCompression::None {
        payload + at as usize + 100
    } else {
        entry.offset as usize + entry.len as usize - 10
    };
    bytes[hit] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();

    let reader = open(&store, 2);
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
                assert!(text.contains(&path.display().to_string()), "{text}");
                failed.push(b);
            }
        }
    }
    (failed, taken)
}

#[test]
fn a_damaged_compressed_frame_fails_exactly_the_reads_of_its_blocks() {
    let (failed, taken) = read_with_a_damaged_frame(FrameCompression::Zstd);
    assert!(taken.len() > 1);
    assert_eq!(failed, taken);
}

#[test]
fn a_damaged_byte_of_a_stored_frame_fails_only_the_reads_of_its_block() {
    // Frames stored uncompressed are read a block at a time, each checked
    // against the digest: the other blocks of the frame are good, and
    // read.
    let (failed, taken) = read_with_a_damaged_frame(FrameCompression::None);
    assert!(taken.len() > 1);
    assert_eq!(failed, vec![taken[0]]);
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

/// A local store, or the same seen as an object store would be (no local
/// store), its diffs' reads counted in bytes.
struct Counting {
    store: GenerationStore,
    local: bool,
    read: Arc<std::sync::atomic::AtomicU64>,
}

struct Counted {
    inner: DiffBytes,
    read: Arc<std::sync::atomic::AtomicU64>,
}

impl archive_format::ReadAt for Counted {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let n = self.inner.read_at(buf, offset)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
    fn size(&self) -> std::io::Result<u64> {
        self.inner.size()
    }
}

impl GenerationSource for Counting {
    fn name(&self) -> &Path {
        self.store.name()
    }
    fn ver_path(&self) -> PathBuf {
        self.store.ver_path()
    }
    fn current_generation(&self) -> Result<Option<u64>> {
        GenerationSource::current_generation(&self.store)
    }
    fn diff_path(&self, generation: u64, format: DiffFormat) -> PathBuf {
        self.store.diff_path(generation, format)
    }
    fn metadata_path(&self, generation: u64) -> PathBuf {
        self.store.metadata_path(generation)
    }
    fn find_diff(&self, generation: u64) -> Result<DiffLocation> {
        GenerationSource::find_diff(&self.store, generation)
    }
    fn find_digest(&self, generation: u64) -> Result<(PathBuf, archive_format::DigestFormat)> {
        GenerationSource::find_digest(&self.store, generation)
    }
    fn read_metadata(&self, generation: u64) -> Result<Option<BTreeMap<String, String>>> {
        GenerationSource::read_metadata(&self.store, generation)
    }
    fn open_diff(&self, diff: &DiffLocation) -> Result<DiffBytes> {
        Ok(Arc::new(Counted {
            inner: self.store.open_diff(diff)?,
            read: Arc::clone(&self.read),
        }))
    }
    fn local_store(&self) -> Option<&GenerationStore> {
        self.local.then_some(&self.store)
    }
}

#[test]
fn a_block_of_a_stored_frame_is_read_alone_from_a_local_store_and_with_its_frame_from_an_object_store()
 {
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
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = |local: bool| {
        let source = Counting {
            store: store.clone(),
            local,
            read: Arc::clone(&read),
        };
        let reader = GenerationReader::open(
            &source,
            &ReaderOptions {
                generation: Some(1),
                ..ReaderOptions::default()
            },
        )
        .unwrap();
        // Generation 1's first frame, of several blocks (16 KiB reads
        // made the frames).
        let taken = blocks_of_frame(&reader, 0, 0);
        assert!(taken.len() > 4, "{taken:?}");
        let bs = u64::from(reader.block_size());
        let at = taken[2] * bs;
        read.store(0, std::sync::atomic::Ordering::Relaxed);
        let mut buf = vec![0u8; 10];
        reader.read_at(&mut buf, at + 5).unwrap();
        assert_eq!(buf, images[0][at as usize + 5..at as usize + 15]);
        read.load(std::sync::atomic::Ordering::Relaxed)
    };
    // Locally: the frame's header and the one block of 1 KiB.
    assert_eq!(counted(true), 24 + 1024);
    // From an object store: the whole frame, in one read.
    let whole = counted(false);
    assert!(whole > 4 * 1024, "{whole} bytes read from the object store");
}
