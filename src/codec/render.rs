//! The receiver renders only what changed: when a new token grid differs from the last one in a
//! few tokens, the decoder network re-runs only on rectangles around them (the changed tokens
//! plus a margin, decoded with a halo of context) and the rest of the last picture is kept.
//!
//! The decoder normalises with statistics of the whole picture (GroupNorm), so a tile decoded on
//! its own would not match; the bundle's optional tile graph (docs/bundle.md "Tile graph")
//! normalises a tile with the statistics of the last full decode instead. Those go stale as the
//! picture changes, so a full decode runs again on keyframes, every [`RenderPolicy::full_every`]
//! tiled frames and when the tiles would cover more than [`RenderPolicy::max_share`] of the
//! picture. Only pixels are affected: tokens, check values and the entropy coder are not.
//! Measurements: docs/video.md "Receiver: rendering only what changed".

use std::fmt;
use std::str::FromStr;

use super::error::{Error, Result};
use super::frame::RgbImage;
use super::prior::TokenGrid;
use super::tokenizer::Tokenizer;

/// Whether the receiver decodes changed tiles or whole pictures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RenderMode {
    /// Tiles when the model bundle has a tile graph, whole pictures otherwise.
    #[default]
    Auto,
    /// Every picture decoded whole (as before tiled rendering).
    Full,
    /// Tiles; a bundle without a tile graph is an error.
    Tiles,
}

impl FromStr for RenderMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Self::Auto),
            "full" => Ok(Self::Full),
            "tiles" => Ok(Self::Tiles),
            _ => Err(Error::InvalidArgument(format!(
                "render mode '{s}': expected auto, full or tiles"
            ))),
        }
    }
}

impl fmt::Display for RenderMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Full => "full",
            Self::Tiles => "tiles",
        })
    }
}

/// Default margin: tokens around a changed token that are repainted.
pub const DEFAULT_MARGIN: usize = 3;
/// Default halo: tokens of context decoded around a repainted rectangle and thrown away.
pub const DEFAULT_HALO: usize = 4;
/// Default: a full decode after this many tiled frames.
pub const DEFAULT_FULL_EVERY: u32 = 50;
/// Default: a full decode when the tiles (halo included) cover more than this share of the grid.
pub const DEFAULT_MAX_SHARE: f32 = 0.5;

/// When and how the receiver renders tiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderPolicy {
    pub mode: RenderMode,
    /// Tokens around each changed token that are repainted (a change moves pixels up to ~8
    /// tokens away, most of it within 2).
    pub margin: usize,
    /// Tokens of context around each repainted rectangle (decoded, not pasted).
    pub halo: usize,
    /// A full decode after this many tiled frames (0: only when `max_share` or a keyframe asks),
    /// which refreshes the normalisation statistics.
    pub full_every: u32,
    /// A full decode when the tiles, halo included, would cover more than this share of the grid.
    pub max_share: f32,
}

impl Default for RenderPolicy {
    fn default() -> Self {
        Self {
            mode: RenderMode::Auto,
            margin: DEFAULT_MARGIN,
            halo: DEFAULT_HALO,
            full_every: DEFAULT_FULL_EVERY,
            max_share: DEFAULT_MAX_SHARE,
        }
    }
}

/// A rectangle of tokens: rows `r0..r1`, columns `c0..c1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TileRect {
    pub r0: usize,
    pub r1: usize,
    pub c0: usize,
    pub c1: usize,
}

impl TileRect {
    pub fn area(&self) -> usize {
        (self.r1 - self.r0) * (self.c1 - self.c0)
    }

    /// Grown by `by` tokens on every side, clipped to a `rows` x `cols` grid.
    pub fn grow(&self, by: usize, rows: usize, cols: usize) -> Self {
        Self {
            r0: self.r0.saturating_sub(by),
            r1: (self.r1 + by).min(rows),
            c0: self.c0.saturating_sub(by),
            c1: (self.c1 + by).min(cols),
        }
    }

    fn union(&self, o: &Self) -> Self {
        Self {
            r0: self.r0.min(o.r0),
            r1: self.r1.max(o.r1),
            c0: self.c0.min(o.c0),
            c1: self.c1.max(o.c1),
        }
    }
}

