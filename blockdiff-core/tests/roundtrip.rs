//! Property tests: random sources and random edits over many generations
//! restore exactly, from every generation of the chain.

use std::fs;
use std::io::{self, Read};

use blockdiff_core::{
    BackupOptions, BlockSize, Compression, DiffFormat, DumpOptions, DumpSource, FrameCompression,
    GenerationStore, HashAlgorithm, NoProgress, RestoreOptions, RestorePlan, backup,
};
use proptest::prelude::*;

/// One change between two generations of a source.
#[derive(Debug, Clone)]
enum Edit {
    /// Overwrite `len` bytes at `at` (a fraction of the size) with `byte`.
    Overwrite { at: f64, len: usize, byte: u8 },
    /// Zero a range, as a freed region of a filesystem.
    Zero { at: f64, len: usize },
    /// Grow by `len` bytes of a pattern.
    Grow { len: usize, seed: u8 },
    /// Shrink to a fraction of the size.
    Shrink { keep: f64 },
}

fn edit_strategy() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (0.0..1.0f64, 1usize..3000, any::<u8>()).prop_map(|(at, len, byte)| Edit::Overwrite { at, len, byte }),
        1 => (0.0..1.0f64, 1usize..5000).prop_map(|(at, len)| Edit::Zero { at, len }),
        2 => (1usize..6000, any::<u8>()).prop_map(|(len, seed)| Edit::Grow { len, seed }),
        1 => (0.3..1.0f64).prop_map(|keep| Edit::Shrink { keep }),
    ]
}

fn apply(src: &mut Vec<u8>, edit: &Edit) {
    let pos = |at: f64, len: usize| ((at * len as f64) as usize).min(len);
    match *edit {
        Edit::Overwrite { at, len, byte } => {
            let start = pos(at, src.len());
            let end = (start + len).min(src.len());
            src[start..end]
                .iter_mut()
                .for_each(|b| *b = b.wrapping_add(byte) | 1);
        }
        Edit::Zero { at, len } => {
            let start = pos(at, src.len());
            let end = (start + len).min(src.len());
            src[start..end].fill(0);
        }
        Edit::Grow { len, seed } => {
            src.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
        }
        Edit::Shrink { keep } => src.truncate(pos(keep, src.len())),
    }
}

/// A reader that returns at most one byte per call.
struct OneByte<'a>(&'a [u8]);
impl Read for OneByte<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.split_first(), buf.first_mut()) {
            (Some((b, rest)), Some(slot)) => {
                *slot = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn random_edits_over_many_generations_restore_exactly(
        initial in proptest::collection::vec(any::<u8>(), 0..40_000),
        edits in proptest::collection::vec(proptest::collection::vec(edit_strategy(), 0..4), 1..7),
        block_size in prop_oneof![Just(512u32), Just(1000), Just(4096), Just(16384)],
        format in prop_oneof![
            Just(DiffFormat::Legacy(Compression::None)),
            Just(DiffFormat::Legacy(Compression::Gzip)),
            Just(DiffFormat::V2 { compression: FrameCompression::Zstd, level: 1 }),
            Just(DiffFormat::V2 { compression: FrameCompression::None, level: 0 }),
        ],
        hash in prop_oneof![Just(HashAlgorithm::Md5), Just(HashAlgorithm::Blake3)],
        threads in 1usize..4,
        slow_reader in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = GenerationStore::new(dir.path().join("vol"));
        let options = BackupOptions {
            dump: DumpOptions {
                block_size: BlockSize::new(block_size).unwrap(),
                hash,
                threads,
                read_size: 3 * block_size as usize,
                ..DumpOptions::default()
            },
            format: Some(format),
        };
        let mut versions = Vec::new();
        let mut src = initial;
        for (i, step) in edits.iter().enumerate() {
            if i > 0 {
                for e in step {
                    apply(&mut src, e);
                }
            }
            // A slow reader stands for a pipe: its size is not known.
            let report = if slow_reader {
                let source = DumpSource::stream(OneByte(&src), "src");
                backup(&store, source, &options, &mut NoProgress)
            } else {
                backup(&store, DumpSource::from_bytes(&src, "src"), &options, &mut NoProgress)
            }.unwrap();
            prop_assert_eq!(report.generation, i as u64 + 1);
            prop_assert_eq!(report.dump.source_bytes, src.len() as u64);
            versions.push(src.clone());
        }
        for (i, expected) in versions.iter().enumerate() {
            let k = i as u64 + 1;
            let target = dir.path().join(format!("restored-{k}"));
            // The edits may shrink the source: say so (a legacy digest
            // records no size).
            let plan = RestorePlan::new(&store, &RestoreOptions { generation: Some(k), verify: true, source_shrank: true }).unwrap();
            plan.execute(&target, &mut NoProgress).unwrap();
            let got = fs::read(&target).unwrap();
            prop_assert!(got == *expected, "generation {} differs ({} vs {} bytes)", k, got.len(), expected.len());
        }
    }
}

#[test]
fn restore_of_a_long_chain_writes_each_block_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = GenerationStore::new(dir.path().join("vol"));
    let options = BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(1024).unwrap(),
            ..DumpOptions::default()
        },
        ..BackupOptions::default()
    };
    let mut src: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8 | 1).collect();
    for g in 0..30u32 {
        // Rewrite the first eight blocks every generation.
        src[..8 * 1024].fill(g as u8 + 1);
        backup(
            &store,
            DumpSource::from_bytes(&src, "src"),
            &options,
            &mut NoProgress,
        )
        .unwrap();
    }
    let target = dir.path().join("restored");
    let plan = RestorePlan::new(&store, &RestoreOptions::default()).unwrap();
    assert_eq!(plan.generation(), 30);
    let report = plan.execute(&target, &mut NoProgress).unwrap();
    // 64 blocks in the image: 64 written, although the chain holds
    // 64 + 29 * 8 records.
    assert_eq!(report.blocks, 64);
    assert_eq!(report.bytes_written, src.len() as u64);
    assert_eq!(fs::read(&target).unwrap(), src);
}
