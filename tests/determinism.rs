//! Concurrency and determinism (issue 15 item 6): the same frames give byte-identical packets
//! and pixel-identical decoded frames across runs, ONNX Runtime / prior thread counts (1 and 2),
//! encoder restarts (a fresh model, or the same model after another stream), and with several
//! encoders and decoders running at once in threads of one process. Shipped model (the tiny
//! one as well: its tokenizer is a plain ONNX graph, the shipped one a real network), 96x64
//! frames of a moving pattern, a stream of intra + inter packets with refresh bands.

mod common;

use std::path::{Path, PathBuf};

use gstuigc::codec::{Model, RgbImage, RuntimeOptions, StreamConfig, StreamDecoder, StreamEncoder};

const FRAMES: u32 = 8;

/// Packets of a clip and the pixels of its decoded frames.
type Run = (Vec<Vec<u8>>, Vec<Vec<u8>>);

/// Frame `t` of a clip: `common::synthetic` texture with a bright square moving 8 px a frame.
fn frame(t: u32, seed: u32) -> RgbImage {
    let mut img = common::synthetic(96, 64, seed);
    for y in 16..40u32 {
        for x in (8 * t)..(8 * t + 24).min(96) {
            let i = ((y * 96 + x) * 3) as usize;
            img.data[i..i + 3].copy_from_slice(&[240, 230, 40]);
        }
    }
    img
}

fn load(dir: &Path, threads: usize) -> Model {
    Model::load(
        dir,
        &RuntimeOptions {
            threads,
            ..RuntimeOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn config() -> StreamConfig {
    StreamConfig {
        refresh_frames: 4,
        change_threshold: 1.0,
        ..StreamConfig::default()
    }
}

/// Encodes the clip of `seed` with `model`: the packets.
fn encode(model: &mut Model, seed: u32) -> Vec<Vec<u8>> {
    let mut enc = StreamEncoder::new(config()).unwrap();
    (0..FRAMES)
        .map(|t| enc.encode(model, &frame(t, seed)).unwrap().packet.bytes)
        .collect()
}

/// Decodes `packets` with `model`: the pixels of every frame.
fn decode(model: &mut Model, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut dec = StreamDecoder::new();
    packets
        .iter()
        .map(|p| dec.decode(model, p).unwrap().image.data)
        .collect()
}

fn models() -> Vec<PathBuf> {
    let mut v = vec![common::tiny_model_dir()];
    if let Some(d) = common::shipped_model_or_skip("determinism (shipped model)") {
        v.push(d);
    }
    v
}

fn first_difference(a: &[Vec<u8>], b: &[Vec<u8>]) -> Option<usize> {
    (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i))
}

#[test]
fn same_packets_and_frames_across_runs_thread_counts_and_restarts() {
    for dir in models() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut m1 = load(&dir, 1);
        let packets = encode(&mut m1, 1);
        assert!(
            packets[1..].iter().any(|p| p[1] & 0x08 != 0),
            "{name}: no inter packet in the clip"
        );
        let frames = decode(&mut m1, &packets);
        // The same model after another stream (an encoder restarted in the same process).
        let _ = encode(&mut m1, 2);
        let again = encode(&mut m1, 1);
        assert_eq!(
            first_difference(&again, &packets),
            None,
            "{name}: packets differ after another stream on the same model"
        );
        // A fresh model (a restarted process) with 2 threads.
        let mut m2 = load(&dir, 2);
        let two = encode(&mut m2, 1);
        assert_eq!(
            first_difference(&two, &packets),
            None,
            "{name}: packets differ with 2 threads"
        );
        assert_eq!(
            first_difference(&decode(&mut m2, &packets), &frames),
            None,
            "{name}: frames differ with 2 threads"
        );
        // And again with 1 thread in a fresh model.
        let mut m3 = load(&dir, 1);
        assert_eq!(
            first_difference(&encode(&mut m3, 1), &packets),
            None,
            "{name}: packets differ in a second run"
        );
    }
}

#[test]
fn encoders_and_decoders_in_parallel_threads_match_alone() {
    for dir in models() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        // Alone: one clip per seed, encoded then decoded.
        let seeds = [1u32, 2, 3];
        let alone: Vec<Run> = seeds
            .iter()
            .map(|&s| {
                let mut m = load(&dir, 1);
                let p = encode(&mut m, s);
                let f = decode(&mut m, &p);
                (p, f)
            })
            .collect();
        // Together: six threads (each clip twice, 1 and 2 threads), each its own model,
        // encoding and decoding at once.
        let together: Vec<(u32, usize, Run)> = std::thread::scope(|sc| {
            let handles: Vec<_> = seeds
                .iter()
                .flat_map(|&s| [(s, 1usize), (s, 2)])
                .map(|(s, threads)| {
                    let dir = dir.clone();
                    sc.spawn(move || {
                        let mut m = load(&dir, threads);
                        let p = encode(&mut m, s);
                        let f = decode(&mut m, &p);
                        (s, threads, (p, f))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (s, threads, (p, f)) in together {
            let (ap, af) = &alone[seeds.iter().position(|&x| x == s).unwrap()];
            assert_eq!(
                first_difference(&p, ap),
                None,
                "{name}: clip {s}, {threads} threads in parallel: packets differ from alone"
            );
            assert_eq!(
                first_difference(&f, af),
                None,
                "{name}: clip {s}, {threads} threads in parallel: frames differ from alone"
            );
        }
        // The clips differ from each other (the comparison is not trivially true).
        assert_ne!(alone[0].0, alone[1].0);
    }
}
