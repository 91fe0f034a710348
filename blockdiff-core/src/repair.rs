//! Rebuilding a chain's `NAME.ver` from the generations that verify:
//! [`repair`] for a local store, [`repair_chain`] for any
//! [`RepairableChain`] (an object store's too).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::generation_source::{DiffBytes, GenerationSource};
use crate::progress::Progress;
use crate::store::{DiffFormat, DiffLocation, GenerationStore};
use crate::{RestoreOptions, RestorePlan, Result};
use archive_format::DigestFormat;

/// What [`repair`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// What `NAME.ver` said before (`None`: missing or unreadable).
    pub previous: Option<u64>,
    /// The last generation k such that 1..=k restores and verifies, 0 if
    /// none does.
    pub verified: u64,
    /// Generations after `verified` that have files, with why the newest
    /// of them does not verify; none is removed.
    pub beyond: Vec<(u64, Vec<PathBuf>)>,
    /// Why generation `verified + 1` (the first beyond) did not verify.
    pub first_failure: Option<String>,
    /// Whether `NAME.ver` was written (false with `dry_run`, or when it
    /// already said `verified`).
    pub written: bool,
}

/// A chain whose `NAME.ver` [`repair_chain`] can rebuild.
pub trait RepairableChain: GenerationSource {
    /// The files (or objects) named like those of a generation, by
    /// generation, whatever `NAME.ver` says.
    fn generation_files(&self) -> Result<BTreeMap<u64, Vec<PathBuf>>>;

    /// Replaces `NAME.ver` with `generation`, whole (a reader sees the old
    /// one or the new one), reporting `repair:rename-ver` just before.
    fn replace_ver(&self, generation: u64, progress: &mut dyn Progress) -> Result<()>;
}

/// Rebuilds `NAME.ver` from what verifies: finds the newest generation k
/// such that generations 1..=k restore and check against k's digest (the
/// same check as `blockdiff-restore --verify-only`), and, unless
/// `dry_run`, writes `NAME.ver` = k crash-safely under the store's lock.
/// It removes nothing: files of generations after k are reported.
pub fn repair(
    store: &GenerationStore,
    dry_run: bool,
    progress: &mut dyn Progress,
) -> Result<RepairReport> {
    let lock = store.lock()?;
    let report = repair_chain(store, dry_run, progress)?;
    drop(lock);
    Ok(report)
}

/// What [`repair`] does, on any chain; the caller holds its lock (no
/// backup may run meanwhile).
pub fn repair_chain(
    chain: &dyn RepairableChain,
    dry_run: bool,
    progress: &mut dyn Progress,
) -> Result<RepairReport> {
    let previous = chain.current_generation().ok().flatten();
    let files = chain.generation_files()?;
    let mut verified = 0;
    let mut first_failure = None;
    for &k in files.keys().rev() {
        let plan = RestorePlan::new(
            &AssumingCurrent {
                chain,
                generation: k,
            },
            &RestoreOptions {
                generation: Some(k),
                verify: true,
                // A digest listing fewer blocks than its parent's is not
                // trusted without the operator's word (or metadata).
                ..Default::default()
            },
        );
        match plan.and_then(|p| p.verify(progress)) {
            Ok(_) => {
                verified = k;
                break;
            }
            Err(e) => first_failure = Some(format!("generation {k}: {e}")),
        }
    }
    let beyond: Vec<(u64, Vec<PathBuf>)> =
        files.into_iter().filter(|&(g, _)| g > verified).collect();
    if beyond.is_empty() {
        first_failure = None;
    }
    let mut written = false;
    if !dry_run && previous != Some(verified) {
        chain.replace_ver(verified, progress)?;
        written = true;
    }
    Ok(RepairReport {
        previous,
        verified,
        beyond,
        first_failure,
        written,
    })
}

/// A chain as if its `NAME.ver` said `generation`.
struct AssumingCurrent<'a> {
    chain: &'a dyn RepairableChain,
    generation: u64,
}

impl GenerationSource for AssumingCurrent<'_> {
    fn name(&self) -> &Path {
        self.chain.name()
    }

    fn ver_path(&self) -> PathBuf {
        self.chain.ver_path()
    }

    fn current_generation(&self) -> Result<Option<u64>> {
        Ok(Some(self.generation))
    }

    fn diff_path(&self, generation: u64, format: DiffFormat) -> PathBuf {
        self.chain.diff_path(generation, format)
    }

    fn metadata_path(&self, generation: u64) -> PathBuf {
        self.chain.metadata_path(generation)
    }

    fn find_diff(&self, generation: u64) -> Result<DiffLocation> {
        self.chain.find_diff(generation)
    }

    fn find_digest(&self, generation: u64) -> Result<(PathBuf, DigestFormat)> {
        self.chain.find_digest(generation)
    }

    fn read_metadata(&self, generation: u64) -> Result<Option<BTreeMap<String, String>>> {
        self.chain.read_metadata(generation)
    }

    fn open_diff(&self, diff: &DiffLocation) -> Result<DiffBytes> {
        self.chain.open_diff(diff)
    }

    fn digest_size(&self, generation: u64) -> Result<u64> {
        self.chain.digest_size(generation)
    }

    fn diff_modified(&self, diff: &DiffLocation) -> Option<SystemTime> {
        self.chain.diff_modified(diff)
    }

    fn stream_read_size(&self) -> usize {
        self.chain.stream_read_size()
    }

    fn local_store(&self) -> Option<&GenerationStore> {
        self.chain.local_store()
    }

    fn open_digest(&self, generation: u64) -> Result<archive_format::DigestFile> {
        self.chain.open_digest(generation)
    }

    fn block_hash_key(&self) -> Option<crate::BlockHashKey> {
        self.chain.block_hash_key()
    }
}
