//! A simulated fleet for `uigc gateway`: N devices, each a fixed camera looking at its own part
//! of a real clip, coded as a uigc stream and sent over UDP at the device's frame rate.
//!
//! ```sh
//! cargo run --release --example fleet -- --to 127.0.0.1:5004 --devices 50 --seconds 60 \
//!     --frames /tmp/vtest --out /tmp/fleet-sent
//! ```
//!
//! The packets are coded first (one stream encoder per device, shipped model by default), then
//! sent in real time: device d sends its packet of second s at s + d/N seconds. What each device
//! sent is written to `OUT/<stream id>.uigcs` with a `sent.json` summary (count and SHA-256 per
//! stream, the digest `uigc archive-check` prints for the gateway's archive), so the archive can be
//! checked packet for packet (`--reuse DIR` sends the packets of an earlier run's OUT again).
//! `deploy/gateway-fleet.sh` runs the whole check.

use std::net::UdpSocket;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use gstuigc::codec::{
    default_model_dir, Model, RgbImage, RuntimeOptions, StreamConfig, StreamEncoder,
};
use sha2::{Digest, Sha256};

struct Opts {
    to: String,
    devices: u32,
    seconds: u32,
    fps: u32,
    frames: Option<PathBuf>,
    size: (u32, u32),
    out: PathBuf,
    model: Option<PathBuf>,
    first_id: u32,
    reuse: Option<PathBuf>,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        to: "127.0.0.1:5004".into(),
        devices: 50,
        seconds: 60,
        fps: 1,
        frames: None,
        size: (192, 144),
        out: PathBuf::from("fleet-sent"),
        model: None,
        first_id: 1,
        reuse: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let v = args
            .get(i + 1)
            .cloned()
            .ok_or(format!("{}: missing value", args[i]))?;
        let num = |v: &str| v.parse::<u32>().map_err(|e| format!("{}: {e}", args[i]));
        match args[i].as_str() {
            "--to" => o.to = v,
            "--devices" => o.devices = num(&v)?,
            "--seconds" => o.seconds = num(&v)?,
            "--fps" => o.fps = num(&v)?.max(1),
            "--frames" => o.frames = Some(v.into()),
            "--out" => o.out = v.into(),
            "--model" => o.model = Some(v.into()),
            "--first-id" => o.first_id = num(&v)?,
            "--reuse" => o.reuse = Some(v.into()),
            "--size" => {
                let (w, h) = v.split_once('x').ok_or("--size WxH")?;
                o.size = (num(w)?, num(h)?);
            }
            other => return Err(format!("unknown option {other}")),
        }
        i += 2;
    }
    Ok(o)
}

/// Frame `f` of device `d`: its own crop of the clip's frame (or a synthetic scene).
fn frame(src: &[RgbImage], d: u32, f: u32, (w, h): (u32, u32)) -> RgbImage {
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    match src.get(f as usize % src.len().max(1)) {
        Some(img) if img.width >= w && img.height >= h => {
            let x0 = (d * 53) % (img.width - w + 1);
            let y0 = (d * 31) % (img.height - h + 1);
            for y in y0..y0 + h {
                let row = ((y * img.width + x0) * 3) as usize;
                data.extend_from_slice(&img.data[row..row + (w * 3) as usize]);
            }
        }
        _ => {
            for y in 0..h {
                for x in 0..w {
                    let moving = (x + f * 4) % w < 16 && y > h / 3 && y < h / 2;
                    let v = if moving {
                        230
                    } else {
                        ((x * 3 + y * 2 + d * 17) % 200) as u8 as u32
                    };
                    data.extend_from_slice(&[v as u8, (v / 2) as u8, (255 - v) as u8]);
                }
            }
        }
    }
    RgbImage::new(w, h, data).expect("frame size")
}

