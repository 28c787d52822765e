//! Writes the seed corpus of the fuzz targets (fuzz/seeds/, see fuzz/README.md): real packets
//! from the golden files and from short streams of the tiny test model and the shipped model.
//! Run by hand (the fuzz runs only read the seeds); needs ONNX Runtime for the streams:
//!
//! ```sh
//! cargo run --example make_fuzz_seeds
//! ```
//!
//! Formats: `parse_packet` seeds are single packets; `token_decode` and `full_decode` seeds are packet sequences,
//! each packet as a u16 little-endian length prefix (bit 15 set: decode it as a receiver that is
//! recovering, `clean_only`; bit 14 set: keep the packet check as it is, else the harness
//! recomputes it) followed by the packet (fuzz/src/lib.rs, `chunks`).

use std::path::{Path, PathBuf};

use gstuigc::codec::{Model, RgbImage, RuntimeOptions, StreamConfig, StreamEncoder};

/// A frame with a gradient background and a square that moves `t` blocks to the right.
fn frame(width: u32, height: u32, t: u32, seed: u32) -> RgbImage {
    let mut data = Vec::with_capacity((width * height * 3) as usize);
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    for y in 0..height {
        for x in 0..width {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let inside = (8 + t * 12..40 + t * 12).contains(&x) && (10..42).contains(&y);
            let n = (s % 8) as u8;
            if inside {
                data.extend_from_slice(&[230, 40 + n, 30]);
            } else {
                data.push((x * 200 / width) as u8 + n);
                data.push((y * 200 / height) as u8 + n);
                data.push(((x + y + seed) % 128) as u8);
            }
        }
    }
    RgbImage::new(width, height, data).unwrap()
}

/// The packets of a short stream: one intra, then inter packets with a refresh band.
fn stream(model: &mut Model, width: u32, height: u32, frames: u32, seed: u32) -> Vec<Vec<u8>> {
    let mut enc = StreamEncoder::new(StreamConfig {
        stream_id: seed,
        refresh_frames: 3,
        change_threshold: 1.0,
        ..StreamConfig::default()
    })
    .unwrap();
    (0..frames)
        .map(|t| {
            enc.encode(model, &frame(width, height, t, seed))
                .unwrap()
                .packet
                .bytes
        })
        .collect()
}

fn chunked(packets: &[(&[u8], bool)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (p, clean_only) in packets {
        let len = u16::try_from(p.len()).unwrap();
        assert!(len < 0x4000);
        let word = len | if *clean_only { 0x8000 } else { 0 };
        out.extend_from_slice(&word.to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
    println!("{} ({} bytes)", dir.join(name).display(), bytes.len());
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let seeds = repo.join("fuzz/seeds");
    let read = |p: &str| std::fs::read(repo.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let golden = [
        ("golden-intra", read("tests/data/golden-packet/packet.uigc")),
        (
            "golden-intra-int-adaptive",
            read("tests/data/golden-packet/packet-int-adaptive.uigc"),
        ),
        ("golden-inter", read("tests/data/golden-inter/packet.uigc")),
    ];
    let opts = RuntimeOptions {
        threads: 1,
        ..RuntimeOptions::default()
    };
    let mut tiny = Model::load(repo.join("tests/data/tiny-model"), &opts).unwrap();
    let mut shipped = Model::load(repo.join("models/uigc-small"), &opts).unwrap();
    let tiny_a = stream(&mut tiny, 96, 64, 5, 1);
    let tiny_b = stream(&mut tiny, 130, 50, 4, 2);
    let ship = stream(&mut shipped, 80, 48, 4, 3);

    for (name, p) in &golden {
        write(&seeds.join("parse_packet"), &format!("{name}.uigc"), p);
        write(&seeds.join("token_decode"), name, &chunked(&[(p, false)]));
    }
    for (i, p) in tiny_a.iter().chain(&ship).enumerate() {
        write(&seeds.join("parse_packet"), &format!("stream-{i}.uigc"), p);
    }
    let all = |s: &[Vec<u8>]| -> Vec<u8> {
        chunked(&s.iter().map(|p| (p.as_slice(), false)).collect::<Vec<_>>())
    };
    // A receiver that lost packet 1 and recovers from the refresh bands after it.
    let lossy = |s: &[Vec<u8>]| -> Vec<u8> {
        let mut v = vec![(s[0].as_slice(), false)];
        v.extend(s[2..].iter().map(|p| (p.as_slice(), true)));
        chunked(&v)
    };
    for (name, s) in [("tiny-a", &tiny_a), ("tiny-b", &tiny_b), ("shipped", &ship)] {
        write(
            &seeds.join("token_decode"),
            &format!("{name}-stream"),
            &all(s),
        );
        write(
            &seeds.join("token_decode"),
            &format!("{name}-lossy"),
            &lossy(s),
        );
    }
    write(
        &seeds.join("full_decode"),
        "golden-intra",
        &chunked(&[(&golden[0].1, false)]),
    );
    for (name, s) in [("tiny-a", &tiny_a), ("tiny-b", &tiny_b)] {
        write(
            &seeds.join("full_decode"),
            &format!("{name}-stream"),
            &all(s),
        );
        write(
            &seeds.join("full_decode"),
            &format!("{name}-lossy"),
            &lossy(s),
        );
        // Joining late: the inter packets only.
        write(
            &seeds.join("full_decode"),
            &format!("{name}-join"),
            &all(&s[1..]),
        );
    }
    // Two streams interleaved, then a size change.
    let mixed: Vec<Vec<u8>> = tiny_a
        .iter()
        .zip(&tiny_b)
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    write(&seeds.join("full_decode"), "tiny-mixed", &all(&mixed));
}
