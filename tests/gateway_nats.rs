//! The JetStream scale-out path end to end (docs/gateway.md, "Scale-out"): a real `nats-server`
//! with JetStream on a free port, `uigc gateway --nats`, two `uigc decode-worker`s with the tiny
//! test model, one of them killed with SIGKILL mid-run and started again. Every archived packet
//! must come out of the frame stream exactly once, with the token state (digest) and status the
//! single-machine decoder reaches on the same packets: inter packets were decoded with their
//! references although the stream moved between workers.
#![cfg(feature = "nats")]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gstuigc::codec::{FrameStatus, StreamDecoder};
use gstuigc::gateway::nats::tokens_digest;

/// A child process killed when dropped, with its stdout lines on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(cmd: &mut Command) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    let stdout = child.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Proc { child, lines }
}

fn next_json(p: &Proc, what: &str) -> serde_json::Value {
    let line = p
        .lines
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| panic!("{what}: no line within 60 s"));
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {line:?}: {e}"))
}

fn nats_server() -> Option<PathBuf> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uigc-nats-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn worker(url: &str, name: &str) -> Proc {
    let p = spawn(
        Command::new(env!("CARGO_BIN_EXE_uigc"))
            .args(["decode-worker", "--nats", url, "--name", name])
            // A killed worker's packets go to the other one after 2 s; a line per packet.
            .args([
                "--ack-wait",
                "2",
                "--stats-every",
                "0.000001",
                "--threads",
                "1",
            ])
            .arg("--model")
            .arg(common::tiny_model_dir()),
    );
    let v = next_json(&p, name);
    assert_eq!(v["ready"], true, "{v}");
    p
}

/// Every frame in the frame stream (`uigc frames`).
fn frames(url: &str) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_uigc"))
        .args(["frames", "--nats", url, "--idle", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn send(udp: SocketAddr, devices: &[(u32, Vec<Vec<u8>>)], range: std::ops::Range<usize>) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in range {
        for (_, packets) in devices {
            s.send_to(&packets[i], udp).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn start_nats(dir: &Path) -> Option<(Proc, String)> {
    let Some(bin) = nats_server() else {
        common::skip_or_fail(
            "gateway_nats",
            "nats-server is not installed (deploy/setup.sh --dev installs Debian's)",
        );
        return None;
    };
    let port = free_port();
    let p = spawn(
        Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir)
            .stderr(Stdio::null()),
    );
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "nats-server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((p, format!("nats://127.0.0.1:{port}")))
}

#[test]
fn two_workers_one_killed_every_packet_decoded_exactly_once() {
    let root = tmp("main");
    let Some((_server, url)) = start_nats(&root.join("js")) else {
        return;
    };
    let archive = root.join("archive");
    let gw = spawn(
        Command::new(env!("CARGO_BIN_EXE_uigc"))
            .args(["gateway", "--archive"])
            .arg(&archive)
            .args(["--udp", "127.0.0.1:0", "--http", "off", "--nats", &url])
            .args([
                "--nats-partitions",
                "4",
                "--stats-every",
                "0",
                "--fsync",
                "never",
            ])
            .args(["--threads", "1", "--model"])
            .arg(common::tiny_model_dir()),
    );
    let ready = next_json(&gw, "gateway");
    let udp: SocketAddr = ready["udp"].as_str().unwrap().parse().unwrap();

    let n = 16;
    let devices: Vec<(u32, Vec<Vec<u8>>)> = (1..=6)
        .map(|id| (id, common::device_packets(id, n)))
        .collect();
    let total = devices.len() * n as usize;

    // Half of the packets wait in JetStream before any worker runs.
    send(udp, &devices, 0..n as usize / 2);
    let mut a = worker(&url, "a");
    let b = worker(&url, "b");
    // Kill worker a (SIGKILL) once it decoded a few packets: it holds unacknowledged ones.
    let t = Instant::now();
    loop {
        let v = next_json(&a, "worker a");
        if v["decoded"].as_u64().unwrap() >= 4 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(60));
    }
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    send(udp, &devices, n as usize / 2..n as usize);
    // A replacement starts while the rest is being decoded.
    let _a2 = worker(&url, "a2");

    // Wait until every archived packet has a frame (or 90 s).
    let t = Instant::now();
    let all = loop {
        let f = frames(&url);
        if f.len() >= total || t.elapsed() > Duration::from_secs(90) {
            break f;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    drop(b);

    // Exactly once: one frame per (stream, archive sequence), none missing.
    let mut count: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut by_worker: HashMap<String, usize> = HashMap::new();
    for f in &all {
        *count
            .entry((f["stream"].as_u64().unwrap(), f["seq"].as_u64().unwrap()))
            .or_default() += 1;
        *by_worker
            .entry(f["worker"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let dup: Vec<_> = count.iter().filter(|(_, &c)| c != 1).collect();
    assert!(dup.is_empty(), "frames not exactly once: {dup:?}");
    let missing: Vec<(u64, u64)> = devices
        .iter()
        .flat_map(|(id, p)| (0..p.len() as u64).map(move |s| (*id as u64, s)))
        .filter(|k| !count.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "packets never decoded: {missing:?}");
    assert_eq!(all.len(), total);
    assert!(
        by_worker.get("a").is_some_and(|&n| n >= 4) && by_worker.contains_key("b"),
        "both workers decoded: {by_worker:?}"
    );

    // The same token state and status as the single-machine decoder on the same packets.
    let mut model = common::load(&common::tiny_model_dir());
    let mut frames_of: HashMap<(u64, u64), &serde_json::Value> = HashMap::new();
    for f in &all {
        frames_of.insert(
            (f["stream"].as_u64().unwrap(), f["seq"].as_u64().unwrap()),
            f,
        );
    }
    for (id, packets) in &devices {
        let mut dec = StreamDecoder::new();
        for (seq, p) in packets.iter().enumerate() {
            let d = dec.decode(&mut model, p).unwrap();
            assert_eq!(d.status, FrameStatus::Exact);
            let f = frames_of[&(*id as u64, seq as u64)];
            assert_eq!(f["status"], "exact", "{f}");
            assert_eq!(f["frame"], seq as u64, "{f}");
            assert_eq!(
                f["tokens"],
                tokens_digest(&dec),
                "stream {id} packet {seq}: {f}"
            );
            assert!(f["png_bytes"].as_u64().unwrap() > 0, "{f}");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}
