//! Retention within one chain: generations that a [`RetentionPolicy`] does
//! not keep are folded into the next generation kept, whose diff is
//! rewritten to hold, for every block, the newest version among them and
//! itself. Every kept generation restores exactly as before and keeps its
//! number and its digest; no source is read. When generation 1 is not
//! kept, the oldest generation kept becomes the new base (a synthetic
//! full).
//!
//! - `retention_policy`: [`RetentionPolicy`], the pure decision;
//! - `folded_diff`: the new diff, written and checked;
//! - `prepared_fold`: [`PreparedFold`], one fold made ready on any store;
//! - `local_fold`: the crash-safe switch on a local store and the recovery
//!   of an interrupted one. Other stores implement [`FoldableChain`].

mod folded_diff;
mod local_fold;
mod prepared_fold;
mod retention_policy;

use std::collections::BTreeSet;

use crate::chains::CivilDate;
use crate::generation_source::GenerationSource;
use crate::progress::Progress;
use crate::restore::chain_headers;
use crate::store::GenerationStore;
use crate::{Error, Result};

pub(crate) use local_fold::recover_interrupted_fold;
use prepared_fold::legacy_refusal;
pub use prepared_fold::{FoldedStats, PreparedFold};
pub use retention_policy::{GenerationTime, RetainReason, Retention, RetentionPolicy};

/// One fold: the generations `folded` (newest first) go into generation
/// `into`, whose parent becomes `parent` (`None`: it becomes the base).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldGroup {
    /// The generation kept, whose diff is rewritten.
    pub into: u64,
    /// Its parent after the fold: the previous generation kept.
    pub parent: Option<u64>,
    /// The generations folded into it and removed, newest first.
    pub folded: Vec<u64>,
}

/// The folds that keep exactly `kept` of `chain` (newest first, as
/// [`chain_generations`](crate::chain_generations) lists it): each run of
/// generations not kept goes into the next newer generation kept. The
/// newest generation must be kept.
pub fn plan_folds(chain: &[u64], kept: &BTreeSet<u64>) -> Vec<FoldGroup> {
    let mut groups = Vec::new();
    let mut oldest_first: Vec<u64> = chain.to_vec();
    oldest_first.sort_unstable();
    let mut pending: Vec<u64> = Vec::new();
    let mut parent = None;
    for g in oldest_first {
        if kept.contains(&g) {
            if !pending.is_empty() {
                pending.reverse();
                groups.push(FoldGroup {
                    into: g,
                    parent,
                    folded: std::mem::take(&mut pending),
                });
            }
            parent = Some(g);
        } else {
            pending.push(g);
        }
    }
    groups
}

/// What one fold did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoldReport {
    /// The fold.
    pub group: FoldGroup,
    /// Bytes of the diffs read (the kept generation's and the folded
    /// ones').
    pub read_bytes: u64,
    /// Bytes of the kept generation's diff before.
    pub old_diff_bytes: u64,
    /// … and after.
    pub new_diff_bytes: u64,
    /// Bytes of the folded generations' files removed (diffs, digests,
    /// metadata).
    pub removed_bytes: u64,
    /// Blocks the new diff holds.
    pub blocks: u64,
    /// Bytes of block data in it, before compression.
    pub raw_bytes: u64,
}

/// How folds run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldOptions {
    /// Wait for a backup that holds the chain's lock, rather than fail at
    /// once.
    pub wait: bool,
    /// Most bytes of decompressed frames a fold keeps in memory.
    pub cache_bytes: usize,
}

impl Default for FoldOptions {
    fn default() -> Self {
        FoldOptions {
            wait: false,
            cache_bytes: 64 << 20,
        }
    }
}

/// The steps of a fold, in order, as [`Progress::at_step`] reports them
/// (FORMAT.md §6.5 says what each has done; tests stop a run at each).
pub const FOLD_STEPS: [&str; 6] = [
    "fold:synced-diff",
    "fold:wrote-intent",
    "fold:switched",
    "fold:synced-switch",
    "fold:removed-folded",
    "fold:done",
];

/// A chain whose generations can be folded: the steps that depend on the
/// store. [`prune_generations`] and [`fold_generations`] decide and plan,
/// then call these; [`GenerationStore`] implements them on a local
/// directory, and the `blockdiff-storage` crate on an object store.
pub trait FoldableChain: GenerationSource {
    /// Takes the lock a backup takes, waiting for a run that holds it when
    /// `wait` (as far as the store can wait), else failing at once with
    /// [`Error::Locked`]. The fold holds it until the guard is dropped.
    fn lock_for_fold(&self, wait: bool) -> Result<Box<dyn Send + '_>>;

