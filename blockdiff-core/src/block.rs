use std::fmt;
use std::str::FromStr;

use md5::{Digest, Md5};

use crate::{Error, Result};

/// The size of the blocks a source is split into: 1 byte to 16 MiB, by
/// default 16 KiB as in the original blockdiff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BlockSize(u32);

impl BlockSize {
    /// The original blockdiff's default, 16 KiB.
    pub const DEFAULT: BlockSize = BlockSize(16384);
    /// The largest block size accepted.
    pub const MAX: u32 = archive_format::MAX_BLOCK_SIZE;

    /// Checks a block size.
    pub fn new(bytes: u32) -> Result<Self> {
        if bytes == 0 || bytes > Self::MAX {
            return Err(Error::InvalidOption(format!(
                "block size {bytes} is out of range (1 byte to {} bytes)",
                Self::MAX
            )));
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
    type Err = Error;

    /// Parses `16384`, `16k`, `16KiB`, `1M` or `1MiB` (binary multiples).
    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(digits);
        let mult: u64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            _ => {
                return Err(Error::InvalidOption(format!(
                    "block size {s:?}: unknown unit {unit:?}"
                )));
            }
        };
        let n: u64 = num
            .parse()
            .map_err(|_| Error::InvalidOption(format!("block size {s:?} is not a number")))?;
        let bytes = n
            .checked_mul(mult)
            .and_then(|b| u32::try_from(b).ok())
            .ok_or_else(|| Error::InvalidOption(format!("block size {s:?} is too large")))?;
        BlockSize::new(bytes)
    }
}

/// The hash of one block: an MD5 digest, as in the original's sidecar.
pub type BlockHash = [u8; 16];

/// Length in bytes of a [`BlockHash`].
pub const HASH_LEN: usize = 16;

/// Hashes one block.
pub fn hash_block(data: &[u8]) -> BlockHash {
    Md5::digest(data).into()
}

/// Hashes consecutive blocks of `data` (the last may be short) into `out`,
/// replacing its contents. This is the hot loop of a dump.
pub fn hash_blocks(data: &[u8], block_size: BlockSize, out: &mut Vec<BlockHash>) {
    out.clear();
    out.extend(data.chunks(block_size.bytes()).map(hash_block));
}

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
    fn md5_of_known_input() {
        // RFC 1321 test vector.
        let h = hash_block(b"abc");
        assert_eq!(
            h,
            [
                0x90, 0x01, 0x50, 0x98, 0x3c, 0xd2, 0x4f, 0xb0, 0xd6, 0x96, 0x3f, 0x7d, 0x28, 0xe1,
                0x7f, 0x72
            ]
        );
        let mut out = Vec::new();
        hash_blocks(b"abcabcab", BlockSize::new(3).unwrap(), &mut out);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], h);
        assert_eq!(out[2], hash_block(b"ab"));
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
