use std::io;
use std::path::{Path, PathBuf};

/// Everything that can go wrong while reading or writing a diff stream or a
/// digest sidecar, or checking a value such as a block size.
///
/// Offsets are byte positions in the (decompressed) stream, so that a message
/// such as `stream ends inside a record header at offset 16412` points at the
/// exact spot. A diff stream's errors leave the file name to the caller; a
/// digest's name the file themselves (its readers and writers are given its
/// path), as [`path`](Self::path) returns.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The underlying reader or writer failed.
    #[error("I/O error at stream offset {offset}: {source}")]
    Io {
        /// Stream offset at which the I/O error happened.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The stream ended in the middle of a structure.
    #[error("stream ends inside {what} at offset {offset} ({got} of {need} bytes)")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Stream offset where the structure starts.
        offset: u64,
        /// How many bytes were present.
        got: u64,
        /// How many bytes the structure needs.
        need: u64,
    },
    /// The block size in the header is zero or above the configured limit.
    #[error("invalid block size {block_size} at offset {offset} (allowed: 1 to {max} bytes)")]
    BlockSize {
        /// Stream offset of the block size field.
        offset: u64,
        /// The block size found.
        block_size: u64,
        /// The largest block size accepted.
        max: u64,
    },
    /// A record's block offset is not a multiple of the block size: the
    /// stream is corrupt, or a short block was followed by more records.
    #[error(
        "record at offset {offset}: block offset {block_offset} is not a multiple of the block size {block_size} (corrupt stream, or a short block that is not the last record)"
    )]
    Misaligned {
        /// Stream offset of the record header.
        offset: u64,
        /// The block offset found in the record.
        block_offset: u64,
        /// The stream's block size.
        block_size: u32,
    },
    /// A record's block would end beyond the largest source size accepted.
    #[error(
        "record at offset {offset}: block offset {block_offset} is beyond the limit of {max} bytes"
    )]
    OffsetTooLarge {
        /// Stream offset of the record header.
        offset: u64,
        /// The block offset found in the record.
        block_offset: u64,
        /// The largest source size accepted.
        max: u64,
    },
    /// A record's block comes at or before the previous record's: blockdiff
    /// writes blocks in increasing order, once each.
    #[error(
        "record at offset {offset}: block offset {block_offset} does not follow the previous record's {previous} (records must be in increasing order)"
    )]
    OutOfOrder {
        /// Stream offset of the record header.
        offset: u64,
        /// The block offset found in the record.
        block_offset: u64,
        /// The previous record's block offset.
        previous: u64,
    },
    /// A record header at the very end of the stream has no data after it.
    #[error("record at offset {offset} has a header but no data")]
    EmptyRecord {
        /// Stream offset of the record header.
        offset: u64,
    },
    /// A v2 structure is malformed.
    #[error("{what} at offset {offset}: {detail}")]
    Corrupt {
        /// Which structure ("header", "frame 3", "index", …).
        what: String,
        /// File offset of the structure.
        offset: u64,
        /// What is wrong with it.
        detail: String,
    },
    /// A v2 checksum does not match: the bytes were damaged.
    #[error(
        "{what} at offset {offset}: CRC32 mismatch (stored {stored:08x}, computed {computed:08x}): the file is damaged"
    )]
    Checksum {
        /// Which structure.
        what: String,
        /// File offset of the structure.
        offset: u64,
        /// The CRC stored in the file.
        stored: u32,
        /// The CRC of the bytes read.
        computed: u32,
    },
    /// A v2 file has no valid end marker: it was cut short or never finished.
    #[error("no end marker in the last {len} bytes: the file is truncated or was never finished")]
    MissingTrailer {
        /// The file's length.
        len: u64,
    },
    /// A writer was used against the format's rules (a bug in the caller).
    #[error("invalid write at block offset {block_offset}: {reason}")]
    InvalidWrite {
        /// The block offset of the rejected record.
        block_offset: u64,
        /// Why the record was rejected.
        reason: &'static str,
    },
    /// A digest sidecar is malformed.
    #[error("{path}: corrupt digest at offset {offset}: {detail}")]
    CorruptDigest {
        /// The digest file.
        path: PathBuf,
        /// Byte offset of the problem.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A named file (a digest) could not be opened, read or written.
    #[error("{path}: cannot {op}: {source}")]
    FileIo {
        /// The file.
        path: PathBuf,
        /// What was being done ("open digest", "read digest", …).
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A digest writer was used against the format's rules (a bug in the
    /// caller): a second header, an entry or an end before the header, or
    /// an entry count that does not fit the source size.
    #[error("{path}: {reason}")]
    InvalidDigestWrite {
        /// The digest being written.
        path: PathBuf,
        /// Why the call was rejected.
        reason: String,
    },
    /// A value given by the caller, not read from a file, is invalid: a
    /// block size out of range, text that is not a size, a legacy digest
    /// asked to hold another hash than MD5.
    #[error("{detail}")]
    InvalidValue {
        /// What is wrong, naming the value.
        detail: String,
    },
    /// The key given does not open a sealed file: its key check differs.
    /// Reported before anything is decrypted, and never as damage.
    #[error(
        "{path}: wrong key for this chain (the key check in its header does not match the key given)"
    )]
    WrongKey {
        /// The sealed file.
        path: PathBuf,
    },
    /// A sealed segment failed authentication: its bytes, or the header
    /// they are bound to, were altered, or the segment was moved.
    #[error(
        "{path}: sealed segment {segment} at offset {offset} failed authentication: the file was altered, damaged or moved"
    )]
    Tampered {
        /// The sealed file.
        path: PathBuf,
        /// The segment's number.
        segment: u64,
        /// File offset of the segment.
        offset: u64,
    },
    /// A sealed file is malformed, cut short, or not the one expected
    /// (another chain, generation or kind of content, or not sealed at all
    /// in a chain that is).
    #[error("{path}: {detail}")]
    Sealed {
        /// The file.
        path: PathBuf,
        /// File offset of the problem.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A key file or a passphrase file cannot be used.
    #[error("{path}: {detail}")]
    KeyFile {
        /// The key or passphrase file.
        path: PathBuf,
        /// What is wrong, and what to do.
        detail: String,
    },
}

