//! The scan of a file read by position, both ways: through a memory map of
//! each chunk (the default), and by `pread` piece by piece into a small
//! per-thread buffer; either way only the changed blocks are kept for the
//! diff. What a user relies on: an incremental dump keeps exactly the
//! blocks that changed, wherever they fall among the pieces and chunks, and
//! a file cut short while it is read fails the dump (no SIGBUS, no wrong
//! bytes) and commits nothing.

mod common;

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use common::noise;

use archive_format::{Compression, DiffFile, FrameCompression};
use blockdiff_core::{
    BackupOptions, BlockSize, ChunkEncoder, DiffFormat, DiffSink, DigestFormat, DigestReader,
    DigestWriter, DumpOptions, DumpPlan, DumpSource, DumpedChunk, Error, Fingerprint,
    GenerationStore, NoProgress, Progress, RestoreOptions, RestorePlan, backup, dump,
};

const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;

fn formats() -> [DiffFormat; 3] {
    [
        DiffFormat::Legacy(Compression::None),
        DiffFormat::Legacy(Compression::Gzip),
        DiffFormat::V2 {
            compression: FrameCompression::Zstd,
            level: 1,
        },
    ]
}

fn options(format: DiffFormat, read_size: usize, threads: usize, map: bool) -> BackupOptions {
    BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(4096).unwrap(),
            read_size,
            threads,
            map_source: map,
            ..DumpOptions::default()
        },
        format: Some(format),
    }
}

fn restore(store: &GenerationStore, generation: u64, dir: &Path) -> Vec<u8> {
    let plan = RestorePlan::new(
        store,
        &RestoreOptions {
            generation: Some(generation),
            ..RestoreOptions::default()
        },
    )
    .unwrap();
    let target = dir.join(format!("restored.{generation}"));
    plan.execute(&target, &mut NoProgress).unwrap();
    let bytes = fs::read(&target).unwrap();
    fs::remove_file(&target).unwrap();
    bytes
}

#[test]
fn an_incremental_dump_keeps_exactly_the_changed_blocks_wherever_they_fall() {
    // 1 MiB chunks of 8 pieces of 128 KiB (32 blocks of 4 KiB each): the
    // changed blocks sit at the edges of pieces and chunks, in the middle,
    // and at the short last block; one becomes all zero. Each generation
    // changes other blocks, so a chunk buffer reused from an earlier chunk
    // holds other bytes where its blocks did not change. With chunks of 4
    // MiB (the default) the same edges are those of the 1 MiB v2 frames a
    // chunk is cut into.
    let size = 5 * MIB + 1000;
    let last = (size / 4096) as u64;
    let generations: [&[u64]; 3] = [
        &[0, 31, 32, 255, 256, 257, 700, last],
        &[1, 63, 64, 511, 512, 1023, 1024, 1100],
        &[2, 3, 4, 900, last - 1, last],
    ];
    let cases = formats()
        .into_iter()
        .flat_map(|f| [(f, true), (f, false)])
        .flat_map(|(f, map)| [(f, map, MIB), (f, map, 4 * MIB)]);
    for (format, map, read_size) in cases {
        for threads in [1, 2, 3] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("disk.img");
            let store = GenerationStore::new(dir.path().join("db"));
            let mut image = noise(7, size);
            fs::write(&path, &image).unwrap();
            let opts = options(format, read_size, threads, map);
            let first = backup(
                &store,
                DumpSource::open(&path).unwrap(),
                &opts,
                &mut NoProgress,
            )
            .unwrap();
            assert_eq!(first.dump.changed_blocks, last + 1, "{format:?}");
            if let DiffFormat::V2 { .. } = format {
                // One frame per MiB of the source, none longer, whatever
                // the chunk size.
                let path = store.diff_path(1, DiffFormat::Legacy(Compression::None));
                let diff = DiffFile::open(File::open(path).unwrap()).unwrap();
                assert_eq!(diff.frames().len(), size.div_ceil(MIB), "{read_size}");
                for i in 0..diff.frames().len() {
                    let e = diff.frame_extents(i);
                    let span = e.last().unwrap().end_block() - e[0].first_block;
                    assert!(span <= (MIB / 4096) as u64, "frame {i}: {span} blocks");
                }
            }
            let mut images = vec![image.clone()];
            for (g, blocks) in generations.iter().enumerate() {
                for (k, &b) in blocks.iter().enumerate() {
                    let start = b as usize * 4096;
                    let end = (start + 4096).min(size);
                    let fill = if k == 3 {
                        vec![0u8; end - start]
                    } else {
                        noise(100 * g as u64 + k as u64 + 11, end - start)
                    };
                    image[start..end].copy_from_slice(&fill);
                }
                fs::write(&path, &image).unwrap();
                let report = backup(
                    &store,
                    DumpSource::open(&path).unwrap(),
                    &opts,
                    &mut NoProgress,
                )
                .unwrap();
                assert_eq!(
                    report.dump.changed_blocks,
                    blocks.len() as u64,
                    "{format:?}, {threads} threads, generation {}",
                    g + 2
                );
                assert_eq!(report.dump.zero_blocks, 1);
                images.push(image.clone());
            }
            for (g, expected) in images.iter().enumerate() {
                let got = restore(&store, g as u64 + 1, dir.path());
                assert!(
                    got == *expected,
                    "{format:?}, {threads} threads, chunks of {read_size}: generation {} does not restore exactly",
                    g + 1
                );
            }
        }
    }
}

/// Cuts the source file at the first chunk the dump finishes: the chunks
/// after the first few (the pool the readers can fill before the writer
/// hands one back) are read after the cut.
struct CutAtFirstChunk<'a> {
    path: &'a Path,
    to: u64,
    done: bool,
}

