//! Malformed and hostile input never panics and always gives a typed error, with bounded work:
//! every refusal below is checked against the prior's work counter (`TokenCodec::prior_work`,
//! positions the prior computed a table for), never against a clock. Issue 15: one test per
//! hostile header (docs/reliability.md).

mod common;

use common::*;
use gstuigc::codec::bitstream::{
    self, packet_check, parse_packet, write_packet, FLAG_ADAPTIVE, FLAG_DENSE, FLAG_INTER,
    MAX_DIMENSION,
};
use gstuigc::codec::{
    token_codec, Bundle, Error, FrameParams, InterFrame, PacketError, Reference, TokenCodec,
    TokenGrid, DEFAULT_MAX_PIXELS, DEFAULT_WORK_LIMIT,
};

fn codec(dir: &std::path::Path) -> TokenCodec {
    token_codec(&Bundle::load(dir).unwrap()).unwrap()
}

fn sample_packet(codec: &mut TokenCodec) -> Vec<u8> {
    let (rows, cols) = (8, 12);
    let tokens = (0..rows * cols).map(|i| ((i * 7) % 16) as u16).collect();
    let grid = gstuigc::codec::TokenGrid::new(rows, cols, tokens);
    codec
        .encode(&grid, 190, 120, FrameParams::default())
        .unwrap()
        .bytes
}

fn packet_err(r: gstuigc::codec::Result<gstuigc::codec::DecodedTokens>) -> PacketError {
    match r {
        Err(Error::Packet(e)) => e,
        Err(other) => panic!("expected a packet error, got {other}"),
        Ok(_) => panic!("expected a packet error, got a decoded frame"),
    }
}

/// The error of decoding `p` and the prior work it cost (table positions).
fn refused(c: &mut TokenCodec, p: &[u8]) -> (PacketError, u64) {
    let before = c.prior_work();
    let e = packet_err(c.decode(p));
    (e, c.prior_work() - before)
}

/// A packet cut short, or with bytes added, is refused by the packet check (or, cut inside the
/// header, as truncated) before the prior runs.
#[test]
fn payload_shorter_or_longer_than_sent_is_refused_before_any_work() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    let header_len = p.len() - parse_packet(&p).unwrap().payload.len();
    assert!(c.decode(&p).is_ok());
    for n in 0..p.len() {
        let (e, work) = refused(&mut c, &p[..n]);
        if n < header_len {
            assert!(
                matches!(e, PacketError::Truncated { .. }),
                "cut at {n}: {e}"
            );
        } else {
            assert!(
                matches!(e, PacketError::PacketCheckMismatch { .. }),
                "cut at {n}: {e}"
            );
        }
        assert_eq!(work, 0, "cut at {n}: the prior ran");
    }
    for extra in 1..=8 {
        let mut q = p.clone();
        q.extend(std::iter::repeat_n(0u8, extra));
        let (e, work) = refused(&mut c, &q);
        assert!(matches!(e, PacketError::PacketCheckMismatch { .. }), "{e}");
        assert_eq!(work, 0);
    }
}

/// A payload cut short by its sender (the packet check made to match): the decoder reads the
/// missing bytes as zeros and the token check value refuses the frame, after at most one pass
/// of the prior over the packet's own grid.
#[test]
fn payload_shorter_than_its_stages_need_costs_one_grid_at_most() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    let parsed = parse_packet(&p).unwrap();
    let tokens = (parsed.header.grid().0 * parsed.header.grid().1) as u64;
    for keep in [0, 1, parsed.payload.len() / 2] {
        let q = write_packet(&parsed.header, &parsed.payload[..keep]);
        let (e, work) = refused(&mut c, &q);
        assert!(
            matches!(
                e,
                PacketError::CheckMismatch { .. } | PacketError::Entropy(_)
            ),
            "{keep} payload bytes: {e}"
        );
        assert!(
            work <= tokens,
            "{work} table positions for a {tokens}-token grid"
        );
    }
}

#[test]
fn every_single_bit_flip_is_detected() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    // Whatever the flip hits (magic, version, model id, sizes, payload) it is an error.
    assert_every_bit_flip_is_detected(&mut c, &p);
}

