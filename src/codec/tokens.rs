//! Token-level coding: a token grid <-> a packet, with the bundle's schedule and prior, keep
//! policies (which tokens are sent), regeneration of the dropped ones, and rate control.
//! No ONNX here: this is the part that must be bit-exact on every machine.

use super::bitstream::{
    check_value, coded_size, parse_packet, write_header_prefix, write_packet, Header, ModelId,
    FLAG_ADAPTIVE, FLAG_COLOUR, FLAG_DENSE, VERSION,
};
use super::colour::{ColourParams, ColourThumb};
use super::entropy::{kt_table, TokenDecoder, TokenEncoder, TOTAL};
use super::error::{Error, PacketError, Result};
use super::prior::{Prior, ProbTables, TokenGrid};
use super::schedule::{Schedule, StagePlan};

/// Per-frame parameters of the encoder.
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameParams {
    /// Identifies the sending device/stream (one receiver can serve many).
    pub stream_id: u32,
    /// Frame counter (lets the receiver count losses).
    pub frame: u32,
    /// Number of schedule stages to send (a prefix); `None` = all. With `max_bytes` it is the
    /// most the rate control may send.
    pub stages: Option<usize>,
    /// Adaptive keep: this many further tokens of the first dropped stage, chosen by the encoder
    /// and signalled with a coded position mask (0 = none).
    pub extra: usize,
    /// Hard cap on the packet size in bytes: the encoder picks the stage prefix and the adaptive
    /// extra count that fit (rate control); `None` = no cap.
    pub max_bytes: Option<usize>,
    /// The grid is the dense one (the frame resampled to twice its width and height, see
    /// [`super::Density`]); the packet says so and the decoder halves its output.
    pub dense: bool,
    /// Whether the packet carries a colour thumbnail (see [`Colour`]).
    pub colour: Colour,
}

/// Whether a packet carries a colour thumbnail ([`ColourThumb`]: the frame's block means in
/// YCbCr, which the decoder uses to correct its picture's colours and local brightness).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Colour {
    /// No thumbnail.
    #[default]
    Off,
    /// Always a thumbnail (under a byte budget its bytes come out of the tokens' share).
    On(ColourParams),
    /// The step of the rate ladder above every token: a thumbnail when the packet would carry
    /// every token anyway (all stages, no adaptive extras) and, under a byte budget, only when it
    /// still does with the thumbnail. Tokens come first.
    Auto(ColourParams),
}

impl Colour {
    /// The thumbnail parameters, unless `Off`.
    pub fn params(&self) -> Option<ColourParams> {
        match *self {
            Self::Off => None,
            Self::On(p) | Self::Auto(p) => Some(p),
        }
    }
}

impl std::str::FromStr for Colour {
    type Err = Error;
    /// `off`, `on`, `auto`, optionally with `:BLOCK:STEP` (e.g. `on:32:4`).
    fn from_str(s: &str) -> Result<Self> {
        let mut parts = s.split(':');
        let mode = parts.next().unwrap_or_default();
        let rest: Vec<&str> = parts.collect();
        let bad = |why: String| {
            Error::InvalidArgument(format!(
                "colour {s:?}: {why} (expected off, on or auto, optionally :BLOCK:STEP as in on:32:4)"
            ))
        };
        let params = match rest.as_slice() {
            [] => ColourParams::default(),
            [block, step] => {
                let num = |v: &str| {
                    v.parse::<u32>()
                        .map_err(|_| bad(format!("{v:?} is not a number")))
                };
                ColourParams::new(num(block)?, num(step)?).map_err(bad)?
            }
            _ => return Err(bad("wrong number of fields".into())),
        };
        match mode {
            "off" if rest.is_empty() => Ok(Self::Off),
            "on" => Ok(Self::On(params)),
            "auto" => Ok(Self::Auto(params)),
            _ => Err(bad(format!("unknown mode {mode:?}"))),
        }
    }
}

impl std::fmt::Display for Colour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (mode, p) = match *self {
            Self::Off => return f.write_str("off"),
            Self::On(p) => ("on", p),
            Self::Auto(p) => ("auto", p),
        };
        write!(f, "{mode}:{}:{}", p.block(), p.step)
    }
}

