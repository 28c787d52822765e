//! The exact integer multi-stage prior (`int-transformer-v1`, docs/prior.md).
//!
//! Integer kernels in Rust, exact by construction: no float may appear in this module. Encoder
//! and decoder compute the same integers on every CPU, with any thread count (positions of a stage
//! are independent, and each position's result depends only on the set of known tokens in its
//! window, never on evaluation order).
#![deny(clippy::float_arithmetic)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::entropy::quantize_weights;
use super::error::{Error, Result};
use super::prior::{Prior, ProbTables, TokenGrid};
use super::schedule::StagePlan;

/// Prior kind name in bundle manifests.
pub const KIND: &str = "int-transformer-v1";

const MAGIC: &[u8; 4] = b"UGIP";
const RES_LIMIT: i64 = 1 << 24;

#[derive(Debug, Deserialize)]
struct RawTensor {
    name: String,
    dtype: String,
    shape: Vec<usize>,
    offset: usize,
}

#[derive(Debug, Deserialize)]
#[allow(non_snake_case)]
struct RawHeader {
    format: String,
    K: usize,
    d: usize,
    heads: usize,
    layers: usize,
    ffn: usize,
    radius: usize,
    stages: usize,
    ash: u32,
    osh: u32,
    a_out: i64,
    tensors: Vec<RawTensor>,
}

/// One transformer layer's integer parameters.
#[derive(Debug, Clone)]
struct Layer {
    g1: Vec<i64>,
    g2: Vec<i64>,
    /// q, k, v, o projections: weights `[d, d]`, bias, multiplier.
    proj: [Linear; 4],
    ff1: Linear,
    ff2: Linear,
    att_a: Vec<i64>,
    /// `[heads][2R+1][2R+1]`.
    bias: Vec<i64>,
}

#[derive(Debug, Clone)]
struct Linear {
    w: Vec<i8>,
    b: Vec<i32>,
    m: Vec<i64>,
    sh: u32,
    inputs: usize,
}

/// The parameters of an integer prior.
#[derive(Debug, Clone)]
pub struct IntPriorModel {
    pub k: usize,
    pub d: usize,
    pub heads: usize,
    pub layers: usize,
    pub ffn: usize,
    pub radius: usize,
    pub stages: usize,
    ash: u32,
    osh: u32,
    a_out: i64,
    tok: Vec<i16>,
    kstage: Vec<i16>,
    qstage: Vec<i16>,
    layer: Vec<Layer>,
    gf: Vec<i64>,
    out: Linear,
    att_exp: Vec<u32>,
    /// Every `att_exp` entry is below 2^31 (the attention sums then use 32-bit factors).
    att_exp_i32: bool,
    out_exp: Vec<u32>,
}

struct TensorFile<'a> {
    path: &'a Path,
    data: &'a [u8],
    index: HashMap<String, &'a RawTensor>,
}

