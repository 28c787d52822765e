//! `uigc-linksim`: a lossy UDP link on loopback for scripts (pipelines/lossy-link.sh,
//! deploy/soak.sh): relays datagrams from `--listen` to `--to`, losing, duplicating and
//! reordering them and injecting hostile ones, every decision from `--seed` (src/linksim.rs).
//! Prints `port N` (the port it listens on) first, then, when it ends (after `--idle-exit`
//! seconds without a datagram once one arrived, after `--duration`, or on end of stdin when
//! `--until-eof`), one JSON line with what it did and what a receiver should count.

use std::io::Write;
use std::net::ToSocketAddrs;
use std::time::{Duration, Instant};

use clap::Parser;
use gstuigc::linksim::{FloodConfig, Flooder, LinkConfig, Relay};

#[derive(Parser)]
#[command(name = "uigc-linksim", about = "Lossy UDP link on loopback (seeded)")]
struct Args {
    /// Address to listen on (port 0: the system picks one; printed as `port N`).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Where datagrams go (HOST:PORT).
    #[arg(long)]
    to: String,
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    #[arg(long, default_value_t = 0.0)]
    duplicate: f64,
    #[arg(long, default_value_t = 0.0)]
    reorder: f64,
    /// Share of datagrams preceded by a hostile one (random, truncated or bit-flipped).
    #[arg(long, default_value_t = 0.0)]
    hostile: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The first N datagrams pass untouched (1: the stream's first, intra, packet).
    #[arg(long, default_value_t = 0)]
    spare_first: usize,
    /// End after this many seconds without a datagram, once one arrived.
    #[arg(long, default_value_t = 3.0)]
    idle_exit: f64,
    /// End after this many seconds in any case (0: no limit).
    #[arg(long, default_value_t = 0.0)]
    duration: f64,
    /// Also flood `--to` with hostile datagrams from a second thread, from start to end, as
    /// fast as it can send (or at `--flood-rate`): random bytes, and truncated and bit-flipped
    /// copies of `--flood-template`.
    #[arg(long)]
    flood: bool,
    /// Datagrams per second of the flood (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    flood_rate: f64,
    /// Longest random datagram of the flood (bytes).
    #[arg(long, default_value_t = 1400)]
    flood_size: usize,
    /// A real packet (.uigc file) the flood damages; repeatable.
    #[arg(long, value_name = "FILE")]
    flood_template: Vec<std::path::PathBuf>,
}

fn main() {
    let a = Args::parse();
    for (name, p) in [
        ("loss", a.loss),
        ("duplicate", a.duplicate),
        ("reorder", a.reorder),
        ("hostile", a.hostile),
    ] {
        if !(0.0..=1.0).contains(&p) {
            eprintln!("uigc-linksim: error: --{name} must be in 0..=1, got {p}");
            std::process::exit(2);
        }
    }
    let to = match a.to.to_socket_addrs().map(|mut i| i.next()) {
        Ok(Some(t)) => t,
        _ => {
            eprintln!("uigc-linksim: error: cannot resolve --to {}", a.to);
            std::process::exit(2);
        }
    };
    let cfg = LinkConfig {
        loss: a.loss,
        duplicate: a.duplicate,
        reorder: a.reorder,
        hostile: a.hostile,
        seed: a.seed,
        spare_first: a.spare_first,
    };
    let relay = Relay::start(&a.listen, to, cfg).unwrap_or_else(|e| {
        eprintln!("uigc-linksim: error: cannot listen on {}: {e}", a.listen);
        std::process::exit(1);
    });
    let flooder = a.flood.then(|| {
        let templates = a
            .flood_template
            .iter()
            .map(|p| {
                std::fs::read(p).unwrap_or_else(|e| {
                    eprintln!("uigc-linksim: error: cannot read {}: {e}", p.display());
                    std::process::exit(1);
                })
            })
            .collect();
        let cfg = FloodConfig {
            seed: a.seed ^ 0x9e37_79b9_7f4a_7c15,
            templates,
            max_random: a.flood_size.max(1),
            rate: a.flood_rate,
        };
        Flooder::start(to, cfg).unwrap_or_else(|e| {
            eprintln!("uigc-linksim: error: cannot start the flood: {e}");
            std::process::exit(1);
        })
    });
    println!("port {}", relay.port);
    let _ = std::io::stdout().flush();
    let t0 = Instant::now();
    let (mut last_count, mut last_change) = (0usize, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let n = relay.report().received.len();
        if n != last_count {
            (last_count, last_change) = (n, Instant::now());
        }
        let idle = n > 0 && last_change.elapsed().as_secs_f64() >= a.idle_exit;
        let over = a.duration > 0.0 && t0.elapsed().as_secs_f64() >= a.duration;
        if idle || over {
            break;
        }
    }
    let flood = flooder.map(Flooder::finish);
    let r = relay.finish();
    let e = r.expected();
    println!(
        "{}",
        serde_json::json!({
            "received": r.received.len(), "delivered": r.delivered.len(), "lost": r.lost,
            "duplicated": r.duplicated, "reordered": r.reordered, "hostile": r.hostile,
            "expected": {"decoded": e.decoded, "lost": e.lost, "late": e.late,
                         "duplicate": e.duplicate, "tail": e.tail},
            "flood": flood.map(|f| serde_json::json!({
                "datagrams": f.datagrams, "bytes": f.bytes, "refused": f.refused,
                "seconds": f.seconds, "datagrams_per_s": f.datagrams_per_s(),
                "mbit_per_s": f.mbit_per_s()})),
        })
    );
}
