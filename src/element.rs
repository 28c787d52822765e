// SPDX-License-Identifier: MIT OR Apache-2.0

//! What both elements share: the model, execution-provider and thread properties, model
//! loading, the latency rule and small helpers.

use std::path::PathBuf;

use gst::glib;
use gst::prelude::*;

use crate::codec;

/// Which ONNX Runtime execution provider runs the tokenizer networks (shared by both elements).
#[derive(Debug, Eq, PartialEq, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstUigcExecutionProvider")]
pub(crate) enum ExecutionProvider {
    #[default]
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu,
    #[enum_value(
        name = "CUDA (needs a build with --features cuda and a GPU)",
        nick = "cuda"
    )]
    Cuda,
    #[enum_value(
        name = "TensorRT (needs a build with --features tensorrt and a GPU)",
        nick = "tensorrt"
    )]
    TensorRt,
    #[enum_value(name = "Auto: TensorRT, then CUDA, then CPU", nick = "auto")]
    Auto,
}

impl From<ExecutionProvider> for codec::ExecutionProvider {
    fn from(ep: ExecutionProvider) -> Self {
        match ep {
            ExecutionProvider::Cpu => codec::ExecutionProvider::Cpu,
            ExecutionProvider::Cuda => codec::ExecutionProvider::Cuda,
            ExecutionProvider::TensorRt => codec::ExecutionProvider::TensorRt,
            ExecutionProvider::Auto => codec::ExecutionProvider::Auto,
        }
    }
}

/// Which of the bundle's tokenizer encoders `uigcenc` runs (docs/bundle.md "Fast encoder").
#[derive(Debug, Eq, PartialEq, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstUigcEncoderChoice")]
pub(crate) enum EncoderChoice {
    #[default]
    #[enum_value(name = "Full: the encoder the model was trained with", nick = "full")]
    Full,
    #[enum_value(
        name = "Fast: the bundle's cheaper distilled encoder (same codebook, decoder and model id)",
        nick = "fast"
    )]
    Fast,
}

impl From<EncoderChoice> for codec::EncoderChoice {
    fn from(e: EncoderChoice) -> Self {
        match e {
            EncoderChoice::Full => codec::EncoderChoice::Full,
            EncoderChoice::Fast => codec::EncoderChoice::Fast,
        }
    }
}

/// Which of the bundle's tokenizer decoders `uigcdec` runs (docs/bundle.md "Fast decoder",
/// "Smooth decoder").
#[derive(Debug, Eq, PartialEq, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstUigcDecoderChoice")]
pub(crate) enum DecoderChoice {
    #[default]
    #[enum_value(
        name = "Auto: the fast decoder when the bundle has one and ep is cpu, else the full one",
        nick = "auto"
    )]
    Auto,
    #[enum_value(name = "Full: the model's float decoder graphs", nick = "full")]
    Full,
    #[enum_value(
        name = "Fast: the bundle's int8 sub-pixel decoder (same tokens, ~43 dB of the full one's pictures)",
        nick = "fast"
    )]
    Fast,
    #[enum_value(
        name = "Smooth: the bundle's decoder without the 8-pixel grid (same tokens, bilinear upsampling)",
        nick = "smooth"
    )]
    Smooth,
}

impl From<DecoderChoice> for codec::DecoderChoice {
    fn from(d: DecoderChoice) -> Self {
        match d {
            DecoderChoice::Auto => codec::DecoderChoice::Auto,
            DecoderChoice::Full => codec::DecoderChoice::Full,
            DecoderChoice::Fast => codec::DecoderChoice::Fast,
            DecoderChoice::Smooth => codec::DecoderChoice::Smooth,
        }
    }
}

/// Defaults of the properties both elements share.
pub(crate) const DEFAULT_MODEL: &str = "";
pub(crate) const DEFAULT_EP: ExecutionProvider = ExecutionProvider::Cpu;
pub(crate) const DEFAULT_THREADS: u32 = 0;
pub(crate) const DEFAULT_WARM_UP: &str = "auto";

/// The GPU settings both elements share (`device-id`, `trt-cache`, `fp16`, `warm-up`).
#[derive(Debug, Clone)]
pub(crate) struct EpSettings {
    pub device_id: u32,
    /// Empty = the default cache (`~/.cache/uigc/trt/<model-id>-ort<v>-trt<v>`).
    pub trt_cache: String,
    pub fp16: bool,
    /// `auto`, `off` or `WIDTHxHEIGHT`.
    pub warm_up: String,
}

impl Default for EpSettings {
    fn default() -> Self {
        Self {
            device_id: 0,
            trt_cache: String::new(),
            fp16: false,
            warm_up: DEFAULT_WARM_UP.into(),
        }
    }
}

