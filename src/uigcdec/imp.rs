// SPDX-License-Identifier: MIT OR Apache-2.0

use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use super::LossCounter;
use crate::codec;
use crate::element::{
    lock, model_properties, string_or, ExecutionProvider, DEFAULT_EP, DEFAULT_MODEL,
    DEFAULT_THREADS,
};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "uigcdec",
        gst::DebugColorFlags::empty(),
        Some("uigc ultra-low-bitrate image decoder"),
    )
});

const DEFAULT_REGEN: &str = "argmax";
const DEFAULT_MAX_PIXELS: u64 = codec::DEFAULT_MAX_PIXELS;
const DEFAULT_RENDER: Render = Render::Auto;
const DEFAULT_RENDER_FULL_EVERY: u32 = codec::render::DEFAULT_FULL_EVERY;

/// How inter frames are rendered (docs/video.md "Receiver: rendering only what changed").
#[derive(Debug, Eq, PartialEq, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstUigcRender")]
pub(crate) enum Render {
    #[default]
    #[enum_value(
        name = "Auto: tiles when the model bundle has a tile graph, else whole pictures",
        nick = "auto"
    )]
    Auto,
    #[enum_value(
        name = "Full: the decoder network runs on every whole picture",
        nick = "full"
    )]
    Full,
    #[enum_value(
        name = "Tiles: only around changed tokens (a model without a tile graph is an error)",
        nick = "tiles"
    )]
    Tiles,
}

impl From<Render> for codec::RenderMode {
    fn from(r: Render) -> Self {
        match r {
            Render::Auto => codec::RenderMode::Auto,
            Render::Full => codec::RenderMode::Full,
            Render::Tiles => codec::RenderMode::Tiles,
        }
    }
}
const DEFAULT_WORK_LIMIT: u64 = codec::DEFAULT_WORK_LIMIT;

#[derive(Debug, Clone)]
struct Settings {
    model: String,
    ep: ExecutionProvider,
    threads: u32,
    regen: String,
    max_pixels: u64,
    render: Render,
    render_full_every: u32,
    work_limit: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.into(),
            ep: DEFAULT_EP,
            threads: DEFAULT_THREADS,
            regen: DEFAULT_REGEN.into(),
            max_pixels: DEFAULT_MAX_PIXELS,
            render: DEFAULT_RENDER,
            render_full_every: DEFAULT_RENDER_FULL_EVERY,
            work_limit: DEFAULT_WORK_LIMIT,
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    decoded: u64,
    dropped: u64,
    lost: u64,
    concealed: u64,
    total_time: Duration,
}

/// Most streams (stream ids) one decoder follows at once; the least recently heard is
/// forgotten first, so a flood of stream ids cannot grow memory.
const MAX_STREAMS: usize = 64;

struct State {
    model: codec::ModelSet,
    model_desc: String,
    input_state:
        Option<gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>>,
    losses: LossCounter,
    /// Per stream id: its receiver state and when it was last heard (packet count).
    streams: std::collections::HashMap<u32, (codec::StreamDecoder, u64)>,
    packets: u64,
    /// Packets dropped since the last decoded one: they arrived, so they fill the next gap in
    /// the frame counter before anything is counted lost.
    dropped_since_decoded: u64,
    reported_latency: Option<gst::ClockTime>,
    /// How each stream's receiver renders its pictures.
    render: codec::RenderPolicy,
}

impl State {
    /// Decodes one packet with its stream's receiver state (made on first sight); returns the
    /// packet's header with the frame.
    fn decode(&mut self, data: &[u8]) -> codec::Result<(codec::Header, codec::StreamFrame)> {
        let header = codec::bitstream::parse_packet(data)?.header;
        let id = header.stream_id;
        self.packets += 1;
        if !self.streams.contains_key(&id) && self.streams.len() >= MAX_STREAMS {
            if let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| *k)
            {
                self.streams.remove(&oldest);
            }
        }
        let packets = self.packets;
        let entry = self
            .streams
            .entry(id)
            .or_insert_with(|| (codec::StreamDecoder::with_render(self.render), packets));
        entry.1 = packets;
        let model = self.model.model_for(data)?;
        Ok((header, entry.0.decode(model, data)?))
    }
}

#[derive(Default)]
pub struct UigcDec {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
}