/// The rectangles to repaint for the `changed` tokens of a `rows` x `cols` grid: each changed
/// token grown by `margin`, connected areas as bounding boxes, then boxes merged while one
/// decode of the union (with its `halo`) costs no more tokens than the two apart. Every
/// changed token lies inside a rectangle with `margin` tokens (or the grid's edge) around it.
pub fn plan_tiles(
    changed: &[bool],
    rows: usize,
    cols: usize,
    margin: usize,
    halo: usize,
) -> Vec<TileRect> {
    assert_eq!(changed.len(), rows * cols, "mask size");
    // Grown mask: rows then columns (a square dilation).
    let mut grown = vec![false; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            if changed[r * cols + c] {
                let g = TileRect {
                    r0: r,
                    r1: r + 1,
                    c0: c,
                    c1: c + 1,
                }
                .grow(margin, rows, cols);
                for rr in g.r0..g.r1 {
                    grown[rr * cols + g.c0..rr * cols + g.c1].fill(true);
                }
            }
        }
    }
    // Connected areas (4-neighbours) -> bounding boxes.
    let mut seen = vec![false; rows * cols];
    let mut boxes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..rows * cols {
        if !grown[start] || seen[start] {
            continue;
        }
        let (r, c) = (start / cols, start % cols);
        let mut b = TileRect {
            r0: r,
            r1: r + 1,
            c0: c,
            c1: c + 1,
        };
        seen[start] = true;
        stack.push(start);
        while let Some(p) = stack.pop() {
            let (r, c) = (p / cols, p % cols);
            b = b.union(&TileRect {
                r0: r,
                r1: r + 1,
                c0: c,
                c1: c + 1,
            });
            let mut visit = |q: usize| {
                if grown[q] && !seen[q] {
                    seen[q] = true;
                    stack.push(q);
                }
            };
            if r > 0 {
                visit(p - cols);
            }
            if r + 1 < rows {
                visit(p + cols);
            }
            if c > 0 {
                visit(p - 1);
            }
            if c + 1 < cols {
                visit(p + 1);
            }
        }
        boxes.push(b);
    }
    // Merge while it does not cost more network work.
    let cost = |b: &TileRect| b.grow(halo, rows, cols).area();
    loop {
        let mut merged = false;
        'outer: for i in 0..boxes.len() {
            for j in i + 1..boxes.len() {
                let u = boxes[i].union(&boxes[j]);
                if cost(&u) <= cost(&boxes[i]) + cost(&boxes[j]) {
                    boxes[i] = u;
                    boxes.swap_remove(j);
                    merged = true;
                    break 'outer;
                }
            }
        }
        if !merged {
            break;
        }
    }
    boxes.sort_by_key(|b| (b.r0, b.c0));
    boxes
}

/// How a picture was rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rendered {
    /// The whole decoder network ran.
    #[default]
    Full,
    /// `tiles` rectangles were decoded, `tokens` tokens in all (halos included).
    Tiles { tiles: usize, tokens: usize },
    /// No token changed: the last picture.
    Reused,
}

impl Rendered {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Tiles { .. } => "tiles",
            Self::Reused => "reused",
        }
    }
}

/// Counters of a renderer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RenderStats {
    pub full: u64,
    pub tiled: u64,
    pub reused: u64,
    /// Tokens decoded by tiles (halos included).
    pub tile_tokens: u64,
}

struct Last {
    grid: TokenGrid,
    /// The picture of `grid` before any colour correction.
    image: RgbImage,
    /// Statistics of the last full decode (None: decoded without the tile graph).
    stats: Option<Vec<f32>>,
    /// Tiled frames since that full decode.
    since_full: u32,
}

/// The receiver's picture state: the last grid, its picture and normalisation statistics.
#[derive(Default)]
pub struct Renderer {
    policy: RenderPolicy,
    last: Option<Last>,
    stats: RenderStats,
}

impl Renderer {
    pub fn new(policy: RenderPolicy) -> Self {
        Self {
            policy,
            last: None,
            stats: RenderStats::default(),
        }
    }

    pub fn policy(&self) -> &RenderPolicy {
        &self.policy
    }

    pub fn stats(&self) -> RenderStats {
        self.stats
    }

    /// Forgets the last picture (the next render is a full decode).
    pub fn reset(&mut self) {
        self.last = None;
    }

