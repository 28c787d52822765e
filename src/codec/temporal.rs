//! Inter packets (packet flag bit 3, docs/bitstream.md "Inter packets"): a frame coded against
//! the receiver's token grid of an earlier frame, its [`Reference`].
//!
//! An inter packet sends which tokens changed and their new values; every other token is the
//! reference's. Everything is exact integer arithmetic, like intra packets:
//!
//! * **Change mask**: one bit per position, raster order, an adaptive binary model (integer
//!   Krichevsky-Trofimov counts) per context; the context is whether the position changed in the
//!   previous packet, whether any of its 3x3 neighbours did, and whether its left and upper
//!   neighbours changed in this one.
//! * **Changed tokens**, stage by stage of the schedule: the integer prior's table at the
//!   position given every known token (earlier stages, and the unchanged tokens of the same stage
//!   as same-stage context), with the reference token removed (a changed token differs from it).
//! * **Gradual refresh**: the token rows `band_start..clean_rows` are sent whole (intra, no mask)
//!   and the rows `0..clean_rows` (the *clean area*) are coded first, with context from that area
//!   only. A receiver that lost a packet decodes the clean area of each packet from the start of a
//!   refresh cycle (`band_start == 0`) on and is exact again when the cycle reaches the last row.
//!   The rest of the packet (rows `clean_rows..`) is coded with context from the whole grid.
//! * **Colour thumbnail** (when the stream has one): per block a change bit and, for changed
//!   blocks, the three values as residuals from the reference's; blocks of the refresh band are
//!   sent whole. Band boundaries are multiples of the thumbnail's block rows.
//! * **Check values**: the header's check value is a CRC of the header and the clean area's
//!   grid and thumbnail after the packet, a second one of the whole grid and thumbnail: equal
//!   check values prove the receiver's state equals the sender's.

use super::bitstream::{
    parse_packet, write_header_prefix, write_packet, Header, InterHeader, FLAG_COLOUR, FLAG_INTER,
    VERSION,
};
use super::colour::{ColourThumb, ThumbModel};
use super::entropy::{kt_table, quantize_weights, TokenDecoder, TokenEncoder};
use super::error::{Error, PacketError, Result};
use super::prior::TokenGrid;
use super::tokens::{EncodedPacket, TokenCodec};

/// What sender and receiver hold between the packets of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Frame counter of the packet that made this state.
    pub frame: u32,
    pub width: u32,
    pub height: u32,
    pub grid: TokenGrid,
    pub colour: Option<ColourThumb>,
    /// Positions the last inter packet changed (context of the next change mask).
    pub changed: Vec<bool>,
}

impl Reference {
    /// The state after an intra packet.
    pub fn intra(
        frame: u32,
        width: u32,
        height: u32,
        grid: TokenGrid,
        colour: Option<ColourThumb>,
    ) -> Self {
        let n = grid.tokens.len();
        Self {
            frame,
            width,
            height,
            grid,
            colour,
            changed: vec![false; n],
        }
    }
}

/// The sender's decisions for one inter frame.
#[derive(Debug, Clone, Copy)]
pub struct InterFrame<'a> {
    /// The new tokens (read at changed positions and in the refresh band).
    pub tokens: &'a TokenGrid,
    /// Positions to re-send (outside the band; positions whose token equals the reference's are
    /// never sent).
    pub changed: &'a [bool],
    /// Refresh band, token rows `band.0..band.1`; `band.1` is the end of the clean area.
    pub band: (usize, usize),
    /// The new thumbnail (read at changed blocks and in the band), when the stream has one.
    pub colour: Option<&'a ColourThumb>,
    /// Thumbnail blocks to re-send (outside the band).
    pub colour_changed: &'a [bool],
}

/// Token rows per thumbnail block row (band boundaries are multiples of it).
pub fn band_alignment(colour: Option<&ColourThumb>) -> usize {
    colour.map_or(1, |c| (c.params.block() as usize / 16).max(1))
}

