//! The uigc codec core: model bundles, tokenizer (ONNX Runtime), stage schedule, integer prior,
//! range coding and the packet format. Free of GStreamer types: the CLI, the GStreamer elements
//! and the benchmarks are thin shells around [`Model`].

pub mod bitstream;
pub mod bundle;
pub mod colour;
pub mod entropy;
pub mod error;
pub mod frame;
pub mod intprior;
pub mod modelset;
pub mod params;
pub mod pipeline;
pub mod prior;
pub mod regen;
pub mod render;
pub mod runtime;
pub mod schedule;
pub mod stream;
pub mod temporal;
pub mod tokenizer;
pub mod tokens;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use bitstream::{Header, ModelId};
pub use bundle::Bundle;
pub use colour::{ColourParams, ColourThumb};
pub use error::{Error, PacketError, Result};
pub use frame::RgbImage;
pub use modelset::ModelSet;
pub use prior::TokenGrid;
pub use render::{RenderMode, RenderPolicy, RenderStats, Rendered, Renderer};
pub use runtime::{
    default_trt_cache_dir, describe_provider, DecoderChoice, EncoderChoice, ExecutionProvider,
    Network, Role, RuntimeOptions,
};
pub use stream::{
    FrameKind, FrameStatus, StreamConfig, StreamDecoder, StreamEncoder, StreamFrame, StreamPacket,
    StreamStats,
};
pub use temporal::{InterFrame, Reference};
pub use tokens::{
    check_work, Colour, DecodedTokens, EncodedPacket, FrameParams, KeepPolicy, RegenMode,
    TokenCodec, DEFAULT_MAX_PIXELS, DEFAULT_WORK_LIMIT,
};

/// Name of the model every command uses unless told otherwise.
pub const DEFAULT_MODEL_NAME: &str = "uigc-small";

/// Where the default model is looked for: `UIGC_MODEL`, the source tree's `models/` (for a
/// build run from its checkout), then the system-wide install location.
pub fn default_model_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(v) = std::env::var_os("UIGC_MODEL").filter(|v| !v.is_empty()) {
        out.push(PathBuf::from(v));
        return out;
    }
    out.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(DEFAULT_MODEL_NAME),
    );
    out.push(Path::new("/usr/local/share/uigc/models").join(DEFAULT_MODEL_NAME));
    out.push(Path::new("/usr/share/uigc/models").join(DEFAULT_MODEL_NAME));
    out
}

/// The default model directory, or an error listing where it was looked for.
pub fn default_model_dir() -> Result<PathBuf> {
    let candidates = default_model_candidates();
    candidates
        .iter()
        .find(|p| p.join(bundle::MANIFEST).is_file())
        .cloned()
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "no default model found (looked in {}); pass a model directory",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The token codec of a bundle (prior + schedule + model id): no ONNX Runtime needed.
/// `threads` = worker threads of the prior (0 = all cores); packets never depend on it.
pub fn token_codec_with_threads(bundle: &Bundle, threads: usize) -> Result<TokenCodec> {
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let load = |kind: &str, path: &std::path::Path| {
        prior::load_prior(
            kind,
            path,
            bundle.codebook_size,
            bundle.schedule.num_stages(),
            threads,
        )
    };
    let prior = load(&bundle.prior_kind, &bundle.prior.path)?;
    let mut codec = TokenCodec::new(bundle.model_id, bundle.schedule, prior);
    codec.set_dense_model_id(bundle.dense_model_id);
    if let Some((kind, file)) = &bundle.prior_dense {
        codec.set_dense_prior(Some(load(kind, &file.path)?))?;
    }
    Ok(codec)
}

/// [`token_codec_with_threads`] on all cores.
pub fn token_codec(bundle: &Bundle) -> Result<TokenCodec> {
    token_codec_with_threads(bundle, 0)
}

/// Token density of a packet: the normal grid (one token per 16x16 pixels) or the dense one
/// (the frame resampled to twice its width and height: four tokens per 16x16 pixels, about four
/// times the bytes). Dense packets are the top of the rate ladder, above what the normal grid can
/// spend with every token sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Density {
    Normal,
    Dense,
    /// Normal, unless a byte budget leaves room for a dense packet that keeps at least
    /// [`DENSE_MIN_STAGES`] stages (see [`Model::encode_auto`]).
    #[default]
    Auto,
}

