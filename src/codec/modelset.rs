//! Several models on one link: the encoder's rate control picks one per frame, the decoder picks
//! the one a packet names (its model id). This is how a sender with more than one codebook
//! (e.g. `uigc-small` K=256 and `uigc-small-k64`) chooses the codebook under a byte budget.

use std::path::Path;

use super::bitstream::parse_packet;
use super::error::{Error, PacketError, Result};
use super::{DecodedFrame, Density, EncodedFrame, FrameParams, Model, RgbImage, RuntimeOptions};

/// Index information a packet delivers per 16x16 pixels of the frame: sent (not regenerated)
/// tokens x log2 K / (pixels / 256). The choice criterion between models under one budget: more
/// decoded index bits, fewer regenerated ones. Measured on Kodak (MODEL_CARD.md): K=64 with all
/// tokens (6 bits per 16x16, LPIPS 0.473) beats K=256 with half of them (4 bits, 0.498) and loses
/// to K=256 with all of them (8 bits, 0.447).
pub fn sent_bits_per_block(frame: &EncodedFrame, codebook_size: usize) -> f64 {
    let h = &frame.packet.header;
    let blocks = h.width as f64 * h.height as f64 / 256.0;
    frame.packet.coded_tokens as f64 * (codebook_size as f64).log2() / blocks
}

/// An ordered set of loaded models (the first is the primary one).
pub struct ModelSet {
    models: Vec<Model>,
}

impl ModelSet {
    /// Loads every bundle; two bundles with the same model id are an error.
    pub fn load<P: AsRef<Path>>(dirs: &[P], opts: &RuntimeOptions) -> Result<Self> {
        let models = dirs
            .iter()
            .map(|d| Model::load(d, opts))
            .collect::<Result<Vec<_>>>()?;
        Self::new(models)
    }

    pub fn new(models: Vec<Model>) -> Result<Self> {
        if models.is_empty() {
            return Err(Error::InvalidArgument("no model given".into()));
        }
        for (i, a) in models.iter().enumerate() {
            if let Some(b) = models[i + 1..]
                .iter()
                .find(|b| b.model_id() == a.model_id())
            {
                return Err(Error::InvalidArgument(format!(
                    "models {} and {} have the same model id {}",
                    a.bundle().name,
                    b.bundle().name,
                    a.model_id()
                )));
            }
        }
        Ok(Self { models })
    }

    pub fn models(&self) -> &[Model] {
        &self.models
    }

    pub fn models_mut(&mut self) -> &mut [Model] {
        &mut self.models
    }

    /// The first model.
    pub fn primary(&mut self) -> &mut Model {
        &mut self.models[0]
    }

    /// Encodes with every model's rate control ([`Model::encode_auto`]) and keeps the packet
    /// that sends the most index information ([`sent_bits_per_block`]; ties: the earlier model).
    /// Without a budget, or with one model, this is the primary model's packet. Every candidate
    /// respects `params.max_bytes`; when none fits, [`Error::BudgetTooSmall`] names the smallest
    /// packet of any model.
    pub fn encode_auto(
        &mut self,
        image: &RgbImage,
        params: FrameParams,
        density: Density,
    ) -> Result<(usize, EncodedFrame)> {
        if self.models.len() == 1 || params.max_bytes.is_none() {
            return Ok((0, self.models[0].encode_auto(image, params, density)?));
        }
        let mut best: Option<(usize, EncodedFrame, f64)> = None;
        let mut min_needed = usize::MAX;
        for (i, m) in self.models.iter_mut().enumerate() {
            match m.encode_auto(image, params, density) {
                Ok(f) => {
                    let score = sent_bits_per_block(&f, m.bundle().codebook_size);
                    if best.as_ref().is_none_or(|b| score > b.2) {
                        best = Some((i, f, score));
                    }
                }
                Err(Error::BudgetTooSmall { min, .. }) => min_needed = min_needed.min(min),
                Err(e) => return Err(e),
            }
        }
        best.map(|(i, f, _)| (i, f)).ok_or(Error::BudgetTooSmall {
            budget: params.max_bytes.unwrap_or(0),
            min: min_needed,
        })
    }

    /// Decodes a packet with the model it names.
    pub fn decode(&mut self, packet: &[u8]) -> Result<DecodedFrame> {
        self.model_for(packet)?.decode(packet)
    }

    /// The model a packet names (a model-mismatch error when none of the set).
    pub fn model_for(&mut self, packet: &[u8]) -> Result<&mut Model> {
        let header = parse_packet(packet)?.header;
        let id = header.model_id;
        let ids = self
            .models
            .iter()
            .map(|m| m.model_id().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        match self.models.iter_mut().find(|m| m.accepts(&header)) {
            Some(m) => Ok(m),
            None => Err(PacketError::ModelMismatch {
                packet_model: id.to_string(),
                decoder_model: ids,
            }
            .into()),
        }
    }
}
