//! The VQ tokenizer: two ONNX graphs (encoder: image -> indices, decoder: indices -> image).
//! The pixel networks may run in floats on any provider; only their integer output (token
//! indices) feeds the entropy coder.

use std::path::PathBuf;

use ndarray::{Array1, Array3, Array4};
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;

use super::bundle::{Bundle, BundleFile};
use super::error::{Error, Result};
use super::frame::RgbImage;
use super::prior::TokenGrid;
use super::render::TileRect;
use super::runtime::{
    default_trt_cache_dir, describe_provider, init_runtime, open_session, DecoderChoice,
    EncoderChoice, ExecutionProvider, Network, Role, RuntimeOptions,
};

/// Frames of more tokens than this (16x16 pixels each) are large: after running the network on
/// one, ONNX Runtime's CPU arena gives back what it grew for it
/// (`memory.enable_memory_arena_shrinkage`), so a receiver's memory returns after a large frame
/// instead of staying at its peak for the life of the session (measured: 3.7 GB kept after a
/// 4K frame before, docs/reliability.md). Frames up to it keep the warm arena: without an arena
/// every frame pays its page faults again (about 20 % more CPU on a 768x512 decode, measured).
/// The default work limit (1024x512 frames).
pub const ARENA_SHRINK_ABOVE_TOKENS: usize = super::tokens::DEFAULT_WORK_LIMIT as usize;

/// Run options for a network pass over `tokens` tokens: shrink the CPU arena afterwards when the
/// frame is large.
fn run_options(tokens: usize) -> ort::Result<RunOptions> {
    let mut options = RunOptions::new()?;
    if tokens > ARENA_SHRINK_ABOVE_TOKENS {
        options.set("memory.enable_memory_arena_shrinkage", "cpu:0")?;
    }
    Ok(options)
}

/// A network of the bundle, opened at load (the role's) or on first use.
struct LazySession {
    path: PathBuf,
    network: Network,
    session: Option<Session>,
}

impl LazySession {
    fn new(path: &std::path::Path, network: Network) -> Self {
        Self {
            path: path.to_owned(),
            network,
            session: None,
        }
    }

    /// Opens the session (once) with `opts`; checks its inputs and outputs.
    fn open(&mut self, opts: &RuntimeOptions) -> Result<(&mut Session, ExecutionProvider)> {
        let mut provider = opts.provider;
        if self.session.is_none() {
            let (session, ep) = open_session(&self.path, opts, self.network)?;
            match self.network {
                Network::Encoder | Network::DenseEncoder => {
                    check_io(&session, self.network.as_str(), "image", "indices")?
                }
                Network::Decoder | Network::DenseDecoder => {
                    check_io(&session, self.network.as_str(), "indices", "image")?
                }
                Network::TileDecoder => {
                    for input in ["indices", "stats_in", "stats_weight"] {
                        check_io(&session, "tile decoder", input, "image")?;
                    }
                    check_io(&session, "tile decoder", "indices", "stats")?;
                }
            }
            provider = ep;
            self.session = Some(session);
        }
        Ok((self.session.as_mut().expect("opened above"), provider))
    }
}

/// The tokenizer sessions of a bundle: encoder, decoder and the optional tile graph. The
/// networks of the [`Role`] open when the tokenizer loads, the others on first use.
pub struct Tokenizer {
    encoder: LazySession,
    decoder: LazySession,
    mean: [f32; 3],
    std: [f32; 3],
    codebook_size: usize,
    /// The optional tile graph (docs/bundle.md "Tile graph").
    tile: Option<LazySession>,
    /// Which of the bundle's decoders `decoder` and `tile` are (`full`, `fast` or `smooth`).
    decoder_choice: DecoderChoice,
    /// The dense graphs (encoder, decoder), when the bundle has them; opened on first use.
    dense: Option<(LazySession, LazySession)>,
    /// The options every network opens with; `auto` is resolved by the first network opened.
    opts: RuntimeOptions,
}

