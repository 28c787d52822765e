//! What the encoder sends and how the decoder fills the rest: per-frame parameters, keep
//! policies, colour thumbnail modes and regeneration modes (parsing and display included).

use super::colour::ColourParams;
use super::error::{Error, Result};
use super::schedule::Schedule;

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