impl TensorFile<'_> {
    fn err(&self, message: String) -> Error {
        Error::PriorFile {
            path: self.path.to_owned(),
            message,
        }
    }

    fn raw(&self, name: &str, dtype: &str, shape: &[usize], size: usize) -> Result<&[u8]> {
        let t = self
            .index
            .get(name)
            .ok_or_else(|| self.err(format!("tensor '{name}' is missing")))?;
        if t.dtype != dtype {
            return Err(self.err(format!(
                "tensor '{name}' has dtype {}, expected {dtype}",
                t.dtype
            )));
        }
        if t.shape != shape {
            return Err(self.err(format!(
                "tensor '{name}' has shape {:?}, expected {shape:?}",
                t.shape
            )));
        }
        let len = shape.iter().product::<usize>() * size;
        let end = t.offset.checked_add(len).filter(|&e| e <= self.data.len());
        match end {
            Some(end) => Ok(&self.data[t.offset..end]),
            None => Err(self.err(format!("tensor '{name}' lies beyond the end of the file"))),
        }
    }

    fn i8(&self, name: &str, shape: &[usize]) -> Result<Vec<i8>> {
        Ok(self
            .raw(name, "i8", shape, 1)?
            .iter()
            .map(|&b| b as i8)
            .collect())
    }

    fn i16(&self, name: &str, shape: &[usize]) -> Result<Vec<i16>> {
        Ok(self
            .raw(name, "i16", shape, 2)?
            .chunks_exact(2)
            .map(|c| i16::from_le_bytes([c[0], c[1]]))
            .collect())
    }

    fn i32(&self, name: &str, shape: &[usize]) -> Result<Vec<i32>> {
        Ok(self
            .raw(name, "i32", shape, 4)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn u32(&self, name: &str, shape: &[usize]) -> Result<Vec<u32>> {
        Ok(self
            .raw(name, "u32", shape, 4)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }

    fn shape_of(&self, name: &str) -> Result<&[usize]> {
        self.index
            .get(name)
            .map(|t| t.shape.as_slice())
            .ok_or_else(|| self.err(format!("tensor '{name}' is missing")))
    }

    /// Multipliers must stay below 2^16 in magnitude (docs/prior.md bounds).
    fn mult(&self, name: &str, n: usize) -> Result<Vec<i64>> {
        let m = self.i32(name, &[n])?;
        if let Some(bad) = m.iter().find(|v| v.unsigned_abs() >= 1 << 16) {
            return Err(self.err(format!("tensor '{name}' holds {bad}, outside |m| < 2^16")));
        }
        Ok(m.into_iter().map(i64::from).collect())
    }

    fn gain(&self, name: &str, d: usize) -> Result<Vec<i64>> {
        Ok(self.i16(name, &[d])?.into_iter().map(i64::from).collect())
    }
}

impl IntPriorModel {
    /// Parses and validates a `prior.bin` of kind `int-transformer-v1`.
    pub fn load(path: &Path, codebook_size: usize, stages: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &bytes, codebook_size, stages)
    }

    fn parse(path: &Path, bytes: &[u8], codebook_size: usize, stages: usize) -> Result<Self> {
        let err = |message: String| Error::PriorFile {
            path: path.to_owned(),
            message,
        };
        if bytes.len() < 8 || &bytes[..4] != MAGIC {
            return Err(err("not an integer prior (magic 'UGIP' missing)".into()));
        }
        let hlen = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
        if hlen > bytes.len() - 8 {
            return Err(err(format!("header length {hlen} exceeds the file")));
        }
        let header: RawHeader =
            serde_json::from_slice(&bytes[8..8 + hlen]).map_err(|e| err(format!("header: {e}")))?;
        if header.format != KIND {
            return Err(err(format!("format '{}' is not '{KIND}'", header.format)));
        }
        let h = &header;
        if h.K != codebook_size {
            return Err(err(format!(
                "field 'K' is {}, the manifest's codebook_size is {codebook_size}",
                h.K
            )));
        }
        if h.stages != stages {
            return Err(err(format!(
                "field 'stages' is {}, the bundle's schedule has {stages}",
                h.stages
            )));
        }
        let limits = [
            ("d", h.d, 1024),
            ("heads", h.heads, 64),
            ("layers", h.layers, 64),
            ("ffn", h.ffn, 8192),
            ("radius", h.radius, 64),
        ];
        for (name, v, max) in limits {
            if v == 0 || v > max {
                return Err(err(format!("field '{name}' is {v}, outside 1..={max}")));
            }
        }
        if !h.d.is_multiple_of(h.heads) {
            return Err(err(format!(
                "d = {} is not a multiple of heads = {}",
                h.d, h.heads
            )));
        }
        if h.ash >= 48 || h.osh >= 48 {
            return Err(err("shifts 'ash'/'osh' must be < 48".into()));
        }
        if h.a_out.unsigned_abs() >= 1 << 31 {
            return Err(err("field 'a_out' must fit in i32".into()));
        }
        let data = &bytes[8 + hlen..];
        let file = TensorFile {
            path,
            data,
            index: h.tensors.iter().map(|t| (t.name.clone(), t)).collect(),
        };
        let (k, d, ffn, heads) = (h.K, h.d, h.ffn, h.heads);
        let win = 2 * h.radius + 1;
        let linear = |prefix: &str, w: &str, b: &str, m: &str, out: usize, inp: usize, sh: i32| {
            if !(0..48).contains(&sh) {
                return Err(file.err(format!("{prefix}.shifts holds {sh}, outside 0..48")));
            }
            Ok::<Linear, Error>(Linear {
                w: file.i8(&format!("{prefix}.{w}"), &[out, inp])?,
                b: file.i32(&format!("{prefix}.{b}"), &[out])?,
                m: file.mult(&format!("{prefix}.{m}"), out)?,
                sh: sh as u32,
                inputs: inp,
            })
        };
        let mut layer = Vec::with_capacity(h.layers);
        for l in 0..h.layers {
            let p = format!("l{l}");
            let shifts = file.i32(&format!("{p}.shifts"), &[6])?;
            let proj = [
                linear(&p, "wq", "bq", "mq", d, d, shifts[0])?,
                linear(&p, "wk", "bk", "mk", d, d, shifts[1])?,
                linear(&p, "wv", "bv", "mv", d, d, shifts[2])?,
                linear(&p, "wo", "bo", "mo", d, d, shifts[3])?,
            ];
            let att_a: Vec<i64> = file
                .i32(&format!("{p}.att_a"), &[heads])?
                .into_iter()
                .map(i64::from)
                .collect();
            if att_a.iter().any(|&a| a < 0) {
                return Err(file.err(format!("{p}.att_a must be >= 0")));
            }
            layer.push(Layer {
                g1: file.gain(&format!("{p}.g1"), d)?,
                g2: file.gain(&format!("{p}.g2"), d)?,
                proj,
                ff1: linear(&p, "w1", "b1", "m1", ffn, d, shifts[4])?,
                ff2: linear(&p, "w2", "b2", "m2", d, ffn, shifts[5])?,
                att_a,
                bias: file
                    .i32(&format!("{p}.bias"), &[heads, win, win])?
                    .into_iter()
                    .map(i64::from)
                    .collect(),
            });
        }
        let att_exp = file.u32(
            "att_exp",
            &[file.shape_of("att_exp")?.first().copied().unwrap_or(0)],
        )?;
        let out_exp = file.u32(
            "out_exp",
            &[file.shape_of("out_exp")?.first().copied().unwrap_or(0)],
        )?;
        if att_exp.first().is_none_or(|&v| v == 0) || out_exp.first().is_none_or(|&v| v == 0) {
            return Err(err(
                "att_exp/out_exp must be non-empty with a non-zero first entry".into(),
            ));
        }
        if h.a_out < 0 {
            return Err(err("field 'a_out' must be >= 0".into()));
        }
        Ok(Self {
            k,
            d,
            heads,
            layers: h.layers,
            ffn,
            radius: h.radius,
            stages: h.stages,
            ash: h.ash,
            osh: h.osh,
            a_out: h.a_out,
            tok: file.i16("tok", &[k, d])?,
            kstage: file.i16("kstage", &[stages, d])?,
            qstage: file.i16("qstage", &[stages, d])?,
            layer,
            gf: file.gain("gf", d)?,
            out: Linear {
                w: file.i8("wout", &[k, d])?,
                b: file.i32("bout", &[k])?,
                m: Vec::new(),
                sh: 0,
                inputs: d,
            },
            att_exp_i32: att_exp.iter().all(|&w| w <= i32::MAX as u32),
            att_exp,
            out_exp,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Integer primitives (docs/prior.md, "Integer primitives").

#[inline]
fn rshift(v: i64, s: u32) -> i64 {
    if s == 0 {
        v
    } else {
        (v + (1i64 << (s - 1))) >> s
    }
}

/// `floor((2a + b) / (2b))` for `b > 0`.
#[inline]
fn rdiv(a: i64, b: i64) -> i64 {
    (2 * a + b).div_euclid(2 * b)
}

#[inline]
fn clamp8(v: i64) -> i8 {
    v.clamp(-127, 127) as i8
}

fn norm(x: &[i64], g: &[i64], out: &mut [i8]) {
    let d = x.len() as i64;
    let ms = x.iter().map(|&v| v * v).sum::<i64>() / d;
    let r = (ms as u64).isqrt().max(1) as i64;
    for ((o, &xi), &gi) in out.iter_mut().zip(x).zip(g) {
        *o = clamp8(rdiv(xi * gi, r));
    }
}

/// An `i8` dot product with `i32` sum (exact: any evaluation order gives the same integer).
trait Dot {
    fn dot(a: &[i8], b: &[i8]) -> i32;
}

/// Plain Rust, vectorised by the compiler for the target features of the caller.
struct PlainDot;

impl Dot for PlainDot {
    #[inline(always)]
    fn dot(a: &[i8], b: &[i8]) -> i32 {
        dot8(a, b)
    }
}

/// AVX2 `vpmaddwd` on sign-extended 16-bit lanes (only used inside the AVX2 variants).
#[cfg(target_arch = "x86_64")]
struct Avx2Dot;

#[cfg(target_arch = "x86_64")]
impl Dot for Avx2Dot {
    #[inline(always)]
    fn dot(a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: Avx2Dot is only used by the AVX2 variants, chosen when the CPU has AVX2.
        unsafe { simd::dot8_avx2(a, b) }
    }
}

/// `dot8` of one attention head, with the common head widths unrolled at compile time.
#[inline(always)]
fn dot8_head<D: Dot>(a: &[i8], b: &[i8]) -> i32 {
    match a.len() {
        16 => D::dot(&a[..16], &b[..16]),
        24 => D::dot(&a[..24], &b[..24]),
        32 => D::dot(&a[..32], &b[..32]),
        _ => D::dot(a, b),
    }
}

#[inline(always)]
fn dot8(a: &[i8], b: &[i8]) -> i32 {
    // |sum| <= len * 127 * 127 fits i32 for len <= 2^17.
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// `out[o] = dot8(w[o], n)` for every row `o` of `w` (`inputs` columns).
#[inline(always)]
fn matvec_body<D: Dot>(w: &[i8], inputs: usize, n: &[i8], out: &mut [i32]) {
    for (o, y) in out.iter_mut().enumerate() {
        *y = D::dot(&w[o * inputs..(o + 1) * inputs], n);
    }
}

/// The same code compiled for wider vector units, chosen at run time. Integer sums are exact
/// in any order, so every variant gives the same results bit for bit (the prior stays exact
/// across machines; tests/intprior.rs checks against the Python reference).
mod simd {
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn matvec_avx2(w: &[i8], inputs: usize, n: &[i8], out: &mut [i32]) {
        use std::arch::x86_64::*;
        // Inputs up to 256 (the prior's d and ffn): a 512-byte buffer set up per call; wider
        // inputs take the row-by-row path.
        const MAX_CHUNKS: usize = 16;
        let chunks = inputs / 16;
        if !inputs.is_multiple_of(16)
            || chunks > MAX_CHUNKS
            || n.len() < inputs
            || w.len() < out.len() * inputs
        {
            return super::matvec_body::<super::Avx2Dot>(w, inputs, n, out);
        }
        // `n` widened to i16 once, then four rows at a time share it: each row's 16-wide
        // `vpmaddwd` partial sums, reduced together with three horizontal adds.
        let mut nv = [_mm256_setzero_si256(); MAX_CHUNKS];
        for (c, v) in nv.iter_mut().enumerate().take(chunks) {
            // SAFETY: 16 * (c + 1) <= inputs <= n.len().
            *v = _mm256_cvtepi8_epi16(_mm_loadu_si128(n.as_ptr().add(16 * c) as *const __m128i));
        }
        let rows = out.len();
        let wp = w.as_ptr();
        let mut o = 0;
        while o + 4 <= rows {
            let mut acc = [_mm256_setzero_si256(); 4];
            for (c, x) in nv.iter().enumerate().take(chunks) {
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: (o + r) * inputs + 16 * (c + 1) <= rows * inputs <= w.len().
                    let row = wp.add((o + r) * inputs + 16 * c) as *const __m128i;
                    *a = _mm256_add_epi32(
                        *a,
                        _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm_loadu_si128(row)), *x),
                    );
                }
            }
            let s01 = _mm256_hadd_epi32(acc[0], acc[1]);
            let s23 = _mm256_hadd_epi32(acc[2], acc[3]);
            let s = _mm256_hadd_epi32(s01, s23);
            let sum = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
            // SAFETY: o + 4 <= out.len().
            _mm_storeu_si128(out.as_mut_ptr().add(o) as *mut __m128i, sum);
            o += 4;
        }
        for r in o..rows {
            out[r] = dot8_avx2(&w[r * inputs..(r + 1) * inputs], n);
        }
    }

    /// `sum a_i b_i` over `min(len)` entries: 16 products per `vpmaddwd` step (pairs of i8 x i8
    /// products summed into i32 lanes, exact), then an 8-wide step, then scalar.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(super) unsafe fn dot8_avx2(a: &[i8], b: &[i8]) -> i32 {
        use std::arch::x86_64::*;
        let n = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut i = 0;
        let mut acc = _mm256_setzero_si256();
        while i + 16 <= n {
            // SAFETY: i + 16 <= n, both slices hold n bytes; unaligned loads.
            let va = _mm256_cvtepi8_epi16(_mm_loadu_si128(pa.add(i) as *const __m128i));
            let vb = _mm256_cvtepi8_epi16(_mm_loadu_si128(pb.add(i) as *const __m128i));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(va, vb));
            i += 16;
        }
        let mut acc = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        if i + 8 <= n {
            // SAFETY: i + 8 <= n; an 8-byte load.
            let va = _mm_cvtepi8_epi16(_mm_loadl_epi64(pa.add(i) as *const __m128i));
            let vb = _mm_cvtepi8_epi16(_mm_loadl_epi64(pb.add(i) as *const __m128i));
            acc = _mm_add_epi32(acc, _mm_madd_epi16(va, vb));
            i += 8;
        }
        let acc = _mm_add_epi32(acc, _mm_shuffle_epi32::<0b01_00_11_10>(acc));
        let acc = _mm_add_epi32(acc, _mm_shuffle_epi32::<0b10_11_00_01>(acc));
        let mut total = _mm_cvtsi128_si32(acc);
        while i < n {
            total += a[i] as i32 * b[i] as i32;
            i += 1;
        }
        total
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    pub(super) unsafe fn matvec_avx512(w: &[i8], inputs: usize, n: &[i8], out: &mut [i32]) {
        super::matvec_body::<super::PlainDot>(w, inputs, n, out)
    }

    /// Which variant this CPU runs (detected once).
    #[derive(Clone, Copy, PartialEq, Eq)]
    pub(super) enum Level {
        Base,
        #[cfg(target_arch = "x86_64")]
        Avx2,
        #[cfg(target_arch = "x86_64")]
        Avx512,
    }

    pub(super) fn level() -> Level {
        use std::sync::OnceLock;
        static LEVEL: OnceLock<Level> = OnceLock::new();
        *LEVEL.get_or_init(|| {
            if std::env::var_os("UIGC_PRIOR_NO_SIMD").is_some() {
                return Level::Base;
            }
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vnni")
                {
                    return Level::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    return Level::Avx2;
                }
            }
            Level::Base
        })
    }
}

#[inline]
fn matvec(w: &[i8], inputs: usize, n: &[i8], out: &mut [i32]) {
    debug_assert!(w.len() >= out.len() * inputs && n.len() == inputs);
    match simd::level() {
        // SAFETY: the level is only chosen when the CPU has these features.
        #[cfg(target_arch = "x86_64")]
        simd::Level::Avx512 => unsafe { simd::matvec_avx512(w, inputs, n, out) },
        #[cfg(target_arch = "x86_64")]
        simd::Level::Avx2 => unsafe { simd::matvec_avx2(w, inputs, n, out) },
        simd::Level::Base => matvec_body::<PlainDot>(w, inputs, n, out),
    }
}

/// Largest layer output kept on the stack (larger ones, e.g. a big codebook, use the heap).
const STACK_OUTPUTS: usize = 512;

impl Linear {
    /// `b[o] + w[o] . n` for every output, handed to `f(o, acc)`.
    #[inline]
    fn each_acc(&self, n: &[i8], outputs: usize, mut f: impl FnMut(usize, i64)) {
        let mut stack = [0i32; STACK_OUTPUTS];
        let mut heap = Vec::new();
        let acc = if outputs <= STACK_OUTPUTS {
            &mut stack[..outputs]
        } else {
            heap.resize(outputs, 0);
            &mut heap[..]
        };
        matvec(&self.w, self.inputs, n, acc);
        for (o, &a) in acc.iter().enumerate() {
            f(o, self.b[o] as i64 + a as i64);
        }
    }

    fn lin8(&self, n: &[i8], out: &mut [i8]) {
        let len = out.len();
        self.each_acc(n, len, |o, acc| {
            out[o] = clamp8(rshift(acc * self.m[o], self.sh));
        });
    }

    fn lin8relu(&self, n: &[i8], out: &mut [i8]) {
        let len = out.len();
        self.each_acc(n, len, |o, acc| {
            out[o] = rshift(acc * self.m[o], self.sh).clamp(0, 127) as i8;
        });
    }

    fn resadd(&self, n: &[i8], x: &mut [i64]) {
        let len = x.len();
        self.each_acc(n, len, |o, acc| {
            x[o] = (x[o] + rshift(acc * self.m[o], self.sh)).clamp(-RES_LIMIT, RES_LIMIT);
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Per-frame state: the known-token key/value cache.

struct Cache {
    rows: usize,
    cols: usize,
    /// `[layer][position][d]`.
    k: Vec<i8>,
    v: Vec<i8>,
    /// Stage of every position.
    stage_of: Vec<u8>,
    /// Positions whose token is known (decoded, sent or fixed by regeneration) and cached.
    known: Vec<bool>,
    /// Known passes are done for stages `< known_through`.
    known_through: usize,
}

/// Scratch buffers of one worker.
struct Scratch {
    n: Vec<i8>,
    q: Vec<i8>,
    o: Vec<i8>,
    h: Vec<i8>,
    scores: Vec<(i64, usize)>,
    /// The allowed keys of the current window: position, relative-bias offset.
    keys: Vec<(usize, usize)>,
    acc: Vec<i64>,
}

impl Scratch {
    fn new(m: &IntPriorModel) -> Self {
        Self {
            n: vec![0; m.d],
            q: vec![0; m.d],
            o: vec![0; m.d],
            h: vec![0; m.ffn],
            scores: Vec::with_capacity((2 * m.radius + 1).pow(2)),
            keys: Vec::with_capacity((2 * m.radius + 1).pow(2)),
            acc: vec![0; m.d / m.heads],
        }
    }
}

impl IntPriorModel {
    fn input(&self, x: &mut [i64], known: Option<(usize, usize)>, stage: usize) {
        let d = self.d;
        match known {
            Some((token, st)) => {
                for (c, xc) in x.iter_mut().enumerate() {
                    *xc = self.tok[token * d + c] as i64 + self.kstage[st * d + c] as i64;
                }
            }
            None => {
                for (c, xc) in x.iter_mut().enumerate() {
                    *xc = self.qstage[stage * d + c] as i64;
                }
            }
        }
    }

    /// Attention of the query vector in `s.q` at `pos` over the cached keys/values of layer `l`
    /// whose stage satisfies `allowed`; result in `s.o`.
    fn attend(&self, l: usize, cache: &CacheView, pos: usize, max_stage: usize, s: &mut Scratch) {
        match simd::level() {
            // SAFETY: the level is only chosen when the CPU has these features.
            #[cfg(target_arch = "x86_64")]
            simd::Level::Avx512 => unsafe { attend_avx512(self, l, cache, pos, max_stage, s) },
            #[cfg(target_arch = "x86_64")]
            simd::Level::Avx2 => unsafe { attend_avx2(self, l, cache, pos, max_stage, s) },
            simd::Level::Base => self.attend_body::<PlainDot>(l, cache, pos, max_stage, s),
        }
    }

    #[inline(always)]
    fn attend_body<D: Dot>(
        &self,
        l: usize,
        cache: &CacheView,
        pos: usize,
        max_stage: usize,
        s: &mut Scratch,
    ) {
        let (d, heads, r) = (self.d, self.heads, self.radius as isize);
        let dh = d / heads;
        let win = 2 * self.radius + 1;
        let layer = &self.layer[l];
        let (pr, pc) = ((pos / cache.cols) as isize, (pos % cache.cols) as isize);
        let base = l * cache.n * d;
        // The allowed keys of the window, in row-major window order (the same for every head):
        // each key's position and the offset of its relative bias within a head's table.
        s.keys.clear();
        for dr in -r..=r {
            let rr = pr + dr;
            if rr < 0 || rr >= cache.rows as isize {
                continue;
            }
            for dc in -r..=r {
                let cc = pc + dc;
                if cc < 0 || cc >= cache.cols as isize {
                    continue;
                }
                let j = rr as usize * cache.cols + cc as usize;
                if !cache.known[j] || cache.stage_of[j] as usize > max_stage {
                    continue;
                }
                s.keys
                    .push((j, (dr + r) as usize * win + (dc + r) as usize));
            }
        }
        if s.keys.is_empty() {
            s.o.fill(0);
            return;
        }
        for h in 0..heads {
            let qh = &s.q[h * dh..(h + 1) * dh];
            let bias = &layer.bias[h * win * win..(h + 1) * win * win];
            s.scores.clear();
            for &(j, b) in &s.keys {
                let kj = &cache.k[base + j * d + h * dh..base + j * d + (h + 1) * dh];
                s.scores.push((dot8_head::<D>(qh, kj) as i64 + bias[b], j));
            }
            let out = &mut s.o[h * dh..(h + 1) * dh];
            let max = s
                .scores
                .iter()
                .map(|&(v, _)| v)
                .max()
                .expect("keys not empty");
            let a = layer.att_a[h];
            s.acc.fill(0);
            let mut wsum = 0i64;
            for &(score, j) in &s.scores {
                let t = rshift((max - score) * a, self.ash);
                let w = match usize::try_from(t).ok().and_then(|t| self.att_exp.get(t)) {
                    Some(&w) if w > 0 => w,
                    _ => continue,
                };
                wsum += w as i64;
                let vj = &cache.v[base + j * d + h * dh..base + j * d + (h + 1) * dh];
                if self.att_exp_i32 {
                    // w < 2^31: a signed 32 x 32 -> 64-bit product per lane (vpmuldq).
                    let w = w as i32 as i64;
                    for (acc, &v) in s.acc.iter_mut().zip(vj) {
                        *acc += w * (v as i32 as i64);
                    }
                } else {
                    let w = w as i64;
                    for (acc, &v) in s.acc.iter_mut().zip(vj) {
                        *acc += w * v as i64;
                    }
                }
            }
            for (o, &acc) in out.iter_mut().zip(&s.acc) {
                *o = clamp8(rdiv(acc, wsum));
            }
        }
    }

    /// Residual + MLP after attention.
    fn finish_layer(&self, l: usize, x: &mut [i64], s: &mut Scratch) {
        let layer = &self.layer[l];
        layer.proj[3].resadd(&s.o, x);
        norm(x, &layer.g2, &mut s.n);
        layer.ff1.lin8relu(&s.n, &mut s.h);
        layer.ff2.resadd(&s.h, x);
    }

    /// Probability table of a query whose final residual is `x`.
    fn table(&self, x: &[i64], s: &mut Scratch, weights: &mut Vec<u32>, out: &mut Vec<u32>) {
        norm(x, &self.gf, &mut s.n);
        let mut logits = vec![0i64; self.k];
        self.out.each_acc(&s.n, self.k, |o, acc| logits[o] = acc);
        let max = logits.iter().copied().max().unwrap_or(0);
        weights.clear();
        weights.extend(logits.iter().map(|&z| {
            let t = rshift((max - z) * self.a_out, self.osh);
            usize::try_from(t)
                .ok()
                .and_then(|t| self.out_exp.get(t))
                .copied()
                .unwrap_or(0)
        }));
        quantize_weights(weights, out);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn attend_avx2(
    m: &IntPriorModel,
    l: usize,
    cache: &CacheView,
    pos: usize,
    max_stage: usize,
    s: &mut Scratch,
) {
    m.attend_body::<Avx2Dot>(l, cache, pos, max_stage, s)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn attend_avx512(
    m: &IntPriorModel,
    l: usize,
    cache: &CacheView,
    pos: usize,
    max_stage: usize,
    s: &mut Scratch,
) {
    m.attend_body::<PlainDot>(l, cache, pos, max_stage, s)
}

/// Read-only view of the cache geometry shared by workers.
struct CacheView<'a> {
    k: &'a [i8],
    v: &'a [i8],
    rows: usize,
    cols: usize,
    n: usize,
    stage_of: &'a [u8],
    known: &'a [bool],
}

/// Splits `items` into at most `threads` contiguous chunks and runs `f` on each in parallel;
/// results come back in order.
fn parallel_chunks<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    f: impl Fn(&[T]) -> R + Sync,
) -> Vec<R> {
    let threads = threads.max(1).min(items.len().max(1));
    if threads == 1 {
        return vec![f(items)];
    }
    let chunk = items.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|c| {
                let f = &f;
                scope.spawn(move || f(c))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("prior worker panicked"))
            .collect()
    })
}

/// The integer prior with its per-frame cache.
pub struct IntPrior {
    model: Arc<IntPriorModel>,
    threads: usize,
    cache: Option<Cache>,
}

impl IntPrior {
    pub fn new(model: Arc<IntPriorModel>, threads: usize) -> Self {
        Self {
            model,
            threads: threads.max(1),
            cache: None,
        }
    }

    pub fn load(path: &Path, codebook_size: usize, stages: usize, threads: usize) -> Result<Self> {
        Ok(Self::new(
            Arc::new(IntPriorModel::load(path, codebook_size, stages)?),
            threads,
        ))
    }

    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
    }

    /// Runs the known pass of `positions` (all of stage `j`, or some of them during iterative
    /// regeneration): marks them known and caches their k/v of every layer. Each attends to the
    /// known tokens of stages `<= j` in its window (docs/prior.md).
    fn known_pass(&mut self, grid: &TokenGrid, positions: &[u32], j: usize) {
        let m = &*self.model;
        let cache = self.cache.as_mut().expect("cache");
        for &p in positions {
            cache.known[p as usize] = true;
        }
        let (d, layers) = (m.d, m.layers);
        let n = cache.rows * cache.cols;
        let mut xs: Vec<Vec<i64>> = positions
            .iter()
            .map(|&p| {
                let mut x = vec![0i64; d];
                m.input(&mut x, Some((grid.tokens[p as usize] as usize, j)), j);
                x
            })
            .collect();
        let idx: Vec<usize> = (0..positions.len()).collect();
        for l in 0..layers {
            let last = l + 1 == layers;
            // 1. q, k, v of every position of the stage (q only where attention follows).
            let qkv: Vec<Vec<[Vec<i8>; 3]>> = parallel_chunks(&idx, self.threads, |chunk| {
                let mut s = Scratch::new(m);
                let proj = &m.layer[l].proj;
                chunk
                    .iter()
                    .map(|&i| {
                        norm(&xs[i], &m.layer[l].g1, &mut s.n);
                        let mut out = [vec![0i8; d], vec![0i8; d], Vec::new()];
                        proj[1].lin8(&s.n, &mut out[0]);
                        proj[2].lin8(&s.n, &mut out[1]);
                        if !last {
                            out[2] = vec![0i8; d];
                            proj[0].lin8(&s.n, &mut out[2]);
                        }
                        out
                    })
                    .collect()
            });
            let mut queries = Vec::with_capacity(positions.len());
            for (i, [k, v, q]) in qkv.into_iter().flatten().enumerate() {
                let at = (l * n + positions[i] as usize) * d;
                cache.k[at..at + d].copy_from_slice(&k);
                cache.v[at..at + d].copy_from_slice(&v);
                queries.push(q);
            }
            if last {
                break;
            }
            // 2. attention over stages <= j (the stage itself included), residual, MLP.
            let view = CacheView {
                k: &cache.k,
                v: &cache.v,
                rows: cache.rows,
                cols: cache.cols,
                n,
                stage_of: &cache.stage_of,
                known: &cache.known,
            };
            let new_x: Vec<Vec<Vec<i64>>> = parallel_chunks(&idx, self.threads, |chunk| {
                let mut s = Scratch::new(m);
                chunk
                    .iter()
                    .map(|&i| {
                        let mut x = xs[i].clone();
                        s.q.copy_from_slice(&queries[i]);
                        let p = positions[i] as usize;
                        m.attend(l, &view, p, j, &mut s);
                        m.finish_layer(l, &mut x, &mut s);
                        x
                    })
                    .collect()
            });
            xs = new_x.into_iter().flatten().collect();
        }
    }

    /// Query pass of stage `s`: one table per position.
    fn query_pass(&self, positions: &[u32], stage: usize) -> Vec<u32> {
        let m = &*self.model;
        let cache = self.cache.as_ref().expect("cache");
        let view = CacheView {
            k: &cache.k,
            v: &cache.v,
            rows: cache.rows,
            cols: cache.cols,
            n: cache.rows * cache.cols,
            stage_of: &cache.stage_of,
            known: &cache.known,
        };
        let parts = parallel_chunks(positions, self.threads, |chunk| {
            let mut s = Scratch::new(m);
            let mut x = vec![0i64; m.d];
            let mut weights = Vec::with_capacity(m.k);
            let mut table = Vec::with_capacity(m.k);
            let mut out = Vec::with_capacity(chunk.len() * m.k);
            for &p in chunk {
                m.input(&mut x, None, stage);
                for l in 0..m.layers {
                    norm(&x, &m.layer[l].g1, &mut s.n);
                    m.layer[l].proj[0].lin8(&s.n, &mut s.q);
                    m.attend(l, &view, p as usize, stage, &mut s);
                    m.finish_layer(l, &mut x, &mut s);
                }
                m.table(&x, &mut s, &mut weights, &mut table);
                out.extend_from_slice(&table);
            }
            out
        });
        parts.concat()
    }
}

impl Prior for IntPrior {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn codebook_size(&self) -> usize {
        self.model.k
    }

    fn reset(&mut self) {
        if let Some(c) = self.cache.as_mut() {
            c.known_through = 0;
            c.known.fill(false);
        }
    }

    fn partial_tables(
        &mut self,
        grid: &TokenGrid,
        plan: &StagePlan,
        stage: usize,
        fixed: &[u32],
        queries: &[u32],
    ) -> Result<ProbTables> {
        self.prepare(grid, plan, stage)?;
        self.known_pass(grid, fixed, stage);
        Ok(ProbTables::per_position(
            self.model.k,
            self.query_pass(queries, stage),
        ))
    }

    fn stage_tables(
        &mut self,
        grid: &TokenGrid,
        plan: &StagePlan,
        stage: usize,
    ) -> Result<ProbTables> {
        self.prepare(grid, plan, stage)?;
        let k = self.model.k;
        Ok(ProbTables::per_position(
            k,
            self.query_pass(&plan.stages[stage], stage),
        ))
    }
}

impl IntPrior {
    /// Brings the cache to "stages `< stage` known, nothing of `stage` known".
    fn prepare(&mut self, grid: &TokenGrid, plan: &StagePlan, stage: usize) -> Result<()> {
        let m = &*self.model;
        if plan.num_stages() != m.stages || stage >= m.stages {
            return Err(Error::InvalidArgument(format!(
                "stage {stage} of a {}-stage plan, the prior has {} stages",
                plan.num_stages(),
                m.stages
            )));
        }
        let fresh = match &self.cache {
            Some(c) => c.rows != plan.rows || c.cols != plan.cols || c.known_through > stage,
            None => true,
        };
        if fresh {
            let n = plan.rows * plan.cols;
            self.cache = Some(Cache {
                rows: plan.rows,
                cols: plan.cols,
                k: vec![0; m.layers * n * m.d],
                v: vec![0; m.layers * n * m.d],
                stage_of: plan.stage_of.clone(),
                known: vec![false; n],
                known_through: 0,
            });
        }
        // Forget positions of `stage` fixed by an earlier partial pass.
        let cache = self.cache.as_mut().expect("cache");
        for &p in &plan.stages[stage] {
            cache.known[p as usize] = false;
        }
        while self.cache.as_ref().expect("cache").known_through < stage {
            let j = self.cache.as_ref().expect("cache").known_through;
            self.known_pass(grid, &plan.stages[j], j);
            self.cache.as_mut().expect("cache").known_through = j + 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(len: usize, seed: u32) -> Vec<i8> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(7);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                // The extremes included: -128 and 127 are where a narrower sum would overflow.
                match s % 16 {
                    0 => -128,
                    1 => 127,
                    _ => (s >> 8) as i8,
                }
            })
            .collect()
    }

    /// Every code path of the dot products and matrix-vector products gives the plain sums, for
    /// lengths on and off the vector widths and row counts on and off the 4-row blocks.
    #[test]
    fn simd_dot_products_equal_the_plain_sums() {
        for inputs in [1usize, 7, 8, 15, 16, 24, 31, 32, 96, 192, 1024, 1040] {
            for rows in [1usize, 3, 4, 5, 8, 13] {
                let w = pseudo_random(rows * inputs, (inputs * 31 + rows) as u32);
                let n = pseudo_random(inputs, inputs as u32);
                let plain: Vec<i32> = (0..rows)
                    .map(|o| {
                        w[o * inputs..(o + 1) * inputs]
                            .iter()
                            .zip(&n)
                            .map(|(&a, &b)| a as i32 * b as i32)
                            .sum()
                    })
                    .collect();
                let mut out = vec![0i32; rows];
                matvec(&w, inputs, &n, &mut out);
                assert_eq!(out, plain, "matvec, {rows} x {inputs}");
                let mut body = vec![0i32; rows];
                matvec_body::<PlainDot>(&w, inputs, &n, &mut body);
                assert_eq!(body, plain, "plain body, {rows} x {inputs}");
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    let mut v = vec![0i32; rows];
                    // SAFETY: AVX2 is present.
                    unsafe { simd::matvec_avx2(&w, inputs, &n, &mut v) };
                    assert_eq!(v, plain, "avx2 matvec, {rows} x {inputs}");
                    for (o, &p) in plain.iter().enumerate() {
                        let row = &w[o * inputs..(o + 1) * inputs];
                        // SAFETY: AVX2 is present.
                        assert_eq!(unsafe { simd::dot8_avx2(row, &n) }, p);
                        assert_eq!(dot8_head::<Avx2Dot>(row, &n), p);
                    }
                }
            }
        }
    }
}
