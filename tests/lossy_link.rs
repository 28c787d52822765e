//! Lossy links on loopback, in this process: `videotestsrc ! uigcenc ! [identity
//! drop-probability] ! udpsink` -> a seeded relay that loses, duplicates and reorders datagrams
//! and injects hostile ones (src/linksim.rs) -> `udpsrc ! uigcdec ! fakesink`. The relay's log is
//! the ground truth: every counter of the decoder is asserted exactly, and the frames add up
//! (sent = decoded + lost + late + the losses after the last delivered frame). Small frames
//! (128x96, tiny test model): seconds per case. Ports: the system picks them (port 0).
#![cfg(feature = "gst")]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gst::prelude::*;
use gstuigc::linksim::{LinkConfig, LinkReport, Relay};

/// Polls `done` every 20 ms until it holds; fails (never hangs) after `secs` seconds.
fn wait_until(secs: u64, what: impl Fn() -> String, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "after {secs} s: {}", what());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `udpsrc port=0 ! uigcdec ! [downstream] ! fakesink`, counting the frames that reach the sink
/// and collecting the bus messages of the decoder.
struct Receiver {
    pipeline: gst::Pipeline,
    dec: gst::Element,
    shown: Arc<AtomicU64>,
    warnings: Arc<Mutex<Vec<String>>>,
    qos: Arc<AtomicU64>,
    /// The last `uigcdec-stats` message (posted after every packet: `stats-every=1`).
    stats: Arc<Mutex<Option<gst::Structure>>>,
    port: u16,
}

