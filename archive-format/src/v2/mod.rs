//! The v2 diff file: a checked header, frames of coalesced extents (each
//! zstd-compressed or stored, each with a CRC32), and a trailing index.
//! `FORMAT.md` beside the crate specifies every byte.

mod frame;
mod reader;
mod writer;

pub use frame::{FrameBuilder, FrameCompressor, FrameDecompressor, FrameMeta, decode_frame};
pub use reader::fill_at;
pub use reader::{DiffFile, Frame, ReadAt, StreamReader};
pub use writer::DiffWriter;

use crate::{ArchiveError, Result};

/// First 8 bytes of a v2 diff file.
pub const DIFF_MAGIC: [u8; 8] = *b"\x89BDF\r\n\x1a\n";
/// The format version this crate writes and reads.
pub const FORMAT_VERSION: u16 = 2;
/// Length of the diff header.
pub const HEADER_LEN: usize = 128;
/// Magic of a frame header.
pub const FRAME_MAGIC: [u8; 4] = *b"BDFR";
/// Length of a frame header.
pub const FRAME_HEADER_LEN: usize = 24;
/// Length of one extent entry, in a frame and in the index.
pub const EXTENT_LEN: usize = 16;
/// Magic of the index.
pub const INDEX_MAGIC: [u8; 4] = *b"BDIX";
/// Length of the index's fixed part.
pub const INDEX_HEADER_LEN: usize = 96;
/// Length of one frame entry in the index.
pub const FRAME_ENTRY_LEN: usize = 16;
/// Length of the footer that ends the file.
pub const FOOTER_LEN: usize = 32;
/// Last 8 bytes of a v2 diff file.
pub const END_MAGIC: [u8; 8] = *b"BDIFEND\n";
/// Header value of `source_size` when the size was not known in advance.
pub const UNKNOWN_SIZE: u64 = u64::MAX;

/// The largest uncompressed frame payload a reader accepts: 64 MiB.
pub const MAX_FRAME_RAW: u32 = 64 << 20;
/// The largest number of extents in one frame.
pub const MAX_FRAME_EXTENTS: u32 = 1 << 20;
/// The largest stored payload of one frame: `ZSTD_compressBound(64 MiB)`,
/// 67,371,008 bytes.
pub const MAX_FRAME_STORED: u32 = 67_371_008;
/// The largest whole frame (header, extent table and stored payload):
/// 24 + 16·2^20 + 67,371,008 = 84,148,248 bytes. An index entry announcing
/// a longer frame is refused before anything is allocated for it.
pub const MAX_FRAME_LEN: u64 = FRAME_HEADER_LEN as u64
    + MAX_FRAME_EXTENTS as u64 * EXTENT_LEN as u64
    + MAX_FRAME_STORED as u64;

/// [`MAX_FRAME_STORED`] as a `u64`.
pub(crate) fn max_stored_len() -> u64 {
    u64::from(MAX_FRAME_STORED)
}
/// No extent may end beyond this block: the largest source (2^60 bytes) in
/// blocks of one byte.
const MAX_BLOCKS: u64 = 1 << 60;

/// The largest index a reader accepts: 256 MiB.
pub const MAX_INDEX_LEN: u64 = 256 << 20;

/// The hash algorithm of a generation's digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashAlgorithm {
    /// MD5, 16 bytes: the original's, and the only one of legacy digests.
    Md5,
    /// BLAKE3, 32 bytes: several times faster per core.
    #[default]
    Blake3,
    /// BLAKE3 in keyed mode, 32 bytes: the hash of an encrypted chain, keyed
    /// with a key derived from the chain key
    /// ([`ChainKeys::block_hash_key`](crate::ChainKeys::block_hash_key)), so
    /// that a digest reveals nothing about the blocks.
    Blake3Keyed,
}

impl HashAlgorithm {
    /// The byte that stands for it in headers.
    pub fn id(self) -> u8 {
        match self {
            HashAlgorithm::Md5 => 1,
            HashAlgorithm::Blake3 => 2,
            HashAlgorithm::Blake3Keyed => 3,
        }
    }

    /// The algorithm a header byte stands for.
    pub fn from_id(id: u8) -> Option<Self> {
        match id {
            1 => Some(HashAlgorithm::Md5),
            2 => Some(HashAlgorithm::Blake3),
            3 => Some(HashAlgorithm::Blake3Keyed),
            _ => None,
        }
    }

    /// Length of one hash in bytes.
    pub fn len(self) -> usize {
        match self {
            HashAlgorithm::Md5 => 16,
            HashAlgorithm::Blake3 | HashAlgorithm::Blake3Keyed => 32,
        }
    }

    /// Always false: no algorithm has empty hashes (for clippy's
    /// `len_without_is_empty`).
    pub fn is_empty(self) -> bool {
        false
    }

    /// True for a hash that needs a key (an encrypted chain's).
    pub fn is_keyed(self) -> bool {
        self == HashAlgorithm::Blake3Keyed
    }

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgorithm::Md5 => "md5",
            HashAlgorithm::Blake3 => "blake3",
            HashAlgorithm::Blake3Keyed => "blake3-keyed",
        }
    }
}

