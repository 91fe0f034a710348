//! The set of blocks a restore has written: sorted, disjoint runs, so its
//! memory follows the runs actually written, never a size read from a file.

use std::collections::BTreeMap;

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

    /// Adds `[start, end)`.
    pub(super) fn insert_run(&mut self, mut start: u64, mut end: u64) {
        if start >= end {
            return;
        }
        // A run that starts before `start` and reaches it absorbs it.
        if let Some((&s, &e)) = self.runs.range(..=start).next_back()
            && e >= start
        {
            start = s;
            end = end.max(e);
        }
        // Runs that start within [start, end] are absorbed.
        let absorbed: Vec<(u64, u64)> = self
            .runs
            .range(start..=end)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in absorbed {
            self.runs.remove(&s);
            end = end.max(e);
        }
        self.runs.insert(start, end);
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
