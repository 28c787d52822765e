//! Real pipelines over 127.0.0.1 UDP: a `gst-launch-1.0` sender process with the built plugin
//! (`libgstuigc.so` through `GST_PLUGIN_PATH`, as the README says) and a receiver, either a
//! second `gst-launch-1.0` process recording PNG files or a pipeline in this process whose
//! decoder counters are read; plus the real clip `vtest.avi` through `decodebin` with a seeded
//! fifth of the packets dropped on the way. Deterministic: ports are bound by the receiver
//! itself (port 0 in this process; a refused `reuse=false` bind is retried for the process),
//! drops come from a fixed seed, and the tests wait for an end condition (every frame written,
//! every datagram counted) under a deadline that fails instead of hanging. Needs
//! `gstreamer1.0-tools`, `-plugins-base/-good` and `-libav` (the setup installs them); no
//! display.
#![cfg(feature = "gst")]

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Once;
use std::time::{Duration, Instant};

use gst::prelude::*;

/// The GStreamer command-line tools and elements `test` needs, or [`common::skip_or_fail`].
fn have_gst_tools(test: &str, elements: &[&str]) -> bool {
    if !common::have_tool(test, "gst-launch-1.0", "gstreamer1.0-tools") {
        return false;
    }
    let missing: Vec<&str> = elements
        .iter()
        .copied()
        .filter(|e| {
            !Command::new("gst-inspect-1.0")
                .arg("--exists")
                .arg(e)
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if !missing.is_empty() {
        common::skip_or_fail(
            test,
            &format!(
                "GStreamer elements {missing:?} are missing (install gstreamer1.0-plugins-base, \
                 -good and -libav: deploy/setup.sh)"
            ),
        );
        return false;
    }
    true
}

/// A private plugin directory holding the `libgstuigc.so` this test binary was built with, and
/// a private registry, so the child processes load exactly this build.
fn plugin_env(tag: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let candidates = [
        deps.join("libgstuigc.so"),
        deps.parent().unwrap().join("libgstuigc.so"),
    ];
    let lib = candidates
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libgstuigc.so not found in {candidates:?}"));
    let dir = std::env::temp_dir().join(format!("uigc-gst-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(lib, dir.join("plugins/libgstuigc.so")).unwrap();
    dir
}

fn gst_launch(env: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("gst-launch-1.0");
    c.args(args)
        .env("GST_PLUGIN_PATH", env.join("plugins"))
        .env("GST_REGISTRY", env.join("registry.bin"))
        .env_remove("DISPLAY")
        .stdin(Stdio::null());
    c
}

/// A port that was free a moment ago (the receiver binds it with `reuse=false`, so a port taken
/// in between is a bind error, retried, never a shared port).
fn candidate_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A receiver process, its output read by threads (it can never block on a full pipe, and a
/// silent receiver cannot hang the test).
struct Process {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Process {
    fn spawn(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("gst-launch-1.0 (install gstreamer1.0-tools: deploy/setup.sh)");
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err) as Box<dyn std::io::Read + Send>,
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        Process { child, lines }
    }

    /// Waits for a line containing `needle`: Ok(()) when it comes, Err(output so far) when the
    /// process ends first; panics at the deadline.
    fn wait_for(&mut self, needle: &str, deadline: Instant) -> Result<(), String> {
        let mut seen = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    eprintln!("receiver: {line}");
                    seen.push_str(&line);
                    seen.push('\n');
                    if line.contains(needle) {
                        return Ok(());
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait();
                    return Err(format!("{seen}(exited: {status:?})"));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        // Drain what is left, then report.
                        while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                            seen.push_str(&line);
                            seen.push('\n');
                        }
                        return Err(format!("{seen}(exited: {status})"));
                    }
                    assert!(
                        Instant::now() < deadline,
                        "no '{needle}' from the receiver in time:\n{seen}"
                    );
                }
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a `gst-launch-1.0` receiver whose `udpsrc` binds `port=N reuse=false` (`args` holds
/// `{port}` where the port goes) and returns once its pipeline is PLAYING (socket bound, model
/// loaded). A port taken by someone else in the meantime fails the bind: another port is tried.
fn start_receiver(env: &Path, args: &[&str]) -> (Process, u16) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = candidate_port();
        let port_arg = format!("port={port}");
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "{port}" { port_arg.as_str() } else { a })
            .collect();
        let mut p = Process::spawn(gst_launch(env, &args));
        match p.wait_for("Setting pipeline to PLAYING", deadline) {
            Ok(()) => return (p, port),
            Err(out) if out.contains("bind") || out.contains("in use") => failures.push(out),
            Err(out) => panic!("receiver exited before PLAYING:\n{out}"),
        }
    }
    panic!("no port could be bound: {failures:#?}");
}

fn run_sender(env: &Path, args: &[&str]) {
    let out = gst_launch(env, args).output().expect("gst-launch-1.0");
    assert!(
        out.status.success(),
        "sender failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `done` every 50 ms until it holds; fails (never hangs) after `secs` seconds.
fn wait_until(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(Instant::now() < deadline, "after {secs} s: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `gst-launch-1.0 ... ! uigcenc ep=cuda ! ...` on a machine (or build) without that provider:
/// the pipeline fails with one error line naming the provider and a non-zero exit, it never
/// runs on the CPU instead. Same for the receiver's `uigcdec ep=tensorrt`.
#[test]
fn gst_launch_with_an_unavailable_gpu_provider_exits_with_an_error() {
    let test = "gst_launch_with_an_unavailable_gpu_provider_exits_with_an_error";
    if !have_gst_tools(test, &["videotestsrc", "fakesink"]) {
        return;
    }
    if std::env::var_os("UIGC_TEST_GPU").is_some() {
        eprintln!("skipped: UIGC_TEST_GPU says this machine has a GPU provider");
        return;
    }
    let env = plugin_env("gpu-absent");
    let model = common::tiny_model_prop();
    let runs: [(&str, Vec<&str>); 2] = [
        (
            "cuda",
            vec![
                "videotestsrc",
                "num-buffers=2",
                "!",
                "video/x-raw,width=64,height=48",
                "!",
                "uigcenc",
                "ep=cuda",
                &model,
                "!",
                "fakesink",
            ],
        ),
        (
            "tensorrt",
            vec![
                "videotestsrc",
                "num-buffers=2",
                "!",
                "video/x-raw,width=64,height=48",
                "!",
                "uigcenc",
                &model,
                "!",
                "uigcdec",
                "ep=tensorrt",
                &model,
                "!",
                "fakesink",
            ],
        ),
    ];
    for (ep, args) in runs {
        let out = gst_launch(&env, &args).output().expect("gst-launch-1.0");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "ep={ep} must fail: {text}");
        let needle = format!("execution provider '{ep}' is not available");
        let lines = text.lines().filter(|l| l.contains(&needle)).count();
        assert!(lines >= 1, "ep={ep}: no line names the provider: {text}");
    }
    let _ = std::fs::remove_dir_all(&env);
}

#[test]
fn sender_and_receiver_processes_over_loopback_udp() {
    let test = "sender_and_receiver_processes_over_loopback_udp";
    if !have_gst_tools(
        test,
        &[
            "udpsrc",
            "udpsink",
            "videotestsrc",
            "pngenc",
            "multifilesink",
        ],
    ) {
        return;
    }
    let env = plugin_env("procs");
    let frames = 20;
    let out_dir = env.join("frames");
    std::fs::create_dir_all(&out_dir).unwrap();
    let model = common::tiny_model_prop();
    let location = format!("location={}/frame-%05d.png", out_dir.display());
    // The README's receiver, recording to files instead of a display.
    let (receiver, port) = start_receiver(
        &env,
        &[
            "udpsrc",
            "{port}",
            "reuse=false",
            "!",
            "uigcdec",
            &model,
            "!",
            "videoconvert",
            "!",
            "pngenc",
            "!",
            "multifilesink",
            &location,
        ],
    );
    // The README's sender with videotestsrc in place of the camera.
    let num = format!("num-buffers={frames}");
    let port_arg = format!("port={port}");
    run_sender(
        &env,
        &[
            "videotestsrc",
            &num,
            "!",
            "video/x-raw,width=160,height=120,framerate=20/1",
            "!",
            "videoconvert",
            "!",
            "uigcenc",
            &model,
            "!",
            "udpsink",
            "host=127.0.0.1",
            &port_arg,
        ],
    );
    // End condition: the last frame's file is complete (a PNG that decodes).
    let last = out_dir.join(format!("frame-{:05}.png", frames - 1));
    wait_until(60, "the receiver did not write every frame", || {
        image::open(&last).is_ok()
    });
    drop(receiver);
    let count = std::fs::read_dir(&out_dir).unwrap().count();
    assert_eq!(count, frames, "frames recorded by the receiver");
    let first = image::open(out_dir.join("frame-00000.png")).unwrap();
    assert_eq!((first.width(), first.height()), (160, 120));
    let _ = std::fs::remove_dir_all(&env);
}

fn init_in_process() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstuigc::plugin_register_static().unwrap();
    });
}

/// A receiver pipeline in this process: udpsrc ! uigcdec ! fakesink, counting frames. Its
/// udpsrc binds port 0 (the system picks a free one) without `reuse`: no other socket shares it.
struct Receiver {
    pipeline: gst::Pipeline,
    dec: gst::Element,
    shown: std::sync::Arc<std::sync::atomic::AtomicU64>,
    port: u16,
}

impl Receiver {
    fn start() -> Self {
        init_in_process();
        let pipeline = gst::parse::launch(&format!(
            // The tests send their packets in one burst: a receive buffer of 4 MiB holds them
            // (768x576 frames are padded to 1728-byte datagrams for the default work limit; 49
            // of them overflow the system's default buffer of 208 KiB).
            "udpsrc name=u port=0 reuse=false address=127.0.0.1 buffer-size=4194304 \
             ! uigcdec name=d {} \
             ! videoconvert ! fakesink name=s sync=false",
            common::tiny_model_prop()
        ))
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
        let dec = pipeline.by_name("d").unwrap();
        let shown = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s = shown.clone();
        pipeline
            .by_name("s")
            .unwrap()
            .static_pad("sink")
            .unwrap()
            .add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                gst::PadProbeReturn::Ok
            });
        // Live source: the sink completes PLAYING with the first packet, but the socket is
        // bound (and its port known) and the model loaded once set_state returns.
        pipeline.set_state(gst::State::Playing).unwrap();
        let port = pipeline.by_name("u").unwrap().property::<i32>("port");
        assert!(port > 0, "udpsrc did not report the port it bound");
        Receiver {
            pipeline,
            dec,
            shown,
            port: port as u16,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.dec.property::<u64>(name)
    }

    /// Waits until the decoder has counted `n` packets (decoded or dropped); fails on a pipeline
    /// error or after 60 s.
    fn wait_for_packets(&self, n: u64) {
        let bus = self.pipeline.bus().unwrap();
        wait_until(
            60,
            &format!("the receiver did not count {n} packets"),
            || {
                while let Some(msg) = bus.pop() {
                    if let gst::MessageView::Error(e) = msg.view() {
                        panic!("receiver error: {} {:?}", e.error(), e.debug());
                    }
                }
                self.counter("frames-decoded") + self.counter("frames-dropped") >= n
            },
        );
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// The real clip through `decodebin` and `uigcenc` in a `gst-launch-1.0` process, one packet per
/// file; the packets then cross loopback UDP to the in-process receiver with a seeded fifth of
/// them dropped, so every counter is known exactly.
#[test]
fn vtest_clip_over_lossy_loopback_udp() {
    let test = "vtest_clip_over_lossy_loopback_udp";
    let Some(clip) = common::shared_file(test, "video/vtest.avi") else {
        return;
    };
    if !have_gst_tools(test, &["decodebin", "avidemux", "multifilesink", "udpsrc"]) {
        return;
    }
    let env = plugin_env("lossy");
    let frames = 60usize;
    let pkt_dir = env.join("packets");
    std::fs::create_dir_all(&pkt_dir).unwrap();
    let location = format!("location={}", clip.display());
    let eos_after = format!("eos-after={frames}");
    let out = format!("location={}/pkt-%05d.uigc", pkt_dir.display());
    let model = common::tiny_model_prop();
    run_sender(
        &env,
        &[
            "filesrc",
            &location,
            "!",
            "decodebin",
            "!",
            "videoconvert",
            "!",
            "identity",
            &eos_after,
            "!",
            // Independent intra packets (the link's counters are exact per frame) and no QoS
            // drops on a loaded machine: every frame becomes a packet.
            "uigcenc",
            &model,
            "keyframe-interval=1",
            "qos=false",
            "!",
            "multifilesink",
            &out,
            "sync=false",
        ],
    );
    let mut files: Vec<PathBuf> = std::fs::read_dir(&pkt_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), frames, "packets written by the sender");
    let packets: Vec<Vec<u8>> = files.iter().map(|f| std::fs::read(f).unwrap()).collect();
    for (i, p) in packets.iter().enumerate() {
        let h = gstuigc::codec::bitstream::parse_packet(p).unwrap().header;
        assert_eq!((h.frame as usize, h.width, h.height), (i, 768, 576));
    }
    // A fifth dropped on the link, from a fixed seed (xorshift32).
    let mut s = 0x2545_f491u32;
    let delivered: Vec<usize> = (0..frames)
        .filter(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            !s.is_multiple_of(5)
        })
        .collect();
    let last = *delivered.last().unwrap();
    // Losses after the last delivered packet cannot be seen yet.
    let lost = (0..=last).filter(|i| !delivered.contains(i)).count() as u64;
    assert!(lost >= 5, "the seed drops too little to test: {lost}");

    let receiver = Receiver::start();
    let link = UdpSocket::bind("127.0.0.1:0").unwrap();
    for &i in &delivered {
        link.send_to(&packets[i], ("127.0.0.1", receiver.port))
            .unwrap();
    }
    receiver.wait_for_packets(delivered.len() as u64);
    let decoded = receiver.counter("frames-decoded");
    let dropped = receiver.counter("frames-dropped");
    eprintln!(
        "sent {frames}, delivered {}, decoded {decoded}, lost {}, corrupt {dropped}",
        delivered.len(),
        receiver.counter("frames-lost")
    );
    assert_eq!(decoded, delivered.len() as u64);
    assert_eq!(dropped, 0);
    assert_eq!(receiver.counter("frames-lost"), lost, "frames-lost");
    // Every decoded frame reaches the sink (the probe counts after the decoder pushed it).
    wait_until(30, "decoded frames did not reach the sink", || {
        receiver.shown.load(std::sync::atomic::Ordering::SeqCst) == decoded
    });
    let caps = receiver
        .dec
        .static_pad("src")
        .unwrap()
        .current_caps()
        .unwrap();
    let s = caps.structure(0).unwrap();
    assert_eq!(
        (
            s.get::<i32>("width").unwrap(),
            s.get::<i32>("height").unwrap()
        ),
        (768, 576)
    );
    drop(receiver);
    let _ = std::fs::remove_dir_all(&env);
}
