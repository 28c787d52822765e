//! Scale-out on NATS JetStream (`uigc gateway --nats URL`, `uigc decode-worker`, `uigc frames`).
//!
//! ```text
//!  gateway ──archive──> publish ──> stream UIGC_PACKETS, subject uigc.pkt.<partition>.<stream>
//!                                   (work queue; Nats-Msg-Id <stream>-<archive seq>: deduplicated)
//!                                        │  one durable pull consumer per partition,
//!                                        │  max_ack_pending 1: a partition is decoded in order
//!                    decode workers (any number, any machine) ◀── share the partitions
//!                      state of a stream: KV bucket uigc_decoders, key s<stream>
//!                      (decoder state + the last packet applied; compare-and-set)
//!                                        │
//!                                        ▼
//!                    stream UIGC_FRAMES, subject uigc.frame.<stream>  ──> viewers
//!                    (Nats-Msg-Id <stream>-<archive seq>: one frame per packet)
//! ```
//!
//! Exactly once: a worker decodes, publishes the frame (deduplicated by its message id), then
//! stores the stream's new decoder state (compare-and-set on the revision it read), then acks.
//! A worker killed before the publish: the packet is redelivered and decoded from the same
//! state. Killed after the publish: the redelivered packet is decoded again from the same
//! state and its frame is a duplicate the server drops. Killed after the state write: the
//! state says the packet was applied, the worker only acks. Two workers on one packet (an ack
//! wait ran out): the second state write fails its compare-and-set and that worker drops it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, kv, stream, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use crate::codec::{self, FrameStatus, ModelSet, RuntimeOptions, StreamDecoder};

/// Stream of archived packets.
pub const PACKETS_STREAM: &str = "UIGC_PACKETS";
/// Stream of decoded frames.
pub const FRAMES_STREAM: &str = "UIGC_FRAMES";
/// Key-value bucket of the streams' decoder states (and the partition count).
pub const STATE_BUCKET: &str = "uigc_decoders";
/// Default number of partitions (the most decode workers that can be busy at once).
pub const DEFAULT_PARTITIONS: u32 = 16;
/// Duplicate window of both streams: a republished packet or frame within it is dropped.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);
const PARTITIONS_KEY: &str = "partitions";

/// Header names on packets and frames.
pub mod hdr {
    pub const MSG_ID: &str = "Nats-Msg-Id";
    pub const STREAM: &str = "Uigc-Stream";
    /// Sequence number of the packet in its stream's archive.
    pub const SEQ: &str = "Uigc-Seq";
    /// Receive time at the gateway (µs since the Unix epoch).
    pub const TIME: &str = "Uigc-Time-Us";
    pub const FRAME: &str = "Uigc-Frame";
    pub const STATUS: &str = "Uigc-Status";
    /// SHA-256 of the receiver's token grid (and colour thumbnail) after the packet.
    pub const TOKENS: &str = "Uigc-Tokens";
    pub const WORKER: &str = "Uigc-Worker";
    pub const DECODE_MS: &str = "Uigc-Decode-Ms";
    pub const ERROR: &str = "Uigc-Error";
}

/// The gateway's side of the scale-out path.
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URL (`nats://host:4222`).
    pub url: String,
    /// Partitions of the packet stream (fixed for a server: the first gateway sets it).
    pub partitions: u32,
    /// Packets waiting to be published; beyond it they are archived only (`nats_shed`).
    pub queue: usize,
    /// Size cap of the packet stream in bytes (a full stream refuses new packets: they stay
    /// in the archive, counted as `nats_errors`).
    pub max_bytes: i64,
}

/// A packet on its way to the server.
pub struct Outgoing {
    pub stream: u32,
    pub seq: u64,
    pub time_us: u64,
    pub packet: Bytes,
}

/// Partition of a stream id (a hash, so neighbouring ids spread).
pub fn partition(stream: u32, partitions: u32) -> u32 {
    (stream.wrapping_mul(0x9E37_79B9) >> 16) % partitions.max(1)
}

/// Message id of a packet and of its frame: stream id and archive sequence number.
pub fn msg_id(stream: u32, seq: u64) -> String {
    format!("{stream}-{seq}")
}

