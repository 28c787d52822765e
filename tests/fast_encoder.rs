//! The bundle's optional fast encoder, fast decoder and smooth decoder (docs/bundle.md "Fast
//! encoder", "Fast decoder", "Smooth decoder") and the pipelined sender (`codec::pipeline`,
//! docs/edge.md "Pipelining"): what each promises, checked on the shipped model and the tiny test
//! model.

mod common;

use gstuigc::codec::{
    self, pipeline::TokenizerThread, DecoderChoice, EncoderChoice, Model, RgbImage, RuntimeOptions,
    StreamConfig, StreamEncoder, StreamFrame,
};

fn load_with(dir: &std::path::Path, encoder: EncoderChoice) -> codec::Result<Model> {
    Model::load(
        dir,
        &RuntimeOptions {
            encoder,
            threads: 1,
            ..Default::default()
        },
    )
}

/// kodim23 with a 64x48 piece of itself moving 12 px per frame: a real picture, one moving object.
fn frames(n: u32) -> Vec<RgbImage> {
    let base = common::read_png(&common::repo().join("docs/sample/kodim23.png"));
    (0..n)
        .map(|t| {
            let mut img = base.clone();
            let w = base.width as usize;
            for y in 0..48 {
                for x in 0..64 {
                    let (sy, sx) = (150 + y, 330 + x);
                    let (dy, dx) = (300 + y, 100 + 12 * t as usize + x);
                    let s = (sy * w + sx) * 3;
                    let d = (dy * w + dx) * 3;
                    img.data[d..d + 3].copy_from_slice(&base.data[s..s + 3]);
                }
            }
            img
        })
        .collect()
}

fn stream(model: &mut Model, frames: &[RgbImage]) -> Vec<Vec<u8>> {
    let mut enc = StreamEncoder::new(StreamConfig::default()).unwrap();
    frames
        .iter()
        .map(|f| enc.encode(model, f).unwrap().packet.bytes)
        .collect()
}

fn decode_all(model: &mut Model, packets: &[Vec<u8>]) -> Vec<StreamFrame> {
    let mut dec = codec::StreamDecoder::new();
    packets
        .iter()
        .map(|p| dec.decode(model, p).unwrap())
        .collect()
}

/// The fast encoder's packets carry the same model id and decode exactly with a receiver that
/// only ever loaded the full encoder; most of its tokens are the full encoder's, and a stream
/// costs about the same bytes.
#[test]
fn fast_encoder_packets_decode_with_the_same_model_and_tokens_mostly_agree() {
    let Some(dir) = common::shipped_model_or_skip("fast_encoder_packets_decode") else {
        return;
    };
    let bundle = codec::Bundle::load(&dir).unwrap();
    assert!(
        bundle.tokenizer_encoder_fast.is_some(),
        "the shipped bundle has a fast encoder"
    );
    let mut fast = load_with(&dir, EncoderChoice::Fast).unwrap();
    let mut full = load_with(&dir, EncoderChoice::Full).unwrap();
    assert_eq!(fast.model_id(), full.model_id());
    assert!(fast.describe_networks().contains("encoder (fast)"));
    assert!(!full.describe_networks().contains("encoder (fast)"));

    let frames = frames(4);
    let (a, b) = (
        fast.tokenize(&frames[0]).unwrap(),
        full.tokenize(&frames[0]).unwrap(),
    );
    let agree = a
        .tokens
        .iter()
        .zip(&b.tokens)
        .filter(|(x, y)| x == y)
        .count() as f64
        / a.tokens.len() as f64;
    assert!(
        agree >= 0.8,
        "only {:.1} % of the tokens agree",
        agree * 100.0
    );
    assert!(
        agree < 1.0,
        "a different network gave identical tokens: is it loaded?"
    );

    let packets_fast = stream(&mut fast, &frames);
    let packets_full = stream(&mut full, &frames);
    let bytes = |p: &[Vec<u8>]| p.iter().map(Vec::len).sum::<usize>() as f64;
    let ratio = bytes(&packets_fast) / bytes(&packets_full);
    assert!(
        (0.8..1.25).contains(&ratio),
        "bytes ratio fast/full {ratio:.3}"
    );
    // A receiver with the full encoder decodes the fast sender's stream exactly.
    let decoded = decode_all(&mut full, &packets_fast);
    assert!(decoded
        .iter()
        .all(|f| f.status == codec::FrameStatus::Exact));
}