/// Which tokens the encoder sends: a named fraction (a stage prefix) or an explicit prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeepPolicy {
    /// Every stage.
    #[default]
    All,
    /// `1 / 2^e` of the tokens: 1 half (the paper's checkerboard), 2 quarter, 3 eighth, ...
    Fraction(u32),
    /// The first `n` stages of the schedule.
    Stages(usize),
}

impl KeepPolicy {
    /// The number of stages this policy sends under `schedule`.
    pub fn stages(&self, schedule: &Schedule) -> Result<usize> {
        let n = schedule.num_stages();
        match *self {
            Self::All => Ok(n),
            Self::Fraction(e) => schedule.stages_for_fraction(e).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "keep 1/{} is finer than the schedule's coarsest stage (1/{})",
                    1u64 << e.min(63),
                    1u64 << (2 * schedule.levels())
                ))
            }),
            Self::Stages(k) if k <= n => Ok(k),
            Self::Stages(k) => Err(Error::InvalidArgument(format!(
                "keep {k} stages: the schedule has {n}"
            ))),
        }
    }
}

impl std::str::FromStr for KeepPolicy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let named = [
            ("all", 0),
            ("half", 1),
            ("quarter", 2),
            ("eighth", 3),
            ("sixteenth", 4),
            ("thirty-second", 5),
            ("sixty-fourth", 6),
        ];
        if let Some(&(_, e)) = named.iter().find(|(n, _)| *n == s) {
            return Ok(if e == 0 { Self::All } else { Self::Fraction(e) });
        }
        if let Some(den) = s.strip_prefix("1/").and_then(|d| d.parse::<u64>().ok()) {
            if den.is_power_of_two() {
                return Ok(Self::Fraction(den.trailing_zeros()));
            }
        }
        if let Some(n) = s.strip_prefix("stages:").and_then(|n| n.parse().ok()) {
            return Ok(Self::Stages(n));
        }
        Err(Error::InvalidArgument(format!(
            "keep policy '{s}': use all, half, quarter, eighth, sixteenth, thirty-second, \
             sixty-fourth, 1/N (N a power of two) or stages:N"
        )))
    }
}

/// How the decoder fills tokens that were not sent. Every mode is exact integer arithmetic on
/// the integer prior, so a packet regenerates identically on every machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegenMode {
    /// One pass per stage, the most probable token (the UIGC paper).
    #[default]
    Argmax,
    /// MaskGIT-style: per dropped stage, `passes` rounds; each round picks a candidate for every
    /// remaining position (argmax when `sharpen` = 0, else sampled as in [`Self::Sample`]) and
    /// fixes the most confident ones (largest probability of their candidate), which then serve
    /// as context for the rest.
    Iterative { passes: u8, sharpen: u8 },
    /// Sampled from the prior's table raised to the power `sharpen` (temperature
    /// `1/sharpen`), with a generator seeded from the packet header.
    Sample { sharpen: u8 },
}

impl std::str::FromStr for RegenMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "regeneration mode '{s}': use argmax, iterative[:PASSES[:SHARPEN]] (2..=16 \
                 passes; SHARPEN 1..=4 samples the candidates) or sample[:SHARPEN] (1..=4, \
                 temperature 1/SHARPEN)"
            ))
        };
        let mut parts = s.split(':');
        let name = parts.next().unwrap_or_default();
        let nums = parts
            .map(|a| a.parse::<u8>().map_err(|_| bad()))
            .collect::<Result<Vec<u8>>>()?;
        let (arg, arg2) = match nums[..] {
            [] => (None, None),
            [a] => (Some(a), None),
            [a, b] if name == "iterative" => (Some(a), Some(b)),
            _ => return Err(bad()),
        };
        match name {
            "argmax" if arg.is_none() => Ok(Self::Argmax),
            "iterative" => match (arg.unwrap_or(4), arg2.unwrap_or(0)) {
                (p @ 2..=16, k @ 0..=4) if arg2 != Some(0) => Ok(Self::Iterative {
                    passes: p,
                    sharpen: k,
                }),
                _ => Err(bad()),
            },
            "sample" => match arg.unwrap_or(1) {
                k @ 1..=4 => Ok(Self::Sample { sharpen: k }),
                _ => Err(bad()),
            },
            _ => Err(bad()),
        }
    }
}