fn main() -> Result<(), String> {
    let o = parse()?;
    let n_frames = o.seconds * o.fps;
    let mut src = Vec::new();
    if let Some(dir) = &o.frames {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        // The clip at the devices' rate (the source runs at 10 fps).
        let step = (10 / o.fps).max(1) as usize;
        for p in files.iter().step_by(step).take(n_frames as usize) {
            let img = image::open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .to_rgb8();
            let (w, h) = img.dimensions();
            src.push(RgbImage::new(w, h, img.into_raw()).map_err(|e| e.to_string())?);
        }
    }
    let dir = match &o.model {
        Some(d) => d.clone(),
        None => default_model_dir().map_err(|e| e.to_string())?,
    };
    let opts = RuntimeOptions {
        threads: 1,
        ..Default::default()
    };
    let mut model = Model::load(&dir, &opts).map_err(|e| e.to_string())?;
    let t = Instant::now();
    let mut streams: Vec<Vec<Vec<u8>>> = Vec::new();
    if let Some(cache) = &o.reuse {
        // Packets coded by an earlier run (its OUT folder): sent again as they are.
        for d in 0..o.devices {
            let p = cache.join(format!("{}.uigcs", o.first_id + d));
            let data = std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))?;
            let mut packets = Vec::new();
            let mut pos = 0;
            while pos + 4 <= data.len() {
                let n = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
                packets.push(data[pos + 4..pos + 4 + n].to_vec());
                pos += 4 + n;
            }
            if packets.len() < n_frames as usize {
                return Err(format!(
                    "{}: {} packets, {n_frames} needed",
                    p.display(),
                    packets.len()
                ));
            }
            packets.truncate(n_frames as usize);
            streams.push(packets);
        }
    }
    for d in streams.len() as u32..o.devices {
        let mut enc = StreamEncoder::new(StreamConfig {
            stream_id: o.first_id + d,
            fps: o.fps as f64,
            ..Default::default()
        })
        .map_err(|e| e.to_string())?;
        let mut packets = Vec::new();
        for f in 0..n_frames {
            let p = enc
                .encode(&mut model, &frame(&src, d, f, o.size))
                .map_err(|e| e.to_string())?;
            packets.push(p.packet.bytes);
        }
        eprint!(
            "\rcoded device {}/{} ({:.0} s)",
            d + 1,
            o.devices,
            t.elapsed().as_secs_f64()
        );
        streams.push(packets);
    }
    eprintln!();
    let sock = UdpSocket::bind("0.0.0.0:0").map_err(|e| e.to_string())?;
    let start = Instant::now();
    let slot = Duration::from_secs_f64(1.0 / o.fps as f64 / o.devices as f64);
    let mut sent_bytes = 0usize;
    for f in 0..n_frames as usize {
        for (d, packets) in streams.iter().enumerate() {
            let due = slot * (f as u32 * o.devices + d as u32);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            sock.send_to(&packets[f], &o.to)
                .map_err(|e| format!("send: {e}"))?;
            sent_bytes += packets[f].len();
        }
    }
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    let mut summary = Vec::new();
    for (d, packets) in streams.iter().enumerate() {
        let mut file = Vec::new();
        for p in packets {
            file.extend_from_slice(&(p.len() as u32).to_le_bytes());
            file.extend_from_slice(p);
        }
        let id = o.first_id + d as u32;
        let sha: String = Sha256::digest(&file)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(o.out.join(format!("{id}.uigcs")), &file).map_err(|e| e.to_string())?;
        summary.push(serde_json::json!({"stream": id, "records": packets.len(), "sha256": sha}));
    }
    let s = serde_json::json!({
        "devices": o.devices, "seconds": o.seconds, "fps": o.fps, "size": [o.size.0, o.size.1],
        "packets": o.devices * n_frames, "bytes": sent_bytes,
        "send_seconds": start.elapsed().as_secs_f64(), "streams": summary,
    });
    std::fs::write(o.out.join("sent.json"), s.to_string()).map_err(|e| e.to_string())?;
    eprintln!(
        "sent {} packets ({} bytes) from {} devices in {:.1} s",
        o.devices * n_frames,
        sent_bytes,
        o.devices,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
