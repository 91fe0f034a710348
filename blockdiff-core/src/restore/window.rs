//! The stretch of the target that a restore of several generations
//! assembles in memory before writing it.
//!
//! A restore of generation K takes each block from the newest generation
//! that has it. Taken generation by generation, the newer generations'
//! blocks are scattered over the whole target and the oldest generation
//! fills the gaps between them, so every block would be a write of its own
//! at a place far from the one before: tens of thousands of small writes
//! for a long chain, and a file system that allocates and writes back
//! scattered pages. Instead the chain is replayed one window of the target
//! at a time (every generation's frames for the window, newest first), and
//! the window's blocks are gathered here and written in order, in as few
//! positional writes as there are stretches of blocks: the same writes a
//! restore of one generation makes.
//!
//! The blocks are not copied to be gathered: the decompressed payload of
//! each frame that provides some is held until the window is written, and
//! each stretch is written from where its pieces lie by one vectored write
//! (`pwritev`). A job gets a spare buffer for the payload it gave up, so
//! the buffers circulate. Measured on a 30-generation chain of 1 GiB
//! (cold cache), copying the blocks into the window cost 7% of generation
//! 30's CPU time (all of it on the thread that writes); holding them
//! costs more page faults (the held and spare buffers, up to
//! `HOLD_WINDOWS` windows each), and generation 30 took 8-10% less CPU
//! time and 6% less time (median of 7 runs). Past its budget, a window
//! copies the blocks in, as before.

use crate::Result;
use crate::progress::Progress;

use super::RestoreReport;
use super::target::Target;

/// Bytes of the target assembled at a time, at least: as long as a frame
/// of a dump made with the default read size (1 MiB), so that no frame
/// reaches into two windows. Larger windows were measured slower (8 MiB:
/// a restore of generation 30 of a chain took 1.57 s where 1 MiB took
/// 1.30 s): the window is copied in and written out of the cache.
pub(super) const WINDOW_BYTES: usize = 1 << 20;

/// Bytes of a window at most, whatever the frames span.
pub(super) const MAX_WINDOW_BYTES: usize = 64 << 20;

/// Frames whose payloads one window may hold at most (see
/// [`OutputWindow::hold`]); more are copied into the window.
const HOLD_FRAMES: usize = 1024;

/// Bytes of payload buffers (their capacity) one window may hold, in
/// windows: with the spare buffers kept for the jobs, what the window adds
/// to a restore's memory stays within twice this many windows.
const HOLD_WINDOWS: usize = 16;

/// A spare buffer this much larger than twice a held payload's is still
/// handed to its job in exchange.
const SMALL_SPARE: usize = 64 << 10;

/// Where the bytes of a placed stretch are.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// In the window's own buffer, at the stretch's place.
    Window,
    /// In held payload `frame`, from byte `at`.
    Held { frame: usize, at: usize },
}

/// A placed stretch of the window: bytes `[start, end)` of it.
#[derive(Debug, Clone, Copy)]
struct Placed {
    start: usize,
    end: usize,
    source: Source,
}

/// One window of the target: which byte ranges of it hold placed blocks,
/// and where their bytes are: the decompressed payloads of the frames
/// that provide them, held until the window is written (no copy), or,
/// past the window's budget and for zeros, a buffer of the window's size.
#[derive(Debug)]
pub(super) struct OutputWindow {
    block_len: usize,
    /// The window being assembled, and its first block.
    window: Option<u64>,
    first_block: u64,
    blocks: u64,
    buf: Vec<u8>,
    placed: Vec<Placed>,
    /// The payloads held for the window, and their capacity in all.
    held: Vec<Vec<u8>>,
    held_bytes: usize,
    /// Payload buffers of windows written, given to the jobs in exchange
    /// for the payloads held, and their capacity in all.
    spare: Vec<Vec<u8>>,
    spare_bytes: usize,
}

impl OutputWindow {
    /// A window for blocks of `block_len` bytes and frames that span up to
    /// `frame_blocks` blocks: [`WINDOW_BYTES`], or the frames' span if
    /// that is longer, rounded up to a power of two blocks (a frame of a
    /// dump covers one read of a power-of-two size, aligned to it, so it
    /// lies in one window), at most [`MAX_WINDOW_BYTES`]. A frame that
    /// still reaches past a window is read once for each.
    pub(super) fn new(block_len: usize, frame_blocks: u64) -> Self {
        let min = (WINDOW_BYTES / block_len).max(1) as u64;
        let max = (MAX_WINDOW_BYTES / block_len).max(1) as u64;
        OutputWindow {
            block_len,
            window: None,
            first_block: 0,
            blocks: frame_blocks
                .max(min)
                .checked_next_power_of_two()
                .unwrap_or(max)
                .min(max),
            buf: Vec::new(),
            placed: Vec::new(),
            held: Vec::new(),
            held_bytes: 0,
            spare: Vec::new(),
            spare_bytes: 0,
        }
    }

