//! Ground station: many devices, one port, every packet archived (`uigc gateway`).
//!
//! ```text
//!  UDP datagrams ─┐                      ┌─> archive/<stream>/<seq>.uga   (first, always)
//!  TCP uplinks  ──┴─> Ingest::accept ────┤
//!   (len-prefixed)    parse header,      └─> decode queue of the stream's worker (bounded:
//!                     caps, quotas             full = the packet is shed for decoding only)
//!                                                   │
//!                       worker threads (ModelSet + StreamDecoder per stream, in order)
//!                                                   │
//!                       Views: latest frame per stream, stats ──> HTTP (page, PNG, MJPEG,
//!                                                                 archive, /metrics)
//! ```
//!
//! The receive path does only cheap work: it parses the packet header (microseconds), refuses
//! what is not a packet of a served model or would exceed a cap, and appends the packet to its
//! stream's archive *before* anything else; decoding (hundreds of ms per frame on a CPU) runs
//! beside it in a fixed pool of worker threads and may lag or shed, the archive never does.
//! Every cap is a configuration field with a documented default (docs/gateway.md).

pub mod archive;
pub mod http;
#[cfg(feature = "nats")]
pub mod nats;
pub mod server;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::codec::{self, bitstream, FrameStatus, ModelId, ModelSet, RgbImage, RuntimeOptions};
use archive::{ArchiveLimits, StreamArchive, MAX_RECORD};

/// Default cap on the number of streams a gateway serves.
pub const DEFAULT_MAX_STREAMS: usize = 256;
/// Default archive rate cap per stream: 64 KiB/s (512 kbit/s, far above any uigc stream).
pub const DEFAULT_STREAM_RATE: u64 = 64 << 10;
/// Default decode queue length per worker (packets; at most 64 KiB each, typically < 1.5 KiB).
/// A worker that is behind skips pictures (never the state), so the queue drains quickly.
pub const DEFAULT_DECODE_QUEUE: usize = 1024;

/// Settings of a gateway.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub archive_dir: PathBuf,
    pub archive: ArchiveLimits,
    /// Streams served at once; packets of further stream ids are refused (`stream_cap`).
    pub max_streams: usize,
    /// Archive rate cap per stream in bytes/s over a 2 s bucket (0: none); packets above it are
    /// refused (`rate_limited`).
    pub stream_rate: u64,
    /// Model bundles served (packets naming another model id are refused: `foreign_model`).
    pub models: Vec<PathBuf>,
    pub runtime: RuntimeOptions,
    /// Decode worker threads (0: archive only, nothing decoded).
    pub decode_workers: usize,
    /// Decode queue length per worker.
    pub decode_queue: usize,
    /// Publish every archived packet to NATS JetStream (decode workers elsewhere).
    #[cfg(feature = "nats")]
    pub nats: Option<nats::NatsConfig>,
}

/// Why a packet was refused (each has a counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Refusal {
    /// Empty or above the largest record.
    Oversize,
    /// Not a uigc packet (header does not parse).
    Malformed,
    /// Names a model the gateway does not serve.
    ForeignModel,
    /// A new stream id while `max_streams` are served.
    StreamCap,
    /// Above the stream's archive rate.
    RateLimited,
    /// The archive could not be written (disk full, permissions): logged, counted.
    ArchiveError,
}

impl Refusal {
    pub const ALL: [Refusal; 6] = [
        Refusal::Oversize,
        Refusal::Malformed,
        Refusal::ForeignModel,
        Refusal::StreamCap,
        Refusal::RateLimited,
        Refusal::ArchiveError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Oversize => "oversize",
            Refusal::Malformed => "malformed",
            Refusal::ForeignModel => "foreign_model",
            Refusal::StreamCap => "stream_cap",
            Refusal::RateLimited => "rate_limited",
            Refusal::ArchiveError => "archive_error",
        }
    }
}

/// Gateway-wide counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub received: AtomicU64,
    pub received_bytes: AtomicU64,
    pub archived: AtomicU64,
    pub archived_bytes: AtomicU64,
    pub refused: [AtomicU64; 6],
    /// Packets archived but not queued for decoding (queue full).
    pub shed: AtomicU64,
    /// Bytes cut from torn archive tails when the streams were opened.
    pub truncated_bytes: AtomicU64,
}

