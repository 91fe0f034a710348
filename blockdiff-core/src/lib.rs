//! Block-level incremental backups.
//!
//! A source (a disk image, a snapshot of a logical volume) is split into
//! fixed-size blocks ([`BlockSize`]) and every block is hashed (MD5 or
//! BLAKE3, [`HashAlgorithm`]). The hashes go to a small digest sidecar
//! ([`DigestWriter`], [`DigestReader`]); the next backup needs only that
//! sidecar, not the previous data, to write just the blocks that changed.
//!
//! - [`dump`] is the diff engine: a [`DumpSource`] + optional previous
//!   digest → changed blocks (to a [`DiffSink`]: [`V2Sink`] or
//!   [`LegacySink`]) + new digest, hashed and compressed on every core with
//!   bounded memory. With [`TrackedChanges`] (a thin pool's report of what
//!   changed) it reads only the blocks those touch.
//! - [`GenerationStore`] keeps numbered generations (`NAME.ver`, `NAME.N`,
//!   `NAME.N.digest` or the original's `NAME.N.md5` and `NAME.N.gz`) and
//!   commits a new one crash-safely under a lock; [`backup`] runs one backup
//!   end to end.
//! - [`GenerationStore::with_encryption`] keeps an encrypted chain: with a
//!   [`ChainEncryption`] (a key file's [`ChainKey`] or a passphrase,
//!   [`KeySecret`]) every diff, digest and metadata file is sealed, block
//!   hashes are keyed BLAKE3, and a wrong key is [`Error::WrongKey`].
//! - [`ChainPeriod`] names a chain per month, ISO week or day
//!   (`NAME-YYYYMM`, `NAME-YYYYWww`, `NAME-YYYYMMDD`); [`ChainSet`] lists
//!   them and [`PrunePlan`] deletes the old ones by a [`PrunePolicy`].
//! - [`RestorePlan`] restores a generation writing every block once and
//!   checking it against the digest, or verifies a chain without writing;
//!   [`restore_delta`] brings an existing file or device to a generation
//!   by writing only the blocks that differ; [`apply_stream`] applies a
//!   single diff stream as the original `blockdiff_merge` did.
//! - [`GenerationReader`] reads any generation at any offset without
//!   restoring it (what `blockdiff-mount` and `blockdiff-nbd` serve), each
//!   block checked against the generation's digest before it is returned.
//! - Polite I/O, on the host that reads the source: [`DumpOptions`] can cap
//!   the read rate ([`RateLimiter`]) and drop what was read from the page
//!   cache; [`set_nice`] and [`IoPriority`] lower the priority of the
//!   threads a dump then starts.
//! - Reading: a regular file opened with [`DumpSource::open`] is read
//!   through a memory map of one chunk at a time
//!   ([`DumpOptions::map_source`], on by default), so an unchanged block is
//!   hashed where it lies in the page cache and never copied (a block
//!   device, such as a snapshot, is read with `pread`). A page that cannot
//!   be read while mapped (the file shrank) raises `SIGBUS`; the first mapped dump installs a process-wide
//!   `SIGBUS` handler that turns a fault inside one of its own mappings
//!   into a failed dump and passes any other fault to the handler that was
//!   there before. A program that must own `SIGBUS` turns `map_source` off
//!   (the chunks are then read with `pread`).
//!
//! The legacy formats are those of the original Perl blockdiff, byte for
//! byte; v2 (the default for new chains) is specified in `FORMAT.md` of the
//! `archive-format` crate, which reads and writes them all (the digest
//! types and [`BlockSize`] are re-exported here from it). Libraries report
//! through [`Progress`] and return [`Error`]s that name the file and
//! offset; they never print.
//!
//! ```
//! use blockdiff_core::{BackupOptions, DumpSource, GenerationStore, NoProgress, RestoreOptions, RestorePlan, backup};
//!
//! let dir = tempfile::tempdir()?;
//! let store = GenerationStore::new(dir.path().join("disk"));
//! let mut disk = vec![0u8; 1 << 20];
//! backup(&store, DumpSource::from_bytes(&disk, "disk"), &BackupOptions::default(), &mut NoProgress)?;
//! disk[300_000..300_010].copy_from_slice(b"new bytes!");
//! let second = backup(&store, DumpSource::from_bytes(&disk, "disk"), &BackupOptions::default(), &mut NoProgress)?;
//! assert_eq!(second.dump.changed_blocks, 1);
//!
//! let restored = dir.path().join("restored");
//! RestorePlan::new(&store, &RestoreOptions::default())?.execute(&restored, &mut NoProgress)?;
//! assert_eq!(std::fs::read(&restored)?, disk);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