    /// Blocks per window.
    pub(super) fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Most bytes of payload buffers held, or kept spare.
    fn hold_budget(&self) -> usize {
        (self.blocks as usize)
            .saturating_mul(self.block_len)
            .saturating_mul(HOLD_WINDOWS)
    }

    /// Makes `window` the one being assembled, writing the one before
    /// first if it is another.
    pub(super) fn enter(
        &mut self,
        window: u64,
        out: &mut Target,
        report: &mut RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        if self.window != Some(window) {
            self.flush(out, report, progress)?;
            self.window = Some(window);
            self.first_block = window.saturating_mul(self.blocks);
        }
        Ok(())
    }

    /// Takes `payload` (a frame's, whose blocks go in this window) to hold
    /// until the window is written, leaving a spare buffer in its place
    /// (the smallest at least as large, if not much larger; or none), and
    /// returns its number
    /// for [`place_held`](Self::place_held). Returns `None`, leaving it,
    /// when the window holds as much as it may: its blocks are then copied
    /// in with [`place`](Self::place).
    pub(super) fn hold(&mut self, payload: &mut Vec<u8>) -> Option<usize> {
        let cap = payload.capacity();
        if self.held.len() >= HOLD_FRAMES
            || self.held_bytes.saturating_add(cap) > self.hold_budget()
        {
            return None;
        }
        // The smallest spare at least as large, unless it is much larger:
        // large buffers are kept for large frames (a small one allocates
        // its own, cheaply), so that a large frame does not find all of
        // them taken by small ones and allocate fresh memory.
        let fit = self
            .spare
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= cap)
            .min_by_key(|(_, b)| b.capacity())
            .filter(|(_, b)| b.capacity() <= cap.saturating_mul(2).saturating_add(SMALL_SPARE))
            .map(|(i, _)| i);
        let given = match fit {
            Some(i) => {
                let b = self.spare.swap_remove(i);
                self.spare_bytes -= b.capacity();
                b
            }
            None => Vec::new(),
        };
        self.held.push(std::mem::replace(payload, given));
        self.held_bytes += cap;
        Some(self.held.len() - 1)
    }

    /// Places `len` bytes of consecutive blocks from block `first`, which
    /// are bytes `at..at + len` of held payload `frame` (a number
    /// [`hold`](Self::hold) gave for this window).
    pub(super) fn place_held(&mut self, first: u64, frame: usize, at: usize, len: usize) {
        let start = ((first - self.first_block) as usize) * self.block_len;
        self.placed.push(Placed {
            start,
            end: start + len,
            source: Source::Held { frame, at },
        });
    }

    /// The range of `buf` for `len` bytes from block `first`, grown as
    /// needed (a block of the window: planned so by the caller).
    fn range(&mut self, first: u64, len: usize) -> (usize, usize) {
        let start = ((first - self.first_block) as usize) * self.block_len;
        let end = start + len;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.placed.push(Placed {
            start,
            end,
            source: Source::Window,
        });
        (start, end)
    }

    /// Places `data`, the bytes of consecutive blocks from block `first`,
    /// copied into the window.
    pub(super) fn place(&mut self, first: u64, data: &[u8]) {
        let (start, end) = self.range(first, data.len());
        self.buf[start..end].copy_from_slice(data);
    }

    /// Places `len` bytes of zeros from block `first`.
    pub(super) fn place_zeros(&mut self, first: u64, len: usize) {
        let (start, end) = self.range(first, len);
        self.buf[start..end].fill(0);
    }

    /// Writes the placed blocks of the window, each stretch of adjacent
    /// ones at once (one vectored write, from where the bytes lie), and
    /// empties it: its held payloads become spare buffers, as many as the
    /// budget keeps.
    pub(super) fn flush(
        &mut self,
        out: &mut Target,
        report: &mut RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        if !self.placed.is_empty() {
            self.placed.sort_unstable_by_key(|p| p.start);
            let base = self.first_block * self.block_len as u64;
            let mut pieces: Vec<&[u8]> = Vec::new();
            let mut i = 0;
            while i < self.placed.len() {
                let start = self.placed[i].start;
                let mut end = start;
                pieces.clear();
                while i < self.placed.len() && self.placed[i].start == end {
                    let p = self.placed[i];
                    pieces.push(match p.source {
                        Source::Window => &self.buf[p.start..p.end],
                        Source::Held { frame, at } => &self.held[frame][at..at + p.end - p.start],
                    });
                    end = p.end;
                    i += 1;
                }
                out.put_pieces(
                    base + start as u64,
                    &pieces,
                    self.block_len,
                    report,
                    progress,
                )?;
            }
            self.placed.clear();
        }
        let budget = self.hold_budget();
        for b in self.held.drain(..) {
            if self.spare.len() < HOLD_FRAMES && self.spare_bytes + b.capacity() <= budget {
                self.spare_bytes += b.capacity();
                self.spare.push(b);
            }
        }
        self.held_bytes = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::NoProgress;

    const BLOCK: usize = 4;

    /// A payload of `blocks` blocks whose bytes name `frame`, block by
    /// block, and are never zero (a fresh file leaves zero blocks as holes).
    fn payload(frame: usize, blocks: usize) -> Vec<u8> {
        (0..blocks)
            .flat_map(|b| [0x80, (frame >> 8) as u8, frame as u8, b as u8])
            .collect()
    }

    /// Writes `window` (a fresh file through `Target`) and returns the
    /// file's bytes and the report.
    fn written(window: &mut OutputWindow, size: u64) -> (Vec<u8>, RestoreReport) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("target");
        let mut out = Target::open(&path, true).unwrap();
        let mut report = RestoreReport::default();
        window
            .flush(&mut out, &mut report, &mut NoProgress)
            .unwrap();
        out.finish(size, &mut NoProgress).unwrap();
        (std::fs::read(&path).unwrap(), report)
    }

    #[test]
    fn past_its_budget_a_window_copies_and_writes_everything_in_order() {
        // Window 0 of 1 MiB of 4-byte blocks: frame f provides block
        // 2f + 1 (its payload's second block) and, for even f, block 2f
        // too (its first); the odd frames' block 2f is zero.
        let frames = HOLD_FRAMES + 10;
        let mut window = OutputWindow::new(BLOCK, 1);
        let mut out = Target::discard();
        let mut report = RestoreReport::default();
        window
            .enter(0, &mut out, &mut report, &mut NoProgress)
            .unwrap();
        let mut want = vec![0u8; 2 * frames * BLOCK];
        let mut refused = 0;
        // Placed newest last, in reverse target order: the flush sorts.
        for f in (0..frames).rev() {
            let mut p = payload(f, 2);
            let at = 2 * f * BLOCK;
            want[at + BLOCK..at + 2 * BLOCK].copy_from_slice(&p[BLOCK..]);
            let runs: Vec<(u64, usize, usize)> = if f % 2 == 0 {
                want[at..at + BLOCK].copy_from_slice(&p[..BLOCK]);
                vec![(2 * f as u64, 0, 2 * BLOCK)]
            } else {
                window.place_zeros(2 * f as u64, BLOCK);
                vec![(2 * f as u64 + 1, BLOCK, BLOCK)]
            };
            match window.hold(&mut p) {
                Some(held) => {
                    // The job keeps a buffer, not the payload.
                    assert!(p.is_empty());
                    for (first, at, len) in runs {
                        window.place_held(first, held, at, len);
                    }
                }
                None => {
                    refused += 1;
                    for (first, at, len) in runs {
                        window.place(first, &p[at..at + len]);
                    }
                }
            }
        }
        assert_eq!(refused, frames - HOLD_FRAMES, "held up to HOLD_FRAMES");
        let (got, report) = written(&mut window, want.len() as u64);
        assert!(got == want, "the window's bytes, in target order");
        assert_eq!(report.blocks, 2 * frames as u64);
        assert_eq!(report.holes, (frames / 2) as u64, "odd frames' zero blocks");
        // The payloads held became spare buffers, handed to the next
        // frames in exchange for theirs.
        let mut p = Vec::with_capacity(2 * BLOCK);
        p.extend_from_slice(&payload(1, 2));
        assert_eq!(window.hold(&mut p), Some(0));
        assert!(p.capacity() >= 2 * BLOCK, "a spare buffer, reused");
    }

    #[test]
    fn a_payload_larger_than_the_budget_is_copied() {
        let mut window = OutputWindow::new(BLOCK, 1);
        let mut big = Vec::with_capacity(window.hold_budget() + 1);
        big.extend_from_slice(&payload(7, 3));
        assert_eq!(window.hold(&mut big), None);
        assert_eq!(big, payload(7, 3), "left with the job");
        window.window = Some(0);
        window.place(1, &big[BLOCK..]);
        let (got, report) = written(&mut window, 3 * BLOCK as u64);
        assert_eq!(
            got,
            [vec![0; BLOCK], payload(7, 3)[BLOCK..].to_vec()].concat()
        );
        assert_eq!(report.blocks, 2);
    }
}
