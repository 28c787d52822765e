// SPDX-License-Identifier: MIT OR Apache-2.0

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use super::{Density, Keep};
use crate::codec::{self, FrameParams, RgbImage};
use crate::element::{
    lock, model_properties, string_or, EncoderChoice, EpSettings, ExecutionProvider, DEFAULT_EP,
    DEFAULT_MODEL, DEFAULT_THREADS,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "uigcenc",
        gst::DebugColorFlags::empty(),
        Some("uigc ultra-low-bitrate image encoder"),
    )
});

const DEFAULT_ENCODER: EncoderChoice = EncoderChoice::Full;
const DEFAULT_PIPELINE: bool = false;
const DEFAULT_STREAM_ID: u32 = 0;
const DEFAULT_KEEP: Keep = Keep::All;
const DEFAULT_DENSITY: Density = Density::Auto;
const DEFAULT_REGEN: &str = "argmax";
const DEFAULT_COLOUR: &str = "auto";
const DEFAULT_TARGET_BITRATE: u32 = 0;
const DEFAULT_MAX_FRAME_BYTES: u32 = 0;
const DEFAULT_KEYFRAME_INTERVAL: u32 = 0;
const DEFAULT_REFRESH_FRAMES: u32 = codec::stream::DEFAULT_REFRESH_FRAMES;
const DEFAULT_CHANGE_THRESHOLD: f64 = codec::stream::DEFAULT_CHANGE_THRESHOLD as f64;
/// Frame rate assumed by `target-bitrate` when neither the caps nor the buffers give one.
const FALLBACK_FPS: f64 = 30.0;
/// Largest frame side the packet format carries.
const MAX_SIDE: i32 = codec::bitstream::MAX_DIMENSION as i32;

#[derive(Debug, Clone)]
struct Settings {
    model: String,
    ep: ExecutionProvider,
    encoder: EncoderChoice,
    pipeline: bool,
    threads: u32,
    gpu: EpSettings,
    stream_id: u32,
    keep: Keep,
    density: Density,
    colour: codec::Colour,
    regen: String,
    target_bitrate: u32,
    max_frame_bytes: u32,
    keyframe_interval: u32,
    refresh_frames: u32,
    change_threshold: f64,
    max_pixels: u64,
    work_limit: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.into(),
            ep: DEFAULT_EP,
            encoder: DEFAULT_ENCODER,
            pipeline: DEFAULT_PIPELINE,
            threads: DEFAULT_THREADS,
            gpu: EpSettings::default(),
            stream_id: DEFAULT_STREAM_ID,
            keep: DEFAULT_KEEP,
            density: DEFAULT_DENSITY,
            colour: DEFAULT_COLOUR.parse().expect("valid default"),
            regen: DEFAULT_REGEN.into(),
            target_bitrate: DEFAULT_TARGET_BITRATE,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            keyframe_interval: DEFAULT_KEYFRAME_INTERVAL,
            refresh_frames: DEFAULT_REFRESH_FRAMES,
            max_pixels: codec::DEFAULT_MAX_PIXELS,
            work_limit: codec::DEFAULT_WORK_LIMIT,
            change_threshold: DEFAULT_CHANGE_THRESHOLD,
        }
    }
}

impl Settings {
    /// Whether frames are coded as a stream (inter packets): the default. Still-image
    /// settings keep every packet intra: `keyframe-interval=1`, a keep policy below all
    /// tokens, dense packets, or several models (the codebook choice is per frame).
    fn inter(&self, models: usize) -> bool {
        self.keyframe_interval != 1
            && self.keep == Keep::All
            && self.density != Density::Dense
            && models == 1
    }
}

#[derive(Debug, Default)]
struct Stats {
    last_bytes: u32,
    last_bpp: f64,
    last_stages: u32,
    last_policy: String,
    last_type: String,
    frames_encoded: u64,
    frames_intra: u64,
    frames_dropped: u64,
    /// Frames timed (encoded or dropped for the budget) and their total time.
    timed: u64,
    total_time: Duration,
}

impl Stats {
    fn mean_time(&self) -> Duration {
        if self.timed == 0 {
            Duration::ZERO
        } else {
            self.total_time / self.timed as u32
        }
    }
}

/// The negotiated input and how it becomes packed RGB.
struct Video {
    info: gst_video::VideoInfo,
    /// `None` when the input is RGB already.
    converter: Option<(gst_video::VideoConverter, gst_video::VideoInfo, gst::Buffer)>,
}

struct State {
    model: codec::ModelSet,
    levels: u8,
    num_stages: usize,
    video: Option<Video>,
    /// Frame counter of the next packet (counts packets sent).
    frame: u32,
    /// The stream coder and the settings it was made with.
    stream: Option<(codec::StreamConfig, codec::StreamEncoder)>,
    reported_latency: Option<gst::ClockTime>,
    /// The tokenizer thread and the frames in it (`pipeline=true`).
    pipe: Option<Pipe>,
}