impl std::str::FromStr for Density {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "normal" => Ok(Self::Normal),
            "dense" => Ok(Self::Dense),
            "auto" => Ok(Self::Auto),
            _ => Err(Error::InvalidArgument(format!(
                "density {s:?}: expected normal, dense or auto"
            ))),
        }
    }
}

impl std::fmt::Display for Density {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Normal => "normal",
            Self::Dense => "dense",
            Self::Auto => "auto",
        })
    }
}

/// The rate control picks a dense packet over an all-tokens normal one only when the dense
/// packet keeps at least this many stages. Measured on Kodak with the shipped model
/// (MODEL_CARD.md, "Rate ladder"): dense with every stage beats normal with every stage (LPIPS
/// 0.444 vs 0.454 at 0.067 vs 0.019 bpp on 18 images), dense with 8 stages does not (0.509 at
/// 0.039 bpp), so only complete dense packets are worth their bytes.
pub const DENSE_MIN_STAGES: usize = 10;

/// [`DENSE_MIN_STAGES`] for a bundle with dense graphs (docs/bundle.md "Dense graphs"): their
/// dense packets stay better than the all-tokens normal packet with 8 of the 10 stages. Kodak 24,
/// uigc-small 0.4.1 (dense prior), colour thumbnail, real packets (MODEL_CARD.md "Dense graphs"):
/// 8 stages 0.0536 bpp, LPIPS-alex 0.3638, 22.17 dB; 9 stages 0.0710, 0.3257, 22.69 dB; all
/// 0.0883, 0.2930, 23.27 dB; the normal packet 0.0262, 0.3777, 21.98 dB.
pub const DENSE_GRAPHS_MIN_STAGES: usize = 8;

/// `Density::Auto` does not try the dense grid (a tokenizer pass at four times the pixels)
/// under a budget below this multiple of the all-tokens normal packet: on Kodak a complete dense
/// packet costs 2.9x to 3.8x the normal one, so it could not fit.
pub const DENSE_MIN_BUDGET_RATIO: f64 = 2.5;

/// [`DENSE_MIN_BUDGET_RATIO`] for a bundle with dense graphs: their 8-stage dense packet costs
/// about 2.0x the normal one on Kodak (0.0536 against 0.0262 bpp).
pub const DENSE_GRAPHS_MIN_BUDGET_RATIO: f64 = 2.0;

/// Wall-clock time of the two halves of a frame.
#[derive(Debug, Clone, Copy, Default)]
pub struct Timings {
    /// Tokenizer network (encoder or decoder).
    pub network: Duration,
    /// Prior + entropy coding.
    pub coding: Duration,
}

/// One encoded frame.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    pub packet: EncodedPacket,
    pub tokens: TokenGrid,
    pub timings: Timings,
}

impl EncodedFrame {
    /// Bits per pixel of the whole packet (header included).
    pub fn bpp(&self) -> f64 {
        let h = &self.packet.header;
        self.packet.bytes.len() as f64 * 8.0 / (h.width as f64 * h.height as f64)
    }
}

/// One decoded frame.
#[derive(Debug, Clone)]
pub struct DecodedFrame {
    pub image: RgbImage,
    pub tokens: DecodedTokens,
    pub timings: Timings,
}

/// A loaded model: bundle, tokenizer sessions and token codec.
pub struct Model {
    bundle: Bundle,
    tokenizer: tokenizer::Tokenizer,
    codec: TokenCodec,
}

