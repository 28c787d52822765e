//! `uigc`: encode a photo into one uigc packet, decode it back, inspect packets.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Parser, Subcommand};

#[cfg(feature = "gateway")]
#[path = "uigc/gateway.rs"]
mod gateway_cmd;
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
    /// Tokenizer encoder: full (the model's own) or fast (the bundle's cheaper distilled
    /// encoder: same codebook, same decoder, same model id; an error if the bundle has none)
    #[arg(long, value_name = "ENCODER", default_value = "full", value_parser = parse_encoder)]
    encoder: codec::EncoderChoice,
    /// Tokenizer decoder: auto (the bundle's fast decoder when it has one and --ep is cpu, else
    /// the full one), full (the model's float graphs), fast (int8 sub-pixel graphs: same
    /// tokens and model id, pictures within about 43 dB PSNR of full; an error if the bundle
    /// has none) or smooth (bilinear upsampling, without the 8-pixel grid: same tokens and
    /// model id; an error if the bundle has none)
    #[arg(long, value_name = "DECODER", default_value = "auto", value_parser = parse_decoder)]
    decoder: codec::DecoderChoice,
    /// Threads for the tokenizer networks and the prior (0 = default; packets and decoded
    /// frames never depend on it)
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Path of libonnxruntime.so [default: UIGC_ORT_LIBRARY, ORT_DYLIB_PATH, setup's location]
    #[arg(long, value_name = "FILE")]
    ort_lib: Option<PathBuf>,
    /// GPU index for --ep cuda / tensorrt
    #[arg(long, value_name = "N", default_value_t = 0)]
    device_id: u32,
    /// TensorRT engine cache directory [default: ~/.cache/uigc/trt/<model-id>-ort<version>-trt
    /// <version>, under UIGC_HOME when set]
    #[arg(long, value_name = "DIR")]
    trt_cache: Option<PathBuf>,
    /// TensorRT builds the tokenizer networks in FP16 (tokens may differ slightly from FP32)
    #[arg(long)]
    fp16: bool,
    /// Run the networks once on a WIDTHxHEIGHT frame after loading (the load line then gives
    /// the warm-up time: on TensorRT the engine build or cache load), and tune TensorRT's
    /// optimisation profile for that size [default: no warm-up, profile for 640x480]
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    warm_up: Option<(u32, u32)>,
    /// Largest frame, in pixels (width x height; twice each side for a dense packet): the
    /// decoder refuses larger packets before any work, the encoder refuses larger frames (a
    /// receiver would refuse them); give both ends the same value
    #[arg(long, value_name = "PIXELS", default_value_t = codec::DEFAULT_MAX_PIXELS)]
    max_pixels: u64,
    /// Work limit in tokens (16x16 pixels each; a dense packet has four per 16x16 pixels): a
    /// packet of B bytes may make the decoder work on at most max(TOKENS, B) tokens, the
    /// encoder pads packets of larger frames to one byte per token; give both ends the same
    /// value (docs/reliability.md)
    #[arg(long, value_name = "TOKENS", default_value_t = codec::DEFAULT_WORK_LIMIT)]
    work_limit: u64,
}

#[derive(Args, Clone)]
struct StreamArgs {
    /// An intra frame every N frames (0: only the first, and after a size change)
    #[arg(long, value_name = "N", default_value_t = 0)]
    keyframe_interval: u32,
    /// Frames per gradual-refresh cycle (every token row re-sent intra once per cycle, so a
    /// receiver recovers from loss without a keyframe; 0: off)
    #[arg(long, value_name = "N", default_value_t = codec::stream::DEFAULT_REFRESH_FRAMES)]
    refresh_frames: u32,
    /// Re-send a changed token only when its 16x16 block moved by at least this mean absolute
    /// difference (8-bit levels) since it was last sent; higher = fewer bytes, more lag
    #[arg(long, value_name = "LEVELS", default_value_t = codec::stream::DEFAULT_CHANGE_THRESHOLD)]
    change_threshold: f32,
    /// Colour thumbnail of the stream: off, on (auto = on), optionally :BLOCK:STEP
    #[arg(long, value_name = "MODE", default_value = "auto")]
    colour: String,
    /// Hard cap on every packet in bytes (keyframes and refreshes included)
    #[arg(long, value_name = "BYTES")]
    max_frame_bytes: Option<usize>,
    /// Link rate in bit/s: a leaky bucket of --bucket-seconds sets each frame's budget
    #[arg(long, value_name = "BIT/S")]
    target_bitrate: Option<u32>,
    /// Frame rate of the stream (for the bucket and the reports)
    #[arg(long, value_name = "FPS", default_value_t = 10.0)]
    fps: f64,
    /// Bucket size in seconds of --target-bitrate
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    bucket_seconds: f64,
    /// Stream id written into the packets
    #[arg(long, default_value_t = 0)]
    stream_id: u32,
}

