use std::io;
use std::path::PathBuf;

use archive_format::ArchiveError;

/// Everything that can go wrong in this crate. Every variant names the file
/// it is about, and the offset, block or generation where there is one.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on a file failed.
    #[error("{path}: cannot {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done ("read", "create", "fsync", …).
        op: &'static str,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// Reading the source failed at a byte offset.
    #[error("{path}: read error at offset {offset}: {source}")]
    SourceRead {
        /// The source.
        path: PathBuf,
        /// Byte offset in the source.
        offset: u64,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A diff stream is malformed or could not be read or written.
    #[error("{path}: {source}")]
    Archive {
        /// The diff file.
        path: PathBuf,
        /// What the stream parser found.
        #[source]
        source: ArchiveError,
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
    /// `NAME.ver` does not hold a generation number.
    #[error("{path}: not a generation number: {content:?}")]
    BadVersionFile {
        /// The `.ver` file.
        path: PathBuf,
        /// What it holds (at most 40 bytes of it).
        content: String,
    },
    /// A generation that the operation needs is not there.
    #[error("{path}: generation {generation} is missing: {reason}")]
    MissingGeneration {
        /// The file that should exist.
        path: PathBuf,
        /// The generation.
        generation: u64,
        /// Why it is needed.
        reason: String,
    },
    /// Another run holds the lock of this backup name.
    #[error(
        "{path}: another blockdiff run holds this backup's lock ({holder}); try again when it has finished"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says about its holder.
        holder: String,
    },
    /// The generations of a chain do not agree with each other.
    #[error("{path}: {detail}")]
    Chain {
        /// The file that disagrees.
        path: PathBuf,
        /// How.
        detail: String,
    },
    /// A restored block does not hash to the digest of the generation being
    /// restored.
    #[error(
        "{path}: block at offset {block_offset} (record at stream offset {stream_offset}) does not match {digest}; the chain is corrupt or a newer generation is truncated"
    )]
    Mismatch {
        /// The diff file the block came from.
        path: PathBuf,
        /// Byte offset of the block in the source.
        block_offset: u64,
        /// Offset of its record in the diff stream.
        stream_offset: u64,
        /// The digest file it was checked against.
        digest: PathBuf,
    },
    /// A block of the source is in no generation of the chain.
    #[error(
        "{digest}: {count} block(s) are in no generation of the chain, the first at offset {first_offset}; a diff is truncated or missing"
    )]
    MissingBlocks {
        /// The digest that lists the blocks.
        digest: PathBuf,
        /// How many blocks are missing.
        count: u64,
        /// Byte offset of the first one.
        first_offset: u64,
    },
    /// The restore target cannot hold the source.
    #[error(
        "{path}: device is {have} bytes, the source needs {need}; nothing was written past its end"
    )]
    TargetTooSmall {
        /// The target.
        path: PathBuf,
        /// Bytes needed.
        need: u64,
        /// Bytes available.
        have: u64,
    },
    /// The source yielded another number of bytes than its size said.
    #[error(
        "{path}: size changed during the dump: expected {expected} bytes, read {read} (back up a snapshot, not a live file)"
    )]
    SourceSizeChanged {
        /// The source.
        path: PathBuf,
        /// Its size when the dump began.
        expected: u64,
        /// The bytes read.
        read: u64,
    },
    /// The caller asked the run to stop ([`Progress::should_stop`](crate::Progress::should_stop)).
    #[error("stopped before the generation was committed: {reason}")]
    Stopped {
        /// Why, in the caller's words.
        reason: String,
    },
    /// A generation's metadata file is not a JSON object of strings.
    #[error("{path}: not a metadata file (a JSON object of strings): {detail}")]
    BadMetadata {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
    /// The niceness or I/O priority could not be set (raising a priority
    /// needs root).
    #[error("cannot set the {setting}: {source}")]
    Priority {
        /// What was being set ("niceness -5", "I/O priority realtime:0").
        setting: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// A restore target is refused (a link, a store's file, a missing
    /// device, …) before anything is written.
    #[error("{path}: {detail}")]
    BadTarget {
        /// The target as given.
        path: std::path::PathBuf,
        /// Why, and what to do.
        detail: String,
    },
    /// A restore was asked to stop
    /// ([`Progress::should_stop`](crate::Progress::should_stop)) before it
    /// completed.
    #[error("{path}: restore stopped before it completed ({reason}); {state}")]
    RestoreStopped {
        /// The target.
        path: std::path::PathBuf,
        /// Why, in the caller's words.
        reason: String,
        /// What the target is left as.
        state: &'static str,
    },
    /// A restore that writes in place failed after it had written: the
    /// target is neither what it was nor the generation.
    #[error(
        "{path}: generation {generation} is partly restored ({written} bytes written), then: {source}; run the same restore again to complete it (a delta restore writes what still differs)"
    )]
    PartlyRestored {
        /// The target.
        path: PathBuf,
        /// The generation being restored.
        generation: u64,
        /// Bytes written before the failure.
        written: u64,
        /// What failed.
        #[source]
        source: Box<Error>,
    },
    /// After a restore the target, read again, still differs from the
    /// generation: something else writes to it, or the storage does not
    /// keep what is written.
    #[error(
        "{path}: read again after the restore, it still differs from generation {generation}, first at offset {offset} (is something else writing to it, or is the disk failing?)"
    )]
    TargetDiffers {
        /// The target.
        path: PathBuf,
        /// The generation restored.
        generation: u64,
        /// The first differing byte offset.
        offset: u64,
    },
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// More hashing threads were asked for than this machine can use: each
    /// costs a few chunk buffers, so an absurd count would exhaust memory.
    #[error(
        "--threads {requested} is too many: at most {max} on this machine (8 per core); 0 means one per core"
    )]
    TooManyThreads {
        /// What was asked for.
        requested: usize,
        /// The largest count allowed here.
        max: usize,
    },
    /// A chain period is not `monthly`, `weekly` or `daily`.
    #[error("unknown chain period {value:?}: expected monthly, weekly or daily")]
    UnknownChainPeriod {
        /// What was given.
        value: String,
    },
    /// A civil date does not exist (or is outside years 1 to 9999).
    #[error("not a date: {year:04}-{month:02}-{day:02}")]
    InvalidDate {
        /// The year.
        year: i32,
        /// The month, 1 to 12.
        month: u32,
        /// The day of the month.
        day: u32,
    },
    /// An encrypted chain's file cannot be opened: a wrong or missing key,
    /// a key file others can read, or a sealed file that was altered, cut
    /// or put in another's place. The error names the file.
    #[error(transparent)]
    Sealed(ArchiveError),
    /// The key or passphrase given is not the encrypted chain's: found by
    /// the key check in a file's header, before anything is decrypted.
    #[error("wrong key for chain {chain} (the key check in {path} does not match the key given)")]
    WrongKey {
        /// The chain's name.
        chain: PathBuf,
        /// The file whose header was checked.
        path: PathBuf,
    },
    /// A backup name cannot be the base of period chains.
    #[error("{path}: not a base name for period chains: {detail}")]
    BadChainBase {
        /// The name given.
        path: PathBuf,
        /// Why.
        detail: String,
    },
}

