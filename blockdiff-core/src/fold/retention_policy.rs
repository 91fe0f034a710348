//! Which generations of one chain a retention policy keeps
//! (`--keep-last`, `--keep-daily`, `--keep-weekly`, `--keep-monthly`,
//! `--keep-yearly`, `--keep-within`). Pure: the caller gives each
//! generation's time and local date, and the time now.

use std::collections::BTreeSet;
use std::fmt;

use crate::chains::CivilDate;

/// How many generations to keep, by count and by calendar. A generation
/// is kept when any rule keeps it; the newest is always kept (the next
/// backup builds on it).
///
/// The calendar rules count periods that have generations, newest first,
/// and keep the newest generation of each: `daily: 7` keeps the last
/// generation of each of the 7 most recent days that have one (a day
/// without a backup is not counted, so a gap in the backups does not
/// shorten what is kept). Days, ISO weeks, months and years are those of
/// each generation's local date.
///
/// ```
/// use blockdiff_core::{CivilDate, GenerationTime, RetentionPolicy};
///
/// // One backup a day at 02:30 UTC through January 2026.
/// let times: Vec<GenerationTime> = (1..=31u32)
///     .map(|day| {
///         let date = CivilDate::new(2026, 1, day).unwrap();
///         GenerationTime { generation: u64::from(day), created: date.days_since_epoch() * 86_400 + 9_000, local_date: date }
///     })
///     .collect();
/// let policy = RetentionPolicy { daily: 3, weekly: 2, ..RetentionPolicy::default() };
/// let kept = policy.kept(&times, 31 * 86_400);
/// // The last 3 days, and the last backup of each of the last 2 ISO weeks
/// // (Sunday 25 January ends week 4; 31 January is in week 5).
/// assert_eq!(kept.iter().copied().collect::<Vec<_>>(), [25, 29, 30, 31]);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The newest N generations.
    pub last: u32,
    /// The newest generation of each of the last N days that have one.
    pub daily: u32,
    /// … of each of the last N ISO weeks that have one.
    pub weekly: u32,
    /// … of each of the last N calendar months that have one.
    pub monthly: u32,
    /// … of each of the last N years that have one.
    pub yearly: u32,
    /// Every generation made less than this many seconds before now.
    pub within_seconds: Option<u64>,
}

/// When a generation was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenerationTime {
    /// The generation number.
    pub generation: u64,
    /// Seconds since 1970-01-01 UTC (the v2 header's creation time).
    pub created: i64,
    /// The local date of `created`, in the time zone of the calendar
    /// rules.
    pub local_date: CivilDate,
}

/// Why a generation is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RetainReason {
    /// The newest generation: the next backup builds on it.
    Newest,
    /// Among the newest `--keep-last` (1 is the newest).
    Last(u32),
    /// The newest of its day.
    Daily(CivilDate),
    /// The newest of its ISO week (year, week).
    Weekly(i32, u32),
    /// The newest of its month (year, month).
    Monthly(i32, u32),
    /// The newest of its year.
    Yearly(i32),
    /// Made within `--keep-within`.
    Within,
}

impl fmt::Display for RetainReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RetainReason::Newest => f.write_str("newest"),
            RetainReason::Last(rank) => write!(f, "last {rank}"),
            RetainReason::Daily(date) => write!(f, "daily {date}"),
            RetainReason::Weekly(year, week) => write!(f, "weekly {year}-W{week:02}"),
            RetainReason::Monthly(year, month) => write!(f, "monthly {year}-{month:02}"),
            RetainReason::Yearly(year) => write!(f, "yearly {year}"),
            RetainReason::Within => f.write_str("within"),
        }
    }
}

/// One generation and the policy's decision about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// The generation.
    pub generation: u64,
    /// Why it is kept; empty when the policy does not keep it (a prune
    /// folds it into the next generation kept).
    pub reasons: Vec<RetainReason>,
}

impl Retention {
    /// True when the policy keeps the generation.
    pub fn is_kept(&self) -> bool {
        !self.reasons.is_empty()
    }
}

