// SPDX-License-Identifier: MIT OR Apache-2.0

use std::collections::VecDeque;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_video::prelude::*;
use gst_video::subclass::prelude::*;

use super::{Arrival, Seen};
use crate::codec;
use crate::element::{
    lock, model_properties, string_or, DecoderChoice, EpSettings, ExecutionProvider, DEFAULT_EP,
    DEFAULT_MODEL, DEFAULT_THREADS,
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
const DEFAULT_DECODER: DecoderChoice = DecoderChoice::Auto;
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
    gpu: EpSettings,
    regen: String,
    max_pixels: u64,
    render: Render,
    decoder: DecoderChoice,
    render_full_every: u32,
    work_limit: u64,
    stats_every: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.into(),
            ep: DEFAULT_EP,
            threads: DEFAULT_THREADS,
            gpu: EpSettings::default(),
            regen: DEFAULT_REGEN.into(),
            max_pixels: DEFAULT_MAX_PIXELS,
            render: DEFAULT_RENDER,
            decoder: DEFAULT_DECODER,
            render_full_every: DEFAULT_RENDER_FULL_EVERY,
            work_limit: DEFAULT_WORK_LIMIT,
            stats_every: 0,
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    decoded: u64,
    dropped: u64,
    lost: u64,
    concealed: u64,
    late: u64,
    duplicate: u64,
    /// Frames decoded while the receiver could not keep up with its live input.
    behind: u64,
    total_time: Duration,
    /// Since the last `uigcdec-stats` message: packets, their time, the longest.
    interval_packets: u64,
    interval_time: Duration,
    interval_max: Duration,
}

/// The receiver's load is measured over its last packets: at least this many, spanning at
/// least [`LOAD_SPAN`] (a short burst, e.g. the backlog of a slow first packet, is not a trend).
const LOAD_WINDOW: usize = 16;
const LOAD_SPAN: Duration = Duration::from_secs(1);
/// Most packets the load window holds.
const LOAD_MAX: usize = 4096;
/// Share of the wall time spent on packets (decoding and pushing downstream) from which a
/// receiver with a live input is behind: its input queues up (in the socket) and arrives late
/// or is lost. It is back in time below [`LOAD_RECOVERED`].
const LOAD_BEHIND: f64 = 0.95;
const LOAD_RECOVERED: f64 = 0.8;

/// The receiver's load over its last packets.
#[derive(Debug, Default)]
struct Load {
    /// The first packet (model warm-up) is not measured.
    warm: bool,
    /// (start, time spent) of each packet, oldest first.
    window: VecDeque<(Instant, Duration)>,
    /// Share of the window's wall time spent on packets.
    busy: f64,
    behind: bool,
}

impl Load {
    /// Records one packet; returns the new share when the window is full.
    fn record(&mut self, start: Instant, spent: Duration) -> Option<f64> {
        if !std::mem::replace(&mut self.warm, true) {
            return None;
        }
        self.window.push_back((start, spent));
        let end = start + spent;
        while self.window.len() > LOAD_WINDOW
            && (self.window.len() > LOAD_MAX || end.duration_since(self.window[1].0) >= LOAD_SPAN)
        {
            self.window.pop_front();
        }
        let first = self.window.front()?.0;
        if self.window.len() < LOAD_WINDOW || end.duration_since(first) < LOAD_SPAN {
            return None;
        }
        let wall = end.duration_since(first).as_secs_f64();
        let spent: f64 = self.window.iter().map(|(_, d)| d.as_secs_f64()).sum();
        self.busy = if wall > 0.0 {
            (spent / wall).min(1.0)
        } else {
            1.0
        };
        Some(self.busy)
    }
}

/// Most streams (stream ids) one decoder follows at once; the least recently heard is
/// forgotten first, so a flood of stream ids cannot grow memory.
const MAX_STREAMS: usize = 64;

struct State {
    model: codec::ModelSet,
    model_desc: String,
    input_state:
        Option<gst_video::VideoCodecState<'static, gst_video::video_codec_state::Readable>>,
    /// Per stream id: its receiver state, when it was last heard (packet count) and the frame
    /// counters it delivered (from its first decoded packet on).
    streams: std::collections::HashMap<u32, StreamEntry>,
    packets: u64,
    /// Packets dropped since the last decoded one: they arrived, so they fill the next gap in
    /// the frame counter before anything is counted lost.
    dropped_since_decoded: u64,
    reported_latency: Option<gst::ClockTime>,
    /// How each stream's receiver renders its pictures.
    render: codec::RenderPolicy,
    /// Whether upstream is live (asked once, with the first packet).
    live: Option<bool>,
}

