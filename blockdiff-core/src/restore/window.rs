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

/// One window of the target: its blocks as they are placed, and which
/// byte ranges of it hold placed blocks.
#[derive(Debug)]
pub(super) struct OutputWindow {
    block_len: usize,
    /// The window being assembled, and its first block.
    window: Option<u64>,
    first_block: u64,
    blocks: u64,
    buf: Vec<u8>,
    /// Placed byte ranges of `buf`, `[start, end)`, in the order placed.
    placed: Vec<(usize, usize)>,
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
        }
    }

    /// Blocks per window.
    pub(super) fn blocks(&self) -> u64 {
        self.blocks
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

    /// The range of `buf` for `len` bytes from block `first`, grown as
    /// needed (a block of the window: planned so by the caller).
    fn range(&mut self, first: u64, len: usize) -> (usize, usize) {
        let start = ((first - self.first_block) as usize) * self.block_len;
        let end = start + len;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.placed.push((start, end));
        (start, end)
    }

    /// Places `data`, the bytes of consecutive blocks from block `first`.
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
    /// ones at once, and empties it.
    pub(super) fn flush(
        &mut self,
        out: &mut Target,
        report: &mut RestoreReport,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        if self.placed.is_empty() {
            return Ok(());
        }
        self.placed.sort_unstable();
        let base = self.first_block * self.block_len as u64;
        let mut i = 0;
        while i < self.placed.len() {
            let (start, mut end) = self.placed[i];
            i += 1;
            while i < self.placed.len() && self.placed[i].0 == end {
                end = self.placed[i].1;
                i += 1;
            }
            out.put_run(
                base + start as u64,
                &self.buf[start..end],
                self.block_len,
                report,
                progress,
            )?;
        }
        self.placed.clear();
        Ok(())
    }
}
