//! The prior interface: integer probability tables for the positions of one stage, given the
//! tokens of the earlier stages.
//!
//! Everything a prior hands to the entropy coder is an integer table (sum `2^24`, entries >= 1,
//! see [`super::entropy::quantize_weights`]), computed identically by encoder and decoder.

use std::path::Path;

use super::entropy::quantize_weights;
use super::error::{Error, Result};
use super::schedule::StagePlan;

/// A token grid: `rows` x `cols` token indices in raster order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrid {
    pub rows: usize,
    pub cols: usize,
    pub tokens: Vec<u16>,
}

impl TokenGrid {
    pub fn new(rows: usize, cols: usize, tokens: Vec<u16>) -> Self {
        assert_eq!(rows * cols, tokens.len(), "grid size");
        Self { rows, cols, tokens }
    }

    pub fn zeros(rows: usize, cols: usize) -> Self {
        Self::new(rows, cols, vec![0; rows * cols])
    }
}

/// Probability tables of one stage: one table per position, or one shared by all of them.
#[derive(Debug, Clone)]
pub struct ProbTables {
    k: usize,
    shared: bool,
    data: Vec<u32>,
}

impl ProbTables {
    /// One table for every position.
    pub fn shared(table: Vec<u32>) -> Self {
        Self {
            k: table.len(),
            shared: true,
            data: table,
        }
    }

    /// `data.len() / k` tables, one per position of the stage, in the stage's order.
    pub fn per_position(k: usize, data: Vec<u32>) -> Self {
        assert_eq!(data.len() % k, 0);
        Self {
            k,
            shared: false,
            data,
        }
    }

    /// The table of the `i`-th position of the stage.
    pub fn get(&self, i: usize) -> &[u32] {
        let i = if self.shared { 0 } else { i };
        &self.data[i * self.k..(i + 1) * self.k]
    }
}

/// A multi-stage prior.
pub trait Prior: Send {
    /// Short name of the prior kind (as in the bundle manifest).
    fn kind(&self) -> &'static str;

    /// Codebook size K of the tables it returns.
    fn codebook_size(&self) -> usize;

    /// Forgets per-frame state; called before the first stage of every frame.
    fn reset(&mut self) {}

    /// Tables for the positions `queries` of stage `stage`, given the tokens of the earlier
    /// stages and of the positions `fixed` (sorted) of the same stage, for iterative
    /// regeneration. The default ignores `fixed` (a prior without same-stage context).
    fn partial_tables(
        &mut self,
        grid: &TokenGrid,
        plan: &StagePlan,
        stage: usize,
        fixed: &[u32],
        queries: &[u32],
    ) -> Result<ProbTables> {
        let _ = fixed;
        let all = self.stage_tables(grid, plan, stage)?;
        let k = self.codebook_size();
        let mut data = Vec::with_capacity(queries.len() * k);
        for q in queries {
            let i = plan.stages[stage].binary_search(q).map_err(|_| {
                Error::InvalidArgument(format!("position {q} not in stage {stage}"))
            })?;
            data.extend_from_slice(all.get(i));
        }
        Ok(ProbTables::per_position(k, data))
    }

    /// Tables for the positions `plan.stages[stage]` (in that order). Only the tokens of
    /// positions in stages `< stage` may be read from `grid`; the others hold arbitrary values.
    fn stage_tables(
        &mut self,
        grid: &TokenGrid,
        plan: &StagePlan,
        stage: usize,
    ) -> Result<ProbTables>;
}

/// Prior kind name of [`UnigramPrior`].
pub const UNIGRAM: &str = "unigram";

/// Prior kinds this build can run.
pub const KNOWN_KINDS: &[&str] = &[UNIGRAM, super::intprior::KIND];

/// A stand-in prior: one fixed frequency table for every position and stage.
///
/// File format (`prior.bin`): magic `UGP1`, `u32` K, K `u32` weights, little-endian.
#[derive(Debug, Clone)]
pub struct UnigramPrior {
    table: Vec<u32>,
}

impl UnigramPrior {
    /// A prior from raw integer weights.
    pub fn from_weights(weights: &[u32]) -> Self {
        let mut table = Vec::new();
        quantize_weights(weights, &mut table);
        Self { table }
    }

    /// Parses a `UGP1` file and checks it against the bundle's codebook size.
    pub fn load(path: &Path, codebook_size: usize) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        let bad = |message: String| Error::PriorFile {
            path: path.to_owned(),
            message,
        };
        if bytes.len() < 8 || &bytes[..4] != b"UGP1" {
            return Err(bad("not a unigram prior (magic 'UGP1' missing)".into()));
        }
        let k = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
        if k != codebook_size {
            return Err(bad(format!(
                "has K={k}, the manifest's codebook_size is {codebook_size}"
            )));
        }
        if bytes.len() != 8 + 4 * k {
            return Err(bad(format!(
                "is {} bytes, K={k} needs {}",
                bytes.len(),
                8 + 4 * k
            )));
        }
        let weights: Vec<u32> = bytes[8..]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        Ok(Self::from_weights(&weights))
    }
}

impl Prior for UnigramPrior {
    fn kind(&self) -> &'static str {
        UNIGRAM
    }

    fn codebook_size(&self) -> usize {
        self.table.len()
    }

    fn stage_tables(&mut self, _: &TokenGrid, _: &StagePlan, _: usize) -> Result<ProbTables> {
        Ok(ProbTables::shared(self.table.clone()))
    }
}

/// Loads the prior a bundle names. `threads` is the number of worker threads of priors that
/// use them (results never depend on it).
pub fn load_prior(
    kind: &str,
    path: &Path,
    codebook_size: usize,
    stages: usize,
    threads: usize,
) -> Result<Box<dyn Prior>> {
    match kind {
        UNIGRAM => Ok(Box::new(UnigramPrior::load(path, codebook_size)?)),
        super::intprior::KIND => Ok(Box::new(super::intprior::IntPrior::load(
            path,
            codebook_size,
            stages,
            threads,
        )?)),
        other => Err(Error::PriorFile {
            path: path.to_owned(),
            message: format!(
                "prior kind '{other}' is not supported by this build (known: {})",
                KNOWN_KINDS.join(", ")
            ),
        }),
    }
}