/// Packet check mismatch: every single-bit flip of a packet is refused before the prior runs
/// (by a header check or by the packet check), so corruption costs one CRC pass, not a prior
/// pass.
#[test]
fn every_single_bit_flip_is_refused_before_any_work() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    let mut by_packet_check = 0;
    for bit in 0..p.len() * 8 {
        let mut q = p.clone();
        q[bit / 8] ^= 1 << (bit % 8);
        let (e, work) = refused(&mut c, &q);
        assert_eq!(work, 0, "bit {bit} ({e}): the prior ran");
        by_packet_check += matches!(e, PacketError::PacketCheckMismatch { .. }) as usize;
    }
    // Only the magic and version bits (and varint bits that make a field invalid) are refused
    // by something else.
    assert!(by_packet_check >= p.len() * 8 - 24, "{by_packet_check}");
}

#[test]
fn foreign_bytes_are_errors() {
    let mut c = codec(&tiny_model_dir());
    let png = std::fs::read(tiny_model_dir().join("golden/input.png")).unwrap();
    assert!(matches!(
        packet_err(c.decode(&png)),
        PacketError::BadMagic { .. }
    ));
    assert!(matches!(
        packet_err(c.decode(&[])),
        PacketError::Truncated { .. }
    ));
    // Pseudo-random datagrams, some starting with the right magic and version.
    let mut s = 0x1234_5678u32;
    for i in 0..2000 {
        let len = (i % 64) as usize;
        let mut d: Vec<u8> = (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            })
            .collect();
        if i % 2 == 0 && len >= 2 {
            d[0] = 0x55;
            d[1] = 0x20;
        }
        assert!(c.decode(&d).is_err(), "random datagram {i} decoded");
    }
}

#[test]
fn packet_from_another_model_is_refused_naming_both() {
    let mut a = codec(&tiny_model_dir());
    let mut b = codec(&tiny_model_b_dir());
    let p = sample_packet(&mut a);
    let (e, work) = refused(&mut b, &p);
    assert_eq!(work, 0, "wrong model: the prior ran");
    match &e {
        PacketError::ModelMismatch {
            packet_model,
            decoder_model,
        } => {
            assert_eq!(packet_model, &a.model_id().to_string());
            assert_eq!(decoder_model, &b.model_id().to_string());
        }
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains(&a.model_id().to_string()) && msg.contains(&b.model_id().to_string()));
}

/// A sample packet's header with `edit` applied, written back with a valid packet check: what a
/// hostile sender can make (the packet check is no authentication).
fn rewritten(p: &[u8], edit: impl FnOnce(&mut bitstream::Header)) -> Vec<u8> {
    let parsed = parse_packet(p).unwrap();
    let mut h = parsed.header.clone();
    edit(&mut h);
    write_packet(&h, parsed.payload)
}

