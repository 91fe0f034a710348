//! Chains by period and their retention: `NAME-YYYYMM` (monthly),
//! `NAME-YYYYWww` (ISO week) and `NAME-YYYYMMDD` (daily) are separate
//! backup names, each its own chain of generations starting with a full one,
//! and [`PrunePlan`] removes the old ones.
//!
//! Dates are civil dates ([`CivilDate`]) that the caller supplies (the tools
//! use the local date), so nothing here reads a clock or a time zone, except
//! that the age of a chain is the modification time of its `.ver` file.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use crate::error::IoContext;
use crate::progress::Progress;
use crate::store::GenerationStore;
use crate::{Error, Result};

/// A day of the proleptic Gregorian calendar, years 1 to 9999.
///
/// ```
/// use blockdiff_core::CivilDate;
///
/// let d = CivilDate::new(2020, 12, 31)?;
/// assert_eq!(d.iso_week(), (2020, 53));
/// assert_eq!(d.iso_weekday(), 4); // a Thursday
/// assert!(CivilDate::new(2026, 2, 29).is_err());
/// # Ok::<(), blockdiff_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    year: i32,
    month: u32,
    day: u32,
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// The proleptic Gregorian (year, month, day) `days` days after
/// 1970-01-01, for any year (Howard Hinnant's civil_from_days); see
/// [`CivilDate::from_days_since_epoch`] for a checked date.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl CivilDate {
    /// The date `year-month-day`; an error if it does not exist.
    pub fn new(year: i32, month: u32, day: u32) -> Result<Self> {
        if !(1..=9999).contains(&year)
            || !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
        {
            return Err(Error::InvalidDate { year, month, day });
        }
        Ok(CivilDate { year, month, day })
    }

    /// The year.
    pub fn year(self) -> i32 {
        self.year
    }

    /// The month, 1 to 12.
    pub fn month(self) -> u32 {
        self.month
    }

    /// The day of the month, from 1.
    pub fn day(self) -> u32 {
        self.day
    }

    /// Days since 1970-01-01 (negative before it).
    pub fn days_since_epoch(self) -> i64 {
        // Howard Hinnant's days_from_civil.
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(self.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` days after 1970-01-01; an error outside years 1 to
    /// 9999.
    pub fn from_days_since_epoch(days: i64) -> Result<Self> {
        let (year, month, day) = civil_from_days(days);
        let year = i32::try_from(year).unwrap_or(i32::MAX);
        CivilDate::new(year, month, day)
    }

    /// The date `days` days later (earlier if negative).
    pub fn add_days(self, days: i64) -> Result<Self> {
        CivilDate::from_days_since_epoch(self.days_since_epoch() + days)
    }

    /// The ISO weekday: 1 for Monday to 7 for Sunday.
    pub fn iso_weekday(self) -> u32 {
        // 1970-01-01 was a Thursday (4).
        ((self.days_since_epoch() + 3).rem_euclid(7) + 1) as u32
    }

    /// The ISO 8601 week: (week-numbering year, week 1 to 53). Week 1 is
    /// the week (Monday to Sunday) that holds the year's first Thursday, so
    /// the first days of January can belong to the last week of the year
    /// before, and the last days of December to week 1 of the next.
    pub fn iso_week(self) -> (i32, u32) {
        let days = self.days_since_epoch();
        // The Thursday of the same week decides the year.
        let thursday = days + 4 - i64::from(self.iso_weekday());
        let year = match CivilDate::from_days_since_epoch(thursday) {
            Ok(t) => t.year,
            // Only at the ends of year 1 and 9999.
            Err(_) => self.year,
        };
        let jan1 = CivilDate {
            year,
            month: 1,
            day: 1,
        }
        .days_since_epoch();
        (year, ((thursday - jan1) / 7 + 1) as u32)
    }

    /// The Monday of ISO week `week` of `year`; `None` if the year has no
    /// such week (only some years have a week 53).
    pub fn from_iso_week(year: i32, week: u32) -> Option<Self> {
        if week == 0 || week > 53 {
            return None;
        }
        // January 4 is always in week 1.
        let jan4 = CivilDate::new(year, 1, 4).ok()?;
        let monday1 = jan4.days_since_epoch() - i64::from(jan4.iso_weekday() - 1);
        let date = CivilDate::from_days_since_epoch(monday1 + 7 * (i64::from(week) - 1)).ok()?;
        (date.iso_week() == (year, week)).then_some(date)
    }
}

impl fmt::Display for CivilDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// How often a new chain starts.
///
/// ```
/// use blockdiff_core::{ChainPeriod, CivilDate};
/// use std::path::Path;
///
/// let date = CivilDate::new(2026, 11, 20)?;
/// let monthly: ChainPeriod = "monthly".parse()?;
/// assert_eq!(monthly.chain_name(Path::new("/var/backup/db"), date), Path::new("/var/backup/db-202611"));
/// assert_eq!(ChainPeriod::Weekly.key(date), "2026W47");
/// assert_eq!(ChainPeriod::Daily.key(date), "20261120");
/// # Ok::<(), blockdiff_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ChainPeriod {
    /// A chain per day: `NAME-YYYYMMDD`.
    Daily,
    /// A chain per ISO week: `NAME-YYYYWww` (`db-2026W47`).
    Weekly,
    /// A chain per calendar month: `NAME-YYYYMM`, as the original's monthly
    /// full backups.
    Monthly,
}

impl ChainPeriod {
    /// Every period.
    pub const ALL: [ChainPeriod; 3] = [
        ChainPeriod::Monthly,
        ChainPeriod::Weekly,
        ChainPeriod::Daily,
    ];

    /// The period's name, as `FromStr` reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            ChainPeriod::Monthly => "monthly",
            ChainPeriod::Weekly => "weekly",
            ChainPeriod::Daily => "daily",
        }
    }

    /// The key of the period that holds `date`: `YYYYMM`, `YYYYWww` (ISO
    /// week-numbering year and week) or `YYYYMMDD`.
    pub fn key(self, date: CivilDate) -> String {
        match self {
            ChainPeriod::Monthly => format!("{:04}{:02}", date.year, date.month),
            ChainPeriod::Weekly => {
                let (year, week) = date.iso_week();
                format!("{year:04}W{week:02}")
            }
            ChainPeriod::Daily => format!("{:04}{:02}{:02}", date.year, date.month, date.day),
        }
    }

    /// The chain of the period that holds `date`: `base` with `-KEY`
    /// appended, as [`GenerationStore`] appends its suffixes.
    pub fn chain_name(self, base: &Path, date: CivilDate) -> PathBuf {
        with_suffix(base, &format!("-{}", self.key(date)))
    }

    /// Reads a key back: its period and the first day of the period. Only
    /// the exact forms [`key`](Self::key) writes are accepted (4-digit
    /// year, 2-digit month, week and day, a date that exists, a week the
    /// year has).
    pub fn parse_key(key: &str) -> Option<(ChainPeriod, CivilDate)> {
        let b = key.as_bytes();
        let digits = |r: std::ops::Range<usize>| -> Option<u32> {
            let s = b.get(r)?;
            if s.iter().all(u8::is_ascii_digit) {
                std::str::from_utf8(s).ok()?.parse().ok()
            } else {
                None
            }
        };
        let (period, start) = match b.len() {
            6 => (
                ChainPeriod::Monthly,
                CivilDate::new(digits(0..4)? as i32, digits(4..6)?, 1).ok()?,
            ),
            7 if b[4] == b'W' => (
                ChainPeriod::Weekly,
                CivilDate::from_iso_week(digits(0..4)? as i32, digits(5..7)?)?,
            ),
            8 => (
                ChainPeriod::Daily,
                CivilDate::new(digits(0..4)? as i32, digits(4..6)?, digits(6..8)?).ok()?,
            ),
            _ => return None,
        };
        // Round trip: rejects a year 0000, which `new` already refuses, and
        // any other form that is not the one written.
        (period.key(start) == key).then_some((period, start))
    }
}

