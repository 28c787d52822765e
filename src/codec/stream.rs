//! Camera streams: the sender's and the receiver's state machines around inter packets
//! ([`super::temporal`]): keyframes, what counts as a change, gradual refresh, the link's rate
//! control (a leaky bucket) and, at the receiver, loss detection, concealment and recovery.

use std::time::Instant;

use super::colour::{ColourParams, ColourThumb};
use super::error::{Error, PacketError, Result};
use super::frame::RgbImage;
use super::prior::TokenGrid;
use super::render::{RenderPolicy, RenderStats, Rendered, Renderer};
use super::temporal::{band_alignment, InterFrame, Reference};
use super::tokens::{Colour, EncodedPacket, FrameParams, RegenMode};
use super::{Model, Timings};

/// Sender settings of a stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamConfig {
    pub stream_id: u32,
    /// An intra frame every this many frames (0: only the first, after a size change and on
    /// request). 1 codes every frame intra (a sequence of stills).
    pub keyframe_interval: u32,
    /// Frames per gradual-refresh cycle: every token row is re-sent intra once per cycle, a band
    /// per frame, so a receiver that lost packets is exact again within two cycles (0: off).
    pub refresh_frames: u32,
    /// A token whose codeword changed is re-sent only when the mean absolute difference of its
    /// 16x16 block to the pixels it was last sent for reaches this many 8-bit levels (sensor
    /// noise flips tokens between near codewords; 0 re-sends every changed token).
    pub change_threshold: f32,
    /// Colour thumbnail of the stream (`Auto` is `On`: streams send every token).
    pub colour: Colour,
    /// Hard cap on every packet, refreshes and keyframes included.
    pub max_frame_bytes: Option<usize>,
    /// Link rate in bit/s with the frame rate: a leaky bucket sets each frame's budget.
    pub target_bitrate: Option<u32>,
    /// Frames per second (for the bucket).
    pub fps: f64,
    /// Bucket size in seconds of `target_bitrate`.
    pub bucket_seconds: f64,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            stream_id: 0,
            keyframe_interval: 0,
            refresh_frames: DEFAULT_REFRESH_FRAMES,
            change_threshold: DEFAULT_CHANGE_THRESHOLD,
            colour: Colour::Auto(Default::default()),
            max_frame_bytes: None,
            target_bitrate: None,
            fps: 10.0,
            bucket_seconds: 2.0,
        }
    }
}

/// Default gradual-refresh cycle: 100 frames (10 s at 10 fps).
pub const DEFAULT_REFRESH_FRAMES: u32 = 100;
/// Default change threshold in 8-bit levels of mean absolute block difference.
pub const DEFAULT_CHANGE_THRESHOLD: f32 = 3.0;

/// Kind of a stream packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    Intra,
    Inter,
}

impl FrameKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Intra => "intra",
            Self::Inter => "inter",
        }
    }
}

/// One coded frame of a stream, with its statistics.
#[derive(Debug, Clone)]
pub struct StreamPacket {
    pub packet: EncodedPacket,
    pub kind: FrameKind,
    /// Tokens sent (refresh band included; every token for an intra frame).
    pub sent_tokens: usize,
    /// Tokens whose codeword changed but stayed below the change threshold (not sent).
    pub held_tokens: usize,
    /// Token rows of the refresh band in this packet.
    pub refresh_rows: usize,
    /// Bucket level after this packet (bytes), with a target bitrate.
    pub bucket: Option<f64>,
    /// This frame's budget (bytes), when one applied.
    pub budget: Option<usize>,
    pub timings: Timings,
}

/// Leaky bucket of a link rate: each frame adds `rate / fps` bytes, each packet takes its size.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    per_frame: f64,
    size: f64,
    level: f64,
}

/// The sender's side of a stream.
pub struct StreamEncoder {
    config: StreamConfig,
    reference: Option<Reference>,
    /// The pixels each token was last sent for (the change decision compares against them).
    anchor: Option<RgbImage>,
    frame: u32,
    since_key: u32,
    /// End of the clean area of the current refresh cycle (token rows).
    clean_rows: usize,
    /// Frames into the current refresh cycle.
    cycle_pos: u32,
    bucket: Option<Bucket>,
    force_key: bool,
}