struct StreamEntry {
    decoder: codec::StreamDecoder,
    heard: u64,
    seen: Option<Seen>,
    /// (frame counter, check value) of the last packets received, newest last: tells a
    /// duplicate from a restarted sender's intra packet under a counter already heard.
    checks: VecDeque<(u32, u16)>,
}

impl StreamEntry {
    fn remember(&mut self, h: &codec::Header) {
        if self.checks.len() > Seen::WINDOW as usize {
            self.checks.pop_front();
        }
        self.checks.push_back((h.frame, h.check));
    }
}

/// What became of one packet.
enum Outcome {
    /// Decoded: the frame, and how many frames of its stream were lost before it.
    Frame(codec::Header, codec::StreamFrame, u32),
    /// A late (reordered) or duplicated packet: dropped before any decoding work.
    Stale(codec::Header, Arrival),
}

impl State {
    /// Decodes one packet with its stream's receiver state (made on first sight), unless its
    /// frame counter says it is late or a duplicate.
    fn decode(&mut self, data: &[u8]) -> codec::Result<Outcome> {
        let header = codec::bitstream::parse_packet(data)?.header;
        let id = header.stream_id;
        self.packets += 1;
        if !self.streams.contains_key(&id) && self.streams.len() >= MAX_STREAMS {
            if let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, e)| e.heard)
                .map(|(k, _)| *k)
            {
                self.streams.remove(&oldest);
            }
        }
        let packets = self.packets;
        let entry = self.streams.entry(id).or_insert_with(|| StreamEntry {
            decoder: codec::StreamDecoder::with_render(self.render),
            heard: packets,
            seen: None,
            checks: VecDeque::new(),
        });
        entry.heard = packets;
        // Stale packets cost nothing: the frame counter and check value (unverified, like the
        // rest of the header until the payload is decoded) are all that is read.
        let mut restart = entry.seen.is_none();
        if let Some(seen) = &mut entry.seen {
            let a = seen.classify(header.frame);
            let stale = match a {
                Arrival::New { .. } => false,
                Arrival::Late { .. } => true,
                Arrival::Duplicate => {
                    let same = entry
                        .checks
                        .iter()
                        .any(|&(f, c)| (f, c) == (header.frame, header.check));
                    // Another intra packet under a counter already heard: the sender
                    // restarted (a new start); another inter packet: nothing to use.
                    restart = !same && header.inter.is_none();
                    !restart
                }
            };
            if stale {
                seen.record(header.frame);
                entry.remember(&header);
                return Ok(Outcome::Stale(header, a));
            }
        }
        let model = self.model.model_for(data)?;
        let frame = entry.decoder.decode(model, data)?;
        if frame.status == codec::FrameStatus::Concealed
            && !entry.seen.as_ref().is_some_and(|seen| {
                matches!(seen.classify(header.frame), Arrival::New { lost } if lost < Seen::WINDOW)
            })
        {
            // A concealed packet is not verified (nothing to decode it against): a corrupt or
            // forged header could claim any frame counter. Shown (the last picture again) and
            // counted only when it is one of the next WINDOW frames.
            return Err(codec::PacketError::NoReference {
                frame: header.frame,
                reference: header.inter.map_or(header.frame, |i| i.reference),
            }
            .into());
        }
        if restart {
            entry.checks.clear();
        }
        entry.remember(&header);
        let lost = match &mut entry.seen {
            Some(seen) if !restart => match seen.record(header.frame) {
                Arrival::New { lost } => lost,
                _ => 0,
            },
            _ => {
                entry.seen = Some(Seen::new(header.frame));
                0
            }
        };
        Ok(Outcome::Frame(header, frame, lost))
    }
}

#[derive(Default)]
pub struct UigcDec {
    settings: Mutex<Settings>,
    state: Mutex<Option<State>>,
    stats: Mutex<Stats>,
    load: Mutex<Load>,
    /// What runs the networks (the `provider` property).
    provider: Mutex<String>,
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

