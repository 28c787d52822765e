//! Camera streams: inter packets (token level, exact integer prior) and the stream encoder /
//! decoder with the shipped model: exactness, loss recovery, byte caps, thread independence.

mod common;

use gstuigc::codec::{
    self, bitstream, Bundle, ColourParams, ColourThumb, FrameKind, FrameStatus, InterFrame,
    Reference, RgbImage, StreamConfig, StreamDecoder, StreamEncoder, TokenCodec, TokenGrid,
};

fn shipped() -> std::path::PathBuf {
    common::shipped_model_dir().expect("the shipped model models/uigc-small is in the tree")
}

fn codec_with_threads(threads: usize) -> TokenCodec {
    let bundle = Bundle::load(shipped()).unwrap();
    codec::token_codec_with_threads(&bundle, threads).unwrap()
}

/// xorshift32 for deterministic test data.
fn rng(s: &mut u32) -> u32 {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    *s
}

/// A reference grid with spatially correlated tokens and a next frame where ~`pct` % changed.
fn grids(rows: usize, cols: usize, pct: u32, seed: u32) -> (TokenGrid, TokenGrid, Vec<bool>) {
    let mut s = seed | 1;
    let mut a = vec![0u16; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            a[r * cols + c] = if c > 0 && !rng(&mut s).is_multiple_of(3) {
                a[r * cols + c - 1]
            } else {
                (rng(&mut s) % 256) as u16
            };
        }
    }
    let mut b = a.clone();
    let mut changed = vec![false; rows * cols];
    for p in 0..rows * cols {
        if rng(&mut s) % 100 < pct {
            b[p] = ((b[p] as u32 + 1 + rng(&mut s) % 255) % 256) as u16;
            changed[p] = true;
        }
    }
    (
        TokenGrid::new(rows, cols, a),
        TokenGrid::new(rows, cols, b),
        changed,
    )
}

fn thumb(width: u32, height: u32, seed: u32) -> ColourThumb {
    ColourThumb::from_image(
        &common::synthetic(width, height, seed),
        ColourParams::default(),
    )
}

#[test]
fn inter_packet_round_trip_is_exact_with_any_thread_count() {
    let (w, h) = (320, 240); // 15 x 20 tokens
    let (a, b, changed) = grids(15, 20, 8, 7);
    let colour_a = thumb(w, h, 1);
    let colour_b = thumb(w, h, 2);
    let colour_changed = vec![true; colour_b.rows * colour_b.cols];
    let reference = Reference::intra(5, w, h, a.clone(), Some(colour_a));
    let frame = InterFrame {
        tokens: &b,
        changed: &changed,
        band: (4, 8),
        colour: Some(&colour_b),
        colour_changed: &colour_changed,
    };
    let mut packets = Vec::new();
    for threads in [1, 2, 8] {
        let mut c = codec_with_threads(threads);
        let (p, state) = c.encode_inter(&reference, &frame, 3, 6).unwrap();
        // Changed tokens and the refresh band take the new values, the rest keeps the old ones.
        for (pos, &got) in state.grid.tokens.iter().enumerate() {
            let in_band = (4..8).contains(&(pos / 20));
            let want = if changed[pos] || in_band {
                b.tokens[pos]
            } else {
                a.tokens[pos]
            };
            assert_eq!(got, want, "position {pos}");
        }
        assert_eq!(state.colour.as_ref(), Some(&colour_b));
        let d = c.decode_inter(&p.bytes, &reference, false).unwrap();
        assert_eq!(d.reference, state, "{threads} threads");
        assert_eq!(d.exact_rows, 15);
        assert!(d.header.is_inter());
        packets.push(p.bytes);
    }
    assert_eq!(packets[0], packets[1]);
    assert_eq!(packets[0], packets[2]);
    // An unchanged frame is little more than a header.
    let (p, _) = codec_with_threads(1)
        .encode_inter(
            &reference,
            &InterFrame {
                tokens: &a,
                changed: &vec![false; a.tokens.len()],
                band: (0, 0),
                colour: reference.colour.as_ref(),
                colour_changed: &colour_changed,
            },
            3,
            6,
        )
        .unwrap();
    assert!(
        p.bytes.len() <= 24,
        "no-change packet of {} bytes",
        p.bytes.len()
    );
}

