//! Typed errors of the codec core.
//!
//! Every failure a user can cause (a missing runtime, a broken bundle, a corrupt packet) maps to one
//! variant with the file, field or value that caused it, so callers (CLI, GStreamer elements) can
//! print one clear line or decide to drop a frame and go on.

use std::path::PathBuf;

/// Result alias of the codec core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a packet could not be parsed or decoded. A decoder that gets one of these drops the frame
/// and carries on with the next packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet truncated: {what} needs more bytes than the {len}-byte packet has")]
    Truncated { what: &'static str, len: usize },
    #[error("not a uigc packet (first byte {found:#04x}, expected {expected:#04x})")]
    BadMagic { found: u8, expected: u8 },
    #[error("unsupported packet version {found} (this build reads version {supported})")]
    UnsupportedVersion { found: u8, supported: u8 },
    #[error("packet uses flags {flags:#x} that this version does not define")]
    ReservedFlags { flags: u8 },
    #[error("malformed varint in field '{field}'")]
    BadVarint { field: &'static str },
    #[error("frame size {width}x{height} is outside 1..={max} pixels per side")]
    BadFrameSize { width: u32, height: u32, max: u32 },
    #[error("packet claims {found} coded stages, the model's schedule has {max}")]
    BadStageCount { found: u8, max: usize },
    #[error(
        "packet was made with model {packet_model}, this decoder runs model {decoder_model}: \
         load the sender's model bundle"
    )]
    ModelMismatch {
        packet_model: String,
        decoder_model: String,
    },
    #[error(
        "check value mismatch (packet {expected:#06x}, decoded {actual:#06x}): \
         corrupt payload or desynchronised prior"
    )]
    CheckMismatch { expected: u16, actual: u16 },
    #[error(
        "packet check mismatch (packet {expected:#06x}, computed {actual:#06x}): the packet was \
         damaged in transit"
    )]
    PacketCheckMismatch { expected: u16, actual: u16 },
    #[error(
        "a {bytes}-byte packet asks for {tokens} tokens of work (a {width}x{height} frame), above \
         this decoder's work limit: at most {limit} tokens, or one token per byte of the packet \
         (raise work-limit to accept it)"
    )]
    TooMuchWork {
        width: u32,
        height: u32,
        tokens: u64,
        bytes: usize,
        limit: u64,
    },
    #[error("payload of {len} bytes is larger than the {max} bytes a frame of this size can need")]
    PayloadTooLarge { len: usize, max: usize },
    #[error(
        "frame of {width}x{height} pixels (as decoded) is above this decoder's limit of \
         {max_pixels} pixels (raise max-pixels to accept it)"
    )]
    FrameTooLarge {
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    #[error(
        "inter packet (frame {frame}) is coded against frame {reference}, which this decoder \
         does not hold: it waits for the next refresh"
    )]
    NoReference { frame: u32, reference: u32 },
    #[error("inter packet: {0}")]
    BadInter(String),
    #[error("colour thumbnail: {0}")]
    BadColour(String),
    #[error("entropy decoder failed: {0}")]
    Entropy(String),
}

/// Errors of the codec core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Packet(#[from] PacketError),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("model bundle {}: field '{field}': {message}", path.display())]
    Manifest {
        path: PathBuf,
        field: String,
        message: String,
    },

    #[error(
        "model bundle file {} does not match its manifest: sha256 is {actual}, manifest field \
         '{field}' says {expected}",
        path.display()
    )]
    HashMismatch {
        path: PathBuf,
        field: String,
        expected: String,
        actual: String,
    },

    #[error("prior file {}: {message}", path.display())]
    PriorFile { path: PathBuf, message: String },

    #[error(
        "ONNX Runtime library not found; tried: {tried}. Run the setup (./deploy/setup.sh) or \
         point UIGC_ORT_LIBRARY (or --ort-lib) at libonnxruntime.so"
    )]
    RuntimeNotFound { tried: String },

    #[error("could not load ONNX Runtime from {}: {message}", path.display())]
    RuntimeLoad { path: PathBuf, message: String },

    #[error("execution provider '{provider}' is not available: {message}")]
    ProviderUnavailable { provider: String, message: String },

    #[error("ONNX model {}: {message}", path.display())]
    Session { path: PathBuf, message: String },

    #[error("{network} inference failed: {message}")]
    Inference {
        network: &'static str,
        message: String,
    },

    #[error("{network} produced {message}: the ONNX file does not follow the tokenizer contract")]
    Contract {
        network: &'static str,
        message: String,
    },

    #[error(
        "a budget of {budget} bytes is below the smallest packet of this frame ({min} bytes): \
         frame skipped"
    )]
    BudgetTooSmall { budget: usize, min: usize },

    #[error("invalid image: {0}")]
    Image(String),

    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}