impl Model {
    /// Loads and verifies the bundle in `dir` and opens its networks.
    pub fn load(dir: impl AsRef<Path>, opts: &RuntimeOptions) -> Result<Self> {
        let bundle = Bundle::load(dir)?;
        let codec = token_codec_with_threads(&bundle, opts.threads)?;
        let tokenizer = tokenizer::Tokenizer::load(&bundle, opts)?;
        Ok(Self {
            bundle,
            tokenizer,
            codec,
        })
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    pub fn model_id(&self) -> ModelId {
        self.bundle.model_id
    }

    /// The id of dense packets made by the bundle's dense graphs, when it has them.
    pub fn dense_model_id(&self) -> Option<ModelId> {
        self.bundle.dense_model_id
    }

    /// Whether this model decodes a packet with this header (its model id, or a dense packet
    /// with its dense graphs' id).
    pub fn accepts(&self, header: &Header) -> bool {
        self.codec.accepts(header)
    }

    /// The execution provider that runs the pixel networks.
    pub fn provider(&self) -> ExecutionProvider {
        self.tokenizer.provider()
    }

    /// The open networks and what runs each (`tokenizer encoder on cpu, ...`); the prior
    /// always runs on the CPU in exact integers.
    pub fn describe_networks(&self) -> String {
        format!(
            "{}, prior {} on cpu (exact integer)",
            self.tokenizer.describe(),
            self.bundle.prior_kind
        )
    }

    /// Runs the networks of `role` (and the dense graphs, when the bundle has them) once on a
    /// mid-grey frame of `width` x `height`, so that the first real frame does not pay for lazy
    /// initialisation (on TensorRT: the engine build or its load from the cache; on the CPU:
    /// the arena's first allocation). Returns the time it took.
    pub fn warm_up(&mut self, width: u32, height: u32, role: Role) -> Result<std::time::Duration> {
        let t = std::time::Instant::now();
        let image = RgbImage::new(
            width,
            height,
            vec![128; width as usize * height as usize * 3],
        )?;
        let dense = self.tokenizer.has_dense_graphs();
        if role != Role::Decoder {
            self.tokenizer.encode(&image)?;
            if dense {
                self.tokenizer.encode_dense(&image)?;
            }
        }
        if role != Role::Encoder {
            let (rows, cols) = image.grid();
            self.tokenizer
                .decode(&TokenGrid::zeros(rows, cols), width, height)?;
            if dense {
                let (rows, cols) = image.grid_of(8);
                self.tokenizer
                    .decode_dense(&TokenGrid::zeros(rows, cols), width, height)?;
            }
        }
        Ok(t.elapsed())
    }

    pub fn token_codec(&mut self) -> &mut TokenCodec {
        &mut self.codec
    }

    /// Image -> tokens (no entropy coding).
    pub fn tokenize(&mut self, image: &RgbImage) -> Result<TokenGrid> {
        self.tokenizer.encode(image)
    }

    /// Tokens -> image of the given size.
    pub fn detokenize(&mut self, grid: &TokenGrid, width: u32, height: u32) -> Result<RgbImage> {
        self.tokenizer.decode(grid, width, height)
    }

    /// Whether the bundle has dense graphs (docs/bundle.md "Dense graphs"): dense packets are
    /// then coded and rendered at one token per 8x8 pixels of the frame itself.
    pub fn has_dense_graphs(&self) -> bool {
        self.tokenizer.has_dense_graphs()
    }

    /// The dense token grid of a frame (`ceil(H/8)` x `ceil(W/8)`): the bundle's dense encoder
    /// on the frame, else its encoder on the frame upsampled 2x (what a dense packet carries).
    pub fn tokenize_dense(&mut self, image: &RgbImage) -> Result<TokenGrid> {
        if self.tokenizer.has_dense_graphs() {
            self.tokenizer.encode_dense(image)
        } else {
            self.tokenizer.encode(&image.upsample2x())
        }
    }

    /// A dense token grid -> the frame of `width` x `height` (the inverse path of
    /// [`Self::tokenize_dense`]; no colour correction).
    pub fn detokenize_dense(
        &mut self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
    ) -> Result<RgbImage> {
        let graphs = self.tokenizer.has_dense_graphs();
        self.render_dense(grid, width, height, graphs)
    }

    /// A dense grid's frame: by the dense graphs, or by the decoder at twice the size, halved.
    fn render_dense(
        &mut self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
        graphs: bool,
    ) -> Result<RgbImage> {
        if graphs {
            self.tokenizer.decode_dense(grid, width, height)
        } else {
            Ok(self
                .tokenizer
                .decode(grid, 2 * width, 2 * height)?
                .downsample2x())
        }
    }

    /// Tokens -> image through `renderer`: tiles over its last picture where its policy
    /// allows (`full` asks for a full decode); no colour correction.
    pub fn render(
        &mut self,
        renderer: &mut Renderer,
        grid: &TokenGrid,
        width: u32,
        height: u32,
        full: bool,
    ) -> Result<(RgbImage, Rendered)> {
        renderer.render(&mut self.tokenizer, grid, width, height, full)
    }

    /// Whether the bundle has a tile graph (tiled rendering).
    pub fn has_tile_graph(&self) -> bool {
        self.tokenizer.has_tile_graph()
    }

    /// Encodes one frame into one packet (the dense grid when `params.dense`).
    pub fn encode(&mut self, image: &RgbImage, params: FrameParams) -> Result<EncodedFrame> {
        let half = bitstream::max_frame_side(true);
        if params.dense && (image.width > half || image.height > half) {
            return Err(Error::InvalidArgument(format!(
                "dense packets carry frames of at most {half} pixels per side, not {}x{}",
                image.width, image.height
            )));
        }
        // A frame the receiver would refuse is refused before the tokenizer runs.
        self.codec
            .check_encodable(image.width, image.height, params.dense)?;
        let t0 = Instant::now();
        let tokens = if params.dense {
            self.tokenize_dense(image)?
        } else {
            self.tokenizer.encode(image)?
        };
        let t1 = Instant::now();
        let full = self.codec.schedule().num_stages();
        let thumb = match params.colour {
            Colour::Off => None,
            Colour::On(p) => Some(ColourThumb::from_image(image, p)),
            // Auto: the thumbnail is the step of the ladder above every token.
            Colour::Auto(p) if params.stages.is_none_or(|s| s == full) => {
                Some(ColourThumb::from_image(image, p))
            }
            Colour::Auto(_) => None,
        };
        let (w, h) = (image.width, image.height);
        let with = self
            .codec
            .encode_with_colour(&tokens, w, h, params, thumb.as_ref());
        // Auto under a byte budget: tokens come first, so the thumbnail stays only when it cost
        // no token (one more prior pass when the budget is tight).
        let fallback = matches!(params.colour, Colour::Auto(_))
            && thumb.is_some()
            && params.max_bytes.is_some();
        let packet = match with {
            Ok(p) if fallback && ((p.header.stages as usize) < full || p.extra_tokens > 0) => {
                let plain = self.codec.encode_with_colour(&tokens, w, h, params, None)?;
                if plain.coded_tokens > p.coded_tokens {
                    plain
                } else {
                    p
                }
            }
            Err(Error::BudgetTooSmall { .. }) if fallback => {
                self.codec.encode_with_colour(&tokens, w, h, params, None)?
            }
            other => other?,
        };
        Ok(EncodedFrame {
            packet,
            tokens,
            timings: Timings {
                network: t1 - t0,
                coding: t1.elapsed(),
            },
        })
    }

    /// Encodes one frame with a [`Density`] choice. `Normal` / `Dense` force it (`params.dense`
    /// is ignored). `Auto` is normal, except under a byte budget (`params.max_bytes`) of at least
    /// [`DENSE_MIN_BUDGET_RATIO`] times the all-tokens normal packet: then the dense grid is tried
    /// under the same budget and kept when its rate control keeps at least [`DENSE_MIN_STAGES`]
    /// stages (with dense graphs: [`DENSE_GRAPHS_MIN_BUDGET_RATIO`] and
    /// [`DENSE_GRAPHS_MIN_STAGES`]) (and `params.stages` allows all) and, when the normal packet carries a colour
    /// thumbnail, the dense one carries it too.
    pub fn encode_auto(
        &mut self,
        image: &RgbImage,
        params: FrameParams,
        density: Density,
    ) -> Result<EncodedFrame> {
        let stages = self.codec.schedule().num_stages();
        match density {
            Density::Normal | Density::Dense => self.encode(
                image,
                FrameParams {
                    dense: density == Density::Dense,
                    ..params
                },
            ),
            Density::Auto => {
                let normal = self.encode(
                    image,
                    FrameParams {
                        dense: false,
                        ..params
                    },
                )?;
                let all_sent = normal.packet.header.stages as usize == stages;
                let (min_stages, ratio) = if self.has_dense_graphs() {
                    (DENSE_GRAPHS_MIN_STAGES, DENSE_GRAPHS_MIN_BUDGET_RATIO)
                } else {
                    (DENSE_MIN_STAGES, DENSE_MIN_BUDGET_RATIO)
                };
                let room = params
                    .max_bytes
                    .is_some_and(|cap| cap as f64 >= ratio * normal.packet.bytes.len() as f64);
                let half = bitstream::max_frame_side(true);
                let fits = image.width <= half && image.height <= half;
                if !room || !fits || !all_sent || params.stages.is_some_and(|s| s < stages) {
                    return Ok(normal);
                }
                // A dense packet without the thumbnail is worse than a normal one with it
                // (Kodak, 0.3.0: LPIPS 0.392 at 0.065 bpp vs 0.379 at 0.026 bpp), so when the normal
                // packet carries one the dense packet must too.
                let colour = match (normal.packet.header.colour, params.colour) {
                    (Some(_), Colour::Auto(p)) => Colour::On(p),
                    (_, c) => c,
                };
                match self.encode(
                    image,
                    FrameParams {
                        dense: true,
                        colour,
                        ..params
                    },
                ) {
                    Ok(dense) if dense.packet.header.stages as usize >= min_stages => {
                        let mut dense = dense;
                        dense.timings.network += normal.timings.network;
                        dense.timings.coding += normal.timings.coding;
                        Ok(dense)
                    }
                    Ok(_) | Err(Error::BudgetTooSmall { .. }) => Ok(normal),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Decodes one packet into a frame.
    pub fn decode(&mut self, packet: &[u8]) -> Result<DecodedFrame> {
        self.decode_with(packet, None)
    }

    /// [`Self::decode`] with a full decode through `renderer` (which keeps the picture for
    /// later tiles), except for dense packets (the renderer forgets its picture then).
    pub fn decode_rendered(
        &mut self,
        packet: &[u8],
        renderer: &mut Renderer,
    ) -> Result<DecodedFrame> {
        self.decode_with(packet, Some(renderer))
    }

    fn decode_with(
        &mut self,
        packet: &[u8],
        renderer: Option<&mut Renderer>,
    ) -> Result<DecodedFrame> {
        let t0 = Instant::now();
        let tokens = self.codec.decode(packet)?;
        let t1 = Instant::now();
        let (w, h) = tokens.header.coded_size();
        let mut image = match renderer {
            _ if tokens.header.dense() => {
                if let Some(r) = renderer {
                    r.reset();
                }
                // The packet's id says which path made its tokens: a sender without dense graphs
                // (the model id) used the 2x path.
                let graphs = self.codec.uses_dense_graphs(&tokens.header);
                let (fw, fh) = (tokens.header.width, tokens.header.height);
                self.render_dense(&tokens.grid, fw, fh, graphs)?
            }
            Some(r) => r.render(&mut self.tokenizer, &tokens.grid, w, h, true)?.0,
            None => self.tokenizer.decode(&tokens.grid, w, h)?,
        };
        if let Some(thumb) = &tokens.colour {
            thumb.apply(&mut image);
        }
        Ok(DecodedFrame {
            image,
            tokens,
            timings: Timings {
                network: t1.elapsed(),
                coding: t1 - t0,
            },
        })
    }
}