/// Asking for the fast encoder of a bundle that has none is an error naming the bundle and the
/// manifest table, never a silent use of the full encoder.
#[test]
fn fast_encoder_of_a_bundle_without_one_is_a_clear_error() {
    let err = match load_with(&common::tiny_model_dir(), EncoderChoice::Fast) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("the tiny model has no fast encoder"),
    };
    assert!(err.contains("no fast encoder"), "{err}");
    assert!(err.contains("tokenizer_encoder_fast"), "{err}");
    assert!("fast".parse::<EncoderChoice>().unwrap() == EncoderChoice::Fast);
    assert!("turbo".parse::<EncoderChoice>().is_err());
}

/// The fast encoder's file is checked like the others but is not part of the model id: the same
/// bundle without it has the same id; listed with a wrong hash it is refused, naming the field.
#[test]
fn fast_encoder_is_hashed_but_not_part_of_the_model_id() {
    let Some(src) = common::shipped_model_or_skip("fast_encoder_is_hashed") else {
        return;
    };
    let with = codec::Bundle::load(&src).unwrap();
    let (dir, manifest) = common::bundle_copy_without(&src, "fast", "tokenizer_encoder_fast");
    let b = codec::Bundle::load(&dir).unwrap();
    assert!(b.tokenizer_encoder_fast.is_none());
    assert_eq!(b.model_id, with.model_id);
    // Listed, but the file is another network: refused, naming the field.
    std::fs::copy(
        src.join("tokenizer_encoder.onnx"),
        dir.join("tokenizer_encoder_fast.onnx"),
    )
    .unwrap();
    std::fs::write(dir.join("manifest.toml"), &manifest).unwrap();
    let err = codec::Bundle::load(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer_encoder_fast.sha256"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Tokens made on the tokenizer thread give the very same packets as tokens made in line, in
/// order, and the thread reports nothing when nothing is in flight.
#[test]
fn pipelined_tokenizing_gives_the_same_packets() {
    let dir = common::tiny_model_dir();
    let mut model = common::load(&dir);
    let frames: Vec<RgbImage> = (0..6)
        .map(|i| {
            let mut f = common::synthetic(96, 64, 3);
            let x0 = 8 * i as usize;
            for y in 16..32 {
                for x in x0..x0 + 16 {
                    let p = (y * 96 + x) * 3;
                    f.data[p..p + 3].copy_from_slice(&[240, 20, 20]);
                }
            }
            f
        })
        .collect();
    let inline = stream(&mut model, &frames);

    let mut worker = TokenizerThread::spawn(model.bundle(), &RuntimeOptions::default()).unwrap();
    assert!(worker.receive().unwrap().is_none());
    let mut enc = StreamEncoder::new(StreamConfig::default()).unwrap();
    let mut piped = Vec::new();
    for f in &frames {
        worker.submit(f.clone()).unwrap();
        if worker.in_flight() > 1 {
            let t = worker.receive().unwrap().unwrap();
            let p = enc
                .encode_tokenized(&mut model, &t.image, t.tokens.unwrap(), t.network)
                .unwrap();
            piped.push(p.packet.bytes);
        }
    }
    while let Some(t) = worker.receive().unwrap() {
        let p = enc
            .encode_tokenized(&mut model, &t.image, t.tokens.unwrap(), t.network)
            .unwrap();
        piped.push(p.packet.bytes);
    }
    assert_eq!(piped, inline);
    // Tokens of another frame size are refused.
    let other = model.tokenize(&common::synthetic(32, 32, 1)).unwrap();
    let err = enc
        .encode_tokenized(&mut model, &frames[0], other, std::time::Duration::ZERO)
        .unwrap_err();
    assert!(err.to_string().contains("token grid"), "{err}");
}

fn load_decoder(dir: &std::path::Path, decoder: DecoderChoice) -> codec::Result<Model> {
    Model::load(
        dir,
        &RuntimeOptions {
            decoder,
            threads: 1,
            ..Default::default()
        },
    )
}

/// The error of loading `dir` with the decoder `choice` (a panic if it loads).
fn load_error(dir: &std::path::Path, choice: DecoderChoice) -> String {
    match load_decoder(dir, choice) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("decoder '{choice}' loaded from {}", dir.display()),
    }
}

/// A 3-frame stream of the full decoder's sender decoded by `choice` and by the full decoder
/// (frames, `choice`'s pictures, full pictures): `choice` is named in the networks' description,
/// shares the model id and decodes every packet exactly.
fn decode_both(
    dir: &std::path::Path,
    choice: DecoderChoice,
) -> (Vec<RgbImage>, Vec<StreamFrame>, Vec<StreamFrame>) {
    let mut other = load_decoder(dir, choice).unwrap();
    let mut full = load_decoder(dir, DecoderChoice::Full).unwrap();
    assert!(other
        .describe_networks()
        .contains(&format!("decoder ({choice})")));
    assert!(!full.describe_networks().contains(&format!("({choice})")));
    assert_eq!(other.model_id(), full.model_id());
    let frames = frames(3);
    let packets = stream(&mut full, &frames);
    let a = decode_all(&mut other, &packets);
    for (i, x) in a.iter().enumerate() {
        assert_eq!(x.status, codec::FrameStatus::Exact, "frame {i}");
    }
    let b = decode_all(&mut full, &packets);
    (frames, a, b)
}

/// The shipped fast decoder renders the packet's tokens close to the full decoder (but is a
/// different graph, not a copy), full decodes and tiles alike; `auto` takes it on the CPU.
#[test]
fn fast_decoder_renders_the_same_tokens_close_to_the_full_one() {
    let Some(dir) = common::shipped_model_or_skip("fast_decoder_renders") else {
        return;
    };
    let auto = load_decoder(&dir, DecoderChoice::Auto).unwrap();
    assert!(auto.describe_networks().contains("decoder (fast)"));
    let (_, a, b) = decode_both(&dir, DecoderChoice::Fast);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let p = common::psnr(&x.image, &y.image);
        assert!(
            (38.0..70.0).contains(&p),
            "frame {i}: fast vs full {p:.1} dB (a copy of the full graph, or a broken one?)"
        );
    }
}

