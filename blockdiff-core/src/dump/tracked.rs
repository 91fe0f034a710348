//! A dump that reads only what changed: [`TrackedChanges`] names the byte
//! ranges of the source that may differ from the previous generation (a
//! thin pool's metadata knows them), and the hashing threads read and hash
//! only the blocks those ranges touch; every other block keeps the
//! previous digest's hash, unread.

use archive_format::BlockSize;

use super::reader::PositionalSource;
use super::workers::{Chunk, hash_read};
use crate::Result;
use crate::block::BlockHasher;

/// The byte ranges of a source that may have changed since the previous
/// generation, as something that tracks writes knows them: outside them
/// the source is taken to hold what the previous generation held, and a
/// dump with [`DumpOptions::tracked`](super::DumpOptions::tracked) does not
/// read it. A block that any range touches is read whole.
///
/// The dump trusts these ranges: a write they miss is a block whose old
/// hash is kept and whose new bytes are lost from the chain. Build them
/// only from a source that cannot miss one (a thin pool's mappings between
/// two of its snapshots), and check them now and then with a full scan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackedChanges {
    /// `(start, end)` byte offsets, sorted, none overlapping or touching.
    ranges: Vec<(u64, u64)>,
}

impl TrackedChanges {
    /// The changes in the `(offset, length)` byte ranges of `ranges`, in
    /// any order, overlapping or not; empty ranges are ignored.
    pub fn from_byte_ranges(ranges: impl IntoIterator<Item = (u64, u64)>) -> TrackedChanges {
        let mut spans: Vec<(u64, u64)> = ranges
            .into_iter()
            .filter(|&(_, len)| len > 0)
            .map(|(start, len)| (start, start.saturating_add(len)))
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        TrackedChanges { ranges: merged }
    }

    /// The ranges as `(start, end)` byte offsets, in order.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }

    /// Bytes in the ranges.
    pub fn bytes(&self) -> u64 {
        self.ranges.iter().map(|(s, e)| e - s).sum()
    }

    /// Whether any range touches the bytes `start..end`.
    pub(super) fn touches(&self, start: u64, end: u64) -> bool {
        // The first range that ends after `start`.
        let i = self.ranges.partition_point(|&(_, e)| e <= start);
        self.ranges.get(i).is_some_and(|&(s, _)| s < end)
    }
}

/// Scans a chunk of a positional source under tracked changes: the blocks
/// a change touches, and those beyond the previous digest (the source
/// grew), are read in runs one piece at a time and hashed against the
/// previous digest's; every other block takes the previous hash as its
/// own, unchanged and unread. Returns the bytes read.
pub(super) fn scan_tracked<O>(
    chunk: &mut Chunk<O>,
    source: PositionalSource<'_>,
    changes: &TrackedChanges,
    piece: &mut Vec<u8>,
    piece_len: usize,
    block_size: BlockSize,
    hasher: &BlockHasher,
) -> Result<u64> {
    let bs = block_size.bytes();
    let (len, offset) = (chunk.len, chunk.offset);
    let blocks = len.div_ceil(bs);
    let block_end = |i: usize| ((i + 1) * bs).min(len);
    let must_read = |chunk: &Chunk<O>, i: usize| {
        i >= chunk.previous.len()
            || changes.touches(offset + (i * bs) as u64, offset + block_end(i) as u64)
    };
    if piece.len() < piece_len {
        piece.resize(piece_len, 0);
    }
    let per_piece = (piece_len / bs).max(1);
    let mut read = 0u64;
    let mut i = 0;
    while i < blocks {
        if !must_read(chunk, i) {
            chunk.hashes.push(chunk.previous[i]);
            chunk.changed.push(false);
            chunk.zero.push(false);
            i += 1;
            continue;
        }
        // A run of blocks to read, at most a piece long.
        let mut end = i + 1;
        while end < blocks && end - i < per_piece && must_read(chunk, end) {
            end += 1;
        }
        let (at, len) = (i * bs, block_end(end - 1) - i * bs);
        source.limiter.acquire(len as u64);
        let bytes = &mut piece[..len];
        source.read_exact_at(bytes, offset + at as u64)?;
        hash_read(chunk, at, bytes, bs, hasher, true);
        read += len as u64;
        i = end;
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_sorted_merged_and_asked_by_overlap() {
        let t =
            TrackedChanges::from_byte_ranges([(100, 50), (0, 10), (140, 20), (10, 5), (500, 0)]);
        assert_eq!(t.ranges(), [(0, 15), (100, 160)]);
        assert_eq!(t.bytes(), 75);
        assert!(t.touches(0, 1) && t.touches(14, 100) && t.touches(159, 200));
        assert!(!t.touches(15, 100) && !t.touches(160, 1000) && !t.touches(1000, 2000));
        assert!(!TrackedChanges::default().touches(0, u64::MAX));
    }
}