impl StreamArgs {
    fn config(&self) -> Result<codec::StreamConfig, String> {
        Ok(codec::StreamConfig {
            stream_id: self.stream_id,
            keyframe_interval: self.keyframe_interval,
            refresh_frames: self.refresh_frames,
            change_threshold: self.change_threshold,
            colour: self
                .colour
                .parse()
                .map_err(|e: codec::Error| e.to_string())?,
            max_frame_bytes: self.max_frame_bytes,
            target_bitrate: self.target_bitrate,
            fps: self.fps,
            bucket_seconds: self.bucket_seconds,
        })
    }
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
        /// Token grid: normal (one token per 16x16 pixels), dense (four tokens per 16x16 pixels:
        /// the bundle's dense graphs, else the frame at twice its size; the top of the rate
        /// ladder) or auto (dense only when --max-bytes leaves room for it)
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
        /// Largest frame in pixels (as for decode)
        #[arg(long, value_name = "PIXELS", default_value_t = codec::DEFAULT_MAX_PIXELS)]
        max_pixels: u64,
        /// Work limit in tokens (as for decode)
        #[arg(long, value_name = "TOKENS", default_value_t = codec::DEFAULT_WORK_LIMIT)]
        work_limit: u64,
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
    /// Encode a camera stream (a folder of frames, or frame files in order) into a packet
    /// stream file (.uigcs: each packet preceded by its length, u32 little-endian): intra
    /// keyframes, inter frames that send only what changed, gradual refresh, link rate control.
    /// Prints one JSON line of statistics per frame
    StreamEncode {
        /// A folder of frames (image files in name order) or the frame files
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Output packet stream
        #[arg(short, long, value_name = "OUT.uigcs")]
        output: PathBuf,
        #[command(flatten)]
        stream: StreamArgs,
        /// Code at most this many frames
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Code every N-th frame only (e.g. 10: 1 fps from a 10 fps source)
        #[arg(long, value_name = "N", default_value_t = 1)]
        every: usize,
        /// Run the encoder network on its own thread, one frame ahead of the prior (the same
        /// packets; more frames/s on a multi-core CPU, one frame more latency)
        #[arg(long)]
        pipeline: bool,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Decode a packet stream (.uigcs) into PNG frames (frame_00000.png ...), one per packet,
    /// lost ones shown concealed; prints one JSON line per frame and a summary
    StreamDecode {
        /// Input packet stream
        input: PathBuf,
        /// Output folder
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// Simulate a lossy link: drop each packet with this probability (seeded)
        #[arg(long, value_name = "P", default_value_t = 0.0)]
        loss: f64,
        /// Seed of the simulated loss
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[command(flatten)]
        render: RenderArgs,
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Print a packet's header fields, size and bits per pixel (no model needed)
    Info {
        /// Input packet file
        input: PathBuf,
    },
    /// Ground station: receive many devices' packets on one UDP (and TCP) port, archive every
    /// packet, decode the streams, serve a live page, frames and metrics over HTTP
    #[cfg(feature = "gateway")]
    Gateway(gateway_cmd::GatewayArgs),
    /// Decode a stream of a gateway archive into PNG frames or a y4m video, or export its
    /// packets (.uigcs)
    #[cfg(feature = "gateway")]
    Replay(gateway_cmd::ReplayArgs),
    /// Verify a gateway archive: records, checksums, torn tails; per stream a JSON line with
    /// the count and the SHA-256 of its packets (that of the equivalent .uigcs file)
    /// Scale-out: decode the packets that gateways publish to NATS JetStream (`--nats`) and
    /// publish the frames; run any number of them, on any machine
    #[cfg(feature = "nats")]
    DecodeWorker(gateway_cmd::WorkerArgs),
    /// Scale-out viewer: the decoded frames of the JetStream frame stream, a JSON line each
    /// (and PNG files)
    #[cfg(feature = "nats")]
    Frames(gateway_cmd::FramesArgs),
    #[cfg(feature = "gateway")]
    ArchiveCheck {
        /// Archive root
        archive: PathBuf,
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

/// `WIDTHxHEIGHT`, each 1..=the largest frame side.
fn parse_size(s: &str) -> Result<(u32, u32), String> {
    let max = bitstream::MAX_DIMENSION;
    s.split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
        .filter(|&(w, h)| (1..=max).contains(&w) && (1..=max).contains(&h))
        .ok_or_else(|| format!("expected WIDTHxHEIGHT (1..{max} each), got '{s}'"))
}

fn parse_encoder(s: &str) -> Result<codec::EncoderChoice, String> {
    s.parse().map_err(|e: codec::Error| e.to_string())
}

fn parse_decoder(s: &str) -> Result<codec::DecoderChoice, String> {
    s.parse().map_err(|e: codec::Error| e.to_string())
}

fn runtime_options(m: &ModelArgs) -> RuntimeOptions {
    RuntimeOptions {
        library: m.ort_lib.clone(),
        provider: m.ep.into(),
        threads: m.threads,
        device_id: m.device_id,
        trt_cache: m.trt_cache.clone(),
        fp16: m.fp16,
        shape_hint: m.warm_up,
        role: codec::Role::Both,
        encoder: m.encoder,
        decoder: m.decoder,
    }
}

fn load_models(m: &ModelArgs) -> Result<ModelSet, String> {
    load_models_for(m, codec::Role::Both)
}

/// Loads the models, opening the networks of `role` (the others open on first use), warms
/// them up when asked, and says on stderr what runs each network.
fn load_models_for(m: &ModelArgs, role: codec::Role) -> Result<ModelSet, String> {
    let opts = RuntimeOptions {
        role,
        ..runtime_options(m)
    };
    let dirs = if m.model.is_empty() {
        vec![default_model_dir().map_err(|e| e.to_string())?]
    } else {
        m.model.clone()
    };
    let mut models = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let t = Instant::now();
        let mut model = Model::load(dir, &opts).map_err(|e| e.to_string())?;
        model.token_codec().set_max_pixels(m.max_pixels);
        model.token_codec().set_work_limit(m.work_limit);
        eprintln!(
            "model {} ({}, id {}, K={}) on {} loaded in {:.0} ms: {}",
            model.bundle().name,
            dir.display(),
            model.model_id(),
            model.bundle().codebook_size,
            model.provider(),
            t.elapsed().as_secs_f64() * 1e3,
            model.describe_networks()
        );
        if let Some((w, h)) = m.warm_up {
            let took = model.warm_up(w, h, role).map_err(|e| e.to_string())?;
            eprintln!(
                "model {}: warm-up at {w}x{h} took {:.0} ms",
                model.model_id(),
                took.as_secs_f64() * 1e3
            );
        }
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

fn write_png(path: &Path, img: &RgbImage) -> Result<(), String> {
    image::save_buffer(
        path,
        &img.data,
        img.width,
        img.height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| format!("{}: {e}", path.display()))
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
            let mut models = load_models_for(&model, codec::Role::Encoder)?;
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
            let work_limit = models.primary().token_codec().work_limit();
            let p = &enc.packet;
            out!(
                "{} -> {}: {}x{}, {} bytes, {:.4} bpp ({} of {} {}tokens: {} stages + {} adaptive; \
                 payload {} bits, ideal {:.0} bits{}{}){}; tokenizer {:.1} ms, prior+coding {:.1} ms",
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
                if p.padding > 0 {
                    format!(
                        ", {} zero bytes of padding for receivers with work limit {} tokens",
                        p.padding, work_limit
                    )
                } else {
                    String::new()
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
            model,
        } => {
            let regen: RegenMode = regen.parse().map_err(|e: codec::Error| e.to_string())?;
            let bytes = std::fs::read(&input).map_err(|e| format!("{}: {e}", input.display()))?;
            let mut models = load_models_for(&model, codec::Role::Decoder)?;
            for m in models.models_mut() {
                m.token_codec().set_regen(regen);
            }
            let dec = models
                .decode(&bytes)
                .map_err(|e| format!("{}: {e}", input.display()))?;
            let img = &dec.image;
            write_png(&output, img)?;
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
            max_pixels,
            work_limit,
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
            tc.set_max_pixels(max_pixels);
            tc.set_work_limit(work_limit);
            for input in inputs {
                let name = input.file_name().unwrap_or_default().to_string_lossy();
                let grids = if input.extension().is_some_and(|e| e == "uigcs") {
                    stream_grids(&mut tc, &read_stream(&input)?)
                        .map_err(|e| format!("{}: {e}", input.display()))?
                } else {
                    let bytes =
                        std::fs::read(&input).map_err(|e| format!("{}: {e}", input.display()))?;
                    let dec = tc
                        .decode(&bytes)
                        .map_err(|e| format!("{}: {e}", input.display()))?;
                    vec![dec.grid]
                };
                for (i, g) in grids.iter().enumerate() {
                    let text: Vec<String> = g.tokens.iter().map(|t| t.to_string()).collect();
                    let label = if grids.len() > 1 {
                        format!("{name}#{i}")
                    } else {
                        name.to_string()
                    };
                    out!("{label} {}x{} {}", g.rows, g.cols, text.join(","));
                }
            }
        }
        Command::Bench {
            inputs,
            keep,
            repeat,
            model,
        } => bench(&inputs, &keep, repeat.max(1), &model)?,
        Command::StreamEncode {
            inputs,
            output,
            stream,
            limit,
            every,
            pipeline,
            model,
        } => stream_encode(
            &inputs,
            &output,
            &stream,
            limit,
            every.max(1),
            pipeline,
            &model,
        )?,
        Command::StreamDecode {
            input,
            output,
            loss,
            seed,
            render,
            model,
        } => stream_decode(&input, &output, loss, seed, &render, &model)?,
        #[cfg(feature = "gateway")]
        Command::Gateway(a) => gateway_cmd::gateway(a)?,
        #[cfg(feature = "gateway")]
        Command::Replay(a) => gateway_cmd::replay(a)?,
        #[cfg(feature = "nats")]
        Command::DecodeWorker(a) => gateway_cmd::decode_worker(a)?,
        #[cfg(feature = "nats")]
        Command::Frames(a) => gateway_cmd::frames(a)?,
        #[cfg(feature = "gateway")]
        Command::ArchiveCheck { archive } => gateway_cmd::archive_check(&archive)?,
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

/// The frame files of `inputs`: a folder's image files in name order, or the files as given.
fn frame_files(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    if let [dir] = inputs {
        if dir.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().and_then(|e| e.to_str()).is_some_and(|e| {
                        matches!(
                            e.to_ascii_lowercase().as_str(),
                            "png" | "jpg" | "jpeg" | "ppm" | "bmp"
                        )
                    })
                })
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(format!("{}: no image files", dir.display()));
            }
            return Ok(files);
        }
    }
    Ok(inputs.to_vec())
}

fn stream_encode(
    inputs: &[PathBuf],
    output: &Path,
    args: &StreamArgs,
    limit: Option<usize>,
    every: usize,
    pipeline: bool,
    margs: &ModelArgs,
) -> Result<(), String> {
    let config = args.config()?;
    let files: Vec<PathBuf> = frame_files(inputs)?
        .into_iter()
        .step_by(every)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let mut models = load_models_for(margs, codec::Role::Encoder)?;
    let model = models.primary();
    let mut worker = if pipeline {
        let opts = runtime_options(margs);
        Some(
            codec::pipeline::TokenizerThread::spawn(model.bundle(), &opts)
                .map_err(|e| format!("--pipeline: {e}"))?,
        )
    } else {
        None
    };
    let mut enc = codec::StreamEncoder::new(config).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let (mut bytes, mut frames, mut skipped) = (0usize, 0usize, 0usize);
    let mut pixels = 0f64;
    let mut record = |i: usize, result: Result<codec::StreamPacket, codec::Error>| {
        let file = &files[i];
        match result {
            Ok(p) => {
                let b = &p.packet.bytes;
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
                bytes += b.len();
                frames += 1;
                out!(
                    "{{\"frame\": {}, \"input\": {:?}, \"type\": \"{}\", \"bytes\": {}, \
                     \"sent_tokens\": {}, \"held_tokens\": {}, \"refresh_rows\": {}, \
                     \"budget\": {}, \"bucket\": {}, \"tokenizer_ms\": {:.1}, \"coding_ms\": {:.1}}}",
                    p.packet.header.frame,
                    file.display().to_string(),
                    p.kind.as_str(),
                    b.len(),
                    p.sent_tokens,
                    p.held_tokens,
                    p.refresh_rows,
                    p.budget.map_or("null".into(), |b| b.to_string()),
                    p.bucket.map_or("null".into(), |b| format!("{b:.0}")),
                    p.timings.network.as_secs_f64() * 1e3,
                    p.timings.coding.as_secs_f64() * 1e3,
                );
                Ok(())
            }
            Err(codec::Error::BudgetTooSmall { budget, min }) => {
                skipped += 1;
                eprintln!("frame {i}: skipped (budget {budget} bytes, smallest packet {min})");
                Ok(())
            }
            Err(e) => Err(format!("{}: {e}", file.display())),
        }
    };
    // With --pipeline the network runs one frame ahead: frame i is tokenized while frame
    // i - 1 is coded, and the last one is coded after the loop.
    let mut coded = 0usize;
    let started = Instant::now();
    for (i, file) in files.iter().enumerate() {
        let image = read_image(file)?;
        pixels = image.width as f64 * image.height as f64;
        match worker.as_mut() {
            None => record(i, enc.encode(model, &image))?,
            Some(w) => {
                w.submit(image).map_err(|e| e.to_string())?;
                if w.in_flight() > 1 {
                    let t = w.receive().map_err(|e| e.to_string())?.expect("in flight");
                    let result = match t.tokens {
                        Ok(tokens) => enc.encode_tokenized(model, &t.image, tokens, t.network),
                        Err(e) => Err(e),
                    };
                    record(coded, result)?;
                    coded += 1;
                }
            }
        }
    }
    if let Some(w) = worker.as_mut() {
        while let Some(t) = w.receive().map_err(|e| e.to_string())? {
            let result = match t.tokens {
                Ok(tokens) => enc.encode_tokenized(model, &t.image, tokens, t.network),
                Err(e) => Err(e),
            };
            record(coded, result)?;
            coded += 1;
        }
    }
    let wall = started.elapsed().as_secs_f64();
    write_file(output, &out)?;
    let secs = files.len() as f64 / config.fps;
    eprintln!(
        "{} frames -> {}: {} packets, {} skipped, {} bytes, {:.0} B/frame, {:.2} kbit/s at {} fps, \
         {:.5} bpp; coded in {wall:.2} s ({:.2} frames/s, frame files read included{})",
        files.len(),
        output.display(),
        frames,
        skipped,
        bytes,
        bytes as f64 / files.len().max(1) as f64,
        bytes as f64 * 8.0 / secs.max(1e-9) / 1e3,
        config.fps,
        bytes as f64 * 8.0 / (pixels * files.len().max(1) as f64),
        files.len() as f64 / wall.max(1e-9),
        if pipeline { ", pipelined" } else { "" },
    );
    Ok(())
}

/// The token grid after each packet of a stream (intra and inter packets, in order, none lost).
fn stream_grids(
    tc: &mut codec::TokenCodec,
    packets: &[Vec<u8>],
) -> Result<Vec<codec::TokenGrid>, codec::Error> {
    let mut reference: Option<codec::Reference> = None;
    let mut out = Vec::with_capacity(packets.len());
    for p in packets {
        let header = bitstream::parse_packet(p)?.header;
        let next = match (&reference, header.is_inter()) {
            (Some(r), true) => tc.decode_inter(p, r, false)?.reference,
            _ => {
                let d = tc.decode(p)?;
                codec::Reference::intra(header.frame, header.width, header.height, d.grid, d.colour)
            }
        };
        out.push(next.grid.clone());
        reference = Some(next);
    }
    Ok(out)
}

/// Splits a packet stream file into its packets (a truncated last record is an error).
fn read_stream(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let len = data
            .get(pos..pos + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or_else(|| format!("{}: truncated record at byte {pos}", path.display()))?;
        let body = data
            .get(pos + 4..pos + 4 + len)
            .ok_or_else(|| format!("{}: truncated record at byte {pos}", path.display()))?;
        packets.push(body.to_vec());
        pos += 4 + len;
    }
    Ok(packets)
}

/// How the receiver renders pictures (docs/video.md "Receiver: rendering only what changed").
#[derive(clap::Args, Debug, Clone)]
struct RenderArgs {
    /// Decode only the tiles around changed tokens over the last picture (`tiles`), every
    /// picture whole (`full`), or tiles when the model has a tile graph (`auto`)
    #[arg(long, value_name = "MODE", default_value = "auto",
          value_parser = ["auto", "full", "tiles"])]
    render: String,
    /// A full decode after this many tiled frames (0: only keyframes and large changes)
    #[arg(long, value_name = "N", default_value_t = codec::render::DEFAULT_FULL_EVERY)]
    render_full_every: u32,
    /// A full decode when the tiles would cover more than this share of the picture
    #[arg(long, value_name = "F", default_value_t = codec::render::DEFAULT_MAX_SHARE)]
    render_max_share: f32,
    /// Tokens repainted around each changed token
    #[arg(long, value_name = "T", default_value_t = codec::render::DEFAULT_MARGIN)]
    render_margin: usize,
    /// Tokens of context decoded around each repainted rectangle
    #[arg(long, value_name = "T", default_value_t = codec::render::DEFAULT_HALO)]
    render_halo: usize,
}

impl RenderArgs {
    fn policy(&self) -> Result<codec::RenderPolicy, String> {
        if !(self.render_max_share >= 0.0 && self.render_max_share <= 1.0) {
            return Err(format!(
                "--render-max-share {}: expected a share in 0..=1",
                self.render_max_share
            ));
        }
        Ok(codec::RenderPolicy {
            mode: self.render.parse().map_err(|e| format!("--render: {e}"))?,
            margin: self.render_margin,
            halo: self.render_halo,
            full_every: self.render_full_every,
            max_share: self.render_max_share,
        })
    }
}

fn stream_decode(
    input: &Path,
    output: &Path,
    loss: f64,
    seed: u64,
    rargs: &RenderArgs,
    margs: &ModelArgs,
) -> Result<(), String> {
    if !(0.0..=1.0).contains(&loss) {
        return Err(format!("--loss {loss}: expected a probability in 0..=1"));
    }
    let packets = read_stream(input)?;
    std::fs::create_dir_all(output).map_err(|e| format!("{}: {e}", output.display()))?;
    let policy = rargs.policy()?;
    let mut models = load_models_for(margs, codec::Role::Decoder)?;
    let model = models.primary();
    if policy.mode == codec::RenderMode::Tiles && !model.has_tile_graph() {
        return Err(format!(
            "--render tiles: model {} has no tile graph (tokenizer_decoder_tile, docs/bundle.md)",
            model.bundle().dir.display()
        ));
    }
    let mut dec = codec::StreamDecoder::with_render(policy);
    let mut rng = seed;
    let mut last: Option<RgbImage> = None;
    let mut lost = 0usize;
    for (i, packet) in packets.iter().enumerate() {
        // splitmix64: a loss pattern that is the same on every machine.
        let u = codec::regen::splitmix(&mut rng) as f64 / u64::MAX as f64;
        let mut render = String::new();
        let (status, image, ms) = if u < loss {
            lost += 1;
            ("lost".to_string(), last.clone(), 0.0)
        } else {
            match dec.decode(model, packet) {
                Ok(f) => {
                    let status = match f.status {
                        codec::FrameStatus::Exact => "exact".to_string(),
                        codec::FrameStatus::Concealed => "concealed".to_string(),
                        codec::FrameStatus::Recovering { exact_rows, rows } => {
                            format!("recovering {exact_rows}/{rows}")
                        }
                    };
                    let ms = (f.timings.network + f.timings.coding).as_secs_f64() * 1e3;
                    render = format!(
                        ", \"network_ms\": {:.1}, \"render\": {:?}",
                        f.timings.network.as_secs_f64() * 1e3,
                        f.rendered.as_str()
                    );
                    if let codec::Rendered::Tiles { tiles, .. } = f.rendered {
                        render += &format!(", \"tiles\": {tiles}");
                    }
                    if let Some(p) = dec
                        .render_plan()
                        .filter(|_| f.rendered != codec::Rendered::Reused)
                    {
                        render += &format!(
                            ", \"changed_tokens\": {}, \"tile_tokens\": {}",
                            p.changed, p.tile_tokens
                        );
                    }
                    (status, Some(f.image), ms)
                }
                Err(e) => (format!("dropped: {e}"), last.clone(), 0.0),
            }
        };
        if let Some(img) = &image {
            write_png(&output.join(format!("frame_{i:05}.png")), img)?;
        }
        last = image;
        out!(
            "{{\"packet\": {i}, \"bytes\": {}, \"status\": {:?}, \"decode_ms\": {ms:.1}{render}}}",
            packet.len(),
            status
        );
    }
    let s = dec.stats();
    eprintln!(
        "{} packets: {} lost on the simulated link, {} exact, {} concealed/recovering, {} \
         dropped, {} recoveries",
        packets.len(),
        lost,
        s.exact,
        s.concealed,
        s.dropped,
        s.recoveries
    );
    let r = dec.render_stats();
    eprintln!(
        "render {}: {} full decodes, {} tiled frames ({} tile tokens), {} pictures reused",
        policy.mode, r.full, r.tiled, r.tile_tokens, r.reused
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
