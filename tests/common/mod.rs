//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use gstuigc::codec::{Model, RgbImage, RuntimeOptions};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tiny_model_dir() -> PathBuf {
    repo().join("tests/data/tiny-model")
}

pub fn tiny_model_b_dir() -> PathBuf {
    repo().join("tests/data/tiny-model-b")
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
