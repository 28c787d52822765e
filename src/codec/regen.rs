//! Regeneration of the tokens a packet did not send: argmax, seeded sampling and iterative
//! (MaskGIT-style) modes, all exact integer arithmetic on the prior's tables.

use super::error::Result;
use super::params::RegenMode;
use super::prior::{ProbTables, TokenGrid};
use super::schedule::StagePlan;
use super::tokens::TokenCodec;

/// Index of the largest entry (first on ties).
pub(super) fn argmax(table: &[u32]) -> usize {
    let mut best = 0;
    for (i, &p) in table.iter().enumerate() {
        if p > table[best] {
            best = i;
        }
    }
    best
}

/// splitmix64: the deterministic generator of `RegenMode::Sample` (and of the CLI's simulated
/// packet loss).
pub fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Draws from `table^sharpen` (exact in u128: entries < 2^24, sharpen <= 4).
fn sample(table: &[u32], sharpen: u8, rng: &mut u64) -> usize {
    let pow = |p: u32| (p as u128).pow(sharpen as u32);
    let total: u128 = table.iter().map(|&p| pow(p)).sum();
    let r = ((splitmix(rng) as u128) << 64 | splitmix(rng) as u128) % total;
    let mut acc = 0u128;
    for (i, &p) in table.iter().enumerate() {
        acc += pow(p);
        if r < acc {
            return i;
        }
    }
    table.len() - 1
}

/// Index of `pos` within its stage.
fn index_in_stage(plan: &StagePlan, stage: usize, pos: u32) -> usize {
    plan.stages[stage]
        .binary_search(&pos)
        .expect("position belongs to the stage")
}

impl TokenCodec {
    /// Fills the positions of stage `s` that were not sent.
    pub(super) fn regenerate(
        &mut self,
        grid: &mut TokenGrid,
        coded: &[bool],
        plan: &StagePlan,
        s: usize,
        tables: &ProbTables,
        rng: &mut u64,
    ) -> Result<()> {
        let positions = &plan.stages[s];
        let missing: Vec<u32> = positions
            .iter()
            .copied()
            .filter(|&p| !coded[p as usize])
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        match self.regen {
            RegenMode::Argmax => {
                for &pos in &missing {
                    let i = index_in_stage(plan, s, pos);
                    grid.tokens[pos as usize] = argmax(tables.get(i)) as u16;
                }
            }
            RegenMode::Sample { sharpen } => {
                for &pos in &missing {
                    let i = index_in_stage(plan, s, pos);
                    grid.tokens[pos as usize] = sample(tables.get(i), sharpen, rng) as u16;
                }
            }
            RegenMode::Iterative { passes, sharpen } => {
                let mut fixed: Vec<u32> = positions
                    .iter()
                    .copied()
                    .filter(|&p| coded[p as usize])
                    .collect();
                let mut remaining = missing;
                for pass in 0..passes as usize {
                    if remaining.is_empty() {
                        break;
                    }
                    let t = if pass == 0 && fixed.is_empty() {
                        // Same as the stage tables: reuse them.
                        let rows: Vec<u32> = remaining
                            .iter()
                            .flat_map(|&p| tables.get(index_in_stage(plan, s, p)).to_vec())
                            .collect();
                        ProbTables::per_position(tables.get(0).len(), rows)
                    } else {
                        fixed.sort_unstable();
                        self.prior
                            .partial_tables(grid, plan, s, &fixed, &remaining)?
                    };
                    // A candidate per position (in stage raster order, so the generator is
                    // consumed identically everywhere); most confident first: largest
                    // probability of the candidate, then raster order.
                    let cand: Vec<usize> = (0..remaining.len())
                        .map(|i| match sharpen {
                            0 => argmax(t.get(i)),
                            k => sample(t.get(i), k, rng),
                        })
                        .collect();
                    let mut order: Vec<(u32, usize)> = (0..remaining.len())
                        .map(|i| (t.get(i)[cand[i]], i))
                        .collect();
                    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    let left = passes as usize - pass;
                    let take = remaining.len().div_ceil(left);
                    let mut done = vec![false; remaining.len()];
                    for &(_, i) in order.iter().take(take) {
                        let pos = remaining[i];
                        grid.tokens[pos as usize] = cand[i] as u16;
                        fixed.push(pos);
                        done[i] = true;
                    }
                    remaining = remaining
                        .iter()
                        .zip(&done)
                        .filter(|(_, &d)| !d)
                        .map(|(&p, _)| p)
                        .collect();
                }
            }
        }
        Ok(())
    }
}
