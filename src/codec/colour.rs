//! Colour thumbnail: the frame's block means in YCbCr, sent next to the tokens so the decoder can
//! put the low frequencies of its picture where the photo has them.
//!
//! A codebook of K <= 256 entries cannot carry a 16x16 block's colour as well as its structure, so
//! decoded frames drift in colour (reds and yellows pulled to orange and brown) and in local
//! brightness. The thumbnail fixes that drift for a few hundred bytes: per `B x B` block (B = 32 by
//! default) the mean Y, Cb and Cr of the *original* frame, quantised with step `S`. The decoder
//! measures the same means on its own picture and adds the bilinearly interpolated differences.
//! The encoder never runs the tokenizer decoder (the thumbnail is absolute, not a residual), so an
//! edge encoder pays only a block average for it.
//!
//! Values are exact integers (BT.601 full range in 8-bit fixed point) and are coded after the
//! tokens in the same range coder with exact integer adaptive binary models, so the packet stays
//! bit-exact across machines. Only the correction of the pixels is floating point, like the
//! tokenizer decoder itself. See docs/bitstream.md ("Colour thumbnail").

use super::entropy::{kt_table, TokenDecoder, TokenEncoder, TOTAL};
use super::error::PacketError;
use super::frame::RgbImage;

/// Smallest and largest block side (log2): 8 to 128 pixels.
pub const MIN_BLOCK_LOG2: u8 = 3;
pub const MAX_BLOCK_LOG2: u8 = 7;
/// Largest quantiser step (in 8-bit units).
pub const MAX_STEP: u8 = 32;

/// Thumbnail parameters, carried in one header byte: bits 0-2 `block_log2 - 3`, bits 3-7
/// `step - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ColourParams {
    /// Block side is `1 << block_log2` pixels (3..=7).
    pub block_log2: u8,
    /// Quantiser step of the block means in 8-bit units (1..=32).
    pub step: u8,
}

impl Default for ColourParams {
    /// 32x32 blocks, step 4: on the 24 Kodak images with uigc-small 0.3.0, +0.0076 bpp for
    /// PSNR +0.94 dB and LPIPS-alex -0.032 (models/uigc-small/MODEL_CARD.md, "Colour thumbnail").
    fn default() -> Self {
        Self {
            block_log2: 5,
            step: 4,
        }
    }
}

impl ColourParams {
    pub fn new(block: u32, step: u32) -> Result<Self, String> {
        let ok_block = block.is_power_of_two()
            && (MIN_BLOCK_LOG2..=MAX_BLOCK_LOG2).contains(&(block.trailing_zeros() as u8));
        if !ok_block {
            return Err(format!(
                "colour block {block}: expected a power of two from {} to {}",
                1 << MIN_BLOCK_LOG2,
                1 << MAX_BLOCK_LOG2
            ));
        }
        if step == 0 || step > MAX_STEP as u32 {
            return Err(format!("colour step {step}: expected 1..={MAX_STEP}"));
        }
        Ok(Self {
            block_log2: block.trailing_zeros() as u8,
            step: step as u8,
        })
    }

    pub fn block(&self) -> u32 {
        1 << self.block_log2
    }

    pub fn to_byte(self) -> u8 {
        (self.block_log2 - MIN_BLOCK_LOG2) | ((self.step - 1) << 3)
    }

    pub fn from_byte(b: u8) -> Result<Self, PacketError> {
        let block_log2 = (b & 7) + MIN_BLOCK_LOG2;
        if block_log2 > MAX_BLOCK_LOG2 {
            return Err(PacketError::BadColour(format!(
                "block size 2^{block_log2} outside 8..=128 pixels"
            )));
        }
        Ok(Self {
            block_log2,
            step: (b >> 3) + 1,
        })
    }

    /// Thumbnail size (rows, cols) of a `width x height` frame.
    pub fn grid(&self, width: u32, height: u32) -> (usize, usize) {
        let b = self.block();
        (height.div_ceil(b) as usize, width.div_ceil(b) as usize)
    }

    /// Inclusive range of the quantised values of plane `p` (0 = Y, 1 = Cb, 2 = Cr).
    pub fn range(&self, p: usize) -> (i32, i32) {
        let s = self.step as i32;
        if p == 0 {
            (0, div_round(255, s))
        } else {
            (div_round(-128, s), div_round(128, s))
        }
    }
}