/// Thumbnail block row where token row `t` starts (`t` aligned, or the last row).
fn colour_row(c: &ColourThumb, t: usize, rows: usize) -> usize {
    if t >= rows {
        c.rows
    } else {
        (t * 16 / c.params.block() as usize).min(c.rows)
    }
}

/// An adaptive binary model per context: integer KT counts, halved at 1024 (exact).
struct Bits<const N: usize> {
    n: [[u32; 2]; N],
}

impl<const N: usize> Bits<N> {
    fn new() -> Self {
        Self { n: [[0; 2]; N] }
    }

    fn table(&self, ctx: usize) -> [u32; 2] {
        kt_table(self.n[ctx][0], self.n[ctx][1])
    }

    fn update(&mut self, ctx: usize, bit: usize) {
        let n = &mut self.n[ctx];
        n[bit] += 1;
        if n[0] + n[1] >= 1024 {
            *n = [n[0].div_ceil(2), n[1].div_ceil(2)];
        }
    }
}

/// The coding direction: one code path for both, so encoder and decoder cannot drift apart.
enum Io<'a> {
    Enc(&'a mut TokenEncoder),
    Dec(&'a mut TokenDecoder),
}

impl Io<'_> {
    fn symbol(
        &mut self,
        truth: impl FnOnce() -> usize,
        table: &[u32],
    ) -> std::result::Result<usize, PacketError> {
        match self {
            Io::Enc(e) => {
                let s = truth();
                e.encode(s, table)?;
                Ok(s)
            }
            Io::Dec(d) => d.decode(table),
        }
    }

    fn residual(
        &mut self,
        model: &mut ThumbModel,
        truth: impl FnOnce() -> i32,
        ctx: usize,
    ) -> std::result::Result<i32, PacketError> {
        match self {
            Io::Enc(e) => {
                let r = truth();
                model.encode(e, r, ctx)?;
                Ok(r)
            }
            Io::Dec(d) => model.decode(d, ctx),
        }
    }
}

/// The state being built while a packet is coded.
struct Work<'a> {
    rows: usize,
    cols: usize,
    k: usize,
    grid: TokenGrid,
    prev_changed: &'a [bool],
    changed: Vec<bool>,
    colour: Option<ColourThumb>,
    colour_changed: Vec<bool>,
    mask: Bits<16>,
    colour_mask: Bits<4>,
    thumb: ThumbModel,
    target: Option<InterFrame<'a>>,
}