impl StreamEncoder {
    pub fn new(config: StreamConfig) -> Result<Self> {
        if !(config.fps > 0.0 && config.fps.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "frame rate {} must be positive",
                config.fps
            )));
        }
        if config.change_threshold < 0.0 || config.change_threshold.is_nan() {
            return Err(Error::InvalidArgument(
                "change threshold must be >= 0".into(),
            ));
        }
        let bucket = config.target_bitrate.map(|rate| {
            let per_frame = rate as f64 / 8.0 / config.fps;
            let size = (rate as f64 / 8.0 * config.bucket_seconds).max(per_frame);
            Bucket {
                per_frame,
                size,
                level: size,
            }
        });
        Ok(Self {
            config,
            reference: None,
            anchor: None,
            frame: 0,
            since_key: 0,
            clean_rows: 0,
            cycle_pos: 0,
            bucket,
            force_key: false,
        })
    }

    pub fn config(&self) -> &StreamConfig {
        &self.config
    }

    /// The state the receiver holds after the last packet (when it received every packet).
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_ref()
    }

    /// The next frame is coded intra (a keyframe request).
    pub fn force_keyframe(&mut self) {
        self.force_key = true;
    }

    /// Frame counter the next packet gets.
    pub fn next_frame(&self) -> u32 {
        self.frame
    }

    /// Sets the frame counter of the next packet (a sender that restarts its encoder keeps
    /// counting).
    pub fn set_next_frame(&mut self, frame: u32) {
        self.frame = frame;
    }

    /// Codes the next frame. `Err(Error::BudgetTooSmall)` means the frame was skipped (no
    /// packet; the stream goes on and the next packet refers to the last one sent).
    pub fn encode(&mut self, model: &mut Model, image: &RgbImage) -> Result<StreamPacket> {
        self.encode_with(model, image, None)
    }

    /// [`Self::encode`] with the frame's tokens already made (by `model`'s encoder network or
    /// a [`super::pipeline::TokenizerThread`] of the same bundle), and the time that took.
    pub fn encode_tokenized(
        &mut self,
        model: &mut Model,
        image: &RgbImage,
        tokens: TokenGrid,
        network: std::time::Duration,
    ) -> Result<StreamPacket> {
        if (tokens.rows, tokens.cols) != image.grid() {
            return Err(Error::InvalidArgument(format!(
                "a {}x{} token grid for a {}x{} frame",
                tokens.cols, tokens.rows, image.width, image.height
            )));
        }
        self.encode_with(model, image, Some((tokens, network)))
    }

    fn encode_with(
        &mut self,
        model: &mut Model,
        image: &RgbImage,
        tokens: Option<(TokenGrid, std::time::Duration)>,
    ) -> Result<StreamPacket> {
        // The frame counter counts packets: a skipped frame leaves no gap a receiver would
        // count as lost.
        let frame = self.frame;
        let budget = self.budget();
        let result = self.encode_frame(model, image, frame, budget, tokens);
        if result.is_ok() {
            self.frame = self.frame.wrapping_add(1);
        }
        if let Some(b) = self.bucket.as_mut() {
            let spent = result.as_ref().map_or(0, |p| p.packet.bytes.len()) as f64;
            b.level = (b.level + b.per_frame - spent).min(b.size);
        }
        result.map(|mut p| {
            p.bucket = self.bucket.map(|b| b.level);
            p.budget = budget;
            p
        })
    }

    /// This frame's budget: what the bucket holds after this frame's share, and the cap.
    fn budget(&self) -> Option<usize> {
        let from_bucket = self
            .bucket
            .map(|b| (b.level + b.per_frame).min(b.size).max(0.0) as usize);
        match (from_bucket, self.config.max_frame_bytes) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn encode_frame(
        &mut self,
        model: &mut Model,
        image: &RgbImage,
        frame: u32,
        budget: Option<usize>,
        tokens: Option<(TokenGrid, std::time::Duration)>,
    ) -> Result<StreamPacket> {
        model
            .token_codec()
            .check_encodable(image.width, image.height, false)?;
        let (tokens, network) = match tokens {
            Some(t) => t,
            None => {
                let t0 = Instant::now();
                (model.tokenize(image)?, t0.elapsed())
            }
        };
        let t1 = Instant::now();
        let key = match &self.reference {
            None => true,
            Some(r) => {
                (r.width, r.height) != (image.width, image.height)
                    || self.force_key
                    || (self.config.keyframe_interval > 0
                        && self.since_key + 1 >= self.config.keyframe_interval)
            }
        };
        let mut out = if key {
            self.encode_intra(model, image, &tokens, frame, budget)?
        } else {
            self.encode_inter(model, image, &tokens, frame, budget)?
        };
        out.timings = Timings {
            network,
            coding: t1.elapsed(),
        };
        Ok(out)
    }

    fn encode_intra(
        &mut self,
        model: &mut Model,
        image: &RgbImage,
        tokens: &TokenGrid,
        frame: u32,
        budget: Option<usize>,
    ) -> Result<StreamPacket> {
        let colour = match self.config.colour {
            Colour::Auto(p) => Colour::On(p),
            c => c,
        };
        let params = FrameParams {
            stream_id: self.config.stream_id,
            frame,
            max_bytes: budget,
            colour,
            ..Default::default()
        };
        let thumb = colour.params().map(|p| ColourThumb::from_image(image, p));
        let codec = model.token_codec();
        let packet = match codec.encode_with_colour(
            tokens,
            image.width,
            image.height,
            params,
            thumb.as_ref(),
        ) {
            // Under a tight cap the thumbnail goes first, then tokens are dropped.
            Err(Error::BudgetTooSmall { .. }) if thumb.is_some() => {
                codec.encode_with_colour(tokens, image.width, image.height, params, None)?
            }
            other => other?,
        };
        let mut anchor = image.clone();
        let reference = if packet.coded_tokens == tokens.tokens.len() {
            let colour = if packet.header.colour.is_some() {
                thumb
            } else {
                None
            };
            Reference::intra(frame, image.width, image.height, tokens.clone(), colour)
        } else {
            // The receiver's grid: the sent tokens, the rest regenerated with argmax.
            let regen = codec.regen();
            codec.set_regen(RegenMode::Argmax);
            let decoded = codec.decode(&packet.bytes);
            codec.set_regen(regen);
            let decoded = decoded?;
            // Regenerated tokens have no pixels behind them: an anchor unlike any frame.
            let cols = tokens.cols;
            for (p, _) in decoded.coded.iter().enumerate().filter(|(_, &c)| !c) {
                fill_block(&mut anchor, p / cols, p % cols, 0);
            }
            Reference::intra(
                frame,
                image.width,
                image.height,
                decoded.grid,
                decoded.colour,
            )
        };
        self.reference = Some(reference);
        self.anchor = Some(anchor);
        self.since_key = 0;
        self.force_key = false;
        self.clean_rows = 0;
        self.cycle_pos = 0;
        let sent = packet.coded_tokens;
        Ok(StreamPacket {
            packet,
            kind: FrameKind::Intra,
            sent_tokens: sent,
            held_tokens: 0,
            refresh_rows: 0,
            bucket: None,
            budget: None,
            timings: Timings::default(),
        })
    }

    /// The refresh band of the next inter frame (token rows).
    fn next_band(&self, rows: usize, align: usize) -> (usize, usize) {
        let n = self.config.refresh_frames as usize;
        if n == 0 {
            return (0, 0);
        }
        let start = if self.clean_rows >= rows {
            0
        } else {
            self.clean_rows
        };
        let pos = if start == 0 {
            0
        } else {
            self.cycle_pos as usize
        };
        let units = rows.div_ceil(align);
        let end_units = (units * (pos + 1)).div_ceil(n).min(units);
        let end = (end_units * align).min(rows).max(start);
        (start, end)
    }

    fn encode_inter(
        &mut self,
        model: &mut Model,
        image: &RgbImage,
        tokens: &TokenGrid,
        frame: u32,
        budget: Option<usize>,
    ) -> Result<StreamPacket> {
        let reference = self.reference.as_ref().expect("reference");
        let anchor = self.anchor.as_ref().expect("anchor");
        let (rows, cols) = (tokens.rows, tokens.cols);
        let thumb = reference
            .colour
            .as_ref()
            .map(|c| ColourThumb::from_image(image, c.params));
        let align = band_alignment(thumb.as_ref());
        let mut band = self.next_band(rows, align);
        // Candidates: codeword changed and the block moved enough; most moved first.
        let mut held = 0;
        let mut order: Vec<(f32, usize)> = Vec::new();
        for p in 0..rows * cols {
            if tokens.tokens[p] == reference.grid.tokens[p] {
                continue;
            }
            let mad = block_mad(image, anchor, p / cols, p % cols);
            if mad >= self.config.change_threshold {
                order.push((mad, p));
            } else {
                held += 1;
            }
        }
        order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut keep = order.len();
        let codec = model.token_codec();
        let (packet, state, changed) = loop {
            let mut changed = vec![false; rows * cols];
            for &(_, p) in &order[..keep] {
                changed[p] = true;
            }
            let colour_changed = match (&reference.colour, &thumb) {
                (Some(r), Some(t)) => colour_changes(r, t, &changed, cols),
                _ => Vec::new(),
            };
            let frame_in = InterFrame {
                tokens,
                changed: &changed,
                band,
                colour: thumb.as_ref(),
                colour_changed: &colour_changed,
            };
            let (packet, state) =
                codec.encode_inter(reference, &frame_in, self.config.stream_id, frame)?;
            let Some(cap) = budget else {
                break (packet, state, changed);
            };
            let len = packet.bytes.len();
            if len <= cap {
                break (packet, state, changed);
            }
            // Over budget: fewer changed tokens (the least moved go first), then no band.
            if keep > 0 {
                keep = ((keep as f64 * cap as f64 / len as f64 * 0.9) as usize).min(keep - 1);
            } else if band.1 > band.0 {
                band = (band.0, band.0);
            } else {
                return Err(Error::BudgetTooSmall {
                    budget: cap,
                    min: len,
                });
            }
        };
        // The anchor follows what was sent.
        let anchor = self.anchor.as_mut().expect("anchor");
        for (p, &c) in changed.iter().enumerate() {
            let r = p / cols;
            if c || (r >= band.0 && r < band.1) {
                copy_block(anchor, image, r, p % cols);
            }
        }
        held += order.len() - keep;
        let refresh_rows = band.1 - band.0;
        if self.config.refresh_frames > 0 {
            if band.0 == 0 && band.1 > 0 || self.clean_rows >= rows {
                self.cycle_pos = 0;
            }
            self.clean_rows = band.1;
            self.cycle_pos += 1;
        }
        self.reference = Some(state);
        self.since_key += 1;
        Ok(StreamPacket {
            sent_tokens: packet.coded_tokens,
            packet,
            kind: FrameKind::Inter,
            held_tokens: held,
            refresh_rows,
            bucket: None,
            budget: None,
            timings: Timings::default(),
        })
    }
}

