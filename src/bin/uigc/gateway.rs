//! `uigc gateway`, `uigc replay` and `uigc archive-check`: the ground station's commands
//! (docs/gateway.md).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use gstuigc::codec::{self, RgbImage};
use gstuigc::gateway::{self, archive, server, GatewayConfig};
use sha2::{Digest, Sha256};

use super::{load_models, runtime_options, write_png, ModelArgs};

#[derive(Args)]
pub struct GatewayArgs {
    /// Archive root: one folder per stream of append-only segment files
    #[arg(long, value_name = "DIR")]
    archive: PathBuf,
    /// UDP address the devices send to ("off" for none)
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:5004")]
    udp: String,
    /// UDP receive buffer to ask the kernel for, in bytes (it grants at most net.core.rmem_max)
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    udp_buffer: usize,
    /// TCP address for store-and-forward uplinks (packets preceded by their length, u32 LE, as
    /// in .uigcs files) [default: off]
    #[arg(long, value_name = "ADDR")]
    tcp: Option<String>,
    /// HTTP address of the stream page, frames, archive and metrics ("off" for none); loopback
    /// unless told otherwise
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http: String,
    /// When archived records are flushed to the disk: always, never, or an interval in ms
    #[arg(long, value_name = "POLICY", default_value = "1000")]
    fsync: String,
    /// Segment size of the archive in MiB
    #[arg(long, value_name = "MIB", default_value_t = 64)]
    segment_mib: u64,
    /// Retention per stream in MiB: the oldest segments are deleted above it (0: keep all)
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    stream_mib: u64,
    /// Streams served at once (packets of further stream ids are refused)
    #[arg(long, value_name = "N", default_value_t = gateway::DEFAULT_MAX_STREAMS)]
    max_streams: usize,
    /// Archive rate cap per stream in bytes/s (0: none)
    #[arg(long, value_name = "B/S", default_value_t = gateway::DEFAULT_STREAM_RATE)]
    stream_rate: u64,
    /// Decode worker threads, each with its own copy of the models (0: archive only)
    /// [default: 1; 0 with --nats]
    #[arg(long, value_name = "N")]
    decode_workers: Option<usize>,
    /// Decode queue per worker: packets beyond it are archived but not decoded (shed)
    #[arg(long, value_name = "N", default_value_t = gateway::DEFAULT_DECODE_QUEUE)]
    decode_queue: usize,
    /// TCP uplinks served at once
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_tcp: usize,
    /// Print a JSON line of totals every this many seconds (0: never)
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    stats_every: f64,
    /// Publish every archived packet to this NATS JetStream server for `uigc decode-worker`s
    /// on other machines (docs/gateway.md, "Scale-out")
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Partitions of the packet stream: the most workers busy at once (fixed per server)
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "N", default_value_t = gateway::nats::DEFAULT_PARTITIONS)]
    nats_partitions: u32,
    /// Archived packets waiting to be published; beyond it they are archived only (counted)
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "N", default_value_t = 65536)]
    nats_queue: usize,
    /// Size cap of the packet stream on the server in MiB (full: packets wait in the queue)
    #[cfg(feature = "nats")]
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    nats_max_mib: i64,
    #[command(flatten)]
    model: ModelArgs,
}

fn addr(s: &str, what: &str) -> Result<Option<SocketAddr>, String> {
    if s == "off" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("--{what} {s:?}: {e}"))
}

