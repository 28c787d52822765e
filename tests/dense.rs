//! Dense graphs (docs/bundle.md "Dense graphs"): a bundle's f=8 tokenizer codes and renders dense
//! packets at one token per 8x8 pixels of the frame, and is part of the model id.

mod common;

use common::*;
use gstuigc::codec::{Bundle, Density, FrameParams, Model, RuntimeOptions};

fn tiny_model_dense_dir() -> std::path::PathBuf {
    repo().join("tests/data/tiny-model-dense")
}

#[test]
fn dense_packets_use_the_dense_graphs() {
    let mut dense = load(&tiny_model_dense_dir());
    let mut plain = load(&tiny_model_dir());
    assert!(dense.has_dense_graphs() && !plain.has_dense_graphs());
    for (w, h) in [(100, 60), (8, 8), (17, 9), (256, 128)] {
        let img = synthetic(w, h, w ^ h);
        let enc = dense
            .encode_auto(&img, FrameParams::default(), Density::Dense)
            .unwrap();
        assert!(enc.packet.header.dense());
        // The dense encoder's grid: one token per 8x8 pixels of the frame itself.
        let grid = dense.tokenize_dense(&img).unwrap();
        assert_eq!(enc.tokens, grid, "{w}x{h}");
        assert_eq!(
            (grid.rows, grid.cols),
            (h.div_ceil(8) as usize, w.div_ceil(8) as usize)
        );
        let dec = dense.decode(&enc.packet.bytes).unwrap();
        assert_eq!(dec.tokens.grid, grid);
        assert_eq!((dec.image.width, dec.image.height), (w, h));
        // The picture is the dense decoder's for those tokens, not the halved 2x picture.
        assert_eq!(dec.image, dense.detokenize_dense(&grid, w, h).unwrap());
        let resampled = plain.detokenize_dense(&grid, w, h).unwrap();
        assert_ne!(
            dec.image, resampled,
            "{w}x{h}: the dense decoder was not used"
        );
    }
    // The bundle without dense graphs codes the 2x frame instead: another grid of the same size.
    let img = synthetic(256, 128, 5);
    let a = dense.tokenize_dense(&img).unwrap();
    let b = plain.tokenize_dense(&img).unwrap();
    assert_eq!((a.rows, a.cols), (b.rows, b.cols));
    assert_ne!(a, b);
}

