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

/// Splits a fuzz input into packets: each a u16 little-endian word (bits 0..14: length, bit 14:
/// keep the packet check as it is, bit 15: decode as a recovering receiver, `clean_only`)
/// followed by that many bytes; a last packet shorter than its length takes the rest. Without
/// bit 14 the packet check (a CRC over the packet, format v2) is recomputed, so that mutated
/// packets reach the decoder instead of stopping at the parser. Seeds:
/// examples/make_fuzz_seeds.rs.
pub fn chunks(mut data: &[u8]) -> Vec<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < MAX_PACKETS {
        let word = u16::from_le_bytes([data[0], data[1]]);
        let len = (word & 0x3fff) as usize;
        let rest = &data[2..];
        let (p, tail) = rest.split_at(len.min(rest.len()));
        let p = if word & 0x4000 != 0 {
            p.to_vec()
        } else {
            fix_packet_check(p)
        };
        out.push((p, word & 0x8000 != 0));
        data = tail;
    }
    out
}

/// The packet with its packet check recomputed: the first position after the model id where a
/// recomputed check makes the packet parse (the packet as it is when none does).
pub fn fix_packet_check(p: &[u8]) -> Vec<u8> {
    use gstuigc::codec::bitstream::{packet_check, parse_packet};
    if parse_packet(p).is_ok() {
        return p.to_vec();
    }
    for k in 6..p.len().saturating_sub(1).min(48) {
        let mut q = p.to_vec();
        let c = packet_check(&q[..k], &q[k + 2..]);
        q[k..k + 2].copy_from_slice(&c.to_le_bytes());
        if parse_packet(&q).is_ok() {
            return q;
        }
    }
    p.to_vec()
}
