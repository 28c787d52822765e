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
        (
            self.height.div_ceil(16) as usize,
            self.width.div_ceil(16) as usize,
        )
    }

    /// Planar float tensor `[3, H16, W16]` (sizes padded to multiples of 16 by edge
    /// replication), normalised as `(x / 255 - mean) / std`.
    pub fn to_padded_tensor(&self, mean: [f32; 3], std: [f32; 3]) -> (usize, usize, Vec<f32>) {
        let (rows, cols) = self.grid();
        let (ph, pw) = (rows * 16, cols * 16);
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
    fn rejects_bad_sizes() {
        assert!(RgbImage::new(0, 5, vec![]).is_err());
        assert!(RgbImage::new(2, 2, vec![0; 11]).is_err());
        assert!(RgbImage::from_padded_tensor(&[0.0; 3], 1, 1, 2, 1, [0.0; 3], [1.0; 3]).is_err());
    }
}
