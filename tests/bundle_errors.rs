//! A broken bundle is refused with an error that names the file and the field.

mod common;

use std::path::Path;

use common::*;
use gstuigc::codec::{Bundle, Error};

fn copy_bundle(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in [
        "manifest.toml",
        "tokenizer_encoder.onnx",
        "tokenizer_decoder.onnx",
        "prior.bin",
    ] {
        std::fs::copy(tiny_model_dir().join(f), to.join(f)).unwrap();
    }
}

fn edit_manifest(dir: &Path, from: &str, to: &str) {
    let p = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&p).unwrap();
    assert!(text.contains(from), "manifest lacks {from}");
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("uigc-bundle-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn the_tiny_bundle_loads_and_its_id_is_stable() {
    let a = Bundle::load(tiny_model_dir()).unwrap();
    let b = Bundle::load(tiny_model_b_dir()).unwrap();
    assert_eq!(a.codebook_size, 16);
    assert_ne!(a.model_id, b.model_id);
    let d = tmp("copy");
    copy_bundle(&d);
    assert_eq!(
        Bundle::load(&d).unwrap().model_id,
        a.model_id,
        "id depends on content only"
    );
}

#[test]
fn missing_manifest_names_the_file() {
    let e = Bundle::load(tmp("absent")).unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
    assert!(e.to_string().contains("manifest.toml"), "{e}");
}

#[test]
fn field_errors_name_the_field() {
    let cases = [
        ("codebook_size = 16", "codebook_size = 1", "codebook_size"),
        ("downsample = 16", "downsample = 8", "downsample"),
        ("levels = 3", "levels = 9", "schedule.levels"),
        (
            "kind = \"interleave2x2\"",
            "kind = \"zigzag\"",
            "schedule.kind",
        ),
        ("format_version = 1", "format_version = 2", "format_version"),
        ("kind = \"unigram\"", "kind = \"gpt\"", "prior.kind"),
        (
            "path = \"prior.bin\"",
            "path = \"../prior.bin\"",
            "prior.path",
        ),
        (
            "std = [0.5, 0.5, 0.5]",
            "std = [0.5, 0.0, 0.5]",
            "pixels.std",
        ),
        ("name = \"tiny-model\"", "name = 5", "name"),
    ];
    for (i, (from, to, field)) in cases.into_iter().enumerate() {
        let d = tmp(&format!("field{i}"));
        copy_bundle(&d);
        edit_manifest(&d, from, to);
        let e = Bundle::load(&d).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("manifest.toml") && msg.contains(field),
            "{to}: '{msg}' should name manifest.toml and {field}"
        );
    }
}

#[test]
fn a_modified_file_is_a_hash_mismatch() {
    let d = tmp("hash");
    copy_bundle(&d);
    let mut bytes = std::fs::read(d.join("tokenizer_decoder.onnx")).unwrap();
    bytes.push(0);
    std::fs::write(d.join("tokenizer_decoder.onnx"), bytes).unwrap();
    let e = Bundle::load(&d).unwrap_err();
    assert!(matches!(e, Error::HashMismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("tokenizer_decoder.onnx") && msg.contains("tokenizer_decoder.sha256"));
}

#[test]
fn a_missing_file_is_named() {
    let d = tmp("missing");
    copy_bundle(&d);
    std::fs::remove_file(d.join("prior.bin")).unwrap();
    let e = Bundle::load(&d).unwrap_err();
    assert!(e.to_string().contains("prior.bin"), "{e}");
}