impl Work<'_> {
    /// Context of the change bit at `p`; the previous mask is read in rows `< limit` only (the
    /// rows whose previous mask a recovering receiver holds exactly).
    fn mask_context(&self, p: usize, limit: usize) -> usize {
        let (r, c) = (p / self.cols, p % self.cols);
        let mut near = false;
        for rr in r.saturating_sub(1)..(r + 2).min(limit) {
            for cc in c.saturating_sub(1)..(c + 2).min(self.cols) {
                near |= self.prev_changed[rr * self.cols + cc];
            }
        }
        let left = c > 0 && self.changed[p - 1];
        let up = r > 0 && self.changed[p - self.cols];
        (self.prev_changed[p] as usize) << 3
            | (near as usize) << 2
            | (left as usize) << 1
            | up as usize
    }

    /// Codes the token rows `area` (the band `band` inside it sent whole), with the prior given
    /// the first `ctx_rows` rows of the grid as context.
    fn code_part(
        &mut self,
        codec: &mut TokenCodec,
        io: &mut Io,
        area: (usize, usize),
        band: (usize, usize),
        ctx_rows: usize,
    ) -> Result<()> {
        let cols = self.cols;
        let in_band = |r: usize| r >= band.0 && r < band.1;
        // 1. Change mask of the rows outside the band (the band ends the clean area).
        let limit = if band.0 < band.1 { band.0 } else { area.1 };
        for r in (area.0..area.1).filter(|&r| !in_band(r)) {
            for c in 0..cols {
                let p = r * cols + c;
                let ctx = self.mask_context(p, limit);
                let target = self.target;
                let bit = io.symbol(
                    || target.map_or(0, |t| t.changed[p] as usize),
                    &self.mask.table(ctx),
                )?;
                self.mask.update(ctx, bit);
                self.changed[p] = bit == 1;
            }
        }
        // 2. The sent tokens, stage by stage.
        if ctx_rows > 0 {
            let plan = codec.schedule().plan(ctx_rows, cols);
            let mut work = 0u64;
            let prior = codec.prior_mut();
            prior.reset();
            let mut weights = Vec::with_capacity(self.k);
            let mut excluded = Vec::with_capacity(self.k);
            for s in 0..plan.num_stages() {
                let (mut queries, mut fixed) = (Vec::new(), Vec::new());
                for &p in &plan.stages[s] {
                    let r = p as usize / cols;
                    let sent =
                        r >= area.0 && r < area.1 && (in_band(r) || self.changed[p as usize]);
                    if sent {
                        queries.push(p);
                    } else {
                        fixed.push(p);
                    }
                }
                if queries.is_empty() {
                    continue;
                }
                let context =
                    TokenGrid::new(ctx_rows, cols, self.grid.tokens[..ctx_rows * cols].to_vec());
                work += queries.len() as u64;
                let tables = prior.partial_tables(&context, &plan, s, &fixed, &queries)?;
                for (i, &p) in queries.iter().enumerate() {
                    let p = p as usize;
                    let table = tables.get(i);
                    let truth = || self.target.map_or(0, |t| t.tokens.tokens[p] as usize);
                    let token = if in_band(p / cols) {
                        io.symbol(truth, table)?
                    } else {
                        // A changed token differs from the reference's: remove it.
                        let old = self.grid.tokens[p] as usize;
                        weights.clear();
                        weights.extend_from_slice(table);
                        weights[old] = 0;
                        quantize_weights(&weights, &mut excluded);
                        let t = io.symbol(truth, &excluded)?;
                        if t == old {
                            return Err(PacketError::BadInter(format!(
                                "token {p} marked changed keeps its reference value"
                            ))
                            .into());
                        }
                        t
                    };
                    self.grid.tokens[p] = token as u16;
                }
            }
            codec.prior_work += work;
        }
        // 3. The thumbnail blocks of the area.
        if let Some(mut thumb) = self.colour.take() {
            let res = self.code_colour(&mut thumb, io, area, band);
            self.colour = Some(thumb);
            res?;
        }
        Ok(())
    }

    fn code_colour(
        &mut self,
        thumb: &mut ColourThumb,
        io: &mut Io,
        area: (usize, usize),
        band: (usize, usize),
    ) -> Result<()> {
        let rows = self.rows;
        let (r0, r1) = (
            colour_row(thumb, area.0, rows),
            colour_row(thumb, area.1, rows),
        );
        let (b0, b1) = (
            colour_row(thumb, band.0, rows),
            colour_row(thumb, band.1, rows),
        );
        let tc = thumb.cols;
        let target = self.target;
        let new = target.and_then(|t| t.colour);
        for br in r0..r1 {
            let whole = br >= b0 && br < b1;
            for bc in 0..tc {
                let i = br * tc + bc;
                let send = whole || {
                    let left = bc > 0 && self.colour_changed[i - 1];
                    let up = br > 0 && self.colour_changed[i - tc];
                    let ctx = (left as usize) << 1 | up as usize;
                    let bit = io.symbol(
                        || target.map_or(0, |t| t.colour_changed[i] as usize),
                        &self.colour_mask.table(ctx),
                    )?;
                    self.colour_mask.update(ctx, bit);
                    bit == 1
                };
                self.colour_changed[i] = send && !whole;
                if !send {
                    continue;
                }
                for p in 0..3 {
                    let (lo, hi) = thumb.params.range(p);
                    // Band blocks from the middle of the range (no reference needed), changed
                    // blocks from the reference value.
                    let pred = match (whole, p) {
                        (true, 0) => (lo + hi) / 2,
                        (true, _) => 0,
                        (false, _) => thumb.planes[p][i],
                    };
                    let ctx = 4 * (p > 0) as usize + whole as usize;
                    let r = io.residual(
                        &mut self.thumb,
                        || new.map_or(0, |n| n.planes[p][i]) - pred,
                        ctx,
                    )?;
                    let v = pred + r;
                    if v < lo || v > hi {
                        return Err(PacketError::BadColour(format!(
                            "value {v} outside {lo}..={hi} (plane {p}, block {i})"
                        ))
                        .into());
                    }
                    thumb.planes[p][i] = v;
                }
            }
        }
        Ok(())
    }

    /// CRC of the header bytes, the tokens of rows `0..rows_n` and the thumbnail values of the
    /// block rows they cover (low 16 bits).
    fn check(&self, header_prefix: &[u8], rows_n: usize) -> u16 {
        let mut h = crc32fast::Hasher::new();
        h.update(header_prefix);
        for t in &self.grid.tokens[..rows_n * self.cols] {
            h.update(&t.to_le_bytes());
        }
        if let Some(c) = &self.colour {
            let n = colour_row(c, rows_n, self.rows) * c.cols;
            for plane in &c.planes {
                for v in &plane[..n] {
                    h.update(&v.to_le_bytes());
                }
            }
        }
        (h.finalize() & 0xffff) as u16
    }
}

