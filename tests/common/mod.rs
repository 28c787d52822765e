//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gstuigc::codec::{Error, Model, RgbImage, RuntimeOptions, TokenCodec};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model_dir() -> PathBuf {
    repo().join("tests/data/tiny-model")
}

pub fn tiny_model_b_dir() -> PathBuf {
    repo().join("tests/data/tiny-model-b")
}

/// A K=4 test bundle whose prior is nearly certain of token 0 (models/make_test_models.py).
pub fn tiny_model_k4_dir() -> PathBuf {
    repo().join("tests/data/tiny-model-k4")
}

/// The shipped default model, when it is in the tree.
pub fn shipped_model_dir() -> Option<PathBuf> {
    let d = repo().join("models/uigc-small");
    d.join("manifest.toml").is_file().then_some(d)
}

pub fn load(dir: &Path) -> Model {
    Model::load(dir, &RuntimeOptions::default())
        .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// ../shared/data/kodak, or None with a message saying why the test does less.
pub fn kodak_dir() -> Option<PathBuf> {
    let d = repo().join("../shared/data/kodak");
    if d.join("kodim01.png").is_file() {
        Some(d)
    } else {
        eprintln!(
            "SKIP: {} is absent (the shared data set is not next to this checkout)",
            d.display()
        );
        None
    }
}

pub fn read_png(path: &Path) -> RgbImage {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8();
    let (w, h) = img.dimensions();
    RgbImage::new(w, h, img.into_raw()).unwrap()
}

/// A deterministic synthetic photo-like frame (gradients + texture).
pub fn synthetic(width: u32, height: u32, seed: u32) -> RgbImage {
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    for y in 0..height {
        for x in 0..width {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let noise = s % 32;
            data.push(((x * 255 / width.max(1)) + noise).min(255) as u8);
            data.push(((y * 255 / height.max(1)) + noise).min(255) as u8);
            data.push((((x + y) * 7 + seed) % 256) as u8);
        }
    }
    RgbImage::new(width, height, data).unwrap()
}

/// Flips every bit of `packet` in turn: each flip is a packet error, except in the slack bits of
/// the coder's final word, where the flipped packet still identifies the same interval and decodes
/// to the very same frame (tokens, colour thumbnail, header). Fewer than 16 such flips.
pub fn assert_every_bit_flip_is_detected(c: &mut TokenCodec, packet: &[u8]) {
    let original = c.decode(packet).unwrap();
    let mut harmless = 0;
    for bit in 0..packet.len() * 8 {
        let mut q = packet.to_vec();
        q[bit / 8] ^= 1 << (bit % 8);
        match c.decode(&q) {
            Err(Error::Packet(_)) => {}
            Err(other) => panic!("bit {bit}: not a packet error: {other}"),
            Ok(d) => {
                assert_eq!(d.grid, original.grid, "bit {bit}: wrong frame shown");
                assert_eq!(d.colour, original.colour, "bit {bit}: wrong colours shown");
                assert_eq!(d.header, original.header, "bit {bit}: wrong header");
                assert!(
                    bit >= (packet.len() - 4) * 8,
                    "bit {bit} is not in the final word"
                );
                harmless += 1;
            }
        }
    }
    assert!(harmless < 16, "{harmless} flips went unnoticed");
}
