//! ONNX Runtime, loaded at run time from a shared library (`ort`'s `load-dynamic`).
//!
//! The library is the one the PyPI `onnxruntime` wheel ships. Where it is looked for, in order:
//! an explicit path (CLI `--ort-lib`, element property), `UIGC_ORT_LIBRARY`, `ORT_DYLIB_PATH`,
//! then the places the setup script installs to. The load is a fallible call: a missing or
//! broken library is an [`Error::RuntimeNotFound`] / [`Error::RuntimeLoad`], never a panic.
//!
//! Execution providers: `cpu`, `cuda`, `tensorrt`, `auto`. An explicitly requested GPU provider
//! that cannot be registered is an error ([`Error::ProviderUnavailable`]); `auto` tries TensorRT,
//! CUDA (when compiled in) and CPU in that order and logs which one runs.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;

use super::error::{Error, Result};

/// Which execution provider runs the pixel networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecutionProvider {
    #[default]
    Cpu,
    Cuda,
    TensorRt,
    Auto,
}

impl ExecutionProvider {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::Auto => "auto",
        }
    }
}

impl std::fmt::Display for ExecutionProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ExecutionProvider {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Self::Cpu),
            "cuda" => Ok(Self::Cuda),
            "tensorrt" | "trt" => Ok(Self::TensorRt),
            "auto" => Ok(Self::Auto),
            other => Err(Error::InvalidArgument(format!(
                "unknown execution provider '{other}' (cpu, cuda, tensorrt, auto)"
            ))),
        }
    }
}

/// How to run the pixel networks.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Path of `libonnxruntime.so`; `None` = environment variables, then default locations.
    pub library: Option<PathBuf>,
    pub provider: ExecutionProvider,
    /// Intra-op threads (0 = ONNX Runtime's default).
    pub threads: usize,
}

struct Loaded {
    path: PathBuf,
    env: Environment,
}

static RUNTIME: OnceLock<Mutex<Option<Loaded>>> = OnceLock::new();

/// Default places the setup installs the runtime library to.
pub fn default_library_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let uigc_home = std::env::var_os("UIGC_HOME")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".cache/uigc")));
    if let Some(base) = uigc_home {
        out.push(base.join("lib/libonnxruntime.so"));
        // The wheel inside the setup's virtual environment.
        let lib = base.join("venv/lib");
        if let Ok(entries) = std::fs::read_dir(&lib) {
            let mut pythons: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            pythons.sort();
            for py in pythons {
                let capi = py.join("site-packages/onnxruntime/capi");
                if let Ok(files) = std::fs::read_dir(&capi) {
                    let mut libs: Vec<PathBuf> = files
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.starts_with("libonnxruntime.so"))
                        })
                        .collect();
                    libs.sort();
                    out.extend(libs);
                }
            }
        }
    }
    out.push(PathBuf::from("/usr/local/lib/uigc/libonnxruntime.so"));
    out
}