fn nats_err(what: &str) -> impl Fn(&dyn std::fmt::Display) -> String + '_ {
    move |e| format!("NATS {what}: {e}")
}

fn packets_config(max_bytes: i64) -> stream::Config {
    stream::Config {
        name: PACKETS_STREAM.into(),
        subjects: vec!["uigc.pkt.>".into()],
        // Acknowledged packets are deleted: the gateway's archive is the long-term store.
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        max_bytes,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

fn frames_config(max_bytes: i64) -> stream::Config {
    stream::Config {
        name: FRAMES_STREAM.into(),
        subjects: vec!["uigc.frame.>".into()],
        storage: stream::StorageType::File,
        // Viewers want recent frames: the oldest go first.
        discard: stream::DiscardPolicy::Old,
        max_bytes,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

async fn state_bucket(js: &Context) -> Result<kv::Store, String> {
    if let Ok(s) = js.get_key_value(STATE_BUCKET).await {
        return Ok(s);
    }
    // The bucket's stream as `create_key_value` makes it (which asks for the account's info
    // first, a reply async-nats 0.51 does not parse from nats-server 2.9): one value per key.
    let created = js
        .get_or_create_stream(stream::Config {
            name: format!("KV_{STATE_BUCKET}"),
            subjects: vec![format!("$KV.{STATE_BUCKET}.>")],
            max_messages_per_subject: 1,
            max_message_size: -1,
            storage: stream::StorageType::File,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await;
    match js.get_key_value(STATE_BUCKET).await {
        Ok(s) => Ok(s),
        Err(e) => Err(match created {
            Err(c) => format!("NATS bucket {STATE_BUCKET}: {c}"),
            Ok(_) => format!("NATS bucket {STATE_BUCKET}: {e}"),
        }),
    }
}

/// The partition count recorded on the server (`None` before the first gateway).
async fn stored_partitions(kv: &kv::Store) -> Result<Option<u32>, String> {
    let Some(v) = kv
        .get(PARTITIONS_KEY)
        .await
        .map_err(|e| nats_err("bucket")(&e))?
    else {
        return Ok(None);
    };
    std::str::from_utf8(&v)
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&p| p > 0)
        .map(Some)
        .ok_or_else(|| format!("NATS bucket {STATE_BUCKET}: bad {PARTITIONS_KEY} value"))
}

/// Connects a gateway: creates the packet stream and the state bucket if needed and records
/// the partition count (a server whose count differs is an error: the workers would miss
/// partitions).
pub async fn connect_gateway(cfg: &NatsConfig) -> Result<Context, String> {
    if cfg.partitions == 0 {
        return Err("--nats-partitions must be at least 1".into());
    }
    let client = async_nats::connect(&cfg.url)
        .await
        .map_err(|e| format!("NATS {}: {e}", cfg.url))?;
    let js = jetstream::new(client);
    js.get_or_create_stream(packets_config(cfg.max_bytes))
        .await
        .map_err(|e| nats_err(PACKETS_STREAM)(&e))?;
    let kv = state_bucket(&js).await?;
    let value = Bytes::from(cfg.partitions.to_string());
    if kv.create(PARTITIONS_KEY, value).await.is_err() {
        match stored_partitions(&kv).await? {
            Some(p) if p == cfg.partitions => {}
            Some(p) => {
                return Err(format!(
                    "NATS {}: the server's packet stream has {p} partitions, this gateway was \
                     given {} (--nats-partitions)",
                    cfg.url, cfg.partitions
                ))
            }
            None => return Err(format!("NATS bucket {STATE_BUCKET}: no {PARTITIONS_KEY}")),
        }
    }
    Ok(js)
}

/// Counters of the gateway's publisher.
#[derive(Debug, Default)]
pub struct PublishCounters {
    /// Packets the server stored (acknowledged).
    pub published: AtomicU64,
    /// Packets the server reported as duplicates (republished after a retry).
    pub duplicates: AtomicU64,
    /// Failed publish attempts (each retried).
    pub errors: AtomicU64,
    /// Packets archived but not queued for publishing (queue full).
    pub shed: AtomicU64,
}

/// The gateway's publisher: the queue between the receive path and [`publish_loop`].
pub struct Publisher {
    pub config: NatsConfig,
    pub counters: Arc<PublishCounters>,
    tx: tokio::sync::mpsc::Sender<Outgoing>,
    rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<Outgoing>>>,
}

impl Publisher {
    pub fn new(config: NatsConfig) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(config.queue.max(1));
        Self {
            config,
            counters: Arc::default(),
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
        }
    }

    /// Queues an archived packet (never blocks: a full queue sheds it, counted).
    pub fn offer(&self, o: Outgoing) {
        if self.tx.try_send(o).is_err() {
            self.counters.shed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Connects and starts the publishing task (once, on the gateway's runtime).
    pub async fn start(&self) -> Result<(), String> {
        let js = connect_gateway(&self.config).await?;
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or("NATS publisher started twice")?;
        tokio::spawn(publish_loop(
            js,
            rx,
            self.config.partitions,
            self.counters.clone(),
        ));
        Ok(())
    }
}

/// Publishes queued packets one after the other, each confirmed by the server before the next
/// (a stream's packets stay in archive order); a failed publish is retried with the same
/// message id until the server stores it.
pub async fn publish_loop(
    js: Context,
    mut rx: tokio::sync::mpsc::Receiver<Outgoing>,
    partitions: u32,
    counters: Arc<PublishCounters>,
) {
    while let Some(o) = rx.recv().await {
        let subject = format!("uigc.pkt.{}.{}", partition(o.stream, partitions), o.stream);
        let mut headers = HeaderMap::new();
        headers.insert(hdr::MSG_ID, msg_id(o.stream, o.seq).as_str());
        headers.insert(hdr::STREAM, o.stream.to_string().as_str());
        headers.insert(hdr::SEQ, o.seq.to_string().as_str());
        headers.insert(hdr::TIME, o.time_us.to_string().as_str());
        let mut backoff = Duration::from_millis(50);
        loop {
            let r = match js
                .publish_with_headers(subject.clone(), headers.clone(), o.packet.clone())
                .await
            {
                Ok(ack) => ack.await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match r {
                Ok(ack) => {
                    let c = if ack.duplicate {
                        &counters.duplicates
                    } else {
                        &counters.published
                    };
                    c.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                    log::warn!(
                        "NATS publish of stream {} packet {}: {e} (retrying)",
                        o.stream,
                        o.seq
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Settings of a decode worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub url: String,
    /// Name written into each frame (`Uigc-Worker`).
    pub name: String,
    pub models: Vec<PathBuf>,
    pub runtime: RuntimeOptions,
    /// Time the server waits for an ack before it redelivers a packet (set when the
    /// consumers are created, by the first worker).
    pub ack_wait: Duration,
    /// Size cap of the frame stream in bytes (oldest frames dropped).
    pub frames_max_bytes: i64,
    /// Frames as PNG in the message (otherwise only the headers: status and token digest).
    pub png: bool,
    /// Stop after this many packets handled (0: run until killed); for benchmarks.
    pub max_packets: u64,
}

/// Counters of a decode worker.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct WorkerStats {
    /// Packets decoded and their frames published (acknowledged).
    pub decoded: u64,
    /// Packets that did not decode (a frame with `Uigc-Error` was published).
    pub errors: u64,
    /// Frames the server dropped as duplicates (a packet decoded twice after a redelivery).
    pub duplicate_frames: u64,
    /// Redelivered packets already applied by someone (acked only).
    pub already_applied: u64,
    /// Packets dropped because another worker stored the stream's state first.
    pub conflicts: u64,
    /// Decoder states loaded from the bucket (the stream was last decoded elsewhere).
    pub restored: u64,
    pub decode_ms_total: f64,
    /// Time from the gateway's receive to the frame's publish (ms), last and largest.
    pub lag_ms: f64,
    pub lag_max_ms: f64,
}

/// SHA-256 of a receiver's token grid and colour thumbnail (hex): equal digests, equal state.
pub fn tokens_digest(dec: &StreamDecoder) -> String {
    let mut h = Sha256::new();
    if let Some(r) = dec.reference() {
        h.update(r.frame.to_le_bytes());
        h.update(r.width.to_le_bytes());
        h.update(r.height.to_le_bytes());
        for t in &r.grid.tokens {
            h.update(t.to_le_bytes());
        }
        if let Some(c) = &r.colour {
            for p in &c.planes {
                for v in p {
                    h.update(v.to_le_bytes());
                }
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn status_str(s: FrameStatus) -> String {
    match s {
        FrameStatus::Exact => "exact".into(),
        FrameStatus::Concealed => "concealed".into(),
        FrameStatus::Recovering { exact_rows, rows } => format!("recovering {exact_rows}/{rows}"),
    }
}

fn header<'a>(m: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get(name).map(|v| v.as_str())
}

/// A stream's entry in the state bucket: the packet-stream sequence of the last packet applied
/// (u64 LE) and the decoder state.
fn state_value(applied: u64, dec: &StreamDecoder) -> Bytes {
    let mut v = applied.to_le_bytes().to_vec();
    v.extend_from_slice(&dec.state());
    Bytes::from(v)
}

/// Runs a decode worker until killed (or `max_packets`); `ready` gets the partition count once
/// the consumers exist, `stats` is called after every packet.
pub fn run_worker(
    cfg: WorkerConfig,
    ready: impl FnOnce(u32),
    stats: impl FnMut(&WorkerStats),
) -> Result<WorkerStats, String> {
    let models = ModelSet::load(&cfg.models, &cfg.runtime).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("uigc-worker")
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(worker(cfg, models, ready, stats))
}

async fn worker(
    cfg: WorkerConfig,
    mut models: ModelSet,
    ready: impl FnOnce(u32),
    mut report: impl FnMut(&WorkerStats),
) -> Result<WorkerStats, String> {
    let client = async_nats::connect(&cfg.url)
        .await
        .map_err(|e| format!("NATS {}: {e}", cfg.url))?;
    let js = jetstream::new(client);
    let kv = state_bucket(&js).await?;
    // Workers may start before the first gateway: wait for the partition count.
    let partitions = loop {
        if let Some(p) = stored_partitions(&kv).await? {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let packets = js
        .get_stream(PACKETS_STREAM)
        .await
        .map_err(|e| nats_err(PACKETS_STREAM)(&e))?;
    js.get_or_create_stream(frames_config(cfg.frames_max_bytes))
        .await
        .map_err(|e| nats_err(FRAMES_STREAM)(&e))?;
    let mut feeds = Vec::new();
    for p in 0..partitions {
        let name = format!("uigc-decode-{p}");
        let c: consumer::PullConsumer = packets
            .get_or_create_consumer(
                &name,
                consumer::pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: format!("uigc.pkt.{p}.>"),
                    ack_policy: consumer::AckPolicy::Explicit,
                    // One packet of a partition in flight: its packets are decoded in order.
                    max_ack_pending: 1,
                    ack_wait: cfg.ack_wait,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| nats_err(&name)(&e))?;
        let feed = c
            .stream()
            .max_messages_per_batch(1)
            .messages()
            .await
            .map_err(|e| nats_err(&name)(&e))?;
        feeds.push(feed);
    }
    ready(partitions);
    let mut feed = futures_util::stream::select_all(feeds);
    let mut stats = WorkerStats::default();
    // Streams this worker decoded last: the bucket revision it wrote, the decoder.
    let mut local: HashMap<u32, (u64, StreamDecoder)> = HashMap::new();
    let mut handled = 0u64;
    while let Some(m) = feed.next().await {
        let m = match m {
            Ok(m) => m,
            Err(e) => {
                log::warn!("NATS packet feed: {e}");
                continue;
            }
        };
        if let Err(e) = handle(&cfg, &js, &kv, &mut models, &mut local, &mut stats, &m).await {
            // Not acked: the server redelivers it after the ack wait.
            log::warn!("packet {}: {e}", m.subject);
        }
        report(&stats);
        handled += 1;
        if cfg.max_packets > 0 && handled >= cfg.max_packets {
            break;
        }
    }
    Ok(stats)
}

async fn handle(
    cfg: &WorkerConfig,
    js: &Context,
    kv: &kv::Store,
    models: &mut ModelSet,
    local: &mut HashMap<u32, (u64, StreamDecoder)>,
    stats: &mut WorkerStats,
    m: &jetstream::Message,
) -> Result<(), String> {
    let js_seq = m
        .info()
        .map_err(|e| format!("no delivery info: {e}"))?
        .stream_sequence;
    let parse = |name: &str| -> Result<u64, String> {
        header(&m.message, name)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("header {name} missing or invalid"))
    };
    let stream = u32::try_from(parse(hdr::STREAM)?).map_err(|e| e.to_string())?;
    let seq = parse(hdr::SEQ)?;
    let time_us = parse(hdr::TIME)?;
    let key = format!("s{stream}");
    let entry = kv
        .entry(key.as_str())
        .await
        .map_err(|e| nats_err("state")(&e))?;
    let (revision, applied, state) = match &entry {
        Some(e) if e.operation == kv::Operation::Put && e.value.len() >= 8 => (
            e.revision,
            Some(u64::from_le_bytes(
                e.value[..8].try_into().expect("8 bytes"),
            )),
            Some(e.value.slice(8..)),
        ),
        Some(e) => (e.revision, None, None),
        None => (0, None, None),
    };
    if applied.is_some_and(|a| js_seq <= a) {
        // Applied and its frame published by a worker that stopped before its ack.
        stats.already_applied += 1;
        return m.double_ack().await.map_err(|e| nats_err("ack")(&e));
    }
    let t = Instant::now();
    let (result, dec) = match models.model_for(&m.payload) {
        Ok(model) => {
            let mut dec = match local.remove(&stream) {
                Some((r, d)) if r == revision && revision != 0 => d,
                _ => match &state {
                    Some(s) => {
                        stats.restored += 1;
                        match StreamDecoder::from_state(s, model.bundle().codebook_size) {
                            Ok(d) => d,
                            Err(e) => {
                                // Goes on like a receiver that joined the stream here.
                                log::warn!("stream {stream}: {e}: starting from no state");
                                StreamDecoder::new()
                            }
                        }
                    }
                    None => StreamDecoder::new(),
                },
            };
            let r = tokio::task::block_in_place(|| dec.decode(model, &m.payload));
            (r, Some(dec))
        }
        // Not a packet of a model served here: reported, the stream's state left as it is.
        Err(e) => (Err(e), None),
    };
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let digest = dec.as_ref().map_or_else(String::new, tokens_digest);
    let mut headers = HeaderMap::new();
    headers.insert(hdr::MSG_ID, msg_id(stream, seq).as_str());
    headers.insert(hdr::STREAM, stream.to_string().as_str());
    headers.insert(hdr::SEQ, seq.to_string().as_str());
    headers.insert(hdr::TIME, time_us.to_string().as_str());
    headers.insert(hdr::WORKER, cfg.name.as_str());
    headers.insert(hdr::DECODE_MS, format!("{decode_ms:.2}").as_str());
    headers.insert(hdr::TOKENS, digest.as_str());
    let payload = match &result {
        Ok(f) => {
            headers.insert(hdr::FRAME, f.frame.to_string().as_str());
            headers.insert(hdr::STATUS, status_str(f.status).as_str());
            if cfg.png {
                Bytes::from(super::http::encode(&f.image, true)?)
            } else {
                Bytes::new()
            }
        }
        Err(e) => {
            // A one-line reason (header values cannot hold line breaks).
            let reason = e.to_string().replace(['\r', '\n'], " ");
            headers.insert(hdr::ERROR, reason.as_str());
            Bytes::new()
        }
    };
    let ack = js
        .publish_with_headers(format!("uigc.frame.{stream}"), headers, payload)
        .await
        .map_err(|e| nats_err("frame publish")(&e))?
        .await
        .map_err(|e| nats_err("frame publish")(&e))?;
    let value = match &dec {
        Some(d) => state_value(js_seq, d),
        None => {
            let mut v = js_seq.to_le_bytes().to_vec();
            v.extend_from_slice(state.as_deref().unwrap_or(&[]));
            Bytes::from(v)
        }
    };
    let written = if revision == 0 {
        kv.create(key.as_str(), value)
            .await
            .map_err(|e| e.to_string())
    } else {
        kv.update(key.as_str(), value, revision)
            .await
            .map_err(|e| e.to_string())
    };
    let new_revision = match written {
        Ok(r) => r,
        Err(e) => {
            // Someone else applied this packet first (an ack wait ran out): theirs stands.
            stats.conflicts += 1;
            log::info!("stream {stream} packet {seq}: state written by another worker ({e})");
            return Ok(());
        }
    };
    if let Some(d) = dec {
        local.insert(stream, (new_revision, d));
    }
    m.double_ack().await.map_err(|e| nats_err("ack")(&e))?;
    if ack.duplicate {
        stats.duplicate_frames += 1;
    }
    match result {
        Ok(_) => stats.decoded += 1,
        Err(_) => stats.errors += 1,
    }
    stats.decode_ms_total += decode_ms;
    stats.lag_ms = (super::now_us().saturating_sub(time_us)) as f64 / 1e3;
    stats.lag_max_ms = stats.lag_max_ms.max(stats.lag_ms);
    Ok(())
}

/// One decoded frame as read from the frame stream.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FrameRecord {
    pub stream: u32,
    pub seq: u64,
    pub frame: Option<u32>,
    pub status: Option<String>,
    pub tokens: String,
    pub worker: String,
    pub error: Option<String>,
    pub time_us: u64,
    /// Sequence number in the frame stream.
    pub js_seq: u64,
    /// Time from the gateway's receive to the frame's arrival in the frame stream (ms).
    pub latency_ms: f64,
    #[serde(skip)]
    pub png: Bytes,
}

/// Reads the frame stream (of one stream id, or all) from its start; stops when nothing new
/// arrives for `idle` (`None`: follows for ever). `each` gets every frame.
pub fn read_frames(
    url: &str,
    stream_id: Option<u32>,
    idle: Option<Duration>,
    mut each: impl FnMut(FrameRecord) -> Result<(), String>,
) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(async {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| format!("NATS {url}: {e}"))?;
        let js = jetstream::new(client);
        let frames = js
            .get_stream(FRAMES_STREAM)
            .await
            .map_err(|e| nats_err(FRAMES_STREAM)(&e))?;
        let c: consumer::PullConsumer = frames
            .create_consumer(consumer::pull::Config {
                filter_subject: stream_id
                    .map_or("uigc.frame.>".into(), |s| format!("uigc.frame.{s}")),
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(60),
                ..Default::default()
            })
            .await
            .map_err(|e| nats_err("frame consumer")(&e))?;
        let mut feed = c
            .messages()
            .await
            .map_err(|e| nats_err("frame consumer")(&e))?;
        loop {
            let next = match idle {
                Some(d) => match tokio::time::timeout(d, feed.next()).await {
                    Ok(n) => n,
                    Err(_) => return Ok(()),
                },
                None => feed.next().await,
            };
            let Some(m) = next else { return Ok(()) };
            let m = m.map_err(|e| nats_err("frame feed")(&e))?;
            let (js_seq, published_us) = m.info().map_or((0, 0), |i| {
                (
                    i.stream_sequence,
                    (i.published.unix_timestamp_nanos() / 1000).max(0) as u64,
                )
            });
            let h = |n| header(&m.message, n).map(str::to_string);
            let num = |n| h(n).and_then(|v| v.parse::<u64>().ok());
            each(FrameRecord {
                stream: num(hdr::STREAM).unwrap_or(0) as u32,
                seq: num(hdr::SEQ).unwrap_or(0),
                frame: num(hdr::FRAME).map(|f| f as u32),
                status: h(hdr::STATUS),
                tokens: h(hdr::TOKENS).unwrap_or_default(),
                worker: h(hdr::WORKER).unwrap_or_default(),
                error: h(hdr::ERROR),
                time_us: num(hdr::TIME).unwrap_or(0),
                js_seq,
                latency_ms: published_us.saturating_sub(num(hdr::TIME).unwrap_or(0)) as f64 / 1e3,
                png: m.payload.clone(),
            })?;
        }
    })
}

/// Writes a decoded picture as PNG (for viewers and `uigc frames -o`).
pub fn png_of(img: &codec::RgbImage) -> Result<Vec<u8>, String> {
    super::http::encode(img, true)
}
