//! The block-state map of an overlay: which 4 KiB blocks of a disk are changed, as runs.
//!
//! A block is `Base` (read from the disk underneath), `Data` (its bytes are in the overlay's
//! data file, at the block's own offset) or `Zero` (reads as zeros whatever the base holds:
//! a discard or write-zeroes). Only changed runs are stored (`Base` is the absence of a
//! run), adjacent runs of one state are merged, so memory follows the number of changed
//! runs, never the disk's capacity. The same type, with `Data` as a marker, keeps the set of
//! blocks changed since the last sync.

use std::collections::BTreeMap;

/// The state of one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockState {
    /// Unchanged: the base disk's bytes (zeros past the base's end).
    Base,
    /// Changed: the bytes are in the data file.
    Data,
    /// Changed to zeros (nothing stored).
    Zero,
}

/// A run of blocks in one state: `[first, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// First block.
    pub first: u64,
    /// One past the last block.
    pub end: u64,
    /// Their state.
    pub state: BlockState,
}

impl Run {
    /// Number of blocks in the run.
    pub fn blocks(&self) -> u64 {
        self.end - self.first
    }
}

/// Non-overlapping, merged runs of changed blocks, keyed by first block.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockMap {
    /// first block -> (end block, state); never `Base`, never empty, never two adjacent
    /// runs of the same state.
    runs: BTreeMap<u64, (u64, BlockState)>,
}

impl BlockMap {
    /// An empty map: every block is `Base`.
    pub fn new() -> BlockMap {
        BlockMap::default()
    }

    /// Number of stored runs (what memory is proportional to).
    pub fn run_count(&self) -> usize {
        self.runs.len()
    }

    /// Whether no block is changed.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// How many runs setting `[first, end)` could add at most: the range itself and the
    /// right part of a run it splits.
    pub const MAX_RUNS_ADDED_BY_SET: usize = 2;

    /// Sets blocks `[first, end)` to `state`, splitting and merging runs as needed.
    pub fn set(&mut self, first: u64, end: u64, state: BlockState) {
        if first >= end {
            return;
        }
        // A run starting before `first` and reaching into the range: keep its left part
        // (and its right part, if it goes past `end`).
        if let Some((&s, &(e, st))) = self.runs.range(..first).next_back()
            && e > first
        {
            self.runs.insert(s, (first, st));
            if e > end {
                self.runs.insert(end, (e, st));
            }
        }
        // Runs starting inside the range: gone, except a right part past `end`.
        let inside: Vec<u64> = self.runs.range(first..end).map(|(&k, _)| k).collect();
        for k in inside {
            if let Some((e, st)) = self.runs.remove(&k)
                && e > end
            {
                self.runs.insert(end, (e, st));
            }
        }
        if state == BlockState::Base {
            return;
        }
        let (mut first, mut end) = (first, end);
        if let Some((&s, &(e, st))) = self.runs.range(..first).next_back()
            && e == first
            && st == state
        {
            self.runs.remove(&s);
            first = s;
        }
        if let Some(&(e, st)) = self.runs.get(&end)
            && st == state
        {
            self.runs.remove(&end);
            end = e;
        }
        self.runs.insert(first, (end, state));
    }

    /// The state of `block` and the block where that state ends (at most `limit`).
    pub fn state_at(&self, block: u64, limit: u64) -> (BlockState, u64) {
        if let Some((_, &(e, st))) = self.runs.range(..=block).next_back()
            && e > block
        {
            return (st, e.min(limit));
        }
        let next = self
            .runs
            .range(block..)
            .next()
            .map_or(limit, |(&s, _)| s.min(limit));
        (BlockState::Base, next)
    }

    /// The runs tiling `[first, end)`, `Base` ones included, in order. At most
    /// 2 × (changed runs in the range) + 1 entries.
    pub fn segments(&self, first: u64, end: u64) -> Vec<Run> {
        let mut out = Vec::new();
        let mut at = first;
        while at < end {
            let (state, until) = self.state_at(at, end);
            out.push(Run {
                first: at,
                end: until,
                state,
            });
            at = until;
        }
        out
    }

    /// The changed runs, in block order.
    pub fn runs(&self) -> impl Iterator<Item = Run> + '_ {
        self.runs
            .iter()
            .map(|(&first, &(end, state))| Run { first, end, state })
    }

    /// The changed runs overlapping `[first, end)`, clipped to it.
    pub fn runs_in(&self, first: u64, end: u64) -> Vec<Run> {
        self.segments(first, end)
            .into_iter()
            .filter(|r| r.state != BlockState::Base)
            .collect()
    }

    /// Number of blocks in `state` (`Data` or `Zero`).
    pub fn blocks_in(&self, state: BlockState) -> u64 {
        self.runs()
            .filter(|r| r.state == state)
            .map(|r| r.blocks())
            .sum()
    }

    /// One past the last changed block (0 when none).
    pub fn end(&self) -> u64 {
        self.runs.last_key_value().map_or(0, |(_, &(e, _))| e)
    }
}