#[test]
fn inter_packets_refuse_the_wrong_reference_and_corruption() {
    let (a, b, changed) = grids(8, 10, 10, 3);
    let reference = Reference::intra(9, 160, 128, a.clone(), None);
    let mut c = codec_with_threads(2);
    let frame = InterFrame {
        tokens: &b,
        changed: &changed,
        band: (0, 3),
        colour: None,
        colour_changed: &[],
    };
    let (p, state) = c.encode_inter(&reference, &frame, 0, 10).unwrap();
    // A decoder whose last frame is another one refuses it (the packet names frame 9).
    let mut other = reference.clone();
    other.frame = 8;
    let e = c.decode_inter(&p.bytes, &other, false).unwrap_err();
    assert!(
        matches!(
            e,
            codec::Error::Packet(codec::PacketError::NoReference {
                frame: 10,
                reference: 9
            })
        ),
        "{e}"
    );
    // Same frame counter, different grid: the check value catches it.
    let mut wrong = reference.clone();
    wrong.grid.tokens[70] = (wrong.grid.tokens[70] + 1) % 256;
    assert!(c.decode_inter(&p.bytes, &wrong, false).is_err());
    // Intra decoding of an inter packet is a typed error, not garbage.
    assert!(matches!(
        c.decode(&p.bytes).unwrap_err(),
        codec::Error::Packet(codec::PacketError::NoReference { .. })
    ));
    // Every truncation and every bit flip is refused or decodes to the same state.
    for n in 0..p.bytes.len() {
        if let Ok(d) = c.decode_inter(&p.bytes[..n], &reference, false) {
            assert_eq!(d.reference.grid, state.grid, "truncated to {n}");
        }
    }
    let mut same = 0;
    for i in 0..p.bytes.len() * 8 {
        let mut q = p.bytes.clone();
        q[i / 8] ^= 1 << (i % 8);
        if let Ok(d) = c.decode_inter(&q, &reference, false) {
            assert_eq!(d.reference.grid, state.grid, "bit {i}");
            same += 1;
        }
    }
    assert!(same < 16, "{same} flips undetected");
    // The header round-trips through the parser.
    let parsed = bitstream::parse_packet(&p.bytes).unwrap();
    assert_eq!(parsed.header, p.header);
}

#[test]
fn clean_area_decodes_without_the_rest_of_the_reference() {
    // A receiver that holds only rows 0..4 exactly decodes a packet whose band starts at row 4.
    let (a, b, changed) = grids(12, 16, 10, 11);
    let reference = Reference::intra(1, 256, 192, a.clone(), None);
    let mut c = codec_with_threads(1);
    let frame = InterFrame {
        tokens: &b,
        changed: &changed,
        band: (4, 8),
        colour: None,
        colour_changed: &[],
    };
    let (p, state) = c.encode_inter(&reference, &frame, 0, 2).unwrap();
    let mut stale = reference.clone();
    for t in &mut stale.grid.tokens[4 * 16..] {
        *t = 0;
    }
    for f in &mut stale.changed[4 * 16..] {
        *f = true;
    }
    let d = c.decode_inter(&p.bytes, &stale, true).unwrap();
    assert_eq!(d.exact_rows, 8);
    assert_eq!(
        d.reference.grid.tokens[..8 * 16],
        state.grid.tokens[..8 * 16]
    );
}

/// A fixed camera: a textured background with a bright square moving across it and sensor
/// noise.
fn scene(width: u32, height: u32, t: u32) -> RgbImage {
    let base = common::synthetic(width, height, 1);
    let mut data = base.data.clone();
    let mut s = 0x1234_5678 ^ t.wrapping_mul(7919);
    let (sx, sy) = ((t * 6) % width, height / 3);
    for y in 0..height {
        for x in 0..width {
            let i = ((y * width + x) * 3) as usize;
            let inside = x >= sx && x < sx + 24 && y >= sy && y < sy + 24;
            for c in 0..3 {
                let n = (rng(&mut s) % 5) as i32 - 2;
                let v = if inside { 230 } else { data[i + c] as i32 + n };
                data[i + c] = v.clamp(0, 255) as u8;
            }
        }
    }
    RgbImage::new(width, height, data).unwrap()
}

fn model() -> codec::Model {
    common::load(&shipped())
}

