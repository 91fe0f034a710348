//! Dumps that read only tracked changes ([`DumpOptions::tracked`]): what a
//! user relies on is that a generation made from correct tracking is the
//! same, byte for byte, as one made by a full scan, while reading only the
//! blocks the changes touch; that a full scan with
//! [`DumpOptions::verify_tracked`] names the blocks a wrong tracking
//! missed; and that tracking is refused where it cannot work.

mod common;

use std::fs;
use std::path::Path;
use std::sync::Arc;

use archive_format::{Compression, FrameCompression};
use blockdiff_core::{
    BackupOptions, BlockSize, DiffFormat, DigestReader, DigestWriter, DumpOptions, DumpSource,
    Error, GenerationStore, NoProgress, TrackedChanges, V2Sink, backup, dump,
};
use common::noise;

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
/// The pool's chunk in these tests: 64 KiB, sixteen of our 4 KiB blocks.
const POOL_CHUNK: u64 = 64 << 10;

fn options(format: DiffFormat, tracked: Option<TrackedChanges>, threads: usize) -> BackupOptions {
    BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(4096).unwrap(),
            read_size: MIB,
            threads,
            tracked: tracked.map(Arc::new),
            ..DumpOptions::default()
        },
        format: Some(format),
    }
}

/// Writes `len` bytes of noise at `offset` of `image`, and returns the
/// range as a thin pool would report it: every 64 KiB chunk it touches.
fn write(image: &mut [u8], seed: u64, offset: usize, len: usize) -> (u64, u64) {
    let end = (offset + len).min(image.len());
    image[offset..end].copy_from_slice(&noise(seed, end - offset));
    let first = offset as u64 / POOL_CHUNK;
    let last = (end as u64).div_ceil(POOL_CHUNK);
    (first * POOL_CHUNK, (last - first) * POOL_CHUNK)
}

/// A diff with a v2 header's creation time and header CRC
/// (bytes 40..52 and 124..128, FORMAT.md §3) zeroed: what two runs of the
/// same dump differ in.
fn timeless(mut file: Vec<u8>) -> Vec<u8> {
    if file.starts_with(b"\x89BDF\r\n\x1a\n") {
        file[40..52].fill(0);
        file[124..128].fill(0);
    }
    file
}

fn back_up(
    store: &GenerationStore,
    path: &Path,
    opts: &BackupOptions,
) -> blockdiff_core::BackupReport {
    backup(
        store,
        DumpSource::open(path).unwrap(),
        opts,
        &mut NoProgress,
    )
    .unwrap()
}

#[test]
fn a_tracked_generation_equals_a_full_scan_and_reads_only_the_changed_chunks() {
    // 6 MiB and a short last block; writes of a few bytes, of a block,
    // across block, piece (128 KiB) and chunk (1 MiB) edges, and at the end.
    let size = 6 * MIB + 1000;
    let formats = [
        DiffFormat::Legacy(Compression::Gzip),
        DiffFormat::V2 {
            compression: FrameCompression::Zstd,
            level: 1,
        },
    ];
    for format in formats {
        for threads in [1, 3] {
            let dir = tempfile::tempdir().unwrap();
            // The same name in two directories: a v2 header names the source.
            fs::create_dir(dir.path().join("t")).unwrap();
            fs::create_dir(dir.path().join("f")).unwrap();
            let tracked_img = dir.path().join("t/disk.img");
            let full_img = dir.path().join("f/disk.img");
            let tracked_store = GenerationStore::new(dir.path().join("tracked"));
            let full_store = GenerationStore::new(dir.path().join("full"));
            let mut image = noise(3, size);
            for (path, store) in [(&tracked_img, &tracked_store), (&full_img, &full_store)] {
                fs::write(path, &image).unwrap();
                back_up(store, path, &options(format, None, threads));
            }
            let rounds: [&[(usize, usize)]; 3] = [
                &[
                    (10, 3),
                    (128 * KIB - 100, 200),
                    (MIB - 4096, 8192),
                    (size - 10, 10),
                ],
                &[(5 * MIB, 300 * KIB), (0, 4096)],
                &[],
            ];
            for (round, writes) in rounds.iter().enumerate() {
                let ranges: Vec<(u64, u64)> = writes
                    .iter()
                    .enumerate()
                    .map(|(k, &(at, len))| write(&mut image, (round * 10 + k) as u64, at, len))
                    .collect();
                fs::write(&tracked_img, &image).unwrap();
                fs::write(&full_img, &image).unwrap();
                let changes = TrackedChanges::from_byte_ranges(ranges);
                let tracked = back_up(
                    &tracked_store,
                    &tracked_img,
                    &options(format, Some(changes.clone()), threads),
                );
                let full = back_up(&full_store, &full_img, &options(format, None, threads));
                let g = round as u64 + 2;
                assert_eq!(tracked.generation, g);
                // The same generation, byte for byte (but for the v2
                // header's creation time): diff and digest.
                for (a, b) in [
                    (
                        tracked_store.diff_path(g, format),
                        full_store.diff_path(g, format),
                    ),
                    (
                        tracked_store.digest_path(g, format.digest_format()),
                        full_store.digest_path(g, format.digest_format()),
                    ),
                ] {
                    assert!(
                        timeless(fs::read(&a).unwrap()) == timeless(fs::read(&b).unwrap()),
                        "{format:?} {threads} round {round}: {} differs",
                        a.display()
                    );
                }
                assert_eq!(tracked.dump.changed_blocks, full.dump.changed_blocks);
                assert_eq!(full.dump.read_bytes, size as u64);
                // Read: the tracked chunks and nothing else (the last one
                // is cut at the end of the source).
                let expect = changes
                    .ranges()
                    .iter()
                    .map(|&(s, e)| e.min(size as u64) - s.min(size as u64))
                    .sum::<u64>();
                assert_eq!(tracked.dump.read_bytes, expect, "{format:?} round {round}");
                let restored = common::plan(&tracked_store, g, true, 2);
                let out = dir.path().join("restored");
                restored.execute(&out, &mut NoProgress).unwrap();
                assert!(
                    fs::read(&out).unwrap() == image,
                    "round {round}: the restore differs"
                );
            }
        }
    }
}

