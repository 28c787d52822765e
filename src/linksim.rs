//! A lossy-link simulator for tests and scripts: a UDP relay on loopback that drops, duplicates
//! and reorders datagrams and injects hostile ones (random bytes, truncated and bit-flipped
//! copies), every decision from a fixed seed (splitmix64), so a run is the same on every machine
//! for the same order of datagrams. `tc netem` is not available everywhere; GStreamer's
//! `identity drop-probability` drops but neither duplicates nor reorders (and cannot be seeded).
//!
//! Used by `tests/lossy_link.rs` (in-process) and by the `uigc-linksim` tool
//! (`pipelines/lossy-link.sh`, `deploy/soak.sh`). No GStreamer types.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::codec::regen::splitmix;

/// What the link does to each datagram (probabilities in 0..=1).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkConfig {
    /// A datagram is lost.
    pub loss: f64,
    /// A datagram that is not lost arrives twice.
    pub duplicate: f64,
    /// A datagram that is not lost is held back and arrives after the next one that is
    /// forwarded (or after `hold` without one).
    pub reorder: f64,
    /// Before each datagram, a hostile one is sent (a third each: random bytes, a truncated copy,
    /// a copy with 1-3 flipped bits).
    pub hostile: f64,
    pub seed: u64,
    /// The first this many datagrams pass untouched (e.g. 1: a stream's intra packet, without
    /// which a receiver refuses the inter packets until a refresh cycle starts).
    pub spare_first: usize,
}

/// One datagram the relay received from the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// (stream id, frame counter) when it parses as a uigc packet.
    pub frame: Option<(u32, u32)>,
    pub bytes: usize,
}

/// What the relay did, for the test's ground truth.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkReport {
    /// Every datagram received from the sender, in arrival order.
    pub received: Vec<Received>,
    /// Indices into `received` of the datagrams forwarded, in the order they were sent
    /// (duplicates appear twice).
    pub delivered: Vec<usize>,
    /// Hostile datagrams sent (not in `delivered`).
    pub hostile: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl LinkReport {
    /// Datagrams that left the relay: delivered plus hostile.
    pub fn sent(&self) -> u64 {
        self.delivered.len() as u64 + self.hostile
    }
}

struct Link {
    cfg: LinkConfig,
    rng: u64,
    socket: UdpSocket,
    to: SocketAddr,
    held: Option<(usize, Vec<u8>, bool, Instant)>,
    report: LinkReport,
}

impl Link {
    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && (splitmix(&mut self.rng) as f64 / u64::MAX as f64) < p
    }

    fn send(&mut self, index: usize, data: &[u8], twice: bool) {
        for _ in 0..1 + twice as usize {
            // A refused send (no receiver yet) is a loss on the link like any other.
            let _ = self.socket.send_to(data, self.to);
            self.report.delivered.push(index);
        }
    }

    fn flush(&mut self) {
        if let Some((i, data, twice, _)) = self.held.take() {
            self.send(i, &data, twice);
        }
    }

    fn hostile(&mut self, data: &[u8]) {
        let bad = hostile_datagram(&mut self.rng, data, 300);
        let _ = self.socket.send_to(&bad, self.to);
        self.report.hostile += 1;
    }

    fn on_datagram(&mut self, data: &[u8]) {
        let index = self.report.received.len();
        let frame = crate::codec::bitstream::parse_packet(data)
            .ok()
            .map(|p| (p.header.stream_id, p.header.frame));
        self.report.received.push(Received {
            frame,
            bytes: data.len(),
        });
        if self.chance(self.cfg.hostile) {
            self.hostile(data);
        }
        if index < self.cfg.spare_first {
            self.send(index, data, false);
            self.flush();
            return;
        }
        if self.chance(self.cfg.loss) {
            self.report.lost += 1;
            return;
        }
        let twice = self.chance(self.cfg.duplicate);
        self.report.duplicated += twice as u64;
        if self.held.is_none() && self.chance(self.cfg.reorder) {
            self.report.reordered += 1;
            self.held = Some((index, data.to_vec(), twice, Instant::now()));
            return;
        }
        self.send(index, data, twice);
        self.flush();
    }
}