pub fn gateway(a: GatewayArgs) -> Result<(), String> {
    // The models are loaded by the gateway itself (one set per worker); this checks them first
    // so a bad --model fails before anything binds.
    drop(load_models(&a.model)?);
    let models = if a.model.model.is_empty() {
        vec![codec::default_model_dir().map_err(|e| e.to_string())?]
    } else {
        a.model.model.clone()
    };
    let config = GatewayConfig {
        archive_dir: a.archive.clone(),
        archive: archive::ArchiveLimits {
            segment_bytes: a.segment_mib.max(1) << 20,
            stream_bytes: a.stream_mib << 20,
            fsync: a.fsync.parse()?,
        },
        max_streams: a.max_streams,
        stream_rate: a.stream_rate,
        models,
        runtime: runtime_options(&a.model),
        decode_workers: a.decode_workers.unwrap_or({
            #[cfg(feature = "nats")]
            let n = usize::from(a.nats.is_none());
            #[cfg(not(feature = "nats"))]
            let n = 1;
            n
        }),
        decode_queue: a.decode_queue,
        #[cfg(feature = "nats")]
        nats: a.nats.clone().map(|url| gateway::nats::NatsConfig {
            url,
            partitions: a.nats_partitions,
            queue: a.nats_queue,
            max_bytes: a.nats_max_mib.max(1) << 20,
        }),
    };
    let listen = server::Listen {
        udp: addr(&a.udp, "udp")?,
        tcp: a
            .tcp
            .as_deref()
            .map(|t| addr(t, "tcp"))
            .transpose()?
            .flatten(),
        http: addr(&a.http, "http")?,
        udp_buffer: a.udp_buffer,
        max_tcp_connections: a.max_tcp,
        tcp_idle: Duration::from_secs(60),
    };
    let gw = gateway::Gateway::start(config)?;
    let stats_every = a.stats_every;
    let gw2 = gw.clone();
    server::run(gw, listen, move |b| {
        let s = |a: Option<SocketAddr>| a.map_or("null".to_string(), |a| format!("\"{a}\""));
        println!(
            "{{\"ready\": true, \"udp\": {}, \"udp_buffer\": {}, \"tcp\": {}, \"http\": {}, \
             \"archive\": {:?}}}",
            s(b.udp),
            b.udp_buffer.map_or("null".to_string(), |n| n.to_string()),
            s(b.tcp),
            s(b.http),
            a.archive.display().to_string()
        );
        let _ = std::io::stdout().flush();
        if stats_every > 0.0 {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let mut last = 0u64;
                loop {
                    std::thread::sleep(Duration::from_secs_f64(stats_every));
                    let mut t = gateway::http::totals_json(&gw2);
                    let now = gw2.counters.received.load(Ordering::Relaxed);
                    t["uptime_s"] = t0.elapsed().as_secs_f64().into();
                    t["packets_per_s"] = ((now - last) as f64 / stats_every).into();
                    last = now;
                    let views = gw2.views.streams.lock().unwrap_or_else(|e| e.into_inner());
                    let decoded: u64 = views.values().map(|v| v.decoded + v.decode_errors).sum();
                    let ms: f64 = views.values().map(|v| v.decode_ms_total).sum();
                    t["decoded"] = views.values().map(|v| v.decoded).sum::<u64>().into();
                    t["decode_ms_mean"] = (ms / decoded.max(1) as f64).into();
                    t["max_decode_lag_ms"] = views
                        .values()
                        .map(|v| v.decode_lag_max_ms)
                        .fold(0.0, f64::max)
                        .into();
                    drop(views);
                    println!("{t}");
                    let _ = std::io::stdout().flush();
                }
            });
        }
    })
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Pace {
    /// As fast as the decoder goes
    Fast,
    /// At the pace the packets were received
    Recorded,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Archive root written by `uigc gateway`
    archive: PathBuf,
    /// Stream id to replay [default: the only stream of the archive]
    #[arg(long)]
    stream: Option<u32>,
    /// From this receive time (Unix seconds)
    #[arg(long, value_name = "S")]
    from: Option<f64>,
    /// Up to this receive time (Unix seconds)
    #[arg(long, value_name = "S")]
    to: Option<f64>,
    /// Write the decoded frames as PNG files into this folder
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Write the decoded frames as a YUV4MPEG2 video ("-": stdout, e.g. into
    /// `gst-launch-1.0 fdsrc fd=0 ! y4mdec ! ...` or `ffmpeg -i -`)
    #[arg(long, value_name = "FILE")]
    y4m: Option<PathBuf>,
    /// Write the packets as a .uigcs stream (no decoding)
    #[arg(long, value_name = "FILE")]
    uigcs: Option<PathBuf>,
    /// Frame rate written into the y4m header
    #[arg(long, default_value_t = 10)]
    fps: u32,
    #[arg(long, value_enum, default_value_t = Pace::Fast)]
    pace: Pace,
    #[command(flatten)]
    model: ModelArgs,
}

pub fn replay(a: ReplayArgs) -> Result<(), String> {
    let root = &a.archive;
    let stream = match a.stream {
        Some(s) => s,
        None => match archive::list_streams(root)
            .map_err(|e| format!("{}: {e}", root.display()))?
            .as_slice()
        {
            [one] => *one,
            [] => return Err(format!("{}: no stream archived", root.display())),
            many => {
                return Err(format!(
                    "{}: {} streams archived ({}): name one with --stream",
                    root.display(),
                    many.len(),
                    many.iter()
                        .map(|s| s.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        },
    };
    let from = a.from.map_or(0, |s| (s.max(0.0) * 1e6) as u64);
    let to = a.to.map_or(u64::MAX, |s| (s.max(0.0) * 1e6) as u64);
    let records = archive::read_stream(root, stream, from, to)
        .map_err(|e| format!("{} stream {stream}: {e}", root.display()))?;
    if a.output.is_none() && a.y4m.is_none() && a.uigcs.is_none() {
        return Err("nothing to write: give -o DIR, --y4m FILE or --uigcs FILE".into());
    }
    if let Some(path) = &a.uigcs {
        std::fs::write(path, archive::to_uigcs(&records))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if a.output.is_none() && a.y4m.is_none() {
        eprintln!("stream {stream}: {} packets", records.len());
        return Ok(());
    }
    if let Some(dir) = &a.output {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let mut y4m: Option<Box<dyn Write>> = match &a.y4m {
        Some(p) if p == Path::new("-") => Some(Box::new(std::io::stdout().lock())),
        Some(p) => Some(Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        ))),
        None => None,
    };
    let mut models = load_models(&a.model)?;
    let mut dec = codec::StreamDecoder::new();
    let t0 = Instant::now();
    let mut y4m_size: Option<(u32, u32)> = None;
    let mut written = 0usize;
    for (i, r) in records.iter().enumerate() {
        if let Pace::Recorded = a.pace {
            let due = Duration::from_micros(r.time_us - records[0].time_us);
            if let Some(wait) = due.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let frame = models
            .model_for(&r.payload)
            .and_then(|m| dec.decode(m, &r.payload));
        let f = match frame {
            Ok(f) => f,
            Err(e) => {
                eprintln!("record {i}: not decoded: {e}");
                continue;
            }
        };
        if let Some(dir) = &a.output {
            write_png(&dir.join(format!("frame_{i:05}.png")), &f.image)?;
        }
        if let Some(w) = y4m.as_mut() {
            write_y4m(w, &mut y4m_size, &f.image, a.fps)?;
        }
        written += 1;
    }
    let s = dec.stats();
    eprintln!(
        "stream {stream}: {} packets, {written} frames written ({} exact, {} concealed, {} \
         dropped) in {:.1} s",
        records.len(),
        s.exact,
        s.concealed,
        s.dropped,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Appends one frame to a YUV4MPEG2 (4:2:0) stream, writing the header before the first.
fn write_y4m(
    w: &mut dyn Write,
    size: &mut Option<(u32, u32)>,
    img: &RgbImage,
    fps: u32,
) -> Result<(), String> {
    let io = |e: std::io::Error| format!("y4m: {e}");
    let (wd, ht) = (img.width, img.height);
    match size {
        None => {
            writeln!(w, "YUV4MPEG2 W{wd} H{ht} F{fps}:1 Ip A1:1 C420jpeg").map_err(io)?;
            *size = Some((wd, ht));
        }
        Some(s) if *s != (wd, ht) => {
            return Err(format!(
                "y4m: frame size changed from {}x{} to {wd}x{ht}",
                s.0, s.1
            ))
        }
        _ => {}
    }
    let (cw, ch) = (wd.div_ceil(2) as usize, ht.div_ceil(2) as usize);
    let (wd, ht) = (wd as usize, ht as usize);
    let mut y = vec![0u8; wd * ht];
    let mut u = vec![0f32; cw * ch];
    let mut v = vec![0f32; cw * ch];
    let mut n = vec![0f32; cw * ch];
    for row in 0..ht {
        for col in 0..wd {
            let p = &img.data[(row * wd + col) * 3..][..3];
            let (r, g, b) = (p[0] as f32, p[1] as f32, p[2] as f32);
            y[row * wd + col] = (0.299 * r + 0.587 * g + 0.114 * b)
                .round()
                .clamp(0.0, 255.0) as u8;
            let c = (row / 2) * cw + col / 2;
            u[c] += -0.168_736 * r - 0.331_264 * g + 0.5 * b + 128.0;
            v[c] += 0.5 * r - 0.418_688 * g - 0.081_312 * b + 128.0;
            n[c] += 1.0;
        }
    }
    let q = |s: &[f32]| -> Vec<u8> {
        s.iter()
            .zip(&n)
            .map(|(s, n)| (s / n).round().clamp(0.0, 255.0) as u8)
            .collect()
    };
    w.write_all(b"FRAME\n").map_err(io)?;
    w.write_all(&y).map_err(io)?;
    w.write_all(&q(&u)).map_err(io)?;
    w.write_all(&q(&v)).map_err(io)?;
    Ok(())
}

/// Verifies an archive: every segment's records and tails, per stream counts and a digest of
/// the packets in order (SHA-256), as one JSON line per stream.
pub fn archive_check(root: &Path) -> Result<(), String> {
    let streams = archive::list_streams(root).map_err(|e| format!("{}: {e}", root.display()))?;
    let mut bad = 0;
    for id in streams {
        let dir = archive::stream_dir(root, id);
        let segs = archive::list_segments(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (mut records, mut bytes) = (0u64, 0u64);
        let mut digest = Sha256::new();
        let mut tails = Vec::new();
        for (_, path) in &segs {
            let (recs, tail) =
                archive::read_segment(path).map_err(|e| format!("{}: {e}", path.display()))?;
            for r in &recs {
                digest.update((r.payload.len() as u32).to_le_bytes());
                digest.update(&r.payload);
                bytes += r.payload.len() as u64;
            }
            records += recs.len() as u64;
            if let archive::Tail::Invalid { offset, reason } = tail {
                bad += 1;
                tails.push(format!("{} at byte {offset}: {reason}", path.display()));
            }
        }
        let digest: String = digest
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        println!(
            "{}",
            serde_json::json!({"stream": id, "segments": segs.len(), "records": records,
                "bytes": bytes, "sha256": digest, "invalid_tails": tails})
        );
    }
    if bad > 0 {
        return Err(format!(
            "{bad} segment(s) end in an invalid record (a gateway that is still running, or a \
             torn tail that its next start cuts)"
        ));
    }
    Ok(())
}

#[cfg(feature = "nats")]
#[derive(Args)]
pub struct WorkerArgs {
    /// NATS JetStream server the gateways publish to
    #[arg(long, value_name = "URL")]
    nats: String,
    /// Name written into each frame [default: decode-<pid>]
    #[arg(long)]
    name: Option<String>,
    /// Seconds the server waits for a packet's ack before it gives the packet to another
    /// worker (used when the consumers are created, by the first worker)
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    ack_wait: f64,
    /// Size cap of the frame stream on the server in MiB (oldest frames dropped)
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    frames_max_mib: i64,
    /// Publish frames without their PNG (status and token digest only)
    #[arg(long)]
    no_png: bool,
    /// Stop after this many packets (0: run until stopped)
    #[arg(long, value_name = "N", default_value_t = 0)]
    max_packets: u64,
    /// Print a JSON line of counters every this many seconds (0: never)
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    stats_every: f64,
    #[command(flatten)]
    model: ModelArgs,
}

/// `uigc decode-worker`: decodes packets from the JetStream packet stream, publishes frames.
#[cfg(feature = "nats")]
pub fn decode_worker(a: WorkerArgs) -> Result<(), String> {
    let models = if a.model.model.is_empty() {
        vec![codec::default_model_dir().map_err(|e| e.to_string())?]
    } else {
        a.model.model.clone()
    };
    if !(a.ack_wait > 0.0 && a.ack_wait.is_finite()) {
        return Err(format!("--ack-wait {}: must be positive", a.ack_wait));
    }
    let cfg = gateway::nats::WorkerConfig {
        url: a.nats.clone(),
        name: a
            .name
            .clone()
            .unwrap_or_else(|| format!("decode-{}", std::process::id())),
        models,
        runtime: runtime_options(&a.model),
        ack_wait: Duration::from_secs_f64(a.ack_wait),
        frames_max_bytes: a.frames_max_mib.max(1) << 20,
        png: !a.no_png,
        max_packets: a.max_packets,
    };
    let name = cfg.name.clone();
    let t0 = Instant::now();
    let mut last = Instant::now();
    let line = |s: &gateway::nats::WorkerStats| {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        v["worker"] = name.clone().into();
        v["uptime_s"] = t0.elapsed().as_secs_f64().into();
        let n = (s.decoded + s.errors).max(1) as f64;
        v["decode_ms_mean"] = (s.decode_ms_total / n).into();
        println!("{v}");
        let _ = std::io::stdout().flush();
    };
    let stats = gateway::nats::run_worker(
        cfg,
        |partitions| {
            println!("{{\"ready\": true, \"partitions\": {partitions}}}");
            let _ = std::io::stdout().flush();
        },
        |s| {
            if a.stats_every > 0.0 && last.elapsed().as_secs_f64() >= a.stats_every {
                last = Instant::now();
                line(s);
            }
        },
    )?;
    line(&stats);
    Ok(())
}

#[cfg(feature = "nats")]
#[derive(Args)]
pub struct FramesArgs {
    /// NATS JetStream server the decode workers publish to
    #[arg(long, value_name = "URL")]
    nats: String,
    /// Only this stream id [default: all]
    #[arg(long)]
    stream: Option<u32>,
    /// Write each frame's PNG into this folder (<stream>_<seq>.png)
    #[arg(short, long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Stop when no frame arrives for this many seconds (0: follow until stopped)
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    idle: f64,
}

/// `uigc frames`: a viewer of the frame stream, from its start: a JSON line per frame (and PNGs).
#[cfg(feature = "nats")]
pub fn frames(a: FramesArgs) -> Result<(), String> {
    if let Some(dir) = &a.output {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let idle = (a.idle > 0.0).then(|| Duration::from_secs_f64(a.idle));
    gateway::nats::read_frames(&a.nats, a.stream, idle, |f| {
        if let (Some(dir), false) = (&a.output, f.png.is_empty()) {
            let p = dir.join(format!("{}_{:06}.png", f.stream, f.seq));
            std::fs::write(&p, &f.png).map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let mut v = serde_json::to_value(&f).map_err(|e| e.to_string())?;
        v["png_bytes"] = f.png.len().into();
        let mut out = std::io::stdout().lock();
        writeln!(out, "{v}").map_err(|e| format!("stdout: {e}"))
    })
}
