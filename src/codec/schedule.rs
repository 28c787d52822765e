//! Stage schedule: a deterministic partition of the token grid into ordered stages.
//!
//! The UIGC paper splits the grid with a 2x2 interleave into four stages (even/even, odd/odd,
//! odd/even, even/odd). Its first stage is then a quarter of all tokens, coded with no context at
//! all. uigc applies the same interleave recursively to the even/even sub-grid `levels` times, so
//! the context-free stage 0 holds only every `2^levels`-th token in each direction:
//!
//! * stage 0: `r % 2^L == 0 && c % 2^L == 0`
//! * then for each level `l = L, L-1, ..., 1` (step `s = 2^l`, half `h = s/2`), three stages on
//!   the positions with `r % h == 0 && c % h == 0` that are not on the coarser lattice:
//!   odd/odd (`r % s == h, c % s == h`), odd/even (`r % s == h, c % s == 0`), even/odd
//!   (`r % s == 0, c % s == h`).
//!
//! There are `1 + 3 L` stages; a stage may be empty on tiny grids. Within a stage positions are
//! in raster order. Level 1 is exactly the paper's 2x2 interleave, so "stages 0-1" of the paper
//! (a 50 % checkerboard) is everything up to and including the level-1 odd/odd stage.

/// The kinds of schedule a bundle can name.
pub const SCHEDULE_KIND_INTERLEAVE: &str = "interleave2x2";

/// Largest supported recursion depth.
pub const MAX_LEVELS: u8 = 6;

/// A recursive 2x2 interleave schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    levels: u8,
}

impl Schedule {
    /// A schedule with `levels` recursion levels (1 = the paper's four stages).
    pub fn new(levels: u8) -> Option<Self> {
        (1..=MAX_LEVELS)
            .contains(&levels)
            .then_some(Self { levels })
    }

    pub fn levels(&self) -> u8 {
        self.levels
    }

    /// Number of stages, `1 + 3 * levels`.
    pub fn num_stages(&self) -> usize {
        1 + 3 * self.levels as usize
    }

    /// The stage prefix that keeps `1 / 2^e` of the tokens (asymptotically): `e = 0` all,
    /// `1` half (the paper's checkerboard), `2` quarter, ... down to `1 / 4^levels` (stage 0).
    pub fn stages_for_fraction(&self, e: u32) -> Option<usize> {
        let levels = self.levels as u32;
        if e == 0 {
            return Some(self.num_stages());
        }
        if e > 2 * levels {
            return None;
        }
        Some(if e.is_multiple_of(2) {
            1 + 3 * (levels - e / 2) as usize
        } else {
            2 + 3 * (levels - e.div_ceil(2)) as usize
        })
    }

    /// The stage of token position (`row`, `col`).
    pub fn stage_of(&self, row: usize, col: usize) -> usize {
        let levels = self.levels as u32;
        // Finest level at which the position leaves the coarser lattice.
        let mut level = 0;
        for l in 1..=levels {
            let mask = (1usize << l) - 1;
            if row & mask != 0 || col & mask != 0 {
                level = l;
                break;
            }
        }
        if level == 0 {
            return 0;
        }
        let odd_row = (row >> (level - 1)) & 1 == 1;
        let odd_col = (col >> (level - 1)) & 1 == 1;
        let within = match (odd_row, odd_col) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => unreachable!("position on the coarser lattice"),
        };
        1 + 3 * (levels - level) as usize + within
    }

    /// The plan of a `rows` x `cols` token grid.
    pub fn plan(&self, rows: usize, cols: usize) -> StagePlan {
        let mut stages = vec![Vec::new(); self.num_stages()];
        let mut stage_of = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                let s = self.stage_of(r, c);
                stages[s].push((r * cols + c) as u32);
                stage_of.push(s as u8);
            }
        }
        StagePlan {
            rows,
            cols,
            stages,
            stage_of,
        }
    }
}

