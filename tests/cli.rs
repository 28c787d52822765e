//! The `uigc` command line, run as a user would run it.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn uigc() -> Command {
    Command::new(env!("CARGO_BIN_EXE_uigc"))
}

/// `uigc encode INPUT -o PACKET` (add the model and options).
fn encode(input: &std::path::Path, packet: &std::path::Path) -> Command {
    let mut c = uigc();
    c.arg("encode").arg(input).arg("-o").arg(packet);
    c
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("run uigc");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_is_complete() {
    let (ok, out, _) = run(uigc().arg("--help"));
    assert!(ok);
    for word in ["encode", "decode", "tokens", "info"] {
        assert!(out.contains(word), "--help lacks {word}");
    }
    for (sub, flags) in [
        (
            "encode",
            &[
                "--output",
                "--model",
                "--ep",
                "--threads",
                "--ort-lib",
                "--keep",
                "--extra",
                "--max-bytes",
                "--stream-id",
                "--frame",
            ][..],
        ),
        (
            "decode",
            &[
                "--output",
                "--model",
                "--ep",
                "--threads",
                "--ort-lib",
                "--regen",
            ][..],
        ),
        ("tokens", &["--model", "--regen", "--threads"][..]),
        ("info", &["<INPUT>"][..]),
    ] {
        let (ok, out, _) = run(uigc().args([sub, "--help"]));
        assert!(ok, "{sub} --help");
        for f in flags {
            assert!(out.contains(f), "{sub} --help lacks {f}:\n{out}");
        }
    }
}

/// A scratch directory and the paths of a round trip: (dir, input image, packet, output image).
fn scratch(tag: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("uigc-cli-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = tiny_model_dir().join("golden/input.png");
    let (packet, output) = (dir.join("x.uigc"), dir.join("x.png"));
    (dir, input, packet, output)
}

#[test]
fn encode_info_decode_round_trip() {
    let (dir, input, packet, output) = scratch("rt");
    let model = tiny_model_dir();
    let (ok, out, err) = run(encode(&input, &packet).arg("--model").arg(&model).args([
        "--stream-id",
        "9",
        "--frame",
        "77",
    ]));
    assert!(ok, "{err}");
    assert!(out.contains("bpp") && out.contains("ms"), "{out}");
    let (ok, out, err) = run(uigc().arg("info").arg(&packet));
    assert!(ok, "{err}");
    assert!(
        out.contains("stream id:     9") && out.contains("frame:         77"),
        "{out}"
    );
    assert!(out.contains("64x48 pixels"), "{out}");
    let (ok, out, err) = run(uigc()
        .arg("decode")
        .arg(&packet)
        .arg("-o")
        .arg(&output)
        .arg("--model")
        .arg(&model));
    assert!(ok, "{err}");
    assert!(out.contains("bpp"), "{out}");
    let img = read_png(&output);
    assert_eq!((img.width, img.height), (64, 48));

    // A packet for another model: one clear line, non-zero exit.
    let (ok, _, err) = run(uigc()
        .arg("decode")
        .arg(&packet)
        .arg("-o")
        .arg(&output)
        .arg("--model")
        .arg(tiny_model_b_dir()));
    assert!(!ok);
    assert!(
        err.contains("uigc: error:") && err.contains("another model") || err.contains("model"),
        "{err}"
    );
    // A corrupt packet.
    let mut bytes = std::fs::read(&packet).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0x40;
    std::fs::write(&packet, &bytes).unwrap();
    let (ok, _, err) = run(uigc()
        .arg("decode")
        .arg(&packet)
        .arg("-o")
        .arg(&output)
        .arg("--model")
        .arg(&model));
    assert!(!ok);
    assert_eq!(
        err.lines()
            .filter(|l| l.starts_with("uigc: error:"))
            .count(),
        1,
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_runtime_is_a_clear_error() {
    let (ok, _, err) = run(uigc()
        .arg("encode")
        .arg(tiny_model_dir().join("golden/input.png"))
        .args([
            "-o",
            "/dev/null",
            "--ort-lib",
            "/nonexistent/libonnxruntime.so",
            "--model",
        ])
        .arg(tiny_model_dir()));
    assert!(!ok);
    assert!(
        err.contains("uigc: error: ONNX Runtime library not found") && err.contains("/nonexistent"),
        "{err}"
    );
    let (ok, _, err) = run(uigc()
        .env("UIGC_ORT_LIBRARY", "/nonexistent/lib.so")
        .arg("decode")
        .arg(repo().join("tests/data/golden-packet/packet.uigc"))
        .args(["-o", "/dev/null", "--model"])
        .arg(tiny_model_dir()));
    assert!(!ok);
    assert!(err.contains("UIGC_ORT_LIBRARY"), "{err}");
    // A file that is not a shared library.
    let (ok, _, err) = run(uigc()
        .arg("encode")
        .arg(tiny_model_dir().join("golden/input.png"))
        .args(["-o", "/dev/null", "--model"])
        .arg(tiny_model_dir())
        .arg("--ort-lib")
        .arg(tiny_model_dir().join("prior.bin")));
    assert!(!ok);
    assert!(err.contains("could not load ONNX Runtime"), "{err}");
}

#[test]
fn unavailable_gpu_provider_is_an_error_not_a_fallback() {
    for ep in ["cuda", "tensorrt"] {
        let (ok, _, err) = run(uigc()
            .arg("encode")
            .arg(tiny_model_dir().join("golden/input.png"))
            .args(["-o", "/dev/null", "--ep", ep, "--model"])
            .arg(tiny_model_dir()));
        assert!(!ok, "--ep {ep} must not fall back to the CPU");
        assert!(
            err.contains(&format!("execution provider '{ep}' is not available")),
            "{err}"
        );
    }
    let (ok, _, err) = run(uigc()
        .arg("encode")
        .arg(tiny_model_dir().join("golden/input.png"))
        .args(["-o", "/dev/null", "--ep", "auto", "--model"])
        .arg(tiny_model_dir()));
    assert!(ok, "{err}");
    assert!(err.contains("on cpu"), "auto must say what runs: {err}");
    let (ok, _, err) = run(uigc().args(["encode", "a.png", "-o", "b", "--ep", "gpu"]));
    assert!(!ok);
    assert!(err.contains("invalid value 'gpu'"), "{err}");
}

/// `--model` repeated: the encoder reports which model its rate control chose, a decoder given
/// the same models decodes the packet.
#[test]
fn several_models_on_the_command_line() {
    let (dir, input, packet, output) = scratch("set");
    let (ok, out, err) = run(encode(&input, &packet)
        .args(["--max-bytes", "60", "--model"])
        .arg(tiny_model_dir())
        .arg("--model")
        .arg(tiny_model_b_dir()));
    assert!(ok, "{err}");
    assert!(out.contains("with model tiny-model"), "{out}");
    assert!(std::fs::metadata(&packet).unwrap().len() <= 60);
    let (ok, _, err) = run(uigc()
        .arg("decode")
        .arg(&packet)
        .arg("-o")
        .arg(&output)
        .arg("--model")
        .arg(tiny_model_b_dir())
        .arg("--model")
        .arg(tiny_model_dir()));
    assert!(ok, "{err}");
    // The same bundle twice: one clear error.
    let (ok, _, err) = run(encode(&input, &packet)
        .arg("--model")
        .arg(tiny_model_dir())
        .arg("--model")
        .arg(tiny_model_dir()));
    assert!(!ok);
    assert!(err.contains("same model id"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn closed_stdout_is_not_a_panic() {
    // `uigc info x.uigc | head -1`: the reader is gone before uigc writes. Rust ignores SIGPIPE,
    // so a plain println! would panic there; the tool must end quietly instead.
    let (dir, input, packet, _) = scratch("pipe");
    let (ok, _, err) = run(encode(&input, &packet).arg("--model").arg(tiny_model_dir()));
    assert!(ok, "{err}");
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = uigc()
        .arg("info")
        .arg(&packet)
        .stdout(writer)
        .output()
        .expect("run uigc");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
