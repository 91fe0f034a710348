//! The period chains of a base name on disk: [`ChainSet`] lists them as
//! [`PeriodChain`]s.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::calendar::CivilDate;
use super::period::{ChainPeriod, is_chain_suffix, with_suffix};
use crate::error::IoContext;
use crate::store::GenerationStore;
use crate::{Error, Result};

/// One period chain of a base name: `NAME-KEY` and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodChain {
    name: PathBuf,
    key: String,
    period: ChainPeriod,
    start: CivilDate,
    files: Vec<PathBuf>,
    last_backup: Option<SystemTime>,
}

impl PeriodChain {
    /// The chain's backup name, `NAME-KEY` (a [`GenerationStore`] name).
    pub fn name(&self) -> &Path {
        &self.name
    }

    /// The period key: `202611`, `2026W47` or `20261120`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The period of the chain.
    pub fn period(&self) -> ChainPeriod {
        self.period
    }

    /// The first day of the chain's period.
    pub fn start(&self) -> CivilDate {
        self.start
    }

    /// The chain's files when it was listed, sorted by name.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Whether it has a `NAME-KEY.ver`: a committed generation. A chain
    /// without one is the leftover of an interrupted first backup or prune.
    pub fn is_complete(&self) -> bool {
        self.last_backup.is_some()
    }

    /// When its newest generation was committed: the modification time of
    /// its `.ver` file; `None` without one.
    pub fn last_backup(&self) -> Option<SystemTime> {
        self.last_backup
    }

    /// The chain's store.
    pub fn store(&self) -> GenerationStore {
        GenerationStore::new(&self.name)
    }

    /// Whether the period of the chain holds `date`.
    pub fn holds(&self, date: CivilDate) -> bool {
        self.period.key(date) == self.key
    }

    /// Orders chains from oldest to newest: by the first day of the period,
    /// then (for chains of different periods that start the same day) the
    /// shorter period first.
    fn order(&self, other: &Self) -> Ordering {
        (self.start, self.period, &self.key).cmp(&(other.start, other.period, &other.key))
    }
}

/// The period chains of a base name, oldest first.
///
/// Only names of the exact form `BASE-KEY` with a [`ChainPeriod`] key, and
/// only files with a suffix of a chain's file, count: `db-202611.ver` is
/// a file of chain `db-202611`; `db-202611.notes`, `db-backup.ver` or
/// `db-2026111.ver` are nobody's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSet {
    base: PathBuf,
    chains: Vec<PeriodChain>,
}

impl ChainSet {
    /// Lists the chains of `base` (such as `/var/backup/db`) in its
    /// directory.
    pub fn list(base: &Path) -> Result<Self> {
        let store = GenerationStore::new(base);
        let dir = store.dir();
        let prefix = match base.file_name() {
            Some(f) if !base.as_os_str().to_string_lossy().ends_with('/') => {
                let mut p = f.to_owned();
                p.push("-");
                p
            }
            _ => {
                return Err(Error::BadChainBase {
                    path: base.to_owned(),
                    detail: "it names no file (a name like /var/backup/db is needed)".into(),
                });
            }
        };
        let prefix = prefix.as_encoded_bytes();
        // key -> files
        let mut found: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for entry in fs::read_dir(&dir).ctx(&dir, "read directory")? {
            let entry = entry.ctx(&dir, "read directory")?;
            let file_name = entry.file_name();
            let bytes = file_name.as_encoded_bytes();
            let Some(rest) = bytes.strip_prefix(prefix) else {
                continue;
            };
            let Ok(rest) = std::str::from_utf8(rest) else {
                continue;
            };
            // The key runs to the first dot.
            let Some(dot) = rest.find('.') else {
                continue;
            };
            let (key, suffix) = rest.split_at(dot);
            if ChainPeriod::parse_key(key).is_none() || !is_chain_suffix(OsStr::new(suffix)) {
                continue;
            }
            let file_type = entry.file_type().ctx(entry.path(), "stat")?;
            if file_type.is_dir() {
                continue;
            }
            found
                .entry(key.to_owned())
                .or_default()
                .push(with_suffix(base, &format!("-{key}{suffix}")));
        }
        let mut chains = Vec::with_capacity(found.len());
        for (key, mut files) in found {
            let (period, start) = ChainPeriod::parse_key(&key).expect("checked above");
            files.sort();
            let name = with_suffix(base, &format!("-{key}"));
            let ver = GenerationStore::new(&name).ver_path();
            let last_backup = match fs::metadata(&ver) {
                Ok(m) => Some(m.modified().ctx(&ver, "stat")?),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).ctx(&ver, "stat"),
            };
            chains.push(PeriodChain {
                name,
                key,
                period,
                start,
                files,
                last_backup,
            });
        }
        chains.sort_by(PeriodChain::order);
        Ok(ChainSet {
            base: base.to_owned(),
            chains,
        })
    }

    /// The base name.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The chains, oldest first.
    pub fn chains(&self) -> &[PeriodChain] {
        &self.chains
    }

    /// The newest chain.
    pub fn newest(&self) -> Option<&PeriodChain> {
        self.chains.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::test_support::{LOOK_ALIKES, date, fake_chain};

    #[test]
    fn listing_ignores_look_alikes() {
        let dir = tempfile::tempdir().unwrap();
        fake_chain(dir.path(), "202610", 2, 40);
        fake_chain(dir.path(), "2026W47", 1, 0);
        fake_chain(dir.path(), "20261119", 1, 1);
        for f in LOOK_ALIKES {
            fs::write(dir.path().join(f), b"not a chain").unwrap();
        }
        // A directory named like a chain's file is not one.
        fs::create_dir(dir.path().join("db-202609.ver")).unwrap();
        // Leftovers of an interrupted run belong to their chain.
        fs::write(dir.path().join("db-202610.3.tmp"), b"").unwrap();
        fs::write(dir.path().join("db-202610.3.digest.tmp"), b"").unwrap();
        let set = ChainSet::list(&dir.path().join("db")).unwrap();
        let keys: Vec<&str> = set.chains().iter().map(PeriodChain::key).collect();
        // Oldest first, by the first day of the period.
        assert_eq!(keys, ["202610", "2026W47", "20261119"]);
        let oct = &set.chains()[0];
        assert_eq!(oct.period(), ChainPeriod::Monthly);
        assert_eq!(oct.name(), dir.path().join("db-202610"));
        assert!(oct.is_complete());
        let files: Vec<String> = oct
            .files()
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            files,
            [
                "db-202610.1",
                "db-202610.1.digest",
                "db-202610.1.meta.json",
                "db-202610.2",
                "db-202610.2.digest",
                "db-202610.2.meta.json",
                "db-202610.3.digest.tmp",
                "db-202610.3.tmp",
                "db-202610.lock",
                "db-202610.ver",
            ]
        );
        assert_eq!(set.newest().unwrap().key(), "20261119");
        assert!(set.chains()[1].holds(date(2026, 11, 22)));
        assert!(!set.chains()[1].holds(date(2026, 11, 23)));

        assert!(matches!(
            ChainSet::list(Path::new("/var/backup/")),
            Err(Error::BadChainBase { .. })
        ));
        let e = ChainSet::list(&dir.path().join("missing/db")).unwrap_err();
        assert!(
            e.to_string().contains("missing: cannot read directory"),
            "{e}"
        );
    }
}