/// When and at which size an element runs its networks once before the first frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WarmUp {
    /// On a GPU provider, at the default shape hint; not on the CPU.
    Auto,
    Off,
    /// Always, at this size (also the TensorRT profile's optimum).
    Size(u32, u32),
}

impl std::str::FromStr for WarmUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" | "" => Ok(Self::Auto),
            "off" | "none" | "0" => Ok(Self::Off),
            _ => s
                .split_once('x')
                .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
                .filter(|&(w, h)| {
                    (1..=codec::bitstream::MAX_DIMENSION).contains(&w)
                        && (1..=codec::bitstream::MAX_DIMENSION).contains(&h)
                })
                .map(|(w, h)| Self::Size(w, h))
                .ok_or_else(|| {
                    format!(
                        "warm-up '{s}': expected auto, off or WIDTHxHEIGHT (1..{} each)",
                        codec::bitstream::MAX_DIMENSION
                    )
                }),
        }
    }
}

impl EpSettings {
    /// The warm-up setting, or a settings error.
    pub(crate) fn warm_up(&self) -> Result<WarmUp, gst::ErrorMessage> {
        self.warm_up
            .parse()
            .map_err(|e: String| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))
    }

    /// Sets one of the shared GPU properties; false when `name` is not one of them.
    pub(crate) fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        match name {
            "device-id" => self.device_id = value.get().expect("type checked upstream"),
            "trt-cache" => self.trt_cache = string_or(value, ""),
            "fp16" => self.fp16 = value.get().expect("type checked upstream"),
            "warm-up" => self.warm_up = string_or(value, DEFAULT_WARM_UP),
            _ => return false,
        }
        true
    }

    /// The value of one of the shared GPU properties (`provider`: what runs the networks).
    pub(crate) fn get(&self, name: &str, provider: &str) -> Option<glib::Value> {
        Some(match name {
            "device-id" => self.device_id.to_value(),
            "trt-cache" => self.trt_cache.to_value(),
            "fp16" => self.fp16.to_value(),
            "warm-up" => self.warm_up.to_value(),
            "provider" => provider.to_value(),
            _ => return None,
        })
    }
}

/// The `model`, `ep` and `threads` properties of both elements. `network` names what the
/// execution provider runs ("tokenizer" / "detokenizer"), `same_model` how the model must match
/// the other end.
pub(crate) fn model_properties(network: &str, same_model: &str) -> Vec<glib::ParamSpec> {
    vec![
        glib::ParamSpecString::builder("model")
            .nick("Model")
            .blurb(&format!(
                "Model bundle directory; empty = the shipped default model (UIGC_MODEL, the \
                 source tree's models/uigc-small, then /usr/local/share/uigc/models/uigc-small). \
                 Several directories separated by commas: the encoder's rate control picks one \
                 per frame, the decoder the one each packet names. {same_model}"
            ))
            .default_value(Some(DEFAULT_MODEL))
            .mutable_ready()
            .build(),
        glib::ParamSpecEnum::builder_with_default("ep", DEFAULT_EP)
            .nick("Execution provider")
            .blurb(&format!(
                "ONNX Runtime execution provider of the {network} network; a GPU provider that \
                 is not available is an error, never a silent fallback"
            ))
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("threads")
            .nick("Threads")
            .blurb("Worker threads of the network and the prior (0 = automatic)")
            .default_value(DEFAULT_THREADS)
            .mutable_ready()
            .build(),
        glib::ParamSpecUInt::builder("device-id")
            .nick("GPU device")
            .blurb("GPU index for ep=cuda and ep=tensorrt")
            .default_value(0)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("trt-cache")
            .nick("TensorRT engine cache")
            .blurb(
                "Directory of TensorRT's engine and timing caches; empty = \
                 ~/.cache/uigc/trt/<model-id>-ort<version>-trt<version> (UIGC_HOME replaces \
                 ~/.cache/uigc), so a new model, ONNX Runtime or TensorRT builds afresh",
            )
            .default_value(Some(""))
            .mutable_ready()
            .build(),
        glib::ParamSpecBoolean::builder("fp16")
            .nick("FP16")
            .blurb(&format!(
                "TensorRT builds the {network} network in FP16 (faster; tokens may differ \
                 slightly from FP32, see docs/edge.md)"
            ))
            .default_value(false)
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("warm-up")
            .nick("Warm-up")
            .blurb(
                "Run the network once when the element starts (READY->PAUSED) so the first \
                 frame is on time: auto (on a GPU provider, at 640x480), off, or \
                 WIDTHxHEIGHT (always, at that size; also the size TensorRT's optimisation \
                 profile is tuned for)",
            )
            .default_value(Some(DEFAULT_WARM_UP))
            .mutable_ready()
            .build(),
        glib::ParamSpecString::builder("provider")
            .nick("Provider")
            .blurb(
                "What runs each network since the element started (e.g. 'tokenizer encoder \
                 on cpu'); the prior always runs on the CPU in exact integers",
            )
            .read_only()
            .build(),
    ]
}