#[test]
fn stream_without_loss_is_exact_and_cheaper_than_intra() {
    let mut m = model();
    // No refresh: inter frames carry only what moved.
    let config = StreamConfig {
        refresh_frames: 0,
        ..Default::default()
    };
    let mut enc = StreamEncoder::new(config).unwrap();
    let mut dec = StreamDecoder::new();
    let (mut intra_bytes, mut inter_bytes, mut inter_n) = (0, 0, 0);
    for t in 0..14 {
        let img = scene(160, 128, t);
        let p = enc.encode(&mut m, &img).unwrap();
        match p.kind {
            FrameKind::Intra => intra_bytes = p.packet.bytes.len(),
            FrameKind::Inter => {
                inter_bytes += p.packet.bytes.len();
                inter_n += 1;
            }
        }
        assert_eq!(p.kind == FrameKind::Intra, t == 0);
        let f = dec.decode(&mut m, &p.packet.bytes).unwrap();
        assert_eq!(f.status, FrameStatus::Exact, "frame {t}");
        assert_eq!(dec.reference(), enc.reference(), "frame {t}");
    }
    assert_eq!(dec.stats().exact, 14);
    let mean_inter = inter_bytes / inter_n;
    assert!(
        mean_inter * 3 < intra_bytes,
        "inter {mean_inter} B/frame vs intra {intra_bytes} B"
    );
}

/// Sends `frames` frames over a link that drops packets (seeded), checks that no frame is shown
/// as exact unless the receiver's state equals the sender's, that every frame is accounted for,
/// and that the receiver is exact again at the end.
fn lossy(loss_pct: u32, seed: u32) {
    let mut m = model();
    let config = StreamConfig {
        refresh_frames: 3,
        max_frame_bytes: Some(300),
        ..Default::default()
    };
    let mut enc = StreamEncoder::new(config).unwrap();
    let mut dec = StreamDecoder::new();
    let mut s = seed;
    let (mut sent, mut lost, mut exact, mut concealed) = (0, 0, 0, 0);
    let frames = 30;
    for t in 0..frames {
        let p = enc.encode(&mut m, &scene(128, 96, t)).unwrap();
        assert!(
            p.packet.bytes.len() <= 300,
            "frame {t}: {} bytes",
            p.packet.bytes.len()
        );
        sent += 1;
        // No loss in the last 8 frames: the receiver must be exact again.
        if t < frames - 8 && t > 0 && rng(&mut s) % 100 < loss_pct {
            lost += 1;
            continue;
        }
        match dec.decode(&mut m, &p.packet.bytes) {
            Ok(f) if f.status == FrameStatus::Exact => {
                exact += 1;
                assert_eq!(dec.reference(), enc.reference(), "frame {t} shown as exact");
            }
            Ok(_) => concealed += 1,
            Err(e) => panic!("frame {t}: {e}"),
        }
    }
    assert_eq!(sent, exact + concealed + lost);
    let st = dec.stats();
    assert_eq!((st.exact, st.concealed, st.dropped), (exact, concealed, 0));
    assert!(
        dec.synced(),
        "not exact after 8 loss-free frames ({loss_pct} % loss)"
    );
    assert_eq!(dec.reference(), enc.reference());
    if lost > 0 {
        assert!(st.recoveries > 0);
    }
}

#[test]
fn loss_5_percent_recovers_exactly() {
    lossy(5, 99);
}

#[test]
fn loss_20_percent_recovers_exactly() {
    lossy(20, 7);
}

#[test]
fn joining_a_stream_mid_way_becomes_exact_after_a_refresh_cycle() {
    let mut m = model();
    let mut enc = StreamEncoder::new(StreamConfig {
        refresh_frames: 4,
        ..Default::default()
    })
    .unwrap();
    let mut dec = StreamDecoder::new();
    let mut statuses = Vec::new();
    for t in 0..14 {
        let p = enc.encode(&mut m, &scene(128, 96, t)).unwrap();
        if t < 3 {
            continue; // the receiver was not listening yet
        }
        match dec.decode(&mut m, &p.packet.bytes) {
            Ok(f) => statuses.push(f.status),
            Err(e) => statuses.push({
                let _ = e;
                FrameStatus::Concealed
            }),
        }
    }
    assert_eq!(statuses.last(), Some(&FrameStatus::Exact), "{statuses:?}");
    assert_eq!(dec.reference(), enc.reference());
}