impl UigcDec {
    /// Drops a packet that cannot be decoded: a weighted decoder error (the base class's
    /// `max-errors` decides whether the stream goes on), and the frame is dropped.
    fn reject(
        &self,
        frame: gst_video::VideoCodecFrame,
        err: &codec::Error,
        model_desc: &str,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let dropped_so_far = {
            let mut stats = lock(&self.stats);
            stats.dropped += 1;
            stats.dropped
        };
        let obj = self.obj();
        let n = frame.system_frame_number();
        let (domain, text) = match err {
            codec::Error::Packet(codec::PacketError::ModelMismatch { .. }) => (
                gst::StreamError::WrongType,
                format!("packet {n} dropped: {err} (this decoder runs {model_desc})"),
            ),
            codec::Error::Packet(_) => (
                gst::StreamError::Decode,
                format!("packet {n} dropped: {err}"),
            ),
            _ => (
                gst::StreamError::Decode,
                format!("frame {n} dropped: decoding failed: {err}"),
            ),
        };
        gst::warning!(CAT, imp = self, "{text}");
        // On the bus: the first drop, then every 100th (a wrong model would flood it).
        if dropped_so_far % 100 == 1 {
            gst::element_imp_warning!(self, domain, ("{text} ({dropped_so_far} dropped so far)"));
        }
        let res = gst_video::video_decoder_error!(&*obj, 1, domain, ("{text}"));
        let dropped = obj.drop_frame(frame);
        res.and(dropped)
    }

    fn update_latency(&self) {
        let mean = {
            let stats = lock(&self.stats);
            if stats.decoded == 0 {
                return;
            }
            stats.total_time / stats.decoded.min(u32::MAX as u64) as u32
        };
        let latency = crate::element::processing_latency(mean);
        {
            let mut state = lock(&self.state);
            let Some(state) = state.as_mut() else { return };
            if state.reported_latency.is_some_and(|r| latency <= r) {
                return;
            }
            state.reported_latency = Some(latency);
        }
        gst::debug!(CAT, imp = self, "Reporting latency {latency}");
        self.obj().set_latency(latency, Some(latency));
    }

    /// Makes the output RGB at `width` x `height`, renegotiating when that changed.
    fn ensure_output(
        &self,
        width: u32,
        height: u32,
        input_state: Option<
            &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
        >,
    ) -> Result<gst_video::VideoInfo, gst::FlowError> {
        let obj = self.obj();
        if let Some(current) = obj.output_state() {
            let info = current.info();
            if info.width() == width && info.height() == height {
                return Ok(info.clone());
            }
        }
        gst::info!(CAT, imp = self, "Output size {width}x{height}");
        // Only the frame rate and pixel aspect ratio come from the input caps (when there are
        // any: plain udpsrc sends none); the colorimetry is the RGB default.
        let mut builder = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, width, height);
        if let Some(input) = input_state {
            builder = builder.fps(input.info().fps()).par(input.info().par());
        }
        let info = builder.build().map_err(|e| {
            gst::error!(CAT, imp = self, "No RGB layout for {width}x{height}: {e}");
            gst::FlowError::NotNegotiated
        })?;
        let mut output_state =
            obj.set_output_state(gst_video::VideoFormat::Rgb, width, height, None)?;
        output_state.set_info(info);
        obj.negotiate(output_state).map_err(|e| {
            gst::error!(
                CAT,
                imp = self,
                "Failed to negotiate RGB {width}x{height}: {e}"
            );
            gst::FlowError::NotNegotiated
        })?;
        Ok(obj
            .output_state()
            .ok_or(gst::FlowError::NotNegotiated)?
            .info()
            .clone())
    }
}

#[glib::object_subclass]
impl ObjectSubclass for UigcDec {
    const NAME: &'static str = "GstUigcDec";
    type Type = super::UigcDec;
    type ParentType = gst_video::VideoDecoder;
}