/// A hostile datagram made from `data` (a real packet, or empty): a third each random bytes
/// (1..=`max_random` of them), a truncated copy, a copy with 1-3 flipped bits.
pub fn hostile_datagram(rng: &mut u64, data: &[u8], max_random: usize) -> Vec<u8> {
    let r = splitmix(rng);
    match r % 3 {
        0 => {
            let n = 1 + (r >> 8) as usize % max_random.max(1);
            (0..n).map(|_| splitmix(rng) as u8).collect()
        }
        1 => data[..(r >> 8) as usize % data.len().max(1)].to_vec(),
        _ => {
            let mut q = data.to_vec();
            if !q.is_empty() {
                for _ in 0..1 + (r >> 8) % 3 {
                    let bit = splitmix(rng) as usize % (q.len() * 8);
                    q[bit / 8] ^= 1 << (bit % 8);
                }
            }
            q
        }
    }
}

/// A running relay: datagrams to `127.0.0.1:port` go through the link to the destination.
pub struct Relay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<LinkReport>>,
    live: Arc<Mutex<LinkReport>>,
}

/// How long a held-back datagram waits for a successor before it is sent anyway.
pub const HOLD: Duration = Duration::from_millis(200);

impl Relay {
    /// Binds `listen` (e.g. `127.0.0.1:0`) and relays to `to` in a thread.
    pub fn start(listen: &str, to: SocketAddr, cfg: LinkConfig) -> io::Result<Self> {
        let socket = UdpSocket::bind(listen)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let port = socket.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(LinkReport::default()));
        let (stop2, live2) = (stop.clone(), live.clone());
        let thread = std::thread::Builder::new()
            .name("uigc-linksim".into())
            .spawn(move || {
                let mut link = Link {
                    cfg,
                    rng: cfg.seed,
                    socket,
                    to,
                    held: None,
                    report: LinkReport::default(),
                };
                let mut buf = vec![0u8; 65536];
                loop {
                    match link.socket.recv_from(&mut buf) {
                        Ok((n, _)) => link.on_datagram(&buf[..n]),
                        Err(e)
                            if matches!(
                                e.kind(),
                                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => {}
                    }
                    if link.held.as_ref().is_some_and(|h| h.3.elapsed() >= HOLD) {
                        link.flush();
                    }
                    *live2.lock().unwrap() = link.report.clone();
                    if stop2.load(Ordering::SeqCst) {
                        link.flush();
                        return link.report;
                    }
                }
            })?;
        Ok(Self {
            port,
            stop,
            thread: Some(thread),
            live,
        })
    }

    /// What the relay did so far.
    pub fn report(&self) -> LinkReport {
        self.live.lock().unwrap().clone()
    }

    /// Stops the relay (a held-back datagram is sent first) and returns what it did.
    pub fn finish(mut self) -> LinkReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("relay thread"))
            .unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What a receiver that follows the frame counters (as `uigcdec` does) makes of the delivered
/// datagrams, from the relay's report: the expected counters, assuming no hostile packet was
/// taken for a real one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Expected {
    pub decoded: u64,
    pub lost: u64,
    pub late: u64,
    pub duplicate: u64,
    /// Frames lost after the last one delivered (a receiver counts them when the next arrives).
    pub tail: u64,
}

