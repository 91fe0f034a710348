//! Period chains on an object store (`s3://BUCKET/PREFIX/db-202611`, …):
//! [`ObjectChains`] lists them as a [`ChainSet`] and deletes the old ones
//! for [`PrunePlan`](blockdiff_core::PrunePlan), under the lock a backup
//! takes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use blockdiff_core::{ChainDeleter, ChainDeletion, ChainSet, Error, PeriodChain, Progress, Result};

use crate::ObjectStorage;
use crate::object_backup::{LockHolder, LockOptions, ObjectLock, local_lock, read_holder};
use crate::object_chain::{ObjectChain, core_error};

/// The period chains of base names on one object store (a bucket and
/// prefix).
///
/// ```
/// use std::sync::Arc;
/// use blockdiff_storage::{ObjectChains, ObjectStorage, OpenDalStorage};
///
/// let storage: Arc<dyn ObjectStorage> = Arc::new(OpenDalStorage::memory()?);
/// for key in ["db-202609.ver", "db-202609.1", "db-202611.ver", "db-backup.ver"] {
///     storage.put(key, b"1\n")?;
/// }
/// let cache = tempfile::tempdir()?;
/// let chains = ObjectChains::new(storage, cache.path());
/// let set = chains.list("db")?;
/// let keys: Vec<&str> = set.chains().iter().map(|c| c.key()).collect();
/// assert_eq!(keys, ["202609", "202611"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ObjectChains {
    storage: Arc<dyn ObjectStorage>,
    cache_root: PathBuf,
}

impl ObjectChains {
    /// The chains on `storage`, with digests cached under `cache_root` (as
    /// for [`ObjectChain::new`]).
    pub fn new(storage: Arc<dyn ObjectStorage>, cache_root: impl Into<PathBuf>) -> Self {
        ObjectChains {
            storage,
            cache_root: cache_root.into(),
        }
    }

    /// The chains of base name `base` (`db` for `db-202611`, …). Their
    /// names are the store's (`s3://BUCKET/PREFIX/db-202611`); the age of
    /// each is the modification time of its `.ver` object.
    pub fn list(&self, base: &str) -> Result<ChainSet> {
        let display = self.base_path(base)?;
        let entries = self.storage.list(&format!("{base}-")).map_err(core_error)?;
        ChainSet::from_files(&display, entries.into_iter().map(|e| (e.key, e.modified)))
    }

    fn base_path(&self, base: &str) -> Result<PathBuf> {
        let display = PathBuf::from(self.storage.describe(base));
        if base.is_empty() || base.contains('/') || base.starts_with('.') {
            return Err(Error::BadChainBase {
                path: display,
                detail: "not a backup name: give a name such as s3://bucket/prefix/db".into(),
            });
        }
        Ok(display)
    }

    /// The chain of a [`PeriodChain`] that [`list`](Self::list) gave.
    fn chain(&self, chain: &PeriodChain) -> Result<ObjectChain> {
        ObjectChain::new(
            Arc::clone(&self.storage),
            key_of(chain.name())?,
            self.cache_root.clone(),
        )
    }
}

/// The object key of a chain's name as listed: its last component.
fn key_of(name: &Path) -> Result<&str> {
    name.file_name()
        .and_then(|f| f.to_str())
        .ok_or_else(|| Error::BadChainBase {
            path: name.to_owned(),
            detail: "not a chain of an object store".into(),
        })
}

impl ChainDeleter for ObjectChains {
    fn lock_holder(&self, chain: &PeriodChain) -> Result<Option<String>> {
        let chain = self.chain(chain)?;
        // A run on this host holds the local lock; one elsewhere is named
        // by the lock object.
        if let Err(Error::Locked { holder, .. }) = local_lock(&chain, false) {
            return Ok(Some(holder));
        }
        Ok(other_host(&chain)?.map(|h| h.to_string()))
    }

    fn delete(&self, period: &PeriodChain, progress: &mut dyn Progress) -> Result<ChainDeletion> {
        let chain = self.chain(period)?;
        // A lock object of another host is kept (prune has no
        // --break-lock: a chain in use is simply not deleted).
        if let Some(holder) = other_host(&chain)? {
            return Ok(ChainDeletion::Locked {
                holder: holder.to_string(),
            });
        }
        let lock = match ObjectLock::take(&chain, &LockOptions::default()) {
            Ok(lock) => lock,
            Err(Error::Locked { holder, .. }) => return Ok(ChainDeletion::Locked { holder }),
            Err(e) => return Err(e),
        };
        progress.at_step("prune:locked");
        let storage = chain.storage();
        let describe = |key: &str| PathBuf::from(storage.describe(key));
        let mut removed = Vec::new();
        // The `.ver` first: from now on no reader takes the chain for a
        // valid one.
        let ver = chain.ver_key();
        if storage.stat(&ver).map_err(core_error)?.is_some() {
            storage.delete(&ver).map_err(core_error)?;
            removed.push(describe(&ver));
        }
        progress.at_step("prune:removed-ver");
        // The objects there now, under the lock; then uploads a killed run
        // left.
        let base = period.name().to_string_lossy();
        let base = base
            .strip_suffix(&format!("-{}", period.key()))
            .unwrap_or(&base);
        let now = storage.list(&chain.key(".")).map_err(core_error)?;
        let set = ChainSet::from_files(
            Path::new(base),
            now.into_iter().map(|e| (e.key, e.modified)),
        )?;
        let lock_key = chain.lock_key();
        for file in set
            .chains()
            .iter()
            .filter(|c| c.key() == period.key())
            .flat_map(PeriodChain::files)
        {
            let key = key_of(file)?;
            if key != ver && key != lock_key {
                storage.delete(key).map_err(core_error)?;
                removed.push(describe(key));
            }
        }
        storage
            .abort_incomplete_uploads(&chain.key("."))
            .map_err(core_error)?;
        // This host's cached digests of the chain go with it.
        let cache = chain.cache().dir();
        match std::fs::remove_dir_all(cache) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    path: cache.to_owned(),
                    op: "remove cached digests",
                    source,
                });
            }
        }
        progress.at_step("prune:removed-files");
        // The lock object last (dropping the lock removes it).
        drop(lock);
        removed.push(describe(&lock_key));
        Ok(ChainDeletion::Deleted { removed })
    }
}