/// `pipeline=true`: the encoder network runs on its own thread one frame ahead of the prior.
struct Pipe {
    worker: codec::pipeline::TokenizerThread,
    /// Frames submitted to the worker, oldest first.
    pending: std::collections::VecDeque<Pending>,
}

/// A frame whose tokens are being made.
struct Pending {
    system_frame_number: u32,
    meta: FrameMeta,
}

/// What a stream frame's coding needs to know besides its pixels.
#[derive(Clone, Copy)]
struct FrameMeta {
    /// Frame rate (caps, else buffer duration).
    fps: f64,
    /// A keyframe was asked for (`GstForceKeyUnit`).
    force: bool,
}

#[derive(Default)]
pub struct UigcEnc {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    /// What runs the networks (the `provider` property).
    provider: Mutex<String>,
}

impl UigcEnc {
    /// Packs (and converts when needed) the input frame into tight 8-bit RGB.
    fn to_rgb(
        &self,
        video: &mut Video,
        input: &gst::BufferRef,
    ) -> Result<RgbImage, gst::FlowError> {
        let in_frame = gst_video::VideoFrameRef::from_buffer_ref_readable(input, &video.info)
            .map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::CoreError::Failed,
                    ["Failed to map the input buffer readable"]
                );
                gst::FlowError::Error
            })?;
        let (w, h) = (video.info.width(), video.info.height());
        let row = w as usize * 3;
        let mut data = vec![0u8; row * h as usize];
        let copy_rows = |plane: &[u8], stride: usize, data: &mut [u8]| {
            for (y, dst) in data.chunks_exact_mut(row).enumerate() {
                dst.copy_from_slice(&plane[y * stride..y * stride + row]);
            }
        };
        match &mut video.converter {
            None => {
                let plane = in_frame.plane_data(0).map_err(|_| gst::FlowError::Error)?;
                copy_rows(plane, in_frame.plane_stride()[0] as usize, &mut data);
            }
            Some((converter, rgb_info, scratch)) => {
                let scratch = scratch.get_mut().ok_or(gst::FlowError::Error)?;
                let mut out = gst_video::VideoFrameRef::from_buffer_ref_writable(scratch, rgb_info)
                    .map_err(|_| gst::FlowError::Error)?;
                converter.frame_ref(&in_frame, &mut out);
                let stride = out.plane_stride()[0] as usize;
                let plane = out.plane_data(0).map_err(|_| gst::FlowError::Error)?;
                copy_rows(plane, stride, &mut data);
            }
        }
        RgbImage::new(w, h, data).map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Format, ["{e}"]);
            gst::FlowError::Error
        })
    }

    /// Frame rate from the caps, else the buffer duration, else [`FALLBACK_FPS`].
    fn fps(info: &gst_video::VideoInfo, duration: Option<gst::ClockTime>) -> f64 {
        let fps = info.fps();
        if fps.numer() > 0 && fps.denom() > 0 {
            fps.numer() as f64 / fps.denom() as f64
        } else if let Some(d) = duration.filter(|d| !d.is_zero()) {
            1e9 / d.nseconds() as f64
        } else {
            FALLBACK_FPS
        }
    }

    /// Bytes one intra frame may use: the smaller of `max-frame-bytes` and `target-bitrate` /
    /// fps (streams use a leaky bucket instead, see [`codec::StreamEncoder`]).
    fn budget(
        settings: &Settings,
        info: &gst_video::VideoInfo,
        duration: Option<gst::ClockTime>,
    ) -> Option<usize> {
        let mut budget = None;
        if settings.max_frame_bytes > 0 {
            budget = Some(settings.max_frame_bytes as usize);
        }
        if settings.target_bitrate > 0 {
            let fps = Self::fps(info, duration);
            let bytes = (settings.target_bitrate as f64 / 8.0 / fps).floor() as usize;
            budget = Some(budget.map_or(bytes, |b: usize| b.min(bytes)));
        }
        budget
    }

    /// Reports the processing time as latency once it outgrows what was reported.
    fn update_latency(&self) {
        let mean = lock(&self.stats).mean_time();
        let latency = crate::element::processing_latency(mean);
        let mut state = lock(&self.state);
        let Some(state) = state.as_mut() else { return };
        if state.reported_latency.is_some_and(|r| latency <= r) {
            return;
        }
        state.reported_latency = Some(latency);
        gst::debug!(CAT, imp = self, "Reporting latency {latency}");
        self.obj().set_latency(latency, Some(latency));
    }

    fn drop_frame(
        &self,
        frame: gst_video::VideoCodecFrame,
        why: &str,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        {
            let mut stats = lock(&self.stats);
            stats.frames_dropped += 1;
            stats.last_bytes = 0;
            stats.last_bpp = 0.0;
            stats.last_stages = 0;
            stats.last_policy = format!("dropped: {why}");
        }
        gst::warning!(
            CAT,
            imp = self,
            "Dropping frame {}: {why}",
            frame.system_frame_number()
        );
        // A frame without output buffer is a dropped frame for the base class.
        self.obj().finish_frame(frame)
    }
}