#[test]
fn a_full_scan_names_the_blocks_the_tracking_missed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let store = GenerationStore::new(dir.path().join("db"));
    let size = 2 * MIB;
    let format = DiffFormat::V2 {
        compression: FrameCompression::Zstd,
        level: 1,
    };
    let mut image = noise(1, size);
    fs::write(&path, &image).unwrap();
    back_up(&store, &path, &options(format, None, 2));
    // Two writes; the tracking knows of the first only.
    let known = write(&mut image, 50, 100 * KIB, 4096);
    write(&mut image, 51, MIB + 8192, 4096);
    fs::write(&path, &image).unwrap();
    let changes = TrackedChanges::from_byte_ranges([known]);
    let mut opts = options(format, Some(changes.clone()), 2);
    opts.dump.verify_tracked = true;
    let report = back_up(&store, &path, &opts);
    assert_eq!(
        report.dump.read_bytes, size as u64,
        "a verifying scan reads everything"
    );
    assert_eq!(report.dump.changed_blocks, 2);
    assert_eq!(report.dump.untracked_changes, 1);
    assert_eq!(report.dump.first_untracked, Some((MIB + 8192) as u64));
    // The generation is the full scan's: it restores exactly.
    let out = dir.path().join("restored");
    common::plan(&store, 2, true, 2)
        .execute(&out, &mut NoProgress)
        .unwrap();
    assert!(fs::read(&out).unwrap() == image);
    // Tracking that is right: nothing missed.
    let again = write(&mut image, 52, 0, 10);
    fs::write(&path, &image).unwrap();
    let mut opts = options(format, Some(TrackedChanges::from_byte_ranges([again])), 2);
    opts.dump.verify_tracked = true;
    let report = back_up(&store, &path, &opts);
    assert_eq!(
        (report.dump.changed_blocks, report.dump.untracked_changes),
        (1, 0)
    );
    assert_eq!(report.dump.first_untracked, None);
}

#[test]
fn tracking_without_a_previous_digest_or_from_a_stream_is_refused() {
    let image = noise(9, MIB);
    let opts = DumpOptions {
        tracked: Some(Arc::new(TrackedChanges::from_byte_ranges([(0, 4096)]))),
        ..DumpOptions::default()
    };
    let mut sink = V2Sink::new(Vec::new(), "out", FrameCompression::None, 0);
    let mut digest = DigestWriter::new(Vec::new(), "digest");
    let err = dump(
        DumpSource::from_bytes(&image, "mem"),
        None::<&mut DigestReader<&[u8]>>,
        &mut sink,
        &mut digest,
        &opts,
        &mut NoProgress,
    )
    .unwrap_err();
    assert!(matches!(err, Error::InvalidOption(_)), "{err}");
    assert!(
        err.to_string()
            .contains("tracked changes needs the previous digest"),
        "{err}"
    );
    // Nothing was written before the refusal.
    assert!(digest.into_inner().is_empty());
}