fn check_io(session: &Session, network: &'static str, input: &str, output: &str) -> Result<()> {
    let has_in = session.inputs().iter().any(|o| o.name() == input);
    let has_out = session.outputs().iter().any(|o| o.name() == output);
    if !has_in || !has_out {
        return Err(Error::Contract {
            network,
            message: format!(
                "inputs {:?} / outputs {:?} (expected input '{input}', output '{output}')",
                session
                    .inputs()
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>(),
                session
                    .outputs()
                    .iter()
                    .map(|o| o.name())
                    .collect::<Vec<_>>()
            ),
        });
    }
    Ok(())
}

/// The decoder graphs `opts.decoder` selects: the resolved choice (`full`, `fast` or `smooth`),
/// the decoder and its tile graph. `fast` and `smooth` need the bundle's graphs of that kind (and
/// their tile graph when the bundle has a tile graph, so that tiles match the full decodes they
/// are drawn over); `auto` takes the fast ones when they are complete and the networks run on the
/// CPU provider.
fn pick_decoder<'a>(
    bundle: &'a Bundle,
    opts: &RuntimeOptions,
) -> Result<(DecoderChoice, &'a BundleFile, Option<&'a BundleFile>)> {
    let graphs = |choice: DecoderChoice| match choice {
        DecoderChoice::Fast => (
            bundle.tokenizer_decoder_fast.as_ref(),
            bundle.tokenizer_decoder_tile_fast.as_ref(),
        ),
        DecoderChoice::Smooth => (
            bundle.tokenizer_decoder_smooth.as_ref(),
            bundle.tokenizer_decoder_tile_smooth.as_ref(),
        ),
        DecoderChoice::Auto | DecoderChoice::Full => (
            Some(&bundle.tokenizer_decoder),
            bundle.tokenizer_decoder_tile.as_ref(),
        ),
    };
    let complete = |choice| match graphs(choice) {
        (Some(dec), tile) => {
            (bundle.tokenizer_decoder_tile.is_none() || tile.is_some()).then_some((dec, tile))
        }
        (None, _) => None,
    };
    let choice = match opts.decoder {
        DecoderChoice::Auto
            if opts.provider == ExecutionProvider::Cpu
                && complete(DecoderChoice::Fast).is_some() =>
        {
            DecoderChoice::Fast
        }
        DecoderChoice::Auto => DecoderChoice::Full,
        other => other,
    };
    if let Some((dec, tile)) = complete(choice) {
        return Ok((choice, dec, tile));
    }
    let (table, tool) = match choice {
        DecoderChoice::Smooth => ("smooth", "smooth_decoder install BUNDLE CKPT"),
        _ => ("fast", "fast_decoder install BUNDLE"),
    };
    let missing = if graphs(choice).0.is_none() {
        format!("[tokenizer_decoder_{table}]")
    } else {
        format!("[tokenizer_decoder_tile_{table}] (it has a tile graph)")
    };
    Err(Error::InvalidArgument(format!(
        "decoder '{choice}' asked for, but model bundle {} {} ({}) has no {missing}; use \
         decoder 'full' or 'auto' (python -m uigc_models.{tool} adds it)",
        bundle.name,
        bundle.version,
        bundle.dir.display()
    )))
}

