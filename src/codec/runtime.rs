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

/// Which of a bundle's tokenizer encoders the sender runs (docs/bundle.md "Fast encoder").
/// Both choose tokens of the same codebook for the same prior and decoder: the choice is the
/// sender's alone and packets carry the same model id either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EncoderChoice {
    /// `tokenizer_encoder`: the encoder the model was trained with.
    #[default]
    Full,
    /// `tokenizer_encoder_fast`: a cheaper encoder distilled to pick the same tokens; an error
    /// when the bundle has none.
    Fast,
}

impl EncoderChoice {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Full => "full",
            Self::Fast => "fast",
        }
    }
}

impl std::fmt::Display for EncoderChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EncoderChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Self::Full),
            "fast" => Ok(Self::Fast),
            other => Err(Error::InvalidArgument(format!(
                "unknown encoder '{other}' (full, fast)"
            ))),
        }
    }
}

/// Which of a bundle's tokenizer decoders the receiver runs (docs/bundle.md "Fast decoder",
/// "Smooth decoder"). All render the same tokens; packets and model id are the same either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DecoderChoice {
    /// The fast decoder when the bundle has one and the networks run on the CPU provider,
    /// else the full one.
    #[default]
    Auto,
    /// `tokenizer_decoder` (and `tokenizer_decoder_tile`): the float graphs of the model.
    Full,
    /// `tokenizer_decoder_fast` (and `tokenizer_decoder_tile_fast` when the bundle has a tile
    /// graph): sub-pixel form with int8 convolutions; an error when the bundle has none.
    Fast,
    /// `tokenizer_decoder_smooth` (and `tokenizer_decoder_tile_smooth` when the bundle has a
    /// tile graph): bilinear upsampling, trained against the 8-pixel grid; an error when the
    /// bundle has none.
    Smooth,
}

impl DecoderChoice {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Full => "full",
            Self::Fast => "fast",
            Self::Smooth => "smooth",
        }
    }
}

impl std::fmt::Display for DecoderChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for DecoderChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "full" => Ok(Self::Full),
            "fast" => Ok(Self::Fast),
            "smooth" => Ok(Self::Smooth),
            other => Err(Error::InvalidArgument(format!(
                "unknown decoder '{other}' (auto, full, fast, smooth)"
            ))),
        }
    }
}

/// Which tokenizer network a session runs (for the TensorRT shape profiles and the logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// `image` [1, 3, H, W] -> `indices`.
    Encoder,
    /// `indices` [1, h, w] -> `image`.
    Decoder,
    /// The tile graph: `indices` [1, h, w] (+ fixed-size statistics) -> `image`.
    TileDecoder,
    /// The dense encoder: `image` [1, 3, H, W] -> `indices` [1, H/8, W/8].
    DenseEncoder,
    /// The dense decoder: `indices` [1, h, w] -> `image` [1, 3, 8h, 8w].
    DenseDecoder,
}

impl Network {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Encoder => "tokenizer encoder",
            Self::Decoder => "tokenizer decoder",
            Self::TileDecoder => "tile decoder",
            Self::DenseEncoder => "dense tokenizer encoder",
            Self::DenseDecoder => "dense tokenizer decoder",
        }
    }

    /// Pixels per token side: 16, or 8 for the dense graphs.
    pub fn factor(&self) -> usize {
        match self {
            Self::DenseEncoder | Self::DenseDecoder => 8,
            Self::Encoder | Self::Decoder | Self::TileDecoder => 16,
        }
    }

    /// The TensorRT profile shape of the network's dynamic input for a frame of `w` x `h`
    /// pixels (padded to whole tokens), e.g. `image:1x3x480x640`.
    pub fn profile_shape(&self, (w, h): (u32, u32)) -> String {
        let f = self.factor() as u32;
        let (cols, rows) = (w.div_ceil(f).max(1), h.div_ceil(f).max(1));
        match self {
            Self::Encoder | Self::DenseEncoder => format!("image:1x3x{}x{}", rows * f, cols * f),
            Self::Decoder | Self::TileDecoder | Self::DenseDecoder => {
                format!("indices:1x{rows}x{cols}")
            }
        }
    }
}

/// Which networks of a bundle are opened when the model loads; the others open on first use.
/// A sender needs only the encoder, a receiver only the decoders: on TensorRT each network
/// opened costs an engine build (or a cache load) and GPU memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Encoder and decoder (the CLI, tests).
    #[default]
    Both,
    Encoder,
    Decoder,
}

/// The frame size TensorRT's optimisation profile is built for, and warm-ups run at, when
/// nothing else is said (a VGA camera).
pub const DEFAULT_SHAPE_HINT: (u32, u32) = (640, 480);
/// The largest frame side TensorRT's profile covers by default (a 1080p frame in either
/// orientation); a larger shape hint raises it.
pub const DEFAULT_PROFILE_MAX_SIDE: u32 = 1920;