impl Receiver {
    fn start(downstream: &str) -> Self {
        common::gst_init();
        let pipeline = gst::parse::launch(&format!(
            "udpsrc name=u port=0 reuse=false address=127.0.0.1 buffer-size=4194304 \
             ! uigcdec name=d {} max-pixels=49152 stats-every=1 {downstream} \
             ! fakesink name=s sync=false",
            common::tiny_model_prop()
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let dec = pipeline.by_name("d").unwrap();
        let shown = Arc::new(AtomicU64::new(0));
        let s = shown.clone();
        pipeline
            .by_name("s")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                s.fetch_add(1, Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            });
        let warnings = Arc::new(Mutex::new(Vec::new()));
        let qos = Arc::new(AtomicU64::new(0));
        let stats = Arc::new(Mutex::new(None));
        let (w, q, st) = (warnings.clone(), qos.clone(), stats.clone());
        pipeline.bus().unwrap().set_sync_handler(move |_, msg| {
            match msg.view() {
                gst::MessageView::Warning(m) => w.lock().unwrap().push(m.error().to_string()),
                gst::MessageView::Error(m) => {
                    w.lock()
                        .unwrap()
                        .push(format!("ERROR {} {:?}", m.error(), m.debug()))
                }
                gst::MessageView::Element(e)
                    if e.structure().is_some_and(|s| s.name() == "uigcdec-stats") =>
                {
                    *st.lock().unwrap() = e.structure().map(|s| s.to_owned());
                }
                gst::MessageView::Qos(_) if msg.src().is_some_and(|s| s.name().as_str() == "d") => {
                    q.fetch_add(1, Ordering::SeqCst);
                }
                _ => {}
            }
            gst::BusSyncReply::Drop
        });
        pipeline.set_state(gst::State::Playing).unwrap();
        let port = pipeline.by_name("u").unwrap().property::<i32>("port");
        assert!(port > 0, "udpsrc did not report the port it bound");
        Receiver {
            pipeline,
            dec,
            shown,
            warnings,
            qos,
            stats,
            port: port as u16,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.dec.property::<u64>(name)
    }

    /// Packets the decoder has accounted for (each in exactly one counter).
    fn packets(&self) -> u64 {
        [
            "frames-decoded",
            "frames-dropped",
            "frames-late",
            "frames-duplicate",
        ]
        .iter()
        .map(|c| self.counter(c))
        .sum()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn errors(&self) -> Vec<String> {
        let w = self.warnings.lock().unwrap();
        w.iter()
            .filter(|m| m.starts_with("ERROR"))
            .cloned()
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// Runs a sender to its end: `frames` 128x96 frames of a moving ball through `uigcenc` (refresh
/// cycle of 10 frames, no QoS drops: every frame becomes a packet; `between` may start with
/// more encoder properties) and `between` to `to`. Returns the encoder's `frames-encoded`.
fn send(to: SocketAddr, frames: u32, live_fps: Option<u32>, between: &str) -> u64 {
    common::gst_init();
    let (live, fps) = match live_fps {
        Some(f) => ("is-live=true", f),
        None => ("", 30),
    };
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc {live} num-buffers={frames} pattern=ball \
         ! video/x-raw,width=128,height=96,framerate={fps}/1 \
         ! uigcenc name=e {} refresh-frames=10 qos=false {between} \
         ! udpsink host=127.0.0.1 port={} sync={}",
        common::tiny_model_prop(),
        to.port(),
        live_fps.is_some()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(
            gst::ClockTime::from_seconds(60),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .expect("the sender did not finish within 60 s");
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("sender error: {} {:?}", e.error(), e.debug());
    }
    let n = pipeline
        .by_name("e")
        .unwrap()
        .property::<u64>("frames-encoded");
    pipeline.set_state(gst::State::Null).unwrap();
    n
}

/// The counters of the receiver after a run.
#[derive(Debug, PartialEq, Eq)]
struct Counts {
    decoded: u64,
    lost: u64,
    late: u64,
    duplicate: u64,
}

/// One run over the relay; waits until the decoder has accounted for every datagram the relay
/// sent. Returns the relay's log, the frames sent, and the receiver (for more checks).
fn run(cfg: LinkConfig, frames: u32, between: &str) -> (LinkReport, u64, Receiver) {
    let rx = Receiver::start("");
    let relay = Relay::start("127.0.0.1:0", rx.addr(), cfg).unwrap();
    let to = SocketAddr::from(([127, 0, 0, 1], relay.port));
    let sent = send(to, frames, None, between);
    // Every datagram reached the relay (loopback) once the sender is done and the relay quiet.
    // (With drops in the sender, until the count is stable.)
    let mut prev = u64::MAX;
    wait_until(
        30,
        || format!("the relay got {} datagrams", relay.report().received.len()),
        || {
            let n = relay.report().received.len() as u64;
            let done = if between.is_empty() {
                n == sent
            } else {
                n == prev
            };
            prev = n;
            std::thread::sleep(Duration::from_millis(100));
            done
        },
    );
    let report = relay.finish();
    let want = report.sent();
    wait_until(
        60,
        || {
            format!(
                "the receiver accounted for {} of {want} datagrams (errors: {:?})",
                rx.packets(),
                rx.errors()
            )
        },
        || rx.packets() >= want,
    );
    assert_eq!(rx.packets(), want, "packets accounted for");
    // The message after the last packet is posted just after its counters are updated.
    wait_until(
        10,
        || "no uigcdec-stats message after the last packet".into(),
        || {
            rx.stats.lock().unwrap().as_ref().is_some_and(|st| {
                [
                    "frames-decoded",
                    "frames-dropped",
                    "frames-late",
                    "frames-duplicate",
                ]
                .iter()
                .map(|f| st.get::<u64>(*f).unwrap())
                .sum::<u64>()
                    == want
            })
        },
    );
    assert!(rx.errors().is_empty(), "receiver errors: {:?}", rx.errors());
    (report, sent, rx)
}

fn counts(rx: &Receiver) -> Counts {
    Counts {
        decoded: rx.counter("frames-decoded"),
        lost: rx.counter("frames-lost"),
        late: rx.counter("frames-late"),
        duplicate: rx.counter("frames-duplicate"),
    }
}

/// `loss` of the datagrams lost, a tenth duplicated and a tenth reordered (seeded; the first,
/// intra, packet spared: without it the receiver refuses inter packets until a refresh cycle
/// starts, counted as dropped): the counters equal what the relay's log says, and the frames
/// add up.
fn lossy(loss: f64, seed: u64) {
    let frames = 60;
    let cfg = LinkConfig {
        loss,
        duplicate: 0.1,
        reorder: 0.1,
        hostile: 0.0,
        seed,
        spare_first: 1,
    };
    let (report, sent, rx) = run(cfg, frames, "");
    assert_eq!(sent, frames as u64, "frames encoded");
    let e = report.expected();
    eprintln!(
        "loss {loss}: relay lost {} duplicated {} reordered {}; expected {e:?}; receiver {:?}, \
         concealed {}",
        report.lost,
        report.duplicated,
        report.reordered,
        counts(&rx),
        rx.counter("frames-concealed")
    );
    assert_eq!(
        counts(&rx),
        Counts {
            decoded: e.decoded,
            lost: e.lost,
            late: e.late,
            duplicate: e.duplicate
        }
    );
    assert_eq!(rx.counter("frames-dropped"), 0);
    assert_eq!(sent, e.decoded + e.lost + e.late + e.tail, "frames add up");
    // The last `uigcdec-stats` message (what pipelines/lossy-link.sh reads) says the same.
    let st = rx
        .stats
        .lock()
        .unwrap()
        .clone()
        .expect("a uigcdec-stats message");
    let field = |f: &str| st.get::<u64>(f).unwrap();
    assert_eq!(
        Counts {
            decoded: field("frames-decoded"),
            lost: field("frames-lost"),
            late: field("frames-late"),
            duplicate: field("frames-duplicate")
        },
        counts(&rx),
        "uigcdec-stats"
    );
    wait_until(
        10,
        || "decoded frames did not reach the sink".into(),
        || rx.shown.load(Ordering::SeqCst) == e.decoded,
    );
    if loss == 0.0 {
        assert_eq!(report.lost, 0);
    } else {
        // The seed exercises what the case is about.
        assert!(
            e.lost >= (loss * frames as f64 / 2.0) as u64,
            "the seed lost too little"
        );
    }
    assert!(
        e.late > 0 && e.duplicate > 0,
        "the seed neither reorders nor duplicates"
    );
}

#[test]
fn link_0_percent_loss_with_duplicates_and_reordering() {
    lossy(0.0, 1);
}

#[test]
fn link_5_percent_loss_with_duplicates_and_reordering() {
    lossy(0.05, 2);
}

#[test]
fn link_20_percent_loss_with_duplicates_and_reordering() {
    lossy(0.2, 3);
}

#[test]
fn link_50_percent_loss_with_duplicates_and_reordering() {
    lossy(0.5, 4);
}

/// A duplicated packet is dropped as a duplicate, not decoded again: before, the second copy of
/// an inter packet did not follow the state the first left, so the receiver concealed every
/// frame until the next refresh cycle although nothing was lost.
#[test]
fn duplicates_do_not_break_the_stream() {
    let cfg = LinkConfig {
        duplicate: 0.3,
        seed: 5,
        ..LinkConfig::default()
    };
    let (report, sent, rx) = run(cfg, 40, "");
    let e = report.expected();
    assert!(report.duplicated >= 5, "the seed duplicates too little");
    assert_eq!(rx.counter("frames-duplicate"), report.duplicated);
    assert_eq!(rx.counter("frames-decoded"), sent);
    assert_eq!(
        (rx.counter("frames-lost"), rx.counter("frames-late")),
        (0, 0)
    );
    assert_eq!(
        rx.counter("frames-concealed"),
        0,
        "a duplicate broke the stream"
    );
    assert_eq!(e.decoded, sent);
}

/// GStreamer's own `identity drop-probability=0.2` (not seedable: the counts differ per run but
/// are read from the relay's log) in front of the relay's duplicates and reordering. Every
/// frame intra (`keyframe-interval=1`): identity may drop the first packet, and a receiver
/// without it refuses inter packets until a refresh cycle starts.
#[test]
fn identity_drop_probability_and_relay() {
    let cfg = LinkConfig {
        duplicate: 0.1,
        reorder: 0.1,
        seed: 6,
        ..LinkConfig::default()
    };
    let (report, sent, rx) = run(
        cfg,
        60,
        "keyframe-interval=1 ! identity drop-probability=0.2",
    );
    let e = report.expected();
    let frames: Vec<u32> = report
        .received
        .iter()
        .map(|r| r.frame.expect("a uigc packet").1)
        .collect();
    let (first, last) = (frames[0] as u64, *frames.iter().max().unwrap() as u64);
    assert_eq!(
        counts(&rx),
        Counts {
            decoded: e.decoded,
            lost: e.lost,
            late: e.late,
            duplicate: e.duplicate
        }
    );
    // Dropped by identity before the first and after the last datagram the relay saw: no
    // receiver can count those.
    let unseen = first + (sent - 1 - last);
    assert_eq!(sent, unseen + e.decoded + e.lost + e.late + e.tail);
    assert_eq!(
        e.tail, 0,
        "the relay saw every frame up to the last one it got"
    );
}

/// Hostile datagrams (random bytes, truncated and bit-flipped copies) before 30 % of the
/// packets, on a link that also loses, duplicates and reorders: every hostile one is refused or
/// is a harmless copy (counted, never shown as another frame), the real frames decode as
/// without them.
#[test]
fn hostile_datagrams_on_a_lossy_link() {
    let cfg = LinkConfig {
        loss: 0.1,
        duplicate: 0.1,
        reorder: 0.1,
        hostile: 0.3,
        seed: 7,
        spare_first: 1,
    };
    let (report, _sent, rx) = run(cfg, 60, "");
    let e = report.expected();
    assert!(report.hostile >= 10, "the seed injects too little");
    assert_eq!(rx.counter("frames-decoded"), e.decoded);
    let dropped = rx.counter("frames-dropped");
    // Stale-looking hostile copies are counted late/duplicate, undecodable ones dropped.
    assert!(dropped <= report.hostile && dropped >= report.hostile / 2);
    assert_eq!(
        rx.counter("frames-late") + rx.counter("frames-duplicate") + dropped,
        e.late + e.duplicate + report.hostile
    );
}

/// A receiver that keeps up says nothing; one slower than its live sender (50 frames/s, 50 ms
/// of work per frame downstream of the decoder) warns, posts a QoS message and counts
/// `frames-behind` instead of silently lagging.
#[test]
fn a_slow_receiver_says_so() {
    let fast = Receiver::start("");
    let sent = send(fast.addr(), 30, Some(20), "");
    wait_until(
        30,
        || format!("fast receiver: {} of {sent}", fast.packets()),
        || fast.packets() >= sent,
    );
    assert_eq!(
        fast.counter("frames-behind"),
        0,
        "a fast receiver is not behind"
    );
    assert_eq!(fast.qos.load(Ordering::SeqCst), 0);
    assert!(fast.dec.property::<f64>("busy") < 0.95);

    let slow = Receiver::start("! identity sleep-time=50000");
    let sent = send(slow.addr(), 40, Some(50), "");
    wait_until(
        30,
        || format!("slow receiver: {} of {sent}", slow.packets()),
        || slow.packets() + slow.counter("frames-lost") >= sent,
    );
    assert!(slow.counter("frames-behind") > 0, "frames-behind stayed 0");
    assert!(slow.dec.property::<f64>("busy") >= 0.95);
    assert_eq!(
        slow.qos.load(Ordering::SeqCst),
        1,
        "one QoS message per episode"
    );
    let w = slow.warnings.lock().unwrap().clone();
    assert!(
        w.iter()
            .any(|m| m.starts_with("uigcdec cannot keep up with its input: busy")),
        "no warning: {w:?}"
    );
}