impl fmt::Display for ChainPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChainPeriod {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ChainPeriod::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| Error::UnknownChainPeriod {
                value: s.to_owned(),
            })
    }
}

/// Whether `suffix` (what follows a chain's name) is one of the chain's own
/// files: `.ver`, `.lock`, or generation N's `.N`, `.N.gz`, `.N.md5`,
/// `.N.digest`, `.N.meta.json`; each of those but `.lock` also with the
/// `.tmp` that [`GenerationStore`] writes before renaming.
fn is_chain_suffix(suffix: &OsStr) -> bool {
    let Some(s) = suffix.to_str() else {
        return false;
    };
    if s == ".lock" {
        return true;
    }
    let s = s.strip_suffix(".tmp").unwrap_or(s);
    if s == ".ver" {
        return true;
    }
    let Some(rest) = s.strip_prefix('.') else {
        return false;
    };
    let (number, kind) = match rest.find('.') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    !number.is_empty()
        && number.bytes().all(|b| b.is_ascii_digit())
        && matches!(kind, "" | ".gz" | ".md5" | ".digest" | ".meta.json")
}

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

/// Which chains to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrunePolicy {
    /// The newest N complete chains (by period).
    Keep(usize),
    /// The chains whose newest generation is younger than this many days.
    KeepDays(u32),
}

