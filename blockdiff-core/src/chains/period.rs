//! Chain periods and names: [`ChainPeriod`] and its keys (`YYYYMM`,
//! `YYYYWww`, `YYYYMMDD`), and which suffixes are a chain's own files.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::calendar::CivilDate;
use crate::{Error, Result};

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
            ChainPeriod::Monthly => format!("{:04}{:02}", date.year(), date.month()),
            ChainPeriod::Weekly => {
                let (year, week) = date.iso_week();
                format!("{year:04}W{week:02}")
            }
            ChainPeriod::Daily => format!("{:04}{:02}{:02}", date.year(), date.month(), date.day()),
        }
    }

    /// The chain of the period that holds `date`: `base` with `-KEY`
    /// appended, as [`GenerationStore`] appends its suffixes.
    ///
    /// [`GenerationStore`]: crate::GenerationStore
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
/// files: `.ver`, `.lock`, the intent `.fold` of a fold in progress, or
/// generation N's `.N`, `.N.gz`, `.N.md5`, `.N.digest`, `.N.meta.json`;
/// each of those but `.lock` also with the `.tmp` that [`GenerationStore`]
/// writes before renaming (and `.N.fold.tmp`, a fold's new diff).
///
/// [`GenerationStore`]: crate::GenerationStore
pub(super) fn is_chain_suffix(suffix: &OsStr) -> bool {
    let Some(s) = suffix.to_str() else {
        return false;
    };
    if s == ".lock" {
        return true;
    }
    let s = s.strip_suffix(".tmp").unwrap_or(s);
    if s == ".ver" || s == ".fold" {
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
        && matches!(
            kind,
            "" | ".gz" | ".md5" | ".digest" | ".meta.json" | ".fold"
        )
}

/// `name` with `suffix` appended, as [`GenerationStore`] names its files
/// (so a relative name gives relative paths).
///
/// [`GenerationStore`]: crate::GenerationStore
pub(super) fn with_suffix(name: &Path, suffix: &str) -> PathBuf {
    let mut s: OsString = name.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::test_support::date;

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
}
