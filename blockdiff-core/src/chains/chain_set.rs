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
        let prefix = chain_prefix(base)?;
        let dir = GenerationStore::new(base).dir();
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).ctx(&dir, "read directory")? {
            let entry = entry.ctx(&dir, "read directory")?;
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str() else {
                continue;
            };
            if parse_file_name(&prefix, name).is_none() {
                continue;
            }
            if entry.file_type().ctx(entry.path(), "stat")?.is_dir() {
                continue;
            }
            names.push(name.to_owned());
        }
        Self::build(base, &prefix, names, |ver| match fs::metadata(ver) {
            Ok(m) => Ok(Some(m.modified().ctx(ver, "stat")?)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).ctx(ver, "stat"),
        })
    }

    /// The chains of `base` among the `files` of a listing that is not a
    /// local directory (an object store's): each a file name (`db-202611.ver`)
    /// beside the directory of `base`, with its modification time. A `.ver`
    /// listed without a time counts as written now, so that a chain of
    /// unknown age is never deleted for its age.
    pub fn from_files(
        base: &Path,
        files: impl IntoIterator<Item = (String, Option<SystemTime>)>,
    ) -> Result<Self> {
        let prefix = chain_prefix(base)?;
        let times: BTreeMap<String, Option<SystemTime>> = files
            .into_iter()
            .filter(|(name, _)| parse_file_name(&prefix, name).is_some())
            .collect();
        let names = times.keys().cloned().collect();
        Self::build(base, &prefix, names, |ver| {
            let name = ver.file_name().and_then(OsStr::to_str).unwrap_or_default();
            Ok(times.get(name).map(|t| t.unwrap_or_else(SystemTime::now)))
        })
    }

    /// Groups the chain files `names` (checked by [`parse_file_name`]) by
    /// chain; `ver_time` tells when a chain's `.ver` was written, if it
    /// exists.
    fn build(
        base: &Path,
        prefix: &str,
        names: Vec<String>,
        ver_time: impl Fn(&Path) -> Result<Option<SystemTime>>,
    ) -> Result<Self> {
        // key -> files
        let mut found: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
        for name in names {
            let Some((key, suffix)) = parse_file_name(prefix, &name) else {
                continue;
            };
            found
                .entry(key.to_owned())
                .or_default()
                .push(with_suffix(base, &format!("-{key}{suffix}")));
        }
        let mut chains = Vec::with_capacity(found.len());
        for (key, mut files) in found {
            let (period, start) = ChainPeriod::parse_key(&key).expect("checked by parse_file_name");
            files.sort();
            let name = with_suffix(base, &format!("-{key}"));
            let last_backup = ver_time(&GenerationStore::new(&name).ver_path())?;
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

/// `BASE-`, the start of the file names of `base`'s chains.
fn chain_prefix(base: &Path) -> Result<String> {
    let bad = |detail: &str| Error::BadChainBase {
        path: base.to_owned(),
        detail: detail.into(),
    };
    let file = match base.file_name() {
        Some(f) if !base.as_os_str().as_encoded_bytes().ends_with(b"/") => f,
        _ => {
            return Err(bad(
                "it names no file (a name like /var/backup/db is needed)",
            ));
        }
    };
    let file = file
        .to_str()
        .ok_or_else(|| bad("its last component is not UTF-8"))?;
    Ok(format!("{file}-"))
}

/// The key and suffix of a chain's file name: `db-202611.1.digest` with
/// prefix `db-` is `("202611", ".1.digest")`. Only names of the exact form
/// `BASE-KEY` with a [`ChainPeriod`] key and a suffix of a chain's file
/// count.
fn parse_file_name<'a>(prefix: &str, name: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = name.strip_prefix(prefix)?;
    // The key runs to the first dot.
    let (key, suffix) = rest.split_at(rest.find('.')?);
    (ChainPeriod::parse_key(key).is_some() && is_chain_suffix(OsStr::new(suffix)))
        .then_some((key, suffix))
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
        // So do those of an interrupted fold.
        fs::write(dir.path().join("db-202610.fold"), b"").unwrap();
        fs::write(dir.path().join("db-202610.2.fold.tmp"), b"").unwrap();
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
                "db-202610.2.fold.tmp",
                "db-202610.2.meta.json",
                "db-202610.3.digest.tmp",
                "db-202610.3.tmp",
                "db-202610.fold",
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