/// Result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An archive-format error that names its file (a digest's, re-exported
/// here: [`DigestReader`](crate::DigestReader) and the others) or a value
/// (a [`BlockSize`](crate::BlockSize)) becomes the variant this crate has
/// always reported it as: [`Error::CorruptDigest`], [`Error::Io`] or
/// [`Error::InvalidOption`], with the same message.
///
/// A diff stream's error names no file: this crate attaches its path
/// (giving [`Error::Archive`]) wherever it reads one. Converted here, one
/// is an [`Error::Archive`] whose path says only "(diff stream)".
impl From<ArchiveError> for Error {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::CorruptDigest {
                path,
                offset,
                detail,
            } => Error::CorruptDigest {
                path,
                offset,
                detail,
            },
            ArchiveError::FileIo { path, op, source } => Error::Io { path, op, source },
            ArchiveError::InvalidDigestWrite { path, reason } => {
                Error::InvalidOption(format!("{}: {reason}", path.display()))
            }
            ArchiveError::InvalidValue { detail } => Error::InvalidOption(detail),
            source @ (ArchiveError::WrongKey { .. }
            | ArchiveError::Tampered { .. }
            | ArchiveError::Sealed { .. }
            | ArchiveError::KeyFile { .. }) => Error::Sealed(source),
            source @ (ArchiveError::Io { .. }
            | ArchiveError::Truncated { .. }
            | ArchiveError::BlockSize { .. }
            | ArchiveError::Misaligned { .. }
            | ArchiveError::OffsetTooLarge { .. }
            | ArchiveError::OutOfOrder { .. }
            | ArchiveError::EmptyRecord { .. }
            | ArchiveError::Corrupt { .. }
            | ArchiveError::Checksum { .. }
            | ArchiveError::MissingTrailer { .. }
            | ArchiveError::InvalidWrite { .. }) => Error::Archive {
                path: PathBuf::from("(diff stream)"),
                source,
            },
        }
    }
}