impl ArchiveError {
    /// The stream offset the error refers to, when it refers to one.
    pub fn offset(&self) -> Option<u64> {
        match self {
            ArchiveError::Io { offset, .. }
            | ArchiveError::Truncated { offset, .. }
            | ArchiveError::BlockSize { offset, .. }
            | ArchiveError::Misaligned { offset, .. }
            | ArchiveError::OffsetTooLarge { offset, .. }
            | ArchiveError::EmptyRecord { offset }
            | ArchiveError::OutOfOrder { offset, .. }
            | ArchiveError::Corrupt { offset, .. }
            | ArchiveError::Checksum { offset, .. } => Some(*offset),
            ArchiveError::MissingTrailer { len } => Some(*len),
            ArchiveError::CorruptDigest { offset, .. }
            | ArchiveError::Tampered { offset, .. }
            | ArchiveError::Sealed { offset, .. } => Some(*offset),
            ArchiveError::WrongKey { .. } | ArchiveError::KeyFile { .. } => None,
            ArchiveError::InvalidWrite { .. }
            | ArchiveError::FileIo { .. }
            | ArchiveError::InvalidDigestWrite { .. }
            | ArchiveError::InvalidValue { .. } => None,
        }
    }

    /// The file the error names: a digest's errors name their file, a diff
    /// stream's leave that to the caller.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ArchiveError::CorruptDigest { path, .. }
            | ArchiveError::FileIo { path, .. }
            | ArchiveError::InvalidDigestWrite { path, .. }
            | ArchiveError::WrongKey { path }
            | ArchiveError::Tampered { path, .. }
            | ArchiveError::Sealed { path, .. }
            | ArchiveError::KeyFile { path, .. } => Some(path),
            ArchiveError::Io { .. }
            | ArchiveError::Truncated { .. }
            | ArchiveError::BlockSize { .. }
            | ArchiveError::Misaligned { .. }
            | ArchiveError::OffsetTooLarge { .. }
            | ArchiveError::OutOfOrder { .. }
            | ArchiveError::EmptyRecord { .. }
            | ArchiveError::Corrupt { .. }
            | ArchiveError::Checksum { .. }
            | ArchiveError::MissingTrailer { .. }
            | ArchiveError::InvalidWrite { .. }
            | ArchiveError::InvalidValue { .. } => None,
        }
    }
}

/// Result type of this crate.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;