impl LinkReport {
    /// The counters a receiver should report for one stream whose frame counters start at the
    /// first datagram received (no restarts, fewer than 2^31 frames, reordering within 64).
    pub fn expected(&self) -> Expected {
        let frames: Vec<u32> = self
            .delivered
            .iter()
            .filter_map(|&i| self.received[i].frame.map(|f| f.1))
            .collect();
        let mut e = Expected::default();
        let mut got = std::collections::BTreeSet::new();
        let mut newest: Option<u32> = None;
        let first = self.received.iter().find_map(|r| r.frame.map(|f| f.1));
        for f in frames {
            if !got.insert(f) {
                e.duplicate += 1;
            } else if newest.is_some_and(|n| f < n) {
                e.late += 1;
            } else {
                e.decoded += 1;
                newest = Some(f);
            }
        }
        if let (Some(first), Some(newest)) = (first, newest) {
            // Frames up to the newest that never arrived (or arrived late) were counted lost.
            let missing = (first..=newest).filter(|f| !got.contains(f)).count() as u64;
            e.lost = missing;
            let last_sent = self
                .received
                .iter()
                .filter_map(|r| r.frame.map(|f| f.1))
                .max()
                .unwrap_or(newest);
            e.tail = u64::from(last_sent - newest);
        }
        e
    }
}

/// A flood of hostile datagrams (see [`Flooder`]).
#[derive(Debug, Clone, Default)]
pub struct FloodConfig {
    pub seed: u64,
    /// Real packets the flood damages (truncated and bit-flipped copies); without any, every
    /// datagram is random bytes.
    pub templates: Vec<Vec<u8>>,
    /// Longest random datagram (bytes; at least 1).
    pub max_random: usize,
    /// Datagrams per second; 0: as fast as the thread can send.
    pub rate: f64,
}

/// What a flood sent.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FloodReport {
    pub datagrams: u64,
    pub bytes: u64,
    /// Sends the system refused (e.g. no buffer space): not counted in `datagrams`.
    pub refused: u64,
    pub seconds: f64,
}

impl FloodReport {
    pub fn datagrams_per_s(&self) -> f64 {
        self.datagrams as f64 / self.seconds.max(1e-9)
    }

    /// UDP payload bits per second, in Mbit/s.
    pub fn mbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / 1e6 / self.seconds.max(1e-9)
    }
}

/// Floods `to` with corrupt datagrams from a thread until finished: a pool of 4096 datagrams
/// made once from the seed ([`hostile_datagram`]; a third of them random bytes; none that
/// parses as a packet) is sent round and round, so the sending loop does nothing but send.
pub struct Flooder {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<FloodReport>>,
}

impl Flooder {
    pub fn start(to: SocketAddr, cfg: FloodConfig) -> io::Result<Self> {
        let socket = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        socket.connect(to)?;
        let mut rng = cfg.seed;
        let pool: Vec<Vec<u8>> = (0..4096)
            .map(|i| {
                let t = if cfg.templates.is_empty() {
                    &[][..]
                } else {
                    &cfg.templates[i % cfg.templates.len()][..]
                };
                // Only corrupt datagrams: not empty, and none that parses (two flips of the
                // same bit give back the real packet; 1 in 65,536 damaged copies passes the
                // packet check).
                loop {
                    let d = hostile_datagram(&mut rng, t, cfg.max_random);
                    if !d.is_empty() && crate::codec::bitstream::parse_packet(&d).is_err() {
                        break d;
                    }
                }
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name("uigc-flood".into())
            .spawn(move || {
                let t0 = Instant::now();
                let mut r = FloodReport::default();
                let mut i = 0usize;
                while !stop2.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        let d = &pool[i % pool.len()];
                        i += 1;
                        match socket.send(d) {
                            Ok(n) => {
                                r.datagrams += 1;
                                r.bytes += n as u64;
                            }
                            Err(_) => r.refused += 1,
                        }
                    }
                    if cfg.rate > 0.0 {
                        let due = t0 + Duration::from_secs_f64(r.datagrams as f64 / cfg.rate);
                        if let Some(wait) = due.checked_duration_since(Instant::now()) {
                            std::thread::sleep(wait);
                        }
                    }
                }
                r.seconds = t0.elapsed().as_secs_f64();
                r
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the flood and returns what it sent.
    pub fn finish(mut self) -> FloodReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .map(|t| t.join().expect("flood thread"))
            .unwrap_or_default()
    }
}

impl Drop for Flooder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