/// `fast` needs both fast graphs of a bundle with a tile graph and names what is missing; `auto`
/// then renders with the full ones. The files are hashed but outside the model id.
#[test]
fn fast_decoder_needs_its_graphs_and_stays_out_of_the_model_id() {
    let Some(src) = common::shipped_model_or_skip("fast_decoder_needs") else {
        return;
    };
    let with = codec::Bundle::load(&src).unwrap();
    assert!(with.tokenizer_decoder_fast.is_some() && with.tokenizer_decoder_tile_fast.is_some());
    for (tag, section) in [
        ("fastdec", "tokenizer_decoder_fast"),
        ("fasttile", "tokenizer_decoder_tile_fast"),
    ] {
        let (dir, manifest) = common::bundle_copy_without(&src, tag, section);
        assert_eq!(codec::Bundle::load(&dir).unwrap().model_id, with.model_id);
        let err = load_error(&dir, DecoderChoice::Fast);
        assert!(err.contains(&format!("[{section}]")), "{err}");
        let auto = load_decoder(&dir, DecoderChoice::Auto).unwrap();
        assert!(!auto.describe_networks().contains("(fast)"), "{section}");
        // Listed with another file's bytes: refused, naming the field.
        std::fs::copy(
            src.join("tokenizer_decoder.onnx"),
            dir.join(format!("{section}.onnx")),
        )
        .unwrap();
        std::fs::write(dir.join("manifest.toml"), &manifest).unwrap();
        let err = codec::Bundle::load(&dir).unwrap_err().to_string();
        assert!(err.contains(&format!("{section}.sha256")), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
    // The tiny model has none: auto is the full decoder, fast an error.
    assert!(load_decoder(&common::tiny_model_dir(), DecoderChoice::Fast).is_err());
    assert!("auto".parse::<DecoderChoice>().unwrap() == DecoderChoice::Auto);
    assert!("turbo".parse::<DecoderChoice>().is_err());
}

/// RMS (8-bit levels) of the mean 8x8 phase pattern of the luma: for each of the 64 positions
/// `(y % 8, x % 8)` the mean luma there, minus the mean of all; the 8-pixel grid of issue 12
/// (models/README.md "The 8-pixel grid": Kodak originals about 0.6, the nearest-upsampling
/// decoder about 5).
fn grid_pattern_rms(img: &RgbImage) -> f64 {
    let (mut sum, mut n) = ([0.0f64; 64], [0usize; 64]);
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        let (y, x) = (i / img.width as usize, i % img.width as usize);
        let l = 0.299 * px[0] as f64 + 0.587 * px[1] as f64 + 0.114 * px[2] as f64;
        sum[(y % 8) * 8 + x % 8] += l;
        n[(y % 8) * 8 + x % 8] += 1;
    }
    let means: Vec<f64> = sum.iter().zip(&n).map(|(s, &k)| s / k as f64).collect();
    let all = means.iter().sum::<f64>() / 64.0;
    (means.iter().map(|m| (m - all).powi(2)).sum::<f64>() / 64.0).sqrt()
}

/// The shipped smooth decoder renders the packets of any sender (same model id, exact tokens,
/// full decodes and tiles) with its own weights, and without the 8-pixel grid that the full
/// decoder draws.
#[test]
fn smooth_decoder_renders_the_same_tokens_without_the_grid() {
    let Some(dir) = common::shipped_model_or_skip("smooth_decoder_renders") else {
        return;
    };
    let (frames, a, b) = decode_both(&dir, DecoderChoice::Smooth);
    for (i, ((x, y), orig)) in a.iter().zip(&b).zip(&frames).enumerate() {
        let p = common::psnr(&x.image, &y.image);
        assert!(
            (20.0..40.0).contains(&p),
            "frame {i}: smooth vs full {p:.1} dB (the same graph, or a broken one?)"
        );
        let (gs, gf, go) = (
            grid_pattern_rms(&x.image),
            grid_pattern_rms(&y.image),
            grid_pattern_rms(orig),
        );
        assert!(
            gf > 3.0 * gs && gs < 2.0 * go.max(0.5),
            "frame {i}: 8x8 pattern RMS smooth {gs:.2}, full {gf:.2}, original {go:.2}"
        );
    }
}

/// `smooth` needs both smooth graphs of a bundle with a tile graph and names what is missing;
/// a smooth tile graph alone is refused; neither is part of the model id.
#[test]
fn smooth_decoder_needs_its_graphs_and_stays_out_of_the_model_id() {
    let Some(src) = common::shipped_model_or_skip("smooth_decoder_needs") else {
        return;
    };
    let with = codec::Bundle::load(&src).unwrap();
    assert!(
        with.tokenizer_decoder_smooth.is_some() && with.tokenizer_decoder_tile_smooth.is_some()
    );

    let (dir, _) = common::bundle_copy_without(&src, "smoothtile", "tokenizer_decoder_tile_smooth");
    assert_eq!(codec::Bundle::load(&dir).unwrap().model_id, with.model_id);
    let err = load_error(&dir, DecoderChoice::Smooth);
    assert!(err.contains("[tokenizer_decoder_tile_smooth]"), "{err}");
    let auto = load_decoder(&dir, DecoderChoice::Auto).unwrap();
    assert!(!auto.describe_networks().contains("(smooth)"));
    std::fs::remove_dir_all(&dir).unwrap();

    let (dir, _) = common::bundle_copy_without(&src, "smoothdec", "tokenizer_decoder_smooth");
    let err = codec::Bundle::load(&dir).unwrap_err().to_string();
    assert!(err.contains("tokenizer_decoder_tile_smooth"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    // The tiny model has none: smooth is an error naming the table.
    let err = load_error(&common::tiny_model_dir(), DecoderChoice::Smooth);
    assert!(err.contains("[tokenizer_decoder_smooth]"), "{err}");
    assert_eq!(
        "Smooth".parse::<DecoderChoice>().unwrap(),
        DecoderChoice::Smooth
    );
    assert_eq!(DecoderChoice::Smooth.to_string(), "smooth");
}
