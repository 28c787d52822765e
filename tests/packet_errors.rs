//! Malformed input never panics and always gives a typed error.

mod common;

use common::*;
use gstuigc::codec::{token_codec, Bundle, Error, FrameParams, PacketError, TokenCodec};

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

#[test]
fn truncated_packets_are_errors() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    assert!(c.decode(&p).is_ok());
    for n in 0..p.len() {
        let e = packet_err(c.decode(&p[..n]));
        assert!(
            matches!(
                e,
                PacketError::Truncated { .. } | PacketError::CheckMismatch { .. }
            ),
            "cut at {n}: {e}"
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
            d[1] = 0x10;
        }
        assert!(c.decode(&d).is_err(), "random datagram {i} decoded");
    }
}

#[test]
fn packet_from_another_model_is_refused_naming_both() {
    let mut a = codec(&tiny_model_dir());
    let mut b = codec(&tiny_model_b_dir());
    let p = sample_packet(&mut a);
    let e = packet_err(b.decode(&p));
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

#[test]
fn header_fields_are_bounded() {
    let mut c = codec(&tiny_model_dir());
    let p = sample_packet(&mut c);
    let parsed = gstuigc::codec::bitstream::parse_packet(&p).unwrap();
    // Stage count beyond the schedule.
    let mut h = parsed.header.clone();
    h.stages = 11;
    let q = gstuigc::codec::bitstream::write_packet(&h, parsed.payload);
    assert!(matches!(
        packet_err(c.decode(&q)),
        PacketError::BadStageCount { .. }
    ));
    // A payload far larger than the frame can need.
    let mut q = p.clone();
    q.extend(std::iter::repeat_n(0xa5, 10_000));
    assert!(matches!(
        packet_err(c.decode(&q)),
        PacketError::PayloadTooLarge { .. }
    ));
    // A huge frame size is refused before anything is allocated for it.
    let mut h = parsed.header.clone();
    h.width = 100_000;
    let q = gstuigc::codec::bitstream::write_packet(&h, parsed.payload);
    assert!(matches!(
        packet_err(c.decode(&q)),
        PacketError::BadFrameSize { .. }
    ));
}

/// A packet may claim up to 8192x8192 pixels; the decoder refuses frames above its max-pixels
/// (default 3840x2160) before running the prior or the tokenizer, counting a dense packet at
/// twice each side. "Before any work" shows in the error kind: the payload of these packets
/// belongs to another frame, so decoding it would end in a check-value or entropy error instead
/// (as it does at the limit). How fast the refusal is belongs to a benchmark, not to this test.
#[test]
fn frames_above_max_pixels_are_refused_before_any_work() {
    use gstuigc::codec::bitstream::{parse_packet, write_packet, FLAG_DENSE, MAX_DIMENSION};
    use gstuigc::codec::DEFAULT_MAX_PIXELS;
    let mut c = codec(&tiny_model_dir());
    assert_eq!(c.max_pixels(), DEFAULT_MAX_PIXELS);
    let p = sample_packet(&mut c);
    let parsed = parse_packet(&p).unwrap();
    let with = |w: u32, h: u32, flags: u8| {
        let mut hd = parsed.header.clone();
        (hd.width, hd.height, hd.flags) = (w, h, flags);
        write_packet(&hd, parsed.payload)
    };
    let too_large = |e: PacketError| matches!(e, PacketError::FrameTooLarge { .. });
    assert!(too_large(packet_err(c.decode(&with(
        MAX_DIMENSION,
        MAX_DIMENSION,
        0
    )))));
    assert!(too_large(packet_err(c.decode(&with(3841, 2160, 0)))));
    assert!(too_large(packet_err(
        c.decode(&with(1921, 1080, FLAG_DENSE))
    )));
    // At the limit the packet is decoded (and found corrupt: its payload is another frame's).
    assert!(!too_large(packet_err(
        c.decode(&with(1920, 1080, FLAG_DENSE))
    )));
    c.set_max_pixels(1000);
    assert!(too_large(packet_err(c.decode(&p))));
    c.set_max_pixels(190 * 120);
    assert!(c.decode(&p).is_ok());
}