#[cfg(test)]
mod tests {
    use super::BlockState::{Base, Data, Zero};
    use super::*;

    fn runs(m: &BlockMap) -> Vec<(u64, u64, BlockState)> {
        m.runs().map(|r| (r.first, r.end, r.state)).collect()
    }

    /// The map as a plain vector of states, for comparison with a model.
    fn flat(m: &BlockMap, n: u64) -> Vec<BlockState> {
        (0..n).map(|b| m.state_at(b, n).0).collect()
    }

    #[test]
    fn adjacent_runs_of_one_state_merge() {
        let mut m = BlockMap::new();
        m.set(0, 2, Data);
        m.set(2, 4, Data);
        m.set(6, 8, Data);
        assert_eq!(runs(&m), vec![(0, 4, Data), (6, 8, Data)]);
        m.set(4, 6, Data);
        assert_eq!(runs(&m), vec![(0, 8, Data)]);
        assert_eq!(m.blocks_in(Data), 8);
    }

    #[test]
    fn a_range_inside_a_run_splits_it_in_three() {
        let mut m = BlockMap::new();
        m.set(0, 10, Data);
        m.set(3, 5, Zero);
        assert_eq!(runs(&m), vec![(0, 3, Data), (3, 5, Zero), (5, 10, Data)]);
        m.set(4, 7, Base);
        assert_eq!(runs(&m), vec![(0, 3, Data), (3, 4, Zero), (7, 10, Data)]);
        m.set(0, 100, Base);
        assert!(m.is_empty());
    }

    #[test]
    fn a_zero_over_several_runs_replaces_them() {
        let mut m = BlockMap::new();
        m.set(1, 2, Data);
        m.set(3, 4, Data);
        m.set(5, 6, Data);
        m.set(0, 7, Zero);
        assert_eq!(runs(&m), vec![(0, 7, Zero)]);
        m.set(7, 9, Zero);
        assert_eq!(runs(&m), vec![(0, 9, Zero)]);
        assert_eq!(m.blocks_in(Data), 0);
        assert_eq!(m.blocks_in(Zero), 9);
    }

    #[test]
    fn segments_tile_the_range_with_base_between_runs() {
        let mut m = BlockMap::new();
        m.set(2, 4, Data);
        m.set(6, 7, Zero);
        let seg: Vec<_> = m
            .segments(0, 10)
            .iter()
            .map(|r| (r.first, r.end, r.state))
            .collect();
        assert_eq!(
            seg,
            vec![
                (0, 2, Base),
                (2, 4, Data),
                (4, 6, Base),
                (6, 7, Zero),
                (7, 10, Base)
            ]
        );
        assert_eq!(m.segments(3, 3), vec![]);
        assert_eq!(m.runs_in(3, 7).len(), 2);
        assert_eq!(m.state_at(3, 10), (Data, 4));
        assert_eq!(m.state_at(3, 3), (Data, 3));
        assert_eq!(m.end(), 7);
    }

    #[test]
    fn growth_past_the_last_run_is_base() {
        let mut m = BlockMap::new();
        m.set(u64::MAX - 2, u64::MAX, Data);
        assert_eq!(m.state_at(0, u64::MAX), (Base, u64::MAX - 2));
        assert_eq!(m.state_at(u64::MAX - 1, u64::MAX), (Data, u64::MAX));
    }

    #[test]
    fn random_sets_agree_with_a_flat_model_and_stay_canonical() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let n = 64u64;
        for _ in 0..200 {
            let mut m = BlockMap::new();
            let mut model = vec![Base; n as usize];
            for _ in 0..40 {
                let a = next() % n;
                let b = a + next() % (n - a + 1);
                let st = [Base, Data, Zero][(next() % 3) as usize];
                m.set(a, b, st);
                model[a as usize..b as usize].fill(st);
                assert_eq!(flat(&m, n), model);
                // Canonical: no empty run, no adjacent runs of one state.
                let r: Vec<_> = m.runs().collect();
                for w in r.windows(2) {
                    assert!(w[0].end <= w[1].first);
                    assert!(w[0].end < w[1].first || w[0].state != w[1].state);
                }
                assert!(r.iter().all(|x| x.first < x.end && x.state != Base));
            }
        }
    }
}