/// Attaches a path and an operation to an I/O error.
pub(crate) trait IoContext<T> {
    fn ctx(self, path: impl Into<PathBuf>, op: &'static str) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, path: impl Into<PathBuf>, op: &'static str) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.into(),
            op,
            source,
        })
    }
}

/// Attaches a path to an archive error.
pub(crate) trait ArchiveContext<T> {
    fn in_file(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> ArchiveContext<T> for std::result::Result<T, ArchiveError> {
    fn in_file(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| Error::Archive {
            path: path.into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BlockSize, DigestReader, DigestSpec, DigestWriter, HashAlgorithm};

    /// archive-format's digest and value errors read as this crate's always
    /// did: the variant and the message.
    #[test]
    fn archive_errors_that_name_a_file_or_value_keep_their_messages() {
        let e = Error::from("0".parse::<BlockSize>().unwrap_err());
        assert_eq!(
            e.to_string(),
            "invalid option: block size 0 is out of range (1 byte to 16777216 bytes)"
        );
        let e = Error::from("4x".parse::<BlockSize>().unwrap_err());
        assert_eq!(
            e.to_string(),
            "invalid option: block size \"4x\": unknown unit \"x\" (use K, M or G, binary multiples)"
        );
        let e = Error::from("8G".parse::<BlockSize>().unwrap_err());
        assert_eq!(
            e.to_string(),
            "invalid option: block size \"8G\" is too large"
        );

        let mut w = DigestWriter::new(Vec::new(), "w.digest");
        let e = Error::from(w.push(&[0; 32]).unwrap_err());
        assert_eq!(
            e.to_string(),
            "invalid option: w.digest: digest entry before its header"
        );
        let spec = DigestSpec {
            algorithm: HashAlgorithm::Blake3,
            ..DigestSpec::legacy(BlockSize::new(8).unwrap())
        };
        let e = Error::from(w.begin(&spec).unwrap_err());
        assert_eq!(
            e.to_string(),
            "invalid option: a legacy digest holds MD5 hashes only"
        );
        w.begin(&DigestSpec::legacy(BlockSize::new(8).unwrap()))
            .unwrap();
        let e = Error::from(w.end(100).unwrap_err());
        assert_eq!(
            e.to_string(),
            "invalid option: w.digest: 0 entries do not fit a source of 100 bytes"
        );

        let e = Error::from(DigestReader::new(&[1u8, 0][..], "x.md5").unwrap_err());
        assert!(matches!(e, Error::CorruptDigest { offset: 0, .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "x.md5: corrupt digest at offset 0: file is 2 bytes, too short for the 4-byte block size"
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.digest");
        let e = Error::from(DigestReader::open(&missing).unwrap_err());
        assert!(
            matches!(&e, Error::Io { path, op: "open digest", .. } if *path == missing),
            "{e:?}"
        );
        assert!(
            e.to_string()
                .starts_with(&format!("{}: cannot open digest: ", missing.display())),
            "{e}"
        );
    }
}
