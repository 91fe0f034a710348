//! Criterion benches of the dump's hot paths: the per-block hash loop
//! ([`hash_blocks`]) and the whole [`dump`] engine, on 64 MiB of
//! pseudo-random (incompressible) bytes held in memory, so that neither
//! reading nor writing files is measured.
//!
//! Run with `cargo bench -p blockdiff-benches`; sample counts and
//! measurement times are kept small so the whole run takes about a minute.

use std::hint::black_box;
use std::io;
use std::time::Duration;

use blockdiff_benches::pseudo_random;
use blockdiff_core::{
    BlockSize, DiffSink, DigestReader, DigestWriter, DumpOptions, DumpReport, DumpSource,
    FrameCompression, HashAlgorithm, LegacySink, NoProgress, V2Sink, dump, hash_blocks,
};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

/// Size of the benchmark buffer.
const BUF_LEN: usize = 64 << 20;

fn block_size(bytes: u32) -> BlockSize {
    BlockSize::new(bytes).expect("valid block size")
}

/// The hot loop: the hash of every block of the buffer, on one core, for
/// both algorithms.
fn bench_hash_blocks(c: &mut Criterion) {
    let data = pseudo_random(BUF_LEN);
    for algorithm in [HashAlgorithm::Md5, HashAlgorithm::Blake3] {
        let mut group = c.benchmark_group(format!("hash_blocks_{algorithm}"));
        group.throughput(Throughput::Bytes(BUF_LEN as u64));
        group.sampling_mode(SamplingMode::Flat);
        for (label, bytes) in [("4KiB", 4u32 << 10), ("16KiB", 16 << 10), ("1MiB", 1 << 20)] {
            let bs = block_size(bytes);
            let mut out = Vec::with_capacity(bs.blocks_in(BUF_LEN as u64) as usize);
            group.bench_with_input(BenchmarkId::from_parameter(label), &bs, |b, &bs| {
                b.iter(|| {
                    hash_blocks(black_box(&data), bs, algorithm, &mut out);
                    black_box(out.len())
                });
            });
        }
        group.finish();
    }
}

/// One full dump of `data` into `sink`, with the digest discarded.
fn full_dump<S: DiffSink>(data: &[u8], mut sink: S, options: &DumpOptions) -> DumpReport {
    let mut digest = DigestWriter::new(io::sink(), "bench");
    let report = dump(
        DumpSource::from_bytes(black_box(data), "bench"),
        None::<&mut DigestReader<io::Empty>>,
        &mut sink,
        &mut digest,
        options,
        &mut NoProgress,
    )
    .expect("dump into a sink cannot fail");
    black_box(report)
}

/// The whole engine: a full dump (every block written) into a diff sink and
/// a digest, both discarding their output: legacy (MD5, no compression) and
/// v2 (BLAKE3, zstd level 1 on incompressible data, which is stored).
fn bench_dump(c: &mut Criterion) {
    let data = pseudo_random(BUF_LEN);
    let mut group = c.benchmark_group("dump_full_16KiB");
    group.throughput(Throughput::Bytes(BUF_LEN as u64));
    group.sampling_mode(SamplingMode::Flat);
    for (label, threads) in [("all_cores", 0usize), ("1_thread", 1)] {
        let options = DumpOptions {
            block_size: block_size(16 << 10),
            threads,
            ..DumpOptions::default()
        };
        group.bench_with_input(BenchmarkId::new("legacy", label), &options, |b, options| {
            b.iter(|| full_dump(&data, LegacySink::new(io::sink(), "bench"), options));
        });
        group.bench_with_input(BenchmarkId::new("v2", label), &options, |b, options| {
            b.iter(|| {
                let sink = V2Sink::new(io::sink(), "bench", FrameCompression::Zstd, 1);
                full_dump(&data, sink, options)
            });
        });
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_hash_blocks, bench_dump
}
criterion_main!(benches);