    /// Drops a late or duplicated packet (not an error: the link reordered or repeated it).
    fn drop_stale(
        &self,
        frame: gst_video::VideoCodecFrame,
        header: &codec::Header,
        arrival: Arrival,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        {
            let mut stats = lock(&self.stats);
            match arrival {
                Arrival::Late { was_lost } => {
                    stats.late += 1;
                    if was_lost {
                        stats.lost = stats.lost.saturating_sub(1);
                    }
                }
                _ => stats.duplicate += 1,
            }
        }
        gst::debug!(
            CAT,
            imp = self,
            "Packet {} (stream {}, counter {}) dropped: {:?}",
            frame.system_frame_number(),
            header.stream_id,
            header.frame,
            arrival
        );
        self.obj().drop_frame(frame)
    }

    /// Measures the receiver's load after a packet that took `spent` from `start`. With a live
    /// input, a receiver busy nearly all the time is behind its sender: it says so (a bus
    /// warning and a QoS message once per episode, upstream a QoS overflow event, the
    /// `frames-behind` counter) instead of silently lagging.
    fn update_load(
        &self,
        start: Instant,
        spent: Duration,
        live: bool,
        pts: Option<gst::ClockTime>,
    ) {
        let (busy, became_behind, recovered, n, per) = {
            let mut load = lock(&self.load);
            let Some(busy) = load.record(start, spent) else {
                return;
            };
            let n = load.window.len();
            let per = load
                .window
                .iter()
                .map(|(_, d)| d.as_secs_f64())
                .sum::<f64>()
                * 1e3
                / n as f64;
            let was = load.behind;
            if live && busy >= LOAD_BEHIND {
                load.behind = true;
            } else if busy < LOAD_RECOVERED {
                load.behind = false;
            }
            (busy, load.behind && !was, was && !load.behind, n, per)
        };
        let behind = lock(&self.load).behind;
        if behind {
            let mut stats = lock(&self.stats);
            stats.behind += 1;
        }
        if became_behind {
            let (decoded, dropped) = {
                let s = lock(&self.stats);
                (s.decoded, s.dropped + s.late + s.duplicate)
            };
            gst::element_imp_warning!(
                self,
                gst::CoreError::TooLazy,
                (
                    "uigcdec cannot keep up with its input: busy {:.0} % of the time over its \
                     last {} packets ({per:.0} ms per packet, at most {:.1} packets/s); \
                     packets queue up, arrive late or are lost (frames-behind, frames-lost). \
                     Lower the sender's frame rate or size, or give the receiver more CPU",
                    busy * 100.0,
                    n,
                    1e3 / per.max(1e-3)
                )
            );
            let obj = self.obj();
            let running_time = obj
                .input_segment()
                .downcast::<gst::ClockTime>()
                .ok()
                .and_then(|seg| seg.to_running_time(pts));
            let msg = gst::message::Qos::builder(true)
                .src(&*obj)
                .running_time(running_time)
                .timestamp(pts)
                .values(0, busy / LOAD_RECOVERED, 1_000_000)
                .stats(
                    gst::format::Buffers::from_u64(decoded),
                    gst::format::Buffers::from_u64(dropped),
                )
                .build();
            let _ = obj.post_message(msg);
            if let Some(ts) = pts {
                let ev = gst::event::Qos::new(
                    gst::QOSType::Overflow,
                    busy / LOAD_RECOVERED,
                    0,
                    running_time.unwrap_or(ts),
                );
                let _ = obj.sink_pad().push_event(ev);
            }
        } else if recovered {
            gst::info!(CAT, imp = self, "Back in time: busy {:.0} %", busy * 100.0);
            gst::element_imp_info!(
                self,
                gst::CoreError::TooLazy,
                (
                    "uigcdec keeps up again: busy {:.0} % of the time",
                    busy * 100.0
                )
            );
        }
    }

