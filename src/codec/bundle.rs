//! Model bundles: a directory with `manifest.toml`, two ONNX tokenizer graphs and a prior file.
//! See docs/bundle.md for the contract. Loading checks every field and every hash and names the
//! file and the field that is wrong.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::bitstream::ModelId;
use super::error::{Error, Result};
use super::schedule::{Schedule, SCHEDULE_KIND_INTERLEAVE};

/// Name of the manifest inside a bundle directory.
pub const MANIFEST: &str = "manifest.toml";
/// The manifest format this build reads.
pub const FORMAT_VERSION: u32 = 1;
/// Largest codebook the codec accepts (token indices are stored as u16).
pub const MAX_CODEBOOK: usize = 1 << 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrior {
    kind: String,
    path: String,
    sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPixels {
    mean: [f32; 3],
    std: [f32; 3],
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSchedule {
    kind: String,
    levels: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: String,
    format_version: u32,
    name: String,
    version: String,
    codebook_size: usize,
    downsample: u32,
    pixels: RawPixels,
    schedule: RawSchedule,
    tokenizer_encoder: RawFile,
    tokenizer_decoder: RawFile,
    /// Optional: the decoder with given normalisation statistics (tiled rendering).
    tokenizer_decoder_tile: Option<RawFile>,
    /// Optional: a cheaper encoder choosing tokens of the same codebook (distilled).
    tokenizer_encoder_fast: Option<RawFile>,
    /// Optional: the decoder re-expressed and quantised for CPUs.
    tokenizer_decoder_fast: Option<RawFile>,
    /// Optional: the tile graph, re-expressed and quantised the same way.
    tokenizer_decoder_tile_fast: Option<RawFile>,
    /// Optional: a decoder of the same tokens without the 8-pixel grid.
    tokenizer_decoder_smooth: Option<RawFile>,
    /// Optional: its tile graph (needed with it when there is a tile graph).
    tokenizer_decoder_tile_smooth: Option<RawFile>,
    /// Optional (both or neither): the f=8 tokenizer of dense packets.
    tokenizer_encoder_dense: Option<RawFile>,
    tokenizer_decoder_dense: Option<RawFile>,
    prior: RawPrior,
    /// Optional, only with the dense graphs: the prior of their dense packets.
    prior_dense: Option<RawPrior>,
}

/// A file of the bundle, checked against its hash.
#[derive(Debug, Clone)]
pub struct BundleFile {
    pub path: PathBuf,
    pub sha256: String,
}

/// A loaded and verified model bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub name: String,
    pub version: String,
    pub codebook_size: usize,
    pub downsample: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub schedule: Schedule,
    pub tokenizer_encoder: BundleFile,
    pub tokenizer_decoder: BundleFile,
    /// The tile graph (docs/bundle.md "Tile graph"), when the bundle has one. Not part of the
    /// model id: it renders the same tokens, only faster.
    pub tokenizer_decoder_tile: Option<BundleFile>,
    /// The fast encoder (docs/bundle.md "Fast encoder"), when the bundle has one. Not part of
    /// the model id: its tokens index the same codebook and are coded by the same prior, so
    /// its packets decode with the same decoder; only the sender chooses it.
    pub tokenizer_encoder_fast: Option<BundleFile>,
    /// The fast decoder (docs/bundle.md "Fast decoder"): `tokenizer_decoder` in sub-pixel form
    /// with int8 convolutions, for CPUs. Not part of the model id: it renders the same tokens
    /// (to about 43 dB of the decoder's pictures); only the receiver chooses it.
    pub tokenizer_decoder_fast: Option<BundleFile>,
    /// The tile graph in the fast decoder's form (used with it when both are there).
    pub tokenizer_decoder_tile_fast: Option<BundleFile>,
    /// The smooth decoder (docs/bundle.md "Smooth decoder"): another decoder of the same tokens,
    /// with bilinear upsampling and trained against the 8-pixel grid. Not part of the model id:
    /// only the receiver chooses it.
    pub tokenizer_decoder_smooth: Option<BundleFile>,
    /// The smooth decoder's tile graph (used with it when both are there).
    pub tokenizer_decoder_tile_smooth: Option<BundleFile>,
    /// The dense tokenizer (docs/bundle.md "Dense graphs"): an encoder and a decoder at one
    /// token per 8x8 pixels over the same codebook, which code and render dense packets directly
    /// (without them a dense packet is the 16x16 tokenizer's grid of the frame upsampled 2x, its
    /// picture halved). They are not part of the model id, which normal packets and dense
    /// packets of the 2x path carry; dense packets of the dense graphs carry
    /// [`Self::dense_model_id`].
    pub dense: Option<(BundleFile, BundleFile)>,
    /// The id that dense packets made by the dense graphs carry (docs/bundle.md "Model id"),
    /// when the bundle has them.
    pub dense_model_id: Option<ModelId>,
    pub prior_kind: String,
    pub prior: BundleFile,
    /// The prior of the dense graphs' packets (docs/bundle.md "Dense prior"): kind and file,
    /// when the bundle has one; without it dense packets are coded with [`Self::prior`]. Part
    /// of [`Self::dense_model_id`], not of the model id.
    pub prior_dense: Option<(String, BundleFile)>,
    pub model_id: ModelId,
}

/// SHA-256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    Ok(hex(&Sha256::digest(&bytes)))
}