/// Thumbnail blocks to re-send: a value moved by two steps or more, or by one where a token of
/// the block is re-sent.
fn colour_changes(
    old: &ColourThumb,
    new: &ColourThumb,
    changed: &[bool],
    cols: usize,
) -> Vec<bool> {
    let per = (new.params.block() as usize / 16).max(1);
    let tok_per_block = new.params.block() as usize;
    (0..new.rows * new.cols)
        .map(|i| {
            let d = (0..3)
                .map(|p| (new.planes[p][i] - old.planes[p][i]).abs())
                .max()
                .unwrap_or(0);
            if d >= 2 {
                return true;
            }
            if d == 0 {
                return false;
            }
            // Token rows/cols the block covers.
            let (br, bc) = (i / new.cols, i % new.cols);
            let (r0, c0) = (br * tok_per_block / 16, bc * tok_per_block / 16);
            let rows_t = changed.len() / cols;
            (r0..(r0 + per).min(rows_t))
                .any(|r| (c0..(c0 + per).min(cols)).any(|c| changed[r * cols + c]))
        })
        .collect()
}

/// Pixel range of token block (r, c) in an image.
fn block_range(img: &RgbImage, r: usize, c: usize) -> (usize, usize, usize, usize) {
    let (w, h) = (img.width as usize, img.height as usize);
    let (y0, x0) = (r * 16, c * 16);
    (y0.min(h), (y0 + 16).min(h), x0.min(w), (x0 + 16).min(w))
}

