//! Executing a retention decision: [`PrunePlan`] keeps the chains another
//! run has locked and deletes the others, file by file, crash-safely.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::calendar::CivilDate;
use super::chain_set::{ChainSet, PeriodChain};
use super::period::{is_chain_suffix, with_suffix};
use super::retention::{DeleteReason, KeepReason, PruneAction, PruneDecision, PrunePolicy};
use crate::error::IoContext;
use crate::progress::Progress;
use crate::store::{GenerationStore, sync_dir};
use crate::{Error, Result};

/// Where period chains live, for [`PrunePlan`]: who holds a chain's lock,
/// and how a chain is deleted. [`LocalChains`] is the local directory; an
/// object store implements it in `blockdiff-storage`.
pub trait ChainDeleter {
    /// `Some(holder)` if another run holds `chain`'s lock now.
    fn lock_holder(&self, chain: &PeriodChain) -> Result<Option<String>>;

    /// Takes `chain`'s lock and removes its files: the `.ver` first, made
    /// durable before anything else goes, so that a half-deleted chain is
    /// never taken for a valid one; the lock last. Reports the steps
    /// `prune:locked`, `prune:removed-ver` and `prune:removed-files` to
    /// `progress`. A chain whose lock another run holds is left whole.
    fn delete(&self, chain: &PeriodChain, progress: &mut dyn Progress) -> Result<ChainDeletion>;
}

/// What [`ChainDeleter::delete`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainDeletion {
    /// Nothing: another run holds the chain's lock.
    Locked {
        /// Who, as its lock says.
        holder: String,
    },
    /// The chain is gone; these files were removed, in order.
    Deleted {
        /// The `.ver` first, the lock last.
        removed: Vec<PathBuf>,
    },
}

/// Chains in a local directory, locked with the `flock` of `NAME.lock` that
/// a backup takes.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalChains;

impl ChainDeleter for LocalChains {
    fn lock_holder(&self, chain: &PeriodChain) -> Result<Option<String>> {
        lock_holder(&chain.store())
    }

    fn delete(&self, chain: &PeriodChain, progress: &mut dyn Progress) -> Result<ChainDeletion> {
        let store = chain.store();
        let lock = match store.lock() {
            Ok(lock) => lock,
            Err(Error::Locked { holder, .. }) => return Ok(ChainDeletion::Locked { holder }),
            Err(e) => return Err(e),
        };
        progress.at_step("prune:locked");
        let removed = delete_chain(chain, &store, lock, progress)?;
        Ok(ChainDeletion::Deleted { removed })
    }
}

/// Whether another process holds the flock of an existing `NAME.lock`,
/// without creating it; `Some(holder)` if so.
fn lock_holder(store: &GenerationStore) -> Result<Option<String>> {
    let path = store.lock_path();
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx(&path, "open lock file"),
    };
    match file.try_lock() {
        Ok(()) => Ok(None),
        Err(fs::TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&file).take(200).read_to_string(&mut holder);
            let holder = holder.trim();
            Ok(Some(if holder.is_empty() {
                "holder unknown".into()
            } else {
                holder.to_owned()
            }))
        }
        Err(fs::TryLockError::Error(e)) => Err(e).ctx(&path, "lock"),
    }
}

/// The chains of a base name to keep and to delete.
///
/// ```
/// use blockdiff_core::{ChainSet, CivilDate, PrunePlan, PrunePolicy};
/// use std::time::SystemTime;
///
/// let dir = tempfile::tempdir()?;
/// for chain in ["db-202609", "db-202610", "db-202611"] {
///     std::fs::write(dir.path().join(format!("{chain}.ver")), "1\n")?;
///     std::fs::write(dir.path().join(format!("{chain}.1")), "")?;
/// }
/// let set = ChainSet::list(&dir.path().join("db"))?;
/// let today = CivilDate::new(2026, 11, 20)?;
/// let plan = PrunePlan::new(&set, PrunePolicy::Keep(2), today, SystemTime::now())?;
/// let report = plan.execute(&mut blockdiff_core::NoProgress)?;
/// assert_eq!(report.deleted.len(), 1);
/// assert!(report.deleted[0].chain.name().ends_with("db-202609"));
/// assert!(!dir.path().join("db-202609.1").exists());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunePlan {
    decisions: Vec<PruneDecision>,
}

