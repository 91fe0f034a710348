//! Criterion bench of a restore: one v2 generation of 64 MiB (16 KiB
//! blocks, 1 MiB zstd frames, BLAKE3, half of every block compressible),
//! built once in a temporary directory, restored with 1 and 2 threads; and
//! generation 8 of a chain over the same image, each later generation
//! rewriting 1% of the blocks at random (`restore-chain`: the target
//! assembled a 1 MiB window at a time from every generation's frames).
//!
//! `restore` writes a fresh file beside the chain (its fsync and rename
//! included, so the disk shows through); `verify` reads, decompresses and
//! checks the same chain without writing, which is the part the threads
//! share out.
//!
//! Run with `cargo bench -p blockdiff-benches --bench restore`.

use std::fs;
use std::path::Path;
use std::time::Duration;

use blockdiff_benches::splitmix64;
use blockdiff_core::{
    BackupOptions, BlockSize, DumpOptions, DumpSource, GenerationStore, NoProgress, RestoreOptions,
    RestorePlan, RestoreReport, backup,
};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

/// Size of the restored image.
const IMAGE_LEN: usize = 64 << 20;

const BLOCK: usize = 16 << 10;

/// Deterministic bytes: in every block, half pseudo-random (SplitMix64),
/// half a repeated pattern, so zstd has work on both halves.
fn image(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x0123_4567_89ab_cdef;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        if out.len() % BLOCK < BLOCK / 2 {
            out.extend_from_slice(&splitmix64(&mut state).to_le_bytes());
        } else {
            out.extend_from_slice(b"blockdiff");
        }
    }
    out.truncate(len);
    out
}

/// Generations of the chain `restore-chain` restores the last of.
const CHAIN_GENERATIONS: u64 = 8;

/// Generation 1 of a store in `dir` named `name`, and `generations` - 1
/// more, each with 1% of the blocks rewritten.
fn build(dir: &Path, name: &str, generations: u64) -> GenerationStore {
    let store = GenerationStore::new(dir.join(name));
    let options = BackupOptions {
        dump: DumpOptions {
            block_size: BlockSize::new(BLOCK as u32).expect("valid block size"),
            ..DumpOptions::default()
        },
        format: None,
    };
    let mut data = image(IMAGE_LEN);
    let mut state: u64 = 0xfeed_f00d;
    for g in 1..=generations {
        if g > 1 {
            let blocks = IMAGE_LEN / BLOCK;
            for _ in 0..blocks / 100 {
                let b = (splitmix64(&mut state) % blocks as u64) as usize;
                let fill = splitmix64(&mut state).to_le_bytes();
                for (i, byte) in data[b * BLOCK..b * BLOCK + BLOCK / 2]
                    .iter_mut()
                    .enumerate()
                {
                    *byte = fill[i % 8] ^ (i / 8) as u8;
                }
            }
        }
        backup(
            &store,
            DumpSource::from_bytes(&data, "bench"),
            &options,
            &mut NoProgress,
        )
        .expect("backup into a temporary directory");
    }
    store
}

fn plan(store: &GenerationStore, threads: usize) -> RestorePlan {
    RestorePlan::new(store, &RestoreOptions::default())
        .and_then(|p| p.with_threads(threads))
        .expect("the chain just written")
}

fn bench_restore(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = build(dir.path(), "bench", 1);
    let chain = build(dir.path(), "chain", CHAIN_GENERATIONS);
    let target = dir.path().join("restored");
    let mut group = c.benchmark_group("restore_v2_64MiB");
    group.throughput(Throughput::Bytes(IMAGE_LEN as u64));
    group.sampling_mode(SamplingMode::Flat);
    for threads in [1usize, 2] {
        group.bench_with_input(BenchmarkId::new("restore", threads), &threads, |b, &t| {
            b.iter(|| {
                let report: RestoreReport = plan(&store, t)
                    .execute(&target, &mut NoProgress)
                    .expect("restore");
                assert_eq!(report.source_size, IMAGE_LEN as u64);
            });
        });
        group.bench_with_input(
            BenchmarkId::new("restore-chain", threads),
            &threads,
            |b, &t| {
                b.iter(|| {
                    let report: RestoreReport = plan(&chain, t)
                        .execute(&target, &mut NoProgress)
                        .expect("restore");
                    assert_eq!(report.generation, CHAIN_GENERATIONS);
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("verify", threads), &threads, |b, &t| {
            b.iter(|| {
                let report = plan(&store, t).verify(&mut NoProgress).expect("verify");
                assert_eq!(report.source_size, IMAGE_LEN as u64);
            });
        });
    }
    group.finish();
    let _ = fs::remove_file(&target);
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_restore
}
criterion_main!(benches);