/// Mean absolute difference of token block (r, c) between two images of one size.
fn block_mad(a: &RgbImage, b: &RgbImage, r: usize, c: usize) -> f32 {
    let (y0, y1, x0, x1) = block_range(a, r, c);
    let w = a.width as usize;
    let mut sum = 0u32;
    for y in y0..y1 {
        let s = (y * w + x0) * 3;
        let e = (y * w + x1) * 3;
        for (p, q) in a.data[s..e].iter().zip(&b.data[s..e]) {
            sum += p.abs_diff(*q) as u32;
        }
    }
    let n = ((y1 - y0) * (x1 - x0) * 3).max(1);
    sum as f32 / n as f32
}

fn copy_block(dst: &mut RgbImage, src: &RgbImage, r: usize, c: usize) {
    let (y0, y1, x0, x1) = block_range(src, r, c);
    let w = src.width as usize;
    for y in y0..y1 {
        let (s, e) = ((y * w + x0) * 3, (y * w + x1) * 3);
        dst.data[s..e].copy_from_slice(&src.data[s..e]);
    }
}

fn fill_block(dst: &mut RgbImage, r: usize, c: usize, value: u8) {
    let (y0, y1, x0, x1) = block_range(dst, r, c);
    let w = dst.width as usize;
    for y in y0..y1 {
        dst.data[(y * w + x0) * 3..(y * w + x1) * 3].fill(value);
    }
}