mod backup;
mod block;
mod chains;
mod dump;
mod encryption;
mod error;
mod fold;
mod generation_reader;
mod generation_source;
mod hash_name;
mod info;
mod ordered;
mod priority;
mod progress;
mod rate;
mod repair;
mod resolve;
mod restore;
mod store;
mod units;

pub use archive_format::{
    ARGON2_DEFAULT, ChainKey, KeySecret, SealedContent, is_sealed, parse_key_hex, read_key_file,
    read_passphrase_file, write_key_file,
};
pub use archive_format::{
    BlockHash, BlockSize, Compression, DIGEST_MAGIC, DigestFile, DigestFormat, DigestReader,
    DigestSpec, DigestWriter, Fingerprint, FrameCompression, HASH_LEN, HashAlgorithm,
};
pub use backup::{
    BackupOptions, BackupReport, PendingBackup, PreparedBackup, back_up_prepared,
    back_up_prepared_with, backup, backup_with_metadata,
};
pub use block::{BlockHashKey, BlockHasher, HashFn, hash_block, hash_blocks, is_zero};
pub use chains::{
    ChainDeleter, ChainDeletion, ChainPeriod, ChainSet, CivilDate, DeleteReason, DeletedChain,
    KeepReason, LocalChains, PeriodChain, PruneAction, PruneDecision, PrunePlan, PrunePolicy,
    PruneReport, civil_from_days,
};
pub use dump::{
    ChangedRanges, ChunkEncoder, DiffSink, DumpOptions, DumpPlan, DumpReport, DumpSource,
    DumpedChunk, FormatEncoded, FormatEncoder, FormatEncoderState, FormatSink, LegacySink,
    MAPPED_CHUNK, NoEncoding, READ_CHUNK, TrackedChanges, V2Encoder, V2EncoderState, V2Frame,
    V2Sink, dump,
};
pub use encryption::{ChainEncryption, StoreWriter, open_chain_file, unseal_chain_file};
pub use error::{Error, Result};
pub use fold::{
    FOLD_STEPS, FoldGroup, FoldOptions, FoldReport, FoldableChain, FoldedStats, GenerationTime,
    PreparedFold, PruneGenerationsOptions, PruneGenerationsReport, RetainReason, Retention,
    RetentionPolicy, fold_generations, plan_folds, prune_generations, utc_date,
};
pub use generation_reader::{GenerationReader, MAX_RUNS, ReaderOptions};
pub use generation_source::{DiffBytes, GenerationSource};
pub use info::{
    Comparison, GenerationInfo, chain_info, compare_with_digest, compare_with_generation,
    generation_info,
};
pub use priority::{IoPriority, NICE_MAX, NICE_MIN, set_nice};
pub use progress::{NoProgress, Notice, Progress};
pub use rate::{Clock, RateLimiter, SystemClock, parse_rate};
pub use repair::{RepairReport, RepairableChain, repair, repair_chain};
pub use resolve::{PreviousFormat, resolve_format};
pub use restore::{
    DELTA_STEPS, DeltaRestoreOptions, DeltaRestoreReport, DeltaTarget, DeltaTargetOptions,
    RestoreOptions, RestorePlan, RestoreReport, apply_stream, chain_generations, restore_delta,
};
pub use store::{
    CORE_METADATA_KEYS, CommitStep, DiffFormat, DiffLocation, GenerationStore, PendingGeneration,
    StoreLock, parse_version, sealed_read_error,
};

/// The README's example, run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
