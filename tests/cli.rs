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
    let (code, out, err) = run_code(cmd);
    (code == Some(0), out, err)
}

/// Runs `cmd`: (exit code, stdout, stderr).
fn run_code(cmd: &mut Command) -> (Option<i32>, String, String) {
    let out = cmd.output().expect("run uigc");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd`, which must fail as the tool's own errors do: exit code 1 and exactly one
/// `uigc: error:` line, which is returned.
fn error_line(cmd: &mut Command) -> String {
    let (code, _, err) = run_code(cmd);
    assert_eq!(code, Some(1), "exit code; stderr:\n{err}");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("uigc: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    lines[0].to_owned()
}

/// Runs `cmd`, which must be refused by the argument parser: exit code 2 and clap's message.
fn usage_error(cmd: &mut Command) -> String {
    let (code, _, err) = run_code(cmd);
    assert_eq!(code, Some(2), "exit code; stderr:\n{err}");
    assert!(err.starts_with("error:"), "{err}");
    err
}

#[test]
fn help_is_complete() {
    let (ok, out, _) = run(uigc().arg("--help"));
    assert!(ok);
    for word in [
        "encode",
        "decode",
        "tokens",
        "info",
        "bench",
        "stream-encode",
        "stream-decode",
    ] {
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
                "--density",
                "--colour",
                "--stream-id",
                "--frame",
                "--max-pixels",
                "--work-limit",
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
                "--max-pixels",
                "--work-limit",
            ][..],
        ),
        (
            "tokens",
            &[
                "--model",
                "--regen",
                "--threads",
                "--max-pixels",
                "--work-limit",
            ][..],
        ),
        (
            "bench",
            &["--keep", "--repeat", "--model", "--threads", "--ort-lib"][..],
        ),
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

    // A packet for another model: one line naming both models, exit code 1, no output file.
    std::fs::remove_file(&output).unwrap();
    let (id_a, id_b) = (
        load(&model).model_id().to_string(),
        load(&tiny_model_b_dir()).model_id().to_string(),
    );
    let line = error_line(
        uigc()
            .arg("decode")
            .arg(&packet)
            .arg("-o")
            .arg(&output)
            .arg("--model")
            .arg(tiny_model_b_dir()),
    );
    assert!(
        line.contains(&format!("packet was made with model {id_a}"))
            && line.contains(&format!("this decoder runs model {id_b}")),
        "{line}"
    );
    assert!(!output.exists(), "a refused packet wrote an image");
    // A corrupt packet: one line naming the file and the failed check (the packet check).
    let mut bytes = std::fs::read(&packet).unwrap();
    let n = bytes.len();
    bytes[n - 6] ^= 0x40;
    std::fs::write(&packet, &bytes).unwrap();
    let line = error_line(
        uigc()
            .arg("decode")
            .arg(&packet)
            .arg("-o")
            .arg(&output)
            .arg("--model")
            .arg(&model),
    );
    assert!(
        line.contains(&packet.display().to_string()) && line.contains("packet check mismatch"),
        "{line}"
    );
    assert!(!output.exists(), "a corrupt packet wrote an image");
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

/// `--model` repeated: the encoder reports which model its rate control chose (the K=4 model
/// under a small budget, the K=16 one under a large one), the packet names that model, and a
/// decoder given the same models decodes it.
#[test]
fn several_models_on_the_command_line() {
    let (dir, input, packet, output) = scratch("set");
    for (cap, name, bundle) in [
        ("16", "tiny-model-k4", tiny_model_k4_dir()),
        ("400", "tiny-model", tiny_model_dir()),
    ] {
        let (ok, out, err) = run(encode(&input, &packet)
            .args(["--max-bytes", cap, "--model"])
            .arg(tiny_model_dir())
            .arg("--model")
            .arg(tiny_model_k4_dir()));
        assert!(ok, "{err}");
        assert!(out.contains(&format!(" with model {name};")), "{out}");
        assert!(std::fs::metadata(&packet).unwrap().len() <= cap.parse::<u64>().unwrap());
        let (ok, info, err) = run(uigc().arg("info").arg(&packet));
        assert!(ok, "{err}");
        let id = load(&bundle).model_id().to_string();
        assert!(info.contains(&format!("model id:      {id}\n")), "{info}");
        let (ok, _, err) = run(uigc()
            .arg("decode")
            .arg(&packet)
            .arg("-o")
            .arg(&output)
            .arg("--model")
            .arg(tiny_model_k4_dir())
            .arg("--model")
            .arg(tiny_model_dir()));
        assert!(ok, "{err}");
    }
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

/// Every way a command can go wrong ends with exit code 1 and one line that names the cause, or
/// with clap's usage error (exit code 2) for a malformed option; nothing is written.
#[test]
fn error_paths_exit_non_zero_with_one_clear_line() {
    let (dir, input, packet, output) = scratch("errors");
    let model = tiny_model_dir();
    fn with_model<'a>(c: &'a mut Command, model: &std::path::Path) -> &'a mut Command {
        c.arg("--model").arg(model)
    }
    // Missing input, for every command that reads one.
    let missing = dir.join("absent.png");
    let line = error_line(with_model(&mut encode(&missing, &packet), &model));
    assert!(line.contains(&missing.display().to_string()), "{line}");
    for sub in ["decode", "info", "tokens", "bench"] {
        let mut c = uigc();
        c.arg(sub).arg(&missing);
        if sub == "decode" {
            c.arg("-o").arg(&output);
        }
        if sub != "info" {
            c.arg("--model").arg(&model);
        }
        let line = error_line(&mut c);
        assert!(
            line.contains(&missing.display().to_string()),
            "{sub}: {line}"
        );
    }
    // Not an image / not a packet.
    let text = model.join("manifest.toml");
    let line = error_line(with_model(&mut encode(&text, &packet), &model));
    assert!(line.contains(&text.display().to_string()), "{line}");
    let line = error_line(uigc().arg("info").arg(&text));
    assert!(line.contains("not a uigc packet"), "{line}");
    let line = error_line(with_model(
        uigc()
            .arg("tokens")
            .arg(&input)
            .arg("--regen")
            .arg("argmax"),
        &model,
    ));
    assert!(line.contains("not a uigc packet"), "{line}");
    assert!(!packet.exists());
    // Unwritable output (a directory that does not exist).
    let nowhere = dir.join("no-such-dir/x.uigc");
    let line = error_line(with_model(&mut encode(&input, &nowhere), &model));
    assert!(line.contains(&nowhere.display().to_string()), "{line}");
    let (ok, _, err) = run(with_model(&mut encode(&input, &packet), &model));
    assert!(ok, "{err}");
    let nowhere_png = dir.join("no-such-dir/x.png");
    let line = error_line(with_model(
        uigc()
            .arg("decode")
            .arg(&packet)
            .arg("-o")
            .arg(&nowhere_png),
        &model,
    ));
    assert!(line.contains(&nowhere_png.display().to_string()), "{line}");
    std::fs::remove_file(&packet).unwrap();
    // A budget below the smallest packet: the frame is skipped, no file is written.
    let line = error_line(with_model(
        encode(&input, &packet).args(["--max-bytes", "8"]),
        &model,
    ));
    assert!(
        line.contains("a budget of 8 bytes is below the smallest packet")
            && line.contains("frame skipped"),
        "{line}"
    );
    assert!(!packet.exists(), "a skipped frame wrote a packet");
    // Malformed option values checked by uigc itself ...
    for (flag, value, needle) in [
        ("--keep", "most", "most"),
        ("--keep", "stages:11", "11"),
        ("--colour", "sometimes", "sometimes"),
        ("--colour", "on:7:4", "7"),
        ("--density", "thick", "thick"),
    ] {
        let line = error_line(with_model(
            encode(&input, &packet).args([flag, value]),
            &model,
        ));
        assert!(line.contains(needle), "{flag} {value}: {line}");
        assert!(!packet.exists(), "{flag} {value} wrote a packet");
    }
    for sub in ["decode", "tokens"] {
        let golden = repo().join("tests/data/golden-packet/packet.uigc");
        let mut c = uigc();
        c.arg(sub).arg(&golden).args(["--regen", "best"]);
        if sub == "decode" {
            c.arg("-o").arg(&output);
        }
        let line = error_line(with_model(&mut c, &model));
        assert!(line.contains("'best'"), "{sub}: {line}");
    }
    let line = error_line(with_model(
        uigc().arg("bench").arg(&input).args(["--keep", "most"]),
        &model,
    ));
    assert!(line.contains("most"), "{line}");
    assert!(!output.exists());
    // ... and those the argument parser refuses.
    for args in [
        &["--extra", "-1"][..],
        &["--max-bytes", "many"][..],
        &["--frame", "4294967296"][..],
        &["--ep", "gpu"][..],
        &["--bogus"][..],
    ] {
        let mut c = encode(&input, &packet);
        c.args(args);
        let err = usage_error(&mut c);
        assert!(
            err.contains(args[0]) || err.contains(args.get(1).unwrap_or(&"")),
            "{args:?}: {err}"
        );
    }
    usage_error(uigc().arg("encode").arg(&input));
    usage_error(uigc().arg("frobnicate"));
    // No command at all: the help, as a usage error.
    let (code, _, err) = run_code(&mut uigc());
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("Usage: uigc"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `uigc tokens` prints the committed golden packet's token grid, on the integer prior and with
/// no ONNX Runtime at all; a packet for another model is an error.
#[test]
fn tokens_prints_the_grid_without_onnx_runtime() {
    let golden = repo().join("tests/data/golden-packet");
    let want: Vec<String> = std::fs::read(golden.join("tokens.u16le"))
        .unwrap()
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]).to_string())
        .collect();
    let (code, out, err) = run_code(
        uigc()
            .env("UIGC_ORT_LIBRARY", "/nonexistent/libonnxruntime.so")
            .arg("tokens")
            .arg(golden.join("packet.uigc"))
            .arg(golden.join("packet.uigc"))
            .arg("--model")
            .arg(tiny_model_dir()),
    );
    assert_eq!(code, Some(0), "{err}");
    let line = format!("packet.uigc 13x21 {}", want.join(","));
    assert_eq!(out, format!("{line}\n{line}\n"));
    let line = error_line(
        uigc()
            .arg("tokens")
            .arg(golden.join("packet.uigc"))
            .arg("--model")
            .arg(tiny_model_b_dir()),
    );
    assert!(line.contains("packet was made with model"), "{line}");
}

/// `uigc bench` prints one row per image and the summary line.
#[test]
fn bench_reports_each_image_and_a_summary() {
    let input = tiny_model_dir().join("golden/input.png");
    let (code, out, err) = run_code(
        uigc()
            .arg("bench")
            .arg(&input)
            .arg(&input)
            .args(["--keep", "quarter", "--repeat", "2", "--model"])
            .arg(tiny_model_dir()),
    );
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("image") && lines[0].contains("dec ms"),
        "{out}"
    );
    for row in &lines[1..3] {
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols[0], "input.png", "{row}");
        assert_eq!(cols[1], "64x48", "{row}");
        assert!(cols[2].parse::<usize>().unwrap() > 0, "{row}");
    }
    assert!(
        lines[3].starts_with("mean over 2 images:")
            && lines[3].contains("model tiny-model,")
            && lines[3].contains("7 of 10 stages"),
        "{out}"
    );
}

/// JPEG input is read (the `image` crate's jpeg decoder is built in), as `--help` promises, and a
/// folder of JPEG frames becomes a packet stream that decodes back.
#[test]
fn jpeg_frames_encode_as_stills_and_as_a_stream() {
    let (dir, input, packet, output) = scratch("jpeg");
    let model = tiny_model_dir();
    let img = image::open(&input).unwrap();
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    for i in 0..3 {
        img.save(frames.join(format!("f{i}.jpg"))).unwrap();
    }
    // `uigc SUB IN -o OUT --model tiny-model`, which must succeed; its stdout.
    let ok = |sub: &str, from: &std::path::Path, to: &std::path::Path| {
        let (ok, out, err) = run(uigc()
            .arg(sub)
            .arg(from)
            .arg("-o")
            .arg(to)
            .arg("--model")
            .arg(&model));
        assert!(ok, "{sub}: {err}");
        out
    };
    ok("encode", &frames.join("f0.jpg"), &packet);
    ok("decode", &packet, &output);
    let stream = dir.join("s.uigcs");
    let out = ok("stream-encode", &frames, &stream);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.lines().nth(1).unwrap().contains("\"type\": \"inter\""),
        "{out}"
    );
    let decoded = dir.join("dec");
    let out = ok("stream-decode", &stream, &decoded);
    assert_eq!(out.matches("\"exact\"").count(), 3, "{out}");
    assert!(decoded.join("frame_00002.png").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 15: the encoder refuses a photo a default receiver would refuse (4000x3000, above the
/// default max-pixels) with one clear line naming the limit, before any network runs; with the
/// same larger limits on both ends it goes through. A frame above the work limit is padded to
/// one byte per token and decodes; a decoder with a lower work limit than the encoder's refuses
/// the unpadded packet by name.
#[test]
fn receiver_limits_hold_on_both_ends() {
    let (dir, _, packet, output) = scratch("limits");
    let model = tiny_model_dir();
    let big = dir.join("photo-4000x3000.png");
    image::RgbImage::from_pixel(4000, 3000, image::Rgb([90, 120, 200]))
        .save(&big)
        .unwrap();
    let line = error_line(encode(&big, &packet).arg("--model").arg(&model));
    assert!(
        line.contains("a 4000x3000 frame is 12000000 pixels, above the 8294400 a receiver accepts"),
        "{line}"
    );
    assert!(!packet.exists());
    // 320x240 = 300 tokens: above a work limit of 100, so the packet is padded to 300 bytes.
    let small = dir.join("frame-320x240.png");
    image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 60]))
        .save(&small)
        .unwrap();
    let (ok, out, err) = run(encode(&small, &packet).args(["--model"]).arg(&model).args([
        "--work-limit",
        "100",
        "--colour",
        "off",
    ]));
    assert!(ok, "{err}");
    assert!(
        out.contains("zero bytes of padding for receivers with work limit 100 tokens"),
        "{out}"
    );
    assert_eq!(std::fs::metadata(&packet).unwrap().len(), 300);
    let (ok, _, err) = run(uigc()
        .arg("decode")
        .arg(&packet)
        .arg("-o")
        .arg(&output)
        .arg("--model")
        .arg(&model)
        .args(["--work-limit", "100"]));
    assert!(ok, "{err}");
    let (ok, _, err) = run(encode(&small, &packet)
        .arg("--model")
        .arg(&model)
        .args(["--colour", "off"]));
    assert!(ok, "{err}");
    let line = error_line(
        uigc()
            .arg("decode")
            .arg(&packet)
            .arg("-o")
            .arg(&output)
            .arg("--model")
            .arg(&model)
            .args(["--work-limit", "100"]),
    );
    assert!(
        line.contains("asks for 300 tokens of work (a 320x240 frame)"),
        "{line}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `stream-decode --render`: each packet's JSON line says how its picture was made; `tiles` with
/// a model that has no tile graph is an error naming the model, a mode that does not exist a
/// usage error.
#[test]
fn stream_decode_render_modes() {
    let (dir, input, _, _) = scratch("render");
    let model = tiny_model_dir();
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let img = image::open(&input).unwrap();
    for i in 0..2 {
        img.save(frames.join(format!("f{i}.png"))).unwrap();
    }
    let stream = dir.join("s.uigcs");
    let (ok, _, err) = run(uigc()
        .arg("stream-encode")
        .arg(&frames)
        .arg("-o")
        .arg(&stream)
        .arg("--model")
        .arg(&model));
    assert!(ok, "{err}");
    let decode = |mode: &str| {
        let mut c = uigc();
        c.arg("stream-decode")
            .arg(&stream)
            .arg("-o")
            .arg(dir.join(format!("dec-{mode}")))
            .arg("--model")
            .arg(&model)
            .args(["--render", mode]);
        c
    };
    let (ok, out, err) = run(&mut decode("full"));
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("\"render\": \"full\""), "{out}");
    // The same frame again: no token changed, the last picture is reused.
    assert!(lines[1].contains("\"render\": \"reused\""), "{out}");
    assert!(
        err.contains("render full: 1 full decodes, 0 tiled frames"),
        "{err}"
    );
    let line = error_line(&mut decode("tiles"));
    assert!(
        line.contains("--render tiles: model") && line.contains("has no tile graph"),
        "{line}"
    );
    assert!(usage_error(&mut decode("tile")).contains("[possible values: auto, full, tiles]"));
    let _ = std::fs::remove_dir_all(&dir);
}
