//! `random-read FILE [COUNT]`: the latency of COUNT (default 2000) reads
//! of 4 KiB at random 4 KiB-aligned offsets of FILE, with `O_DIRECT` so
//! that each read reaches the file's server (for a FUSE mount, the
//! mounted generation's reader) rather than the page cache. The offsets
//! come from a fixed seed, so two runs read the same places.
//!
//! Prints one line: `reads N median_us M p99_us P max_us X`.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::process::ExitCode;
use std::time::Instant;

const PIECE: usize = 4096;

/// A buffer aligned for `O_DIRECT`.
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

impl Aligned {
    fn new(len: usize) -> Option<Self> {
        let layout = Layout::from_size_align(len, PIECE).ok()?;
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        (!ptr.is_null()).then_some(Aligned { ptr, layout })
    }
    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: `ptr` holds `layout.size()` initialized bytes, owned here.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { dealloc(self.ptr, self.layout) };
    }
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(path), count) = (args.next(), args.next()) else {
        eprintln!("usage: random-read FILE [COUNT]");
        return ExitCode::from(2);
    };
    let count: usize = match count.map(|c| c.parse()) {
        None => 2000,
        Some(Ok(c)) if c > 0 => c,
        Some(_) => {
            eprintln!("usage: random-read FILE [COUNT]");
            return ExitCode::from(2);
        }
    };
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) => {
            eprintln!("random-read: open {path}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pieces = file.metadata().map_or(0, |m| m.len()) / PIECE as u64;
    if pieces == 0 {
        eprintln!("random-read: {path} is smaller than {PIECE} bytes");
        return ExitCode::FAILURE;
    }
    let Some(mut buf) = Aligned::new(PIECE) else {
        eprintln!("random-read: out of memory");
        return ExitCode::FAILURE;
    };
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut micros = Vec::with_capacity(count);
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let offset = (x % pieces) * PIECE as u64;
        let t = Instant::now();
        if let Err(e) = file.read_exact_at(buf.as_mut(), offset) {
            eprintln!("random-read: read {path} at {offset}: {e}");
            return ExitCode::FAILURE;
        }
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize];
    println!(
        "reads {count} median_us {:.0} p99_us {:.0} max_us {:.0}",
        at(0.5),
        at(0.99),
        micros[micros.len() - 1]
    );
    ExitCode::SUCCESS
}