impl std::fmt::Display for RegenMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Argmax => write!(f, "argmax"),
            Self::Iterative { passes, sharpen: 0 } => write!(f, "iterative:{passes}"),
            Self::Iterative { passes, sharpen } => write!(f, "iterative:{passes}:{sharpen}"),
            Self::Sample { sharpen } => write!(f, "sample:{sharpen}"),
        }
    }
}

/// Result of coding one grid.
#[derive(Debug, Clone)]
pub struct EncodedPacket {
    pub bytes: Vec<u8>,
    pub header: Header,
    /// Sum of the ideal code lengths (-log2 p) of everything coded under the integer tables.
    pub ideal_bits: f64,
    /// Bits of the range-coder payload as sent.
    pub payload_bits: usize,
    /// Tokens sent (prefix stages plus adaptive extras).
    pub coded_tokens: usize,
    /// Adaptive extra tokens among them.
    pub extra_tokens: usize,
    /// Ideal bits of each coded stage (the adaptive stage: mask and extras), for reports.
    pub stage_bits: Vec<f64>,
    /// Ideal bits of the colour thumbnail (0 without one).
    pub colour_bits: f64,
}

/// A decoded grid.
#[derive(Debug, Clone)]
pub struct DecodedTokens {
    pub header: Header,
    pub grid: TokenGrid,
    /// Tokens that came from the packet (the rest were regenerated by the prior).
    pub coded: Vec<bool>,
    /// The regeneration mode used for the rest.
    pub regen: RegenMode,
    /// The colour thumbnail, when the packet carries one.
    pub colour: Option<ColourThumb>,
}

/// Largest frame (width x height pixels, of the picture the tokens describe: twice each side for
/// a dense packet) a decoder accepts unless told otherwise: 3840 x 2160. The packet format allows
/// 8192 x 8192, whose tokenizer decoder pass needs tens of GB; a receiver that expects larger
/// frames raises it ([`TokenCodec::set_max_pixels`], `uigc decode --max-pixels`, `uigcdec
/// max-pixels`).
pub const DEFAULT_MAX_PIXELS: u64 = 3840 * 2160;

/// Codes token grids with one schedule and one prior, under one model id.
pub struct TokenCodec {
    model_id: ModelId,
    schedule: Schedule,
    prior: Box<dyn Prior>,
    regen: RegenMode,
    max_pixels: u64,
}

/// Adaptive-mask context model: an integer Krichevsky-Trofimov estimator per context
/// (context = whether the previous position of the stage was kept).
struct MaskModel {
    counts: [[u32; 2]; 2],
    table: [u32; 2],
}

impl MaskModel {
    fn new() -> Self {
        Self {
            counts: [[0; 2]; 2],
            table: [0; 2],
        }
    }

    fn table(&mut self, ctx: usize) -> &[u32] {
        let [n0, n1] = self.counts[ctx];
        self.table = kt_table(n0, n1);
        &self.table
    }

    fn update(&mut self, ctx: usize, bit: usize) {
        self.counts[ctx][bit] += 1;
    }
}

/// Index of the largest entry (first on ties).
fn argmax(table: &[u32]) -> usize {
    let mut best = 0;
    for (i, &p) in table.iter().enumerate() {
        if p > table[best] {
            best = i;
        }
    }
    best
}

/// splitmix64: the deterministic generator of `RegenMode::Sample`.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Draws from `table^sharpen` (exact in u128: entries < 2^24, sharpen <= 4).
fn sample(table: &[u32], sharpen: u8, rng: &mut u64) -> usize {
    let pow = |p: u32| (p as u128).pow(sharpen as u32);
    let total: u128 = table.iter().map(|&p| pow(p)).sum();
    let r = ((splitmix(rng) as u128) << 64 | splitmix(rng) as u128) % total;
    let mut acc = 0u128;
    for (i, &p) in table.iter().enumerate() {
        acc += pow(p);
        if r < acc {
            return i;
        }
    }
    table.len() - 1
}

/// Index of `pos` within its stage.
fn index_in_stage(plan: &StagePlan, stage: usize, pos: u32) -> usize {
    plan.stages[stage]
        .binary_search(&pos)
        .expect("position belongs to the stage")
}