/// A packet from raw header fields (widths as written, `w1` = width - 1), with a valid packet
/// check: sizes the Header type cannot hold.
fn raw_packet(c: &TokenCodec, w1: u32, h1: u32, stages: u8, payload: &[u8]) -> Vec<u8> {
    fn varint(mut v: u32, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let mut p = vec![0x55, 0x20];
    p.extend(c.model_id().0);
    for v in [0, 0, w1, h1] {
        varint(v, &mut p);
    }
    p.push(stages);
    p.extend([0, 0]); // token check value
    let crc = packet_check(&p, payload);
    p.extend(crc.to_le_bytes());
    p.extend(payload);
    p
}

/// Sizes 0: the format writes width - 1, so 0 is the varint 2^32 - 1 (no wrap-around to 0);
/// refused before any work. The encoder refuses a 0-pixel frame.
#[test]
fn zero_sizes_are_refused_before_any_work() {
    let mut c = codec(&tiny_model_dir());
    for (w1, h1) in [(u32::MAX, 119), (189, u32::MAX), (u32::MAX, u32::MAX)] {
        let q = raw_packet(&c, w1, h1, 0, &[]);
        let (e, work) = refused(&mut c, &q);
        assert!(
            matches!(
                e,
                PacketError::BadFrameSize {
                    max: MAX_DIMENSION,
                    ..
                }
            ),
            "{w1}x{h1}: {e}"
        );
        assert_eq!(work, 0);
    }
    let grid = TokenGrid::new(8, 12, vec![0; 96]);
    for (w, h) in [(0, 120), (190, 0)] {
        match c.encode(&grid, w, h, FrameParams::default()) {
            Err(Error::InvalidArgument(m)) => assert!(m.contains("does not fit"), "{m}"),
            other => panic!("{w}x{h}: {other:?}"),
        }
    }
}

/// Huge sizes: above the format's 8192 (4096 dense) per side, above max-pixels, or above the
/// work limit for the packet's bytes: each refused with its own error before any work.
#[test]
fn huge_sizes_are_refused_before_any_work() {
    let mut c = codec(&tiny_model_dir());
    assert_eq!(c.max_pixels(), DEFAULT_MAX_PIXELS);
    let p = sample_packet(&mut c);
    let cases = [
        (8193, 8, 0, "side"),
        (4097, 8, FLAG_DENSE, "side"),
        (8192, 8192, 0, "pixels"),
        (3841, 2160, 0, "pixels"),
        (1921, 1080, FLAG_DENSE, "pixels"),
        (3840, 2160, 0, "work"),
        (1920, 1080, FLAG_DENSE, "work"),
    ];
    for (w, h, flags, why) in cases {
        let q = rewritten(&p, |hd| (hd.width, hd.height, hd.flags) = (w, h, flags));
        let (e, work) = refused(&mut c, &q);
        let ok = match why {
            "side" => matches!(e, PacketError::BadFrameSize { .. }),
            "pixels" => matches!(e, PacketError::FrameTooLarge { .. }),
            _ => matches!(e, PacketError::TooMuchWork { .. }),
        };
        assert!(ok, "{w}x{h} flags {flags}: {e}");
        assert_eq!(work, 0, "{w}x{h}: the prior ran");
    }
}

/// A size inconsistent with the payload: the same grid under another size is caught by the
/// token check value (it covers the header); a larger grid costs at most one prior pass over
/// that grid, within the work limit; a payload longer than the header's frame can need is
/// refused before any work.
#[test]
fn sizes_inconsistent_with_the_payload_are_refused() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    let q = rewritten(&p, |h| h.width = 180);
    let (e, work) = refused(&mut c, &q);
    assert!(matches!(e, PacketError::CheckMismatch { .. }), "{e}");
    assert_eq!(work, 96, "one pass over the 8x12 grid");
    let q = rewritten(&p, |h| h.height = 200);
    let (e, work) = refused(&mut c, &q);
    assert!(
        matches!(
            e,
            PacketError::CheckMismatch { .. } | PacketError::Entropy(_)
        ),
        "{e}"
    );
    assert!(work <= 13 * 12, "{work}");
    // A 16x16 frame with nothing coded needs at most 4 payload bytes.
    let q = raw_packet(&c, 15, 15, 0, &[0xa5; 50]);
    let (e, work) = refused(&mut c, &q);
    assert_eq!(e, PacketError::PayloadTooLarge { len: 50, max: 4 });
    assert_eq!(work, 0);
}

/// Wrong version: version 1 (no packet check) and unknown versions are refused by the parser.
#[test]
fn wrong_versions_are_refused_before_any_work() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    for v in [0u8, 1, 3, 15] {
        let mut q = p.clone();
        q[1] = (v << 4) | (q[1] & 0x0f);
        let (e, work) = refused(&mut c, &q);
        assert_eq!(
            e,
            PacketError::UnsupportedVersion {
                found: v,
                supported: 2
            }
        );
        assert_eq!(work, 0);
    }
}

/// Stage counts that do not add up: more than the schedule, or every stage plus adaptive
/// tokens of a stage that does not exist.
#[test]
fn stage_counts_that_do_not_add_up_are_refused_before_any_work() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    for (stages, flags, max) in [(11u8, 0u8, 10usize), (255, 0, 10), (10, FLAG_ADAPTIVE, 9)] {
        let q = rewritten(&p, |h| (h.stages, h.flags) = (stages, flags));
        let (e, work) = refused(&mut c, &q);
        assert_eq!(e, PacketError::BadStageCount { found: stages, max });
        assert_eq!(work, 0);
    }
}

/// Token check value mismatch (a packet whose packet check is right, e.g. from a sender with
/// another prior): refused after one prior pass over its grid.
#[test]
fn token_check_mismatch_is_refused_after_one_pass() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    let good = parse_packet(&p).unwrap().header.check;
    let q = rewritten(&p, |h| h.check ^= 0x0101);
    let (e, work) = refused(&mut c, &q);
    assert_eq!(
        e,
        PacketError::CheckMismatch {
            expected: good ^ 0x0101,
            actual: good
        }
    );
    assert_eq!(work, 96);
}

