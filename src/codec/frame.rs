//! Plain 8-bit RGB frames and their conversion to and from network tensors.

use super::error::{Error, Result};

/// An 8-bit RGB image, rows top to bottom, pixels interleaved R, G, B.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl RgbImage {
    pub fn new(width: u32, height: u32, data: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 {
            return Err(Error::Image(format!("empty frame {width}x{height}")));
        }
        let need = width as usize * height as usize * 3;
        if data.len() != need {
            return Err(Error::Image(format!(
                "{width}x{height} RGB needs {need} bytes, got {}",
                data.len()
            )));
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }

    /// Token grid size (rows, cols) of this frame at 16 pixels per token.
    pub fn grid(&self) -> (usize, usize) {
        self.grid_of(16)
    }

    /// The token grid (rows, cols) at `factor` pixels per token side.
    pub fn grid_of(&self, factor: usize) -> (usize, usize) {
        (
            (self.height as usize).div_ceil(factor),
            (self.width as usize).div_ceil(factor),
        )
    }

    /// The frame at twice its width and height: separable bicubic (Keys, a = -0.5) in exact
    /// integer arithmetic (taps -3, 29, 111, -9 / 128 and mirrored), edges replicated. The
    /// encoder's input of a dense packet (see [`super::Density`]).
    pub fn upsample2x(&self) -> RgbImage {
        const EVEN: [i32; 4] = [-3, 29, 111, -9]; // taps at i-2 .. i+1 for output 2i
        const ODD: [i32; 4] = [-9, 111, 29, -3]; // taps at i-1 .. i+2 for output 2i+1
        let (w, h) = (self.width as usize, self.height as usize);
        let (w2, h2) = (2 * w, 2 * h);
        let clampi = |v: isize, n: usize| v.clamp(0, n as isize - 1) as usize;
        // Horizontal pass: i32 at scale 128.
        let mut tmp = vec![0i32; h * w2 * 3];
        for y in 0..h {
            let row = &self.data[y * w * 3..(y + 1) * w * 3];
            for x in 0..w2 {
                let i = (x / 2) as isize;
                let (taps, first) = if x % 2 == 0 {
                    (EVEN, i - 2)
                } else {
                    (ODD, i - 1)
                };
                for c in 0..3 {
                    let mut acc = 0i32;
                    for (k, t) in taps.iter().enumerate() {
                        acc += t * row[clampi(first + k as isize, w) * 3 + c] as i32;
                    }
                    tmp[(y * w2 + x) * 3 + c] = acc;
                }
            }
        }
        // Vertical pass: scale 128 * 128, rounded and clamped.
        let mut data = vec![0u8; h2 * w2 * 3];
        for y in 0..h2 {
            let i = (y / 2) as isize;
            let (taps, first) = if y % 2 == 0 {
                (EVEN, i - 2)
            } else {
                (ODD, i - 1)
            };
            let rows: [usize; 4] = std::array::from_fn(|k| clampi(first + k as isize, h));
            for x in 0..w2 * 3 {
                let mut acc = 0i32;
                for k in 0..4 {
                    acc += taps[k] * tmp[rows[k] * w2 * 3 + x];
                }
                data[y * w2 * 3 + x] = ((acc + 8192) >> 14).clamp(0, 255) as u8;
            }
        }
        RgbImage {
            width: w2 as u32,
            height: h2 as u32,
            data,
        }
    }

    /// The frame at half its width and height (rounded up; a missing last column or row repeats
    /// its neighbour): 2x2 box average, rounded. The decoder's output of a dense packet.
    pub fn downsample2x(&self) -> RgbImage {
        let (w, h) = (self.width as usize, self.height as usize);
        let (w2, h2) = (w.div_ceil(2), h.div_ceil(2));
        let mut data = vec![0u8; w2 * h2 * 3];
        for y in 0..h2 {
            let (y0, y1) = (2 * y, (2 * y + 1).min(h - 1));
            for x in 0..w2 {
                let (x0, x1) = (2 * x, (2 * x + 1).min(w - 1));
                for c in 0..3 {
                    let at = |yy: usize, xx: usize| self.data[(yy * w + xx) * 3 + c] as u32;
                    let sum = at(y0, x0) + at(y0, x1) + at(y1, x0) + at(y1, x1);
                    data[(y * w2 + x) * 3 + c] = ((sum + 2) / 4) as u8;
                }
            }
        }
        RgbImage {
            width: w2 as u32,
            height: h2 as u32,
            data,
        }
    }

    /// Planar float tensor `[3, H16, W16]` (sizes padded to multiples of 16 by edge
    /// replication), normalised as `(x / 255 - mean) / std`.
    pub fn to_padded_tensor(&self, mean: [f32; 3], std: [f32; 3]) -> (usize, usize, Vec<f32>) {
        self.to_padded_tensor_of(mean, std, 16)
    }

    /// [`Self::to_padded_tensor`] with sizes padded to multiples of `factor`.
    pub fn to_padded_tensor_of(
        &self,
        mean: [f32; 3],
        std: [f32; 3],
        factor: usize,
    ) -> (usize, usize, Vec<f32>) {
        let (rows, cols) = self.grid_of(factor);
        let (ph, pw) = (rows * factor, cols * factor);
        let (w, h) = (self.width as usize, self.height as usize);
        let mut out = vec![0f32; 3 * ph * pw];
        let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * std[c]));
        let offset: [f32; 3] = std::array::from_fn(|c| mean[c] / std[c]);
        for y in 0..ph {
            let sy = y.min(h - 1);
            let row = &self.data[sy * w * 3..(sy + 1) * w * 3];
            for x in 0..pw {
                let sx = x.min(w - 1);
                for c in 0..3 {
                    out[c * ph * pw + y * pw + x] = row[sx * 3 + c] as f32 * scale[c] - offset[c];
                }
            }
        }
        (ph, pw, out)
    }

    /// Inverse of [`Self::to_padded_tensor`]: crops a planar `[3, ph, pw]` tensor to
    /// `width` x `height`, denormalises, rounds and clamps to 0..=255.
    pub fn from_padded_tensor(
        tensor: &[f32],
        ph: usize,
        pw: usize,
        width: u32,
        height: u32,
        mean: [f32; 3],
        std: [f32; 3],
    ) -> Result<Self> {
        let (w, h) = (width as usize, height as usize);
        if w > pw || h > ph || tensor.len() != 3 * ph * pw {
            return Err(Error::Image(format!(
                "cannot crop {width}x{height} from a {pw}x{ph} tensor of {} values",
                tensor.len()
            )));
        }
        let mut data = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let v = (tensor[c * ph * pw + y * pw + x] * std[c] + mean[c]) * 255.0;
                    // NaN maps to 0 through `as`.
                    data[(y * w + x) * 3 + c] = v.round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        Self::new(width, height, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_replicates_edges_and_round_trips() {
        let img = RgbImage::new(
            17,
            2,
            (0..17 * 2 * 3).map(|i| (i * 7 % 256) as u8).collect(),
        )
        .unwrap();
        let (ph, pw, t) = img.to_padded_tensor([0.5; 3], [0.5; 3]);
        assert_eq!((ph, pw), (16, 32));
        // Column 31 repeats column 16, row 15 repeats row 1.
        for c in 0..3 {
            assert_eq!(t[c * ph * pw + 31], t[c * ph * pw + 16]);
            assert_eq!(t[c * ph * pw + 15 * pw + 3], t[c * ph * pw + pw + 3]);
        }
        let back = RgbImage::from_padded_tensor(&t, ph, pw, 17, 2, [0.5; 3], [0.5; 3]).unwrap();
        assert_eq!(back, img);
    }

    #[test]
    fn resampling_keeps_flat_images_and_sizes() {
        let flat = RgbImage::new(5, 3, [10u8, 200, 77].repeat(15)).unwrap();
        let up = flat.upsample2x();
        assert_eq!((up.width, up.height), (10, 6));
        assert!(up.data.chunks(3).all(|p| p == [10, 200, 77]));
        assert_eq!(up.downsample2x(), flat);
        // A ramp stays monotonic and inside its range; overshoot at an edge is clamped.
        let ramp = RgbImage::new(8, 1, (0..8).flat_map(|i| [i * 30; 3]).collect()).unwrap();
        let up = ramp.upsample2x();
        let r: Vec<u8> = up.data.chunks(3).take(16).map(|p| p[0]).collect();
        assert!(r.windows(2).all(|w| w[0] <= w[1]), "{r:?}");
        let step = RgbImage::new(
            4,
            1,
            [0, 0, 255, 255].iter().flat_map(|&v| [v; 3]).collect(),
        )
        .unwrap();
        let up = step.upsample2x();
        assert_eq!((up.data[0], up.data[up.data.len() - 1]), (0, 255));
        // Odd sizes round up.
        let odd = RgbImage::new(3, 1, vec![0, 0, 0, 100, 100, 100, 50, 50, 50]).unwrap();
        let down = odd.downsample2x();
        assert_eq!((down.width, down.height), (2, 1));
        assert_eq!(&down.data, &[50, 50, 50, 50, 50, 50]);
    }

    #[test]
    fn rejects_bad_sizes() {
        assert!(RgbImage::new(0, 5, vec![]).is_err());
        assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
        assert!(RgbImage::from_padded_tensor(&[0.0; 3], 1, 1, 2, 1, [0.0; 3], [1.0; 3]).is_err());
    }
}
