//! Shared pieces of the fuzz targets (fuzz_targets/*.rs).

use std::path::PathBuf;

/// Frames larger than this are refused by the fuzzed decoders, so that one execution stays in
/// the millisecond range. What a large frame may cost is bounded by the decoder's own limits
/// (docs/reliability.md); the fuzzers look for crashes, not for slow packets.
pub const FUZZ_MAX_PIXELS: u64 = 320 * 240;

/// Packets decoded per input at most.
pub const MAX_PACKETS: usize = 8;

/// The repository root (the fuzz crate lives in `fuzz/`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Splits a fuzz input into packets: each a u16 little-endian word (bits 0..15: length, bit 15:
/// decode as a recovering receiver, `clean_only`) followed by that many bytes; a last packet
/// shorter than its length takes the rest. Seeds: examples/make_fuzz_seeds.rs.
pub fn chunks(mut data: &[u8]) -> Vec<(&[u8], bool)> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < MAX_PACKETS {
        let word = u16::from_le_bytes([data[0], data[1]]);
        let len = (word & 0x7fff) as usize;
        let rest = &data[2..];
        let (p, tail) = rest.split_at(len.min(rest.len()));
        out.push((p, word & 0x8000 != 0));
        data = tail;
    }
    out
}
