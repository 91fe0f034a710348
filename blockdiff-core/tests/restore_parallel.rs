//! A restore gives the same image, report and error whatever its thread
//! count: frames (v2) and record batches (legacy) are read and hashed on
//! workers, but checked and written in plan order, and the first error in
//! that order wins. Every test compares 1 thread (all on the calling
//! thread) with several; nothing depends on timing.

mod common;

use std::fs;
use std::path::Path;

use common::{noise, plan};

use archive_format::{
    DiffFile, DiffWriter, ExtentKind, Frame, FrameBuilder, FrameCompressor, FrameDecompressor,
    data_len,
};
use blockdiff_core::{
    BackupOptions, BlockSize, Compression, DiffFormat, DumpOptions, DumpSource, Error,
    GenerationStore, HashAlgorithm, NoProgress, RestoreReport, backup,
};

const BS: u32 = 1024;

fn options(format: Option<DiffFormat>) -> BackupOptions {
    BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(BS).unwrap(),
            // Four blocks per v2 frame: hundreds of frames per generation.
            read_size: 4 * BS as usize,
            hash: match format {
                Some(DiffFormat::Legacy(_)) => HashAlgorithm::Md5,
                _ => HashAlgorithm::Blake3,
            },
            ..DumpOptions::default()
        },
        format,
    }
}

/// Four generations of a source of about 512 KiB that grows and shrinks
/// (a short last block in some), each overwriting ranges that overlap the
/// previous ones' and adding zero runs.
fn chain(dir: &Path, format: Option<DiffFormat>) -> (GenerationStore, Vec<Vec<u8>>) {
    let store = GenerationStore::new(dir.join("vol"));
    let mut src = noise(1, 512 * 1024 + 300);
    src[40_000..90_000].fill(0);
    let mut versions = Vec::new();
    for g in 1..=4u64 {
        match g {
            2 => {
                src[10_000..200_000].copy_from_slice(&noise(2, 190_000));
                src[300_000..330_000].fill(0);
            }
            3 => {
                src.truncate(480 * 1024 + 77);
                src[150_000..260_000].copy_from_slice(&noise(3, 110_000));
                src[50_000..60_000].copy_from_slice(&noise(33, 10_000));
                src[400_000..420_000].fill(0);
            }
            4 => {
                src.extend_from_slice(&noise(4, 40 * 1024));
                src[5_000..160_000].copy_from_slice(&noise(44, 155_000));
                src[320_000..325_000].copy_from_slice(&noise(444, 5_000));
                src[250_000..256_000].fill(0);
            }
            _ => {}
        }
        backup(
            &store,
            DumpSource::from_bytes(&src, "src"),
            &options(format),
            &mut NoProgress,
        )
        .unwrap();
        versions.push(src.clone());
    }
    (store, versions)
}

/// Restores generation `k` with `threads`: the image and the report, or
/// the error's message.
fn restore(
    store: &GenerationStore,
    k: u64,
    verify: bool,
    threads: usize,
    target: &Path,
) -> Result<(Vec<u8>, RestoreReport), String> {
    let _ = fs::remove_file(target);
    let report = plan(store, k, verify, threads)
        .execute(target, &mut NoProgress)
        .map_err(|e| e.to_string())?;
    Ok((fs::read(target).unwrap(), report))
}

fn restore_err(store: &GenerationStore, k: u64, threads: usize, target: &Path) -> Error {
    plan(store, k, true, threads)
        .execute(target, &mut NoProgress)
        .unwrap_err()
}

#[test]
fn a_v2_chain_restores_the_same_with_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (store, versions) = chain(dir.path(), None);
    let target = dir.path().join("restored");
    for k in 1..=4u64 {
        for verify in [true, false] {
            let (image, report) = restore(&store, k, verify, 1, &target).unwrap();
            assert!(image == versions[k as usize - 1], "generation {k}");
            assert!(report.frames_read > 100, "{report:?}");
            if k > 1 {
                assert!(report.frames_skipped > 0, "{report:?}");
            }
            for threads in [2, 8] {
                let (got, got_report) = restore(&store, k, verify, threads, &target).unwrap();
                assert!(got == image, "generation {k}, {threads} threads");
                assert_eq!(got_report, report, "generation {k}, {threads} threads");
            }
        }
        let verified = plan(&store, k, true, 1).verify(&mut NoProgress).unwrap();
        for threads in [2, 8] {
            let got = plan(&store, k, true, threads)
                .verify(&mut NoProgress)
                .unwrap();
            assert_eq!(got, verified, "verify generation {k}, {threads} threads");
        }
    }
}