impl RetentionPolicy {
    /// True when no rule keeps anything (only the newest would be kept).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within_seconds.is_none()
    }

    /// The decision for every generation of `generations`, newest
    /// (highest number) first. `now` is in seconds since 1970 UTC, for
    /// `within_seconds`. Generations are ordered by number, not by time: a
    /// clock set back does not make a newer generation look older.
    pub fn decide(&self, generations: &[GenerationTime], now: i64) -> Vec<Retention> {
        let mut sorted: Vec<&GenerationTime> = generations.iter().collect();
        sorted.sort_by_key(|g| std::cmp::Reverse(g.generation));
        sorted.dedup_by_key(|g| g.generation);
        let mut days = Bucket::new(self.daily);
        let mut weeks = Bucket::new(self.weekly);
        let mut months = Bucket::new(self.monthly);
        let mut years = Bucket::new(self.yearly);
        sorted
            .iter()
            .enumerate()
            .map(|(rank, g)| {
                let mut reasons = Vec::new();
                if rank == 0 {
                    reasons.push(RetainReason::Newest);
                }
                if (rank as u64) < u64::from(self.last) {
                    reasons.push(RetainReason::Last(rank as u32 + 1));
                }
                let date = g.local_date;
                if days.take((date.year(), date.month() * 32 + date.day())) {
                    reasons.push(RetainReason::Daily(date));
                }
                let (week_year, week) = date.iso_week();
                if weeks.take((week_year, week)) {
                    reasons.push(RetainReason::Weekly(week_year, week));
                }
                if months.take((date.year(), date.month())) {
                    reasons.push(RetainReason::Monthly(date.year(), date.month()));
                }
                if years.take((date.year(), 0)) {
                    reasons.push(RetainReason::Yearly(date.year()));
                }
                if let Some(within) = self.within_seconds
                    && i128::from(now) - i128::from(g.created) < i128::from(within)
                {
                    reasons.push(RetainReason::Within);
                }
                Retention {
                    generation: g.generation,
                    reasons,
                }
            })
            .collect()
    }

    /// The generations kept, as a set.
    pub fn kept(&self, generations: &[GenerationTime], now: i64) -> BTreeSet<u64> {
        self.decide(generations, now)
            .into_iter()
            .filter(Retention::is_kept)
            .map(|r| r.generation)
            .collect()
    }
}

/// The periods a calendar rule has counted, newest first.
struct Bucket {
    limit: u32,
    seen: BTreeSet<(i32, u32)>,
}

impl Bucket {
    fn new(limit: u32) -> Self {
        Bucket {
            limit,
            seen: BTreeSet::new(),
        }
    }