/// The dotted key (`table.key`) of the manifest line holding byte `offset`.
fn field_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim());
    match table {
        Some(t) if !key.is_empty() && !line.trim_start().starts_with('[') => format!("{t}.{key}"),
        _ => key.to_owned(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Bundle {
    /// Loads the bundle in `dir` and verifies it.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path).map_err(|source| Error::Io {
            path: manifest_path.clone(),
            source,
        })?;
        let bad = |field: &str, message: String| Error::Manifest {
            path: manifest_path.clone(),
            field: field.to_owned(),
            message,
        };
        let raw: RawManifest = toml::from_str(&text).map_err(|e| {
            let field = e
                .span()
                .map(|s| field_at(&text, s.start))
                .unwrap_or_default();
            bad(&field, e.message().to_owned())
        })?;
        if raw.format != "uigc-bundle" {
            return Err(bad(
                "format",
                format!("'{}' is not \"uigc-bundle\"", raw.format),
            ));
        }
        if raw.format_version != FORMAT_VERSION {
            return Err(bad(
                "format_version",
                format!(
                    "{} is not supported (this build reads {FORMAT_VERSION})",
                    raw.format_version
                ),
            ));
        }
        if !(2..=MAX_CODEBOOK).contains(&raw.codebook_size) {
            return Err(bad(
                "codebook_size",
                format!("{} is outside 2..={MAX_CODEBOOK}", raw.codebook_size),
            ));
        }
        if raw.downsample != 16 {
            return Err(bad(
                "downsample",
                format!("{} is not supported (only 16)", raw.downsample),
            ));
        }
        for (i, (&m, &s)) in raw.pixels.mean.iter().zip(&raw.pixels.std).enumerate() {
            if !m.is_finite() {
                return Err(bad("pixels.mean", format!("entry {i} is not finite")));
            }
            if !(s.is_finite() && s > 0.0) {
                return Err(bad(
                    "pixels.std",
                    format!("entry {i} must be finite and > 0"),
                ));
            }
        }
        if raw.schedule.kind != SCHEDULE_KIND_INTERLEAVE {
            return Err(bad(
                "schedule.kind",
                format!(
                    "'{}' is unknown (supported: \"{SCHEDULE_KIND_INTERLEAVE}\")",
                    raw.schedule.kind
                ),
            ));
        }
        let schedule = Schedule::new(raw.schedule.levels).ok_or_else(|| {
            bad(
                "schedule.levels",
                format!("{} is outside 1..=6", raw.schedule.levels),
            )
        })?;

        let check_prior_kind = |table: &str, kind: &str| {
            if super::prior::KNOWN_KINDS.contains(&kind) {
                return Ok(());
            }
            Err(bad(
                &format!("{table}.kind"),
                format!(
                    "'{kind}' is not supported by this build (known: {})",
                    super::prior::KNOWN_KINDS.join(", ")
                ),
            ))
        };
        check_prior_kind("prior", &raw.prior.kind)?;

        let check_file = |field: &str, path: &str, sha: &str| -> Result<BundleFile> {
            let rel = Path::new(path);
            if path.is_empty()
                || rel.is_absolute()
                || rel.components().any(|c| !matches!(c, Component::Normal(_)))
            {
                return Err(bad(
                    &format!("{field}.path"),
                    format!("'{path}' must be a relative path inside the bundle"),
                ));
            }
            let sha = sha.to_ascii_lowercase();
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(
                    &format!("{field}.sha256"),
                    "must be 64 hexadecimal digits".into(),
                ));
            }
            let full = dir.join(rel);
            let actual = sha256_file(&full)?;
            if actual != sha {
                return Err(Error::HashMismatch {
                    path: full,
                    field: format!("{field}.sha256"),
                    expected: sha,
                    actual,
                });
            }
            Ok(BundleFile {
                path: full,
                sha256: actual,
            })
        };
        let enc = check_file(
            "tokenizer_encoder",
            &raw.tokenizer_encoder.path,
            &raw.tokenizer_encoder.sha256,
        )?;
        let dec = check_file(
            "tokenizer_decoder",
            &raw.tokenizer_decoder.path,
            &raw.tokenizer_decoder.sha256,
        )?;
        let prior = check_file("prior", &raw.prior.path, &raw.prior.sha256)?;
        let optional = |name: &str, f: &Option<RawFile>| {
            f.as_ref()
                .map(|f| check_file(name, &f.path, &f.sha256))
                .transpose()
        };
        let tile = optional("tokenizer_decoder_tile", &raw.tokenizer_decoder_tile)?;
        let fast = optional("tokenizer_encoder_fast", &raw.tokenizer_encoder_fast)?;
        let dec_fast = optional("tokenizer_decoder_fast", &raw.tokenizer_decoder_fast)?;
        let tile_fast = optional(
            "tokenizer_decoder_tile_fast",
            &raw.tokenizer_decoder_tile_fast,
        )?;
        let dec_smooth = optional("tokenizer_decoder_smooth", &raw.tokenizer_decoder_smooth)?;
        let tile_smooth = optional(
            "tokenizer_decoder_tile_smooth",
            &raw.tokenizer_decoder_tile_smooth,
        )?;
        if tile_smooth.is_some() && dec_smooth.is_none() {
            return Err(bad(
                "tokenizer_decoder_tile_smooth",
                "a smooth tile graph needs the smooth decoder [tokenizer_decoder_smooth]".into(),
            ));
        }

        let dense = match (
            optional("tokenizer_encoder_dense", &raw.tokenizer_encoder_dense)?,
            optional("tokenizer_decoder_dense", &raw.tokenizer_decoder_dense)?,
        ) {
            (Some(e), Some(d)) => Some((e, d)),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(bad(
                    "tokenizer_decoder_dense",
                    "the dense graphs come in pairs: [tokenizer_encoder_dense] and \
                     [tokenizer_decoder_dense] are both present or both absent"
                        .into(),
                ))
            }
        };

        let prior_dense = match &raw.prior_dense {
            None => None,
            Some(_) if dense.is_none() => {
                return Err(bad(
                    "prior_dense",
                    "a dense prior codes the dense graphs' tokens: [prior_dense] needs \
                     [tokenizer_encoder_dense] and [tokenizer_decoder_dense]"
                        .into(),
                ))
            }
            Some(p) => {
                check_prior_kind("prior_dense", &p.kind)?;
                Some((
                    p.kind.clone(),
                    check_file("prior_dense", &p.path, &p.sha256)?,
                ))
            }
        };

        let id_text = format!(
            "uigc-model\n{}\n{}\n{}:{}\n{:?}\n{:?}\n{}\n{}\n{}:{}\n",
            raw.codebook_size,
            raw.downsample,
            raw.schedule.kind,
            raw.schedule.levels,
            raw.pixels.mean,
            raw.pixels.std,
            enc.sha256,
            dec.sha256,
            raw.prior.kind,
            prior.sha256
        );
        let id_of = |text: &str| {
            let digest = Sha256::digest(text.as_bytes());
            ModelId([digest[0], digest[1], digest[2], digest[3]])
        };
        let model_id = id_of(&id_text);
        // The dense graphs change what a dense packet's tokens mean, nothing else: normal packets
        // keep the model id (a receiver with or without dense graphs decodes them), dense packets
        // of the dense graphs carry an id of their own.
        // A dense prior changes how they are coded: it is part of their id (a bundle without one
        // keeps the id of uigc-small 0.4.0's dense packets).
        let dense_model_id = dense.as_ref().map(|(e, d)| {
            let prior = prior_dense.as_ref().map_or(String::new(), |(kind, f)| {
                format!("prior_dense:{kind}:{}\n", f.sha256)
            });
            id_of(&format!(
                "{id_text}dense:{}:{}\n{prior}",
                e.sha256, d.sha256
            ))
        });

        Ok(Self {
            dir,
            name: raw.name,
            version: raw.version,
            codebook_size: raw.codebook_size,
            downsample: raw.downsample,
            mean: raw.pixels.mean,
            std: raw.pixels.std,
            schedule,
            tokenizer_encoder: enc,
            tokenizer_decoder: dec,
            tokenizer_decoder_tile: tile,
            tokenizer_encoder_fast: fast,
            tokenizer_decoder_fast: dec_fast,
            tokenizer_decoder_tile_fast: tile_fast,
            tokenizer_decoder_smooth: dec_smooth,
            tokenizer_decoder_tile_smooth: tile_smooth,
            dense,
            dense_model_id,
            prior_kind: raw.prior.kind,
            prior,
            prior_dense,
            model_id,
        })
    }
}