#[test]
fn byte_cap_and_bucket_hold_for_every_packet() {
    let mut m = model();
    let rate = 8000; // bit/s at 10 fps: 100 bytes per frame
    let mut enc = StreamEncoder::new(StreamConfig {
        max_frame_bytes: Some(200),
        target_bitrate: Some(rate),
        refresh_frames: 4,
        ..Default::default()
    })
    .unwrap();
    let mut dec = StreamDecoder::new();
    let mut total = 0;
    let frames = 20;
    for t in 0..frames {
        match enc.encode(&mut m, &scene(160, 128, t)) {
            Ok(p) => {
                assert!(p.packet.bytes.len() <= 200);
                assert!(p.packet.bytes.len() <= p.budget.unwrap());
                total += p.packet.bytes.len();
                let f = dec.decode(&mut m, &p.packet.bytes).unwrap();
                assert_eq!(f.status, FrameStatus::Exact);
            }
            Err(codec::Error::BudgetTooSmall { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    // Never more than the rate over the run plus the bucket (2 s).
    let allowed = rate as usize / 8 * frames as usize / 10 + rate as usize / 8 * 2;
    assert!(total <= allowed, "{total} bytes > {allowed}");
}

#[test]
fn keyframes_on_interval_and_request() {
    let mut m = model();
    let mut enc = StreamEncoder::new(StreamConfig {
        keyframe_interval: 4,
        ..Default::default()
    })
    .unwrap();
    let mut kinds = Vec::new();
    for t in 0..9 {
        if t == 6 {
            enc.force_keyframe();
        }
        kinds.push(enc.encode(&mut m, &scene(96, 64, t)).unwrap().kind);
    }
    let intra: Vec<usize> = kinds
        .iter()
        .enumerate()
        .filter(|(_, k)| **k == FrameKind::Intra)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(intra, vec![0, 4, 6], "{kinds:?}");
}

/// The committed inter packet (examples/make_golden_inter.rs): this build encodes the same
/// bytes from the committed inputs and decodes it to the same state (stability of the inter
/// format, its contexts and the prior across versions and machines).
#[test]
fn golden_inter_packet() {
    let dir = common::repo().join("tests/data/golden-inter");
    let golden =
        std::fs::read(dir.join("packet.uigc")).expect("tests/data/golden-inter/packet.uigc");
    let j: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("inputs.json")).unwrap()).unwrap();
    let u = |k: &str| j[k].as_u64().unwrap() as usize;
    let list = |k: &str| -> Vec<i64> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect()
    };
    let flags = |k: &str| -> Vec<bool> {
        j[k].as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_bool().unwrap())
            .collect()
    };
    let planes = |k: &str| -> [Vec<i32>; 3] {
        std::array::from_fn(|p| {
            j[k][p]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_i64().unwrap() as i32)
                .collect()
        })
    };
    let (rows, cols) = (u("rows"), u("cols"));
    let grid = |k: &str| TokenGrid::new(rows, cols, list(k).iter().map(|&t| t as u16).collect());
    let params = ColourParams::default();
    let (cr, cc) = params.grid(u("width") as u32, u("height") as u32);
    let thumb = |k: &str| ColourThumb {
        params,
        rows: cr,
        cols: cc,
        planes: planes(k),
    };
    let reference = Reference::intra(
        u("reference_frame") as u32,
        u("width") as u32,
        u("height") as u32,
        grid("reference"),
        Some(thumb("colour_reference")),
    );
    let (tokens, changed, colour_new) = (grid("tokens"), flags("changed"), thumb("colour_new"));
    let band = list("band");
    let frame = InterFrame {
        tokens: &tokens,
        changed: &changed,
        band: (band[0] as usize, band[1] as usize),
        colour: Some(&colour_new),
        colour_changed: &flags("colour_changed"),
    };
    let mut c = codec_with_threads(2);
    let (p, state) = c
        .encode_inter(&reference, &frame, u("stream_id") as u32, u("frame") as u32)
        .unwrap();
    assert_eq!(p.bytes, golden, "inter packet bytes changed");
    let d = c.decode_inter(&golden, &reference, false).unwrap();
    assert_eq!(d.reference, state);
}

