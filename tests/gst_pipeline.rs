//! Real pipelines over 127.0.0.1 UDP: a `gst-launch-1.0` sender process with the built plugin
//! (`libgstuigc.so` through `GST_PLUGIN_PATH`, as the README says) and a receiver, either a
//! second `gst-launch-1.0` process recording PNG files or a pipeline in this process whose
//! decoder counters are read; plus the real clip `vtest.avi` through `decodebin` with 20 % of
//! the packets dropped. Needs `gstreamer1.0-tools`, `-plugins-base/-good` and `-libav` (the
//! setup installs them); no display.
#![cfg(feature = "gst")]

mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use gst::prelude::*;

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

fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tiny() -> String {
    format!("model={}", common::tiny_model_dir().display())
}

/// Starts a `gst-launch-1.0` receiver and returns once its pipeline is PLAYING (socket bound,
/// model loaded).
fn start_receiver(env: &Path, args: &[&str]) -> Child {
    let mut child = gst_launch(env, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gst-launch-1.0 (install gstreamer1.0-tools: deploy/setup.sh)");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("receiver exited before PLAYING: {:?}", child.wait()))
            .unwrap();
        eprintln!("receiver: {line}");
        if line.contains("Setting pipeline to PLAYING") {
            break;
        }
        assert!(Instant::now() < deadline, "receiver did not start");
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    child
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

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sender_and_receiver_processes_over_loopback_udp() {
    let env = plugin_env("procs");
    let port = free_port();
    let frames = 20;
    let out_dir = env.join("frames");
    std::fs::create_dir_all(&out_dir).unwrap();
    let port_arg = format!("port={port}");
    let model = tiny();
    let location = format!("location={}/frame-%05d.png", out_dir.display());
    // The README's receiver, recording to files instead of a display.
    let receiver = start_receiver(
        &env,
        &[
            "udpsrc",
            &port_arg,
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
    // Wait for the last frames to be written.
    let count = || std::fs::read_dir(&out_dir).unwrap().count();
    let deadline = Instant::now() + Duration::from_secs(30);
    while count() < frames && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    stop(receiver);
    assert_eq!(count(), frames, "frames recorded by the receiver");
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

/// A receiver pipeline in this process: udpsrc ! uigcdec ! fakesink, counting frames.
struct Receiver {
    pipeline: gst::Pipeline,
    dec: gst::Element,
    shown: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Receiver {
    fn start(port: u16) -> Self {
        init_in_process();
        let pipeline = gst::parse::launch(&format!(
            "udpsrc port={port} address=127.0.0.1 ! uigcdec name=d {} ! videoconvert \
             ! fakesink name=s sync=false",
            tiny()
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
        // bound and the model loaded once set_state returns.
        pipeline.set_state(gst::State::Playing).unwrap();
        Receiver {
            pipeline,
            dec,
            shown,
        }
    }

    fn counter(&self, name: &str) -> u64 {
        self.dec.property::<u64>(name)
    }

    /// Waits until nothing new arrives for a second; fails on a pipeline error.
    fn settle(&self) {
        let bus = self.pipeline.bus().unwrap();
        let mut last = (u64::MAX, Instant::now());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            while let Some(msg) = bus.pop() {
                if let gst::MessageView::Error(e) = msg.view() {
                    panic!("receiver error: {} {:?}", e.error(), e.debug());
                }
            }
            let seen = self.counter("frames-decoded") + self.counter("frames-dropped");
            if seen != last.0 {
                last = (seen, Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(1) {
                return;
            }
            assert!(Instant::now() < deadline, "receiver still busy after 60 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[test]
fn vtest_clip_over_lossy_loopback_udp() {
    let clip = common::repo().join("../shared/data/video/vtest.avi");
    if !clip.is_file() {
        eprintln!("SKIP: {} is absent", clip.display());
        return;
    }
    let env = plugin_env("lossy");
    let port = free_port();
    let receiver = Receiver::start(port);
    let frames = 60u64;
    let location = format!("location={}", clip.display());
    let eos_after = format!("eos-after={frames}");
    let port_arg = format!("port={port}");
    let model = tiny();
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
            "uigcenc",
            &model,
            "!",
            "identity",
            "drop-probability=0.2",
            "!",
            "udpsink",
            "host=127.0.0.1",
            &port_arg,
            "sync=false",
        ],
    );
    receiver.settle();
    let decoded = receiver.counter("frames-decoded");
    let dropped = receiver.counter("frames-dropped");
    let lost = receiver.counter("frames-lost");
    eprintln!("sent {frames}, decoded {decoded}, lost {lost}, corrupt {dropped}");
    // Every delivered packet decodes and reaches the sink; losses are counted (a loss after the
    // last delivered packet cannot be seen).
    assert_eq!(dropped, 0);
    assert_eq!(
        receiver.shown.load(std::sync::atomic::Ordering::SeqCst),
        decoded
    );
    assert!(decoded >= frames / 2, "{decoded}");
    assert!(lost >= 1, "20 % of {frames} dropped but no loss counted");
    assert!(decoded + lost <= frames && decoded + lost + 8 >= frames);
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