impl std::fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for HashAlgorithm {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "md5" => Ok(HashAlgorithm::Md5),
            "blake3" => Ok(HashAlgorithm::Blake3),
            "blake3-keyed" => Ok(HashAlgorithm::Blake3Keyed),
            _ => Err(format!("unknown hash '{s}' (expected md5 or blake3)")),
        }
    }
}

/// How the payload of a frame is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FrameCompression {
    /// Stored as is.
    None,
    /// One zstd frame.
    #[default]
    Zstd,
}

impl FrameCompression {
    fn id(self) -> u8 {
        match self {
            FrameCompression::None => 0,
            FrameCompression::Zstd => 1,
        }
    }

    fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(FrameCompression::None),
            1 => Some(FrameCompression::Zstd),
            _ => None,
        }
    }
}

/// A 32-byte BLAKE3 fingerprint of a generation's digest, linking a diff to
/// its parent.
pub type Fingerprint = [u8; 32];

/// The fixed header of a v2 diff file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffHeader {
    /// Block size in bytes.
    pub block_size: u32,
    /// Size of the source, or [`UNKNOWN_SIZE`] when it was not known before
    /// the dump (the index always has it).
    pub source_size: u64,
    /// The generation number (1 for a full dump).
    pub generation: u64,
    /// Hash algorithm of the digest written with this diff.
    pub hash: HashAlgorithm,
    /// Payload compression of the frames.
    pub compression: FrameCompression,
    /// zstd level used (informational).
    pub level: i8,
    /// Creation time: seconds since the Unix epoch.
    pub created_secs: i64,
    /// Creation time: nanoseconds.
    pub created_nanos: u32,
    /// Fingerprint of the parent generation's digest; all zero for a base
    /// (a full dump, or a generation into which a prune folded the
    /// generations before it): a diff with no parent.
    pub parent: Fingerprint,
    /// The parent's generation number when a prune folded the
    /// generations between it and this one (header bytes 88..96); 0 when
    /// the parent is `generation − 1`, as every backup writes. Read it
    /// through [`parent_generation`](Self::parent_generation).
    pub folded_parent: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn corrupt(what: impl Into<String>, offset: u64, detail: impl Into<String>) -> ArchiveError {
    ArchiveError::Corrupt {
        what: what.into(),
        offset,
        detail: detail.into(),
    }
}

fn check_crc(what: impl Into<String>, offset: u64, stored: u32, bytes: &[&[u8]]) -> Result<()> {
    let mut h = crc32fast::Hasher::new();
    for b in bytes {
        h.update(b);
    }
    let computed = h.finalize();
    if computed != stored {
        return Err(ArchiveError::Checksum {
            what: what.into(),
            offset,
            stored,
            computed,
        });
    }
    Ok(())
}