    /// True when `period` is seen for the first time (the generation is the
    /// newest of it) and fewer than `limit` periods were counted before.
    fn take(&mut self, period: (i32, u32)) -> bool {
        if self.seen.contains(&period) || self.seen.len() >= self.limit as usize {
            return false;
        }
        self.seen.insert(period);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A time zone with daylight saving time as in the EU: UTC+1, and UTC+2
    /// from the last Sunday of March 01:00 UTC to the last Sunday of
    /// October 01:00 UTC.
    fn eu_local_date(utc: i64) -> CivilDate {
        let utc_date = CivilDate::from_days_since_epoch(utc.div_euclid(86_400)).unwrap();
        let last_sunday = |month: u32| {
            let end = CivilDate::new(utc_date.year(), month, 31).unwrap();
            end.days_since_epoch() - i64::from(end.iso_weekday() % 7)
        };
        let start = last_sunday(3) * 86_400 + 3_600;
        let end = last_sunday(10) * 86_400 + 3_600;
        let offset = if (start..end).contains(&utc) {
            7_200
        } else {
            3_600
        };
        CivilDate::from_days_since_epoch((utc + offset).div_euclid(86_400)).unwrap()
    }

    fn at(generation: u64, utc: i64) -> GenerationTime {
        GenerationTime {
            generation,
            created: utc,
            local_date: eu_local_date(utc),
        }
    }

    fn day(y: i32, m: u32, d: u32) -> i64 {
        CivilDate::new(y, m, d).unwrap().days_since_epoch() * 86_400
    }

    /// The reference: for each rule, the newest generation of each of the
    /// last N periods, computed by grouping.
    fn model(policy: &RetentionPolicy, gens: &[GenerationTime], now: i64) -> BTreeSet<u64> {
        let mut kept = BTreeSet::new();
        let mut newest_first = gens.to_vec();
        newest_first.sort_by_key(|g| std::cmp::Reverse(g.generation));
        if let Some(g) = newest_first.first() {
            kept.insert(g.generation);
        }
        for g in newest_first.iter().take(policy.last as usize) {
            kept.insert(g.generation);
        }
        type Key = fn(&GenerationTime) -> (i32, u32, u32);
        let rules: [(u32, Key); 4] = [
            (policy.daily, |g| {
                (
                    g.local_date.year(),
                    g.local_date.month(),
                    g.local_date.day(),
                )
            }),
            (policy.weekly, |g| {
                let (y, w) = g.local_date.iso_week();
                (y, w, 0)
            }),
            (policy.monthly, |g| {
                (g.local_date.year(), g.local_date.month(), 0)
            }),
            (policy.yearly, |g| (g.local_date.year(), 0, 0)),
        ];
        for (n, key) in rules {
            let mut periods: Vec<(i32, u32, u32)> = Vec::new();
            for g in &newest_first {
                let k = key(g);
                if !periods.contains(&k) {
                    periods.push(k);
                    if periods.len() <= n as usize {
                        kept.insert(g.generation);
                    }
                }
            }
        }
        if let Some(w) = policy.within_seconds {
            for g in gens {
                if now - g.created < w as i64 {
                    kept.insert(g.generation);
                }
            }
        }
        kept
    }

    #[test]
    fn the_newest_is_always_kept_and_an_empty_policy_keeps_only_it() {
        let gens: Vec<_> = (1..=5).map(|g| at(g, day(2026, 3, 1) + g as i64)).collect();
        let policy = RetentionPolicy::default();
        assert!(policy.is_empty());
        assert_eq!(policy.kept(&gens, 0), BTreeSet::from([5]));
        let d = policy.decide(&gens, 0);
        assert_eq!(d[0].reasons, [RetainReason::Newest]);
        assert!(d[1..].iter().all(|r| !r.is_kept()));
        assert!(policy.decide(&[], 0).is_empty());
    }

    #[test]
    fn keep_last_counts_generations_not_days() {
        let gens: Vec<_> = (1..=10)
            .map(|g| at(g, day(2026, 5, 1) + 60 * g as i64))
            .collect();
        let policy = RetentionPolicy {
            last: 3,
            ..RetentionPolicy::default()
        };
        assert_eq!(policy.kept(&gens, 0), BTreeSet::from([8, 9, 10]));
    }

    #[test]
    fn several_a_day_keep_the_last_of_each_day() {
        // Four backups a day, 6 hours apart, for 10 days.
        let gens: Vec<_> = (0..40)
            .map(|i| at(i + 1, day(2026, 6, 1) + i as i64 * 6 * 3_600))
            .collect();
        let policy = RetentionPolicy {
            daily: 3,
            ..RetentionPolicy::default()
        };
        // Local time is UTC+2 in June: the backup at 00:00 UTC is on the
        // day's 02:00, at 18:00 UTC on 20:00; the last of 10 June is 40.
        assert_eq!(policy.kept(&gens, 0), BTreeSet::from([32, 36, 40]));
    }

    #[test]
    fn gaps_do_not_shorten_what_is_kept() {
        // Backups on days 1, 2, 10, 11 and 30 only.
        let gens: Vec<_> = [1, 2, 10, 11, 30]
            .iter()
            .enumerate()
            .map(|(i, &d)| at(i as u64 + 1, day(2026, 4, d) + 3_600 * 10))
            .collect();
        let policy = RetentionPolicy {
            daily: 4,
            ..RetentionPolicy::default()
        };
        assert_eq!(policy.kept(&gens, 0), BTreeSet::from([2, 3, 4, 5]));
    }

    #[test]
    fn dst_changes_move_a_backup_to_its_local_day() {
        // 23:30 UTC is 00:30 the next day in winter and 01:30 in summer;
        // 22:30 UTC is 23:30 the same day in winter but 00:30 the next day
        // in summer. Around the change on 29 March 2026 (01:00 UTC):
        let gens = [
            at(1, day(2026, 3, 28) + 22 * 3_600 + 1_800), // 28 Mar 23:30 CET
            at(2, day(2026, 3, 29) + 22 * 3_600 + 1_800), // 30 Mar 00:30 CEST
            at(3, day(2026, 3, 29) + 23 * 3_600 + 1_800), // 30 Mar 01:30 CEST
        ];
        assert_eq!(gens[1].local_date, CivilDate::new(2026, 3, 30).unwrap());
        let policy = RetentionPolicy {
            daily: 7,
            ..RetentionPolicy::default()
        };
        // 29 March has no backup; 2 and 3 share 30 March.
        assert_eq!(policy.kept(&gens, 0), BTreeSet::from([1, 3]));
        // And back on 25 October 2026 (01:00 UTC): 00:30 UTC is 02:30 CEST,
        // 01:30 UTC is 02:30 CET, both on 25 October.
        let gens = [
            at(1, day(2026, 10, 24) + 23 * 3_600),
            at(2, day(2026, 10, 25) + 1_800),
            at(3, day(2026, 10, 25) + 3_600 + 1_800),
        ];
        assert_eq!(gens[0].local_date, CivilDate::new(2026, 10, 25).unwrap());
        assert_eq!(policy.kept(&gens, 0), BTreeSet::from([3]));
    }

    #[test]
    fn weeks_are_iso_weeks_across_the_new_year() {
        // Daily 22:00 UTC (23:00 local) from 20 Dec 2026 to 10 Jan 2027.
        let start = day(2026, 12, 20);
        let gens: Vec<_> = (0..22)
            .map(|i| at(i + 1, start + i as i64 * 86_400 + 22 * 3_600))
            .collect();
        let policy = RetentionPolicy {
            weekly: 3,
            monthly: 2,
            yearly: 2,
            ..RetentionPolicy::default()
        };
        let d = policy.decide(&gens, 0);
        let reasons = |g: u64| {
            d.iter()
                .find(|r| r.generation == g)
                .unwrap()
                .reasons
                .clone()
        };
        // 2027-W01 is 4-10 January; 2026-W53 is 28 Dec - 3 Jan.
        assert!(reasons(22).contains(&RetainReason::Weekly(2027, 1)));
        assert!(reasons(15).contains(&RetainReason::Weekly(2026, 53)));
        assert!(reasons(8).contains(&RetainReason::Weekly(2026, 52)));
        assert!(reasons(12).contains(&RetainReason::Monthly(2026, 12)));
        assert!(reasons(12).contains(&RetainReason::Yearly(2026)));
        assert_eq!(policy.kept(&gens, 0), BTreeSet::from([8, 12, 15, 22]));
    }

    #[test]
    fn keep_within_is_measured_in_seconds_from_now() {
        let now = day(2026, 7, 10);
        let gens: Vec<_> = (1..=10)
            .map(|g| at(g, now - (11 - g as i64) * 86_400))
            .collect();
        let policy = RetentionPolicy {
            within_seconds: Some(3 * 86_400),
            ..RetentionPolicy::default()
        };
        // Generation 8 is exactly 3 days old: not within.
        assert_eq!(policy.kept(&gens, now), BTreeSet::from([9, 10]));
    }

    #[test]
    fn order_is_by_generation_even_when_the_clock_went_back() {
        // Generation 3 was made with the clock a year back.
        let gens = [
            at(1, day(2026, 2, 1)),
            at(2, day(2026, 2, 2)),
            at(3, day(2025, 2, 3)),
        ];
        let policy = RetentionPolicy {
            last: 1,
            ..RetentionPolicy::default()
        };
        assert_eq!(policy.kept(&gens, 0), BTreeSet::from([3]));
    }

    #[test]
    fn a_year_of_daily_runs_with_gaps_agrees_with_the_model() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..50 {
            let mut gens = Vec::new();
            let mut t = day(2025, 1, 1) + rand(86_400) as i64;
            let mut g = 0;
            while t < day(2026, 1, 1) {
                // Usually one a day; sometimes a gap of days, or two runs.
                g += 1;
                gens.push(at(g, t));
                t += match rand(10) {
                    0 => rand(5) as i64 * 86_400 + 86_400,
                    1 => rand(6 * 3_600) as i64,
                    _ => 86_400 + rand(3_600) as i64 - 1_800,
                };
            }
            let now = t;
            let policy = RetentionPolicy {
                last: rand(4) as u32,
                daily: rand(10) as u32,
                weekly: rand(6) as u32,
                monthly: rand(14) as u32,
                yearly: rand(3) as u32,
                within_seconds: (rand(2) == 0).then(|| rand(20 * 86_400)),
            };
            assert_eq!(
                policy.kept(&gens, now),
                model(&policy, &gens, now),
                "round {round}: {policy:?}"
            );
        }
    }
}