    /// Finishes or undoes a fold that was killed, under the lock; returns
    /// whether one was found.
    fn recover_interrupted_fold(&self, progress: &mut dyn Progress) -> Result<bool>;

    /// Runs one fold, under the lock: writes the new diff of `group.into`
    /// beside the old one ([`PreparedFold`]), checks it, switches to it in
    /// one step that a kill cannot leave half done, and then removes the
    /// folded generations.
    fn fold(
        &self,
        group: &FoldGroup,
        cache_bytes: usize,
        progress: &mut dyn Progress,
    ) -> Result<FoldReport>;
}

impl FoldableChain for GenerationStore {
    fn lock_for_fold(&self, wait: bool) -> Result<Box<dyn Send + '_>> {
        Ok(Box::new(if wait {
            self.lock_waiting()?
        } else {
            self.lock()?
        }))
    }

    fn recover_interrupted_fold(&self, progress: &mut dyn Progress) -> Result<bool> {
        recover_interrupted_fold(self, progress)
    }

    fn fold(
        &self,
        group: &FoldGroup,
        cache_bytes: usize,
        progress: &mut dyn Progress,
    ) -> Result<FoldReport> {
        local_fold::fold_local(self, group, cache_bytes, progress)
    }
}

/// How [`prune_generations`] runs.
#[derive(Debug, Clone, Copy)]
pub struct PruneGenerationsOptions {
    /// Which generations to keep.
    pub policy: RetentionPolicy,
    /// Now, in seconds since 1970 UTC (for `within_seconds`).
    pub now: i64,
    /// The local date of a time (seconds since 1970 UTC), for the
    /// calendar rules: the tools use the system's time zone.
    pub local_date: fn(i64) -> CivilDate,
    /// Decide and report; change nothing (an interrupted fold is not
    /// recovered either).
    pub dry_run: bool,
    /// How the folds run.
    pub fold: FoldOptions,
}

impl PruneGenerationsOptions {
    /// Options with `policy`, the time now and UTC dates.
    pub fn new(policy: RetentionPolicy) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        PruneGenerationsOptions {
            policy,
            now,
            local_date: utc_date,
            dry_run: false,
            fold: FoldOptions::default(),
        }
    }
}

/// The UTC date of a time.
pub fn utc_date(secs: i64) -> CivilDate {
    CivilDate::from_days_since_epoch(secs.div_euclid(86_400))
        .unwrap_or_else(|_| CivilDate::new(1970, 1, 1).expect("a valid date"))
}

/// What [`prune_generations`] decided and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneGenerationsReport {
    /// The decision for every generation of the chain, newest first.
    pub decisions: Vec<Retention>,
    /// Each generation's time, newest first.
    pub times: Vec<GenerationTime>,
    /// The folds planned, oldest first.
    pub groups: Vec<FoldGroup>,
    /// The folds done (none on a dry run).
    pub folds: Vec<FoldReport>,
    /// An interrupted fold of an earlier run was finished or undone.
    pub recovered: bool,
}