/// The stages of one grid size: which positions each stage holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagePlan {
    pub rows: usize,
    pub cols: usize,
    /// Raster indices (`row * cols + col`) of each stage, in raster order.
    pub stages: Vec<Vec<u32>>,
    /// Stage of every raster index.
    pub stage_of: Vec<u8>,
}

impl StagePlan {
    pub fn num_stages(&self) -> usize {
        self.stages.len()
    }

    pub fn num_tokens(&self) -> usize {
        self.rows * self.cols
    }

    /// Number of tokens in stages `0..count`.
    pub fn tokens_in_first(&self, count: usize) -> usize {
        self.stages.iter().take(count).map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_partition(levels: u8, rows: usize, cols: usize) {
        let s = Schedule::new(levels).unwrap();
        let plan = s.plan(rows, cols);
        let mut seen = vec![0u32; rows * cols];
        for (k, stage) in plan.stages.iter().enumerate() {
            for &p in stage {
                seen[p as usize] += 1;
                assert_eq!(plan.stage_of[p as usize] as usize, k);
            }
            assert!(stage.windows(2).all(|w| w[0] < w[1]), "raster order");
        }
        assert!(
            seen.iter().all(|&n| n == 1),
            "{rows}x{cols} L{levels}: every position in exactly one stage"
        );
    }

    #[test]
    fn every_position_in_exactly_one_stage() {
        for levels in 1..=MAX_LEVELS {
            for (r, c) in [
                (1, 1),
                (1, 7),
                (7, 1),
                (2, 3),
                (3, 3),
                (5, 9),
                (32, 48),
                (68, 120),
            ] {
                check_partition(levels, r, c);
            }
        }
    }

    #[test]
    fn level_one_is_the_papers_interleave() {
        let s = Schedule::new(1).unwrap();
        assert_eq!(s.num_stages(), 4);
        assert_eq!(s.stage_of(0, 0), 0);
        assert_eq!(s.stage_of(1, 1), 1);
        assert_eq!(s.stage_of(1, 0), 2);
        assert_eq!(s.stage_of(0, 1), 3);
    }

    #[test]
    fn recursive_split_of_stage_zero() {
        let s = Schedule::new(3).unwrap();
        assert_eq!(s.num_stages(), 10);
        let plan = s.plan(32, 48);
        let sizes: Vec<usize> = plan.stages.iter().map(Vec::len).collect();
        // 4x6 coarse lattice, then 4x6 thrice at level 3, 8x12 thrice at level 2, 16x24 at level 1.
        assert_eq!(sizes, vec![24, 24, 24, 24, 96, 96, 96, 384, 384, 384]);
        // Paper's half = stages 0..=7, quarter = stages 0..=6.
        assert_eq!(plan.tokens_in_first(8) * 2, 32 * 48);
        assert_eq!(plan.tokens_in_first(7) * 4, 32 * 48);
        assert_eq!(plan.tokens_in_first(1) * 64, 32 * 48);
    }

    #[test]
    fn named_fractions_map_to_prefixes() {
        let s = Schedule::new(3).unwrap();
        let counts: Vec<_> = (0..=7).map(|e| s.stages_for_fraction(e)).collect();
        assert_eq!(
            counts,
            vec![
                Some(10),
                Some(8),
                Some(7),
                Some(5),
                Some(4),
                Some(2),
                Some(1),
                None
            ]
        );
        let plan = s.plan(64, 64);
        for e in 0..=6 {
            let kept = plan.tokens_in_first(s.stages_for_fraction(e).unwrap());
            assert_eq!(kept << e, 64 * 64, "1/2^{e}");
        }
    }

    #[test]
    fn tiny_grids_have_empty_stages() {
        let plan = Schedule::new(3).unwrap().plan(1, 1);
        assert_eq!(plan.stages[0], vec![0]);
        assert!(plan.stages[1..].iter().all(Vec::is_empty));
    }

    #[test]
    fn levels_are_bounded() {
        assert!(Schedule::new(0).is_none());
        assert!(Schedule::new(MAX_LEVELS + 1).is_none());
    }
}