#[glib::object_subclass]
impl ObjectSubclass for UigcEnc {
    const NAME: &'static str = "GstUigcEnc";
    type Type = super::UigcEnc;
    type ParentType = gst_video::VideoEncoder;
}

impl ObjectImpl for UigcEnc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props =
                model_properties("tokenizer", "Sender and receiver must use the same model");
            props.extend([
                glib::ParamSpecEnum::builder_with_default("encoder", DEFAULT_ENCODER)
                    .nick("Tokenizer encoder")
                    .blurb(
                        "full: the encoder the model was trained with; fast: the bundle's \
                         cheaper distilled encoder (same codebook, decoder and model id: any \
                         receiver decodes its packets; an error at start if the bundle has \
                         none; docs/edge.md for its cost in bits and quality)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("pipeline")
                    .nick("Pipeline")
                    .blurb(
                        "Streams: run the tokenizer encoder on its own thread, one frame ahead \
                         of the prior, so the two overlap on a multi-core CPU (more frames/s, \
                         one frame more latency; the same packets)",
                    )
                    .default_value(DEFAULT_PIPELINE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("stream-id")
                    .nick("Stream id")
                    .blurb(
                        "Sender identity written into every packet, so one receiver can tell \
                         devices apart and count lost frames per device",
                    )
                    .default_value(DEFAULT_STREAM_ID)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("keep", DEFAULT_KEEP)
                    .nick("Keep policy")
                    .blurb(
                        "Share of the tokens sent (a prefix of the stage schedule); the \
                         decoder regenerates the rest. An upper bound when a budget is set",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("density", DEFAULT_DENSITY)
                    .nick("Density")
                    .blurb(
                        "Token grid: normal, dense (four tokens per 16x16 pixels: the bundle's dense \
                         graphs, else the frame at twice its size; the top of the rate ladder) or \
                         auto (dense when the byte budget leaves room for it)",
                    )
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("colour")
                    .nick("Colour thumbnail")
                    .blurb(
                        "Send the frame's block means in YCbCr (a few hundred bytes) so the \
                         receiver corrects its colours: off, on, or auto (only when every token \
                         is sent and, under a budget, still fits with them); optionally \
                         :BLOCK:STEP, e.g. on:32:4",
                    )
                    .default_value(Some(DEFAULT_COLOUR))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecString::builder("regen")
                    .nick("Regeneration hint")
                    .blurb(
                        "How the receiver should regenerate the tokens not sent (argmax, \
                         iterative[:N], sample[:S]). Packet version 1 does not carry it: set \
                         the same mode on the receiver's uigcdec",
                    )
                    .default_value(Some(DEFAULT_REGEN))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("target-bitrate")
                    .nick("Target bitrate")
                    .blurb(
                        "Bits per second (0 = off): each frame gets at most bitrate / \
                         framerate / 8 bytes; stages are removed until the packet fits, a frame \
                         that cannot fit is dropped",
                    )
                    .default_value(DEFAULT_TARGET_BITRATE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("max-frame-bytes")
                    .nick("Max frame bytes")
                    .blurb(
                        "Largest packet in bytes (0 = off; 65507 = one plain UDP datagram): \
                         stages are removed until the packet fits, a frame that cannot fit is \
                         dropped",
                    )
                    .default_value(DEFAULT_MAX_FRAME_BYTES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("keyframe-interval")
                    .nick("Keyframe interval")
                    .blurb(
                        "An intra frame every N frames; 0 = only the first (after a size \
                         change and on a force-key-unit request), the gradual refresh recovers \
                         from loss; 1 = every frame intra (stills, no inter packets)",
                    )
                    .default_value(DEFAULT_KEYFRAME_INTERVAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("refresh-frames")
                    .nick("Refresh frames")
                    .blurb(
                        "Frames per gradual-refresh cycle: every token row is re-sent intra \
                         once per cycle, a band per frame, so a receiver that lost packets is \
                         exact again without a keyframe (0 = off)",
                    )
                    .default_value(DEFAULT_REFRESH_FRAMES)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecDouble::builder("change-threshold")
                    .nick("Change threshold")
                    .blurb(
                        "Inter frames re-send a token whose codeword changed only when its \
                         16x16 block moved by this mean absolute difference (8-bit levels) \
                         since it was last sent: higher = fewer bytes, sensor noise ignored",
                    )
                    .minimum(0.0)
                    .maximum(255.0)
                    .default_value(DEFAULT_CHANGE_THRESHOLD)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("max-pixels")
                    .nick("Max pixels")
                    .blurb(
                        "The receiver's max-pixels: a larger frame is refused with an error \
                         (the receiver would drop its packets)",
                    )
                    .minimum(1)
                    .default_value(codec::DEFAULT_MAX_PIXELS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("work-limit")
                    .nick("Work limit")
                    .blurb(
                        "The receiver's work-limit in tokens: packets of frames with more tokens \
                         are padded to one byte per token (or skipped when the budget cannot \
                         hold that), so that the receiver accepts them",
                    )
                    .default_value(codec::DEFAULT_WORK_LIMIT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("last-frame-type")
                    .nick("Last frame type")
                    .blurb(
                        "intra or inter, with the tokens sent and held back and the refresh \
                         rows of the last packet",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-intra")
                    .nick("Intra frames")
                    .blurb("Intra packets (keyframes) sent since the element started")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt::builder("last-frame-bytes")
                    .nick("Last frame bytes")
                    .blurb("Size of the last packet in bytes (0 when it was dropped)")
                    .read_only()
                    .build(),
                glib::ParamSpecDouble::builder("last-frame-bpp")
                    .minimum(0.0)
                    .nick("Last frame bpp")
                    .blurb("Bits per pixel of the last packet, header included")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt::builder("last-frame-stages")
                    .nick("Last frame stages")
                    .blurb("Schedule stages coded in the last packet")
                    .read_only()
                    .build(),
                glib::ParamSpecString::builder("last-frame-policy")
                    .nick("Last frame policy")
                    .blurb("What decided the size of the last frame (keep policy, budget or drop)")
                    .read_only()
                    .build(),
                glib::ParamSpecDouble::builder("mean-encode-ms")
                    .minimum(0.0)
                    .nick("Mean encode time")
                    .blurb(
                        "Mean time to encode one frame in milliseconds (conversion, network, \
                         coding) since the element started",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-encoded")
                    .nick("Frames encoded")
                    .blurb("Packets sent since the element started")
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-dropped")
                    .nick("Frames dropped")
                    .blurb(
                        "Frames dropped since the element started (over budget, or late under QoS)",
                    )
                    .read_only()
                    .build(),
            ]);
            props
        });
        PROPERTIES.as_ref()
    }

    fn constructed(&self) {
        self.parent_constructed();
        // Late frames are dropped, not queued (only acts on QoS events from downstream).
        self.obj().set_qos_enabled(true);
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "model" => settings.model = string_or(value, DEFAULT_MODEL),
            "ep" => settings.ep = value.get().expect("type checked upstream"),
            "encoder" => settings.encoder = value.get().expect("type checked upstream"),
            "pipeline" => settings.pipeline = value.get().expect("type checked upstream"),
            "threads" => settings.threads = value.get().expect("type checked upstream"),
            name if settings.gpu.set(name, value) => {}
            "stream-id" => settings.stream_id = value.get().expect("type checked upstream"),
            "keep" => settings.keep = value.get().expect("type checked upstream"),
            "density" => settings.density = value.get().expect("type checked upstream"),
            "colour" => match string_or(value, DEFAULT_COLOUR).parse() {
                Ok(c) => settings.colour = c,
                Err(e) => gst::error!(CAT, imp = self, "{e}; keeping {}", settings.colour),
            },
            "regen" => settings.regen = string_or(value, DEFAULT_REGEN),
            "max-pixels" => settings.max_pixels = value.get().expect("type checked upstream"),
            "work-limit" => settings.work_limit = value.get().expect("type checked upstream"),
            "target-bitrate" => {
                settings.target_bitrate = value.get().expect("type checked upstream")
            }
            "max-frame-bytes" => {
                settings.max_frame_bytes = value.get().expect("type checked upstream")
            }
            "keyframe-interval" => {
                settings.keyframe_interval = value.get().expect("type checked upstream")
            }
            "refresh-frames" => {
                settings.refresh_frames = value.get().expect("type checked upstream")
            }
            "change-threshold" => {
                settings.change_threshold = value.get().expect("type checked upstream")
            }
            other => unreachable!("unknown property {other}"),
        }
        gst::debug!(CAT, imp = self, "Set {} = {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let settings = lock(&self.settings);
        let stats = lock(&self.stats);
        match pspec.name() {
            "model" => settings.model.to_value(),
            "ep" => settings.ep.to_value(),
            "encoder" => settings.encoder.to_value(),
            "pipeline" => settings.pipeline.to_value(),
            "threads" => settings.threads.to_value(),
            name @ ("device-id" | "trt-cache" | "fp16" | "warm-up" | "provider") => settings
                .gpu
                .get(name, &lock(&self.provider))
                .expect("a shared GPU property"),
            "stream-id" => settings.stream_id.to_value(),
            "keep" => settings.keep.to_value(),
            "density" => settings.density.to_value(),
            "colour" => settings.colour.to_string().to_value(),
            "regen" => settings.regen.to_value(),
            "target-bitrate" => settings.target_bitrate.to_value(),
            "max-frame-bytes" => settings.max_frame_bytes.to_value(),
            "keyframe-interval" => settings.keyframe_interval.to_value(),
            "refresh-frames" => settings.refresh_frames.to_value(),
            "change-threshold" => settings.change_threshold.to_value(),
            "max-pixels" => settings.max_pixels.to_value(),
            "work-limit" => settings.work_limit.to_value(),
            "last-frame-type" => stats.last_type.to_value(),
            "frames-intra" => stats.frames_intra.to_value(),
            "last-frame-bytes" => stats.last_bytes.to_value(),
            "last-frame-bpp" => stats.last_bpp.to_value(),
            "last-frame-stages" => stats.last_stages.to_value(),
            "last-frame-policy" => stats.last_policy.to_value(),
            "mean-encode-ms" => (stats.mean_time().as_secs_f64() * 1e3).to_value(),
            "frames-encoded" => stats.frames_encoded.to_value(),
            "frames-dropped" => stats.frames_dropped.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for UigcEnc {}

impl ElementImpl for UigcEnc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "uigc encoder",
                "Codec/Encoder/Video",
                "Ultra-low-bitrate image encoder (VQ tokenizer + multi-stage prior): one \
                 self-contained packet of a few hundred bytes per frame",
                "uigc developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            use gst_video::VideoFormat as F;
            let sink_caps = gst_video::VideoCapsBuilder::new()
                .format_list([
                    F::Rgb,
                    F::I420,
                    F::Yv12,
                    F::Nv12,
                    F::Nv21,
                    F::Yuy2,
                    F::Uyvy,
                    F::Yvyu,
                    F::Y42b,
                    F::Y444,
                    F::Bgr,
                    F::Rgbx,
                    F::Bgrx,
                    F::Xrgb,
                    F::Xbgr,
                    F::Rgba,
                    F::Bgra,
                    F::Argb,
                    F::Abgr,
                    F::Gray8,
                ])
                .width_range(1..=MAX_SIDE)
                .height_range(1..=MAX_SIDE)
                .build();
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &sink_caps,
            )
            .unwrap();
            let src_caps = gst::Caps::builder("video/x-uigc")
                .field("width", gst::IntRange::new(1, MAX_SIDE))
                .field("height", gst::IntRange::new(1, MAX_SIDE))
                .build();
            let src = gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &src_caps,
            )
            .unwrap();
            vec![src, sink]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl VideoEncoderImpl for UigcEnc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        if let Err(e) = settings.regen.parse::<codec::RegenMode>() {
            return Err(gst::error_msg!(gst::LibraryError::Settings, ("{e}")));
        }
        let opts = crate::element::runtime_options(
            settings.ep,
            settings.threads,
            &settings.gpu,
            codec::Role::Encoder,
            settings.encoder.into(),
            codec::DecoderChoice::Auto,
        )?;
        let (mut model, desc) = crate::element::load_models(&settings.model, &opts)?;
        for m in model.models_mut() {
            m.token_codec().set_max_pixels(settings.max_pixels);
            m.token_codec().set_work_limit(settings.work_limit);
        }
        let schedule = model.primary().bundle().schedule;
        gst::info!(CAT, imp = self, "Loaded {desc}");
        if let Some(done) =
            crate::element::warm_up(&mut model, &settings.gpu, codec::Role::Encoder)?
        {
            gst::info!(CAT, imp = self, "{done}");
        }
        let pipe = if settings.pipeline {
            let worker = codec::pipeline::TokenizerThread::spawn(model.primary().bundle(), &opts)
                .map_err(|e| {
                gst::error_msg!(
                    gst::LibraryError::Init,
                    ("pipeline: could not start the tokenizer thread: {e}")
                )
            })?;
            Some(Pipe {
                worker,
                pending: Default::default(),
            })
        } else {
            None
        };
        *lock(&self.provider) = desc;
        *lock(&self.stats) = Stats::default();
        *lock(&self.state) = Some(State {
            levels: schedule.levels(),
            num_stages: schedule.num_stages(),
            model,
            video: None,
            frame: 0,
            stream: None,
            reported_latency: None,
            pipe,
        });
        Ok(())
    }

    fn finish(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.drain_pipe()
    }

    fn flush(&self) -> bool {
        // The base class drops its pending frames; the worker's results for them go too.
        let mut guard = lock(&self.state);
        if let Some(pipe) = guard.as_mut().and_then(|s| s.pipe.as_mut()) {
            while pipe.worker.receive().ok().flatten().is_some() {}
            pipe.pending.clear();
        }
        true
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        Ok(())
    }

    fn set_format(
        &self,
        state: &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
    ) -> Result<(), gst::LoggableError> {
        let info = state.info().clone();
        gst::debug!(CAT, imp = self, "Setting format {:?}", info);
        let converter = if info.format() == gst_video::VideoFormat::Rgb {
            None
        } else {
            let rgb_info = gst_video::VideoInfo::builder(
                gst_video::VideoFormat::Rgb,
                info.width(),
                info.height(),
            )
            .fps(info.fps())
            .par(info.par())
            .interlace_mode(info.interlace_mode())
            .build()
            .map_err(|e| gst::loggable_error!(CAT, "No RGB layout for {info:?}: {e}"))?;
            let converter = gst_video::VideoConverter::new(&info, &rgb_info, None)
                .map_err(|e| gst::loggable_error!(CAT, "No converter {info:?} -> RGB: {e}"))?;
            let scratch = gst::Buffer::with_size(rgb_info.size())
                .map_err(|e| gst::loggable_error!(CAT, "{e}"))?;
            Some((converter, rgb_info, scratch))
        };
        {
            let mut guard = lock(&self.state);
            let st = guard
                .as_mut()
                .ok_or_else(|| gst::loggable_error!(CAT, "set_format before start"))?;
            st.video = Some(Video {
                info: info.clone(),
                converter,
            });
        }

        let obj = self.obj();
        let output_state = obj
            .set_output_state(gst::Caps::builder("video/x-uigc").build(), Some(state))
            .map_err(|_| gst::loggable_error!(CAT, "Failed to set output state"))?;
        obj.negotiate(output_state)
            .map_err(|_| gst::loggable_error!(CAT, "Failed to negotiate"))?;

        // Until measured, assume one frame of processing time.
        let fps = info.fps();
        if fps.numer() > 0 {
            let frame = gst::ClockTime::SECOND
                .mul_div_floor(fps.denom() as u64, fps.numer() as u64)
                .unwrap_or(gst::ClockTime::ZERO);
            let mut guard = lock(&self.state);
            if let Some(st) = guard.as_mut() {
                if st.reported_latency.is_none() {
                    st.reported_latency = Some(frame);
                    drop(guard);
                    obj.set_latency(frame, Some(frame));
                }
            }
        }
        Ok(())
    }

    fn handle_frame(
        &self,
        mut frame: gst_video::VideoCodecFrame,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let obj = self.obj();
        // Under QoS pressure (a downstream sink reported lateness), drop what is already late.
        if obj.max_encode_time(&frame) < 0 {
            return self.drop_frame(frame, "late (QoS)");
        }
        let settings = lock(&self.settings).clone();
        let t0 = Instant::now();
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let video = state.video.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let budget = Self::budget(&settings, &video.info, frame.duration());
        let image = {
            let input = frame.input_buffer().ok_or(gst::FlowError::Error)?;
            self.to_rgb(video, input)?
        };
        if settings.inter(state.model.models().len()) {
            let fps = Self::fps(&video.info, frame.duration());
            let force = frame
                .flags()
                .contains(gst_video::VideoCodecFrameFlags::FORCE_KEYFRAME);
            if let Some(pipe) = state.pipe.as_mut() {
                if let Err(e) = pipe.worker.submit(image) {
                    gst::element_imp_error!(self, gst::StreamError::Encode, ("{e}"));
                    return Err(gst::FlowError::Error);
                }
                pipe.pending.push_back(Pending {
                    system_frame_number: frame.system_frame_number(),
                    meta: FrameMeta { fps, force },
                });
                let ready = pipe.worker.in_flight() > 1;
                drop(guard);
                drop(frame);
                return if ready {
                    self.code_pending()
                } else {
                    Ok(gst::FlowSuccess::Ok)
                };
            }
            drop(guard);
            let meta = FrameMeta { fps, force };
            return self.handle_stream_frame(frame, &settings, meta, image, t0, None);
        }
        if state.pipe.as_ref().is_some_and(|p| !p.pending.is_empty()) {
            // Frames of the stream before this still frame go first.
            drop(guard);
            self.drain_pipe()?;
            guard = lock(&self.state);
        }
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let max_stages = super::keep_to_stages(settings.keep, state.levels).min(state.num_stages);
        let params = FrameParams {
            stream_id: settings.stream_id,
            frame: state.frame,
            stages: Some(max_stages),
            max_bytes: budget,
            colour: settings.colour,
            ..Default::default()
        };
        // Rate control lives in the core: the density, the longest stage prefix, then as many
        // adaptive tokens as fit the budget; a budget below the smallest packet skips the frame.
        let packet = match state
            .model
            .encode_auto(&image, params, settings.density.into())
        {
            Ok((i, enc)) => Some((i, enc.packet)),
            Err(codec::Error::BudgetTooSmall { .. }) => None,
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Encode, ("Encoding failed: {e}"));
                return Err(gst::FlowError::Error);
            }
        };
        let elapsed = t0.elapsed();
        let Some((chosen, packet)) = packet else {
            let num_stages = state.num_stages;
            drop(guard);
            {
                let mut stats = lock(&self.stats);
                stats.timed += 1;
                stats.total_time += elapsed;
            }
            let budget = budget.unwrap_or(0);
            let n = lock(&self.stats).frames_dropped;
            if n.is_multiple_of(100) {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Encode,
                    ("Frame does not fit the budget of {budget} bytes even with 0 of {num_stages} stages: dropped ({} dropped so far)", n + 1)
                );
            }
            return self.drop_frame(frame, &format!("over budget ({budget} bytes)"));
        };
        state.frame = state.frame.wrapping_add(1);
        let num_stages = state.num_stages;
        let models = state.model.models();
        let which = if models.len() > 1 {
            format!(" ({})", models[chosen].bundle().name)
        } else {
            String::new()
        };
        drop(guard);

        let h = &packet.header;
        let bytes = packet.bytes.len();
        {
            let mut stats = lock(&self.stats);
            stats.frames_encoded += 1;
            stats.timed += 1;
            stats.total_time += elapsed;
            stats.last_bytes = bytes as u32;
            stats.last_bpp = bytes as f64 * 8.0 / (h.width as f64 * h.height as f64);
            stats.last_stages = h.stages as u32;
            let dense = if h.dense() { " dense" } else { "" };
            let colour = if h.colour.is_some() { " + colour" } else { "" };
            stats.last_policy = match budget {
                Some(b) if (h.stages as usize) < max_stages || h.dense() => {
                    format!(
                        "budget {b} B: {}/{num_stages}{dense} stages{colour}{which}",
                        h.stages
                    )
                }
                _ => format!(
                    "keep {}: {}/{num_stages} stages{colour}{which}",
                    format!("{:?}", settings.keep).to_lowercase(),
                    h.stages
                ),
            };
        }
        gst::log!(
            CAT,
            imp = self,
            "Frame {} (stream {}, counter {}): {bytes} bytes, {}/{num_stages} stages, {:?}",
            frame.system_frame_number(),
            h.stream_id,
            h.frame,
            h.stages,
            elapsed
        );

        {
            let mut stats = lock(&self.stats);
            stats.frames_intra += 1;
            stats.last_type = "intra".into();
        }
        frame.set_flags(gst_video::VideoCodecFrameFlags::SYNC_POINT);
        frame.set_output_buffer(gst::Buffer::from_mut_slice(packet.bytes));
        let res = obj.finish_frame(frame);
        self.update_latency();
        res
    }
}

impl UigcEnc {
    /// Codes the oldest frame of the pipeline with the tokens its worker made.
    fn code_pending(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (done, pending) = {
            let mut guard = lock(&self.state);
            let Some(pipe) = guard.as_mut().and_then(|s| s.pipe.as_mut()) else {
                return Ok(gst::FlowSuccess::Ok);
            };
            let done = match pipe.worker.receive() {
                Ok(Some(done)) => done,
                Ok(None) => return Ok(gst::FlowSuccess::Ok),
                Err(e) => {
                    gst::element_imp_error!(self, gst::StreamError::Encode, ("{e}"));
                    return Err(gst::FlowError::Error);
                }
            };
            (
                done,
                pipe.pending
                    .pop_front()
                    .expect("one pending per frame in flight"),
            )
        };
        let obj = self.obj();
        let Some(frame) = obj.frame(pending.system_frame_number as i32) else {
            // Gone (a flush raced with it): nothing to finish.
            return Ok(gst::FlowSuccess::Ok);
        };
        let tokens = match done.tokens {
            Ok(t) => t,
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Encode, ("Encoding failed: {e}"));
                return Err(gst::FlowError::Error);
            }
        };
        let settings = lock(&self.settings).clone();
        // Timed as the network's time plus the coding's (not the wait for the next frame).
        let t0 = Instant::now()
            .checked_sub(done.network)
            .unwrap_or_else(Instant::now);
        self.handle_stream_frame(
            frame,
            &settings,
            pending.meta,
            done.image,
            t0,
            Some((tokens, done.network)),
        )
    }

    /// Codes every frame still in the pipeline (end of stream, or a still frame next).
    fn drain_pipe(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        loop {
            let left = lock(&self.state)
                .as_ref()
                .and_then(|s| s.pipe.as_ref())
                .map_or(0, |p| p.pending.len());
            if left == 0 {
                return Ok(gst::FlowSuccess::Ok);
            }
            self.code_pending()?;
        }
    }

    /// A frame of a stream: intra or inter packets from the core's [`codec::StreamEncoder`]
    /// (made anew, keeping the frame counter and starting with a keyframe, when a stream
    /// setting changes).
    fn handle_stream_frame(
        &self,
        mut frame: gst_video::VideoCodecFrame,
        settings: &Settings,
        meta: FrameMeta,
        image: RgbImage,
        t0: Instant,
        tokens: Option<(codec::TokenGrid, Duration)>,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let FrameMeta { fps, force } = meta;
        let config = codec::StreamConfig {
            stream_id: settings.stream_id,
            keyframe_interval: settings.keyframe_interval,
            refresh_frames: settings.refresh_frames,
            change_threshold: settings.change_threshold as f32,
            colour: settings.colour,
            max_frame_bytes: (settings.max_frame_bytes > 0)
                .then_some(settings.max_frame_bytes as usize),
            target_bitrate: (settings.target_bitrate > 0).then_some(settings.target_bitrate),
            fps,
            ..Default::default()
        };
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        if state.stream.as_ref().is_none_or(|(c, _)| *c != config) {
            let mut enc = codec::StreamEncoder::new(config).map_err(|e| {
                gst::element_imp_error!(self, gst::LibraryError::Settings, ("{e}"));
                gst::FlowError::Error
            })?;
            enc.set_next_frame(state.frame);
            gst::debug!(CAT, imp = self, "New stream coder: {config:?}");
            state.stream = Some((config, enc));
        }
        let (_, enc) = state.stream.as_mut().expect("stream coder");
        if force {
            gst::debug!(CAT, imp = self, "Keyframe requested");
            enc.force_keyframe();
        }
        let result = match tokens {
            Some((tokens, network)) => {
                enc.encode_tokenized(state.model.primary(), &image, tokens, network)
            }
            None => enc.encode(state.model.primary(), &image),
        };
        state.frame = enc.next_frame();
        drop(guard);
        let elapsed = t0.elapsed();
        {
            let mut stats = lock(&self.stats);
            stats.timed += 1;
            stats.total_time += elapsed;
        }
        let p = match result {
            Ok(p) => p,
            Err(codec::Error::BudgetTooSmall { budget, min }) => {
                return self.drop_frame(
                    frame,
                    &format!("over budget ({budget} bytes, smallest packet {min})"),
                );
            }
            Err(e) => {
                gst::element_imp_error!(self, gst::StreamError::Encode, ("Encoding failed: {e}"));
                return Err(gst::FlowError::Error);
            }
        };
        let h = &p.packet.header;
        let bytes = p.packet.bytes.len();
        {
            let mut stats = lock(&self.stats);
            stats.frames_encoded += 1;
            stats.last_bytes = bytes as u32;
            stats.last_bpp = bytes as f64 * 8.0 / (h.width as f64 * h.height as f64);
            stats.last_stages = h.stages as u32;
            stats.last_type = format!(
                "{}: {} tokens sent, {} held, {} refresh rows",
                p.kind.as_str(),
                p.sent_tokens,
                p.held_tokens,
                p.refresh_rows
            );
            stats.last_policy = match (p.budget, p.bucket) {
                (Some(b), Some(level)) => format!("stream, budget {b} B, bucket {level:.0} B"),
                (Some(b), None) => format!("stream, budget {b} B"),
                _ => "stream".into(),
            };
            if p.kind == codec::FrameKind::Intra {
                stats.frames_intra += 1;
            }
        }
        gst::log!(
            CAT,
            imp = self,
            "Frame {} (counter {}): {} packet of {bytes} bytes, {} tokens sent, {:?}",
            frame.system_frame_number(),
            h.frame,
            p.kind.as_str(),
            p.sent_tokens,
            elapsed
        );
        if p.kind == codec::FrameKind::Intra {
            frame.set_flags(gst_video::VideoCodecFrameFlags::SYNC_POINT);
        }
        frame.set_output_buffer(gst::Buffer::from_mut_slice(p.packet.bytes));
        let res = self.obj().finish_frame(frame);
        self.update_latency();
        res
    }
}