/// What the receiver could make of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// The picture of the sender's tokens, proven by the check values.
    Exact,
    /// Recovering after a loss: the rows refreshed so far are exact, the rest are the last ones
    /// the receiver had.
    Recovering { exact_rows: usize, rows: usize },
    /// The packet could not be applied (its reference is missing): the last picture again.
    Concealed,
}

/// One output of the receiver.
#[derive(Debug, Clone)]
pub struct StreamFrame {
    pub image: RgbImage,
    pub status: FrameStatus,
    pub kind: FrameKind,
    pub frame: u32,
    pub timings: Timings,
    /// How the picture was made (a full decode, tiles over the last picture, or that picture).
    pub rendered: Rendered,
}

/// Counters of a stream receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Frames shown exactly as the sender coded them.
    pub exact: u64,
    /// Frames shown while recovering or concealed (not exact).
    pub concealed: u64,
    /// Packets refused (corrupt, foreign, unusable).
    pub dropped: u64,
    /// Refresh cycles that made the receiver exact again after a loss.
    pub recoveries: u64,
}

/// The receiver's side of a stream.
#[derive(Default)]
pub struct StreamDecoder {
    reference: Option<Reference>,
    /// The reference equals the sender's (every row exact).
    synced: bool,
    /// While recovering: rows `0..exact_rows` of the reference are exact.
    exact_rows: usize,
    /// A refresh cycle is being followed (rows `0..exact_rows` exact as of the last packet).
    recovering: bool,
    last_image: Option<RgbImage>,
    /// `last_image` is older than the reference (packets applied with [`Self::advance`]).
    stale: bool,
    /// The next picture is a full decode (a keyframe was applied without its picture).
    full_next: bool,
    /// Set while [`Self::advance`] runs: state only, no picture.
    skip_render: bool,
    stats: StreamStats,
    /// The decoder network's side: renders only what changed (docs/video.md).
    renderer: Renderer,
}