impl Progress for CutAtFirstChunk<'_> {
    fn advance(&mut self, _bytes: u64) {
        if !self.done {
            File::options()
                .write(true)
                .open(self.path)
                .unwrap()
                .set_len(self.to)
                .unwrap();
            self.done = true;
        }
    }
}

#[test]
fn a_file_cut_short_while_it_is_read_fails_the_dump_and_commits_nothing() {
    // 64 KiB chunks, 2 threads: at most 6 chunks are read before the
    // first is handed back, so the chunk at 1 MiB (the 17th) is read after
    // the cut, and it is the first to fail in source order.
    let size = 32 * MIB;
    for (format, map) in formats().into_iter().flat_map(|f| [(f, true), (f, false)]) {
        for incremental in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("disk.img");
            let store = GenerationStore::new(dir.path().join("db"));
            fs::write(&path, noise(3, size)).unwrap();
            let opts = options(format, 64 * KIB, 2, map);
            if incremental {
                backup(
                    &store,
                    DumpSource::open(&path).unwrap(),
                    &opts,
                    &mut NoProgress,
                )
                .unwrap();
            }
            let before = store.current_generation().unwrap();
            let mut cut = CutAtFirstChunk {
                path: &path,
                to: MIB as u64,
                done: false,
            };
            let err = backup(&store, DumpSource::open(&path).unwrap(), &opts, &mut cut)
                .expect_err("a dump of a file cut short must fail");
            assert!(cut.done);
            match &err {
                Error::SourceSizeChanged {
                    path: p,
                    expected,
                    read,
                } => {
                    assert_eq!(p, &path);
                    assert_eq!(*expected, size as u64);
                    assert_eq!(
                        *read, MIB as u64,
                        "{format:?}, mapped {map}, incremental {incremental}"
                    );
                }
                other => panic!("{format:?}, mapped {map}, incremental {incremental}: {other}"),
            }
            assert_eq!(store.current_generation().unwrap(), before);
            // The chain is as it was: the next run, of the file as it is
            // now, commits and restores it.
            let image = fs::read(&path).unwrap();
            assert_eq!(image.len(), MIB);
            backup(
                &store,
                DumpSource::open(&path).unwrap(),
                &opts,
                &mut NoProgress,
            )
            .unwrap();
            let last = store.current_generation().unwrap().unwrap();
            assert_eq!(restore(&store, last, dir.path()), image);
        }
    }
}

/// An encoder that reads every changed block on the hashing thread, as
/// v2's compression does, and cuts the source to nothing before the first
/// chunk it reads: the chunk was hashed from its map already, so only the
/// `SIGBUS` guard can tell that its pages went while they were encoded.
struct CutWhileEncoding {
    path: PathBuf,
    cut: AtomicBool,
}

impl ChunkEncoder for CutWhileEncoding {
    type State = ();
    type Output = u64;

    fn state(&self) -> blockdiff_core::Result<()> {
        Ok(())
    }

    fn encode(
        &self,
        _: &mut (),
        chunk: &DumpedChunk<'_>,
        out: &mut u64,
    ) -> blockdiff_core::Result<()> {
        if !self.cut.swap(true, Ordering::SeqCst) {
            File::options()
                .write(true)
                .open(&self.path)
                .unwrap()
                .set_len(0)
                .unwrap();
        }
        *out = chunk.data.iter().map(|&b| u64::from(b)).sum();
        Ok(())
    }
}

/// A sink that, like v2's, takes everything from its encoder.
struct EncodedOnly {
    path: PathBuf,
    sums: Vec<u64>,
}

impl DiffSink for EncodedOnly {
    type Encoder = CutWhileEncoding;

    fn digest_format(&self) -> DigestFormat {
        DigestFormat::V2
    }

    fn begin(&mut self, _: &DumpPlan) -> blockdiff_core::Result<CutWhileEncoding> {
        Ok(CutWhileEncoding {
            path: self.path.clone(),
            cut: AtomicBool::new(false),
        })
    }

    fn reads_data(&self) -> bool {
        false
    }

    fn write_chunk(&mut self, _: &DumpedChunk<'_>, sum: &u64) -> blockdiff_core::Result<()> {
        self.sums.push(*sum);
        Ok(())
    }

    fn end(&mut self, _: u64, _: Option<Fingerprint>) -> blockdiff_core::Result<()> {
        Ok(())
    }
}

#[test]
fn a_mapped_chunk_that_loses_its_pages_while_it_is_encoded_fails_the_dump() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    fs::write(&path, vec![0xa5u8; 4 * MIB]).unwrap();
    let mut sink = EncodedOnly {
        path: path.clone(),
        sums: Vec::new(),
    };
    let mut digest = DigestWriter::new(std::io::sink(), "digest");
    let options = DumpOptions {
        threads: 1,
        read_size: MIB,
        ..DumpOptions::default()
    };
    let err = dump(
        DumpSource::open(&path).unwrap(),
        None::<&mut DigestReader<&[u8]>>,
        &mut sink,
        &mut digest,
        &options,
        &mut NoProgress,
    )
    .expect_err("a chunk encoded from pages the file lost must fail the dump");
    match err {
        Error::SourceSizeChanged {
            path: p,
            expected,
            read,
        } => {
            assert_eq!((p, expected, read), (path, 4 * MIB as u64, 0));
        }
        other => panic!("{other}"),
    }
    // No chunk of zeros in place of the source's bytes reached the sink.
    assert!(sink.sums.is_empty(), "{:?}", sink.sums);
}
