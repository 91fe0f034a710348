//! The blockdiff on-disk formats: the diff stream and the digest sidecar.
//!
//! A diff stream carries the blocks of a source that changed since the
//! previous generation. This crate reads and writes the format of the
//! original Perl blockdiff byte for byte:
//!
//! - [`LegacyReader`] parses a stream record by record. It treats its input
//!   as untrusted: no panic and no allocation beyond one block, whose size is
//!   checked against [`Limits`] first. [`LegacyReader::skip_data`] seeks
//!   past blocks a caller does not need.
//! - [`LegacyWriter`] writes one, with an explicit
//!   [`finish`](LegacyWriter::finish).
//! - [`Compression`] wraps either side in gzip, as the original's `-z` did.
//!
//! A digest sidecar holds one hash ([`BlockHash`]) per block of the source,
//! blocks of a [`BlockSize`]: the next generation's dump compares against
//! it instead of the previous data. [`DigestWriter`] writes one (legacy
//! MD5 or v2, [`DigestSpec`]), [`DigestReader`] reads one front to back and
//! [`DigestFile`] by block index. Hashing the blocks is the caller's.
//!
//! Errors are [`ArchiveError`]s. A diff stream's name the stream offset and
//! the caller adds the file name; a digest's name the file and offset.
//!
//! ```
//! use archive_format::{Compression, LegacyReader, LegacyWriter};
//! use std::io::Write;
//!
//! // Write a gzip-compressed stream with one full and one short block.
//! let mut w = LegacyWriter::new(Compression::Gzip.writer(Vec::new()), 8)?;
//! w.write_record(0, b"01234567")?;
//! w.write_record(8, b"89")?;
//! let gz = w.finish()?.finish()?;
//! assert_eq!(Compression::detect(&gz), Compression::Gzip);
//!
//! // Read it back.
//! let mut r = LegacyReader::new(Compression::Gzip.reader(&gz[..]))?;
//! let mut buf = Vec::new();
//! let mut image = Vec::new();
//! while let Some(rec) = r.read_record(&mut buf)? {
//!     assert_eq!(rec.block_offset as usize, image.len());
//!     image.extend_from_slice(&buf);
//! }
//! assert_eq!(image, b"0123456789");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod block;
mod compression;
mod digest;
mod error;
mod legacy;
mod limits;
mod sealed;
mod skip;
mod units;
mod v2;

pub use block::{BlockHash, BlockSize, HASH_LEN};
pub use compression::{CompressedWriter, Compression};
pub use digest::{DIGEST_MAGIC, DigestFile, DigestFormat, DigestReader, DigestSpec, DigestWriter};
pub use error::{ArchiveError, Result};
pub use legacy::{HEADER_LEN, LegacyReader, LegacyWriter, RECORD_HEADER_LEN, RecordHeader};
pub use limits::{Limits, MAX_BLOCK_SIZE, MAX_SOURCE_SIZE};
pub use sealed::{
    ARGON2_DEFAULT, ChainKey, ChainKeys, KeyDerivation, KeySecret, SEALED_HEADER_LEN, SEALED_MAGIC,
    SEGMENT_SIZE, SealedContent, SealedFile, SealedHeader, SealedReader, SealedWriter, TAG_LEN,
    is_sealed, read_key_file, read_passphrase_file, write_key_file,
};
pub use skip::{SkipRead, read_full};
pub use units::parse_binary_size;
pub use v2::HEADER_LEN as V2_HEADER_LEN;
pub use v2::{
    DIFF_MAGIC, DiffFile, DiffHeader, DiffSummary, DiffWriter, Extent, ExtentKind, Fingerprint,
    Frame, FrameBuilder, FrameCompression, FrameCompressor, FrameDecompressor, FrameEntry,
    FrameMeta, HashAlgorithm, MAX_FRAME_EXTENTS, MAX_FRAME_LEN, MAX_FRAME_RAW, MAX_FRAME_STORED,
    MAX_INDEX_LEN, ReadAt, StreamReader, UNKNOWN_SIZE, data_len,
};

#[cfg(test)]
mod tests;

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