/// Whether the packet's band fields fit a grid of `rows` token rows and the thumbnail.
fn check_band(
    band: (usize, usize),
    rows: usize,
    colour: Option<&ColourThumb>,
) -> std::result::Result<(), PacketError> {
    let a = band_alignment(colour);
    let aligned = |t: usize| t.is_multiple_of(a) || t == rows;
    if band.0 > band.1 || band.1 > rows || !aligned(band.0) || !aligned(band.1) {
        return Err(PacketError::BadInter(format!(
            "refresh band rows {}..{} do not fit a grid of {rows} rows (alignment {a})",
            band.0, band.1
        )));
    }
    Ok(())
}

/// An inter packet as decoded.
#[derive(Debug, Clone)]
pub struct InterDecoded {
    pub header: Header,
    /// The receiver's new state (rows from `exact_rows` on are the old ones when only the clean
    /// area was decoded).
    pub reference: Reference,
    /// Token rows `0..exact_rows` are proven equal to the sender's.
    pub exact_rows: usize,
    /// Tokens the packet changed (refresh band included).
    pub changed_tokens: usize,
}

impl TokenCodec {
    /// Codes `frame` against `reference` into an inter packet; returns it with the state both
    /// ends hold after it.
    pub fn encode_inter(
        &mut self,
        reference: &Reference,
        frame: &InterFrame,
        stream_id: u32,
        frame_counter: u32,
    ) -> Result<(EncodedPacket, Reference)> {
        let (rows, cols) = (reference.grid.rows, reference.grid.cols);
        let n = rows * cols;
        if (frame.tokens.rows, frame.tokens.cols) != (rows, cols) || frame.changed.len() != n {
            return Err(Error::InvalidArgument(
                "inter frame does not match its reference grid".into(),
            ));
        }
        let k = self.codebook_size();
        if frame.tokens.tokens.iter().any(|&t| t as usize >= k) {
            return Err(Error::InvalidArgument("token outside the codebook".into()));
        }
        match (&reference.colour, frame.colour) {
            (None, None) => {}
            (Some(r), Some(c))
                if r.params == c.params
                    && (r.rows, r.cols) == (c.rows, c.cols)
                    && frame.colour_changed.len() == c.rows * c.cols => {}
            _ => {
                return Err(Error::InvalidArgument(
                    "inter frame colour thumbnail does not match its reference".into(),
                ))
            }
        }
        check_band(frame.band, rows, reference.colour.as_ref())?;
        // Only real changes are sent.
        let changed: Vec<bool> = (0..n)
            .map(|p| frame.changed[p] && frame.tokens.tokens[p] != reference.grid.tokens[p])
            .collect();
        let colour_changed: Vec<bool> = match (&reference.colour, frame.colour) {
            (Some(r), Some(c)) => (0..c.rows * c.cols)
                .map(|i| {
                    frame.colour_changed[i] && (0..3).any(|p| c.planes[p][i] != r.planes[p][i])
                })
                .collect(),
            _ => Vec::new(),
        };
        let target = InterFrame {
            changed: &changed,
            colour_changed: &colour_changed,
            ..*frame
        };
        let mut header = inter_header(self, reference, stream_id, frame_counter, frame.band);
        let mut enc = TokenEncoder::new();
        let work = self.code_inter(
            &mut Io::Enc(&mut enc),
            reference,
            Some(target),
            &header,
            true,
        )?;
        let ideal_bits = enc.ideal_bits();
        let mut payload = enc.finish();
        let payload_bits = payload.len() * 8;
        let prefix = write_header_prefix(&header);
        header.check = work.check(&prefix, frame.band.1);
        if let Some(i) = header.inter.as_mut() {
            i.check_full = work.check(&prefix, rows);
        }
        // Zero bytes decode as nothing: the packet is padded to what a receiver with this
        // codec's work limit accepts.
        let mut bytes = write_packet(&header, &payload);
        let padding = self.min_packet_bytes(n).saturating_sub(bytes.len());
        if padding > 0 {
            payload.resize(payload.len() + padding, 0);
            bytes = write_packet(&header, &payload);
        }
        let sent =
            work.changed.iter().filter(|&&c| c).count() + (frame.band.1 - frame.band.0) * cols;
        let state = Reference {
            frame: frame_counter,
            width: reference.width,
            height: reference.height,
            grid: work.grid,
            colour: work.colour,
            changed: work.changed,
        };
        Ok((
            EncodedPacket {
                bytes,
                header,
                ideal_bits,
                payload_bits,
                coded_tokens: sent,
                extra_tokens: 0,
                stage_bits: Vec::new(),
                colour_bits: 0.0,
                padding,
            },
            state,
        ))
    }