impl TokenCodec {
    pub fn new(model_id: ModelId, schedule: Schedule, prior: Box<dyn Prior>) -> Self {
        Self {
            model_id,
            schedule,
            prior,
            regen: RegenMode::default(),
            max_pixels: DEFAULT_MAX_PIXELS,
        }
    }

    /// The largest picture (pixels of the coded size) [`TokenCodec::decode`] accepts; larger
    /// packets are refused with [`PacketError::FrameTooLarge`] before any work is done.
    pub fn set_max_pixels(&mut self, max_pixels: u64) {
        self.max_pixels = max_pixels;
    }

    pub fn max_pixels(&self) -> u64 {
        self.max_pixels
    }

    pub fn model_id(&self) -> ModelId {
        self.model_id
    }

    pub fn schedule(&self) -> Schedule {
        self.schedule
    }

    pub fn codebook_size(&self) -> usize {
        self.prior.codebook_size()
    }

    /// The regeneration mode the decoder uses for tokens that were not sent.
    pub fn set_regen(&mut self, mode: RegenMode) {
        self.regen = mode;
    }

    pub fn regen(&self) -> RegenMode {
        self.regen
    }

    /// The prior (for the temporal coder, which drives it with its own contexts).
    pub(crate) fn prior_mut(&mut self) -> &mut dyn Prior {
        self.prior.as_mut()
    }

    fn check_grid(&self, grid: &TokenGrid, width: u32, height: u32, dense: bool) -> Result<()> {
        let max = super::bitstream::MAX_DIMENSION;
        let (cw, ch) = coded_size(width, height, dense);
        if !(1..=max).contains(&cw)
            || !(1..=max).contains(&ch)
            || (grid.rows, grid.cols) != (ch.div_ceil(16) as usize, cw.div_ceil(16) as usize)
        {
            return Err(Error::InvalidArgument(format!(
                "a {}x{} token grid does not fit a {width}x{height} frame{}",
                grid.rows,
                grid.cols,
                if dense { " (dense)" } else { "" }
            )));
        }
        let k = self.codebook_size();
        if let Some(&t) = grid.tokens.iter().find(|&&t| t as usize >= k) {
            return Err(Error::InvalidArgument(format!(
                "token {t} outside the codebook of {k}"
            )));
        }
        Ok(())
    }

    /// Encodes `grid` (the tokens of a `width` x `height` frame) into one packet.
    ///
    /// Without `max_bytes` it sends the stage prefix `params.stages` (all by default) and, when
    /// `params.extra > 0`, that many adaptive tokens of the next stage. With `max_bytes` it sends
    /// the most it can within the cap: the longest stage prefix that fits, then as many adaptive
    /// tokens of the next stage as fit. A cap below the smallest packet is an error
    /// ([`Error::BudgetTooSmall`]); the packet never exceeds the cap.
    ///
    /// A colour thumbnail needs the frame itself: `params.colour` must be `Off` here (use
    /// [`TokenCodec::encode_with_colour`] or `Model::encode`).
    pub fn encode(
        &mut self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
        params: FrameParams,
    ) -> Result<EncodedPacket> {
        if params.colour != Colour::Off {
            return Err(Error::InvalidArgument(
                "a colour thumbnail needs the frame: use encode_with_colour".into(),
            ));
        }
        self.encode_with_colour(grid, width, height, params, None)
    }

