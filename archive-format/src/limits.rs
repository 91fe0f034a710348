/// Bounds applied to every length read from untrusted input, before any
/// allocation is made from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The largest block size accepted (the reader allocates one block).
    pub max_block_size: u32,
    /// The largest source size accepted: no record may end beyond it.
    pub max_source_size: u64,
}

/// The largest block size the tools accept: 16 MiB.
pub const MAX_BLOCK_SIZE: u32 = 16 << 20;

/// The largest source the tools accept: 1 EiB (keeps offset arithmetic far
/// from overflow).
pub const MAX_SOURCE_SIZE: u64 = 1 << 60;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_block_size: MAX_BLOCK_SIZE,
            max_source_size: MAX_SOURCE_SIZE,
        }
    }
}

impl Limits {
    /// Checks a block size read from offset `offset` of a stream.
    pub fn check_block_size(&self, block_size: u64, offset: u64) -> crate::Result<u32> {
        if block_size == 0 || block_size > u64::from(self.max_block_size) {
            return Err(crate::ArchiveError::BlockSize {
                offset,
                block_size,
                max: u64::from(self.max_block_size),
            });
        }
        Ok(block_size as u32)
    }
}