/// `round(num / den)` for `den > 0`, halves away from minus infinity (exact).
fn div_round(num: i32, den: i32) -> i32 {
    (2 * num + den).div_euclid(2 * den)
}

const Y_W: [i64; 3] = [77, 150, 29];
const CB_W: [i64; 3] = [-43, -85, 128];
const CR_W: [i64; 3] = [128, -107, -21];

/// Block sums of `Y_W`/`CB_W`/`CR_W`-weighted RGB (scale 256) and pixel counts, row-major blocks.
fn block_sums(img: &RgbImage, params: ColourParams) -> (Vec<[i64; 3]>, Vec<i64>) {
    let (rows, cols) = params.grid(img.width, img.height);
    let b = params.block() as usize;
    let mut sums = vec![[0i64; 3]; rows * cols];
    let mut counts = vec![0i64; rows * cols];
    let w = img.width as usize;
    for y in 0..img.height as usize {
        let row = &img.data[y * w * 3..(y + 1) * w * 3];
        let base = (y / b) * cols;
        for (x, px) in row.chunks_exact(3).enumerate() {
            let i = base + x / b;
            let rgb = [px[0] as i64, px[1] as i64, px[2] as i64];
            for (s, wts) in sums[i].iter_mut().zip([Y_W, CB_W, CR_W]) {
                *s += wts[0] * rgb[0] + wts[1] * rgb[1] + wts[2] * rgb[2];
            }
            counts[i] += 1;
        }
    }
    (sums, counts)
}

/// The quantised block means of one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColourThumb {
    pub params: ColourParams,
    pub rows: usize,
    pub cols: usize,
    /// Planes Y, Cb, Cr, each `rows * cols` values in raster order (units of `step`).
    pub planes: [Vec<i32>; 3],
}

impl ColourThumb {
    /// Measures the thumbnail of a frame (exact integer arithmetic).
    pub fn from_image(img: &RgbImage, params: ColourParams) -> Self {
        let (rows, cols) = params.grid(img.width, img.height);
        let (sums, counts) = block_sums(img, params);
        let step = params.step as i64;
        let planes = std::array::from_fn(|p| {
            let (lo, hi) = params.range(p);
            sums.iter()
                .zip(&counts)
                .map(|(s, &n)| {
                    let den = 256 * n * step;
                    let q = (2 * s[p] + den).div_euclid(2 * den) as i32;
                    q.clamp(lo, hi)
                })
                .collect()
        });
        Self {
            params,
            rows,
            cols,
            planes,
        }
    }

    /// Number of values (all planes).
    pub fn len(&self) -> usize {
        3 * self.rows * self.cols
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All values in coding order (plane by plane, raster order), for the packet's check value.
    pub fn values(&self) -> impl Iterator<Item = i32> + '_ {
        self.planes.iter().flatten().copied()
    }

    /// Codes the values into `enc` (after the tokens of a packet).
    pub fn encode(&self, enc: &mut TokenEncoder) -> Result<(), PacketError> {
        let mut model = ThumbModel::new();
        for p in 0..3 {
            let plane = &self.planes[p];
            for i in 0..plane.len() {
                let (pred, ctx) = predict(plane, i, self.cols, p, self.params);
                model.encode(enc, plane[i] - pred, ctx)?;
            }
        }
        Ok(())
    }

    /// Decodes the values of a `width x height` frame's thumbnail from `dec`.
    pub fn decode(
        dec: &mut TokenDecoder,
        params: ColourParams,
        width: u32,
        height: u32,
    ) -> Result<Self, PacketError> {
        let (rows, cols) = params.grid(width, height);
        let mut model = ThumbModel::new();
        let mut planes: [Vec<i32>; 3] = Default::default();
        for (p, plane) in planes.iter_mut().enumerate() {
            let (lo, hi) = params.range(p);
            plane.reserve(rows * cols);
            for i in 0..rows * cols {
                let (pred, ctx) = predict(plane, i, cols, p, params);
                let v = pred + model.decode(dec, ctx)?;
                if v < lo || v > hi {
                    return Err(PacketError::BadColour(format!(
                        "value {v} outside {lo}..={hi} (plane {p}, block {i})"
                    )));
                }
                plane.push(v);
            }
        }
        Ok(Self {
            params,
            rows,
            cols,
            planes,
        })
    }

