//! Which generation and where in it each block of generation K is: a
//! sorted list of runs of blocks, built from the chain newest first so
//! that a block takes the newest generation that has it.

use std::collections::BTreeMap;

/// Where the bytes of a run of blocks are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// All zero.
    Zero,
    /// In `unit` of diff `diff` (0 is the newest generation): a v2 frame,
    /// or a legacy diff as a whole. The first block's bytes are at `at` in
    /// the unit's bytes; each next block's `stride` bytes later.
    Data {
        diff: u32,
        unit: u32,
        at: u64,
        stride: u64,
    },
}

impl Place {
    /// The place of the block `skip` blocks into a run that starts here.
    fn advanced(self, skip: u64) -> Place {
        match self {
            Place::Zero => Place::Zero,
            Place::Data {
                diff,
                unit,
                at,
                stride,
            } => Place::Data {
                diff,
                unit,
                at: at + skip * stride,
                stride,
            },
        }
    }
}

/// Blocks `first..end`, all at one [`Place`] (consecutive in it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub(crate) first: u64,
    pub(crate) end: u64,
    pub(crate) place: Place,
}

impl Run {
    /// Where block `block` (within the run) is.
    pub(crate) fn place_of(&self, block: u64) -> Place {
        self.place.advanced(block - self.first)
    }
}

/// Runs being added newest generation first: a run of an older
/// generation fills only the blocks no newer one took.
#[derive(Debug, Default)]
pub(crate) struct BlockMapBuilder {
    runs: BTreeMap<u64, Run>,
}

impl BlockMapBuilder {
    /// Adds blocks `first..end` at `place`, where no run added before
    /// covers them.
    pub(crate) fn add(&mut self, first: u64, end: u64, place: Place) {
        if first >= end {
            return;
        }
        // Runs do not overlap, so their ends are in the order of their
        // starts: walk back from the last that starts before `end`.
        let mut taken: Vec<(u64, u64)> = self
            .runs
            .range(..end)
            .rev()
            .take_while(|(_, r)| r.end > first)
            .map(|(_, r)| (r.first, r.end))
            .collect();
        taken.reverse();
        let mut at = first;
        for (start, stop) in taken.into_iter().chain([(end, end)]) {
            if start > at {
                self.insert(Run {
                    first: at,
                    end: start,
                    place: place.advanced(at - first),
                });
            }
            at = at.max(stop);
        }
    }

    /// Inserts `run` (covering no block yet), joined to the run before it
    /// when it continues that one.
    fn insert(&mut self, run: Run) {
        if let Some((_, before)) = self.runs.range_mut(..run.first).next_back()
            && before.end == run.first
            && before.place.advanced(before.end - before.first) == run.place
        {
            before.end = run.end;
            return;
        }
        self.runs.insert(run.first, run);
    }

    /// How many runs it holds.
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }

    /// The map, frozen. Adjacent runs that continue one another are
    /// joined (a legacy full generation is one run).
    pub(crate) fn build(self) -> BlockMap {
        let mut runs: Vec<Run> = Vec::with_capacity(self.runs.len());
        for run in self.runs.into_values() {
            if let Some(last) = runs.last_mut()
                && last.end == run.first
                && last.place.advanced(last.end - last.first) == run.place
            {
                last.end = run.end;
                continue;
            }
            runs.push(run);
        }
        BlockMap { runs }
    }
}

/// The runs of generation K's blocks, sorted and disjoint. A block in no
/// run is in no generation.
#[derive(Debug, Default)]
pub(crate) struct BlockMap {
    runs: Vec<Run>,
}

impl BlockMap {
    /// The run that holds `block`, if any.
    pub(crate) fn find(&self, block: u64) -> Option<&Run> {
        let i = self.runs.partition_point(|r| r.end <= block);
        self.runs.get(i).filter(|r| r.first <= block)
    }

    /// How many runs it holds (its memory is proportional).
    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }

    /// The runs, in block order.
    pub(crate) fn runs(&self) -> &[Run] {
        &self.runs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(diff: u32, at: u64) -> Place {
        Place::Data {
            diff,
            unit: 0,
            at,
            stride: 10,
        }
    }

    /// The place of each block 0..n, by brute force.
    fn places(map: &BlockMap, n: u64) -> Vec<Option<Place>> {
        (0..n).map(|b| map.find(b).map(|r| r.place_of(b))).collect()
    }

    #[test]
    fn the_newest_generation_wins_and_older_ones_fill_the_gaps() {
        let mut b = BlockMapBuilder::default();
        b.add(3, 5, data(0, 0));
        b.add(8, 9, Place::Zero);
        b.add(0, 10, data(1, 1000));
        let map = b.build();
        let got = places(&map, 11);
        let want: Vec<Option<Place>> = (0..11)
            .map(|i| match i {
                3 | 4 => Some(data(0, (i - 3) * 10)),
                8 => Some(Place::Zero),
                10 => None,
                _ => Some(data(1, 1000 + i * 10)),
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn agrees_with_a_block_by_block_model_on_random_chains() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut rand = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for _ in 0..200 {
            let blocks = 1 + rand(200);
            let mut model: Vec<Option<Place>> = vec![None; blocks as usize];
            let mut b = BlockMapBuilder::default();
            for diff in 0..1 + rand(6) as u32 {
                for _ in 0..rand(8) {
                    let first = rand(blocks);
                    let end = first + 1 + rand(blocks - first);
                    let place = if rand(3) == 0 {
                        Place::Zero
                    } else {
                        data(diff, rand(1 << 20))
                    };
                    b.add(first, end, place);
                    for blk in first..end {
                        let slot = &mut model[blk as usize];
                        if slot.is_none() {
                            *slot = Some(place.advanced(blk - first));
                        }
                    }
                }
            }
            let map = b.build();
            assert_eq!(places(&map, blocks), model);
        }
    }

    #[test]
    fn continuing_runs_are_joined() {
        let mut b = BlockMapBuilder::default();
        for i in 0..100 {
            b.add(i, i + 1, data(0, i * 10));
        }
        b.add(100, 110, Place::Zero);
        b.add(110, 120, Place::Zero);
        assert_eq!(b.build().len(), 2);
    }
}