/// Locks a mutex, also after a panic elsewhere (the elements' state stays usable).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A string property's value, `default` when unset.
pub(crate) fn string_or(value: &glib::Value, default: &str) -> String {
    value
        .get::<Option<String>>()
        .expect("type checked upstream")
        .unwrap_or_else(|| default.into())
}

/// The runtime options of an element's properties.
pub(crate) fn runtime_options(
    ep: ExecutionProvider,
    threads: u32,
    gpu: &EpSettings,
    role: codec::Role,
    encoder: codec::EncoderChoice,
    decoder: codec::DecoderChoice,
) -> Result<codec::RuntimeOptions, gst::ErrorMessage> {
    Ok(codec::RuntimeOptions {
        library: None,
        provider: ep.into(),
        threads: threads as usize,
        device_id: gpu.device_id,
        trt_cache: (!gpu.trt_cache.trim().is_empty()).then(|| PathBuf::from(gpu.trt_cache.trim())),
        fp16: gpu.fp16,
        shape_hint: match gpu.warm_up()? {
            WarmUp::Size(w, h) => Some((w, h)),
            _ => None,
        },
        role,
        encoder,
        decoder,
    })
}

/// Loads the models named by a `model` property: one bundle directory, or several separated
/// by commas (the encoder's rate control picks one per frame, the decoder the one a packet
/// names); empty = the shipped default. Returns the set and a description for logs and errors.
pub(crate) fn load_models(
    model: &str,
    opts: &codec::RuntimeOptions,
) -> Result<(codec::ModelSet, String), gst::ErrorMessage> {
    let dirs: Vec<PathBuf> = if model.trim().is_empty() {
        vec![codec::default_model_dir().map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::NotFound,
                ("{e} (set the 'model' property to a model bundle directory)")
            )
        })?]
    } else {
        model.split(',').map(|d| PathBuf::from(d.trim())).collect()
    };
    let mut models = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let model = codec::Model::load(dir, opts).map_err(|e| {
            let text = format!("could not load model {}: {e}", dir.display());
            match e {
                codec::Error::RuntimeNotFound { .. } | codec::Error::RuntimeLoad { .. } => {
                    gst::error_msg!(gst::LibraryError::Init, ("{text}"))
                }
                codec::Error::ProviderUnavailable { .. } => {
                    gst::error_msg!(gst::LibraryError::Settings, ("{text}"))
                }
                codec::Error::Io { .. } => {
                    gst::error_msg!(gst::ResourceError::NotFound, ("{text}"))
                }
                _ => gst::error_msg!(gst::ResourceError::OpenRead, ("{text}")),
            }
        })?;
        models.push(model);
    }
    let desc = models
        .iter()
        .zip(&dirs)
        .map(|(m, d)| {
            format!(
                "model {} '{}' from {}: {}",
                m.model_id(),
                m.bundle().name,
                d.display(),
                m.describe_networks()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let set = codec::ModelSet::new(models)
        .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
    Ok((set, desc))
}

/// Runs the networks of `role` once per model as the `warm-up` setting says (see [`WarmUp`]);
/// returns what was done, for the log, or `None`.
pub(crate) fn warm_up(
    set: &mut codec::ModelSet,
    gpu: &EpSettings,
    role: codec::Role,
) -> Result<Option<String>, gst::ErrorMessage> {
    let mut done = Vec::new();
    for m in set.models_mut() {
        let (w, h) = match gpu.warm_up()? {
            WarmUp::Off => continue,
            WarmUp::Size(w, h) => (w, h),
            WarmUp::Auto if m.provider() == codec::ExecutionProvider::Cpu => continue,
            WarmUp::Auto => codec::runtime::DEFAULT_SHAPE_HINT,
        };
        let took = m.warm_up(w, h, role).map_err(|e| {
            gst::error_msg!(
                gst::LibraryError::Init,
                ("warm-up of model {} at {w}x{h} failed: {e}", m.model_id())
            )
        })?;
        done.push(format!(
            "model {} warmed up at {w}x{h} in {:.0} ms",
            m.model_id(),
            took.as_secs_f64() * 1e3
        ));
    }
    Ok((!done.is_empty()).then(|| done.join(", ")))
}

/// Latency to report for a synchronous element whose mean processing time is `mean`: the mean
/// plus a quarter, rounded up to a millisecond.
pub(crate) fn processing_latency(mean: std::time::Duration) -> gst::ClockTime {
    let ms = (mean.as_secs_f64() * 1250.0).ceil() as u64;
    gst::ClockTime::from_mseconds(ms.max(1))
}
