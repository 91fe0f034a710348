//! A chain's name as the tools take it: a local path prefix, or
//! `s3://BUCKET/PREFIX/NAME`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use blockdiff_core::{
    ChainDeleter, ChainEncryption, ChainSet, Error, GenerationSource, GenerationStore, LocalChains,
    Result,
};
use serde::{Deserialize, Serialize};

use crate::{ObjectChain, ObjectChains, ObjectStorage, ObjectUrl, OpenDalStorage, S3Config};

/// How an object store is reached, beside what the environment says
/// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
/// `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE` and `~/.aws/credentials`).
/// Secrets are never options: they come from the environment or the
/// credentials file only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageOptions {
    /// The S3 endpoint (`http://127.0.0.1:3900`); overrides
    /// `AWS_ENDPOINT_URL`.
    pub endpoint: Option<String>,
    /// The region; overrides `AWS_REGION`.
    pub region: Option<String>,
    /// The profile of `~/.aws/credentials`; overrides `AWS_PROFILE`.
    pub profile: Option<String>,
    /// Where digests of object-store chains are cached (default
    /// `$XDG_CACHE_HOME/blockdiff`, else `~/.cache/blockdiff`).
    pub cache_dir: Option<PathBuf>,
    /// Seconds a request may make no progress before it is abandoned and
    /// retried (default [`DEFAULT_TIMEOUT`](crate::DEFAULT_TIMEOUT)).
    pub timeout_secs: Option<u64>,
}

impl StorageOptions {
    /// The digest cache's root directory.
    pub fn cache_root(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = env("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("blockdiff");
        }
        match env("HOME") {
            Some(home) => PathBuf::from(home).join(".cache").join("blockdiff"),
            None => PathBuf::from("/var/cache/blockdiff"),
        }
    }
}

/// The bucket and prefix of an `s3://BUCKET/PREFIX/NAME` name, reached with
/// `options` and the environment's credentials (nothing is read yet), and
/// the parsed name.
fn open_storage(
    name: &Path,
    options: &StorageOptions,
) -> Result<(Arc<dyn ObjectStorage>, ObjectUrl)> {
    let chain_error = |detail: String| Error::Chain {
        path: name.to_owned(),
        detail,
    };
    let text = name.to_str().unwrap_or_default();
    let url = ObjectUrl::parse(text).map_err(|e| chain_error(e.detail))?;
    let config = S3Config::from_env_and_options(
        options.endpoint.as_deref(),
        options.region.as_deref(),
        options.profile.as_deref(),
    )
    .map_err(|e| chain_error(e.to_string()))?;
    let config = S3Config {
        timeout: options.timeout_secs.map(std::time::Duration::from_secs),
        ..config
    };
    let storage = OpenDalStorage::s3(&config, &url.bucket, &url.prefix)
        .map_err(|e| chain_error(e.to_string()))?;
    Ok((Arc::new(storage), url))
}

/// The period chains of base name `base` (`/var/backup/db` or
/// `s3://BUCKET/PREFIX/db`) as `blockdiff-prune` sees them: the
/// [`ChainSet`] and where to delete its chains ([`LocalChains`] or
/// [`ObjectChains`]).
pub fn period_chains(
    base: &Path,
    options: &StorageOptions,
) -> Result<(ChainSet, Box<dyn ChainDeleter>)> {
    if !ChainLocation::is_object_name(base) {
        return Ok((ChainSet::list(base)?, Box::new(LocalChains)));
    }
    let (storage, url) = open_storage(base, options)?;
    let chains = ObjectChains::new(storage, options.cache_root());
    Ok((chains.list(&url.name)?, Box::new(chains)))
}

/// Where a chain is: a local store or an object store.
#[derive(Debug, Clone)]
pub enum ChainLocation {
    /// `NAME` is a local path prefix.
    Local(GenerationStore),
    /// `NAME` is `s3://BUCKET/PREFIX/NAME`.
    Objects(ObjectChain),
}

impl ChainLocation {
    /// Whether `name` names an object store (`s3://…`).
    pub fn is_object_name(name: &Path) -> bool {
        name.to_str().is_some_and(ObjectUrl::is_object_url)
    }