#[test]
fn a_legacy_chain_restores_the_same_with_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    for compression in [Compression::Gzip, Compression::None] {
        let sub = dir.path().join(format!("{compression:?}"));
        fs::create_dir(&sub).unwrap();
        let (store, versions) = chain(&sub, Some(DiffFormat::Legacy(compression)));
        let target = sub.join("restored");
        for k in 1..=4u64 {
            let (image, report) = restore(&store, k, true, 1, &target).unwrap();
            assert!(image == versions[k as usize - 1], "generation {k}");
            for threads in [4, 2] {
                let (got, got_report) = restore(&store, k, true, threads, &target).unwrap();
                assert!(got == image, "generation {k}, {threads} threads");
                assert_eq!(got_report, report, "generation {k}, {threads} threads");
            }
            let verified = plan(&store, k, true, 1).verify(&mut NoProgress).unwrap();
            let got = plan(&store, k, true, 4).verify(&mut NoProgress).unwrap();
            assert_eq!(got, verified, "verify generation {k}");
        }
    }
}

/// Rewrites a v2 diff frame by frame, with `edit` given each frame's index
/// and payload: a well-formed diff (CRCs and index right) whose blocks may
/// no longer match the digest.
fn rewrite_frames(path: &Path, edit: impl Fn(usize, &mut Vec<u8>)) {
    let diff = DiffFile::open(fs::File::open(path).unwrap()).unwrap();
    let header = *diff.header();
    let mut w = DiffWriter::new(Vec::new(), header).unwrap();
    let mut c = FrameCompressor::new(header.compression, i32::from(header.level)).unwrap();
    let (mut frame, mut d) = (Frame::default(), FrameDecompressor::default());
    let size = diff.summary().source_size;
    for i in 0..diff.frames().len() {
        diff.read_frame(i, &mut frame, &mut d).unwrap();
        let mut builder = FrameBuilder::new();
        for e in &frame.extents {
            for b in e.first_block..e.end_block() {
                match e.kind {
                    ExtentKind::Data => {
                        let len = data_len(b, 1, header.block_size, size) as usize;
                        builder.push_data_len(b, len).unwrap();
                    }
                    ExtentKind::Zero => builder.push_zero(b).unwrap(),
                }
            }
        }
        edit(i, &mut frame.payload);
        let mut bytes = Vec::new();
        let meta = builder
            .encode_payload(&frame.payload, &mut c, &mut bytes)
            .unwrap();
        w.append_frame(&bytes, &meta).unwrap();
    }
    let out = w.finish(size, diff.summary().fingerprint).unwrap();
    fs::write(path, out).unwrap();
}

/// The first data block of frame `i` of `path`, and the frame's offset.
fn first_data_block(path: &Path, i: usize) -> (u64, u64) {
    let diff = DiffFile::open(fs::File::open(path).unwrap()).unwrap();
    let e = diff
        .frame_extents(i)
        .iter()
        .find(|e| e.kind == ExtentKind::Data)
        .unwrap();
    (e.first_block, diff.frames()[i].offset)
}

/// The frames of `path` that hold a data block in `blocks`.
fn frames_with(path: &Path, blocks: std::ops::Range<u64>) -> Vec<usize> {
    let diff = DiffFile::open(fs::File::open(path).unwrap()).unwrap();
    (0..diff.frames().len())
        .filter(|&i| {
            diff.frame_extents(i).iter().any(|e| {
                e.kind == ExtentKind::Data
                    && e.first_block < blocks.end
                    && blocks.start < e.end_block()
            })
        })
        .collect()
}

fn v2(store: &GenerationStore, g: u64) -> std::path::PathBuf {
    // A v2 diff is `NAME.N`, the name of a plain legacy one.
    store.diff_path(g, DiffFormat::Legacy(Compression::None))
}

#[test]
fn a_corrupt_frame_of_an_old_generation_is_the_same_error_with_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = chain(dir.path(), None);
    let target = dir.path().join("restored");
    // Blocks 440..450 (bytes 450 560..460 800) were written by generation
    // 1 only: restoring 4 needs generation 1's frame for them.
    let gen1 = v2(&store, 1);
    let frame = frames_with(&gen1, 440..441)[0];
    let diff = DiffFile::open(fs::File::open(&gen1).unwrap()).unwrap();
    let entry = diff.frames()[frame];
    let mut bytes = fs::read(&gen1).unwrap();
    bytes[(entry.offset + u64::from(entry.len) - 3) as usize] ^= 0x10;
    fs::write(&gen1, &bytes).unwrap();
    let one = restore_err(&store, 4, 1, &target);
    assert!(
        matches!(&one, Error::Archive { path, .. } if *path == gen1),
        "{one}"
    );
    assert!(one.to_string().contains(&format!("frame {frame}")), "{one}");
    for threads in [2, 8] {
        let many = restore_err(&store, 4, threads, &target);
        assert_eq!(many.to_string(), one.to_string(), "{threads} threads");
    }
    assert!(!target.exists(), "a failed restore leaves no target");
}

