//! Dense graphs (docs/bundle.md "Dense graphs"): a bundle's f=8 tokenizer codes and renders dense
//! packets at one token per 8x8 pixels of the frame, and is part of the model id.

mod common;

use common::*;
use gstuigc::codec::{Bundle, Density, FrameParams};

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
fn dense_graphs_are_part_of_the_model_id() {
    let with = Bundle::load(tiny_model_dense_dir()).unwrap();
    let plain = Bundle::load(tiny_model_dir()).unwrap();
    assert!(with.dense.is_some());
    assert_ne!(with.model_id, plain.model_id);
    // The same bundle without its two dense tables has tiny-model's id again: bundles without
    // dense graphs keep the ids they had.
    let (one, _) = bundle_copy_without(
        &tiny_model_dense_dir(),
        "dense-id-a",
        "tokenizer_encoder_dense",
    );
    let (none, _) = bundle_copy_without(&one, "dense-id-b", "tokenizer_decoder_dense");
    let stripped = Bundle::load(&none).unwrap();
    assert!(stripped.dense.is_none());
    assert_eq!(stripped.model_id, plain.model_id);
    // A dense packet names its model: the bundle without the dense graphs refuses it.
    let mut dense = load(&tiny_model_dense_dir());
    let mut other = load(&none);
    let pkt = dense
        .encode_auto(
            &synthetic(64, 48, 1),
            FrameParams::default(),
            Density::Dense,
        )
        .unwrap();
    let err = other.decode(&pkt.packet.bytes).unwrap_err().to_string();
    assert!(err.contains("model"), "{err}");
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