impl fmt::Display for PrunePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrunePolicy::Keep(n) => write!(f, "keep the newest {n} chain(s)"),
            PrunePolicy::KeepDays(d) => write!(f, "keep chains backed up in the last {d} day(s)"),
        }
    }
}

/// Why a chain is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeepReason {
    /// It is the newest chain.
    Newest,
    /// Its period holds today: backups go to it.
    CurrentPeriod,
    /// It is among the newest N (`rank` 1 is the newest).
    WithinCount {
        /// Its place from the newest.
        rank: usize,
        /// N.
        keep: usize,
    },
    /// Its newest generation is younger than the limit.
    Recent {
        /// Age of its newest generation, in whole days.
        age_days: u64,
        /// The limit.
        keep_days: u32,
    },
    /// Another run holds its lock.
    Locked {
        /// What the lock file says about the holder.
        holder: String,
    },
}

impl fmt::Display for KeepReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeepReason::Newest => f.write_str("the newest chain"),
            KeepReason::CurrentPeriod => f.write_str("the chain of the current period"),
            KeepReason::WithinCount { rank, keep } => {
                write!(f, "number {rank} of the newest {keep}")
            }
            KeepReason::Recent {
                age_days,
                keep_days,
            } => write!(
                f,
                "last backup {age_days} day(s) ago, within {keep_days} day(s)"
            ),
            KeepReason::Locked { holder } => {
                write!(f, "locked by another run ({holder})")
            }
        }
    }
}

/// Why a chain is deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteReason {
    /// Older than the newest N.
    BeyondCount {
        /// N.
        keep: usize,
    },
    /// Its newest generation is as old as the limit or older.
    TooOld {
        /// Age of its newest generation, in whole days.
        age_days: u64,
        /// The limit.
        keep_days: u32,
    },
    /// It has no `.ver`: the leftover of an interrupted first backup or of
    /// an interrupted prune.
    Incomplete,
}

impl fmt::Display for DeleteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeleteReason::BeyondCount { keep } => write!(f, "older than the newest {keep}"),
            DeleteReason::TooOld {
                age_days,
                keep_days,
            } => write!(
                f,
                "last backup {age_days} day(s) ago, not within {keep_days} day(s)"
            ),
            DeleteReason::Incomplete => {
                f.write_str("no .ver (an interrupted first backup or prune)")
            }
        }
    }
}

/// What happens to a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PruneAction {
    /// It stays.
    Keep(KeepReason),
    /// It is deleted.
    Delete(DeleteReason),
}

/// The action for one chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneDecision {
    /// The chain.
    pub chain: PeriodChain,
    /// What happens to it.
    pub action: PruneAction,
}