    /// Decodes an inter packet against `reference` (whose frame counter the packet must name,
    /// unless `clean_only`). With `clean_only` (a receiver recovering after a loss) only the
    /// clean area is decoded: it needs the reference's rows `0..band_start` exact, which the
    /// caller guarantees.
    pub fn decode_inter(
        &mut self,
        data: &[u8],
        reference: &Reference,
        clean_only: bool,
    ) -> Result<InterDecoded> {
        let packet = parse_packet(data)?;
        let header = packet.header.clone();
        let Some(inter) = header.inter else {
            return Err(PacketError::BadInter("not an inter packet".into()).into());
        };
        // Model id, max-pixels and the work limit, before any work.
        self.check_limits(&header, data.len())?;
        if !clean_only && inter.reference != reference.frame {
            return Err(PacketError::NoReference {
                frame: header.frame,
                reference: inter.reference,
            }
            .into());
        }
        if (header.width, header.height) != (reference.width, reference.height)
            || header.dense()
            || header.flags & super::bitstream::FLAG_ADAPTIVE != 0
            || header.colour != reference.colour.as_ref().map(|c| c.params)
            || header.stages as usize != self.schedule().num_stages()
        {
            return Err(PacketError::BadInter(format!(
                "a {}x{} inter packet does not fit the {}x{} stream it refers to",
                header.width, header.height, reference.width, reference.height
            ))
            .into());
        }
        let rows = reference.grid.rows;
        let band = (inter.band_start as usize, inter.clean_rows as usize);
        check_band(band, rows, reference.colour.as_ref())?;
        // Every symbol costs at most 24 bits: mask bits, tokens, thumbnail values.
        let n = rows * reference.grid.cols;
        let colour_values = reference.colour.as_ref().map_or(0, |c| {
            c.rows * c.cols * (1 + 3 * ColourThumb::MAX_SYMBOLS_PER_VALUE)
        });
        let max_payload = ((2 * n + colour_values) * 3 + 4).max(n);
        if packet.payload.len() > max_payload {
            return Err(PacketError::PayloadTooLarge {
                len: packet.payload.len(),
                max: max_payload,
            }
            .into());
        }
        let mut dec = TokenDecoder::new(packet.payload)?;
        let work = self.code_inter(
            &mut Io::Dec(&mut dec),
            reference,
            None,
            &header,
            !clean_only,
        )?;
        let exact_rows = if clean_only { band.1 } else { rows };
        let (expected, actual) = if clean_only {
            (header.check, work.check(packet.header_bytes, band.1))
        } else {
            let full = work.check(packet.header_bytes, rows);
            let clean = work.check(packet.header_bytes, band.1);
            if clean != header.check {
                (header.check, clean)
            } else {
                (inter.check_full, full)
            }
        };
        if expected != actual {
            return Err(PacketError::CheckMismatch { expected, actual }.into());
        }
        let changed_tokens =
            work.changed.iter().filter(|&&c| c).count() + (band.1 - band.0) * reference.grid.cols;
        Ok(InterDecoded {
            header,
            reference: Reference {
                frame: packet.header.frame,
                width: reference.width,
                height: reference.height,
                grid: work.grid,
                colour: work.colour,
                changed: work.changed,
            },
            exact_rows,
            changed_tokens,
        })
    }