/// How to run the pixel networks.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    /// Path of `libonnxruntime.so`; `None` = environment variables, then default locations.
    pub library: Option<PathBuf>,
    pub provider: ExecutionProvider,
    /// Intra-op threads (0 = ONNX Runtime's default).
    pub threads: usize,
    /// GPU index for CUDA and TensorRT.
    pub device_id: u32,
    /// TensorRT engine cache directory; `None` = [`default_trt_cache_dir`] for the model.
    pub trt_cache: Option<PathBuf>,
    /// TensorRT builds the tokenizer networks in FP16 (tokens may differ from FP32: measure
    /// with deploy/gpu-check.sh before relying on it).
    pub fp16: bool,
    /// Frame size (width, height) the TensorRT profile is optimised for and warm-ups run at;
    /// `None` = [`DEFAULT_SHAPE_HINT`].
    pub shape_hint: Option<(u32, u32)>,
    /// Which networks open at load; the others open on first use.
    pub role: Role,
    /// Which tokenizer encoder tokenizes frames (the sender's choice).
    pub encoder: EncoderChoice,
    /// Which tokenizer decoder renders pictures (the receiver's choice).
    pub decoder: DecoderChoice,
}

impl RuntimeOptions {
    /// The shape hint, or the default.
    pub fn shape_hint(&self) -> (u32, u32) {
        self.shape_hint.unwrap_or(DEFAULT_SHAPE_HINT)
    }

    /// min / opt / max frame sizes of the TensorRT optimisation profile: one engine serves
    /// every frame size from one token up to max, so a new frame size never rebuilds it.
    pub fn profile_sizes(&self) -> [(u32, u32); 3] {
        let (w, h) = self.shape_hint();
        let side = DEFAULT_PROFILE_MAX_SIDE.max(w).max(h);
        [(16, 16), (w, h), (side, side)]
    }
}

/// The ONNX Runtime version of the loaded library (from its build string, e.g. `1.23.2`), or
/// `unknown` before [`init_runtime`] loaded one.
pub fn runtime_version() -> String {
    let loaded = RUNTIME
        .get()
        .is_some_and(|m| m.lock().unwrap_or_else(|e| e.into_inner()).is_some());
    if !loaded {
        return "unknown".into();
    }
    // The library's own file name when it carries the version (libonnxruntime.so.1.23.2).
    if let Some(v) = loaded_library()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| {
            p.file_name()?
                .to_str()?
                .strip_prefix("libonnxruntime.so.")
                .map(str::to_owned)
        })
        .filter(|v| v.contains('.'))
    {
        return v;
    }
    // Else the build string: a release branch, or the commit it was built from.
    let info = ort::info();
    let field = |key: &str| {
        info.split([',', ' '])
            .find_map(|f| f.trim().strip_prefix(key))
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    };
    field("git-branch=rel-")
        .or_else(|| field("git-commit-id=").map(|c| format!("git-{c}")))
        .unwrap_or_else(|| "unknown".into())
}

/// The TensorRT version whose library (`libnvinfer.so.X.Y.Z`) the dynamic loader would find
/// first (LD_LIBRARY_PATH, then the usual library folders), or `None`.
pub fn tensorrt_version() -> Option<String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("LD_LIBRARY_PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    for d in [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/local/cuda/lib64",
        "/usr/local/lib",
        "/usr/lib",
    ] {
        dirs.push(PathBuf::from(d));
    }
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut versions: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let v = name.strip_prefix("libnvinfer.so.")?;
                v.contains('.').then(|| v.to_owned())
            })
            .collect();
        versions.sort();
        if let Some(v) = versions.pop() {
            return Some(v);
        }
    }
    None
}

/// The default TensorRT engine cache of a model: `$UIGC_HOME/trt/<model-id>-ort<version>-trt
/// <version>` (`UIGC_HOME` defaults to `~/.cache/uigc`), so that a new model, ONNX Runtime or
/// TensorRT gets a fresh cache instead of a stale engine.
pub fn default_trt_cache_dir(model_id: &str) -> PathBuf {
    let base = std::env::var_os("UIGC_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/uigc")))
        .unwrap_or_else(|| std::env::temp_dir().join("uigc"));
    base.join("trt").join(format!(
        "{model_id}-ort{}-trt{}",
        runtime_version(),
        tensorrt_version().unwrap_or_else(|| "unknown".into())
    ))
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

