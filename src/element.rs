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

/// Defaults of the properties both elements share.
pub(crate) const DEFAULT_MODEL: &str = "";
pub(crate) const DEFAULT_EP: ExecutionProvider = ExecutionProvider::Cpu;
pub(crate) const DEFAULT_THREADS: u32 = 0;

/// The `model`, `ep` and `threads` properties of both elements. `network` names what the
/// execution provider runs ("tokenizer" / "detokenizer"), `same_model` how the model must match
/// the other end.
pub(crate) fn model_properties(network: &str, same_model: &str) -> [glib::ParamSpec; 3] {
    [
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

/// Loads the model named by an element's `model` property (empty: the shipped default).
/// Loads the models named by a `model` property: one bundle directory, or several separated
/// by commas (the encoder's rate control picks one per frame, the decoder the one a packet
/// names); empty = the shipped default. Returns the set and a description for logs and errors.
pub(crate) fn load_models(
    model: &str,
    ep: ExecutionProvider,
    threads: u32,
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
    let opts = codec::RuntimeOptions {
        library: None,
        provider: ep.into(),
        threads: threads as usize,
    };
    let mut models = Vec::with_capacity(dirs.len());
    for dir in &dirs {
        let model = codec::Model::load(dir, &opts).map_err(|e| {
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
                "model {} '{}' from {} on {}",
                m.model_id(),
                m.bundle().name,
                d.display(),
                m.provider()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let set = codec::ModelSet::new(models)
        .map_err(|e| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
    Ok((set, desc))
}

/// Latency to report for a synchronous element whose mean processing time is `mean`: the mean
/// plus a quarter, rounded up to a millisecond.
pub(crate) fn processing_latency(mean: std::time::Duration) -> gst::ClockTime {
    let ms = (mean.as_secs_f64() * 1250.0).ceil() as u64;
    gst::ClockTime::from_mseconds(ms.max(1))
}
