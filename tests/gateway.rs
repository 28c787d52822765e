//! `uigc gateway` end to end with the tiny test model: several devices over UDP and one
//! store-and-forward uplink over TCP into one gateway, every packet in the archive (count and
//! digest), frames decoded, the HTTP endpoints, hostile traffic counted and refused, and a
//! `kill -9` with a torn archive tail followed by a restart that loses nothing.
#![cfg(feature = "gateway")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

struct Gateway {
    child: Child,
    udp: SocketAddr,
    tcp: SocketAddr,
    http: SocketAddr,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(archive: &Path, extra: &[&str]) -> Gateway {
    let mut child = Command::new(env!("CARGO_BIN_EXE_uigc"))
        .args(["gateway", "--archive"])
        .arg(archive)
        .args([
            "--udp",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .args([
            "--stats-every",
            "0",
            "--fsync",
            "never",
            "--threads",
            "1",
            "--model",
        ])
        .arg(common::tiny_model_dir())
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning uigc gateway");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the gateway printed no ready line within 60 s");
    let v: serde_json::Value = serde_json::from_str(&line).expect("ready line is JSON");
    let addr = |k: &str| v[k].as_str().unwrap().parse().unwrap();
    Gateway {
        udp: addr("udp"),
        tcp: addr("tcp"),
        http: addr("http"),
        child,
    }
}

/// A GET over HTTP/1.1 with `Connection: close`: status and body.
fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let head_end = resp.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&resp[..head_end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let mut body = resp[head_end + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n").unwrap();
        let n = usize::from_str_radix(std::str::from_utf8(&b[..eol]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&b[eol + 2..eol + 2 + n]);
        b = &b[eol + 2 + n + 2..];
    }
}

fn streams(gw: &Gateway) -> serde_json::Value {
    let (status, body) = get(gw.http, "/api/streams");
    assert_eq!(status, 200);
    serde_json::from_slice(&body).unwrap()
}

/// Polls the gateway's stats until `done` holds (60 s deadline, which fails the test).
fn wait_for(
    gw: &Gateway,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let v = streams(gw);
        if done(&v) {
            return v;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "waiting for {what}: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn uigcs(packets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in packets {
        out.extend_from_slice(&(p.len() as u32).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn sha256(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `uigc archive-check`: per stream (records, sha256).
fn archive_check(archive: &Path) -> (bool, Vec<(u64, u64, String)>) {
    let out = Command::new(env!("CARGO_BIN_EXE_uigc"))
        .arg("archive-check")
        .arg(archive)
        .output()
        .unwrap();
    let rows = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["stream"].as_u64().unwrap(),
                v["records"].as_u64().unwrap(),
                v["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (out.status.success(), rows)
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("uigc-gw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn send_udp(to: SocketAddr, packets: &[Vec<u8>]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for p in packets {
        s.send_to(p, to).unwrap();
        // Paced like a device: loopback drops datagrams only when the receiver's buffer fills.
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn devices_are_archived_decoded_and_served_and_a_killed_gateway_loses_nothing() {
    let archive = tmp("main");
    let devices: Vec<(u32, Vec<Vec<u8>>)> = (1..=4)
        .map(|id| (id, common::device_packets(id, 8)))
        .collect();
    let uplink = common::device_packets(100, 6);
    let gw = start(&archive, &[]);

    for (_, packets) in &devices {
        send_udp(gw.udp, packets);
    }
    // A store-and-forward uplink delivers a stored batch over TCP in the .uigcs framing.
    TcpStream::connect(gw.tcp)
        .unwrap()
        .write_all(&uigcs(&uplink))
        .unwrap();
    let total = 4 * 8 + 6;
    let v = wait_for(&gw, "every packet archived and decoded", |v| {
        v["totals"]["archived"] == total
            && v["streams"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["decoded"] == s["packets"])
    });
    let s: Vec<&serde_json::Value> = v["streams"].as_array().unwrap().iter().collect();
    assert_eq!(s.len(), 5, "{v:#}");
    for st in &s {
        assert_eq!(st["lost"], 0, "{st}");
        assert_eq!(st["exact"], st["packets"], "every frame exact: {st}");
        assert_eq!(st["queued"], 0, "nothing left in the decode queue: {st}");
        assert_eq!(
            (st["width"].as_u64(), st["height"].as_u64()),
            (Some(64), Some(48))
        );
    }

    // The archive holds exactly what was sent, in order.
    let (ok, rows) = archive_check(&archive);
    assert!(ok);
    let mut expected: Vec<(u64, u64, String)> = devices
        .iter()
        .map(|(id, p)| (*id as u64, p.len() as u64, sha256(&uigcs(p))))
        .collect();
    expected.push((100, 6, sha256(&uigcs(&uplink))));
    assert_eq!(rows, expected);

    // HTTP: latest frame, archive range, metrics, page.
    let (status, png) = get(gw.http, "/streams/2/latest.png");
    assert_eq!(status, 200);
    let img = image::load_from_memory(&png).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));
    assert_eq!(get(gw.http, "/streams/9/latest.png").0, 404);
    let (status, body) = get(gw.http, "/streams/3/archive");
    assert_eq!((status, body), (200, uigcs(&devices[2].1)));
    let (_, body) = get(gw.http, "/streams/3/archive?from=0&to=1");
    assert!(body.is_empty(), "nothing was received in 1970");
    let (_, metrics) = get(gw.http, "/metrics");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains(&format!("uigc_gateway_archived_packets_total {total}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains("uigc_gateway_stream_exact_frames_total{stream=\"100\"} 6\n"),
        "{metrics}"
    );
    let (_, page) = get(gw.http, "/");
    let page = String::from_utf8(page).unwrap();
    assert!(
        page.contains(
            "<a href=\"/streams/100/live.mjpeg\"><img class=\"live\" src=\"/streams/100/latest.png\""
        ),
        "{page}"
    );

    // The live view sends a JPEG part at once (the latest frame).
    let mut live = TcpStream::connect(gw.http).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        live,
        "GET /streams/1/live.mjpeg HTTP/1.1\r\nHost: x\r\n\r\n"
    )
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let mut got = Vec::new();
    while !got.windows(3).any(|w| w == [0xff, 0xd8, 0xff]) {
        let n = live.read(&mut buf).unwrap();
        assert!(n > 0, "live view closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).contains("multipart/x-mixed-replace; boundary=frame"));
    drop(live);

    // kill -9, then a write cut short at the end of stream 1's segment (a torn tail).
    drop(gw);
    let seg = std::fs::read_dir(archive.join("00000001"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .next()
        .unwrap();
    let before = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&seg)
        .unwrap()
        .write_all(&[40, 0, 0, 0, 1, 2, 3])
        .unwrap();
    let (ok, _) = archive_check(&archive);
    assert!(!ok, "archive-check reports the torn tail");

    let gw = start(&archive, &[]);
    let more = common::device_packets(1, 10);
    send_udp(gw.udp, &more[8..]);
    let v = wait_for(&gw, "two more packets", |v| v["totals"]["archived"] == 2);
    assert_eq!(v["totals"]["truncated_bytes"], 7, "{v:#}");
    drop(gw);
    assert!(std::fs::metadata(&seg).unwrap().len() > before);
    let (ok, rows) = archive_check(&archive);
    assert!(ok, "the restart cut the torn tail");
    assert_eq!(
        rows[0],
        (1, 10, sha256(&uigcs(&more))),
        "stream 1: its 8 packets, then 2 more"
    );

    // Replay decodes the archive into frames.
    let frames = archive.join("replay");
    let out = Command::new(env!("CARGO_BIN_EXE_uigc"))
        .args(["replay", "--stream", "1", "-o"])
        .arg(&frames)
        .arg(&archive)
        .arg("--model")
        .arg(common::tiny_model_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_dir(&frames).unwrap().count(), 10);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("10 packets, 10 frames written (10 exact")
    );
    std::fs::remove_dir_all(&archive).unwrap();
}

#[test]
fn hostile_traffic_is_counted_and_refused_within_the_caps() {
    let archive = tmp("hostile");
    let gw = start(&archive, &["--max-streams", "3", "--stream-rate", "2000"]);
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = common::device_packets(1, 1).remove(0);
    // Random datagrams: not uigc packets.
    let mut x = 12345u64;
    for i in 0..50 {
        let len = 1 + i * 7 % 1400;
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut junk = junk;
        junk[0] = 0x00; // never the magic byte
        s.send_to(&junk, gw.udp).unwrap();
    }
    // A packet of a model the gateway does not serve.
    let mut parsed = gstuigc::codec::bitstream::parse_packet(&good).unwrap();
    let payload = parsed.payload.to_vec();
    parsed.header.model_id.0[0] ^= 0xff;
    let foreign = gstuigc::codec::bitstream::write_packet(&parsed.header, &payload);
    s.send_to(&foreign, gw.udp).unwrap();
    // One stream above its rate: 2000 B/s with a 4000-byte bucket.
    let n_big = (4000 / good.len() + 20) as u64;
    for _ in 0..n_big {
        s.send_to(&good, gw.udp).unwrap();
    }
    // A flood of new stream ids (valid headers): with stream 1, only --max-streams get an
    // archive.
    for id in 0..40u32 {
        s.send_to(&common::device_packets(1000 + id, 1)[0], gw.udp)
            .unwrap();
    }
    let expected = 50 + 1 + 40 + n_big;
    let v = wait_for(&gw, "every datagram counted", |v| {
        v["totals"]["received"] == expected
    });
    let t = &v["totals"];
    assert_eq!(t["refused"]["malformed"], 50, "{t}");
    assert_eq!(t["refused"]["foreign_model"], 1, "{t}");
    assert_eq!(t["streams"], 3, "{t}");
    assert_eq!(
        t["refused"]["stream_cap"],
        40 - 2,
        "stream 1 and two flood ids are served: {t}"
    );
    let limited = t["refused"]["rate_limited"].as_u64().unwrap();
    assert!(
        limited >= 15 && limited < n_big,
        "{limited} of {n_big} over the rate: {t}"
    );
    assert_eq!(
        t["archived"].as_u64().unwrap(),
        2 + (n_big - limited),
        "archived = served flood ids + stream 1 under its rate: {t}"
    );
    let (ok, rows) = archive_check(&archive);
    assert!(ok);
    assert_eq!(rows.len(), 3);
    drop(gw);
    std::fs::remove_dir_all(&archive).unwrap();
}
