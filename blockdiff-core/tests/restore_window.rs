//! A restore of a generation that has older generations below it assembles
//! the target one window at a time (every generation's frames for the
//! window, newest first). These tests make frames that reach across
//! window boundaries (dumps with odd read sizes), scattered changes,
//! zero runs across boundaries and a source that shrinks and grows, and
//! check that every generation restores exactly: to a fresh file (zero
//! blocks left as holes) and onto a block device (zeros written), with
//! one thread and with several, checked against the digest or not.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{noise, plan};

use blockdiff_core::{
    BackupOptions, BlockSize, DumpOptions, DumpSource, GenerationStore, HashAlgorithm, NoProgress,
    RestoreReport, backup,
};

const BS: usize = 1024;

/// Six generations of a source of about 3.3 MiB (windows of 1 MiB = 1024
/// blocks of 1 KiB), each dumped with its own read size: frames of 3, 7,
/// 1024, 5, 3 and 1000 blocks, so that many frames straddle two windows.
/// Returns the store and each generation's bytes.
fn chain(dir: &Path) -> (GenerationStore, Vec<Vec<u8>>) {
    let store = GenerationStore::new(dir.join("vol"));
    let mut src = noise(1, 3300 * BS + 123);
    // A zero run across the first window boundary.
    src[1000 * BS..1100 * BS].fill(0);
    let read_blocks = [3usize, 7, 1024, 5, 3, 1000];
    let mut versions = Vec::new();
    for (g, &read) in read_blocks.iter().enumerate() {
        let g = g as u64 + 1;
        if g > 1 {
            // Scattered single blocks, as a busy volume changes.
            let picks = noise(100 + g, 200);
            for pair in picks.chunks(2) {
                let block = (usize::from(pair[0]) * 256 + usize::from(pair[1])) % (src.len() / BS);
                let at = block * BS;
                let fill = noise(1000 * g + block as u64, BS);
                src[at..at + BS].copy_from_slice(&fill);
            }
            // A run rewritten across a window boundary, and a hot region
            // every generation rewrites.
            let run = (1020 + 7 * g as usize) * BS..(1030 + 7 * g as usize) * BS;
            let len = run.len();
            src[run].copy_from_slice(&noise(2000 + g, len));
            src[2500 * BS..2520 * BS].copy_from_slice(&noise(3000 + g, 20 * BS));
        }
        match g {
            3 => src[2040 * BS..2060 * BS].fill(0),
            4 => src.truncate(3000 * BS + 77),
            5 => src.extend_from_slice(&noise(5, 250 * BS)),
            _ => {}
        }
        let options = BackupOptions {
            dump: DumpOptions {
                block_size: BlockSize::new(BS as u32).unwrap(),
                read_size: read * BS,
                hash: HashAlgorithm::Blake3,
                ..DumpOptions::default()
            },
            format: None,
        };
        backup(
            &store,
            DumpSource::from_bytes(&src, "src"),
            &options,
            &mut NoProgress,
        )
        .unwrap();
        versions.push(src.clone());
    }
    (store, versions)
}

fn restore(
    store: &GenerationStore,
    k: u64,
    verify: bool,
    threads: usize,
    target: &Path,
) -> RestoreReport {
    let _ = fs::remove_file(target);
    plan(store, k, verify, threads)
        .execute(target, &mut NoProgress)
        .unwrap()
}

#[test]
fn every_generation_restores_exactly_across_window_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let (store, versions) = chain(dir.path());
    let target = dir.path().join("restored");
    for k in 1..=versions.len() as u64 {
        let want = &versions[k as usize - 1];
        let mut first: Option<RestoreReport> = None;
        for verify in [true, false] {
            for threads in [1, 2, 5] {
                let report = restore(&store, k, verify, threads, &target);
                let got = fs::read(&target).unwrap();
                assert!(
                    got == *want,
                    "generation {k}, verify {verify}, {threads} threads: {} bytes, want {}; first difference at {:?}",
                    got.len(),
                    want.len(),
                    got.iter().zip(want.iter()).position(|(a, b)| a != b)
                );
                assert_eq!(
                    report.bytes_written + report_hole_bytes(want),
                    want.len() as u64
                );
                // The zero blocks of the source are holes, the others
                // written.
                let zero_blocks = want
                    .chunks(BS)
                    .filter(|b| b.iter().all(|&x| x == 0))
                    .count();
                assert_eq!(report.holes, zero_blocks as u64, "generation {k}");
                if verify {
                    let first = first.get_or_insert(report);
                    assert_eq!(&report, first, "generation {k}, {threads} threads");
                }
            }
        }
    }
}

/// Bytes of the all-zero blocks of `image` (left as holes in a fresh file).
fn report_hole_bytes(image: &[u8]) -> u64 {
    image
        .chunks(BS)
        .filter(|b| b.iter().all(|&x| x == 0))
        .map(|b| b.len() as u64)
        .sum()
}

/// A loop device over a file full of 0xAA, detached on drop.
struct Loop {
    dev: PathBuf,
}

impl Loop {
    fn new(backing: &Path, size: usize) -> Loop {
        fs::write(backing, vec![0xAA; size]).unwrap();
        let out = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(backing)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "losetup failed (root and loop devices are needed; BLOCKDIFF_SKIP_LOOP=1 skips): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()),
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

#[test]
fn every_generation_restores_exactly_onto_a_block_device() {
    if std::env::var_os("BLOCKDIFF_SKIP_LOOP").is_some() {
        eprintln!("skipped: BLOCKDIFF_SKIP_LOOP is set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (store, versions) = chain(dir.path());
    // Larger than every generation, in whole 512-byte sectors.
    let size = versions.iter().map(Vec::len).max().unwrap().div_ceil(4096) * 4096 + 4096;
    let device = Loop::new(&dir.path().join("backing"), size);
    for k in 1..=versions.len() as u64 {
        let want = &versions[k as usize - 1];
        for threads in [1, 2] {
            // Garbage everywhere first: every zero block must be written.
            fs::write(&device.dev, vec![0xAA; size]).unwrap();
            let report = plan(&store, k, true, threads)
                .execute(&device.dev, &mut NoProgress)
                .unwrap();
            let got = fs::read(&device.dev).unwrap();
            assert!(
                got[..want.len()] == want[..],
                "generation {k}, {threads} threads: first difference at {:?}",
                got.iter().zip(want.iter()).position(|(a, b)| a != b)
            );
            assert_eq!(report.holes, 0, "a device has no holes");
            assert_eq!(report.bytes_written, want.len() as u64);
        }
    }
}