    /// The one code path of inter packets (both directions).
    fn code_inter<'a>(
        &mut self,
        io: &mut Io,
        reference: &'a Reference,
        target: Option<InterFrame<'a>>,
        header: &Header,
        whole: bool,
    ) -> Result<Work<'a>> {
        let inter = header.inter.expect("inter header");
        let (rows, cols) = (reference.grid.rows, reference.grid.cols);
        let band = (inter.band_start as usize, inter.clean_rows as usize);
        let mut work = Work {
            rows,
            cols,
            k: self.codebook_size(),
            grid: reference.grid.clone(),
            prev_changed: &reference.changed,
            changed: vec![false; rows * cols],
            colour: reference.colour.clone(),
            colour_changed: vec![false; reference.colour.as_ref().map_or(0, |c| c.rows * c.cols)],
            mask: Bits::new(),
            colour_mask: Bits::new(),
            thumb: ThumbModel::new(),
            target,
        };
        work.code_part(self, io, (0, band.1), band, band.1)?;
        if whole {
            work.code_part(self, io, (band.1, rows), (rows, rows), rows)?;
        }
        Ok(work)
    }
}

fn inter_header(
    codec: &TokenCodec,
    reference: &Reference,
    stream_id: u32,
    frame: u32,
    band: (usize, usize),
) -> Header {
    Header {
        version: VERSION,
        flags: FLAG_INTER
            | if reference.colour.is_some() {
                FLAG_COLOUR
            } else {
                0
            },
        model_id: codec.model_id(),
        stream_id,
        frame,
        width: reference.width,
        height: reference.height,
        stages: codec.schedule().num_stages() as u8,
        colour: reference.colour.as_ref().map(|c| c.params),
        inter: Some(InterHeader {
            reference: reference.frame,
            band_start: band.0 as u32,
            clean_rows: band.1 as u32,
            check_full: 0,
        }),
        check: 0,
    }
}