    /// Moves the block means of `img` (a decoded frame of the thumbnail's size) to the
    /// thumbnail's: the per-block differences, bilinearly interpolated between block centres, are
    /// added to every pixel in YCbCr.
    pub fn apply(&self, img: &mut RgbImage) {
        if (self.rows, self.cols) != self.params.grid(img.width, img.height) {
            return;
        }
        let (sums, counts) = block_sums(img, self.params);
        let step = self.params.step as f32;
        // Differences per block and plane, in 8-bit units.
        let diff: Vec<[f32; 3]> = sums
            .iter()
            .zip(&counts)
            .enumerate()
            .map(|(i, (s, &n))| {
                std::array::from_fn(|p| {
                    self.planes[p][i] as f32 * step - s[p] as f32 / (256.0 * n as f32)
                })
            })
            .collect();
        let b = self.params.block() as f32;
        let (w, h) = (img.width as usize, img.height as usize);
        let axis = |x: usize, n: usize| -> (usize, usize, f32) {
            let f = ((x as f32 + 0.5) / b - 0.5).clamp(0.0, (n - 1) as f32);
            let i0 = f.floor() as usize;
            let i1 = (i0 + 1).min(n - 1);
            (i0, i1, f - i0 as f32)
        };
        let xs: Vec<_> = (0..w).map(|x| axis(x, self.cols)).collect();
        for y in 0..h {
            let (r0, r1, fy) = axis(y, self.rows);
            for (x, &(c0, c1, fx)) in xs.iter().enumerate() {
                let at = |r: usize, c: usize| diff[r * self.cols + c];
                let (a, bb, c, d) = (at(r0, c0), at(r0, c1), at(r1, c0), at(r1, c1));
                let v: [f32; 3] = std::array::from_fn(|p| {
                    (a[p] * (1.0 - fx) + bb[p] * fx) * (1.0 - fy)
                        + (c[p] * (1.0 - fx) + d[p] * fx) * fy
                });
                let (dy, dcb, dcr) = (v[0], v[1], v[2]);
                let delta = [
                    dy + 1.402 * dcr,
                    dy - 0.344_136 * dcb - 0.714_136 * dcr,
                    dy + 1.772 * dcb,
                ];
                let px = &mut img.data[(y * w + x) * 3..(y * w + x) * 3 + 3];
                for (c, dl) in px.iter_mut().zip(delta) {
                    *c = (*c as f32 + dl).round().clamp(0.0, 255.0) as u8;
                }
            }
        }
    }

    /// Most range-coder symbols one value can take (for the decoder's payload bound).
    pub const MAX_SYMBOLS_PER_VALUE: usize = 2 + UNARY_BINS + 2 * MAX_EG_PREFIX + 1;
}

/// MED (LOCO-I) prediction of value `i` of a plane from its left, top and top-left neighbours,
/// and the coding context (plane kind x local activity).
fn predict(plane: &[i32], i: usize, cols: usize, p: usize, params: ColourParams) -> (i32, usize) {
    let (r, c) = (i / cols, i % cols);
    let kind = (p > 0) as usize;
    let pred = match (r, c) {
        (0, 0) => {
            let (lo, hi) = params.range(p);
            if p == 0 {
                (lo + hi) / 2
            } else {
                0
            }
        }
        (0, _) => plane[i - 1],
        (_, 0) => plane[i - cols],
        _ => {
            let (a, b, d) = (plane[i - 1], plane[i - cols], plane[i - cols - 1]);
            let activity = (a - d).abs() + (b - d).abs();
            let pred = if d >= a.max(b) {
                a.min(b)
            } else if d <= a.min(b) {
                a.max(b)
            } else {
                a + b - d
            };
            let class = match activity {
                0 => 1,
                1..=2 => 2,
                _ => 3,
            };
            return (pred, kind * 4 + class);
        }
    };
    (pred, kind * 4)
}

/// Unary magnitude bins with their own adaptive models; larger magnitudes continue in
/// Exp-Golomb with equiprobable bits.
const UNARY_BINS: usize = 6;
/// Longest Exp-Golomb prefix a decoder accepts (magnitudes below 2^16).
const MAX_EG_PREFIX: usize = 16;
const CONTEXTS: usize = 8;
const HALF: [u32; 2] = [TOTAL / 2, TOTAL / 2];

/// An adaptive binary model: integer Krichevsky-Trofimov counts, halved at 256 (exact).
#[derive(Clone, Copy, Default)]
struct Bit {
    n: [u32; 2],
}

impl Bit {
    fn table(&self) -> [u32; 2] {
        kt_table(self.n[0], self.n[1])
    }

