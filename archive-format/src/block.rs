//! The value types of a block: its size ([`BlockSize`]) and its hash
//! ([`BlockHash`]). Hashing itself is the engine's (`blockdiff-core`).

use std::fmt;
use std::str::FromStr;

use crate::{ArchiveError, MAX_BLOCK_SIZE, Result, parse_binary_size};

/// The size of the blocks a source is split into: 1 byte to 16 MiB, by
/// default 16 KiB as in the original blockdiff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockSize(u32);

impl BlockSize {
    /// The original blockdiff's default, 16 KiB.
    pub const DEFAULT: BlockSize = BlockSize(16384);
    /// The largest block size accepted.
    pub const MAX: u32 = MAX_BLOCK_SIZE;

    /// Checks a block size.
    pub fn new(bytes: u32) -> Result<Self> {
        if bytes == 0 || bytes > Self::MAX {
            return Err(ArchiveError::InvalidValue {
                detail: format!(
                    "block size {bytes} is out of range (1 byte to {} bytes)",
                    Self::MAX
                ),
            });
        }
        Ok(BlockSize(bytes))
    }

    /// The size in bytes.
    pub fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes, as a `usize`.
    pub fn bytes(self) -> usize {
        self.0 as usize
    }

    /// How many blocks a source of `size` bytes has.
    pub fn blocks_in(self, size: u64) -> u64 {
        size.div_ceil(u64::from(self.0))
    }

    /// The byte offset of block `index`.
    pub fn offset_of(self, index: u64) -> u64 {
        index * u64::from(self.0)
    }
}

impl Default for BlockSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for BlockSize {
    type Err = ArchiveError;

    /// Parses `16384`, `16k`, `16KiB`, `1M` or `1MiB` (binary multiples).
    fn from_str(s: &str) -> Result<Self> {
        let bytes = parse_binary_size(s, "block size")?;
        let bytes = u32::try_from(bytes).map_err(|_| ArchiveError::InvalidValue {
            detail: format!("block size {s:?} is too large"),
        })?;
        BlockSize::new(bytes)
    }
}

/// The hash of one block. MD5 fills the first 16 bytes (the rest stay
/// zero); BLAKE3 all 32.
pub type BlockHash = [u8; HASH_LEN];

/// Length in bytes of a [`BlockHash`] (the longest algorithm's).
pub const HASH_LEN: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sizes() {
        assert_eq!("16384".parse::<BlockSize>().unwrap().get(), 16384);
        assert_eq!("4k".parse::<BlockSize>().unwrap().get(), 4096);
        assert_eq!("1MiB".parse::<BlockSize>().unwrap().get(), 1 << 20);
        assert!("0".parse::<BlockSize>().is_err());
        assert!("17M".parse::<BlockSize>().is_err());
        assert!("4x".parse::<BlockSize>().is_err());
        assert!("99999999999999999999".parse::<BlockSize>().is_err());
    }

    #[test]
    fn block_arithmetic() {
        let bs = BlockSize::new(10).unwrap();
        assert_eq!(bs.blocks_in(0), 0);
        assert_eq!(bs.blocks_in(10), 1);
        assert_eq!(bs.blocks_in(11), 2);
        assert_eq!(bs.offset_of(3), 30);
    }
}
