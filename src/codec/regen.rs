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

/// Bits of `u128` a sum of `K <= 2^16` powers may use (one bit of margin).
const SAMPLE_BITS: u32 = 127 - 16;

/// Draws from `table^sharpen` (temperature `1/sharpen`), exact integer arithmetic in `u128`.
///
/// Entries are below `2^24`, so up to `sharpen = 4` the powers are exact (`4 * 24 + 16 <= 127`).
/// Above, each entry is first rescaled to `b = floor(111 / sharpen)` bits relative to the
/// table's largest entry, `q = floor(p * 2^b / max)` (the largest becomes `2^b`), and `q^sharpen`
/// is drawn from: the powers then fit too, and a large `sharpen` tends to the argmax as it
/// should. (A plain `p^8` overflowed `u128`.) `sharpen = 0` is treated as 1.
pub(super) fn sample(table: &[u32], sharpen: u8, rng: &mut u64) -> usize {
    let s = u32::from(sharpen.max(1));
    let scaled: Vec<u128> = if 24 * s + 16 <= 127 {
        table.iter().map(|&p| p as u128).collect()
    } else {
        let bits = SAMPLE_BITS / s;
        let max = table.iter().copied().max().unwrap_or(1).max(1) as u128;
        table.iter().map(|&p| ((p as u128) << bits) / max).collect()
    };
    let pow = |q: u128| q.pow(s);
    let total: u128 = scaled.iter().map(|&q| pow(q)).sum();
    if total == 0 {
        return argmax(table);
    }
    let r = ((splitmix(rng) as u128) << 64 | splitmix(rng) as u128) % total;
    let mut acc = 0u128;
    for (i, &q) in scaled.iter().enumerate() {
        acc += pow(q);
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
                        self.prior_work += remaining.len() as u64;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A peaked table of K = 256 (the largest entry near 2^24) and a flat one.
    fn tables() -> (Vec<u32>, Vec<u32>) {
        let mut peaked = vec![1u32; 256];
        peaked[200] = (1 << 24) - 255 - 1000;
        peaked[3] += 1000;
        (peaked, vec![1 << 16; 256])
    }

    /// Every sharpen a `RegenMode` can hold draws without overflow; up to 4 the draw is the exact
    /// `p^s` one (unchanged), above it the rescaled one; a large sharpen gives the argmax.
    #[test]
    fn sample_any_sharpen_without_overflow() {
        let (peaked, flat) = tables();
        for s in 0..=u8::MAX {
            for t in [&peaked, &flat] {
                let mut rng = 7u64;
                let i = sample(t, s, &mut rng);
                assert!(i < t.len(), "sharpen {s}");
            }
        }
        // sharpen 8 (the reported overflow) and 255 on the peaked table: the largest entry.
        for s in [8u8, 16, 255] {
            let mut rng = 1u64;
            let draws: Vec<usize> = (0..64).map(|_| sample(&peaked, s, &mut rng)).collect();
            assert!(draws.iter().all(|&i| i == 200), "sharpen {s}: {draws:?}");
        }
        // Flat tables stay flat at any sharpen: draws spread over the alphabet.
        let mut rng = 3u64;
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..256 {
            seen.insert(sample(&flat, 8, &mut rng));
        }
        assert!(seen.len() > 100, "{} distinct tokens", seen.len());
        // Up to sharpen 4 the arithmetic is the exact power: the same draw as p^s by hand.
        let mut rng = 11u64;
        let mut by_hand = 11u64;
        let t: Vec<u32> = (0..256u32).map(|i| 1 + i * 97 % 5000).collect();
        for _ in 0..32 {
            let got = sample(&t, 4, &mut rng);
            let total: u128 = t.iter().map(|&p| (p as u128).pow(4)).sum();
            let r =
                ((splitmix(&mut by_hand) as u128) << 64 | splitmix(&mut by_hand) as u128) % total;
            let mut acc = 0u128;
            let want = t
                .iter()
                .position(|&p| {
                    acc += (p as u128).pow(4);
                    r < acc
                })
                .unwrap();
            assert_eq!(got, want);
        }
    }
}