impl Counters {
    pub fn refused(&self, r: Refusal) -> u64 {
        self.refused[r as usize].load(Ordering::Relaxed)
    }
    fn refuse(&self, r: Refusal) {
        self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// Per-stream state of the receive path.
struct StreamIngest {
    archive: StreamArchive,
    /// Rate bucket: bytes available, time of the last refill.
    bucket: f64,
    refill: Instant,
}

/// What the HTTP side shows of a stream (updated by the receive path and the decoders).
#[derive(Debug, Clone, Default)]
pub struct StreamView {
    pub packets: u64,
    pub bytes: u64,
    pub refused: u64,
    /// Frame counters never seen between the first and the highest one (lost on the link).
    pub lost: u64,
    /// Packets whose frame counter was at or below the highest seen (late or duplicated).
    pub late: u64,
    pub highest_frame: Option<u32>,
    pub first_time_us: u64,
    pub last_time_us: u64,
    /// (second, bytes) of the last 10 seconds, for the bitrate.
    pub recent: VecDeque<(u64, u64)>,
    pub decoded: u64,
    pub exact: u64,
    pub concealed: u64,
    pub decode_errors: u64,
    /// Packets applied without rendering their picture (the decoder was behind and a later
    /// packet of the stream was already queued).
    pub skipped: u64,
    pub shed: u64,
    /// Packets queued for decoding and not decoded yet.
    pub queued: u64,
    /// Time from arrival to decoded picture of the last frame (ms).
    pub decode_lag_ms: f64,
    /// The largest such time since the stream's first packet (ms).
    pub decode_lag_max_ms: f64,
    /// Sum of the decode times (ms), for the mean.
    pub decode_ms_total: f64,
    /// Time spent decoding the last frame (ms).
    pub decode_ms: f64,
    pub last_frame: Option<u32>,
    pub last_status: String,
    pub last_error: String,
    pub size: (u32, u32),
    pub latest: Option<Arc<RgbImage>>,
    /// Increases with every decoded picture (viewers wait on it).
    pub generation: u64,
}

impl StreamView {
    /// Bitrate over the last 10 seconds (bit/s).
    pub fn bitrate(&self, now_us: u64) -> f64 {
        let now_s = now_us / 1_000_000;
        let bytes: u64 = self
            .recent
            .iter()
            .filter(|(s, _)| now_s.saturating_sub(*s) < 10)
            .map(|(_, b)| b)
            .sum();
        let span = 10.0f64
            .min((now_us.saturating_sub(self.first_time_us)) as f64 / 1e6)
            .max(1.0);
        bytes as f64 * 8.0 / span
    }

    fn on_packet(&mut self, frame: u32, len: usize, now_us: u64) {
        if self.packets == 0 {
            self.first_time_us = now_us;
        }
        self.packets += 1;
        self.bytes += len as u64;
        self.last_time_us = now_us;
        match self.highest_frame {
            Some(h) if frame <= h => self.late += 1,
            Some(h) => {
                self.lost += u64::from(frame - h - 1);
                self.highest_frame = Some(frame);
            }
            None => self.highest_frame = Some(frame),
        }
        let s = now_us / 1_000_000;
        match self.recent.back_mut() {
            Some((t, b)) if *t == s => *b += len as u64,
            _ => self.recent.push_back((s, len as u64)),
        }
        while self.recent.len() > 10 {
            self.recent.pop_front();
        }
    }
}

/// Stream views shared with the HTTP side, with a notifier for live viewers.
pub struct Views {
    pub streams: Mutex<HashMap<u32, StreamView>>,
    /// Bumped on every decoded picture (any stream).
    pub frames: tokio::sync::watch::Sender<u64>,
}

struct Job {
    stream: u32,
    arrival: Instant,
    packet: Arc<[u8]>,
}

/// The gateway: receive path, archive, decode pool, views.
pub struct Gateway {
    pub config: GatewayConfig,
    pub counters: Counters,
    pub views: Arc<Views>,
    /// Model ids served.
    pub model_ids: Vec<ModelId>,
    ingest: Mutex<HashMap<u32, StreamIngest>>,
    workers: Vec<SyncSender<Job>>,
    /// The JetStream publisher (`--nats`).
    #[cfg(feature = "nats")]
    pub nats: Option<nats::Publisher>,
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

impl Gateway {
    /// Loads the models (one set per decode worker), starts the workers and opens the archive
    /// root. Existing stream archives are opened (and torn tails cut) on their first packet.
    pub fn start(config: GatewayConfig) -> Result<Arc<Self>, String> {
        std::fs::create_dir_all(&config.archive_dir)
            .map_err(|e| format!("archive {}: {e}", config.archive_dir.display()))?;
        let load = || ModelSet::load(&config.models, &config.runtime).map_err(|e| e.to_string());
        let first = load()?;
        // Dense packets of dense graphs carry an id of their own.
        let model_ids: Vec<ModelId> = first
            .models()
            .iter()
            .flat_map(|m| std::iter::once(m.model_id()).chain(m.dense_model_id()))
            .collect();
        let (frames, _) = tokio::sync::watch::channel(0u64);
        let views = Arc::new(Views {
            streams: Mutex::new(HashMap::new()),
            frames,
        });
        let mut workers = Vec::new();
        let mut first = Some(first);
        for i in 0..config.decode_workers {
            let models = match first.take() {
                Some(m) => m,
                None => load()?,
            };
            let (tx, rx) = sync_channel(config.decode_queue.max(1));
            let views = views.clone();
            std::thread::Builder::new()
                .name(format!("uigc-decode-{i}"))
                .spawn(move || decode_worker(models, rx, views))
                .map_err(|e| format!("decode worker: {e}"))?;
            workers.push(tx);
        }
        #[cfg(feature = "nats")]
        let nats = config.nats.clone().map(nats::Publisher::new);
        Ok(Arc::new(Self {
            #[cfg(feature = "nats")]
            nats,
            config,
            counters: Counters::default(),
            views,
            model_ids,
            ingest: Mutex::new(HashMap::new()),
            workers,
        }))
    }

    /// The receive path for one packet: checks, archive append, decode queue. Returns the stream
    /// id when the packet was archived.
    pub fn accept(&self, data: &[u8]) -> Result<u32, Refusal> {
        let c = &self.counters;
        c.received.fetch_add(1, Ordering::Relaxed);
        c.received_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let r = self.accept_inner(data);
        match r {
            Ok(_) => {
                c.archived.fetch_add(1, Ordering::Relaxed);
                c.archived_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Err(e) => c.refuse(e),
        }
        r
    }

    fn accept_inner(&self, data: &[u8]) -> Result<u32, Refusal> {
        if data.is_empty() || data.len() > MAX_RECORD {
            return Err(Refusal::Oversize);
        }
        let header = bitstream::parse_packet(data)
            .map_err(|_| Refusal::Malformed)?
            .header;
        if !self.model_ids.contains(&header.model_id) {
            return Err(Refusal::ForeignModel);
        }
        let id = header.stream_id;
        let now = now_us();
        {
            let mut ingest = self.ingest.lock().unwrap_or_else(|e| e.into_inner());
            if !ingest.contains_key(&id) {
                if ingest.len() >= self.config.max_streams {
                    return Err(Refusal::StreamCap);
                }
                let (archive, rec) =
                    StreamArchive::open(&self.config.archive_dir, id, self.config.archive)
                        .map_err(|e| {
                            log::error!("archive of stream {id}: {e}");
                            Refusal::ArchiveError
                        })?;
                if rec.truncated_bytes > 0 {
                    log::warn!(
                        "stream {id}: cut a torn archive tail of {} bytes",
                        rec.truncated_bytes
                    );
                    self.counters
                        .truncated_bytes
                        .fetch_add(rec.truncated_bytes, Ordering::Relaxed);
                }
                let bucket = self.config.stream_rate as f64 * 2.0;
                ingest.insert(
                    id,
                    StreamIngest {
                        archive,
                        bucket,
                        refill: Instant::now(),
                    },
                );
            }
            let s = ingest.get_mut(&id).expect("inserted above");
            if self.config.stream_rate > 0 {
                let rate = self.config.stream_rate as f64;
                s.bucket = (s.bucket + s.refill.elapsed().as_secs_f64() * rate).min(2.0 * rate);
                s.refill = Instant::now();
                if s.bucket < data.len() as f64 {
                    drop(ingest);
                    self.view(id, |v| v.refused += 1);
                    return Err(Refusal::RateLimited);
                }
                s.bucket -= data.len() as f64;
            }
            let _seq = s.archive.append(now, data).map_err(|e| {
                log::error!("archive of stream {id}: {e}");
                Refusal::ArchiveError
            })?;
            // Queued under the stream's lock: the server gets a stream's packets in archive
            // order.
            #[cfg(feature = "nats")]
            if let Some(p) = &self.nats {
                p.offer(nats::Outgoing {
                    stream: id,
                    seq: _seq,
                    time_us: now,
                    packet: bytes::Bytes::copy_from_slice(data),
                });
            }
        }
        self.view(id, |v| v.on_packet(header.frame, data.len(), now));
        if !self.workers.is_empty() {
            let job = Job {
                stream: id,
                arrival: Instant::now(),
                packet: Arc::from(data),
            };
            // One worker per stream keeps its packets in order.
            let w = &self.workers[shard(id, self.workers.len())];
            // Counted before the send: the worker may decode it before try_send returns.
            self.view(id, |v| v.queued += 1);
            if w.try_send(job).is_err() {
                self.counters.shed.fetch_add(1, Ordering::Relaxed);
                self.view(id, |v| {
                    v.queued -= 1;
                    v.shed += 1;
                });
            }
        }
        Ok(id)
    }

    fn view(&self, id: u32, f: impl FnOnce(&mut StreamView)) {
        let mut views = self.views.streams.lock().unwrap_or_else(|e| e.into_inner());
        f(views.entry(id).or_default());
    }

    /// Flushes every stream's archive (on shutdown).
    pub fn sync(&self) {
        let mut ingest = self.ingest.lock().unwrap_or_else(|e| e.into_inner());
        for (id, s) in ingest.iter_mut() {
            if let Err(e) = s.archive.sync() {
                log::error!("archive of stream {id}: {e}");
            }
        }
    }

    /// Number of streams with an open archive.
    pub fn streams(&self) -> usize {
        self.ingest.lock().map_or(0, |m| m.len())
    }
}

/// The worker of a stream (a hash, so neighbouring ids spread over the workers).
fn shard(stream: u32, workers: usize) -> usize {
    (stream.wrapping_mul(0x9E37_79B9) >> 16) as usize % workers
}

/// Packets a worker takes from its queue at once.
const BATCH: usize = 256;

fn decode_worker(mut models: ModelSet, jobs: Receiver<Job>, views: Arc<Views>) {
    let mut decoders: HashMap<u32, codec::StreamDecoder> = HashMap::new();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        for (i, job) in batch.iter().enumerate() {
            // Behind: a packet followed by a later one of its stream is applied to the stream's
            // state (it stays exact) without rendering its picture.
            let skip = batch[i + 1..].iter().any(|j| j.stream == job.stream);
            let dec = decoders.entry(job.stream).or_default();
            decode_job(&mut models, dec, job, skip, &views);
        }
    }
}

fn decode_job(
    models: &mut ModelSet,
    dec: &mut codec::StreamDecoder,
    job: &Job,
    skip: bool,
    views: &Views,
) {
    let t = Instant::now();
    let result = models.model_for(&job.packet).and_then(|m| {
        if skip {
            dec.advance(m, &job.packet).map(|status| (status, None))
        } else {
            dec.decode(m, &job.packet)
                .map(|f| (f.status, Some((f.frame, f.image))))
        }
    });
    let decode_ms = t.elapsed().as_secs_f64() * 1e3;
    let lag_ms = job.arrival.elapsed().as_secs_f64() * 1e3;
    let mut all = views.streams.lock().unwrap_or_else(|e| e.into_inner());
    let v = all.entry(job.stream).or_default();
    v.queued = v.queued.saturating_sub(1);
    v.decode_ms = decode_ms;
    v.decode_ms_total += decode_ms;
    v.decode_lag_ms = lag_ms;
    v.decode_lag_max_ms = v.decode_lag_max_ms.max(lag_ms);
    match result {
        Ok((status, picture)) => {
            v.decoded += 1;
            match status {
                FrameStatus::Exact => v.exact += 1,
                _ => v.concealed += 1,
            }
            v.last_status = match status {
                FrameStatus::Exact => "exact".into(),
                FrameStatus::Concealed => "concealed".into(),
                FrameStatus::Recovering { exact_rows, rows } => {
                    format!("recovering {exact_rows}/{rows}")
                }
            };
            let Some((frame, image)) = picture else {
                v.skipped += 1;
                return;
            };
            v.last_frame = Some(frame);
            v.size = (image.width, image.height);
            v.latest = Some(Arc::new(image));
            v.generation += 1;
            drop(all);
            views.frames.send_modify(|g| *g += 1);
        }
        Err(e) => {
            v.decode_errors += 1;
            v.last_error = e.to_string();
        }
    }
}
