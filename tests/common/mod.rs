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

/// True under CI (`CI` set to anything but empty, `0` or `false`; CI systems set `CI=true`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// Something a test needs (data, a model, a tool) is missing. Under CI that is a failure: this
/// panics with `what`. Elsewhere the test does less: a loud `SKIP` line goes straight to stderr
/// (past the test harness's capture, so `cargo test` shows it without `--nocapture`) and, when
/// `UIGC_SKIP_LOG` names a file, is appended to it (deploy/test.sh prints that file in its
/// summary). The caller returns after this.
pub fn skip_or_fail(test: &str, what: &str) {
    if ci() {
        panic!("{test}: {what} (CI is set: a missing prerequisite is a failure, not a skip)");
    }
    let line = format!("SKIP {test}: {what}");
    {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), "\n*** {line} ***");
    }
    if let Some(log) = std::env::var_os("UIGC_SKIP_LOG") {
        use std::io::Write as _;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

/// The shared data directory, `../shared/data` next to the checkout.
pub fn shared_data() -> PathBuf {
    repo().join("../shared/data")
}

/// ../shared/data/kodak with all 24 images, or None after [`skip_or_fail`] (a failure under CI).
pub fn kodak_dir(test: &str) -> Option<PathBuf> {
    let d = shared_data().join("kodak");
    let missing: Vec<String> = (1..=24)
        .map(|i| format!("kodim{i:02}.png"))
        .filter(|f| !d.join(f).is_file())
        .collect();
    if missing.is_empty() {
        return Some(d);
    }
    let what = if d.is_dir() {
        format!(
            "the Kodak set is incomplete: {} lacks {}",
            d.display(),
            missing.join(", ")
        )
    } else {
        format!(
            "the Kodak set {} is absent (the shared data set ../shared/data is not next to this \
             checkout)",
            d.display()
        )
    };
    skip_or_fail(test, &what);
    None
}

/// A file of the shared data set (e.g. `video/vtest.avi`), or None after [`skip_or_fail`].
pub fn shared_file(test: &str, rel: &str) -> Option<PathBuf> {
    let p = shared_data().join(rel);
    if p.is_file() {
        Some(p)
    } else {
        skip_or_fail(
            test,
            &format!("{} is absent (the shared data set)", p.display()),
        );
        None
    }
}

/// The shipped default model, or None after [`skip_or_fail`] (it is part of the repository:
/// absent means a broken checkout, e.g. Git LFS files not fetched).
pub fn shipped_model_or_skip(test: &str) -> Option<PathBuf> {
    let d = shipped_model_dir();
    if d.is_none() {
        skip_or_fail(
            test,
            &format!(
                "{} is absent (the shipped model bundle)",
                repo().join("models/uigc-small/manifest.toml").display()
            ),
        );
    }
    d
}

/// True when `tool` runs (`tool --version`); otherwise [`skip_or_fail`] and false.
pub fn have_tool(test: &str, tool: &str, package: &str) -> bool {
    let ok = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        skip_or_fail(
            test,
            &format!("the tool `{tool}` does not run (install {package}: deploy/setup.sh)"),
        );
    }
    ok
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

/// The packets of `frames` frames of one device (64x48 synthetic frames with a moving block, a
/// refresh cycle of 4 frames: mostly inter packets), for the gateway tests.
pub fn device_packets(stream_id: u32, frames: u32) -> Vec<Vec<u8>> {
    let mut model = load(&tiny_model_dir());
    let mut enc = gstuigc::codec::StreamEncoder::new(gstuigc::codec::StreamConfig {
        stream_id,
        refresh_frames: 4,
        ..Default::default()
    })
    .unwrap();
    let base = synthetic(64, 48, stream_id);
    (0..frames)
        .map(|f| {
            let mut img = base.clone();
            let x0 = (f * 8) % 48;
            for y in 16..32 {
                for x in x0..x0 + 16 {
                    let i = ((y * 64 + x) * 3) as usize;
                    img.data[i..i + 3].copy_from_slice(&[250, 30, 30]);
                }
            }
            enc.encode(&mut model, &img).unwrap().packet.bytes
        })
        .collect()
}

/// GStreamer initialised and the uigc plugin registered statically, once per test binary.
pub fn gst_init() {
    static INIT: std::sync::Once = std::sync::Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstuigc::plugin_register_static().expect("registering the uigc plugin");
    });
}

/// The `model=` property naming the tiny test model, for gst-launch descriptions.
pub fn tiny_model_prop() -> String {
    format!("model={}", tiny_model_dir().display())
}

/// A copy of the bundle `src` in a fresh temporary folder (named after `tag`) without the
/// manifest table `[section]` and its file: every other file the manifest names is copied.
/// Returns the folder and the original manifest text (write it back to list the section again).
pub fn bundle_copy_without(src: &Path, tag: &str, section: &str) -> (PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("uigc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = std::fs::read_to_string(src.join("manifest.toml")).unwrap();
    let start = manifest
        .find(&format!("[{section}]"))
        .unwrap_or_else(|| panic!("{} has no [{section}]", src.display()));
    let end = start + manifest[start..].find("\n\n").unwrap() + 2;
    for line in manifest[..start].lines().chain(manifest[end..].lines()) {
        if let Some(file) = line.strip_prefix("path = ") {
            let file = file.trim_matches('"');
            std::fs::copy(src.join(file), dir.join(file)).unwrap();
        }
    }
    let without = format!("{}{}", &manifest[..start], &manifest[end..]);
    std::fs::write(dir.join("manifest.toml"), without).unwrap();
    (dir, manifest)
}

/// PSNR (dB) between two pictures of the same size (8-bit levels).
pub fn psnr(a: &RgbImage, b: &RgbImage) -> f64 {
    assert_eq!((a.width, a.height), (b.width, b.height));
    let se: f64 = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    10.0 * (255.0f64.powi(2) * a.data.len() as f64 / se.max(1e-9)).log10()
}

/// The largest difference of two pictures' 8-bit levels.
pub fn max_abs_diff(a: &RgbImage, b: &RgbImage) -> i32 {
    a.data
        .iter()
        .zip(&b.data)
        .map(|(&x, &y)| (x as i32 - y as i32).abs())
        .max()
        .unwrap_or(0)
}

/// Token indices of a golden vector file (raw little-endian int64, `indices.i64le`).
pub fn read_golden_indices(path: &Path) -> Vec<u16> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u16)
        .collect()
}