    /// [`TokenCodec::encode`] with an optional colour thumbnail of the frame, coded after the
    /// tokens (its bytes count against `max_bytes`; `params.colour` is not consulted).
    pub fn encode_with_colour(
        &mut self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
        params: FrameParams,
        colour: Option<&ColourThumb>,
    ) -> Result<EncodedPacket> {
        if let Some(c) = colour {
            if (c.rows, c.cols) != c.params.grid(width, height) {
                return Err(Error::InvalidArgument(format!(
                    "colour thumbnail of {}x{} blocks does not fit a {width}x{height} frame",
                    c.cols, c.rows
                )));
            }
        }
        let num_stages = self.schedule.num_stages();
        let max_stages = params.stages.unwrap_or(num_stages);
        if max_stages > num_stages {
            return Err(Error::InvalidArgument(format!(
                "{max_stages} stages requested, the schedule has {num_stages}"
            )));
        }
        self.check_grid(grid, width, height, params.dense)?;
        let plan = self.schedule.plan(grid.rows, grid.cols);
        // Tables of every stage the packet may touch: the prefix and the adaptive stage.
        let wants_adaptive = params.extra > 0 || params.max_bytes.is_some();
        let last = if wants_adaptive && max_stages < num_stages {
            max_stages + 1
        } else {
            max_stages
        };
        self.prior.reset();
        let mut tables = Vec::with_capacity(last);
        for s in 0..last {
            tables.push(if plan.stages[s].is_empty() {
                ProbTables::shared(vec![TOTAL])
            } else {
                self.prior.stage_tables(grid, &plan, s)?
            });
        }
        let candidates = |p: usize| -> Vec<u32> {
            if p >= tables.len() {
                return Vec::new();
            }
            // Positions the decoder's argmax would get wrong, cheapest to send first.
            let mut c: Vec<(u32, u32)> = plan.stages[p]
                .iter()
                .enumerate()
                .filter_map(|(i, &pos)| {
                    let t = tables[p].get(i);
                    let truth = grid.tokens[pos as usize] as usize;
                    (argmax(t) != truth).then_some((t[truth], pos))
                })
                .collect();
            c.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
            c.into_iter().map(|(_, pos)| pos).collect()
        };
        let build = |p: usize, extras: &[u32]| {
            self.build_packet(
                grid, width, height, &plan, &tables, params, p, extras, colour,
            )
        };
        let Some(cap) = params.max_bytes else {
            if params.extra == 0 {
                return Ok(build(max_stages, &[]));
            }
            let extras = candidates(max_stages);
            let n = params.extra.min(extras.len());
            return Ok(build(max_stages, &extras[..n]));
        };
        // Rate control: the longest prefix that fits (sizes grow with the prefix) ...
        let mut best = None;
        for p in (0..=max_stages).rev() {
            let packet = build(p, &[]);
            if packet.bytes.len() <= cap {
                best = Some((p, packet));
                break;
            }
        }
        let Some((p, plain)) = best else {
            let min = build(0, &[]).bytes.len();
            return Err(Error::BudgetTooSmall { budget: cap, min });
        };
        // ... then the most adaptive tokens of the next stage that fit (binary search).
        let extras = candidates(p);
        let (mut lo, mut hi) = (0usize, extras.len());
        let mut chosen = plain;
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let packet = build(p, &extras[..mid]);
            if packet.bytes.len() <= cap {
                lo = mid;
                chosen = packet;
            } else {
                hi = mid - 1;
            }
        }
        Ok(chosen)
    }

    #[allow(clippy::too_many_arguments)]
    fn build_packet(
        &self,
        grid: &TokenGrid,
        width: u32,
        height: u32,
        plan: &StagePlan,
        tables: &[ProbTables],
        params: FrameParams,
        prefix: usize,
        extras: &[u32],
        colour: Option<&ColourThumb>,
    ) -> EncodedPacket {
        let adaptive = !extras.is_empty();
        let mut header = Header {
            version: VERSION,
            flags: if adaptive { FLAG_ADAPTIVE } else { 0 }
                | if params.dense { FLAG_DENSE } else { 0 }
                | if colour.is_some() { FLAG_COLOUR } else { 0 },
            model_id: self.model_id,
            stream_id: params.stream_id,
            frame: params.frame,
            width,
            height,
            stages: prefix as u8,
            colour: colour.map(|c| c.params),
            inter: None,
            check: 0,
        };
        let mut enc = TokenEncoder::new();
        let mut stage_bits = Vec::with_capacity(prefix + 1);
        let mut coded: Vec<u16> = Vec::new();
        for (positions, stage_tables) in plan.stages.iter().zip(tables).take(prefix) {
            let before = enc.ideal_bits();
            for (i, &pos) in positions.iter().enumerate() {
                let t = grid.tokens[pos as usize];
                enc.encode(t as usize, stage_tables.get(i))
                    .expect("valid tables and tokens");
                coded.push(t);
            }
            stage_bits.push(enc.ideal_bits() - before);
        }
        if adaptive {
            let before = enc.ideal_bits();
            let mut keep = vec![false; plan.num_tokens()];
            for &p in extras {
                keep[p as usize] = true;
            }
            let mut model = MaskModel::new();
            let mut prev = 0;
            for &pos in &plan.stages[prefix] {
                let bit = keep[pos as usize] as usize;
                enc.encode(bit, model.table(prev)).expect("mask table");
                model.update(prev, bit);
                prev = bit;
            }
            for (i, &pos) in plan.stages[prefix].iter().enumerate() {
                if keep[pos as usize] {
                    let t = grid.tokens[pos as usize];
                    enc.encode(t as usize, tables[prefix].get(i))
                        .expect("valid tables and tokens");
                    coded.push(t);
                }
            }
            stage_bits.push(enc.ideal_bits() - before);
        }
        let coded_tokens = coded.len();
        let before = enc.ideal_bits();
        if let Some(c) = colour {
            c.encode(&mut enc)
                .expect("thumbnail values within their ranges");
            coded.extend(c.values().map(|v| v as i16 as u16));
        }
        let colour_bits = enc.ideal_bits() - before;
        let ideal_bits = enc.ideal_bits();
        let payload = enc.finish();
        let prefix_bytes = write_header_prefix(&header);
        header.check = check_value(&prefix_bytes, coded.iter().copied());
        EncodedPacket {
            bytes: write_packet(&header, &payload),
            header,
            ideal_bits,
            payload_bits: payload.len() * 8,
            coded_tokens,
            extra_tokens: extras.len(),
            stage_bits,
            colour_bits,
        }
    }

    /// Decodes a packet into its token grid; tokens that were not sent are regenerated with
    /// the codec's [`RegenMode`].
    pub fn decode(&mut self, data: &[u8]) -> Result<DecodedTokens> {
        let packet = parse_packet(data)?;
        let header = packet.header.clone();
        if let Some(inter) = header.inter {
            return Err(PacketError::NoReference {
                frame: header.frame,
                reference: inter.reference,
            }
            .into());
        }
        if header.model_id != self.model_id {
            return Err(PacketError::ModelMismatch {
                packet_model: header.model_id.to_string(),
                decoder_model: self.model_id.to_string(),
            }
            .into());
        }
        let (cw, ch) = header.coded_size();
        if cw as u64 * ch as u64 > self.max_pixels {
            return Err(PacketError::FrameTooLarge {
                width: cw,
                height: ch,
                max_pixels: self.max_pixels,
            }
            .into());
        }
        let num_stages = self.schedule.num_stages();
        let prefix = header.stages as usize;
        let adaptive = header.flags & FLAG_ADAPTIVE != 0;
        if prefix > num_stages || (adaptive && prefix >= num_stages) {
            return Err(PacketError::BadStageCount {
                found: header.stages,
                max: num_stages - adaptive as usize,
            }
            .into());
        }
        let (rows, cols) = header.grid();
        let plan = self.schedule.plan(rows, cols);
        // Every token costs at most 24 bits, so does every mask bit, plus the final word.
        let adaptive_count = if adaptive {
            2 * plan.stages[prefix].len()
        } else {
            0
        };
        let colour_count = header.colour.map_or(0, |c| {
            let (r, k) = c.grid(header.width, header.height);
            3 * r * k * ColourThumb::MAX_SYMBOLS_PER_VALUE
        });
        let max_payload = (plan.tokens_in_first(prefix) + adaptive_count + colour_count) * 3 + 4;
        if packet.payload.len() > max_payload {
            return Err(PacketError::PayloadTooLarge {
                len: packet.payload.len(),
                max: max_payload,
            }
            .into());
        }
        self.prior.reset();
        let mut grid = TokenGrid::zeros(rows, cols);
        let mut coded = vec![false; rows * cols];
        let mut coded_tokens: Vec<u16> = Vec::new();
        let mut dec = TokenDecoder::new(packet.payload)?;
        let mut rng = u64::from(header.stream_id) << 32 | u64::from(header.frame);
        for s in 0..num_stages {
            let positions = &plan.stages[s];
            if positions.is_empty() {
                continue;
            }
            let tables = self.prior.stage_tables(&grid, &plan, s)?;
            if s < prefix {
                for (i, &pos) in positions.iter().enumerate() {
                    let t = dec.decode(tables.get(i))? as u16;
                    grid.tokens[pos as usize] = t;
                    coded[pos as usize] = true;
                    coded_tokens.push(t);
                }
                continue;
            }
            if adaptive && s == prefix {
                let mut model = MaskModel::new();
                let mut prev = 0;
                let mut keep = Vec::with_capacity(positions.len());
                for _ in positions {
                    let bit = dec.decode(model.table(prev))?;
                    model.update(prev, bit);
                    prev = bit;
                    keep.push(bit == 1);
                }
                for (i, &pos) in positions.iter().enumerate() {
                    if keep[i] {
                        let t = dec.decode(tables.get(i))? as u16;
                        grid.tokens[pos as usize] = t;
                        coded[pos as usize] = true;
                        coded_tokens.push(t);
                    }
                }
            }
            self.regenerate(&mut grid, &coded, &plan, s, &tables, &mut rng)?;
        }
        let colour = match header.colour {
            Some(params) => {
                let thumb = ColourThumb::decode(&mut dec, params, header.width, header.height)?;
                coded_tokens.extend(thumb.values().map(|v| v as i16 as u16));
                Some(thumb)
            }
            None => None,
        };
        let actual = check_value(packet.header_bytes, coded_tokens.into_iter());
        if actual != header.check {
            return Err(PacketError::CheckMismatch {
                expected: header.check,
                actual,
            }
            .into());
        }
        Ok(DecodedTokens {
            header,
            grid,
            coded,
            regen: self.regen,
            colour,
        })
    }

    /// Fills the positions of stage `s` that were not sent.
    fn regenerate(
        &mut self,
        grid: &mut TokenGrid,
        coded: &[bool],
        plan: &StagePlan,
        s: usize,
        tables: &ProbTables,
        rng: &mut u64,
    ) -> Result<()> {
        let positions = &plan.stages[s];
        let missing: Vec<u32> = positions
            .iter()
            .copied()
            .filter(|&p| !coded[p as usize])
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        match self.regen {
            RegenMode::Argmax => {
                for &pos in &missing {
                    let i = index_in_stage(plan, s, pos);
                    grid.tokens[pos as usize] = argmax(tables.get(i)) as u16;
                }
            }
            RegenMode::Sample { sharpen } => {
                for &pos in &missing {
                    let i = index_in_stage(plan, s, pos);
                    grid.tokens[pos as usize] = sample(tables.get(i), sharpen, rng) as u16;
                }
            }
            RegenMode::Iterative { passes, sharpen } => {
                let mut fixed: Vec<u32> = positions
                    .iter()
                    .copied()
                    .filter(|&p| coded[p as usize])
                    .collect();
                let mut remaining = missing;
                for pass in 0..passes as usize {
                    if remaining.is_empty() {
                        break;
                    }
                    let t = if pass == 0 && fixed.is_empty() {
                        // Same as the stage tables: reuse them.
                        let rows: Vec<u32> = remaining
                            .iter()
                            .flat_map(|&p| tables.get(index_in_stage(plan, s, p)).to_vec())
                            .collect();
                        ProbTables::per_position(tables.get(0).len(), rows)
                    } else {
                        fixed.sort_unstable();
                        self.prior
                            .partial_tables(grid, plan, s, &fixed, &remaining)?
                    };
                    // A candidate per position (in stage raster order, so the generator is
                    // consumed identically everywhere); most confident first: largest
                    // probability of the candidate, then raster order.
                    let cand: Vec<usize> = (0..remaining.len())
                        .map(|i| match sharpen {
                            0 => argmax(t.get(i)),
                            k => sample(t.get(i), k, rng),
                        })
                        .collect();
                    let mut order: Vec<(u32, usize)> = (0..remaining.len())
                        .map(|i| (t.get(i)[cand[i]], i))
                        .collect();
                    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    let left = passes as usize - pass;
                    let take = remaining.len().div_ceil(left);
                    let mut done = vec![false; remaining.len()];
                    for &(_, i) in order.iter().take(take) {
                        let pos = remaining[i];
                        grid.tokens[pos as usize] = cand[i] as u16;
                        fixed.push(pos);
                        done[i] = true;
                    }
                    remaining = remaining
                        .iter()
                        .zip(&done)
                        .filter(|(_, &d)| !d)
                        .map(|(&p, _)| p)
                        .collect();
                }
            }
        }
        Ok(())
    }
}