impl DiffHeader {
    /// Encodes the header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&DIFF_MAGIC);
        b[8..10].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[10..12].copy_from_slice(&(HEADER_LEN as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        b[16..24].copy_from_slice(&self.source_size.to_le_bytes());
        b[24..32].copy_from_slice(&self.generation.to_le_bytes());
        b[32] = self.hash.id();
        b[33] = self.compression.id();
        b[34] = self.level as u8;
        b[40..48].copy_from_slice(&self.created_secs.to_le_bytes());
        b[48..52].copy_from_slice(&self.created_nanos.to_le_bytes());
        b[56..88].copy_from_slice(&self.parent);
        b[88..96].copy_from_slice(&self.folded_parent.to_le_bytes());
        let crc = crc32fast::hash(&b[..HEADER_LEN - 4]);
        b[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and checks a header.
    pub fn decode(b: &[u8; HEADER_LEN], limits: &crate::Limits) -> Result<Self> {
        if b[0..8] != DIFF_MAGIC {
            return Err(corrupt("header", 0, "not a blockdiff v2 diff (bad magic)"));
        }
        let version = u16_at(b, 8);
        if version != FORMAT_VERSION {
            return Err(corrupt(
                "header",
                0,
                format!("format version {version} is not supported (this reader knows 2)"),
            ));
        }
        check_crc(
            "header",
            0,
            u32_at(b, HEADER_LEN - 4),
            &[&b[..HEADER_LEN - 4]],
        )?;
        let header_len = u16_at(b, 10);
        if usize::from(header_len) != HEADER_LEN {
            return Err(corrupt(
                "header",
                0,
                format!("header length {header_len}, expected {HEADER_LEN}"),
            ));
        }
        let block_size = limits.check_block_size(u64::from(u32_at(b, 12)), 12)?;
        let source_size = u64_at(b, 16);
        if source_size != UNKNOWN_SIZE && source_size > limits.max_source_size {
            return Err(corrupt(
                "header",
                16,
                format!("source size {source_size} is beyond the limit"),
            ));
        }
        let hash = HashAlgorithm::from_id(b[32])
            .ok_or_else(|| corrupt("header", 32, format!("unknown hash algorithm {}", b[32])))?;
        let compression = FrameCompression::from_id(b[33])
            .ok_or_else(|| corrupt("header", 33, format!("unknown compression {}", b[33])))?;
        for (from, to) in [(35, 40), (52, 56), (96, HEADER_LEN - 4)] {
            if b[from..to].iter().any(|&x| x != 0) {
                return Err(corrupt(
                    "header",
                    from as u64,
                    "reserved header bytes are not zero",
                ));
            }
        }
        let created_nanos = u32_at(b, 48);
        if created_nanos >= 1_000_000_000 {
            return Err(corrupt(
                "header",
                48,
                format!("creation time has {created_nanos} nanoseconds"),
            ));
        }
        let mut parent = [0u8; 32];
        parent.copy_from_slice(&b[56..88]);
        let generation = u64_at(b, 24);
        let folded_parent = u64_at(b, 88);
        if folded_parent != 0 && (folded_parent >= generation || parent == [0; 32]) {
            return Err(corrupt(
                "header",
                88,
                format!(
                    "parent generation {folded_parent} of generation {generation} is not an older generation with a parent fingerprint"
                ),
            ));
        }
        Ok(DiffHeader {
            block_size,
            source_size,
            generation,
            hash,
            compression,
            level: b[34] as i8,
            created_secs: u64_at(b, 40) as i64,
            created_nanos,
            parent,
            folded_parent,
        })
    }

    /// The generation whose image this diff's blocks are laid over: `None`
    /// for a base (no parent fingerprint), else the folded parent when a
    /// prune recorded one, else `generation − 1` (which is 0, no
    /// generation, for a generation 1 that names a parent: a reader
    /// refuses that).
    pub fn parent_generation(&self) -> Option<u64> {
        if self.parent == [0; 32] {
            None
        } else if self.folded_parent != 0 {
            Some(self.folded_parent)
        } else {
            Some(self.generation.saturating_sub(1))
        }
    }
}

/// What an extent's blocks hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// The blocks' bytes are in the frame's payload.
    Data,
    /// The blocks are all zero; nothing is stored.
    Zero,
}

/// A run of adjacent changed blocks of one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Index of the first block.
    pub first_block: u64,
    /// Number of blocks (at least 1).
    pub blocks: u32,
    /// Data or zero.
    pub kind: ExtentKind,
}

impl Extent {
    /// One past the last block (saturating; decoded extents never reach
    /// the limit).
    pub fn end_block(&self) -> u64 {
        self.first_block.saturating_add(u64::from(self.blocks))
    }

    fn encode(&self) -> [u8; EXTENT_LEN] {
        let mut b = [0u8; EXTENT_LEN];
        b[0..8].copy_from_slice(&self.first_block.to_le_bytes());
        b[8..12].copy_from_slice(&self.blocks.to_le_bytes());
        b[12] = match self.kind {
            ExtentKind::Data => 0,
            ExtentKind::Zero => 1,
        };
        b
    }

    fn decode(b: &[u8], what: &str, offset: u64) -> Result<Self> {
        let kind = match b[12] {
            0 => ExtentKind::Data,
            1 => ExtentKind::Zero,
            k => return Err(corrupt(what, offset, format!("unknown extent kind {k}"))),
        };
        if b[13..16] != [0, 0, 0] {
            return Err(corrupt(what, offset, "reserved extent bytes are not zero"));
        }
        let blocks = u32_at(b, 8);
        if blocks == 0 {
            return Err(corrupt(what, offset, "empty extent"));
        }
        let first_block = u64_at(b, 0);
        if first_block
            .checked_add(u64::from(blocks))
            .is_none_or(|end| end > MAX_BLOCKS)
        {
            return Err(corrupt(
                what,
                offset,
                format!("extent at block {first_block} lies beyond any source"),
            ));
        }
        Ok(Extent {
            first_block,
            blocks,
            kind,
        })
    }
}

/// The index's summary of a diff file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DiffSummary {
    /// Size of the source in bytes.
    pub source_size: u64,
    /// Blocks stored as data.
    pub data_blocks: u64,
    /// Blocks recorded as zero extents.
    pub zero_blocks: u64,
    /// Bytes of block data before compression.
    pub raw_bytes: u64,
    /// Bytes of frame payload as stored.
    pub stored_bytes: u64,
    /// Fingerprint of the digest written with this diff.
    pub fingerprint: Fingerprint,
}

/// Where one frame is, from the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// File offset of the frame header.
    pub offset: u64,
    /// Length of the whole frame (header, extent table, payload).
    pub len: u32,
    /// Number of extents in the frame.
    pub extents: u32,
}

/// Byte length of the data of `blocks` blocks starting at `first_block` in
/// a source of `source_size` bytes (the last block may be short).
pub fn data_len(first_block: u64, blocks: u64, block_size: u32, source_size: u64) -> u64 {
    let start = first_block.saturating_mul(u64::from(block_size));
    let end = (first_block.saturating_add(blocks)).saturating_mul(u64::from(block_size));
    end.min(source_size).saturating_sub(start)
}

#[cfg(test)]
mod tests;