/// A receiver that is behind applies packets without their pictures (`advance`) and stays
/// exact: its state follows the sender's, and the picture it renders at the end is the one a
/// receiver that rendered every frame shows (both render whole pictures here), also when the
/// next packet changes nothing.
#[test]
fn advance_skips_pictures_and_stays_exact() {
    let mut m = model();
    let mut enc = StreamEncoder::new(StreamConfig {
        refresh_frames: 4,
        keyframe_interval: 6,
        ..Default::default()
    })
    .unwrap();
    let full = || {
        StreamDecoder::with_render(codec::render::RenderPolicy {
            mode: codec::RenderMode::Full,
            ..Default::default()
        })
    };
    let (mut every, mut behind) = (full(), full());
    // Frames 7 and 8 repeat frame 6: no change, the picture must still be frame 6's.
    for t in 0..9 {
        let p = enc.encode(&mut m, &scene(160, 128, t.min(6))).unwrap();
        let a = every.decode(&mut m, &p.packet.bytes).unwrap();
        // Frame 0 rendered, frames 1..=6 (a keyframe at 6 among them) applied without pictures,
        // then rendered again.
        if (1..7).contains(&t) {
            let status = behind.advance(&mut m, &p.packet.bytes).unwrap();
            assert_eq!(status, FrameStatus::Exact, "frame {t}");
        } else {
            let b = behind.decode(&mut m, &p.packet.bytes).unwrap();
            assert_eq!(b.status, FrameStatus::Exact, "frame {t}");
            assert!(
                a.image == b.image,
                "frame {t}: the picture after skipped ones differs"
            );
        }
        assert_eq!(behind.reference(), enc.reference(), "frame {t}");
    }
    assert_eq!(behind.stats().exact, 9);
}

/// A receiver saved with `state()` and restored with `from_state()` at any packet goes on with
/// the stream exactly as the one that was never interrupted (same reference, status and
/// counters), also while recovering from a loss; a malformed state is an error, not a panic.
#[test]
fn decoder_state_restored_mid_stream_goes_on_exactly() {
    let mut m = model();
    let codebook = m.bundle().codebook_size;
    let mut enc = StreamEncoder::new(StreamConfig {
        refresh_frames: 3,
        ..Default::default()
    })
    .unwrap();
    let packets: Vec<Vec<u8>> = (0..10)
        .map(|t| enc.encode(&mut m, &scene(128, 96, t)).unwrap().packet.bytes)
        .collect();
    // Packet 3 is lost on the link: the receiver conceals, then recovers with the refresh.
    let received: Vec<&Vec<u8>> = packets
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, p)| p)
        .collect();
    let mut whole = StreamDecoder::new();
    let expected: Vec<_> = received
        .iter()
        .map(|p| {
            let f = whole.decode(&mut m, p).map(|f| f.status);
            (f.ok(), whole.reference().cloned(), whole.stats())
        })
        .collect();
    assert!(
        expected
            .iter()
            .any(|(s, _, _)| *s != Some(FrameStatus::Exact)),
        "the loss shows"
    );
    assert_eq!(expected.last().unwrap().0, Some(FrameStatus::Exact));
    for cut in 0..=received.len() {
        let mut dec = StreamDecoder::new();
        for p in &received[..cut] {
            let _ = dec.decode(&mut m, p);
        }
        let state = dec.state();
        let mut dec = StreamDecoder::from_state(&state, codebook).unwrap();
        assert_eq!(dec.state(), state, "cut {cut}: state round trip");
        for (i, p) in received.iter().enumerate().skip(cut) {
            let got = dec.decode(&mut m, p).map(|f| f.status).ok();
            let (status, reference, stats) = &expected[i];
            assert_eq!(&got, status, "cut {cut}, packet {i}");
            assert_eq!(dec.reference(), reference.as_ref(), "cut {cut}, packet {i}");
            assert_eq!(&dec.stats(), stats, "cut {cut}, packet {i}");
        }
    }
    // Malformed states: every truncation, a token outside the codebook, trailing bytes.
    let mut dec = StreamDecoder::new();
    for p in &received[..4] {
        let _ = dec.decode(&mut m, p);
    }
    let state = dec.state();
    for n in 0..state.len() {
        assert!(
            StreamDecoder::from_state(&state[..n], codebook).is_err(),
            "{n} bytes"
        );
    }
    let mut longer = state.clone();
    longer.push(0);
    assert!(StreamDecoder::from_state(&longer, codebook).is_err());
    // The first token (after magic, flags, exact rows, counters, the reference flag, 5 u32).
    let mut bad = state.clone();
    let t = 8 + 1 + 4 + 32 + 1 + 20;
    bad[t..t + 2].copy_from_slice(&u16::MAX.to_le_bytes());
    assert!(StreamDecoder::from_state(&bad, codebook).is_err());
    assert!(StreamDecoder::from_state(&state, codebook).is_ok());
}