#[test]
fn dense_packets_of_dense_graphs_carry_their_own_id() {
    let with = Bundle::load(tiny_model_dense_dir()).unwrap();
    let plain_bundle = Bundle::load(tiny_model_dir()).unwrap();
    // The model id does not depend on the dense graphs (normal packets stay decodable by
    // receivers with or without them); the dense id does.
    assert_eq!(with.model_id, plain_bundle.model_id);
    let dense_id = with.dense_model_id.expect("a dense id");
    assert_ne!(dense_id, with.model_id);
    assert!(plain_bundle.dense_model_id.is_none());
    let (one, _) = bundle_copy_without(
        &tiny_model_dense_dir(),
        "dense-id-a",
        "tokenizer_encoder_dense",
    );
    let (none, _) = bundle_copy_without(&one, "dense-id-b", "tokenizer_decoder_dense");
    assert!(Bundle::load(&none).unwrap().dense_model_id.is_none());

    let mut dense = load(&tiny_model_dense_dir());
    let mut plain = load(&tiny_model_dir());
    let img = synthetic(64, 48, 1);
    let normal = dense.encode(&img, FrameParams::default()).unwrap();
    assert_eq!(normal.packet.header.model_id, with.model_id);
    let d = dense
        .encode_auto(&img, FrameParams::default(), Density::Dense)
        .unwrap();
    assert_eq!(d.packet.header.model_id, dense_id);
    // Normal packets: either receiver, the same picture.
    assert_eq!(
        plain.decode(&normal.packet.bytes).unwrap().image,
        dense.decode(&normal.packet.bytes).unwrap().image
    );
    // A receiver without the dense graphs refuses their packets, naming the ids.
    let err = plain.decode(&d.packet.bytes).unwrap_err().to_string();
    assert!(err.contains(&dense_id.to_string()), "{err}");
    // A sender without dense graphs: its dense packets carry the model id, and a receiver with
    // dense graphs renders them the 2x way, as the sender's own bundle does.
    let old = plain
        .encode_auto(&img, FrameParams::default(), Density::Dense)
        .unwrap();
    assert_eq!(old.packet.header.model_id, with.model_id);
    let theirs = plain.decode(&old.packet.bytes).unwrap().image;
    let ours = dense.decode(&old.packet.bytes).unwrap().image;
    assert_eq!(ours, theirs);
    assert_ne!(ours, dense.detokenize_dense(&old.tokens, 64, 48).unwrap());
    for d in [one, none] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn one_dense_graph_alone_is_refused() {
    for (tag, section, other) in [
        (
            "dense-half-a",
            "tokenizer_encoder_dense",
            "tokenizer_decoder_dense",
        ),
        (
            "dense-half-b",
            "tokenizer_decoder_dense",
            "tokenizer_encoder_dense",
        ),
    ] {
        let (dir, _) = bundle_copy_without(&tiny_model_dense_dir(), tag, section);
        let err = Bundle::load(&dir).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer_decoder_dense") && err.contains("pairs"),
            "without [{section}] (with [{other}]): {err}"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn dense_graphs_open_on_first_use_or_at_warm_up() {
    use gstuigc::codec::Role;
    let mut model = load(&tiny_model_dense_dir());
    let before = model.describe_networks();
    assert!(!before.contains("dense"), "{before}");
    model.warm_up(64, 48, Role::Decoder).unwrap();
    let after = model.describe_networks();
    assert!(
        after.contains("dense tokenizer decoder") && !after.contains("dense tokenizer encoder"),
        "{after}"
    );
    model.warm_up(64, 48, Role::Encoder).unwrap();
    assert!(model
        .describe_networks()
        .contains("dense tokenizer encoder"));
}

#[test]
fn a_model_set_finds_the_model_of_a_dense_packet_by_its_dense_id() {
    use gstuigc::codec::ModelSet;
    let mut sender = load(&tiny_model_dense_dir());
    let img = synthetic(64, 48, 2);
    let d = sender
        .encode_auto(&img, FrameParams::default(), Density::Dense)
        .unwrap();
    let want = sender.decode(&d.packet.bytes).unwrap().image;
    let mut set = ModelSet::new(vec![
        load(&tiny_model_b_dir()),
        load(&tiny_model_dense_dir()),
    ])
    .unwrap();
    assert_eq!(set.decode(&d.packet.bytes).unwrap().image, want);
    let mut without =
        ModelSet::new(vec![load(&tiny_model_b_dir()), load(&tiny_model_dir())]).unwrap();
    let err = without.decode(&d.packet.bytes).unwrap_err().to_string();
    assert!(err.contains("model"), "{err}");
}

/// The dense graphs' golden vectors (golden_dense/, written by `uigc_models.dense install` and
/// make_test_models.py) through ONNX Runtime from Rust: identical indices, the decoded picture
/// within one level. The shipped bundle's too, when it has dense graphs.
#[test]
fn dense_golden_vectors() {
    let mut dirs = vec![tiny_model_dense_dir()];
    dirs.extend(
        shipped_model_or_skip("dense_golden_vectors").filter(|d| d.join("golden_dense").is_dir()),
    );
    for dir in dirs {
        let golden = dir.join("golden_dense");
        let mut model = load(&dir);
        let img = read_png(&golden.join("input.png"));
        let grid = model.tokenize_dense(&img).unwrap();
        assert_eq!(
            (grid.rows, grid.cols),
            (img.height as usize / 8, img.width as usize / 8)
        );
        let want = read_golden_indices(&golden.join("indices.i64le"));
        assert_eq!(grid.tokens, want, "{}: dense indices", dir.display());
        let want_png = read_png(&golden.join("decoded.png"));
        let got = model
            .detokenize_dense(&grid, img.width, img.height)
            .unwrap();
        let max_diff = max_abs_diff(&got, &want_png);
        assert!(
            max_diff <= 1,
            "{}: dense picture differs by {max_diff}",
            dir.display()
        );
    }
}

/// The shipped bundle's dense graphs on the sample photo (kodim23): a dense packet carries the
/// dense id and renders clearly better than the normal packet (measured with uigc-small 0.4.0:
/// 25.1 against 23.9 dB).
#[test]
fn shipped_dense_graphs_on_the_sample_photo() {
    let Some(dir) = shipped_model_or_skip("shipped_dense_graphs_on_the_sample_photo") else {
        return;
    };
    let mut model = load(&dir);
    if !model.has_dense_graphs() {
        skip_or_fail(
            "shipped_dense_graphs_on_the_sample_photo",
            "the shipped bundle has no dense graphs",
        );
        return;
    }
    let img = read_png(&repo().join("docs/sample/kodim23.png"));
    let normal = model.encode(&img, FrameParams::default()).unwrap();
    let dense = model
        .encode_auto(&img, FrameParams::default(), Density::Dense)
        .unwrap();
    assert_eq!(Some(dense.packet.header.model_id), model.dense_model_id());
    let a = psnr(&img, &model.decode(&normal.packet.bytes).unwrap().image);
    let b = psnr(&img, &model.decode(&dense.packet.bytes).unwrap().image);
    assert!(b > a + 0.5, "dense {b:.2} dB vs normal {a:.2} dB");
    // A dense prior (docs/bundle.md "Dense prior") must earn its place: the same dense tokens in
    // fewer bits than the model's prior gives them.
    let codec = model.token_codec();
    if codec.has_dense_prior() {
        let (w, h) = (img.width, img.height);
        let params = FrameParams {
            dense: true,
            ..FrameParams::default()
        };
        let with = codec.encode(&dense.tokens, w, h, params).unwrap();
        let mut plain = gstuigc::codec::token_codec(&Bundle::load(&dir).unwrap()).unwrap();
        plain.set_dense_prior(None).unwrap();
        let without = plain.encode(&dense.tokens, w, h, params).unwrap();
        // (payload bits: under the default work limit both packets are padded to 6144 B)
        assert!(
            with.payload_bits < without.payload_bits,
            "dense prior {} bits, model prior {} bits",
            with.payload_bits,
            without.payload_bits
        );
    }
}

/// A copy of tiny-model-dense whose manifest gets `extra` appended (and `prior_dense.bin`, a
/// unigram prior with these weights, when given).
fn tiny_dense_copy_with(tag: &str, weights: Option<&[u32]>, extra: &str) -> std::path::PathBuf {
    let src = tiny_model_dense_dir();
    let dir = std::env::temp_dir().join(format!("uigc-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    if let Some(w) = weights {
        let mut bytes = b"UGP1".to_vec();
        bytes.extend((w.len() as u32).to_le_bytes());
        w.iter().for_each(|x| bytes.extend(x.to_le_bytes()));
        std::fs::write(dir.join("prior_dense.bin"), bytes).unwrap();
    }
    let sha = if weights.is_some() {
        gstuigc::codec::bundle::sha256_file(&dir.join("prior_dense.bin")).unwrap()
    } else {
        String::new()
    };
    let manifest = std::fs::read_to_string(dir.join("manifest.toml")).unwrap();
    std::fs::write(
        dir.join("manifest.toml"),
        format!("{manifest}\n{}", extra.replace("{sha}", &sha)),
    )
    .unwrap();
    dir
}

const PRIOR_DENSE: &str =
    "[prior_dense]\nkind = \"unigram\"\npath = \"prior_dense.bin\"\nsha256 = \"{sha}\"\n";

#[test]
fn a_dense_prior_codes_the_dense_graphs_packets() {
    let img = synthetic(96, 64, 7);
    let mut plain = load(&tiny_model_dense_dir());
    // A unigram prior fitted to this frame's dense tokens: it must code them in fewer bytes.
    let grid = plain.tokenize_dense(&img).unwrap();
    let mut weights = vec![1u32; 16];
    grid.tokens.iter().for_each(|&t| weights[t as usize] += 50);
    let dir = tiny_dense_copy_with("dense-prior", Some(&weights), PRIOR_DENSE);
    let bundle = Bundle::load(&dir).unwrap();
    let plain_bundle = Bundle::load(tiny_model_dense_dir()).unwrap();
    // The dense prior is part of the dense id only.
    assert_eq!(bundle.model_id, plain_bundle.model_id);
    assert_ne!(bundle.dense_model_id, plain_bundle.dense_model_id);
    let mut with = load(&dir);

    let params = FrameParams::default();
    let a = with.encode_auto(&img, params, Density::Dense).unwrap();
    let b = plain.encode_auto(&img, params, Density::Dense).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(Some(a.packet.header.model_id), bundle.dense_model_id);
    assert!(
        a.packet.bytes.len() < b.packet.bytes.len(),
        "dense prior {} bytes, model prior {} bytes",
        a.packet.bytes.len(),
        b.packet.bytes.len()
    );
    let dec = with.decode(&a.packet.bytes).unwrap();
    assert_eq!(dec.tokens.grid, grid);
    // Regeneration of unsent tokens uses it too: half the stages, decoded the same on a fresh
    // receiver.
    let half = FrameParams {
        stages: Some(5),
        ..params
    };
    let h = with.encode_auto(&img, half, Density::Dense).unwrap();
    assert_eq!(
        load(&dir).decode(&h.packet.bytes).unwrap().tokens.grid,
        with.decode(&h.packet.bytes).unwrap().tokens.grid
    );
    // A receiver without this dense prior refuses the packet (another dense id), and the
    // normal prior still codes normal packets: the same bytes from either bundle.
    let err = plain.decode(&a.packet.bytes).unwrap_err().to_string();
    assert!(err.contains("model"), "{err}");
    assert_eq!(
        with.encode(&img, params).unwrap().packet.bytes,
        plain.encode(&img, params).unwrap().packet.bytes
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_bad_dense_prior_is_refused() {
    // Without the dense graphs.
    let (no_graphs, _) = bundle_copy_without(
        &tiny_model_dense_dir(),
        "dense-prior-no-graphs-a",
        "tokenizer_encoder_dense",
    );
    let (no_graphs, _) = bundle_copy_without(
        &no_graphs,
        "dense-prior-no-graphs-b",
        "tokenizer_decoder_dense",
    );
    let manifest = std::fs::read_to_string(no_graphs.join("manifest.toml")).unwrap();
    std::fs::copy(
        no_graphs.join("prior.bin"),
        no_graphs.join("prior_dense.bin"),
    )
    .unwrap();
    let sha = gstuigc::codec::bundle::sha256_file(&no_graphs.join("prior_dense.bin")).unwrap();
    std::fs::write(
        no_graphs.join("manifest.toml"),
        format!("{manifest}\n{}", PRIOR_DENSE.replace("{sha}", &sha)),
    )
    .unwrap();
    let err = Bundle::load(&no_graphs).unwrap_err().to_string();
    assert!(
        err.contains("prior_dense") && err.contains("tokenizer_encoder_dense"),
        "{err}"
    );
    // An unknown kind, a wrong hash, another codebook size.
    let weights = [1u32; 16];
    let kind = tiny_dense_copy_with(
        "dense-prior-kind",
        Some(&weights),
        &PRIOR_DENSE.replace("unigram", "nonsense"),
    );
    let err = Bundle::load(&kind).unwrap_err().to_string();
    assert!(err.contains("prior_dense.kind"), "{err}");
    let hash = tiny_dense_copy_with(
        "dense-prior-hash",
        Some(&weights),
        &PRIOR_DENSE.replace("{sha}", &"0".repeat(64)),
    );
    let err = Bundle::load(&hash).unwrap_err().to_string();
    assert!(err.contains("prior_dense"), "{err}");
    let k = tiny_dense_copy_with("dense-prior-k", Some(&[1u32; 8]), PRIOR_DENSE);
    Bundle::load(&k).expect("the manifest itself is well-formed");
    let err = Model::load(&k, &RuntimeOptions::default())
        .err()
        .expect("a dense prior of K=8 under a codebook of 16")
        .to_string();
    assert!(err.contains("K=8"), "{err}");
    for d in [no_graphs, kind, hash, k] {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// With dense graphs, `Density::Auto` keeps a dense packet of 8 or more stages under a budget
/// (DENSE_GRAPHS_MIN_STAGES): their shorter dense packets still beat the all-tokens normal one.
#[test]
fn auto_density_keeps_shorter_dense_packets_of_dense_graphs() {
    use gstuigc::codec::{
        DENSE_GRAPHS_MIN_BUDGET_RATIO, DENSE_GRAPHS_MIN_STAGES, DENSE_MIN_STAGES,
    };
    let mut model = load(&tiny_model_dense_dir());
    let img = synthetic(128, 96, 3);
    let normal = model.encode(&img, FrameParams::default()).unwrap();
    let full = model
        .encode_auto(&img, FrameParams::default(), Density::Dense)
        .unwrap();
    let short = model
        .encode_auto(
            &img,
            FrameParams {
                stages: Some(DENSE_GRAPHS_MIN_STAGES),
                ..FrameParams::default()
            },
            Density::Dense,
        )
        .unwrap();
    let cap =
        short.packet.bytes.len().max(
            (DENSE_GRAPHS_MIN_BUDGET_RATIO * normal.packet.bytes.len() as f64).ceil() as usize,
        );
    assert!(
        cap < full.packet.bytes.len(),
        "the test needs a budget below the full dense packet ({cap} vs {})",
        full.packet.bytes.len()
    );
    let params = FrameParams {
        max_bytes: Some(cap),
        ..FrameParams::default()
    };
    let enc = model.encode_auto(&img, params, Density::Auto).unwrap();
    assert!(enc.packet.header.dense(), "cap {cap}");
    let stages = enc.packet.header.stages as usize;
    assert!((DENSE_GRAPHS_MIN_STAGES..DENSE_MIN_STAGES).contains(&stages));
    assert!(enc.packet.bytes.len() <= cap);
    let dec = model.decode(&enc.packet.bytes).unwrap();
    assert_eq!((dec.image.width, dec.image.height), (128, 96));
    // Below the budget ratio it stays normal.
    let params = FrameParams {
        max_bytes: Some(
            (DENSE_GRAPHS_MIN_BUDGET_RATIO * normal.packet.bytes.len() as f64) as usize - 1,
        ),
        ..FrameParams::default()
    };
    assert!(!model
        .encode_auto(&img, params, Density::Auto)
        .unwrap()
        .packet
        .header
        .dense());
}
