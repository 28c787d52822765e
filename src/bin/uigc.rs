//! `uigc`: encode a photo into one uigc packet, decode it back, inspect packets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};
use gstuigc::codec::{
    self, bitstream, default_model_dir, Colour, Density, ExecutionProvider, FrameParams,
    KeepPolicy, Model, ModelSet, RegenMode, RgbImage, RuntimeOptions,
};

/// uigc: ultra-low-bitrate image coding with a VQ tokenizer and a multi-stage prior.
///
/// A frame becomes one self-contained packet of a few hundred bytes. The model (a bundle
/// directory) defaults to the shipped `uigc-small`; ONNX Runtime is loaded from --ort-lib,
/// UIGC_ORT_LIBRARY, ORT_DYLIB_PATH, or where the setup installed it.
#[derive(Parser)]
#[command(name = "uigc", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model bundle directory [default: UIGC_MODEL, else the shipped models/uigc-small]. Repeat
    /// it for several models (e.g. two codebooks): under --max-bytes the encoder picks one per
    /// frame, the decoder uses the one the packet names
    #[arg(long, value_name = "DIR")]
    model: Vec<PathBuf>,
    /// Execution provider for the tokenizer networks: cpu, cuda, tensorrt or auto
    /// (a requested GPU provider that is unavailable is an error, never a silent CPU fallback)
    #[arg(long, value_name = "EP", value_enum, default_value_t = Ep::Cpu)]
    ep: Ep,
    /// Threads for the tokenizer networks and the prior (0 = default; packets and decoded
    /// frames never depend on it)
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Path of libonnxruntime.so [default: UIGC_ORT_LIBRARY, ORT_DYLIB_PATH, setup's location]
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Ep {
    Cpu,
    Cuda,
    Tensorrt,
    Auto,
}

impl From<Ep> for ExecutionProvider {
    fn from(e: Ep) -> Self {
        match e {
            Ep::Cpu => Self::Cpu,
            Ep::Cuda => Self::Cuda,
            Ep::Tensorrt => Self::TensorRt,
            Ep::Auto => Self::Auto,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Encode an image (PNG/any 8-bit RGB the `image` crate reads) into a .uigc packet
    Encode {
        /// Input image
        input: PathBuf,
        /// Output packet file
        #[arg(short, long, value_name = "OUT.uigc")]
        output: PathBuf,
        /// Which tokens to send: all, half, quarter, eighth, sixteenth, thirty-second,
        /// sixty-fourth, 1/N or stages:N (a prefix of the stage schedule); the decoder
        /// regenerates the rest. With --max-bytes: the most that may be sent
        #[arg(long, value_name = "POLICY", default_value = "all")]
        keep: String,
        /// Adaptive keep: also send this many tokens of the first dropped stage, chosen by the
        /// encoder (those the decoder's argmax would get wrong, cheapest first)
        #[arg(long, value_name = "N", default_value_t = 0)]
        extra: usize,
        /// Hard cap on the packet size in bytes: rate control picks the stage prefix and the
        /// adaptive token count that fit; a cap below the smallest packet skips the frame
        #[arg(long, value_name = "BYTES")]
        max_bytes: Option<usize>,
        /// Token grid: normal (one token per 16x16 pixels), dense (the frame at twice its size:
        /// four tokens per 16x16 pixels, the top of the rate ladder) or auto (dense only when
        /// --max-bytes leaves room for it)
        #[arg(long, value_name = "DENSITY", default_value = "auto")]
        density: String,
        /// Colour thumbnail (the frame's block means in YCbCr, a few hundred bytes that fix the
        /// decoded colours): off, on, or auto (only when every token is sent, and under
        /// --max-bytes only when it still fits with every token); optionally :BLOCK:STEP
        /// (block side 8..128 px, quantiser step 1..32), e.g. on:32:4
        #[arg(long, value_name = "MODE", default_value = "auto")]
        colour: String,
        /// Stream id written into the packet (identifies the sender)
        #[arg(long, default_value_t = 0)]
        stream_id: u32,
        /// Frame counter written into the packet
        #[arg(long, default_value_t = 0)]
        frame: u32,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Decode a .uigc packet into a PNG image
    Decode {
        /// Input packet file
        input: PathBuf,
        /// Output PNG
        #[arg(short, long, value_name = "OUT.png")]
        output: PathBuf,
        /// How to regenerate tokens that were not sent: argmax (one pass, as in the paper),
        /// iterative[:PASSES[:SHARPEN]] (most confident first, MaskGIT-style; SHARPEN samples the
        /// candidates) or sample[:SHARPEN]
        /// (seeded from the packet, temperature 1/SHARPEN)
        #[arg(long, value_name = "MODE", default_value = "argmax")]
        regen: String,
        /// Largest frame to decode, in pixels (width x height; twice each side for a dense
        /// packet): larger packets are refused before any work [default: 3840x2160]
        #[arg(long, value_name = "PIXELS")]
        max_pixels: Option<u64>,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Decode a packet's token grid only (no tokenizer network, no ONNX Runtime): prints the
    /// grid as text, for cross-machine checks
    Tokens {
        /// Input packet files
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Regeneration mode (as for decode)
        #[arg(long, value_name = "MODE", default_value = "argmax")]
        regen: String,
        /// Model bundle directory [default: the shipped model]
        #[arg(long, value_name = "DIR")]
        model: Option<PathBuf>,
        /// Worker threads of the prior (0 = all cores; results never depend on it)
        #[arg(long, value_name = "N", default_value_t = 0)]
        threads: usize,
    },
    /// Benchmark: per image, tokenizer time and prior + range-coding time of encoding and
    /// decoding (all stages, or the given keep policy); prints a table and a summary
    Bench {
        /// Input images
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Keep policy to encode with
        #[arg(long, value_name = "POLICY", default_value = "all")]
        keep: String,
        /// Repetitions per image (the minimum time is reported)
        #[arg(long, value_name = "N", default_value_t = 1)]
        repeat: usize,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Print a packet's header fields, size and bits per pixel (no model needed)
    Info {
        /// Input packet file
        input: PathBuf,
    },
}

/// `println!` for the tool's reports. A closed stdout (`uigc info x.uigc | head -3`) ends the
/// process quietly with success, as SIGPIPE ends C tools, instead of panicking (Rust ignores
/// SIGPIPE, so `println!` panics there); any other write error is returned as an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(format!("writing to stdout: {e}"));
        }
    }};
}

fn runtime_options(m: &ModelArgs) -> RuntimeOptions {
    RuntimeOptions {
        library: m.ort_lib.clone(),
        provider: m.ep.into(),
        threads: m.threads,
    }
}

fn load_models(m: &ModelArgs) -> Result<ModelSet, String> {
    let opts = runtime_options(m);
    let dirs = if m.model.is_empty() {
        vec![default_model_dir().map_err(|e| e.to_string())?]
    } else {
        m.model.clone()
    };
    let mut models = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let t = Instant::now();
        let model = Model::load(dir, &opts).map_err(|e| e.to_string())?;
        eprintln!(
            "model {} ({}, id {}, K={}) on {} loaded in {:.0} ms",
            model.bundle().name,
            dir.display(),
            model.model_id(),
            model.bundle().codebook_size,
            model.provider(),
            t.elapsed().as_secs_f64() * 1e3
        );
        models.push(model);
    }
    ModelSet::new(models).map_err(|e| e.to_string())
}

fn read_image(path: &Path) -> Result<RgbImage, String> {
    let img = image::open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .to_rgb8();
    let (w, h) = img.dimensions();
    RgbImage::new(w, h, img.into_raw()).map_err(|e| format!("{}: {e}", path.display()))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Encode {
            input,
            output,
            keep,
            extra,
            max_bytes,
            density,
            colour,
            stream_id,
            frame,
            model,
        } => {
            let keep: KeepPolicy = keep.parse().map_err(|e: codec::Error| e.to_string())?;
            let density: Density = density.parse().map_err(|e: codec::Error| e.to_string())?;
            let colour: Colour = colour.parse().map_err(|e: codec::Error| e.to_string())?;
            let image = read_image(&input)?;
            let mut models = load_models(&model)?;
            let stages = keep
                .stages(&models.primary().bundle().schedule)
                .map_err(|e| e.to_string())?;
            let params = FrameParams {
                stream_id,
                frame,
                stages: Some(stages),
                extra,
                max_bytes,
                colour,
                ..Default::default()
            };
            let (chosen, enc) = models
                .encode_auto(&image, params, density)
                .map_err(|e| e.to_string())?;
            write_file(&output, &enc.packet.bytes)?;
            let p = &enc.packet;
            out!(
                "{} -> {}: {}x{}, {} bytes, {:.4} bpp ({} of {} {}tokens: {} stages + {} adaptive; \
                 payload {} bits, ideal {:.0} bits{}){}; tokenizer {:.1} ms, prior+coding {:.1} ms",
                input.display(),
                output.display(),
                image.width,
                image.height,
                p.bytes.len(),
                enc.bpp(),
                p.coded_tokens,
                enc.tokens.tokens.len(),
                if p.header.dense() { "dense " } else { "" },
                p.header.stages,
                p.extra_tokens,
                p.payload_bits,
                p.ideal_bits,
                match p.header.colour {
                    Some(c) => format!(
                        ", colour thumbnail {}x{} px blocks step {}: {:.0} bits",
                        c.block(),
                        c.block(),
                        c.step,
                        p.colour_bits
                    ),
                    None => String::new(),
                },
                if models.models().len() > 1 {
                    format!(" with model {}", models.models()[chosen].bundle().name)
                } else {
                    String::new()
                },
                enc.timings.network.as_secs_f64() * 1e3,
                enc.timings.coding.as_secs_f64() * 1e3,
            );
        }
        Command::Decode {
            input,
            output,
            regen,
            max_pixels,
            model,
        } => {
            let regen: RegenMode = regen.parse().map_err(|e: codec::Error| e.to_string())?;
            let bytes = std::fs::read(&input).map_err(|e| format!("{}: {e}", input.display()))?;
            let mut models = load_models(&model)?;
            for m in models.models_mut() {
                m.token_codec().set_regen(regen);
                m.token_codec()
                    .set_max_pixels(max_pixels.unwrap_or(codec::DEFAULT_MAX_PIXELS));
            }
            let dec = models
                .decode(&bytes)
                .map_err(|e| format!("{}: {e}", input.display()))?;
            let img = &dec.image;
            image::save_buffer(
                &output,
                &img.data,
                img.width,
                img.height,
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| format!("{}: {e}", output.display()))?;
            let coded = dec.tokens.coded.iter().filter(|&&c| c).count();
            out!(
                "{} -> {}: {}x{}, {} bytes, {:.4} bpp ({} coded + {} regenerated tokens); \
                 prior+decoding {:.1} ms, tokenizer {:.1} ms",
                input.display(),
                output.display(),
                img.width,
                img.height,
                bytes.len(),
                bytes.len() as f64 * 8.0 / (img.width as f64 * img.height as f64),
                coded,
                dec.tokens.coded.len() - coded,
                dec.timings.coding.as_secs_f64() * 1e3,
                dec.timings.network.as_secs_f64() * 1e3,
            );
        }
        Command::Tokens {
            inputs,
            regen,
            model,
            threads,
        } => {
            let regen: RegenMode = regen.parse().map_err(|e: codec::Error| e.to_string())?;
            let dir = match model {
                Some(d) => d,
                None => default_model_dir().map_err(|e| e.to_string())?,
            };
            let bundle = codec::Bundle::load(&dir).map_err(|e| e.to_string())?;
            let mut tc =
                codec::token_codec_with_threads(&bundle, threads).map_err(|e| e.to_string())?;
            tc.set_regen(regen);
            for input in inputs {
                let bytes =
                    std::fs::read(&input).map_err(|e| format!("{}: {e}", input.display()))?;
                let dec = tc
                    .decode(&bytes)
                    .map_err(|e| format!("{}: {e}", input.display()))?;
                let g = &dec.grid;
                let text: Vec<String> = g.tokens.iter().map(|t| t.to_string()).collect();
                out!(
                    "{} {}x{} {}",
                    input.file_name().unwrap_or_default().to_string_lossy(),
                    g.rows,
                    g.cols,
                    text.join(",")
                );
            }
        }
        Command::Bench {
            inputs,
            keep,
            repeat,
            model,
        } => bench(&inputs, &keep, repeat.max(1), &model)?,
        Command::Info { input } => {
            let bytes = std::fs::read(&input).map_err(|e| format!("{}: {e}", input.display()))?;
            let p =
                bitstream::parse_packet(&bytes).map_err(|e| format!("{}: {e}", input.display()))?;
            let h = &p.header;
            let (rows, cols) = h.grid();
            out!("file:          {}", input.display());
            out!("version:       {}", h.version);
            out!("flags:         {:#x}", h.flags);
            out!("model id:      {}", h.model_id);
            out!("stream id:     {}", h.stream_id);
            out!("frame:         {}", h.frame);
            out!(
                "size:          {}x{} pixels, {}x{} tokens",
                h.width,
                h.height,
                cols,
                rows
            );
            out!("coded stages:  {}", h.stages);
            out!(
                "adaptive:      {}",
                if h.flags & bitstream::FLAG_ADAPTIVE != 0 {
                    "yes"
                } else {
                    "no"
                }
            );
            out!("dense:         {}", if h.dense() { "yes" } else { "no" });
            match h.colour {
                Some(c) => {
                    let (r, k) = c.grid(h.width, h.height);
                    out!(
                        "colour:        thumbnail of {k}x{r} blocks of {}x{} px, step {}",
                        c.block(),
                        c.block(),
                        c.step
                    )
                }
                None => out!("colour:        no thumbnail"),
            }
            out!("check value:   {:#06x}", h.check);
            out!(
                "bytes:         {} (header {}, payload {})",
                bytes.len(),
                bytes.len() - p.payload.len(),
                p.payload.len()
            );
            out!(
                "bpp:           {:.4}",
                bytes.len() as f64 * 8.0 / (h.width as f64 * h.height as f64)
            );
        }
    }
    Ok(())
}

