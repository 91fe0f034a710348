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
//! An encrypted chain's files are sealed (FORMAT.md §10): [`SealedWriter`]
//! encrypts and authenticates any of them in AES-256-GCM segments behind a
//! [`SealedHeader`] that binds them to their chain, generation and kind;
//! [`SealedFile`] reads one by offset (it is a [`ReadAt`], so
//! [`DiffFile`] and [`DigestFile`] read through it) and [`SealedReader`]
//! front to back. [`ChainKeys`] derives every key from a key file's key
//! ([`read_key_file`]) or a passphrase ([`KeySecret`]).
//!
//! ```
//! use archive_format::{ChainKey, ChainKeys, KeySecret, ReadAt, SealedContent, SealedFile, SealedWriter};
//! use std::io::Write;
//!
//! let keys = ChainKeys::new_chain(&KeySecret::Key(ChainKey::generate()?))?;
//! let mut w = SealedWriter::new(Vec::new(), &keys, SealedContent::Digest, 3)?;
//! w.write_all(b"secret digest bytes")?;
//! let sealed = w.finish()?;
//!
//! let f = SealedFile::open(sealed.clone(), &keys, SealedContent::Digest, Some(3), "db.3.digest")?;
//! let mut buf = [0u8; 6];
//! f.read_at(&mut buf, 0)?;
//! assert_eq!(&buf, b"secret");
//! // Another generation's name, or one changed byte: refused.
//! assert!(SealedFile::open(sealed.clone(), &keys, SealedContent::Digest, Some(4), "db.4.digest").is_err());
//! let mut bad = sealed;
//! let last = bad.len() - 1;
//! bad[last] ^= 1;
//! assert!(SealedFile::open(bad, &keys, SealedContent::Digest, Some(3), "db.3.digest").is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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
    is_sealed, parse_key_hex, read_key_file, read_passphrase_file, write_key_file,
};
pub use skip::{SkipRead, read_full};
pub use units::parse_binary_size;
pub use v2::HEADER_LEN as V2_HEADER_LEN;
pub use v2::{
    DIFF_MAGIC, DiffFile, DiffHeader, DiffSummary, DiffWriter, Extent, ExtentKind, Fingerprint,
    Frame, FrameBuilder, FrameCompression, FrameCompressor, FrameDecompressor, FrameEntry,
    FrameMeta, HashAlgorithm, MAX_FRAME_EXTENTS, MAX_FRAME_LEN, MAX_FRAME_RAW, MAX_FRAME_STORED,
    MAX_INDEX_LEN, ReadAt, StreamReader, UNKNOWN_SIZE, data_len, fill_at,
};

#[cfg(test)]
mod tests;

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
