//! Range coding of token indices with `constriction`, driven only by integer probabilities.
//!
//! Decision notes:
//! * `constriction`'s queue (range) coder with 32-bit words and a 64-bit state, models at 24-bit
//!   precision (32 was seen to fail on peaked distributions).
//! * Probabilities arrive as fixed-point integers (`u32`, sum `2^24`, every entry >= 1) and are
//!   turned into constriction models in a fixed order, so encoder and decoder see the same
//!   integers whatever machine they run on. No float touches the coded path; floats appear only in
//!   [`ideal_bits`], which is a statistic.
//! * The coder's final word is chosen with as many trailing zero bits as the interval allows, the
//!   words are written big-endian and trailing zero bytes are dropped: the decoder reads missing
//!   bytes as zeros, so termination costs a few bits, not a whole 32-bit word.

use constriction::stream::model::ContiguousCategoricalEntropyModel;
use constriction::stream::queue::{DefaultRangeDecoder, DefaultRangeEncoder, EncoderSituation};
use constriction::stream::{Decode, Encode};

use super::error::PacketError;

/// Fixed-point precision of every probability table, in bits.
pub const PRECISION: u32 = 24;
/// Sum of every probability table.
pub const TOTAL: u32 = 1 << PRECISION;

type Model = ContiguousCategoricalEntropyModel<u32, Vec<u32>, 24>;

/// Turns non-negative integer weights into a fixed-point table (sum `2^24`, every entry >= 1).
///
/// The rule is part of the bitstream (docs/prior.md): `p_i = 1 + floor(w_i * (2^24 - K) / W)`
/// with `W = sum(w)`; the rest `2^24 - sum(p)` (< K) goes to the first index of largest `p`.
/// All-zero weights give the uniform table. Needs `K <= 2^20` and `w_i < 2^32`.
pub fn quantize_weights(weights: &[u32], out: &mut Vec<u32>) {
    let k = weights.len() as u64;
    assert!(k > 0 && k <= 1 << 20, "alphabet size out of range");
    out.clear();
    let total: u64 = weights.iter().map(|&w| w as u64).sum();
    let budget = TOTAL as u64 - k;
    if total == 0 {
        // Uniform: floor(budget / K) each, rest to index 0 (same rule as below).
        out.extend(std::iter::repeat_n((1 + budget / k) as u32, k as usize));
    } else {
        // w < 2^32 and budget < 2^24: the product fits in u64 (< 2^56).
        out.extend(
            weights
                .iter()
                .map(|&w| (1 + (w as u64 * budget) / total) as u32),
        );
    }
    let sum: u64 = out.iter().map(|&p| p as u64).sum();
    let rest = (TOTAL as u64 - sum) as u32;
    let mut best = 0;
    for (i, &p) in out.iter().enumerate() {
        if p > out[best] {
            best = i;
        }
    }
    out[best] += rest;
}

/// The table of an integer Krichevsky-Trofimov estimate of a binary symbol after `n0` zeros and
/// `n1` ones: `p1 = floor((2 n1 + 1) 2^24 / (2 (n0 + n1) + 2))`, clamped to `1..2^24-1` (exact).
/// The adaptive models of the packet format (the adaptive-token mask, the colour thumbnail) use it.
pub fn kt_table(n0: u32, n1: u32) -> [u32; 2] {
    let p1 = ((2 * n1 as u64 + 1) * TOTAL as u64) / (2 * (n0 as u64 + n1 as u64) + 2);
    let p1 = p1.clamp(1, TOTAL as u64 - 1) as u32;
    [TOTAL - p1, p1]
}

/// Ideal code length in bits of `symbol` under a fixed-point table (a statistic only).
pub fn ideal_bits(table: &[u32], symbol: usize) -> f64 {
    PRECISION as f64 - (table[symbol] as f64).log2()
}

fn model(table: &[u32]) -> Result<Model, PacketError> {
    Model::from_nonzero_fixed_point_probabilities(table, false)
        .map_err(|()| PacketError::Entropy("invalid probability table".into()))
}

