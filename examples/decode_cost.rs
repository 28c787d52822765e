//! What decoding a packet costs the receiver, measured in one process (docs/reliability.md):
//! CPU time (user + system, from /proc/self/stat), resident memory after each packet and its
//! peak (VmRSS, VmHWM from /proc/self/status). The model is loaded once, as in a receiver.
//!
//! ```sh
//! cargo run --release --example decode_cost -- [--repeat N] [--max-pixels P] [--threads T] \
//!     [--decoder auto|full|fast] [--stream] PACKET...
//! # --threads: ONNX Runtime and prior threads (0, the default: one per core)
//! # --decoder: which decoder graphs render (docs/bundle.md "Fast decoder"; auto, the default)
//! # --stream: decode as uigcdec does (a StreamDecoder: full pictures through the tile graph)
//! cargo run --release --example decode_cost -- --flood SECONDS PACKET...   # packets per second
//! ```
//! Without `--decoder` and `--stream` it uses only the API of `Model::load` / `Model::decode` /
//! `set_max_pixels`, as the code before issue 15 had it for the "before" figures.

use std::time::{Duration, Instant};

use gstuigc::codec::{default_model_dir, DecoderChoice, Model, RuntimeOptions, StreamDecoder};

/// user + system CPU seconds of this process.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

/// (VmRSS, VmHWM) in MB.
fn memory_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut repeat, mut flood, mut max_pixels, mut files) = (1usize, None, None, Vec::new());
    let (mut threads, mut decoder, mut stream) = (0usize, DecoderChoice::Auto, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--repeat" => repeat = args.next().unwrap().parse().unwrap(),
            "--flood" => flood = Some(args.next().unwrap().parse::<f64>().unwrap()),
            "--max-pixels" => max_pixels = Some(args.next().unwrap().parse::<u64>().unwrap()),
            "--threads" => threads = args.next().unwrap().parse().unwrap(),
            "--decoder" => decoder = args.next().unwrap().parse().unwrap(),
            "--stream" => stream = true,
            f => files.push(std::path::PathBuf::from(f)),
        }
    }
    let dir = std::env::var_os("UIGC_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| default_model_dir().unwrap());
    let opts = RuntimeOptions {
        threads,
        decoder,
        ..RuntimeOptions::default()
    };
    let mut model = Model::load(&dir, &opts).unwrap();
    if let Some(p) = max_pixels {
        model.token_codec().set_max_pixels(p);
    }
    let packets: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|f| {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(f).unwrap())
        })
        .collect();
    let (rss, hwm) = memory_mb();
    println!("model loaded: rss {rss:.0} MB, peak {hwm:.0} MB");
    if let Some(seconds) = flood {
        // Round-robin over the packets for `seconds` of wall time.
        let (t0, c0) = (Instant::now(), cpu_seconds());
        let mut n = 0usize;
        let mut refused = 0usize;
        while t0.elapsed() < Duration::from_secs_f64(seconds) {
            let (_, p) = &packets[n % packets.len()];
            refused += model.decode(p).is_err() as usize;
            n += 1;
        }
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
        let (rss, hwm) = memory_mb();
        println!(
            "flood: {n} packets ({refused} refused) in {wall:.1} s wall, {cpu:.1} s CPU: \
             {:.0} packets/s wall, {:.0} per CPU second; rss {rss:.0} MB, peak {hwm:.0} MB",
            n as f64 / wall,
            n as f64 / cpu.max(0.01)
        );
        return;
    }
    for (name, p) in &packets {
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        let mut outcome = String::new();
        for _ in 0..repeat {
            let decoded = if stream {
                // What uigcdec does: a stream receiver, full pictures through the tile graph
                // when the bundle has one (a new receiver per decode, as for a new stream).
                StreamDecoder::new()
                    .decode(&mut model, p)
                    .map(|f| (f.image.width, f.image.height))
            } else {
                model.decode(p).map(|f| (f.image.width, f.image.height))
            };
            outcome = match decoded {
                Ok((w, h)) => format!("decoded {w}x{h}"),
                Err(e) => format!("refused: {e}"),
            };
        }
        let cpu = (cpu_seconds() - c0) / repeat as f64;
        let wall = t0.elapsed().as_secs_f64() / repeat as f64;
        let (rss, hwm) = memory_mb();
        println!(
            "{name} ({} B): cpu {cpu:.3} s, wall {wall:.3} s per decode; rss after {rss:.0} MB, \
             peak so far {hwm:.0} MB; {outcome}",
            p.len()
        );
    }
}