fn bench(inputs: &[PathBuf], keep: &str, repeat: usize, args: &ModelArgs) -> Result<(), String> {
    let keep: KeepPolicy = keep.parse().map_err(|e: codec::Error| e.to_string())?;
    let mut models = load_models(args)?;
    let model = models.primary();
    let stages = keep
        .stages(&model.bundle().schedule)
        .map_err(|e| e.to_string())?;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    out!(
        "{:<28} {:>9} {:>7} {:>8} {:>10} {:>10} {:>10}",
        "image",
        "size",
        "bytes",
        "bpp",
        "tok ms",
        "enc ms",
        "dec ms"
    );
    let (mut sum_enc, mut sum_dec, mut sum_tok) = (0.0, 0.0, 0.0);
    for input in inputs {
        let image = read_image(input)?;
        let (mut tok_t, mut enc_t, mut dec_t) = (f64::MAX, f64::MAX, f64::MAX);
        let mut bytes = Vec::new();
        for _ in 0..repeat {
            let t = Instant::now();
            let grid = model.tokenize(&image).map_err(|e| e.to_string())?;
            tok_t = tok_t.min(ms(t.elapsed()));
            let params = FrameParams {
                stages: Some(stages),
                ..Default::default()
            };
            let t = Instant::now();
            let enc = model
                .token_codec()
                .encode(&grid, image.width, image.height, params)
                .map_err(|e| e.to_string())?;
            enc_t = enc_t.min(ms(t.elapsed()));
            let t = Instant::now();
            model
                .token_codec()
                .decode(&enc.bytes)
                .map_err(|e| e.to_string())?;
            dec_t = dec_t.min(ms(t.elapsed()));
            bytes = enc.bytes;
        }
        out!(
            "{:<28} {:>9} {:>7} {:>8.4} {:>10.1} {:>10.1} {:>10.1}",
            input.file_name().unwrap_or_default().to_string_lossy(),
            format!("{}x{}", image.width, image.height),
            bytes.len(),
            bytes.len() as f64 * 8.0 / (image.width as f64 * image.height as f64),
            tok_t,
            enc_t,
            dec_t
        );
        sum_tok += tok_t;
        sum_enc += enc_t;
        sum_dec += dec_t;
    }
    let n = inputs.len() as f64;
    let b = model.bundle();
    out!(
        "mean over {} images: tokenizer {:.1} ms, prior+coding encode {:.1} ms, decode {:.1} ms \
         (model {}, prior {}, {} of {} stages: {} query passes + {} known passes per token \
         position set, threads {})",
        inputs.len(),
        sum_tok / n,
        sum_enc / n,
        sum_dec / n,
        b.name,
        b.prior_kind,
        stages,
        b.schedule.num_stages(),
        stages,
        stages.saturating_sub(1),
        if args.threads == 0 {
            "all".to_string()
        } else {
            args.threads.to_string()
        }
    );
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uigc: error: {e}");
            ExitCode::FAILURE
        }
    }
}