/// Encodes symbols one at a time, each with its own fixed-point table.
pub struct TokenEncoder {
    coder: DefaultRangeEncoder,
    ideal_bits: f64,
    symbols: usize,
}

impl Default for TokenEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl TokenEncoder {
    pub fn new() -> Self {
        Self {
            coder: DefaultRangeEncoder::new(),
            ideal_bits: 0.0,
            symbols: 0,
        }
    }

    /// Encodes `symbol` with the fixed-point table `table` (sum `2^24`, entries >= 1).
    pub fn encode(&mut self, symbol: usize, table: &[u32]) -> Result<(), PacketError> {
        if symbol >= table.len() {
            return Err(PacketError::Entropy(format!(
                "symbol {symbol} outside an alphabet of {}",
                table.len()
            )));
        }
        let m = model(table)?;
        self.coder
            .encode_symbol(symbol, m)
            .map_err(|e| PacketError::Entropy(e.to_string()))?;
        self.ideal_bits += ideal_bits(table, symbol);
        self.symbols += 1;
        Ok(())
    }

    /// Sum of the ideal code lengths of the symbols encoded so far.
    pub fn ideal_bits(&self) -> f64 {
        self.ideal_bits
    }

    pub fn symbols(&self) -> usize {
        self.symbols
    }

    /// Terminates the code and returns the payload bytes.
    pub fn finish(self) -> Vec<u8> {
        let (mut words, state, situation) = self.coder.into_raw_parts();
        if state.range().get() == u64::MAX {
            // Nothing encoded.
            return Vec::new();
        }
        // Any point in [lower, lower + range) identifies the final interval, and the decoder
        // completes the point with zero bits. `upper` may exceed 2^64 (a pending carry).
        let lower = state.lower() as u128;
        let upper = lower + state.range().get() as u128;
        match situation {
            EncoderSituation::Inverted(pending, first) if upper > 1 << 64 => {
                // Take the point 2^64: the carry resolves the held-back words to
                // `first + 1, 0, 0, ...` and the final word is zero.
                words.push(first.wrapping_add(1));
                words.extend(std::iter::repeat_n(0, pending.get() - 1));
            }
            situation => {
                if let EncoderSituation::Inverted(pending, first) = situation {
                    // No carry: the held-back words resolve to `first, MAX, MAX, ...`.
                    words.push(first);
                    words.extend(std::iter::repeat_n(u32::MAX, pending.get() - 1));
                }
                // Without carry `upper <= 2^64`: the 32-bit head with the most trailing
                // zeros whose zero completion lies in the interval.
                let lo = lower.div_ceil(1 << 32);
                let hi = (upper - 1) >> 32;
                let head = (0..=32u32)
                    .rev()
                    .map(|bits| lo.div_ceil(1 << bits) << bits)
                    .find(|&cand| cand <= hi)
                    .expect("range >= 2^32 holds a multiple of 2^32");
                words.push(head as u32);
            }
        }
        words_to_bytes(words)
    }
}