impl ObjectImpl for UigcDec {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut props = model_properties("detokenizer", "Must be the sender's model").to_vec();
            props.extend([
                glib::ParamSpecString::builder("regen")
                    .nick("Regeneration mode")
                    .blurb(
                        "How tokens the sender did not send are regenerated: argmax (the most \
                         probable token, stage by stage, as in the UIGC paper), iterative[:N[:S]] \
                         (N rounds per stage, most confident first; S samples the candidates) \
                         or sample[:S] (seeded from \
                         the packet, temperature 1/S). All are exact: any receiver shows the \
                         same frame",
                    )
                    .default_value(Some(DEFAULT_REGEN))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-pixels")
                    .nick("Max pixels")
                    .blurb(
                        "Largest frame to decode (width x height; twice each side for a dense \
                         packet): larger packets are dropped as corrupt before any work, so a \
                         hostile packet cannot claim gigabytes",
                    )
                    .minimum(1)
                    .default_value(DEFAULT_MAX_PIXELS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("render", DEFAULT_RENDER)
                    .nick("Render")
                    .blurb(
                        "How inter frames are rendered: the decoder network re-run only on tiles \
                         around the tokens that changed, over the last picture (tiles), or on \
                         every whole picture (full). Tokens are the same either way; tiled \
                         pixels differ from a full decode by a fraction of a level on average \
                         (docs/video.md)",
                    )
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("render-full-every")
                    .nick("Full decode every")
                    .blurb(
                        "With tiles: a full decode after this many tiled frames, which refreshes \
                         the normalisation statistics the tiles use (0: only on keyframes and \
                         large changes)",
                    )
                    .default_value(DEFAULT_RENDER_FULL_EVERY)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("work-limit")
                    .nick("Work limit")
                    .blurb(
                        "Tokens (16x16 pixels each, four for a dense packet) a packet may make \
                         the decoder work on whatever its size; above it a packet must carry one \
                         byte per token, else it is dropped before any work. Raise it (and the \
                         sender's work-limit) for frames above 1024x512 sent in small packets",
                    )
                    .default_value(DEFAULT_WORK_LIMIT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-decoded")
                    .nick("Frames decoded")
                    .blurb(
                        "Packets decoded into frames since the element started (a duplicated \
                         packet is decoded and counted again)",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-dropped")
                    .nick("Frames dropped")
                    .blurb(
                        "Packets that arrived but were not decoded since the element started: \
                         corrupt, truncated, foreign, too large or from another model. Every \
                         packet received counts once in frames-decoded or frames-dropped",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-concealed")
                    .nick("Frames concealed")
                    .blurb(
                        "Frames shown that are not exactly the sender's since the element \
                         started: inter packets after a loss, shown with the rows the gradual \
                         refresh has made exact so far, or the last picture again (included in \
                         frames-decoded)",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-lost")
                    .nick("Frames lost")
                    .blurb(
                        "Frames that never arrived since the element started: the gaps in the \
                         frame counter of each sender (stream id) between decoded packets, less \
                         the packets dropped in between (those arrived: they count in \
                         frames-dropped only, never in both). A loss after the last decoded \
                         packet is counted when the next one arrives",
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
        // One buffer = one packet = one frame (what udpsrc and rtpgstdepay deliver).
        self.obj().set_packetized(true);
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut settings = lock(&self.settings);
        match pspec.name() {
            "model" => settings.model = string_or(value, DEFAULT_MODEL),
            "ep" => settings.ep = value.get().expect("type checked upstream"),
            "threads" => settings.threads = value.get().expect("type checked upstream"),
            "regen" => settings.regen = string_or(value, DEFAULT_REGEN),
            "max-pixels" => settings.max_pixels = value.get().expect("type checked upstream"),
            "render" => settings.render = value.get().expect("type checked upstream"),
            "render-full-every" => {
                settings.render_full_every = value.get().expect("type checked upstream")
            }
            "work-limit" => settings.work_limit = value.get().expect("type checked upstream"),
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
            "threads" => settings.threads.to_value(),
            "regen" => settings.regen.to_value(),
            "max-pixels" => settings.max_pixels.to_value(),
            "render" => settings.render.to_value(),
            "render-full-every" => settings.render_full_every.to_value(),
            "work-limit" => settings.work_limit.to_value(),
            "frames-decoded" => stats.decoded.to_value(),
            "frames-dropped" => stats.dropped.to_value(),
            "frames-lost" => stats.lost.to_value(),
            "frames-concealed" => stats.concealed.to_value(),
            other => unreachable!("unknown property {other}"),
        }
    }
}

impl GstObjectImpl for UigcDec {}

impl ElementImpl for UigcDec {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "uigc decoder",
                "Codec/Decoder/Video",
                "Ultra-low-bitrate image decoder (VQ tokenizer + multi-stage prior): one packet \
                 per buffer to one RGB frame; bad packets are dropped and counted",
                "uigc developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let max = codec::bitstream::MAX_DIMENSION as i32;
            let sink = gst::PadTemplate::new(
                "sink",
                gst::PadDirection::Sink,
                gst::PadPresence::Always,
                &gst::Caps::builder("video/x-uigc").build(),
            )
            .unwrap();
            let src_caps = gst_video::VideoCapsBuilder::new()
                .format(gst_video::VideoFormat::Rgb)
                .width_range(1..=max)
                .height_range(1..=max)
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

impl VideoDecoderImpl for UigcDec {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let regen: codec::RegenMode = settings
            .regen
            .parse()
            .map_err(|e: codec::Error| gst::error_msg!(gst::LibraryError::Settings, ("{e}")))?;
        let (mut model, model_desc) =
            crate::element::load_models(&settings.model, settings.ep, settings.threads)?;
        for m in model.models_mut() {
            m.token_codec().set_regen(regen);
            m.token_codec().set_max_pixels(settings.max_pixels);
            m.token_codec().set_work_limit(settings.work_limit);
        }
        if settings.render == Render::Tiles {
            if let Some(m) = model.models_mut().iter().find(|m| !m.has_tile_graph()) {
                return Err(gst::error_msg!(
                    gst::LibraryError::Settings,
                    (
                        "render=tiles: model {} has no tile graph (tokenizer_decoder_tile, \
                         docs/bundle.md)",
                        m.bundle().dir.display()
                    )
                ));
            }
        }
        gst::info!(CAT, imp = self, "Loaded {model_desc}");
        *lock(&self.stats) = Stats::default();
        *lock(&self.state) = Some(State {
            model,
            model_desc,
            input_state: None,
            losses: LossCounter::default(),
            streams: Default::default(),
            packets: 0,
            dropped_since_decoded: 0,
            reported_latency: None,
            render: codec::RenderPolicy {
                mode: settings.render.into(),
                full_every: settings.render_full_every,
                ..Default::default()
            },
        });
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.state) = None;
        Ok(())
    }

    fn set_format(
        &self,
        input_state: &gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>,
    ) -> Result<(), gst::LoggableError> {
        gst::debug!(CAT, imp = self, "Input caps {:?}", input_state.caps());
        let mut guard = lock(&self.state);
        let state = guard
            .as_mut()
            .ok_or_else(|| gst::loggable_error!(CAT, "set_format before start"))?;
        state.input_state = Some(input_state.clone());
        Ok(())
    }

    fn handle_frame(
        &self,
        mut frame: gst_video::VideoCodecFrame,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let t0 = Instant::now();
        let mut guard = lock(&self.state);
        let state = guard.as_mut().ok_or(gst::FlowError::NotNegotiated)?;
        let decoded = {
            let input = frame.input_buffer().ok_or(gst::FlowError::Error)?;
            let map = input.map_readable().map_err(|_| {
                gst::element_imp_error!(self, gst::CoreError::Failed, ["Failed to map input"]);
                gst::FlowError::Error
            })?;
            state.decode(map.as_slice())
        };
        let (header, decoded) = match decoded {
            Ok(d) => d,
            Err(e) => {
                state.dropped_since_decoded += 1;
                let desc = state.model_desc.clone();
                drop(guard);
                return self.reject(frame, &e, &desc);
            }
        };
        let mut lost = state.losses.record(header.stream_id, header.frame);
        if lost > 0 {
            // A dropped packet's own frame counter cannot be trusted, but it did arrive: the
            // packets dropped since the last decoded one are taken to be frames of this gap.
            lost -= lost.min(state.dropped_since_decoded as i64);
        }
        state.dropped_since_decoded = 0;
        let input_state = state.input_state.clone();
        drop(guard);

        let image = &decoded.image;
        let info = self.ensure_output(image.width, image.height, input_state.as_ref())?;
        self.obj().allocate_output_frame(&mut frame, None)?;
        {
            let out = frame.output_buffer_mut().ok_or(gst::FlowError::Error)?;
            let mut out =
                gst_video::VideoFrameRef::from_buffer_ref_writable(out, &info).map_err(|_| {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Failed,
                        ["Failed to map output buffer writable"]
                    );
                    gst::FlowError::Error
                })?;
            let stride = out.plane_stride()[0] as usize;
            let row = image.width as usize * 3;
            let plane = out.plane_data_mut(0).map_err(|_| gst::FlowError::Error)?;
            for (y, src) in image.data.chunks_exact(row).enumerate() {
                plane[y * stride..y * stride + row].copy_from_slice(src);
            }
        }
        {
            let mut stats = lock(&self.stats);
            stats.decoded += 1;
            stats.total_time += t0.elapsed();
            stats.lost = stats.lost.saturating_add_signed(lost);
            if decoded.status != codec::FrameStatus::Exact {
                stats.concealed += 1;
            }
        }
        gst::log!(
            CAT,
            imp = self,
            "Packet {} (stream {}, counter {}, {}, {:?}): {}x{} in {:?}",
            frame.system_frame_number(),
            header.stream_id,
            header.frame,
            decoded.kind.as_str(),
            decoded.status,
            image.width,
            image.height,
            t0.elapsed()
        );
        let res = self.obj().finish_frame(frame);
        self.update_latency();
        res
    }
}