fn resolve_library(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_owned())
        } else {
            Err(Error::RuntimeNotFound {
                tried: format!("{} (given explicitly)", p.display()),
            })
        };
    }
    for var in ["UIGC_ORT_LIBRARY", "ORT_DYLIB_PATH"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            let p = PathBuf::from(v);
            return if p.is_file() {
                Ok(p)
            } else {
                Err(Error::RuntimeNotFound {
                    tried: format!("{} (from {var})", p.display()),
                })
            };
        }
    }
    let candidates = default_library_candidates();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| Error::RuntimeNotFound {
            tried: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Loads ONNX Runtime once per process and returns the path it was loaded from. A later call
/// naming a different library is an error (a process can hold only one).
pub fn init_runtime(explicit: Option<&Path>) -> Result<PathBuf> {
    let cell = RUNTIME.get_or_init(|| Mutex::new(None));
    let mut guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(loaded) = guard.as_ref() {
        if let Some(p) = explicit {
            if p != loaded.path {
                return Err(Error::RuntimeLoad {
                    path: p.to_owned(),
                    message: format!(
                        "this process already runs ONNX Runtime from {}",
                        loaded.path.display()
                    ),
                });
            }
        }
        return Ok(loaded.path.clone());
    }
    let path = resolve_library(explicit)?;
    let builder = ort::init_from(&path).map_err(|e| Error::RuntimeLoad {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let env = builder
        .with_name("uigc")
        .build()
        .map_err(|e| Error::RuntimeLoad {
            path: path.clone(),
            message: e.to_string(),
        })?;
    log::info!("ONNX Runtime loaded from {}", path.display());
    *guard = Some(Loaded {
        path: path.clone(),
        env,
    });
    Ok(path)
}

fn environment() -> Result<Environment> {
    let cell = RUNTIME.get_or_init(|| Mutex::new(None));
    let guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    guard
        .as_ref()
        .map(|l| l.env.clone())
        .ok_or_else(|| Error::RuntimeLoad {
            path: PathBuf::new(),
            message: "init_runtime was not called".into(),
        })
}

fn session_error(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |message| Error::Session {
        path: path.to_owned(),
        message,
    }
}

#[allow(unused_variables)]
fn provider_dispatch(ep: ExecutionProvider) -> Result<Option<ort::ep::ExecutionProviderDispatch>> {
    match ep {
        ExecutionProvider::Cpu | ExecutionProvider::Auto => Ok(None),
        ExecutionProvider::Cuda => {
            #[cfg(feature = "cuda")]
            {
                Ok(Some(ort::ep::CUDA::default().build().error_on_failure()))
            }
            #[cfg(not(feature = "cuda"))]
            Err(Error::ProviderUnavailable {
                provider: ep.to_string(),
                message: "this build has no CUDA support (rebuild with `--features cuda`)".into(),
            })
        }
        ExecutionProvider::TensorRt => {
            #[cfg(feature = "tensorrt")]
            {
                Ok(Some(
                    ort::ep::TensorRT::default().build().error_on_failure(),
                ))
            }
            #[cfg(not(feature = "tensorrt"))]
            Err(Error::ProviderUnavailable {
                provider: ep.to_string(),
                message: "this build has no TensorRT support (rebuild with `--features tensorrt`)"
                    .into(),
            })
        }
    }
}

fn build_session(path: &Path, opts: &RuntimeOptions, ep: ExecutionProvider) -> Result<Session> {
    let env = environment()?;
    let err = session_error(path);
    let mut builder = Session::builder(&env).map_err(|e| err(e.to_string()))?;
    if opts.threads > 0 {
        builder = builder
            .with_intra_threads(opts.threads)
            .map_err(|e| err(e.to_string()))?;
    }
    if let Some(dispatch) = provider_dispatch(ep)? {
        builder = builder.with_execution_providers([dispatch]).map_err(|e| {
            Error::ProviderUnavailable {
                provider: ep.to_string(),
                message: e.to_string(),
            }
        })?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| err(e.to_string()))
}

/// Opens an ONNX model with the requested provider; returns the session and the provider that
/// actually runs it.
pub fn open_session(path: &Path, opts: &RuntimeOptions) -> Result<(Session, ExecutionProvider)> {
    init_runtime(opts.library.as_deref())?;
    if opts.provider != ExecutionProvider::Auto {
        return Ok((build_session(path, opts, opts.provider)?, opts.provider));
    }
    let mut tried = Vec::new();
    for ep in [ExecutionProvider::TensorRt, ExecutionProvider::Cuda] {
        match build_session(path, opts, ep) {
            Ok(s) => {
                log::info!("{}: execution provider auto -> {ep}", path.display());
                return Ok((s, ep));
            }
            Err(e) => tried.push(format!("{ep}: {e}")),
        }
    }
    log::info!(
        "{}: execution provider auto -> cpu ({})",
        path.display(),
        tried.join("; ")
    );
    Ok((
        build_session(path, opts, ExecutionProvider::Cpu)?,
        ExecutionProvider::Cpu,
    ))
}