impl Tokenizer {
    pub fn load(bundle: &Bundle, opts: &RuntimeOptions) -> Result<Self> {
        let mut opts = opts.clone();
        // The cache directory names the runtime's version: load it first.
        init_runtime(opts.library.as_deref())?;
        if matches!(
            opts.provider,
            ExecutionProvider::TensorRt | ExecutionProvider::Auto
        ) && opts.trt_cache.is_none()
        {
            opts.trt_cache = Some(default_trt_cache_dir(&bundle.model_id.to_string()));
        }
        let encoder = match opts.encoder {
            EncoderChoice::Full => &bundle.tokenizer_encoder,
            EncoderChoice::Fast => bundle.tokenizer_encoder_fast.as_ref().ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "encoder 'fast' asked for, but model bundle {} {} ({}) has no fast \
                     encoder (manifest table [tokenizer_encoder_fast]); use encoder 'full'",
                    bundle.name,
                    bundle.version,
                    bundle.dir.display()
                ))
            })?,
        };
        let (decoder_choice, decoder, tile) = pick_decoder(bundle, &opts)?;
        let mut t = Self {
            encoder: LazySession::new(&encoder.path, Network::Encoder),
            decoder: LazySession::new(&decoder.path, Network::Decoder),
            mean: bundle.mean,
            std: bundle.std,
            codebook_size: bundle.codebook_size,
            tile: tile.map(|f| LazySession::new(&f.path, Network::TileDecoder)),
            decoder_choice,
            dense: bundle.dense.as_ref().map(|(e, d)| {
                (
                    LazySession::new(&e.path, Network::DenseEncoder),
                    LazySession::new(&d.path, Network::DenseDecoder),
                )
            }),
            opts,
        };
        if t.opts.role != Role::Decoder {
            t.session(Network::Encoder)?;
        }
        if t.opts.role != Role::Encoder {
            t.session(Network::Decoder)?;
        }
        Ok(t)
    }

    /// The session of `network`, opened on first use; the first one opened resolves `auto`
    /// for the others.
    fn session(&mut self, network: Network) -> Result<&mut Session> {
        let lazy = match network {
            Network::Encoder => &mut self.encoder,
            Network::Decoder => &mut self.decoder,
            Network::TileDecoder => self.tile.as_mut().ok_or_else(|| {
                Error::InvalidArgument("the model bundle has no tile graph".into())
            })?,
            Network::DenseEncoder | Network::DenseDecoder => {
                let (e, d) = self.dense.as_mut().ok_or_else(|| {
                    Error::InvalidArgument("the model bundle has no dense graphs".into())
                })?;
                if network == Network::DenseEncoder {
                    e
                } else {
                    d
                }
            }
        };
        let (session, provider) = lazy.open(&self.opts)?;
        self.opts.provider = provider;
        Ok(session)
    }

    /// Which of the bundle's decoders renders the pictures: `full`, `fast` or `smooth` (never
    /// `auto`).
    pub fn decoder_choice(&self) -> DecoderChoice {
        self.decoder_choice
    }

    /// Whether the bundle has a tile graph (tiled rendering is possible).
    pub fn has_tile_graph(&self) -> bool {
        self.tile.is_some()
    }

    /// Whether the bundle has dense graphs ([`Self::encode_dense`], [`Self::decode_dense`]).
    pub fn has_dense_graphs(&self) -> bool {
        self.dense.is_some()
    }

    /// Which networks are open, each with what runs it (for logs and element properties).
    pub fn describe(&self) -> String {
        let what = describe_provider(self.opts.provider, &self.opts);
        [&self.encoder, &self.decoder]
            .into_iter()
            .chain(self.tile.as_ref())
            .chain(self.dense.iter().flat_map(|(e, d)| [e, d]))
            .filter(|l| l.session.is_some())
            .map(|l| {
                let fast = match l.network {
                    Network::Encoder if self.opts.encoder == EncoderChoice::Fast => " (fast)",
                    Network::Decoder | Network::TileDecoder => match self.decoder_choice {
                        DecoderChoice::Fast => " (fast)",
                        DecoderChoice::Smooth => " (smooth)",
                        _ => "",
                    },
                    _ => "",
                };
                format!("{}{fast} on {what}", l.network.as_str())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Runs the tile graph on `grid`: with `stats` (normalising with them) or without (its own
    /// statistics, a full decode). Returns the padded image tensor and the statistics used.
    fn run_tile(
        &mut self,
        grid: &TokenGrid,
        stats: Option<&[f32]>,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let infer = |e: ort::Error| Error::Inference {
            network: "tile decoder",
            message: e.to_string(),
        };
        let indices = Array3::from_shape_vec(
            (1, grid.rows, grid.cols),
            grid.tokens.iter().map(|&t| t as i64).collect(),
        )
        .map_err(|e| Error::Image(e.to_string()))?;
        let session = self.session(Network::TileDecoder)?;
        let len = match stats {
            Some(s) => s.len(),
            None => session.inputs()[1]
                .dtype()
                .tensor_shape()
                .and_then(|s| s.iter().next().copied())
                .filter(|&n| n > 0)
                .ok_or_else(|| Error::Contract {
                    network: "tile decoder",
                    message: "a 'stats_in' input without a fixed length".into(),
                })? as usize,
        };
        let stats_in = Array1::from_vec(stats.map_or_else(|| vec![0.0; len], <[f32]>::to_vec));
        let weight = Array1::from_vec(vec![if stats.is_some() { 1.0f32 } else { 0.0 }]);
        let options = run_options(grid.rows * grid.cols).map_err(infer)?;
        let outputs = session
            .run_with_options(
                ort::inputs![
                    "indices" => TensorRef::from_array_view(&indices).map_err(infer)?,
                    "stats_in" => TensorRef::from_array_view(&stats_in).map_err(infer)?,
                    "stats_weight" => TensorRef::from_array_view(&weight).map_err(infer)?
                ],
                &options,
            )
            .map_err(infer)?;
        let contract = |what: &str| Error::Contract {
            network: "tile decoder",
            message: what.to_string(),
        };
        let image = outputs["image"]
            .try_extract_array::<f32>()
            .map_err(|e| contract(&format!("an 'image' output that is not float32 ({e})")))?;
        let (ph, pw) = (grid.rows * 16, grid.cols * 16);
        if image.shape() != [1, 3, ph, pw] {
            return Err(contract(&format!(
                "an image of shape {:?} for a {}x{} grid (expected [1, 3, {ph}, {pw}])",
                image.shape(),
                grid.rows,
                grid.cols
            )));
        }
        let image: Vec<f32> = image.iter().copied().collect();
        let out_stats = outputs["stats"]
            .try_extract_array::<f32>()
            .map_err(|e| contract(&format!("a 'stats' output that is not float32 ({e})")))?;
        let out_stats: Vec<f32> = out_stats.iter().copied().collect();
        if out_stats.len() != len {
            return Err(contract(&format!(
                "{} statistics out for {len} in",
                out_stats.len()
            )));
        }
        Ok((image, out_stats))
    }

    /// A full decode through the tile graph: the image (as [`Self::decode`] to float precision)
    /// and the normalisation statistics that later tiles of this picture are decoded with.
    pub fn decode_with_stats(
        &mut self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
    ) -> Result<(RgbImage, Vec<f32>)> {
        let (flat, stats) = self.run_tile(grid, None)?;
        let image = RgbImage::from_padded_tensor(
            &flat,
            grid.rows * 16,
            grid.cols * 16,
            width,
            height,
            self.mean,
            self.std,
        )?;
        Ok((image, stats))
    }

    /// Decodes the tokens of `outer` (a rectangle of `grid`) normalising with `stats`, and
    /// writes the pixels of `inner` (inside `outer`) into `image` (the picture of `grid`).
    pub fn decode_tile(
        &mut self,
        grid: &TokenGrid,
        stats: &[f32],
        outer: TileRect,
        inner: TileRect,
        image: &mut RgbImage,
    ) -> Result<()> {
        let (orows, ocols) = (outer.r1 - outer.r0, outer.c1 - outer.c0);
        let mut tokens = Vec::with_capacity(orows * ocols);
        for r in outer.r0..outer.r1 {
            tokens.extend_from_slice(
                &grid.tokens[r * grid.cols + outer.c0..r * grid.cols + outer.c1],
            );
        }
        let sub = TokenGrid::new(orows, ocols, tokens);
        let (flat, _) = self.run_tile(&sub, Some(stats))?;
        let (ph, pw) = (orows * 16, ocols * 16);
        let (w, h) = (image.width as usize, image.height as usize);
        let (y0, y1) = (inner.r0 * 16, (inner.r1 * 16).min(h));
        let (x0, x1) = (inner.c0 * 16, (inner.c1 * 16).min(w));
        let (oy, ox) = (outer.r0 * 16, outer.c0 * 16);
        for y in y0..y1 {
            for x in x0..x1 {
                let t = (y - oy) * pw + (x - ox);
                for c in 0..3 {
                    let v = (flat[c * ph * pw + t] * self.std[c] + self.mean[c]) * 255.0;
                    image.data[(y * w + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Ok(())
    }

    /// The execution provider that runs the networks (`auto` until a network opened).
    pub fn provider(&self) -> ExecutionProvider {
        self.opts.provider
    }

    /// Image -> token grid (`ceil(H/16)` x `ceil(W/16)`).
    pub fn encode(&mut self, image: &RgbImage) -> Result<TokenGrid> {
        self.encode_on(Network::Encoder, image)
    }

    /// Image -> dense token grid (`ceil(H/8)` x `ceil(W/8)`, the grid of a dense packet) with
    /// the bundle's dense encoder; an error when the bundle has none.
    pub fn encode_dense(&mut self, image: &RgbImage) -> Result<TokenGrid> {
        self.encode_on(Network::DenseEncoder, image)
    }

    fn encode_on(&mut self, network: Network, image: &RgbImage) -> Result<TokenGrid> {
        let name = network.as_str();
        let f = network.factor();
        let (rows, cols) = image.grid_of(f);
        let (ph, pw, data) = image.to_padded_tensor_of(self.mean, self.std, f);
        let input = Array4::from_shape_vec((1, 3, ph, pw), data)
            .map_err(|e| Error::Image(e.to_string()))?;
        let infer = |e: ort::Error| Error::Inference {
            network: name,
            message: e.to_string(),
        };
        let tensor = TensorRef::from_array_view(&input).map_err(infer)?;
        let options = run_options(rows * cols).map_err(infer)?;
        let k = self.codebook_size as i64;
        let outputs = self
            .session(network)?
            .run_with_options(ort::inputs!["image" => tensor], &options)
            .map_err(infer)?;
        let indices =
            outputs["indices"]
                .try_extract_array::<i64>()
                .map_err(|e| Error::Contract {
                    network: name,
                    message: format!("an 'indices' output that is not int64 ({e})"),
                })?;
        if indices.shape() != [1, rows, cols] {
            return Err(Error::Contract {
                network: name,
                message: format!(
                    "indices of shape {:?} for a {pw}x{ph} input (expected [1, {rows}, {cols}])",
                    indices.shape()
                ),
            });
        }
        let mut tokens = Vec::with_capacity(rows * cols);
        for &v in indices.iter() {
            if !(0..k).contains(&v) {
                return Err(Error::Contract {
                    network: name,
                    message: format!("index {v} outside the codebook of {k}"),
                });
            }
            tokens.push(v as u16);
        }
        Ok(TokenGrid::new(rows, cols, tokens))
    }

    /// Token grid -> image of `width` x `height` (cropped from the padded reconstruction).
    pub fn decode(&mut self, grid: &TokenGrid, width: u32, height: u32) -> Result<RgbImage> {
        self.decode_on(Network::Decoder, grid, width, height)
    }

    /// Dense token grid -> image of `width` x `height` with the bundle's dense decoder (8x8
    /// pixels per token); an error when the bundle has none.
    pub fn decode_dense(&mut self, grid: &TokenGrid, width: u32, height: u32) -> Result<RgbImage> {
        self.decode_on(Network::DenseDecoder, grid, width, height)
    }

    fn decode_on(
        &mut self,
        network: Network,
        grid: &TokenGrid,
        width: u32,
        height: u32,
    ) -> Result<RgbImage> {
        let name = network.as_str();
        let f = network.factor();
        let input = Array3::from_shape_vec(
            (1, grid.rows, grid.cols),
            grid.tokens.iter().map(|&t| t as i64).collect(),
        )
        .map_err(|e| Error::Image(e.to_string()))?;
        let infer = |e: ort::Error| Error::Inference {
            network: name,
            message: e.to_string(),
        };
        let tensor = TensorRef::from_array_view(&input).map_err(infer)?;
        let options = run_options(grid.rows * grid.cols).map_err(infer)?;
        let (mean, std) = (self.mean, self.std);
        let outputs = self
            .session(network)?
            .run_with_options(ort::inputs!["indices" => tensor], &options)
            .map_err(infer)?;
        let image = outputs["image"]
            .try_extract_array::<f32>()
            .map_err(|e| Error::Contract {
                network: name,
                message: format!("an 'image' output that is not float32 ({e})"),
            })?;
        let (ph, pw) = (grid.rows * f, grid.cols * f);
        if image.shape() != [1, 3, ph, pw] {
            return Err(Error::Contract {
                network: name,
                message: format!(
                    "an image of shape {:?} for a {}x{} grid (expected [1, 3, {ph}, {pw}])",
                    image.shape(),
                    grid.rows,
                    grid.cols
                ),
            });
        }
        let flat: Vec<f32> = image.iter().copied().collect();
        RgbImage::from_padded_tensor(&flat, ph, pw, width, height, mean, std)
    }
}
