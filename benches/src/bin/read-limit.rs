//! `read-limit MODE FILE [THREADS]`: how fast THREADS threads (default: one
//! per core) can bring every byte of FILE (in the page cache) through a
//! core, without hashing it, by one of the read patterns a dump could use.
//! `benches/run.sh` prints these beside the dumps, as the limits the scan's
//! design is chosen by:
//!
//! - `pread-piece`: `pread` 128 KiB at a time into one buffer per thread,
//!   which stays in the core's L2 cache (the dump's design since issue 12);
//! - `pread-pool`: `pread` 1 MiB at a time into a pool of `2 x THREADS + 2`
//!   buffers of 1 MiB, as the dump did before (the pool leaves the cache);
//! - `mmap`: a shared read-only mapping of the file, read in place.
//!
//! Each thread takes the file's 1 MiB stripes in turn (thread t: stripes t,
//! t + THREADS, ...) and reads one `u64` of every 64-byte cache line of
//! what it brought in, as a hash would touch it. It prints the seconds and
//! GiB/s on standard output, one line.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::ExitCode;
use std::thread;
use std::time::Instant;

const STRIPE: usize = 1 << 20;
const PIECE: usize = 128 << 10;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    PreadPiece,
    PreadPool,
    Mmap,
}

/// One `u64` of every cache line: the bytes have to come through the core.
fn touch(bytes: &[u8]) -> u64 {
    let mut sum = 0u64;
    for line in bytes.chunks(64) {
        let mut word = [0u8; 8];
        let n = line.len().min(8);
        word[..n].copy_from_slice(&line[..n]);
        sum = sum.wrapping_add(u64::from_le_bytes(word));
    }
    sum
}

fn pread_exact(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    file.read_exact_at(buf, offset)
}

fn run(mode: Mode, file: &File, size: u64, threads: usize) -> std::io::Result<u64> {
    let stripes = size.div_ceil(STRIPE as u64);
    let map = match mode {
        // SAFETY: a read-only shared mapping of a file this program only
        // reads, which nothing truncates while it runs (a benchmark input).
        Mode::Mmap if size > 0 => Some(unsafe {
            memmap2::MmapOptions::new()
                .len(usize::try_from(size).map_err(std::io::Error::other)?)
                .map(file)?
        }),
        _ => None,
    };
    let map = map.as_deref();
    thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || -> std::io::Result<u64> {
                    let mut sum = 0u64;
                    let mut piece = vec![0u8; PIECE];
                    // Each thread's share of the old design's pool.
                    let mut pool: Vec<Vec<u8>> = match mode {
                        Mode::PreadPool => (0..(2 * threads + 2).div_ceil(threads))
                            .map(|_| vec![0u8; STRIPE])
                            .collect(),
                        _ => Vec::new(),
                    };
                    let mut turn = 0;
                    let mut stripe = t as u64;
                    while stripe < stripes {
                        let start = stripe * STRIPE as u64;
                        let len = (size - start).min(STRIPE as u64) as usize;
                        match mode {
                            Mode::PreadPiece => {
                                let mut at = 0;
                                while at < len {
                                    let n = PIECE.min(len - at);
                                    pread_exact(file, &mut piece[..n], start + at as u64)?;
                                    sum = sum.wrapping_add(touch(&piece[..n]));
                                    at += n;
                                }
                            }
                            Mode::PreadPool => {
                                let slot = turn % pool.len();
                                let buf = &mut pool[slot];
                                turn += 1;
                                pread_exact(file, &mut buf[..len], start)?;
                                sum = sum.wrapping_add(touch(&buf[..len]));
                            }
                            Mode::Mmap => {
                                let map = map.unwrap_or(&[]);
                                let start = start as usize;
                                sum = sum.wrapping_add(touch(&map[start..start + len]));
                            }
                        }
                        stripe += threads as u64;
                    }
                    Ok(sum)
                })
            })
            .collect();
        let mut sum = 0u64;
        for w in workers {
            sum = sum.wrapping_add(w.join().expect("a probe thread panicked")?);
        }
        Ok(sum)
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: read-limit pread-piece|pread-pool|mmap FILE [THREADS]";
    let (Some(mode), Some(path)) = (args.first(), args.get(1)) else {
        eprintln!("{usage}");
        return ExitCode::from(2);
    };
    let mode = match mode.as_str() {
        "pread-piece" => Mode::PreadPiece,
        "pread-pool" => Mode::PreadPool,
        "mmap" => Mode::Mmap,
        _ => {
            eprintln!("{usage}");
            return ExitCode::from(2);
        }
    };
    let threads = match args.get(2).map(|s| s.parse::<usize>()) {
        None => thread::available_parallelism().map_or(1, std::num::NonZero::get),
        Some(Ok(n)) if (1..=256).contains(&n) => n,
        Some(_) => {
            eprintln!("read-limit: THREADS must be 1 to 256");
            return ExitCode::from(2);
        }
    };
    let result = File::open(path).and_then(|mut file| {
        // A block device's length is its end, not its metadata's.
        let size = std::io::Seek::seek(&mut file, std::io::SeekFrom::End(0))?;
        let start = Instant::now();
        let sum = run(mode, &file, size, threads)?;
        Ok((size, start.elapsed().as_secs_f64(), sum))
    });
    match result {
        Ok((size, secs, sum)) => {
            println!(
                "{secs:.3} s {:.2} GiB/s (check {sum:x})",
                size as f64 / secs.max(1e-9) / f64::from(1u32 << 30)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("read-limit: {path}: {e}");
            ExitCode::FAILURE
        }
    }
}
