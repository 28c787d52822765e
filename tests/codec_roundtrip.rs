//! Round trips through the real ONNX tokenizer and the range coder, golden vectors of the
//! tokenizer contract, and the golden packet (format stability).

mod common;

use common::*;
use gstuigc::codec::{token_codec, Bundle, FrameParams, TokenGrid};

#[test]
fn all_stages_round_trip_for_many_sizes() {
    let mut model = load(&tiny_model_dir());
    for (i, (w, h)) in [
        (1, 1),
        (17, 33),
        (33, 17),
        (768, 512),
        (512, 768),
        (1920, 1080),
    ]
    .into_iter()
    .enumerate()
    {
        let img = synthetic(w, h, i as u32);
        let params = FrameParams {
            stream_id: 7,
            frame: i as u32,
            ..Default::default()
        };
        let enc = model.encode(&img, params).unwrap();
        assert_eq!(
            (enc.tokens.rows, enc.tokens.cols),
            (h.div_ceil(16) as usize, w.div_ceil(16) as usize)
        );
        let dec = model.decode(&enc.packet.bytes).unwrap();
        assert_eq!(
            dec.tokens.grid, enc.tokens,
            "{w}x{h}: decoded grid == encoded grid"
        );
        assert!(dec.tokens.coded.iter().all(|&c| c));
        assert_eq!((dec.image.width, dec.image.height), (w, h));
        assert_eq!(dec.tokens.header.stream_id, 7);
        assert_eq!(dec.tokens.header.frame, i as u32);
        // The decoder's image is what the tokenizer gives for those tokens.
        let again = model.detokenize(&enc.tokens, w, h).unwrap();
        assert_eq!(again, dec.image);
    }
}

#[test]
fn fewer_stages_decode_with_regenerated_tokens() {
    let mut model = load(&tiny_model_dir());
    let img = synthetic(256, 128, 3);
    for stages in 0..=10 {
        let params = FrameParams {
            stages: Some(stages),
            ..Default::default()
        };
        let enc = model.encode(&img, params).unwrap();
        let dec = model.decode(&enc.packet.bytes).unwrap();
        let coded = dec.tokens.coded.iter().filter(|&&c| c).count();
        assert_eq!(coded, enc.packet.coded_tokens);
        for (i, &c) in dec.tokens.coded.iter().enumerate() {
            if c {
                assert_eq!(dec.tokens.grid.tokens[i], enc.tokens.tokens[i]);
            }
        }
    }
    let too_many = FrameParams {
        stages: Some(11),
        ..Default::default()
    };
    assert!(model.encode(&img, too_many).is_err());
}

/// The tokenizer golden vectors written by the Python exporter, checked through ONNX Runtime
/// from Rust: identical indices, decoded image within float tolerance (the model's float
/// decoder: the golden picture is its output, the fast decoder's is tested in fast_encoder.rs).
#[test]
fn tokenizer_golden_vectors() {
    let mut dirs = vec![tiny_model_dir(), tiny_model_b_dir(), tiny_model_k4_dir()];
    dirs.extend(shipped_model_or_skip("tokenizer_golden_vectors"));
    for dir in dirs {
        let golden = dir.join("golden");
        let meta: serde_json_lite::Meta = serde_json_lite::read(&golden.join("golden.json"));
        let mut model = gstuigc::codec::Model::load(
            &dir,
            &gstuigc::codec::RuntimeOptions {
                decoder: gstuigc::codec::DecoderChoice::Full,
                ..Default::default()
            },
        )
        .unwrap();
        let img = read_png(&golden.join(&meta.input));
        let grid = model.tokenize(&img).unwrap();
        let want = read_golden_indices(&golden.join(&meta.indices));
        assert_eq!(grid.tokens, want, "{}: indices", dir.display());
        let want_png = read_png(&golden.join(&meta.decoded_png));
        let got = model.detokenize(&grid, img.width, img.height).unwrap();
        let max_diff = max_abs_diff(&got, &want_png);
        assert!(
            max_diff <= 1,
            "{}: decoded image differs by {max_diff}",
            dir.display()
        );
    }
}

/// Minimal reader of the two fields the golden test needs (no JSON dependency for tests).
mod serde_json_lite {
    pub struct Meta {
        pub input: String,
        pub indices: String,
        pub decoded_png: String,
    }
    fn field(text: &str, key: &str) -> String {
        let at = text
            .find(&format!("\"{key}\""))
            .unwrap_or_else(|| panic!("golden.json lacks {key}"));
        let rest = &text[at + key.len() + 2..];
        let start = rest.find('"').unwrap() + 1;
        let end = start + rest[start..].find('"').unwrap();
        rest[start..end].to_owned()
    }
    pub fn read(path: &std::path::Path) -> Meta {
        let text = std::fs::read_to_string(path).unwrap();
        Meta {
            input: field(&text, "input"),
            indices: field(&text, "indices"),
            decoded_png: field(&text, "decoded_png"),
        }
    }
}

