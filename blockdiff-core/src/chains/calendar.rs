//! The proleptic Gregorian calendar: [`CivilDate`], its days since 1970 and
//! its ISO weeks.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chains::ChainPeriod;
    use crate::chains::test_support::date;

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
}