/// A chain that was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedChain {
    /// The chain as planned.
    pub chain: PeriodChain,
    /// Why.
    pub reason: DeleteReason,
    /// The files removed, in the order they were: the `.ver` first, the
    /// `.lock` last.
    pub removed: Vec<PathBuf>,
}

/// What [`PrunePlan::execute`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PruneReport {
    /// The chains kept, oldest first, with the reason; a chain planned for
    /// deletion that another run locked meanwhile is among them.
    pub kept: Vec<(PeriodChain, KeepReason)>,
    /// The chains deleted, oldest first.
    pub deleted: Vec<DeletedChain>,
}

impl PrunePlan {
    /// Decides by `policy` ([`PrunePolicy::decide`]), then keeps every
    /// chain planned for deletion whose lock another run holds: chains in
    /// a local directory ([`LocalChains`]).
    pub fn new(
        set: &ChainSet,
        policy: PrunePolicy,
        today: CivilDate,
        now: SystemTime,
    ) -> Result<Self> {
        Self::new_in(set, policy, today, now, &LocalChains)
    }

    /// As [`new`](Self::new), for chains where `deleter` says.
    pub fn new_in(
        set: &ChainSet,
        policy: PrunePolicy,
        today: CivilDate,
        now: SystemTime,
        deleter: &dyn ChainDeleter,
    ) -> Result<Self> {
        let mut decisions = policy.decide(set, today, now)?;
        for d in &mut decisions {
            if matches!(d.action, PruneAction::Delete(_))
                && let Some(holder) = deleter.lock_holder(&d.chain)?
            {
                d.action = PruneAction::Keep(KeepReason::Locked { holder });
            }
        }
        Ok(PrunePlan { decisions })
    }

    /// The decisions, oldest chain first.
    pub fn decisions(&self) -> &[PruneDecision] {
        &self.decisions
    }

    /// Deletes the chains planned for deletion. Each is locked first (the
    /// lock a backup takes, so none can start on it meanwhile; a chain
    /// locked by another run is kept), then its files are removed: the
    /// `.ver` first, made durable, so that a half-deleted chain is never
    /// taken for a valid one; the `.lock` last, before the lock is let go.
    /// The files are those present now, not when the chain was listed.
    /// Stops at the first file that cannot be removed.
    ///
    /// Its steps, for [`Progress::at_step`]: `prune:locked` (a chain to
    /// delete is locked, nothing removed yet), `prune:removed-ver` (its
    /// `.ver` is gone, durably), `prune:removed-files` (all but its
    /// `.lock`). A run killed at any of them has touched no kept chain; the
    /// chain it was deleting has no `.ver`, and the next prune deletes the
    /// rest of it.
    pub fn execute(self, progress: &mut dyn Progress) -> Result<PruneReport> {
        self.execute_in(&LocalChains, progress)
    }

    /// As [`execute`](Self::execute), for chains where `deleter` says.
    pub fn execute_in(
        self,
        deleter: &dyn ChainDeleter,
        progress: &mut dyn Progress,
    ) -> Result<PruneReport> {
        let mut report = PruneReport::default();
        for decision in self.decisions {
            let reason = match decision.action {
                PruneAction::Keep(reason) => {
                    report.kept.push((decision.chain, reason));
                    continue;
                }
                PruneAction::Delete(reason) => reason,
            };
            match deleter.delete(&decision.chain, progress)? {
                ChainDeletion::Locked { holder } => report
                    .kept
                    .push((decision.chain, KeepReason::Locked { holder })),
                ChainDeletion::Deleted { removed } => report.deleted.push(DeletedChain {
                    chain: decision.chain,
                    reason,
                    removed,
                }),
            }
        }
        Ok(report)
    }
}

