//! Criterion bench of the scan, the read path of every dump: a 64 MiB file
//! of random bytes (in the page cache after the first run) read by
//! position ([`DumpSource::open`]), each block hashed and compared with the
//! previous digest's.
//!
//! - `incremental`: the unchanged file against its own digest (nothing is
//!   kept: the 128 KiB per-thread pieces never leave the cache), v2 BLAKE3
//!   and legacy MD5, with 1 and 2 threads;
//! - `full`: every block kept for the diff (read straight into the chunks),
//!   v2 BLAKE3 without compression, 1 and 2 threads;
//! - `read_size`: the v2 incremental with chunks of 256 KiB, 1 MiB, 4 MiB
//!   and 16 MiB (mapped by default: the blocks are hashed where they lie;
//!   read, the pieces stay 128 KiB: the working set does not grow with the
//!   chunk).
//!
//! Run with `cargo bench -p blockdiff-benches --bench scan`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use blockdiff_benches::pseudo_random;
use blockdiff_core::{
    DigestReader, DigestWriter, DumpOptions, DumpSource, FrameCompression, HashAlgorithm,
    LegacySink, NoProgress, V2Sink, dump,
};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};

const FILE_LEN: usize = 64 << 20;

#[derive(Clone, Copy, Debug)]
enum Format {
    V2,
    Legacy,
}

/// Dumps `file` (against `previous`, when given) into nothing; writes the
/// new digest to `digest_out` when given, else discards it.
fn scan(
    file: &Path,
    previous: Option<&Path>,
    digest_out: Option<&Path>,
    format: Format,
    options: &DumpOptions,
) -> u64 {
    let source = DumpSource::open(file).expect("open the source");
    let mut previous = previous.map(|p| DigestReader::open(p).expect("open the digest"));
    let digest_sink: Box<dyn io::Write> = match digest_out {
        Some(p) => Box::new(io::BufWriter::new(
            fs::File::create(p).expect("create the digest"),
        )),
        None => Box::new(io::sink()),
    };
    let mut digest = DigestWriter::new(digest_sink, "digest");
    let report = match format {
        Format::V2 => {
            let mut sink = V2Sink::new(io::sink(), "diff", FrameCompression::None, 0);
            dump(
                source,
                previous.as_mut(),
                &mut sink,
                &mut digest,
                options,
                &mut NoProgress,
            )
        }
        Format::Legacy => {
            let mut sink = LegacySink::new(io::sink(), "diff");
            dump(
                source,
                previous.as_mut(),
                &mut sink,
                &mut digest,
                options,
                &mut NoProgress,
            )
        }
    }
    .expect("dump");
    report.source_bytes
}

struct Fixture {
    _dir: tempfile::TempDir,
    file: PathBuf,
    v2_digest: PathBuf,
    legacy_digest: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("source.img");
    fs::write(&file, pseudo_random(FILE_LEN)).expect("write the source");
    let v2_digest = dir.path().join("source.digest");
    let legacy_digest = dir.path().join("source.md5");
    let options = DumpOptions {
        hash: HashAlgorithm::Blake3,
        ..DumpOptions::default()
    };
    scan(&file, None, Some(&v2_digest), Format::V2, &options);
    scan(&file, None, Some(&legacy_digest), Format::Legacy, &options);
    Fixture {
        _dir: dir,
        file,
        v2_digest,
        legacy_digest,
    }
}

fn bench_scan(c: &mut Criterion) {
    let f = fixture();
    let mut group = c.benchmark_group("scan");
    group.throughput(Throughput::Bytes(FILE_LEN as u64));
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for threads in [1, 2] {
        let options = DumpOptions {
            threads,
            ..DumpOptions::default()
        };
        group.bench_with_input(
            BenchmarkId::new("incremental/v2-blake3", threads),
            &options,
            |b, o| b.iter(|| scan(&f.file, Some(&f.v2_digest), None, Format::V2, o)),
        );
        group.bench_with_input(
            BenchmarkId::new("incremental/legacy-md5", threads),
            &options,
            |b, o| b.iter(|| scan(&f.file, Some(&f.legacy_digest), None, Format::Legacy, o)),
        );
        group.bench_with_input(
            BenchmarkId::new("full/v2-blake3", threads),
            &options,
            |b, o| b.iter(|| scan(&f.file, None, None, Format::V2, o)),
        );
    }
    for read_size in [256 << 10, 1 << 20, 4 << 20, 16 << 20] {
        let options = DumpOptions {
            read_size,
            ..DumpOptions::default()
        };
        group.bench_with_input(
            BenchmarkId::new("read_size/v2-blake3-incremental", read_size >> 10),
            &options,
            |b, o| b.iter(|| scan(&f.file, Some(&f.v2_digest), None, Format::V2, o)),
        );
    }
    group.finish();
}

criterion_group!(benches, bench_scan);
criterion_main!(benches);