/// Prunes the generations of the chain `store` (a local
/// [`GenerationStore`] or another [`FoldableChain`]) that `options.policy`
/// does not keep, by folding each run of them into the next generation
/// kept, under the chain's lock. Kept generations keep their numbers and
/// restore exactly as before; a kill at any point leaves every one of them
/// restorable, and the next prune or backup finishes or undoes the fold it
/// interrupted. A chain in the original tool's format is refused.
///
/// ```
/// use std::collections::BTreeSet;
/// use blockdiff_core::{BackupOptions, DumpSource, GenerationStore, NoProgress, PruneGenerationsOptions, RestoreOptions, RestorePlan, RetentionPolicy, backup, chain_generations, prune_generations};
///
/// let dir = tempfile::tempdir()?;
/// let store = GenerationStore::new(dir.path().join("db"));
/// let mut image = vec![0u8; 200_000];
/// for g in 1..=5u8 {
///     image[usize::from(g) * 30_000] = g;
///     backup(&store, DumpSource::from_bytes(&image, "image"), &BackupOptions::default(), &mut NoProgress)?;
/// }
/// let policy = RetentionPolicy { last: 2, ..RetentionPolicy::default() };
/// let report = prune_generations(&store, &PruneGenerationsOptions::new(policy), &mut NoProgress)?;
/// assert_eq!(report.folds.len(), 1); // 1, 2 and 3 folded into 4, the new base
/// assert_eq!(chain_generations(&store, None)?, [5, 4]);
/// let restored = dir.path().join("restored");
/// RestorePlan::new(&store, &RestoreOptions::default())?.execute(&restored, &mut NoProgress)?;
/// assert_eq!(std::fs::read(&restored)?, image);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn prune_generations(
    store: &dyn FoldableChain,
    options: &PruneGenerationsOptions,
    progress: &mut dyn Progress,
) -> Result<PruneGenerationsReport> {
    let lock = if options.dry_run {
        if let Some(local) = store.local_store() {
            local.check_name()?;
        }
        None
    } else {
        Some(store.lock_for_fold(options.fold.wait)?)
    };
    let recovered = if lock.is_some() {
        store.recover_interrupted_fold(progress)?
    } else {
        false
    };
    let headers = headers(store)?;
    let mut times = Vec::with_capacity(headers.len());
    for (generation, header) in &headers {
        let Some(h) = header else {
            return Err(legacy_refusal(store));
        };
        times.push(GenerationTime {
            generation: *generation,
            created: h.created_secs,
            local_date: (options.local_date)(h.created_secs),
        });
    }
    let decisions = options.policy.decide(&times, options.now);
    let kept: BTreeSet<u64> = decisions
        .iter()
        .filter(|r| r.is_kept())
        .map(|r| r.generation)
        .collect();
    let chain: Vec<u64> = headers.iter().map(|(g, _)| *g).collect();
    let groups = plan_folds(&chain, &kept);
    let folds = if options.dry_run {
        Vec::new()
    } else {
        fold_planned(store, &groups, &options.fold, progress)?
    };
    drop(lock);
    Ok(PruneGenerationsReport {
        decisions,
        times,
        groups,
        folds,
        recovered,
    })
}

/// Folds every generation of the chain in `store` that is not in `keep`
/// into the next generation in `keep`, as [`prune_generations`] does for
/// the generations its policy keeps: a library user's own policy. `keep`
/// must hold the newest generation, and only generations of the chain.
pub fn fold_generations(
    store: &dyn FoldableChain,
    keep: &BTreeSet<u64>,
    options: &FoldOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<FoldReport>> {
    let lock = store.lock_for_fold(options.wait)?;
    store.recover_interrupted_fold(progress)?;
    let headers = headers(store)?;
    if headers.iter().any(|(_, h)| h.is_none()) {
        return Err(legacy_refusal(store));
    }
    let chain: Vec<u64> = headers.iter().map(|(g, _)| *g).collect();
    if let Some(g) = keep.iter().find(|g| !chain.contains(g)) {
        return Err(Error::InvalidOption(format!(
            "{}: generation {g} is not in the chain, which holds {chain:?}",
            store.name().display()
        )));
    }
    if chain.first().is_some_and(|newest| !keep.contains(newest)) {
        return Err(Error::InvalidOption(format!(
            "{}: the newest generation {} must be kept: the next backup builds on it",
            store.name().display(),
            chain[0]
        )));
    }
    let folds = fold_planned(store, &plan_folds(&chain, keep), options, progress)?;
    drop(lock);
    Ok(folds)
}

/// The chain's generations and headers, newest first.
fn headers(store: &dyn GenerationSource) -> Result<Vec<(u64, Option<archive_format::DiffHeader>)>> {
    let current = store
        .current_generation()?
        .ok_or_else(|| Error::MissingGeneration {
            path: store.ver_path(),
            generation: 1,
            reason: "there is no backup under this name (no .ver file)".into(),
        })?;
    chain_headers(store, Some(current))
}

/// Runs the folds, oldest first; the caller holds the lock.
fn fold_planned(
    store: &dyn FoldableChain,
    groups: &[FoldGroup],
    options: &FoldOptions,
    progress: &mut dyn Progress,
) -> Result<Vec<FoldReport>> {
    groups
        .iter()
        .map(|group| store.fold(group, options.cache_bytes, progress))
        .collect()
}

#[cfg(test)]
mod tests;