    /// Posts the counters as an element message `uigcdec-stats` (gst-launch-1.0 -m prints it).
    fn post_stats(&self) {
        let st = {
            let mut s = lock(&self.stats);
            let mean = if s.interval_packets > 0 {
                s.interval_time.as_secs_f64() * 1e3 / s.interval_packets as f64
            } else {
                0.0
            };
            let st = gst::Structure::builder("uigcdec-stats")
                .field("frames-decoded", s.decoded)
                .field("frames-dropped", s.dropped)
                .field("frames-lost", s.lost)
                .field("frames-late", s.late)
                .field("frames-duplicate", s.duplicate)
                .field("frames-concealed", s.concealed)
                .field("frames-behind", s.behind)
                .field("busy", lock(&self.load).busy)
                .field("packets", s.interval_packets)
                .field("mean-ms", mean)
                .field("max-ms", s.interval_max.as_secs_f64() * 1e3)
                .build();
            s.interval_packets = 0;
            s.interval_time = Duration::ZERO;
            s.interval_max = Duration::ZERO;
            st
        };
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(st).src(&*obj).build());
    }

    /// Accounts one packet's time and posts `uigcdec-stats` every `stats-every` packets.
    fn account_packet(&self, spent: Duration) {
        let every = u64::from(lock(&self.settings).stats_every);
        let due = {
            let mut s = lock(&self.stats);
            s.interval_packets += 1;
            s.interval_time += spent;
            s.interval_max = s.interval_max.max(spent);
            every > 0 && s.interval_packets >= every
        };
        if due {
            self.post_stats();
        }
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
            let mut props = model_properties("detokenizer", "Must be the sender's model");
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
                glib::ParamSpecEnum::builder_with_default("decoder", DEFAULT_DECODER)
                    .nick("Tokenizer decoder")
                    .blurb(
                        "auto: the bundle's fast decoder when it has one and ep is cpu, else the \
                         full one; full: the model's float decoder graphs; fast: the int8 \
                         sub-pixel decoder; smooth: the decoder without the 8-pixel grid (fast \
                         and smooth are an error when the bundle has none). Same tokens and model \
                         id; fast pictures are within about 43 dB PSNR of full ones \
                         (docs/bundle.md)",
                    )
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
                glib::ParamSpecUInt::builder("stats-every")
                    .nick("Stats every")
                    .blurb(
                        "Post an element message `uigcdec-stats` (every counter, busy, and the \
                         mean and longest time per packet since the last message) after every \
                         this many packets (0: only at end of stream, where it is always posted)",
                    )
                    .default_value(0)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-decoded")
                    .nick("Frames decoded")
                    .blurb(
                        "Packets decoded into frames since the element started (late and \
                         duplicated packets are not decoded: frames-late, frames-duplicate)",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-dropped")
                    .nick("Frames dropped")
                    .blurb(
                        "Packets that arrived but were not decoded since the element started: \
                         corrupt, truncated, foreign, too large or from another model. Every \
                         packet received counts once in frames-decoded, frames-dropped, \
                         frames-late or frames-duplicate",
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
                         packet is counted when the next one arrives; a lost frame that \
                         arrives late moves to frames-late. Without hostile packets, frames \
                         sent = frames-decoded + frames-dropped + frames-lost + frames-late \
                         (+ the losses after the last packet)",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-late")
                    .nick("Frames late")
                    .blurb(
                        "Packets that arrived after a newer frame of their stream (reordered \
                         on the link, within 64 frames): dropped without decoding, too late to \
                         be shown",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-duplicate")
                    .nick("Frames duplicate")
                    .blurb(
                        "Packets whose frame (stream id and frame counter) already arrived: \
                         dropped without decoding (a duplicate would otherwise break the \
                         stream's inter prediction)",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecUInt64::builder("frames-behind")
                    .nick("Frames behind")
                    .blurb(
                        "Frames decoded while the receiver could not keep up with its live \
                         input (busy at least 95 % of the time over its last packets, at least \
                         16 spanning at least 1 s, decoding and pushing downstream): its input \
                         queues up and arrives late or is lost. Each episode also posts a \
                         warning and a QoS message on the bus",
                    )
                    .read_only()
                    .build(),
                glib::ParamSpecDouble::builder("busy")
                    .nick("Busy")
                    .blurb(
                        "Share of the wall time the receiver spent on its last packets (at \
                         least 16 spanning at least 1 s; decoding and pushing downstream); 0 \
                         until then",
                    )
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(0.0)
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
            name if settings.gpu.set(name, value) => {}
            "regen" => settings.regen = string_or(value, DEFAULT_REGEN),
            "max-pixels" => settings.max_pixels = value.get().expect("type checked upstream"),
            "render" => settings.render = value.get().expect("type checked upstream"),
            "decoder" => settings.decoder = value.get().expect("type checked upstream"),
            "render-full-every" => {
                settings.render_full_every = value.get().expect("type checked upstream")
            }
            "work-limit" => settings.work_limit = value.get().expect("type checked upstream"),
            "stats-every" => settings.stats_every = value.get().expect("type checked upstream"),
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
            name @ ("device-id" | "trt-cache" | "fp16" | "warm-up" | "provider") => settings
                .gpu
                .get(name, &lock(&self.provider))
                .expect("a shared GPU property"),
            "regen" => settings.regen.to_value(),
            "max-pixels" => settings.max_pixels.to_value(),
            "render" => settings.render.to_value(),
            "decoder" => settings.decoder.to_value(),
            "render-full-every" => settings.render_full_every.to_value(),
            "work-limit" => settings.work_limit.to_value(),
            "stats-every" => settings.stats_every.to_value(),
            "frames-decoded" => stats.decoded.to_value(),
            "frames-dropped" => stats.dropped.to_value(),
            "frames-lost" => stats.lost.to_value(),
            "frames-concealed" => stats.concealed.to_value(),
            "frames-late" => stats.late.to_value(),
            "frames-duplicate" => stats.duplicate.to_value(),
            "frames-behind" => stats.behind.to_value(),
            "busy" => lock(&self.load).busy.to_value(),
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
        let opts = crate::element::runtime_options(
            settings.ep,
            settings.threads,
            &settings.gpu,
            codec::Role::Decoder,
            codec::EncoderChoice::Full,
            settings.decoder.into(),
        )?;
        let (mut model, model_desc) = crate::element::load_models(&settings.model, &opts)?;
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
        if let Some(done) =
            crate::element::warm_up(&mut model, &settings.gpu, codec::Role::Decoder)?
        {
            gst::info!(CAT, imp = self, "{done}");
        }
        *lock(&self.provider) = model_desc.clone();
        *lock(&self.stats) = Stats::default();
        *lock(&self.load) = Load::default();
        *lock(&self.state) = Some(State {
            model,
            model_desc,
            input_state: None,
            streams: Default::default(),
            packets: 0,
            dropped_since_decoded: 0,
            reported_latency: None,
            render: codec::RenderPolicy {
                mode: settings.render.into(),
                full_every: settings.render_full_every,
                ..Default::default()
            },
            live: None,
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
        frame: gst_video::VideoCodecFrame,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        let t0 = Instant::now();
        let pts = frame.pts();
        let live = self.upstream_live();
        let res = self.handle_packet(frame, t0);
        let spent = t0.elapsed();
        self.update_load(t0, spent, live, pts);
        self.account_packet(spent);
        res
    }

    fn sink_event(&self, event: gst::Event) -> bool {
        if let gst::EventView::Eos(_) = event.view() {
            self.post_stats();
        }
        self.parent_sink_event(event)
    }
}

impl UigcDec {
    /// Whether upstream is live (asked once).
    fn upstream_live(&self) -> bool {
        if let Some(live) = lock(&self.state).as_ref().and_then(|s| s.live) {
            return live;
        }
        let mut q = gst::query::Latency::new();
        let live = self.obj().sink_pad().peer_query(&mut q) && q.result().0;
        if let Some(s) = lock(&self.state).as_mut() {
            s.live = Some(live);
        }
        live
    }

    fn handle_packet(
        &self,
        mut frame: gst_video::VideoCodecFrame,
        t0: Instant,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
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
        let (header, decoded, lost) = match decoded {
            Ok(Outcome::Frame(h, d, lost)) => (h, d, lost),
            Ok(Outcome::Stale(h, arrival)) => {
                drop(guard);
                return self.drop_stale(frame, &h, arrival);
            }
            Err(e) => {
                state.dropped_since_decoded += 1;
                let desc = state.model_desc.clone();
                drop(guard);
                return self.reject(frame, &e, &desc);
            }
        };
        // A dropped packet's own frame counter cannot be trusted, but it did arrive: the
        // packets dropped since the last decoded one are taken to be frames of this gap.
        let lost = u64::from(lost).saturating_sub(state.dropped_since_decoded);
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
            stats.lost += lost;
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
