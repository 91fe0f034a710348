//! `aead-limit [MIB]`: how fast one core seals and opens an encrypted
//! chain's files (archive-format's `SealedWriter` and `SealedFile`:
//! AES-256-GCM in 64 KiB segments, FORMAT.md §10), over MIB MiB (default
//! 512) of data in memory. `benches/run.sh` part E prints it beside the
//! encrypted dumps and restores, as the limit encryption sets: the diff
//! and the digest are sealed by the one thread that writes them, and a
//! restore opens each segment it reads.
//!
//! Prints one line per direction on standard output: `seal SECONDS GiB/s`
//! and `open SECONDS GiB/s`.

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use archive_format::{
    ChainKey, ChainKeys, KeySecret, ReadAt, SealedContent, SealedFile, SealedWriter,
};

fn main() -> ExitCode {
    let mib: usize = match std::env::args().nth(1).map(|a| a.parse()) {
        None => 512,
        Some(Ok(m)) if m > 0 => m,
        Some(_) => {
            eprintln!("usage: aead-limit [MIB]");
            return ExitCode::from(2);
        }
    };
    let keys = match ChainKey::generate().and_then(|k| ChainKeys::new_chain(&KeySecret::Key(k))) {
        Ok(k) => k,
        Err(e) => {
            eprintln!("aead-limit: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Data that is not all zeros, written 1 MiB at a time as a diff is.
    let chunk: Vec<u8> = (0..1usize << 20)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let total = (mib << 20) as f64 / f64::from(1u32 << 30);

    // Sealed once into memory (to open below), then timed into a sink:
    // the first writes into a fresh buffer would time its page faults.
    let mut w = SealedWriter::new(Vec::new(), &keys, SealedContent::Diff, 1).expect("a writer");
    for _ in 0..mib {
        w.write_all(&chunk).expect("writes to memory");
    }
    let sealed = w.finish().expect("writes to memory");
    let t = Instant::now();
    let mut w =
        SealedWriter::new(std::io::sink(), &keys, SealedContent::Diff, 1).expect("a writer");
    for _ in 0..mib {
        w.write_all(&chunk).expect("writes to a sink");
    }
    w.finish().expect("writes to a sink");
    let seal = t.elapsed().as_secs_f64();
    println!("seal {seal:.3} {:.2}", total / seal);

    let t = Instant::now();
    let f = SealedFile::open(sealed, &keys, SealedContent::Diff, Some(1), "memory")
        .expect("the file just sealed");
    let mut buf = vec![0u8; 1 << 20];
    let mut at = 0u64;
    loop {
        let n = f.read_at(&mut buf, at).expect("the file just sealed");
        if n == 0 {
            break;
        }
        at += n as u64;
    }
    let open = t.elapsed().as_secs_f64();
    assert_eq!(at, (mib as u64) << 20);
    println!("open {open:.3} {:.2}", total / open);
    ExitCode::SUCCESS
}