/// The holder named by `chain`'s lock object if it is a run on another
/// host.
fn other_host(chain: &ObjectChain) -> Result<Option<LockHolder>> {
    Ok(read_holder(chain)?.filter(|h| !h.is_this_host()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::OpenDalStorage;
    use blockdiff_core::{CivilDate, NoProgress, PrunePlan, PrunePolicy};
    use std::time::SystemTime;

    fn put_chain(storage: &dyn ObjectStorage, name: &str, generations: u64) {
        for g in 1..=generations {
            storage.put(&format!("{name}.{g}"), b"diff").unwrap();
            storage
                .put(&format!("{name}.{g}.digest"), b"digest")
                .unwrap();
            storage
                .put(&format!("{name}.{g}.meta.json"), b"{}")
                .unwrap();
        }
        storage
            .put(
                &format!("{name}.ver"),
                format!("{generations}\n").as_bytes(),
            )
            .unwrap();
    }

    fn keys(storage: &dyn ObjectStorage) -> Vec<String> {
        storage
            .list("")
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect()
    }

    #[test]
    fn prune_deletes_old_chains_and_keeps_look_alikes() {
        let storage: Arc<dyn ObjectStorage> = Arc::new(OpenDalStorage::memory().unwrap());
        put_chain(&*storage, "db-202609", 2);
        put_chain(&*storage, "db-202610", 1);
        put_chain(&*storage, "db-202611", 1);
        for other in [
            "db-backup.ver",
            "db-2026091.ver",
            "db-202609.notes",
            "dbx-202609.ver",
        ] {
            storage.put(other, b"x").unwrap();
        }
        // A run killed before its first commit left a chain without .ver.
        storage.put("db-202608.1", b"partial").unwrap();
        let cache = tempfile::tempdir().unwrap();
        let chains = ObjectChains::new(Arc::clone(&storage), cache.path());
        let set = chains.list("db").unwrap();
        let listed: Vec<&str> = set.chains().iter().map(PeriodChain::key).collect();
        assert_eq!(listed, ["202608", "202609", "202610", "202611"]);
        assert!(!set.chains()[0].is_complete());
        assert_eq!(set.chains()[1].files().len(), 7);
        assert_eq!(
            set.chains()[1].name(),
            Path::new(&storage.describe("db-202609"))
        );

        let today = CivilDate::new(2026, 11, 20).unwrap();
        let plan = PrunePlan::new_in(
            &set,
            PrunePolicy::Keep(2),
            today,
            SystemTime::now(),
            &chains,
        )
        .unwrap();
        let report = plan.execute_in(&chains, &mut NoProgress).unwrap();
        let deleted: Vec<&str> = report.deleted.iter().map(|d| d.chain.key()).collect();
        assert_eq!(deleted, ["202608", "202609"]);
        // The .ver first, the lock last.
        let removed = &report.deleted[1].removed;
        assert!(removed[0].ends_with("db-202609.ver"), "{removed:?}");
        assert!(
            removed.last().unwrap().ends_with("db-202609.lock"),
            "{removed:?}"
        );
        let mut left = keys(&*storage);
        left.retain(|k| !k.starts_with("db-20261"));
        assert_eq!(
            left,
            [
                "db-202609.notes",
                "db-2026091.ver",
                "db-backup.ver",
                "dbx-202609.ver"
            ]
        );
        assert!(keys(&*storage).contains(&"db-202610.1".to_owned()));
    }

    #[test]
    fn a_chain_locked_by_another_host_is_kept() {
        let storage: Arc<dyn ObjectStorage> = Arc::new(OpenDalStorage::memory().unwrap());
        put_chain(&*storage, "db-202609", 1);
        put_chain(&*storage, "db-202611", 1);
        let holder = LockHolder {
            host: "elsewhere.example".into(),
            pid: 42,
            started: 1_700_000_000,
            run: "r".into(),
        };
        storage
            .put("db-202609.lock", &serde_json::to_vec(&holder).unwrap())
            .unwrap();
        let cache = tempfile::tempdir().unwrap();
        let chains = ObjectChains::new(Arc::clone(&storage), cache.path());
        let set = chains.list("db").unwrap();
        let today = CivilDate::new(2026, 11, 20).unwrap();
        let plan = PrunePlan::new_in(
            &set,
            PrunePolicy::Keep(1),
            today,
            SystemTime::now(),
            &chains,
        )
        .unwrap();
        let report = plan.execute_in(&chains, &mut NoProgress).unwrap();
        assert!(report.deleted.is_empty());
        let kept = format!("{:?}", report.kept);
        assert!(kept.contains("elsewhere.example"), "{kept}");
        assert!(keys(&*storage).contains(&"db-202609.1".to_owned()));
        assert!(keys(&*storage).contains(&"db-202609.ver".to_owned()));
    }
}