fn words_to_bytes(words: Vec<u32>) -> Vec<u8> {
    let mut bytes: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// Decodes symbols one at a time, each with the same table the encoder used.
pub struct TokenDecoder {
    coder: DefaultRangeDecoder,
}

impl TokenDecoder {
    /// A decoder over `payload` (missing trailing bytes are zeros, as the encoder assumes).
    pub fn new(payload: &[u8]) -> Result<Self, PacketError> {
        let words: Vec<u32> = payload
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_be_bytes(w)
            })
            .collect();
        let coder = DefaultRangeDecoder::from_compressed(words)
            .map_err(|e| PacketError::Entropy(format!("{e:?}")))?;
        Ok(Self { coder })
    }

    pub fn decode(&mut self, table: &[u32]) -> Result<usize, PacketError> {
        let m = model(table)?;
        self.coder
            .decode_symbol(m)
            .map_err(|e| PacketError::Entropy(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lcg(seed: &mut u64) -> u32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (*seed >> 33) as u32
    }

    #[test]
    fn quantize_sums_to_total_and_keeps_every_symbol() {
        let mut out = Vec::new();
        for weights in [
            vec![0u32; 7],
            vec![1, 0, 0, 0],
            vec![u32::MAX, 1, 0, 5],
            (0..1024).map(|i| i * 977 % 4096).collect(),
            vec![u32::MAX; 1024],
        ] {
            quantize_weights(&weights, &mut out);
            assert_eq!(out.len(), weights.len());
            assert_eq!(out.iter().map(|&p| p as u64).sum::<u64>(), TOTAL as u64);
            assert!(out.iter().all(|&p| p >= 1));
        }
    }

    #[test]
    fn quantize_is_the_documented_rule() {
        let mut out = Vec::new();
        quantize_weights(&[3, 1], &mut out);
        let budget = (TOTAL - 2) as u64;
        let p0 = 1 + 3 * budget / 4;
        let p1 = 1 + budget / 4;
        let rest = TOTAL as u64 - p0 - p1;
        assert_eq!(out, vec![(p0 + rest) as u32, p1 as u32]);
    }

    #[test]
    fn round_trip_random_tables_and_overhead_is_small() {
        let mut seed = 7u64;
        for n in [0usize, 1, 2, 5, 100, 3000] {
            let mut tables = Vec::new();
            let mut symbols = Vec::new();
            let mut enc = TokenEncoder::new();
            for i in 0..n {
                let k = 1 + (i % 300);
                let peak = lcg(&mut seed) as usize % k;
                let w: Vec<u32> = (0..k)
                    .map(|j| {
                        if j == peak {
                            1 << 28
                        } else {
                            lcg(&mut seed) % 1000
                        }
                    })
                    .collect();
                let mut t = Vec::new();
                quantize_weights(&w, &mut t);
                let s = if lcg(&mut seed).is_multiple_of(4) {
                    lcg(&mut seed) as usize % k
                } else {
                    peak
                };
                enc.encode(s, &t).unwrap();
                tables.push(t);
                symbols.push(s);
            }
            let ideal = enc.ideal_bits();
            let bytes = enc.finish();
            assert!(
                (bytes.len() * 8) as f64 <= ideal * 1.005 + 32.0,
                "n={n}: {} bits vs ideal {ideal}",
                bytes.len() * 8
            );
            let mut dec = TokenDecoder::new(&bytes).unwrap();
            for (t, &s) in tables.iter().zip(&symbols) {
                assert_eq!(dec.decode(t).unwrap(), s);
            }
        }
    }

    /// Many short messages hit every termination path (normal, pending carry resolved up or
    /// down); each must decode and cost at most a byte over the ideal length plus one bit.
    #[test]
    fn termination_is_exact_and_tight() {
        let mut seed = 99u64;
        for _ in 0..4000 {
            let n = 1 + lcg(&mut seed) as usize % 24;
            let mut enc = TokenEncoder::new();
            let mut msgs = Vec::new();
            for _ in 0..n {
                let k = 2 + lcg(&mut seed) as usize % 40;
                let w: Vec<u32> = (0..k)
                    .map(|_| 1 + (lcg(&mut seed) >> (lcg(&mut seed) % 31)))
                    .collect();
                let mut t = Vec::new();
                quantize_weights(&w, &mut t);
                let s = lcg(&mut seed) as usize % k;
                enc.encode(s, &t).unwrap();
                msgs.push((t, s));
            }
            let ideal = enc.ideal_bits();
            let bytes = enc.finish();
            assert!(
                (bytes.len() * 8) as f64 <= ideal + 9.0,
                "{} bits vs {ideal}",
                bytes.len() * 8
            );
            let mut dec = TokenDecoder::new(&bytes).unwrap();
            for (t, s) in &msgs {
                assert_eq!(dec.decode(t).unwrap(), *s);
            }
        }
    }

    #[test]
    fn rejects_bad_tables_and_symbols() {
        let mut enc = TokenEncoder::new();
        assert!(enc.encode(3, &[TOTAL / 2, TOTAL / 2]).is_err());
        assert!(enc.encode(0, &[1, 2, 3]).is_err());
        let mut dec = TokenDecoder::new(&[1, 2, 3]).unwrap();
        assert!(dec.decode(&[5, 5]).is_err());
    }
}