impl PrunePolicy {
    /// Decides for every chain of `set`, from the policy alone (no lock is
    /// looked at): the newest chain and the chain of `today`'s period are
    /// always kept; chains without a `.ver` are not counted and are
    /// deleted; the others are kept or deleted by the policy, their age
    /// measured to `now`.
    pub fn decide(
        &self,
        set: &ChainSet,
        today: CivilDate,
        now: SystemTime,
    ) -> Result<Vec<PruneDecision>> {
        match *self {
            PrunePolicy::Keep(0) => {
                return Err(Error::InvalidOption(
                    "the number of chains to keep must be at least 1".into(),
                ));
            }
            PrunePolicy::KeepDays(0) => {
                return Err(Error::InvalidOption(
                    "the number of days to keep must be at least 1".into(),
                ));
            }
            _ => {}
        }
        let newest = set.chains.len().checked_sub(1);
        let mut rank = 0;
        let mut decisions: Vec<PruneDecision> = Vec::with_capacity(set.chains.len());
        // Newest first, for the ranks.
        for (i, chain) in set.chains.iter().enumerate().rev() {
            let age_days = chain
                .last_backup
                .map(|t| now.duration_since(t).unwrap_or(Duration::ZERO).as_secs() / 86_400);
            if chain.is_complete() {
                rank += 1;
            }
            let action = if Some(i) == newest {
                PruneAction::Keep(KeepReason::Newest)
            } else if chain.holds(today) {
                PruneAction::Keep(KeepReason::CurrentPeriod)
            } else if let Some(age_days) = age_days {
                match *self {
                    PrunePolicy::Keep(keep) if rank <= keep => {
                        PruneAction::Keep(KeepReason::WithinCount { rank, keep })
                    }
                    PrunePolicy::Keep(keep) => {
                        PruneAction::Delete(DeleteReason::BeyondCount { keep })
                    }
                    PrunePolicy::KeepDays(keep_days) => {
                        let age = chain
                            .last_backup
                            .and_then(|t| now.duration_since(t).ok())
                            .unwrap_or(Duration::ZERO);
                        if age < Duration::from_secs(u64::from(keep_days) * 86_400) {
                            PruneAction::Keep(KeepReason::Recent {
                                age_days,
                                keep_days,
                            })
                        } else {
                            PruneAction::Delete(DeleteReason::TooOld {
                                age_days,
                                keep_days,
                            })
                        }
                    }
                }
            } else {
                PruneAction::Delete(DeleteReason::Incomplete)
            };
            decisions.push(PruneDecision {
                chain: chain.clone(),
                action,
            });
        }
        decisions.reverse();
        Ok(decisions)
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
    /// chain planned for deletion whose lock another run holds.
    pub fn new(
        set: &ChainSet,
        policy: PrunePolicy,
        today: CivilDate,
        now: SystemTime,
    ) -> Result<Self> {
        let mut decisions = policy.decide(set, today, now)?;
        for d in &mut decisions {
            if matches!(d.action, PruneAction::Delete(_))
                && let Some(holder) = lock_holder(&d.chain.store())?
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
        let mut report = PruneReport::default();
        for decision in self.decisions {
            let reason = match decision.action {
                PruneAction::Keep(reason) => {
                    report.kept.push((decision.chain, reason));
                    continue;
                }
                PruneAction::Delete(reason) => reason,
            };
            let store = decision.chain.store();
            let lock = match store.lock() {
                Ok(lock) => lock,
                Err(Error::Locked { holder, .. }) => {
                    report
                        .kept
                        .push((decision.chain, KeepReason::Locked { holder }));
                    continue;
                }
                Err(e) => return Err(e),
            };
            progress.at_step("prune:locked");
            let removed = delete_chain(&decision.chain, &store, lock, progress)?;
            report.deleted.push(DeletedChain {
                chain: decision.chain,
                reason,
                removed,
            });
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

/// `name` with `suffix` appended, as [`GenerationStore`] names its files
/// (so a relative name gives relative paths).
fn with_suffix(name: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = name.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(dir, "fsync directory")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(y: i32, m: u32, d: u32) -> CivilDate {
        CivilDate::new(y, m, d).unwrap()
    }

    #[test]
    fn dates_are_checked_and_count_days() {
        assert!(CivilDate::new(2024, 2, 29).is_ok());
        assert!(CivilDate::new(2026, 2, 29).is_err());
        assert!(CivilDate::new(1900, 2, 29).is_err());
        assert!(CivilDate::new(2000, 2, 29).is_ok());
        assert!(CivilDate::new(2026, 4, 31).is_err());
        assert!(CivilDate::new(2026, 13, 1).is_err());
        assert!(CivilDate::new(2026, 0, 1).is_err());
        assert!(CivilDate::new(0, 1, 1).is_err());
        let e = CivilDate::new(2026, 2, 30).unwrap_err().to_string();
        assert_eq!(e, "not a date: 2026-02-30");
        assert_eq!(date(1970, 1, 1).days_since_epoch(), 0);
        assert_eq!(date(2000, 3, 1).days_since_epoch(), 11_017);
        assert_eq!(date(1969, 12, 31).days_since_epoch(), -1);
        for days in -700_000..2_900_000i64 {
            if days % 997 != 0 {
                continue;
            }
            let d = CivilDate::from_days_since_epoch(days).unwrap();
            assert_eq!(d.days_since_epoch(), days, "{d}");
        }
        assert_eq!(date(2026, 12, 31).add_days(1).unwrap(), date(2027, 1, 1));
        assert_eq!(date(2024, 3, 1).add_days(-1).unwrap(), date(2024, 2, 29));
    }

    #[test]
    fn iso_weeks_at_the_year_ends() {
        // (date, ISO year, week, weekday), from Python's date.isocalendar().
        let cases = [
            ((2026, 12, 31), 2026, 53, 4),
            ((2027, 1, 1), 2026, 53, 5),
            ((2027, 1, 3), 2026, 53, 7),
            ((2027, 1, 4), 2027, 1, 1),
            ((2020, 12, 31), 2020, 53, 4),
            ((2021, 1, 1), 2020, 53, 5),
            ((2021, 1, 3), 2020, 53, 7),
            ((2021, 1, 4), 2021, 1, 1),
            ((2015, 12, 31), 2015, 53, 4),
            ((2016, 1, 3), 2015, 53, 7),
            ((2024, 12, 30), 2025, 1, 1),
            ((2008, 12, 29), 2009, 1, 1),
            ((2026, 1, 1), 2026, 1, 4),
            ((2026, 11, 20), 2026, 47, 5),
            ((2026, 11, 22), 2026, 47, 7),
            ((2000, 2, 29), 2000, 9, 2),
        ];
        for ((y, m, d), iso_year, week, weekday) in cases {
            let day = date(y, m, d);
            assert_eq!(day.iso_week(), (iso_year, week), "{day}");
            assert_eq!(day.iso_weekday(), weekday, "{day}");
        }
        assert_eq!(ChainPeriod::Weekly.key(date(2027, 1, 1)), "2026W53");
        assert_eq!(ChainPeriod::Weekly.key(date(2020, 12, 31)), "2020W53");
        assert_eq!(ChainPeriod::Weekly.key(date(2024, 12, 30)), "2025W01");
        // Years with a week 53 (2000 to 2039): those whose December 28 is in it.
        let long: Vec<i32> = (2000..2040)
            .filter(|&y| CivilDate::from_iso_week(y, 53).is_some())
            .collect();
        assert_eq!(long, [2004, 2009, 2015, 2020, 2026, 2032, 2037]);
    }

    #[test]
    fn iso_weeks_are_consistent_day_by_day() {
        let mut day = date(1990, 1, 1); // a Monday
        let mut expect = (1990, 1);
        while day.year() < 2045 {
            assert_eq!(day.iso_weekday(), 1, "{day}");
            for i in 0..7 {
                let d = day.add_days(i).unwrap();
                assert_eq!(d.iso_week(), expect, "{d}");
            }
            assert_eq!(CivilDate::from_iso_week(expect.0, expect.1), Some(day));
            day = day.add_days(7).unwrap();
            let next = day.iso_week();
            assert!(
                next == (expect.0, expect.1 + 1) || next == (expect.0 + 1, 1),
                "{day}: {next:?} after {expect:?}"
            );
            expect = next;
        }
    }

    #[test]
    fn period_names() {
        let base = Path::new("/var/backup/db");
        let d = date(2026, 11, 5);
        assert_eq!(
            ChainPeriod::Monthly.chain_name(base, d),
            Path::new("/var/backup/db-202611")
        );
        assert_eq!(
            ChainPeriod::Weekly.chain_name(base, d),
            Path::new("/var/backup/db-2026W45")
        );
        assert_eq!(
            ChainPeriod::Daily.chain_name(base, d),
            Path::new("/var/backup/db-20261105")
        );
        assert_eq!(
            ChainPeriod::Monthly.chain_name(Path::new("db"), date(2027, 1, 31)),
            Path::new("db-202701")
        );
        assert_eq!(
            "weekly".parse::<ChainPeriod>().unwrap(),
            ChainPeriod::Weekly
        );
        assert_eq!("daily".parse::<ChainPeriod>().unwrap(), ChainPeriod::Daily);
        let e = "Monthly".parse::<ChainPeriod>().unwrap_err().to_string();
        assert!(
            e.contains("\"Monthly\"") && e.contains("monthly, weekly or daily"),
            "{e}"
        );
        for p in ChainPeriod::ALL {
            assert_eq!(p.to_string().parse::<ChainPeriod>().unwrap(), p);
        }
    }

    #[test]
    fn keys_parse_back_only_in_their_exact_form() {
        assert_eq!(
            ChainPeriod::parse_key("202611"),
            Some((ChainPeriod::Monthly, date(2026, 11, 1)))
        );
        assert_eq!(
            ChainPeriod::parse_key("2026W47"),
            Some((ChainPeriod::Weekly, date(2026, 11, 16)))
        );
        assert_eq!(
            ChainPeriod::parse_key("2026W53"),
            Some((ChainPeriod::Weekly, date(2026, 12, 28)))
        );
        assert_eq!(
            ChainPeriod::parse_key("20240229"),
            Some((ChainPeriod::Daily, date(2024, 2, 29)))
        );
        for bad in [
            "202613",
            "202600",
            "000012",
            "2026W54",
            "2027W53",
            "2026W00",
            "2026w47",
            "2026W4",
            "20260230",
            "2026111",
            "2026-11",
            "+20611",
            "２０２６１１",
            "",
            "backup",
            "20261120x",
        ] {
            assert_eq!(ChainPeriod::parse_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn chain_suffixes() {
        for good in [
            ".ver",
            ".ver.tmp",
            ".lock",
            ".1",
            ".12",
            ".3.gz",
            ".3.md5",
            ".3.digest",
            ".3.meta.json",
            ".3.tmp",
            ".3.gz.tmp",
            ".3.digest.tmp",
            ".3.md5.tmp",
            ".3.meta.json.tmp",
        ] {
            assert!(is_chain_suffix(OsStr::new(good)), "{good}");
        }
        for bad in [
            "",
            ".",
            ".notes",
            ".ver.bak",
            ".lock.tmp",
            ".x",
            ".3.txt",
            ".3.gz.bak",
            ".3x",
            "..3",
            ".3.",
            ".meta.json",
            ".-1",
            ".3.json",
        ] {
            assert!(!is_chain_suffix(OsStr::new(bad)), "{bad}");
        }
    }

    /// A chain `db-KEY` with generations 1..=n (v2 names, meta.json), its
    /// `.ver` dated `age_days` ago.
    fn fake_chain(dir: &Path, key: &str, n: u64, age_days: u64) {
        let store = GenerationStore::new(dir.join(format!("db-{key}")));
        for g in 1..=n {
            fs::write(store.diff_path(g, crate::DiffFormat::default()), b"diff").unwrap();
            fs::write(store.digest_path(g, crate::DigestFormat::V2), b"digest").unwrap();
            fs::write(store.metadata_path(g), b"{}").unwrap();
        }
        fs::write(store.lock_path(), b"").unwrap();
        fs::write(store.ver_path(), format!("{n}\n")).unwrap();
        let when = SystemTime::now() - Duration::from_secs(age_days * 86_400 + 60);
        File::options()
            .write(true)
            .open(store.ver_path())
            .unwrap()
            .set_modified(when)
            .unwrap();
    }

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

    const LOOK_ALIKES: [&str; 10] = [
        "db.ver",
        "db.1",
        "db-202611.notes",
        "db-backup.ver",
        "db-2026111.ver",
        "db-202613.ver",
        "db-prod-202611.ver",
        "db-202611-old.ver",
        "dbx-202611.ver",
        "other-202611.ver",
    ];

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

    fn actions(decisions: &[PruneDecision]) -> Vec<(String, PruneAction)> {
        decisions
            .iter()
            .map(|d| (d.chain.key().to_owned(), d.action.clone()))
            .collect()
    }

    #[test]
    fn keep_n_keeps_the_newest_and_the_current_period() {
        let dir = tempfile::tempdir().unwrap();
        for (i, key) in ["202605", "202606", "202607", "202608", "202609"]
            .iter()
            .enumerate()
        {
            fake_chain(dir.path(), key, 1, 200 - 30 * i as u64);
        }
        // An interrupted first backup: no .ver.
        fs::write(dir.path().join("db-202604.1.tmp"), b"").unwrap();
        let set = ChainSet::list(&dir.path().join("db")).unwrap();
        assert!(!set.chains()[0].is_complete());
        let now = SystemTime::now();
        let today = date(2026, 11, 20);
        let got = actions(&PrunePolicy::Keep(2).decide(&set, today, now).unwrap());
        use DeleteReason::*;
        use KeepReason::*;
        use PruneAction::{Delete, Keep};
        assert_eq!(
            got,
            [
                ("202604".into(), Delete(Incomplete)),
                ("202605".into(), Delete(BeyondCount { keep: 2 })),
                ("202606".into(), Delete(BeyondCount { keep: 2 })),
                ("202607".into(), Delete(BeyondCount { keep: 2 })),
                ("202608".into(), Keep(WithinCount { rank: 2, keep: 2 })),
                ("202609".into(), Keep(Newest)),
            ]
        );
        // Today in June: June's chain is in use, though not among the newest.
        let got = actions(
            &PrunePolicy::Keep(1)
                .decide(&set, date(2026, 6, 30), now)
                .unwrap(),
        );
        assert_eq!(got[2], ("202606".into(), Keep(CurrentPeriod)));
        assert_eq!(got[4], ("202608".into(), Delete(BeyondCount { keep: 1 })));
        assert_eq!(got[5], ("202609".into(), Keep(Newest)));
        // Keep more than there are: everything complete stays.
        let got = actions(&PrunePolicy::Keep(10).decide(&set, today, now).unwrap());
        assert!(
            got[1..].iter().all(|(_, a)| matches!(a, Keep(_))),
            "{got:?}"
        );
        assert_eq!(got[0].1, Delete(Incomplete));
        assert!(PrunePolicy::Keep(0).decide(&set, today, now).is_err());
        // No chains, nothing to decide.
        let empty = tempfile::tempdir().unwrap();
        let set = ChainSet::list(&empty.path().join("db")).unwrap();
        assert!(
            PrunePolicy::Keep(1)
                .decide(&set, today, now)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn keep_days_measures_the_last_backup() {
        let dir = tempfile::tempdir().unwrap();
        fake_chain(dir.path(), "2026W40", 3, 45);
        fake_chain(dir.path(), "2026W41", 3, 35);
        fake_chain(dir.path(), "2026W42", 3, 29);
        // An old chain that was still backed up recently is young.
        fake_chain(dir.path(), "2026W38", 9, 2);
        fake_chain(dir.path(), "2026W43", 1, 25);
        let set = ChainSet::list(&dir.path().join("db")).unwrap();
        let now = SystemTime::now();
        let got = actions(
            &PrunePolicy::KeepDays(30)
                .decide(&set, date(2026, 11, 20), now)
                .unwrap(),
        );
        use PruneAction::{Delete, Keep};
        assert_eq!(
            got,
            [
                (
                    "2026W38".into(),
                    Keep(KeepReason::Recent {
                        age_days: 2,
                        keep_days: 30
                    })
                ),
                (
                    "2026W40".into(),
                    Delete(DeleteReason::TooOld {
                        age_days: 45,
                        keep_days: 30
                    })
                ),
                (
                    "2026W41".into(),
                    Delete(DeleteReason::TooOld {
                        age_days: 35,
                        keep_days: 30
                    })
                ),
                (
                    "2026W42".into(),
                    Keep(KeepReason::Recent {
                        age_days: 29,
                        keep_days: 30
                    })
                ),
                ("2026W43".into(), Keep(KeepReason::Newest)),
            ]
        );
        // Even a newest chain older than the limit stays.
        let got = actions(
            &PrunePolicy::KeepDays(1)
                .decide(&set, date(2026, 11, 20), now)
                .unwrap(),
        );
        assert_eq!(got[4].1, Keep(KeepReason::Newest));
        assert!(matches!(got[3].1, Delete(DeleteReason::TooOld { .. })));
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
        let mut expect: Vec<String> = LOOK_ALIKES.iter().map(|s| s.to_string()).collect();
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