fn golden_dir() -> std::path::PathBuf {
    repo().join("tests/data/golden-packet")
}

fn read_u16(path: &std::path::Path) -> Vec<u16> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// The committed input grid of both golden packets (models/make_golden_packets.py writes it from
/// this formula: a 13x21 grid, a 330x200 frame, K = 16).
fn golden_grid() -> TokenGrid {
    let (rows, cols) = (13, 21);
    let tokens = read_u16(&golden_dir().join("tokens.u16le"));
    let formula: Vec<u16> = (0..rows * cols)
        .map(|i| (((i / cols) * 3 + (i % cols) * (i % 5)) % 16) as u16)
        .collect();
    assert_eq!(tokens, formula, "tokens.u16le is not the documented grid");
    TokenGrid::new(rows, cols, tokens)
}

// --- docs/bitstream.md, transcribed by hand (no codec code) ----------------------------------

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320, init and final XOR 0xFFFFFFFF), bit by
/// bit.
fn crc32_ieee(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Unsigned LEB128.
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

/// The stage of grid position (r, c) with `levels` levels: 0 on the lattice of step 2^levels,
/// then per level l = levels..1 (step s = 2^l, half h) odd/odd, odd/even, even/odd.
fn stage_of(r: usize, c: usize, levels: u32) -> usize {
    if r.is_multiple_of(1 << levels) && c.is_multiple_of(1 << levels) {
        return 0;
    }
    for (n, l) in (1..=levels).rev().enumerate() {
        let (s, h) = (1usize << l, 1usize << (l - 1));
        let base = 1 + 3 * n;
        if r % s == h && c % s == h {
            return base;
        }
        if r % s == h && c.is_multiple_of(s) {
            return base + 1;
        }
        if r.is_multiple_of(s) && c % s == h {
            return base + 2;
        }
    }
    unreachable!("({r}, {c}) has no stage")
}

/// Raster indices of the positions of `stage`, in raster order.
fn stage_positions(rows: usize, cols: usize, stage: usize) -> Vec<usize> {
    (0..rows * cols)
        .filter(|&i| stage_of(i / cols, i % cols, 3) == stage)
        .collect()
}

/// model_id (docs/bundle.md): the first 4 bytes of SHA-256 over the manifest's identity text.
fn model_id_by_hand(dir: &std::path::Path) -> [u8; 4] {
    use sha2::Digest;
    let m: toml::Table = std::fs::read_to_string(dir.join("manifest.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let sha = |t: &str| m[t]["sha256"].as_str().unwrap().to_owned();
    let floats = |k: &str| {
        let v: Vec<String> = m["pixels"][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| format!("{:?}", x.as_float().unwrap() as f32))
            .collect();
        format!("[{}]", v.join(", "))
    };
    let text = format!(
        "uigc-model\n{}\n{}\n{}:{}\n{}\n{}\n{}\n{}\n{}:{}\n",
        m["codebook_size"].as_integer().unwrap(),
        m["downsample"].as_integer().unwrap(),
        m["schedule"]["kind"].as_str().unwrap(),
        m["schedule"]["levels"].as_integer().unwrap(),
        floats("mean"),
        floats("std"),
        sha("tokenizer_encoder"),
        sha("tokenizer_decoder"),
        m["prior"]["kind"].as_str().unwrap(),
        sha("prior"),
    );
    sha2::Sha256::digest(text.as_bytes())[..4]
        .try_into()
        .unwrap()
}

/// The header of a 330x200 packet of version 2 with no colour thumbnail, up to and including its
/// check value: CRC-32 over the header bytes before it and then `coded` (each token u16 LE),
/// low 16 bits, little-endian. The packet check follows (see [`packet_check_by_hand`]).
fn header_by_hand(
    model: &std::path::Path,
    flags: u8,
    stream_id: u32,
    frame: u32,
    stages: u8,
    coded: &[u16],
) -> Vec<u8> {
    let mut h = vec![0x55, 0x20 | flags];
    h.extend(model_id_by_hand(model));
    varint(stream_id, &mut h);
    varint(frame, &mut h);
    varint(330 - 1, &mut h);
    varint(200 - 1, &mut h);
    h.push(stages);
    let mut covered = h.clone();
    covered.extend(coded.iter().flat_map(|t| t.to_le_bytes()));
    let check = (crc32_ieee(&covered) & 0xffff) as u16;
    h.extend(check.to_le_bytes());
    h
}

/// The packet check of version 2 at `at` (right after the check values): CRC-32 over every
/// other byte of the packet, low 16 bits, little-endian.
fn packet_check_by_hand(packet: &[u8], at: usize) {
    let mut covered = packet[..at].to_vec();
    covered.extend_from_slice(&packet[at + 2..]);
    let want = (crc32_ieee(&covered) & 0xffff) as u16;
    assert_eq!(
        u16::from_le_bytes([packet[at], packet[at + 1]]),
        want,
        "packet check is not docs/bitstream.md's"
    );
}

#[test]
fn hand_written_crc_matches_known_vectors() {
    assert_eq!(crc32_ieee(b""), 0);
    assert_eq!(crc32_ieee(b"123456789"), 0xcbf4_3926);
    assert_eq!(stage_positions(8, 8, 0), vec![0]);
    assert_eq!(stage_positions(8, 8, 1), vec![4 * 8 + 4]);
    assert_eq!(stage_positions(2, 2, 10 - 1), vec![1]);
}

/// Every packet the tiny model writes for the golden grid starts with the header of
/// docs/bitstream.md built by hand, check value included (the CRC over the header and the tokens
/// in coding order: stage by stage, raster order within a stage). Then the committed packet
/// decodes to the committed grid, and encoding that grid again gives the same bytes.
#[test]
fn golden_packet() {
    let model = tiny_model_dir();
    let bundle = Bundle::load(&model).unwrap();
    let mut codec = token_codec(&bundle).unwrap();
    let grid = golden_grid();
    let params = FrameParams {
        stream_id: 42,
        frame: 1234,
        ..Default::default()
    };
    let coding_order: Vec<u16> = (0..10)
        .flat_map(|s| stage_positions(13, 21, s))
        .map(|i| grid.tokens[i])
        .collect();
    let header = header_by_hand(&model, 0, 42, 1234, 10, &coding_order);
    let fresh = codec.encode(&grid, 330, 200, params).unwrap().bytes;
    assert_eq!(
        fresh[..header.len()],
        header[..],
        "the encoder's header is not docs/bitstream.md's"
    );
    let packet = std::fs::read(golden_dir().join("packet.uigc")).expect("committed golden packet");
    assert_eq!(
        packet[..header.len()],
        header[..],
        "committed packet header"
    );
    packet_check_by_hand(&packet, header.len());
    let dec = codec.decode(&packet).unwrap();
    assert_eq!(dec.grid, grid);
    assert_eq!((dec.header.width, dec.header.height), (330, 200));
    assert_eq!((dec.header.stream_id, dec.header.frame), (42, 1234));
    assert_eq!(
        fresh, packet,
        "encoder output changed: the format is not stable"
    );
}

/// The integer prior with dropped stages and adaptive tokens: the committed packet decodes to
/// the grid the Python integer reference computed (models/make_golden_packets.py: argmax
/// regeneration, adaptive tokens chosen by the documented rule), its header and check value are
/// docs/bitstream.md's (tokens of stages 0-3, then the adaptive tokens of stage 4 in raster
/// order), and encoding the grid again gives the same bytes. Pins the prior, the mask coding,
/// the regeneration and the packet layout.
#[test]
fn golden_packet_integer_prior_adaptive() {
    let model = repo().join("tests/data/tiny-model-int");
    let bundle = Bundle::load(&model).unwrap();
    let mut codec = token_codec(&bundle).unwrap();
    let grid = golden_grid();
    let params = FrameParams {
        stream_id: 7,
        frame: 99,
        stages: Some(4),
        extra: 9,
        ..Default::default()
    };
    let want = read_u16(&golden_dir().join("tokens-int-adaptive-argmax.u16le"));
    let packet = std::fs::read(golden_dir().join("packet-int-adaptive.uigc"))
        .expect("committed golden packet");
    let dec = codec.decode(&packet).unwrap();
    assert_eq!(
        dec.grid.tokens, want,
        "decoded + regenerated grid differs from the Python reference"
    );
    // The adaptive tokens: the stage-4 positions where the reference's grid kept the input.
    let stage4 = stage_positions(13, 21, 4);
    let extras: Vec<usize> = stage4.iter().copied().filter(|&i| dec.coded[i]).collect();
    assert_eq!(extras.len(), 9);
    let coding_order: Vec<u16> = (0..4)
        .flat_map(|s| stage_positions(13, 21, s))
        .chain(extras.iter().copied())
        .map(|i| grid.tokens[i])
        .collect();
    let header = header_by_hand(&model, 0x1, 7, 99, 4, &coding_order);
    let fresh = codec.encode(&grid, 330, 200, params).unwrap().bytes;
    assert_eq!(
        fresh[..header.len()],
        header[..],
        "the encoder's header is not docs/bitstream.md's"
    );
    packet_check_by_hand(&packet, header.len());
    assert_eq!(fresh, packet, "encoder output changed");
}

/// Dense packets: the frame resampled to twice its size, four tokens per 16x16 pixels; the
/// decoder halves its output back to the frame size.
#[test]
fn dense_packets_round_trip_at_the_frame_size() {
    use gstuigc::codec::Density;
    let mut model = load(&tiny_model_dir());
    for (w, h) in [(1, 1), (17, 33), (250, 130)] {
        let img = synthetic(w, h, 5);
        let enc = model
            .encode_auto(&img, FrameParams::default(), Density::Dense)
            .unwrap();
        assert!(enc.packet.header.dense());
        assert_eq!(
            (enc.tokens.rows, enc.tokens.cols),
            ((2 * h).div_ceil(16) as usize, (2 * w).div_ceil(16) as usize)
        );
        let dec = model.decode(&enc.packet.bytes).unwrap();
        assert_eq!(dec.tokens.grid, enc.tokens);
        assert_eq!((dec.image.width, dec.image.height), (w, h));
        let big = model.detokenize(&enc.tokens, 2 * w, 2 * h).unwrap();
        assert_eq!(big.downsample2x(), dec.image);
    }
    // A dense grid handed to the token codec as a normal one (or the reverse) is refused.
    let img = synthetic(64, 32, 1);
    let dense = model
        .encode_auto(&img, FrameParams::default(), Density::Dense)
        .unwrap();
    assert!(model
        .token_codec()
        .encode(&dense.tokens, 64, 32, FrameParams::default())
        .is_err());
}

/// `Density::Auto` goes dense only when the budget fits a dense packet with enough stages, and
/// never exceeds the budget.
#[test]
fn auto_density_under_a_budget() {
    use gstuigc::codec::{Density, DENSE_MIN_BUDGET_RATIO, DENSE_MIN_STAGES};
    let mut model = load(&tiny_model_dir());
    let img = synthetic(128, 96, 2);
    let normal = model.encode(&img, FrameParams::default()).unwrap();
    let dense = model
        .encode_auto(&img, FrameParams::default(), Density::Dense)
        .unwrap();
    assert!(dense.packet.bytes.len() > normal.packet.bytes.len());
    // No budget: normal.
    let auto = model
        .encode_auto(&img, FrameParams::default(), Density::Auto)
        .unwrap();
    assert!(!auto.packet.header.dense());
    for cap in [
        normal.packet.bytes.len(),
        dense.packet.bytes.len() - 1,
        dense.packet.bytes.len(),
        dense.packet.bytes.len() + 100,
        3 * normal.packet.bytes.len() + dense.packet.bytes.len(),
    ] {
        let params = FrameParams {
            max_bytes: Some(cap),
            ..Default::default()
        };
        let enc = model.encode_auto(&img, params, Density::Auto).unwrap();
        assert!(enc.packet.bytes.len() <= cap);
        let worth_trying = cap as f64 >= DENSE_MIN_BUDGET_RATIO * normal.packet.bytes.len() as f64;
        if cap >= dense.packet.bytes.len() && worth_trying {
            assert!(enc.packet.header.dense(), "cap {cap}");
        }
        if !worth_trying {
            assert!(!enc.packet.header.dense(), "cap {cap}");
        }
        if enc.packet.header.dense() {
            assert!(enc.packet.header.stages as usize >= DENSE_MIN_STAGES);
        } else {
            assert_eq!(enc.packet.header.stages, 10);
        }
        let dec = model.decode(&enc.packet.bytes).unwrap();
        assert_eq!((dec.image.width, dec.image.height), (128, 96));
    }
}

/// Dense packets are limited to frames of at most MAX_DIMENSION / 2 per side (the decoder works
/// at twice the size); auto density falls back to normal above that.
#[test]
fn dense_is_refused_for_frames_too_large_to_double() {
    use gstuigc::codec::{bitstream::MAX_DIMENSION, Density};
    let mut model = load(&tiny_model_dir());
    let img = synthetic(MAX_DIMENSION / 2 + 16, 16, 1);
    let err = model
        .encode_auto(&img, FrameParams::default(), Density::Dense)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at most 4096"), "{err}");
    let params = FrameParams {
        max_bytes: Some(1 << 20),
        ..Default::default()
    };
    let enc = model.encode_auto(&img, params, Density::Auto).unwrap();
    assert!(!enc.packet.header.dense());
}