    /// The picture of `grid` (`width` x `height`, no colour correction), from tiles over the last
    /// picture where the policy allows, else a full decode; `full` asks for a full decode.
    pub fn render(
        &mut self,
        tok: &mut Tokenizer,
        grid: &TokenGrid,
        width: u32,
        height: u32,
        full: bool,
    ) -> Result<(RgbImage, Rendered)> {
        let tiles_ok = match self.policy.mode {
            RenderMode::Full => false,
            RenderMode::Auto => tok.has_tile_graph(),
            RenderMode::Tiles if tok.has_tile_graph() => true,
            RenderMode::Tiles => {
                return Err(Error::InvalidArgument(
                    "render mode 'tiles' needs a model bundle with a tile graph \
                     (tokenizer_decoder_tile, docs/bundle.md)"
                        .into(),
                ))
            }
        };
        if let Some(last) = self.last.as_mut().filter(|l| {
            !full
                && tiles_ok
                && l.stats.is_some()
                && (l.grid.rows, l.grid.cols) == (grid.rows, grid.cols)
                && (l.image.width, l.image.height) == (width, height)
        }) {
            let changed: Vec<bool> = grid
                .tokens
                .iter()
                .zip(&last.grid.tokens)
                .map(|(a, b)| a != b)
                .collect();
            if !changed.iter().any(|&c| c) {
                self.stats.reused += 1;
                return Ok((last.image.clone(), Rendered::Reused));
            }
            let (rows, cols) = (grid.rows, grid.cols);
            let p = &self.policy;
            let rects = plan_tiles(&changed, rows, cols, p.margin, p.halo);
            let tokens: usize = rects
                .iter()
                .map(|r| r.grow(p.halo, rows, cols).area())
                .sum();
            let due = p.full_every > 0 && last.since_full >= p.full_every;
            if !due && (tokens as f64) <= p.max_share as f64 * (rows * cols) as f64 {
                let stats = last.stats.as_deref().expect("checked above");
                for r in &rects {
                    tok.decode_tile(grid, stats, r.grow(p.halo, rows, cols), *r, &mut last.image)?;
                }
                last.grid = grid.clone();
                last.since_full += 1;
                self.stats.tiled += 1;
                self.stats.tile_tokens += tokens as u64;
                let tiles = rects.len();
                return Ok((last.image.clone(), Rendered::Tiles { tiles, tokens }));
            }
        }
        let (image, stats) = if tiles_ok {
            let (image, stats) = tok.decode_with_stats(grid, width, height)?;
            (image, Some(stats))
        } else {
            (tok.decode(grid, width, height)?, None)
        };
        self.last = Some(Last {
            grid: grid.clone(),
            image: image.clone(),
            stats,
            since_full: 0,
        });
        self.stats.full += 1;
        Ok((image, Rendered::Full))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(rows: usize, cols: usize, on: &[(usize, usize)]) -> Vec<bool> {
        let mut m = vec![false; rows * cols];
        for &(r, c) in on {
            m[r * cols + c] = true;
        }
        m
    }

    #[test]
    fn one_token_gets_its_margin_clipped_to_the_grid() {
        let t = plan_tiles(&mask(10, 12, &[(5, 6)]), 10, 12, 2, 3);
        assert_eq!(
            t,
            vec![TileRect {
                r0: 3,
                r1: 8,
                c0: 4,
                c1: 9
            }]
        );
        let t = plan_tiles(&mask(10, 12, &[(0, 11)]), 10, 12, 2, 3);
        assert_eq!(
            t,
            vec![TileRect {
                r0: 0,
                r1: 3,
                c0: 9,
                c1: 12
            }]
        );
        assert!(plan_tiles(&mask(4, 4, &[]), 4, 4, 2, 3).is_empty());
    }

    #[test]
    fn near_tokens_merge_far_ones_do_not() {
        // Two tokens 3 apart: their grown areas touch -> one box.
        let t = plan_tiles(&mask(30, 40, &[(10, 10), (10, 13)]), 30, 40, 1, 0);
        assert_eq!(
            t,
            vec![TileRect {
                r0: 9,
                r1: 12,
                c0: 9,
                c1: 15
            }]
        );
        // Far apart with no halo: two boxes (a union would decode the empty space between).
        let t = plan_tiles(&mask(30, 40, &[(2, 2), (25, 35)]), 30, 40, 1, 0);
        assert_eq!(t.len(), 2);
        // Near enough that the halos overlap: one decode of the union is cheaper.
        let t = plan_tiles(&mask(30, 40, &[(10, 10), (10, 16)]), 30, 40, 1, 4);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn every_changed_token_is_covered_with_its_margin() {
        let (rows, cols) = (36, 48);
        let mut s = 7u64;
        let mut on = Vec::new();
        for _ in 0..60 {
            let v = super::super::regen::splitmix(&mut s);
            on.push((
                (v % rows as u64) as usize,
                ((v >> 32) % cols as u64) as usize,
            ));
        }
        let m = mask(rows, cols, &on);
        let rects = plan_tiles(&m, rows, cols, 2, 4);
        for &(r, c) in &on {
            let need = TileRect {
                r0: r,
                r1: r + 1,
                c0: c,
                c1: c + 1,
            }
            .grow(2, rows, cols);
            assert!(
                rects.iter().any(|t| t.r0 <= need.r0
                    && t.r1 >= need.r1
                    && t.c0 <= need.c0
                    && t.c1 >= need.c1),
                "token ({r}, {c}) with its margin is in no rectangle of {rects:?}"
            );
        }
    }

    #[test]
    fn modes_parse() {
        for m in [RenderMode::Auto, RenderMode::Full, RenderMode::Tiles] {
            assert_eq!(m.to_string().parse::<RenderMode>().unwrap(), m);
        }
        assert!("tile".parse::<RenderMode>().is_err());
    }
}