    /// The chain `name`: an `s3://` name is opened with `options` and the
    /// environment's credentials (nothing is read from the store yet);
    /// anything else is a local path prefix.
    pub fn open(name: &Path, options: &StorageOptions) -> Result<Self> {
        if !Self::is_object_name(name) {
            return Ok(ChainLocation::Local(GenerationStore::new(name)));
        }
        let (storage, url) = open_storage(name, options)?;
        let chain = ObjectChain::new(storage, &url.name, options.cache_root())?;
        Ok(ChainLocation::Objects(chain))
    }

    /// The chain with its key, when it is encrypted (`None`: a plain
    /// chain, and an encrypted one is refused with an error that asks for
    /// its key).
    pub fn with_encryption(self, encryption: Option<ChainEncryption>) -> Self {
        match (self, encryption) {
            (ChainLocation::Local(store), Some(enc)) => {
                ChainLocation::Local(store.with_encryption(enc))
            }
            (ChainLocation::Objects(chain), Some(enc)) => {
                ChainLocation::Objects(chain.with_encryption(enc))
            }
            (location, None) => location,
        }
    }

    /// The chain, as a restore reads it.
    pub fn source(&self) -> &dyn GenerationSource {
        match self {
            ChainLocation::Local(store) => store,
            ChainLocation::Objects(chain) => chain,
        }
    }

    /// The chain's name, for messages.
    pub fn name(&self) -> &Path {
        self.source().name()
    }
}

impl ChainLocation {
    /// Starts the next generation of the chain (see
    /// [`PreparedBackup::prepare`](blockdiff_core::PreparedBackup::prepare)
    /// and [`ObjectBackup::prepare`](crate::ObjectBackup::prepare)).
    pub fn prepare<'a>(
        &self,
        options: &blockdiff_core::BackupOptions,
        lock: &crate::LockOptions,
        progress: &mut dyn blockdiff_core::Progress,
    ) -> Result<Box<dyn blockdiff_core::PendingBackup + 'a>> {
        Ok(match self {
            ChainLocation::Local(store) => Box::new(blockdiff_core::PreparedBackup::prepare(
                store, options, progress,
            )?),
            ChainLocation::Objects(chain) => Box::new(crate::ObjectBackup::prepare(
                chain, options, lock, progress,
            )?),
        })
    }

    /// Adds `facts` to committed generation `generation`'s metadata.
    pub fn add_metadata(
        &self,
        generation: u64,
        facts: &std::collections::BTreeMap<String, String>,
    ) -> Result<()> {
        match self {
            ChainLocation::Local(store) => store.add_metadata(generation, facts),
            ChainLocation::Objects(chain) => chain.add_metadata(generation, facts),
        }
    }

    /// Rebuilds the chain's `NAME.ver` from the generations that verify,
    /// under its lock ([`repair`](blockdiff_core::repair); on an object
    /// store the lock a backup takes, with `lock`).
    pub fn repair(
        &self,
        dry_run: bool,
        lock: &crate::LockOptions,
        progress: &mut dyn blockdiff_core::Progress,
    ) -> Result<blockdiff_core::RepairReport> {
        match self {
            ChainLocation::Local(store) => blockdiff_core::repair(store, dry_run, progress),
            ChainLocation::Objects(chain) => {
                let lock = crate::ObjectLock::take(chain, lock)?;
                let report = blockdiff_core::repair_chain(chain, dry_run, progress)?;
                drop(lock);
                Ok(report)
            }
        }
    }

    /// Folds the generations that `options.policy` does not keep into the
    /// next ones kept, under the chain's lock
    /// ([`prune_generations`](blockdiff_core::prune_generations)).
    pub fn prune_generations(
        &self,
        options: &blockdiff_core::PruneGenerationsOptions,
        progress: &mut dyn blockdiff_core::Progress,
    ) -> Result<blockdiff_core::PruneGenerationsReport> {
        match self {
            ChainLocation::Local(store) => {
                blockdiff_core::prune_generations(store, options, progress)
            }
            ChainLocation::Objects(chain) => {
                blockdiff_core::prune_generations(chain, options, progress)
            }
        }
    }
}