/// Removes every file of `chain` under its `lock`: `.ver` (then a directory
/// fsync), the rest by name, `.lock` last.
fn delete_chain(
    chain: &PeriodChain,
    store: &GenerationStore,
    lock: crate::StoreLock,
    progress: &mut dyn Progress,
) -> Result<Vec<PathBuf>> {
    let dir = store.dir();
    let ver = store.ver_path();
    let lock_path = store.lock_path();
    let mut removed = Vec::new();
    let remove = |path: &Path, removed: &mut Vec<PathBuf>| -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => {
                removed.push(path.to_owned());
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(path, "remove"),
        }
    };
    remove(&ver, &mut removed)?;
    sync_dir(&dir)?;
    progress.at_step("prune:removed-ver");
    // The files now, under the lock.
    for path in chain_files(&dir, chain.name())? {
        if path != ver && path != lock_path {
            remove(&path, &mut removed)?;
        }
    }
    progress.at_step("prune:removed-files");
    remove(&lock_path, &mut removed)?;
    drop(lock);
    sync_dir(&dir)?;
    Ok(removed)
}

/// The files of the chain named `name` in `dir`, sorted.
fn chain_files(dir: &Path, name: &Path) -> Result<Vec<PathBuf>> {
    let stem = name.file_name().unwrap_or_default().as_encoded_bytes();
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).ctx(dir, "read directory")? {
        let entry = entry.ctx(dir, "read directory")?;
        let file_name = entry.file_name();
        let Some(suffix) = file_name.as_encoded_bytes().strip_prefix(stem) else {
            continue;
        };
        let Ok(suffix) = std::str::from_utf8(suffix) else {
            continue;
        };
        if is_chain_suffix(OsStr::new(suffix))
            && !entry.file_type().ctx(entry.path(), "stat")?.is_dir()
        {
            files.push(with_suffix(name, suffix));
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::test_support::{LOOK_ALIKES, date, fake_chain};

    /// The plan to keep the newest `keep` chains of `set`, today being
    /// 2026-11-20.
    fn plan_keeping(set: &ChainSet, keep: usize) -> PrunePlan {
        PrunePlan::new(
            set,
            PrunePolicy::Keep(keep),
            date(2026, 11, 20),
            SystemTime::now(),
        )
        .unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn locked_chain_is_kept_and_execute_removes_exactly_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        fake_chain(dir.path(), "202607", 2, 120);
        fake_chain(dir.path(), "202608", 3, 90);
        fake_chain(dir.path(), "202609", 1, 60);
        fake_chain(dir.path(), "202610", 1, 30);
        fs::write(dir.path().join("db-202607.3.tmp"), b"").unwrap();
        fs::write(dir.path().join("db-202607.ver.tmp"), b"").unwrap();
        fs::write(dir.path().join("db-202607.2.meta.json.tmp"), b"").unwrap();
        for f in LOOK_ALIKES {
            fs::write(dir.path().join(f), b"not a chain").unwrap();
        }
        let set = ChainSet::list(&dir.path().join("db")).unwrap();
        let held = GenerationStore::new(dir.path().join("db-202608"))
            .lock()
            .unwrap();
        let plan = plan_keeping(&set, 1);
        let locked = &plan.decisions()[1];
        assert_eq!(locked.chain.key(), "202608");
        assert_eq!(
            locked.action,
            PruneAction::Keep(KeepReason::Locked {
                holder: format!("pid {}", std::process::id())
            })
        );
        let report = plan.execute(&mut crate::NoProgress).unwrap();
        let deleted: Vec<&str> = report.deleted.iter().map(|d| d.chain.key()).collect();
        assert_eq!(deleted, ["202607", "202609"]);
        let july = &report.deleted[0];
        assert_eq!(july.reason, DeleteReason::BeyondCount { keep: 1 });
        let removed: Vec<String> = july
            .removed
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            removed,
            [
                "db-202607.ver",
                "db-202607.1",
                "db-202607.1.digest",
                "db-202607.1.meta.json",
                "db-202607.2",
                "db-202607.2.digest",
                "db-202607.2.meta.json",
                "db-202607.2.meta.json.tmp",
                "db-202607.3.tmp",
                "db-202607.ver.tmp",
                "db-202607.lock",
            ]
        );
        let kept: Vec<(&str, &KeepReason)> =
            report.kept.iter().map(|(c, r)| (c.key(), r)).collect();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[1], ("202610", &KeepReason::Newest));
        let mut expect: Vec<String> = LOOK_ALIKES
            .iter()
            .map(std::string::ToString::to_string)
            .collect();
        for g in 1..=3 {
            expect.push(format!("db-202608.{g}"));
            expect.push(format!("db-202608.{g}.digest"));
            expect.push(format!("db-202608.{g}.meta.json"));
        }
        expect.extend(["db-202608.lock", "db-202608.ver"].map(String::from));
        expect.extend(
            [
                "db-202610.1",
                "db-202610.1.digest",
                "db-202610.1.meta.json",
                "db-202610.lock",
                "db-202610.ver",
            ]
            .map(String::from),
        );
        expect.sort();
        assert_eq!(names(dir.path()), expect);

        // Released, the locked chain goes on the next run.
        drop(held);
        let set = ChainSet::list(&dir.path().join("db")).unwrap();
        let report = plan_keeping(&set, 1)
            .execute(&mut crate::NoProgress)
            .unwrap();
        assert_eq!(report.deleted.len(), 1);
        assert_eq!(report.deleted[0].removed.len(), 11);
        assert_eq!(
            report.deleted[0].removed[0],
            dir.path().join("db-202608.ver")
        );
        assert!(!names(dir.path()).iter().any(|n| n.starts_with("db-202608")));
    }

    #[test]
    fn a_lock_taken_after_planning_keeps_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        fake_chain(dir.path(), "202609", 1, 60);
        fake_chain(dir.path(), "202610", 1, 30);
        let set = ChainSet::list(&dir.path().join("db")).unwrap();
        let plan = plan_keeping(&set, 1);
        assert!(matches!(plan.decisions()[0].action, PruneAction::Delete(_)));
        let _held = GenerationStore::new(dir.path().join("db-202609"))
            .lock()
            .unwrap();
        let report = plan.execute(&mut crate::NoProgress).unwrap();
        assert!(report.deleted.is_empty());
        assert!(matches!(report.kept[0].1, KeepReason::Locked { .. }));
        assert!(dir.path().join("db-202609.ver").exists());
        assert!(dir.path().join("db-202609.1").exists());
    }

    #[test]
    fn half_pruned_chain_is_incomplete_and_finished_next_time() {
        let dir = tempfile::tempdir().unwrap();
        fake_chain(dir.path(), "202609", 2, 60);
        fake_chain(dir.path(), "202610", 1, 30);
        fake_chain(dir.path(), "202611", 1, 1);
        // A prune killed after the .ver went.
        fs::remove_file(dir.path().join("db-202609.ver")).unwrap();
        let set = ChainSet::list(&dir.path().join("db")).unwrap();
        let plan = plan_keeping(&set, 2);
        assert_eq!(
            plan.decisions()[0].action,
            PruneAction::Delete(DeleteReason::Incomplete)
        );
        // Not counted: the two complete ones stay.
        assert!(matches!(plan.decisions()[1].action, PruneAction::Keep(_)));
        plan.execute(&mut crate::NoProgress).unwrap();
        assert!(!names(dir.path()).iter().any(|n| n.starts_with("db-202609")));
        assert!(dir.path().join("db-202610.ver").exists());
    }

    #[test]
    fn relative_names_give_relative_paths() {
        // Tests run in the package directory: a relative name there.
        let dir = tempfile::tempdir_in(".").unwrap();
        let rel = Path::new(dir.path().file_name().unwrap());
        fake_chain(rel, "202609", 1, 60);
        fake_chain(rel, "202610", 1, 30);
        let base = rel.join("db");
        let set = ChainSet::list(&base).unwrap();
        assert_eq!(set.chains()[0].files()[0], rel.join("db-202609.1"));
        assert_eq!(set.base(), base);
        let report = plan_keeping(&set, 1)
            .execute(&mut crate::NoProgress)
            .unwrap();
        let removed = &report.deleted[0].removed;
        assert_eq!(removed.first().unwrap(), &rel.join("db-202609.ver"));
        assert_eq!(removed.last().unwrap(), &rel.join("db-202609.lock"));
        assert_eq!(removed.len(), 5);
    }
}
