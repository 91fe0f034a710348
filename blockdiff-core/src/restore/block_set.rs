//! The set of blocks a restore has written: sorted, disjoint runs, so its
//! memory follows the runs actually written, never a size read from a file.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included};

/// Block indexes as runs `[start, end)`, keyed by start; adjacent and
/// overlapping runs are merged.
#[derive(Debug, Default)]
pub(super) struct BlockSet {
    runs: BTreeMap<u64, u64>,
}

impl BlockSet {
    pub(super) fn new() -> Self {
        BlockSet::default()
    }

    /// The run that contains `index`, if any.
    fn run_at(&self, index: u64) -> Option<(u64, u64)> {
        self.runs
            .range(..=index)
            .next_back()
            .map(|(&s, &e)| (s, e))
            .filter(|&(_, e)| index < e)
    }

    pub(super) fn contains(&self, index: u64) -> bool {
        self.run_at(index).is_some()
    }

    pub(super) fn insert(&mut self, index: u64) {
        self.insert_run(index, index.saturating_add(1));
    }

    /// Adds `[start, end)`. Allocates nothing when the run extends or lies
    /// in one already there (a sequential restore).
    pub(super) fn insert_run(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        // A run that starts at or before `start` and reaches it absorbs it.
        if let Some((&ps, &pe)) = self.runs.range(..=start).next_back()
            && pe >= start
        {
            if pe >= end {
                return;
            }
            s = ps;
        }
        // Runs that start within (s, e] are absorbed.
        while let Some((&ns, &ne)) = self.runs.range((Excluded(s), Included(e))).next() {
            self.runs.remove(&ns);
            e = e.max(ne);
        }
        self.runs.insert(s, e);
    }

    /// The first sub-range of `[start, end)` that is not in the set.
    pub(super) fn first_gap(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        let mut at = start;
        if let Some((_, e)) = self.run_at(at) {
            at = e;
        }
        if at >= end {
            return None;
        }
        let gap_end = self.runs.range(at..end).next().map_or(end, |(&s, _)| s);
        Some((at, gap_end))
    }

    /// The sub-ranges of `[start, end)` not in the set, in order.
    pub(super) fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        while let Some((s, e)) = self.first_gap(at, end) {
            out.push((s, e));
            at = e;
        }
        out
    }

    /// How many of the indexes `0..n` are absent, and the first of them.
    pub(super) fn missing_below(&self, n: u64) -> (u64, u64) {
        let covered: u64 = self.runs.range(..n).map(|(&s, &e)| e.min(n) - s).sum();
        let first = self.first_gap(0, n).map_or(0, |(s, _)| s);
        (n - covered, first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_set_counts_missing() {
        let mut s = BlockSet::new();
        for i in [0, 1, 2, 64, 65, 130] {
            s.insert(i);
        }
        assert!(s.contains(64) && !s.contains(3));
        assert_eq!(s.missing_below(3), (0, 0));
        assert_eq!(s.missing_below(4), (1, 3));
        assert_eq!(s.missing_below(131), (131 - 6, 3));
        s.insert(1 << 50);
        assert!(s.contains(1 << 50));
        assert_eq!(s.runs.len(), 4);
    }

    #[test]
    fn runs_merge_and_gaps_are_exact() {
        let mut s = BlockSet::new();
        s.insert_run(10, 20);
        s.insert_run(30, 40);
        s.insert_run(20, 30);
        assert_eq!(s.runs.len(), 1);
        assert_eq!(s.gaps(0, 50), vec![(0, 10), (40, 50)]);
        s.insert_run(5, 45);
        assert_eq!(s.gaps(0, 50), vec![(0, 5), (45, 50)]);
        assert_eq!(s.first_gap(5, 45), None);
        assert_eq!(s.missing_below(50), (10, 0));
        s.insert_run(0, 3);
        s.insert_run(3, 4);
        s.insert_run(2, 3);
        assert_eq!(s.gaps(0, 50), vec![(4, 5), (45, 50)]);
        s.insert_run(4, 5);
        assert_eq!(s.runs.len(), 1);
        assert_eq!(s.gaps(0, 50), vec![(45, 50)]);
    }

    #[test]
    fn agrees_with_a_plain_bitmap() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200 {
            let mut s = BlockSet::new();
            let mut model = [false; 300];
            for _ in 0..next(20) {
                let a = next(300);
                let b = (a + 1 + next(30)).min(300);
                s.insert_run(a, b);
                model[a as usize..b as usize].fill(true);
            }
            for (i, &m) in model.iter().enumerate() {
                assert_eq!(s.contains(i as u64), m, "{i}");
            }
            let n = next(300) + 1;
            let missing = model[..n as usize].iter().filter(|&&m| !m).count() as u64;
            let first = model[..n as usize].iter().position(|&m| !m).unwrap_or(0) as u64;
            assert_eq!(s.missing_below(n), (missing, first));
            let gaps: u64 = s.gaps(0, n).iter().map(|(a, b)| b - a).sum();
            assert_eq!(gaps, missing);
            assert!(
                s.runs
                    .iter()
                    .zip(s.runs.iter().skip(1))
                    .all(|((_, e), (s2, _))| e < s2)
            );
        }
    }

    #[test]
    fn a_huge_block_count_costs_nothing() {
        // Item 10 of issue 11: a size read from a file (2^60 blocks) must
        // not be allocated for.
        let mut s = BlockSet::new();
        s.insert_run(0, 1 << 59);
        assert_eq!(s.missing_below(1 << 60), (1 << 59, 1 << 59));
        assert_eq!(s.first_gap(0, 1 << 60), Some((1 << 59, 1 << 60)));
    }
}