    fn update(&mut self, bit: usize) {
        self.n[bit] += 1;
        if self.n[0] + self.n[1] >= 256 {
            self.n = [self.n[0].div_ceil(2), self.n[1].div_ceil(2)];
        }
    }
}

/// Residual binarisation: zero? (per context), sign (per plane kind), magnitude - 1 in unary
/// over `UNARY_BINS` adaptive bins (per context), then Exp-Golomb (order 0) with equiprobable bits.
pub(crate) struct ThumbModel {
    zero: [Bit; CONTEXTS],
    sign: [Bit; 2],
    unary: [[Bit; UNARY_BINS]; CONTEXTS],
}

impl ThumbModel {
    pub(crate) fn new() -> Self {
        Self {
            zero: [Bit::default(); CONTEXTS],
            sign: [Bit::default(); 2],
            unary: [[Bit::default(); UNARY_BINS]; CONTEXTS],
        }
    }

    fn put(enc: &mut TokenEncoder, bit: usize, model: &mut Bit) -> Result<(), PacketError> {
        enc.encode(bit, &model.table())?;
        model.update(bit);
        Ok(())
    }

    fn get(dec: &mut TokenDecoder, model: &mut Bit) -> Result<usize, PacketError> {
        let bit = dec.decode(&model.table())?;
        model.update(bit);
        Ok(bit)
    }

    pub(crate) fn encode(
        &mut self,
        enc: &mut TokenEncoder,
        r: i32,
        ctx: usize,
    ) -> Result<(), PacketError> {
        Self::put(enc, (r == 0) as usize, &mut self.zero[ctx])?;
        if r == 0 {
            return Ok(());
        }
        Self::put(enc, (r < 0) as usize, &mut self.sign[ctx / 4])?;
        let m = r.unsigned_abs() - 1;
        for (k, bin) in self.unary[ctx].iter_mut().enumerate() {
            let more = (m > k as u32) as usize;
            Self::put(enc, more, bin)?;
            if more == 0 {
                return Ok(());
            }
        }
        // Exp-Golomb order 0 of v = m - UNARY_BINS.
        let v = m - UNARY_BINS as u32 + 1;
        let len = 31 - v.leading_zeros() as usize;
        for _ in 0..len {
            enc.encode(0, &HALF)?;
        }
        for i in (0..=len).rev() {
            enc.encode(((v >> i) & 1) as usize, &HALF)?;
        }
        Ok(())
    }