impl StreamDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A receiver that renders pictures as `policy` says (the default renders tiles when the
    /// model bundle has a tile graph).
    pub fn with_render(policy: RenderPolicy) -> Self {
        Self {
            renderer: Renderer::new(policy),
            ..Self::default()
        }
    }

    /// Counters of the renderer (full decodes, tiled frames, reused pictures).
    pub fn render_stats(&self) -> RenderStats {
        self.renderer.stats()
    }

    /// The renderer's tile plan for the last picture it rendered.
    pub fn render_plan(&self) -> Option<super::render::Plan> {
        self.renderer.last_plan()
    }

    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// The receiver's current state.
    pub fn reference(&self) -> Option<&Reference> {
        self.reference.as_ref()
    }

    /// Whether the receiver's grid equals the sender's.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Decodes one packet. `Err` means the packet was refused (counted as dropped); when the
    /// packet was an inter packet that could not be applied, `Ok` with
    /// [`FrameStatus::Concealed`] repeats the last picture.
    pub fn decode(&mut self, model: &mut Model, data: &[u8]) -> Result<StreamFrame> {
        let r = self.decode_inner(model, data);
        match &r {
            Ok(f) if f.status == FrameStatus::Exact => self.stats.exact += 1,
            Ok(_) => self.stats.concealed += 1,
            Err(_) => self.stats.dropped += 1,
        }
        r
    }

    /// Applies a packet to the stream's state without making its picture: a receiver that is
    /// behind skips the pictures of frames that a later packet replaces (the decoder network is
    /// the expensive part), and stays exact. The next [`Self::decode`] renders the picture of
    /// the state it reaches. Counted like [`Self::decode`].
    pub fn advance(&mut self, model: &mut Model, data: &[u8]) -> Result<FrameStatus> {
        self.skip_render = true;
        let r = self.decode(model, data);
        self.skip_render = false;
        r.map(|f| f.status)
    }

    /// The receiver's state as bytes, for another process to go on with the stream
    /// ([`Self::from_state`]): the reference (frame counter, size, token grid, colour thumbnail,
    /// last change mask), the sync/recovery position and the counters. The last picture and the
    /// renderer's tiles are not part of it: the restored receiver renders its next picture in
    /// full, and a packet it cannot apply before that is an error instead of the repeated
    /// picture. Its tokens, and so every later picture's tokens, are those this receiver would
    /// have reached.
    pub fn state(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(STATE_MAGIC);
        let flags = u8::from(self.synced) | u8::from(self.recovering) << 1;
        out.push(flags);
        out.extend_from_slice(&(self.exact_rows as u32).to_le_bytes());
        for v in [
            self.stats.exact,
            self.stats.concealed,
            self.stats.dropped,
            self.stats.recoveries,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        let Some(r) = &self.reference else {
            out.push(0);
            return out;
        };
        out.push(1);
        for v in [
            r.frame,
            r.width,
            r.height,
            r.grid.rows as u32,
            r.grid.cols as u32,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for t in &r.grid.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out.extend(r.changed.iter().map(|&c| u8::from(c)));
        match &r.colour {
            None => out.push(0),
            Some(c) => {
                out.push(1);
                out.push(c.params.to_byte());
                for plane in &c.planes {
                    for v in plane {
                        out.extend_from_slice(&v.to_le_bytes());
                    }
                }
            }
        }
        out
    }

    /// A receiver restored from [`Self::state`] (rendering with the default policy). Tokens
    /// must be below `codebook_size` (the model's); anything malformed is an
    /// [`Error::InvalidArgument`], never a panic.
    pub fn from_state(data: &[u8], codebook_size: usize) -> Result<Self> {
        let bad = |what: &str| Error::InvalidArgument(format!("decoder state: {what}"));
        let mut r = StateReader { data, pos: 0 };
        if r.take(STATE_MAGIC.len()).ok_or_else(|| bad("truncated"))? != STATE_MAGIC {
            return Err(bad("not a uigc decoder state"));
        }
        let flags = r.u8().ok_or_else(|| bad("truncated"))?;
        if flags > 3 {
            return Err(bad("unknown flags"));
        }
        let exact_rows = r.u32().ok_or_else(|| bad("truncated"))? as usize;
        let mut st = [0u64; 4];
        for v in &mut st {
            *v = r.u64().ok_or_else(|| bad("truncated"))?;
        }
        let mut dec = Self {
            synced: flags & 1 != 0,
            recovering: flags & 2 != 0,
            exact_rows,
            stats: StreamStats {
                exact: st[0],
                concealed: st[1],
                dropped: st[2],
                recoveries: st[3],
            },
            full_next: true,
            ..Self::default()
        };
        match r.u8().ok_or_else(|| bad("truncated"))? {
            0 => {}
            1 => {
                let mut h = [0u32; 5];
                for v in &mut h {
                    *v = r.u32().ok_or_else(|| bad("truncated"))?;
                }
                let [frame, width, height, rows, cols] = h;
                let n = (rows as usize)
                    .checked_mul(cols as usize)
                    .filter(|&n| n > 0 && n <= MAX_STATE_TOKENS)
                    .ok_or_else(|| bad("token grid size"))?;
                if width == 0 || height == 0 || exact_rows > rows as usize {
                    return Err(bad("frame size"));
                }
                let mut tokens = Vec::with_capacity(n);
                for _ in 0..n {
                    let t = r.u16().ok_or_else(|| bad("truncated"))?;
                    if t as usize >= codebook_size {
                        return Err(bad("token outside the codebook"));
                    }
                    tokens.push(t);
                }
                let changed = r.take(n).ok_or_else(|| bad("truncated"))?;
                if changed.iter().any(|&c| c > 1) {
                    return Err(bad("change mask"));
                }
                let changed = changed.iter().map(|&c| c == 1).collect();
                let colour = match r.u8().ok_or_else(|| bad("truncated"))? {
                    0 => None,
                    1 => {
                        let b = r.u8().ok_or_else(|| bad("truncated"))?;
                        let params = ColourParams::from_byte(b).map_err(|e| bad(&e.to_string()))?;
                        let (crows, ccols) = params.grid(width, height);
                        let planes: [Vec<i32>; 3] = {
                            let mut planes: [Vec<i32>; 3] = Default::default();
                            for (p, plane) in planes.iter_mut().enumerate() {
                                let (lo, hi) = params.range(p);
                                for _ in 0..crows * ccols {
                                    let v = r.u32().ok_or_else(|| bad("truncated"))? as i32;
                                    if !(lo..=hi).contains(&v) {
                                        return Err(bad("colour value out of range"));
                                    }
                                    plane.push(v);
                                }
                            }
                            planes
                        };
                        Some(ColourThumb {
                            params,
                            rows: crows,
                            cols: ccols,
                            planes,
                        })
                    }
                    _ => return Err(bad("colour flag")),
                };
                dec.reference = Some(Reference {
                    frame,
                    width,
                    height,
                    grid: TokenGrid::new(rows as usize, cols as usize, tokens),
                    colour,
                    changed,
                });
            }
            _ => return Err(bad("reference flag")),
        }
        if r.pos != data.len() {
            return Err(bad("trailing bytes"));
        }
        Ok(dec)
    }

    fn decode_inner(&mut self, model: &mut Model, data: &[u8]) -> Result<StreamFrame> {
        let header = super::bitstream::parse_packet(data)?.header;
        let Some(inter) = header.inter else {
            let f = if self.skip_render {
                let t0 = Instant::now();
                let tokens = model.token_codec().decode(data)?;
                let coding = t0.elapsed();
                super::DecodedFrame {
                    image: no_picture(),
                    tokens,
                    timings: Timings {
                        coding,
                        ..Default::default()
                    },
                }
            } else {
                model.decode_rendered(data, &mut self.renderer)?
            };
            let h = &f.tokens.header;
            // The stream goes on from the grid the sender assumes: tokens that were not sent
            // regenerated with argmax, whatever mode the picture was regenerated with.
            let grid = if f.tokens.coded.iter().all(|&c| c) || f.tokens.regen == RegenMode::Argmax {
                f.tokens.grid.clone()
            } else {
                let codec = model.token_codec();
                let regen = codec.regen();
                codec.set_regen(RegenMode::Argmax);
                let argmax = codec.decode(data);
                codec.set_regen(regen);
                argmax?.grid
            };
            self.reference = Some(Reference::intra(
                h.frame,
                h.width,
                h.height,
                grid,
                f.tokens.colour.clone(),
            ));
            if !self.synced && self.last_image.is_some() {
                self.stats.recoveries += 1;
            }
            self.synced = true;
            self.recovering = false;
            if self.skip_render {
                self.stale = true;
                self.full_next = true;
            } else {
                self.last_image = Some(f.image.clone());
                self.stale = false;
                self.full_next = false;
            }
            return Ok(StreamFrame {
                image: f.image,
                status: FrameStatus::Exact,
                kind: FrameKind::Intra,
                frame: h.frame,
                timings: f.timings,
                rendered: Rendered::Full,
            });
        };
        // Model id, max-pixels and the work limit before anything else: a packet that fails
        // them must not replace the receiver's state with a blank grid of its size.
        model.token_codec().check_limits(&header, data.len())?;
        let start = inter.band_start == 0 && inter.clean_rows > 0;
        let fits = self
            .reference
            .as_ref()
            .is_some_and(|r| (r.width, r.height) == (header.width, header.height));
        if start && !fits {
            // Joining a stream (or a new frame size): a refresh cycle starts from nothing.
            self.reference = Some(blank_reference(&header));
            self.synced = false;
        }
        let Some(reference) = self.reference.as_ref() else {
            return Err(PacketError::NoReference {
                frame: header.frame,
                reference: inter.reference,
            }
            .into());
        };
        let follows = inter.reference == reference.frame;
        let t0 = Instant::now();
        let decoded = if self.synced && follows {
            model.token_codec().decode_inter(data, reference, false)?
        } else {
            self.synced = false;
            let continues = self.recovering
                && follows
                && inter.band_start as usize <= self.exact_rows
                && inter.clean_rows as usize >= self.exact_rows;
            if !(start || continues) {
                self.recovering = false;
                return self.conceal(header.frame);
            }
            let d = model.token_codec().decode_inter(data, reference, true)?;
            self.recovering = true;
            d
        };
        let coding = t0.elapsed();
        let rows = decoded.reference.grid.rows;
        self.exact_rows = decoded.exact_rows;
        if !self.synced && decoded.exact_rows >= rows {
            self.synced = true;
            self.recovering = false;
            self.stats.recoveries += 1;
        }
        let r = decoded.reference;
        let t1 = Instant::now();
        // Nothing changed: the picture is the last one (no decoder network pass).
        let same = self
            .reference
            .as_ref()
            .is_some_and(|old| old.grid == r.grid && old.colour == r.colour);
        let (image, rendered) = match (&self.last_image, same && !self.stale) {
            _ if self.skip_render => {
                self.stale |= !same;
                (no_picture(), Rendered::Reused)
            }
            (Some(img), true) => (img.clone(), Rendered::Reused),
            _ => {
                let (mut image, rendered) = model.render(
                    &mut self.renderer,
                    &r.grid,
                    r.width,
                    r.height,
                    self.full_next,
                )?;
                if let Some(c) = &r.colour {
                    c.apply(&mut image);
                }
                (image, rendered)
            }
        };
        let network = t1.elapsed();
        self.reference = Some(r);
        if !self.skip_render {
            self.last_image = Some(image.clone());
            self.stale = false;
            self.full_next = false;
        }
        Ok(StreamFrame {
            image,
            status: if self.synced {
                FrameStatus::Exact
            } else {
                FrameStatus::Recovering {
                    exact_rows: self.exact_rows,
                    rows,
                }
            },
            kind: FrameKind::Inter,
            frame: header.frame,
            timings: Timings { network, coding },
            rendered,
        })
    }

    fn conceal(&mut self, frame: u32) -> Result<StreamFrame> {
        match &self.last_image {
            Some(img) => Ok(StreamFrame {
                image: img.clone(),
                status: FrameStatus::Concealed,
                kind: FrameKind::Inter,
                frame,
                timings: Timings::default(),
                rendered: Rendered::Reused,
            }),
            None => Err(PacketError::NoReference {
                frame,
                reference: frame,
            }
            .into()),
        }
    }
}

/// First bytes of a [`StreamDecoder::state`] (the format's version is the last byte).
const STATE_MAGIC: &[u8; 8] = b"UIGCDST1";
/// Largest token grid a decoder state may hold (far above any frame a model accepts).
const MAX_STATE_TOKENS: usize = 1 << 22;

struct StateReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> StateReader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let b = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(b)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
}

/// The picture of a packet applied with [`StreamDecoder::advance`] (never shown).
fn no_picture() -> RgbImage {
    RgbImage {
        width: 0,
        height: 0,
        data: Vec::new(),
    }
}

/// A receiver's state before the first refresh cycle of a stream it joined: every token 0.
fn blank_reference(header: &super::Header) -> Reference {
    let (rows, cols) = header.grid();
    let colour = header.colour.map(|params| {
        let (r, c) = params.grid(header.width, header.height);
        ColourThumb {
            params,
            rows: r,
            cols: c,
            planes: std::array::from_fn(|_| vec![0; r * c]),
        }
    });
    Reference::intra(
        header.inter.map_or(header.frame, |i| i.reference),
        header.width,
        header.height,
        TokenGrid::zeros(rows, cols),
        colour,
    )
}
