//! Restore: replay a chain of generations onto a file or block device,
//! writing every block once, and check it against the digest.
//!
//! - [`plan`]: [`RestorePlan`], the chain checked before anything is
//!   written, and the targets a restore refuses;
//! - [`replay`]: the replay engine, generic over a [`ChainReader`] that
//!   [`legacy_batches`] (the original's streams) and [`frames`] (v2)
//!   implement;
//! - [`target`] (the file or device written), [`window`] (a stretch of it
//!   assembled in memory), [`block_set`] (the blocks written so far),
//!   [`vectored`] (one write of several buffers);
//! - [`stream`]: [`apply_stream`], one diff applied in place;
//! - [`delta`]: [`restore_delta`], an existing file or device brought to a
//!   generation by writing only the blocks that differ ([`in_place`]: the
//!   target it updates).
//!
//! [`ChainReader`]: replay::ChainReader

mod block_set;
mod chain_walk;
mod delta;
mod frames;
mod in_place;
mod legacy_batches;
mod plan;
mod replay;
mod stream;
mod target;
mod vectored;
mod window;

pub use chain_walk::chain_generations;
pub(crate) use chain_walk::chain_headers;
pub use delta::{
    DELTA_STEPS, DeltaRestoreOptions, DeltaRestoreReport, DeltaTarget, DeltaTargetOptions,
    restore_delta,
};
pub(crate) use legacy_batches::open_legacy;
pub use plan::RestorePlan;
pub(crate) use plan::{Chain, PlanParts};
pub use stream::apply_stream;

/// How a chain is restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOptions {
    /// The generation to restore; `None` for the last committed one.
    pub generation: Option<u64>,
    /// Check every block against the generation's digest (on by default).
    /// Without it a truncated or corrupt legacy diff goes unnoticed.
    pub verify: bool,
    /// The operator confirms that the source really shrank: a legacy
    /// digest of generation K listing fewer blocks than generation K−1's
    /// is then trusted. Without it (and without a `source_size` in
    /// generation K's metadata that agrees) such a chain is refused, since
    /// a digest cut short (the original tool wrote it without fsync) looks
    /// exactly like this and would restore a short image.
    pub source_shrank: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            generation: None,
            verify: true,
            source_shrank: false,
        }
    }
}

/// What a restore (or a verification) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestoreReport {
    /// The generation restored (0 for a single stream).
    pub generation: u64,
    /// Size of the restored image in bytes.
    pub source_size: u64,
    /// Blocks written (or left as holes).
    pub blocks: u64,
    /// Bytes written to the target.
    pub bytes_written: u64,
    /// All-zero blocks left as holes in a sparse target file.
    pub holes: u64,
    /// Whether every block was checked against the digest.
    pub verified: bool,
    /// v2 frames read and checked.
    pub frames_read: u64,
    /// v2 frames not needed, so not read.
    pub frames_skipped: u64,
}