/// The path ONNX Runtime was loaded from, once loaded.
pub fn loaded_library() -> Option<PathBuf> {
    let cell = RUNTIME.get()?;
    let guard = cell.lock().unwrap_or_else(|e| e.into_inner());
    guard.as_ref().map(|l| l.path.clone())
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

/// The provider registrations for `ep`: none for the CPU; TensorRT also registers CUDA for the
/// nodes TensorRT does not take (never the CPU silently: every registration must succeed).
#[allow(unused_variables)]
fn provider_dispatch(
    ep: ExecutionProvider,
    opts: &RuntimeOptions,
    network: Network,
) -> Result<Vec<ort::ep::ExecutionProviderDispatch>> {
    #[cfg(feature = "cuda")]
    let cuda = || {
        ort::ep::CUDA::default()
            .with_device_id(opts.device_id as i32)
            .build()
            .error_on_failure()
    };
    match ep {
        ExecutionProvider::Cpu | ExecutionProvider::Auto => Ok(Vec::new()),
        ExecutionProvider::Cuda => {
            #[cfg(feature = "cuda")]
            {
                Ok(vec![cuda()])
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
                let [min, opt, max] = opts.profile_sizes();
                let mut trt = ort::ep::TensorRT::default()
                    .with_device_id(opts.device_id as i32)
                    .with_fp16(opts.fp16)
                    .with_profile_min_shapes(network.profile_shape(min))
                    .with_profile_opt_shapes(network.profile_shape(opt))
                    .with_profile_max_shapes(network.profile_shape(max));
                if let Some(dir) = &opts.trt_cache {
                    std::fs::create_dir_all(dir).map_err(|e| Error::ProviderUnavailable {
                        provider: ep.to_string(),
                        message: format!("engine cache {}: {e}", dir.display()),
                    })?;
                    let dir = dir.display().to_string();
                    trt = trt
                        .with_engine_cache(true)
                        .with_engine_cache_path(&dir)
                        .with_timing_cache(true)
                        .with_timing_cache_path(&dir);
                }
                Ok(vec![trt.build().error_on_failure(), cuda()])
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

fn build_session(
    path: &Path,
    opts: &RuntimeOptions,
    ep: ExecutionProvider,
    network: Network,
) -> Result<Session> {
    let env = environment()?;
    let err = session_error(path);
    let mut builder = Session::builder(&env).map_err(|e| err(e.to_string()))?;
    builder = builder
        .with_optimization_level(ort::session::builder::GraphOptimizationLevel::All)
        .map_err(|e| err(e.to_string()))?;
    if opts.threads > 0 {
        builder = builder
            .with_intra_threads(opts.threads)
            .map_err(|e| err(e.to_string()))?;
    }
    // ONNX Runtime's worker threads spin after each run by default, waiting for the next; the
    // prior runs right after the network on the same few cores, so spinning takes its CPU
    // (docs/edge.md; UIGC_ORT_SPINNING=1 restores it, for comparisons).
    let spin = std::env::var_os("UIGC_ORT_SPINNING").is_some_and(|v| v == "1");
    builder = builder
        .with_intra_op_spinning(spin)
        .map_err(|e| err(e.to_string()))?
        .with_inter_op_spinning(spin)
        .map_err(|e| err(e.to_string()))?;
    let dispatch = provider_dispatch(ep, opts, network)?;
    if !dispatch.is_empty() {
        builder =
            builder
                .with_execution_providers(dispatch)
                .map_err(|e| Error::ProviderUnavailable {
                    provider: ep.to_string(),
                    message: format!(
                        "{e} (ONNX Runtime {} from {}: a GPU provider needs the onnxruntime-gpu \
                     library and a GPU, docs/edge.md)",
                        runtime_version(),
                        loaded_library().map_or("?".into(), |p| p.display().to_string())
                    ),
                })?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| err(e.to_string()))
}

/// Opens one network of a bundle with the requested provider; returns the session and the
/// provider that actually runs it (logged, with the device, precision and engine cache).
pub fn open_session(
    path: &Path,
    opts: &RuntimeOptions,
    network: Network,
) -> Result<(Session, ExecutionProvider)> {
    init_runtime(opts.library.as_deref())?;
    let (session, ep) = if opts.provider != ExecutionProvider::Auto {
        (
            build_session(path, opts, opts.provider, network)?,
            opts.provider,
        )
    } else {
        let mut tried = Vec::new();
        let mut found = None;
        for ep in [ExecutionProvider::TensorRt, ExecutionProvider::Cuda] {
            match build_session(path, opts, ep, network) {
                Ok(s) => {
                    found = Some((s, ep));
                    break;
                }
                Err(e) => tried.push(format!("{ep}: {e}")),
            }
        }
        match found {
            Some(f) => f,
            None => {
                log::info!(
                    "{}: execution provider auto -> cpu ({})",
                    network.as_str(),
                    tried.join("; ")
                );
                (
                    build_session(path, opts, ExecutionProvider::Cpu, network)?,
                    ExecutionProvider::Cpu,
                )
            }
        }
    };
    log::info!(
        "{} ({}) runs on {}",
        network.as_str(),
        path.display(),
        describe_provider(ep, opts)
    );
    Ok((session, ep))
}

/// What runs a network, for logs and the elements' `provider` property: `cpu`, `cuda:0`,
/// `tensorrt:0 fp16, engine cache DIR`.
pub fn describe_provider(ep: ExecutionProvider, opts: &RuntimeOptions) -> String {
    match ep {
        ExecutionProvider::Cpu | ExecutionProvider::Auto => "cpu".into(),
        ExecutionProvider::Cuda => format!("cuda:{}", opts.device_id),
        ExecutionProvider::TensorRt => {
            let [_, opt, max] = opts.profile_sizes();
            format!(
                "tensorrt:{} {}, profile opt {}x{} max {}x{}, engine cache {}",
                opts.device_id,
                if opts.fp16 { "fp16" } else { "fp32" },
                opt.0,
                opt.1,
                max.0,
                max.1,
                opts.trt_cache
                    .as_ref()
                    .map_or("off".into(), |d| d.display().to_string())
            )
        }
    }
}