#[test]
fn the_first_bad_block_in_plan_order_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = chain(dir.path(), None);
    let target = dir.path().join("restored");
    let (gen4, gen1) = (v2(&store, 4), v2(&store, 1));
    // Two frames of generation 4 (the first in plan order) altered so
    // their data no longer matches the digest: the earlier one, frame
    // `a`, is reported.
    let frames = frames_with(&gen4, 0..u64::MAX);
    let (a, b) = (frames[frames.len() - 2], frames[frames.len() - 1]);
    rewrite_frames(&gen4, |i, payload| {
        if i == a || i == b {
            payload[0] ^= 1;
        }
    });
    // And generation 1's first frame is corrupt: read by a worker
    // possibly before, but later in plan order.
    let diff = DiffFile::open(fs::File::open(&gen1).unwrap()).unwrap();
    let entry = diff.frames()[0];
    let mut bytes = fs::read(&gen1).unwrap();
    bytes[(entry.offset + u64::from(entry.len) - 3) as usize] ^= 0x10;
    fs::write(&gen1, &bytes).unwrap();
    let (block, frame_offset) = first_data_block(&gen4, a);
    for threads in [1, 2, 8] {
        let err = restore_err(&store, 4, threads, &target);
        assert!(
            matches!(
                &err,
                Error::Mismatch { path, block_offset, stream_offset, .. }
                    if *path == gen4 && *block_offset == block * u64::from(BS) && *stream_offset == frame_offset
            ),
            "{threads} threads: {err}"
        );
    }
    // Without the bad frames of generation 4, generation 1's is found.
    rewrite_frames(&gen4, |i, payload| {
        if i == a || i == b {
            payload[0] ^= 1;
        }
    });
    for threads in [1, 2, 8] {
        let err = restore_err(&store, 4, threads, &target);
        assert!(
            matches!(&err, Error::Archive { path, .. } if *path == gen1),
            "{threads} threads: {err}"
        );
    }
}

#[test]
fn a_bad_block_of_an_older_legacy_generation_wins_over_a_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = chain(dir.path(), Some(DiffFormat::Legacy(Compression::None)));
    let target = dir.path().join("restored");
    // Generation 3's block 400 (zeroed by it) and generation 1's block
    // 440: both needed by generation 4 (written by no newer one), 3's
    // first in plan order.
    let record = |g: u64, block: u64| {
        let path = store.diff_path(g, DiffFormat::Legacy(Compression::None));
        let bytes = fs::read(&path).unwrap();
        // Records of 8 + 1024 bytes after the header, in block order.
        let mut at = archive_format::HEADER_LEN as usize;
        loop {
            let offset = u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
            if offset == block * u64::from(BS) {
                return (path, at);
            }
            at += archive_format::RECORD_HEADER_LEN as usize + BS as usize;
        }
    };
    let damage = |path: &Path, at: usize| {
        let mut bytes = fs::read(path).unwrap();
        bytes[at + archive_format::RECORD_HEADER_LEN as usize + 100] ^= 1;
        fs::write(path, bytes).unwrap();
    };
    let (gen3, at3) = record(3, 400);
    let (gen1, at1) = record(1, 440);
    damage(&gen3, at3);
    damage(&gen1, at1);
    for threads in [1, 4] {
        let err = restore_err(&store, 4, threads, &target);
        assert!(
            matches!(&err, Error::Mismatch { path, block_offset, stream_offset, .. }
                if *path == gen3 && *block_offset == 400 * u64::from(BS) && *stream_offset == at3 as u64),
            "{threads} threads: {err}"
        );
    }
}

#[test]
fn a_frame_of_many_tiny_blocks_is_checked_the_same() {
    // Blocks of 2 bytes in frames of 256 KiB: 131 072 blocks per frame,
    // more than a worker hashes (the writer hashes those itself).
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("tiny"));
    let options = BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(2).unwrap(),
            read_size: 256 << 10,
            ..DumpOptions::default()
        },
        format: None,
    };
    let mut src = noise(5, 600_000);
    for g in 1..=2u64 {
        if g == 2 {
            src[100_000..100_010].fill(9);
        }
        let source = DumpSource::from_bytes(&src, "src");
        backup(&store, source, &options, &mut NoProgress).unwrap();
    }
    let target = dir.path().join("restored");
    for threads in [1, 4] {
        let (image, _) = restore(&store, 2, true, threads, &target).unwrap();
        assert!(image == src, "{threads} threads");
    }
    let gen1 = v2(&store, 1);
    // Frame 1 (bytes 262 144..524 288): one byte of block 150 000.
    rewrite_frames(&gen1, |i, payload| {
        if i == 1 {
            payload[300_000 - 262_144] ^= 1;
        }
    });
    for threads in [1, 4] {
        let err = restore_err(&store, 2, threads, &target);
        assert!(
            matches!(&err, Error::Mismatch { path, block_offset: 300_000, .. } if *path == gen1),
            "{threads} threads: {err}"
        );
    }
}