/// Valid packets that claim more work than they carry: with nothing coded, a 17-byte header
/// may ask for at most the work limit (2048 tokens by default: 1024x512) and is decoded; one
/// more token row is refused before any work. Above the limit a packet must carry a byte per
/// token: the encoder pads to that, so a decoder with the same limit accepts its packets. The
/// worst packets of up to 1500 bytes a default receiver accepts ask for at most 2048 tokens,
/// whatever their size: the 17-byte 1024x512 header costs one prior pass over its grid, and so
/// does a 1500-byte packet of 1488 tokens (992x384). A 1500-byte packet of 2112 tokens
/// (1024x528) is refused.
#[test]
fn packets_that_claim_more_work_than_they_carry_are_refused_before_any_work() {
    let mut c = codec(&tiny_model_dir());
    assert_eq!(c.work_limit(), DEFAULT_WORK_LIMIT);
    assert_eq!(DEFAULT_WORK_LIMIT, 2048);
    // 1024x512 = 64x32 tokens, nothing coded: valid, regenerated.
    let at_limit = raw_packet(&c, 1023, 511, 0, &[]);
    let at_limit = rewritten(&at_limit, |h| {
        h.check = bitstream::check_value(&bitstream::write_header_prefix(h), std::iter::empty())
    });
    let before = c.prior_work();
    let d = c.decode(&at_limit).unwrap();
    assert_eq!(d.coded.iter().filter(|&&k| k).count(), 0);
    assert_eq!(c.prior_work() - before, 2048);
    for (w, h, flags, tokens) in [
        (1024, 528, 0, 64 * 33),
        (3840, 2160, 0, 240 * 135),
        (512, 264, FLAG_DENSE, 64 * 33),
    ] {
        let q = rewritten(&at_limit, |hd| {
            (hd.width, hd.height, hd.flags) = (w, h, flags)
        });
        let (e, work) = refused(&mut c, &q);
        assert_eq!(
            e,
            PacketError::TooMuchWork {
                width: w * if flags == FLAG_DENSE { 2 } else { 1 },
                height: h * if flags == FLAG_DENSE { 2 } else { 1 },
                tokens,
                bytes: q.len(),
                limit: 2048
            }
        );
        assert_eq!(work, 0);
    }
    // A 1500-byte datagram: 992x384 (1488 tokens, zero padding: nothing coded) is decoded with
    // one prior pass over its grid, 1024x528 (2112 tokens) is refused.
    let padded = |w: u32, h: u32| {
        let hd = rewritten(&at_limit, |hd| (hd.width, hd.height) = (w, h));
        let p = parse_packet(&hd).unwrap();
        let mut header = p.header.clone();
        header.check =
            bitstream::check_value(&bitstream::write_header_prefix(&header), std::iter::empty());
        let len = write_packet(&header, &[]).len();
        write_packet(&header, &vec![0; 1500 - len])
    };
    let big = padded(992, 384);
    assert_eq!(big.len(), 1500);
    let before = c.prior_work();
    c.decode(&big).unwrap();
    assert_eq!(c.prior_work() - before, 1488);
    let (e, work) = refused(&mut c, &padded(1024, 528));
    assert!(
        matches!(
            e,
            PacketError::TooMuchWork {
                tokens: 2112,
                bytes: 1500,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(work, 0);
    // A lower limit on both ends: the encoder pads the 96-token packet to 96 bytes.
    let grid = TokenGrid::new(8, 12, (0..96).map(|i| ((i * 7) % 16) as u16).collect());
    let plain = c.encode(&grid, 190, 120, FrameParams::default()).unwrap();
    assert_eq!(plain.padding, 0);
    assert!(plain.bytes.len() < 96, "{}", plain.bytes.len());
    c.set_work_limit(50);
    let (e, work) = refused(&mut c, &plain.bytes);
    assert!(
        matches!(
            e,
            PacketError::TooMuchWork {
                tokens: 96,
                limit: 50,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(work, 0);
    let padded = c.encode(&grid, 190, 120, FrameParams::default()).unwrap();
    assert_eq!(padded.bytes.len(), 96);
    assert_eq!(padded.padding, 96 - plain.bytes.len());
    assert_eq!(c.decode(&padded.bytes).unwrap().grid, grid);
    // A budget below the padded size skips the frame, never sends a refused packet.
    let capped = FrameParams {
        max_bytes: Some(90),
        ..Default::default()
    };
    match c.encode(&grid, 190, 120, capped) {
        Err(Error::BudgetTooSmall { budget: 90, min }) => assert_eq!(min, 96),
        other => panic!("{other:?}"),
    }
}

/// The encoder refuses a frame its receivers would refuse (a 4000x3000 photo above the
/// default max-pixels) before the prior runs, naming the limit.
#[test]
fn encoder_refuses_frames_a_default_receiver_refuses() {
    let mut c = codec(&tiny_model_dir());
    let (rows, cols) = (188, 250);
    let grid = TokenGrid::new(rows, cols, vec![0; rows * cols]);
    let before = c.prior_work();
    match c.encode(&grid, 4000, 3000, FrameParams::default()) {
        Err(Error::InvalidArgument(m)) => assert!(
            m.contains(
                "a 4000x3000 frame is 12000000 pixels, above the 8294400 a receiver accepts"
            ),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.prior_work(), before);
    c.set_max_pixels(4000 * 3000);
    c.set_work_limit(u64::MAX);
    assert!(c.encode(&grid, 4000, 3000, FrameParams::default()).is_ok());
}

// --- inter packets ----------------------------------------------------------------------------

fn shipped_codec() -> TokenCodec {
    codec(&shipped_model_dir().expect("the shipped model models/uigc-small is in the tree"))
}

/// An 8x10 reference grid and an inter packet against it (frame 10 on frame 9, band rows 0..3).
fn inter_sample(c: &mut TokenCodec) -> (Reference, Vec<u8>) {
    let (rows, cols) = (8, 10);
    let a: Vec<u16> = (0..rows * cols).map(|i| ((i * 37) % 256) as u16).collect();
    let mut b = a.clone();
    let mut changed = vec![false; rows * cols];
    for p in (5..rows * cols).step_by(7) {
        b[p] = (b[p] + 1) % 256;
        changed[p] = true;
    }
    let reference = Reference::intra(9, 160, 128, TokenGrid::new(rows, cols, a), None);
    let b = TokenGrid::new(rows, cols, b);
    let frame = InterFrame {
        tokens: &b,
        changed: &changed,
        band: (0, 3),
        colour: None,
        colour_changed: &[],
    };
    let (p, _) = c.encode_inter(&reference, &frame, 0, 10).unwrap();
    (reference, p.bytes)
}

fn inter_refused(
    c: &mut TokenCodec,
    p: &[u8],
    r: &Reference,
    clean_only: bool,
) -> (PacketError, u64) {
    let before = c.prior_work();
    let e = match c.decode_inter(p, r, clean_only) {
        Err(Error::Packet(e)) => e,
        other => panic!("expected a packet error, got {other:?}"),
    };
    (e, c.prior_work() - before)
}

/// Inter packets: wrong reference, a reference of another size, a band outside the grid, a
/// stage count that is not the schedule's, an intra decoder, a frame above the work limit,
/// and every bit flip: each its typed error before any work; a wrong whole-grid check value
/// after one pass.
#[test]
fn hostile_inter_packets_are_refused_with_bounded_work() {
    let mut c = shipped_codec();
    let (reference, p) = inter_sample(&mut c);
    assert!(c.decode_inter(&p, &reference, false).is_ok());
    let mut other = reference.clone();
    other.frame = 8;
    assert_eq!(
        inter_refused(&mut c, &p, &other, false),
        (
            PacketError::NoReference {
                frame: 10,
                reference: 9
            },
            0
        )
    );
    let mut small = reference.clone();
    small.width = 150;
    let (e, work) = inter_refused(&mut c, &p, &small, false);
    assert!(
        matches!(e, PacketError::BadInter(ref m) if m.contains("does not fit the 150x128")),
        "{e}"
    );
    assert_eq!(work, 0);
    let q = rewritten(&p, |h| h.inter.as_mut().unwrap().clean_rows = 9);
    let (e, work) = inter_refused(&mut c, &q, &reference, false);
    assert!(
        matches!(e, PacketError::BadInter(ref m) if m.contains("band rows 0..9")),
        "{e}"
    );
    assert_eq!(work, 0);
    let q = rewritten(&p, |h| h.stages = 4);
    assert!(matches!(
        inter_refused(&mut c, &q, &reference, false).0,
        PacketError::BadInter(_)
    ));
    let q = rewritten(&p, |h| h.flags &= !FLAG_INTER);
    assert!(c.decode_inter(&q, &reference, false).is_err());
    assert!(matches!(
        refused(&mut c, &p).0,
        PacketError::NoReference {
            frame: 10,
            reference: 9
        }
    ));
    // A 4K frame in a small inter packet: refused before the reference is even compared.
    let q = rewritten(&p, |h| (h.width, h.height) = (3840, 2160));
    let mut big = reference.clone();
    (big.width, big.height) = (3840, 2160);
    for r in [&reference, &big] {
        let (e, work) = inter_refused(&mut c, &q, r, true);
        assert!(
            matches!(e, PacketError::TooMuchWork { tokens: 32400, .. }),
            "{e}"
        );
        assert_eq!(work, 0);
    }
    // The whole-grid check value: refused after one pass (80 tokens at most).
    let q = rewritten(&p, |h| h.inter.as_mut().unwrap().check_full ^= 1);
    let (e, work) = inter_refused(&mut c, &q, &reference, false);
    assert!(matches!(e, PacketError::CheckMismatch { .. }), "{e}");
    assert!(work <= 80, "{work}");
    for bit in 0..p.len() * 8 {
        let mut q = p.clone();
        q[bit / 8] ^= 1 << (bit % 8);
        let (_, work) = inter_refused(&mut c, &q, &reference, false);
        assert_eq!(work, 0, "bit {bit}: the prior ran");
    }
}

/// An inter packet of a frame above the work limit is padded by the encoder to a byte per
/// token and accepted by a decoder with the same limit; unpadded, it is refused.
#[test]
fn inter_packets_are_padded_to_the_work_limit() {
    let mut c = shipped_codec();
    let (reference, plain) = inter_sample(&mut c);
    assert!(plain.len() < 80, "{}", plain.len());
    c.set_work_limit(40);
    let (e, work) = inter_refused(&mut c, &plain, &reference, false);
    assert!(
        matches!(
            e,
            PacketError::TooMuchWork {
                tokens: 80,
                limit: 40,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(work, 0);
    let (_, padded) = inter_sample(&mut c);
    assert_eq!(padded.len(), 80);
    let a = c.decode_inter(&padded, &reference, false).unwrap();
    c.set_work_limit(DEFAULT_WORK_LIMIT);
    let b = c.decode_inter(&plain, &reference, false).unwrap();
    assert_eq!(a.reference.grid, b.reference.grid);
}

/// A hostile inter packet that would start a refresh cycle at another size (a receiver joins a
/// stream that way) is refused by the limits before it touches the receiver's state: the
/// receiver stays exact and decodes the next real packet exactly.
#[test]
fn a_hostile_joining_packet_leaves_the_receiver_state_alone() {
    use gstuigc::codec::{FrameStatus, StreamConfig, StreamDecoder, StreamEncoder};
    let mut model = load(&tiny_model_dir());
    let mut enc = StreamEncoder::new(StreamConfig::default()).unwrap();
    let mut dec = StreamDecoder::new();
    let p0 = enc.encode(&mut model, &synthetic(64, 48, 1)).unwrap();
    let p1 = enc.encode(&mut model, &synthetic(64, 48, 2)).unwrap();
    assert!(p1.packet.header.is_inter());
    assert_eq!(
        dec.decode(&mut model, &p0.packet.bytes).unwrap().status,
        FrameStatus::Exact
    );
    let hostile = rewritten(&p1.packet.bytes, |h| {
        (h.width, h.height) = (3840, 2160);
        let i = h.inter.as_mut().unwrap();
        (i.band_start, i.clean_rows) = (0, 2);
    });
    match dec.decode(&mut model, &hostile) {
        Err(Error::Packet(PacketError::TooMuchWork { tokens: 32400, .. })) => {}
        other => panic!("{:?}", other.map(|f| f.status)),
    }
    assert!(
        dec.synced(),
        "the hostile packet replaced the receiver's state"
    );
    assert_eq!(dec.reference().map(|r| (r.width, r.height)), Some((64, 48)));
    assert_eq!(
        dec.decode(&mut model, &p1.packet.bytes).unwrap().status,
        FrameStatus::Exact
    );
}
