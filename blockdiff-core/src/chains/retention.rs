//! The retention decision: which chains a [`PrunePolicy`] keeps and which it
//! deletes, and why. Pure: it reads no file and takes no lock.

use std::fmt;
use std::time::{Duration, SystemTime};

use super::calendar::CivilDate;
use super::chain_set::{ChainSet, PeriodChain};
use crate::{Error, Result};

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
        let newest = set.chains().len().checked_sub(1);
        let mut rank = 0;
        let mut decisions: Vec<PruneDecision> = Vec::with_capacity(set.chains().len());
        // Newest first, for the ranks.
        for (i, chain) in set.chains().iter().enumerate().rev() {
            let age_days = chain
                .last_backup()
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
                            .last_backup()
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

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::chains::test_support::{date, fake_chain};

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
}