    pub(crate) fn decode(
        &mut self,
        dec: &mut TokenDecoder,
        ctx: usize,
    ) -> Result<i32, PacketError> {
        if Self::get(dec, &mut self.zero[ctx])? == 1 {
            return Ok(0);
        }
        let negative = Self::get(dec, &mut self.sign[ctx / 4])? == 1;
        let mut m = 0u32;
        let mut done = false;
        for bin in self.unary[ctx].iter_mut() {
            if Self::get(dec, bin)? == 0 {
                done = true;
                break;
            }
            m += 1;
        }
        if !done {
            let mut len = 0;
            while dec.decode(&HALF)? == 0 {
                len += 1;
                if len > MAX_EG_PREFIX {
                    return Err(PacketError::BadColour(
                        "residual code longer than any value".into(),
                    ));
                }
            }
            let mut v = 1u32;
            for _ in 0..len {
                v = (v << 1) | dec.decode(&HALF)? as u32;
            }
            m += v - 1;
        }
        let mag = m as i32 + 1;
        Ok(if negative { -mag } else { mag })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> RgbImage {
        let mut data = Vec::with_capacity((w * h * 3) as usize);
        for y in 0..h {
            for x in 0..w {
                data.extend_from_slice(&f(x, y));
            }
        }
        RgbImage::new(w, h, data).unwrap()
    }

    fn photo_like(w: u32, h: u32) -> RgbImage {
        image(w, h, |x, y| {
            let n = (x.wrapping_mul(2654435761) ^ y.wrapping_mul(40503)) % 23;
            [
                (x * 255 / w) as u8,
                ((y * 200 / h) as u8).wrapping_add(n as u8),
                (255 - (x + y) * 255 / (w + h)) as u8,
            ]
        })
    }

    #[test]
    fn params_byte_round_trip_and_limits() {
        for log2 in MIN_BLOCK_LOG2..=MAX_BLOCK_LOG2 {
            for step in 1..=MAX_STEP {
                let p = ColourParams::new(1 << log2, step as u32).unwrap();
                assert_eq!(ColourParams::from_byte(p.to_byte()).unwrap(), p);
            }
        }
        assert!(ColourParams::new(24, 4).is_err());
        assert!(ColourParams::new(4, 4).is_err());
        assert!(ColourParams::new(256, 4).is_err());
        assert!(ColourParams::new(32, 0).is_err());
        assert!(ColourParams::new(32, 33).is_err());
        assert!(matches!(
            ColourParams::from_byte(0b0000_0101),
            Err(PacketError::BadColour(_))
        ));
    }

    #[test]
    fn grey_and_primaries_are_exact() {
        let p = ColourParams::new(8, 1).unwrap();
        let grey = ColourThumb::from_image(&image(8, 8, |_, _| [128, 128, 128]), p);
        assert_eq!(grey.planes, [vec![128], vec![0], vec![0]]);
        let red = ColourThumb::from_image(&image(8, 8, |_, _| [255, 0, 0]), p);
        // BT.601: Y = 0.299 * 255 = 76.2, Cb = -0.1687 * 255 = -43.0, Cr = 127.5.
        assert_eq!(red.planes, [vec![77], vec![-43], vec![128]]);
    }

    #[test]
    fn coding_round_trips_at_odd_sizes() {
        for (w, h, block, step) in [
            (97, 61, 32, 4),
            (16, 16, 8, 1),
            (300, 7, 128, 32),
            (1, 1, 8, 3),
        ] {
            let params = ColourParams::new(block, step).unwrap();
            let t = ColourThumb::from_image(&photo_like(w, h), params);
            assert_eq!((t.rows, t.cols), params.grid(w, h));
            let mut enc = TokenEncoder::new();
            t.encode(&mut enc).unwrap();
            let bytes = enc.finish();
            let mut dec = TokenDecoder::new(&bytes).unwrap();
            let back = ColourThumb::decode(&mut dec, params, w, h).unwrap();
            assert_eq!(back, t, "{w}x{h} block {block} step {step}");
        }
    }

    #[test]
    fn large_residuals_use_the_escape() {
        // Alternating black and white blocks: residuals far beyond the unary bins.
        let params = ColourParams::new(8, 1).unwrap();
        let img = image(64, 64, |x, y| {
            if (x / 8 + y / 8) % 2 == 0 {
                [0, 0, 0]
            } else {
                [255, 255, 255]
            }
        });
        let t = ColourThumb::from_image(&img, params);
        let mut enc = TokenEncoder::new();
        t.encode(&mut enc).unwrap();
        let bytes = enc.finish();
        let back = ColourThumb::decode(&mut TokenDecoder::new(&bytes).unwrap(), params, 64, 64);
        assert_eq!(back.unwrap(), t);
    }

    #[test]
    fn garbage_is_refused_or_bounded() {
        let params = ColourParams::default();
        for seed in 0..64u8 {
            let junk: Vec<u8> = (0..40u8)
                .map(|i| seed.wrapping_mul(37).wrapping_add(i.wrapping_mul(11)))
                .collect();
            let mut dec = TokenDecoder::new(&junk).unwrap();
            if let Ok(t) = ColourThumb::decode(&mut dec, params, 256, 256) {
                for p in 0..3 {
                    let (lo, hi) = params.range(p);
                    assert!(t.planes[p].iter().all(|v| (lo..=hi).contains(v)));
                }
            }
        }
    }

    #[test]
    fn apply_moves_block_means_to_the_thumbnail() {
        let params = ColourParams::new(16, 2).unwrap();
        let target = photo_like(80, 48);
        let thumb = ColourThumb::from_image(&target, params);
        // A "decoded" frame with a colour cast and the wrong brightness.
        let mut decoded = image(80, 48, |x, y| {
            let [r, g, b] = [target.data[((y * 80 + x) * 3) as usize], 0, 0];
            [r / 2 + 40, g + 90, b + 60]
        });
        let err = |img: &RgbImage| -> i64 {
            let t = ColourThumb::from_image(img, params);
            (0..3)
                .map(|p| {
                    t.planes[p]
                        .iter()
                        .zip(&thumb.planes[p])
                        .map(|(a, b)| (a - b).abs() as i64)
                        .sum::<i64>()
                })
                .sum()
        };
        let before = err(&decoded);
        thumb.apply(&mut decoded);
        let after = err(&decoded);
        assert!(after * 10 < before, "block-mean error {before} -> {after}");
    }
}
