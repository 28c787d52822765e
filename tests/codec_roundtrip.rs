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
/// from Rust: identical indices, decoded image within float tolerance.
#[test]
fn tokenizer_golden_vectors() {
    let mut dirs = vec![tiny_model_dir(), tiny_model_b_dir(), tiny_model_k4_dir()];
    dirs.extend(shipped_model_or_skip("tokenizer_golden_vectors"));
    for dir in dirs {
        let golden = dir.join("golden");
        let meta: serde_json_lite::Meta = serde_json_lite::read(&golden.join("golden.json"));
        let mut model = load(&dir);
        let img = read_png(&golden.join(&meta.input));
        let grid = model.tokenize(&img).unwrap();
        let want: Vec<u16> = std::fs::read(golden.join(&meta.indices))
            .unwrap()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u16)
            .collect();
        assert_eq!(grid.tokens, want, "{}: indices", dir.display());
        let want_png = read_png(&golden.join(&meta.decoded_png));
        let got = model.detokenize(&grid, img.width, img.height).unwrap();
        let max_diff = got
            .data
            .iter()
            .zip(&want_png.data)
            .map(|(&a, &b)| (a as i32 - b as i32).abs())
            .max()
            .unwrap();
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

fn golden_grid() -> TokenGrid {
    // A fixed 13x21 grid (a 330x200 frame) with structure, K = 16.
    let (rows, cols) = (13, 21);
    let tokens = (0..rows * cols)
        .map(|i| (((i / cols) * 3 + (i % cols) * (i % 5)) % 16) as u16)
        .collect();
    TokenGrid::new(rows, cols, tokens)
}

/// A committed packet decodes to its committed token grid, and encoding that grid again
/// gives the same bytes. Regenerate (only on a deliberate format change) with
/// `UIGC_REGEN_GOLDEN=1 cargo test --test codec_roundtrip golden_packet`.
#[test]
fn golden_packet() {
    let bundle = Bundle::load(tiny_model_dir()).unwrap();
    let mut codec = token_codec(&bundle).unwrap();
    let grid = golden_grid();
    let params = FrameParams {
        stream_id: 42,
        frame: 1234,
        ..Default::default()
    };
    let packet_path = golden_dir().join("packet.uigc");
    let tokens_path = golden_dir().join("tokens.u16le");
    if std::env::var_os("UIGC_REGEN_GOLDEN").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        let enc = codec.encode(&grid, 330, 200, params).unwrap();
        std::fs::write(&packet_path, &enc.bytes).unwrap();
        let raw: Vec<u8> = grid.tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
        std::fs::write(&tokens_path, raw).unwrap();
    }
    let packet = std::fs::read(&packet_path).expect("committed golden packet");
    let tokens: Vec<u16> = std::fs::read(&tokens_path)
        .unwrap()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let dec = codec.decode(&packet).unwrap();
    assert_eq!(dec.grid.tokens, tokens);
    assert_eq!((dec.header.width, dec.header.height), (330, 200));
    assert_eq!((dec.header.stream_id, dec.header.frame), (42, 1234));
    let again = codec.encode(&dec.grid, 330, 200, params).unwrap();
    assert_eq!(
        again.bytes, packet,
        "encoder output changed: the format is not stable"
    );
}

/// The same for the integer prior with dropped stages and adaptive tokens: pins the prior, the
/// mask coding and the packet layout. Regenerate like `golden_packet`.
#[test]
fn golden_packet_integer_prior_adaptive() {
    let bundle = Bundle::load(repo().join("tests/data/tiny-model-int")).unwrap();
    let mut codec = token_codec(&bundle).unwrap();
    let grid = golden_grid();
    let params = FrameParams {
        stream_id: 7,
        frame: 99,
        stages: Some(4),
        extra: 9,
        ..Default::default()
    };
    let packet_path = golden_dir().join("packet-int-adaptive.uigc");
    let grid_path = golden_dir().join("tokens-int-adaptive-argmax.u16le");
    if std::env::var_os("UIGC_REGEN_GOLDEN").is_some() {
        let enc = codec.encode(&grid, 330, 200, params).unwrap();
        assert_eq!(enc.extra_tokens, 9);
        std::fs::write(&packet_path, &enc.bytes).unwrap();
        let dec = codec.decode(&enc.bytes).unwrap();
        let raw: Vec<u8> = dec
            .grid
            .tokens
            .iter()
            .flat_map(|t| t.to_le_bytes())
            .collect();
        std::fs::write(&grid_path, raw).unwrap();
    }
    let packet = std::fs::read(&packet_path).expect("committed golden packet");
    let want: Vec<u16> = std::fs::read(&grid_path)
        .unwrap()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let dec = codec.decode(&packet).unwrap();
    assert_eq!(dec.grid.tokens, want, "decoded + regenerated grid changed");
    assert_eq!(codec.encode(&grid, 330, 200, params).unwrap().bytes, packet);
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
