//! How much of each picture tiled rendering would decode, for several margins and halos, on a
//! packet stream (.uigcs): follows the stream's token grids with the integer prior only (no
//! network) and prints, per (margin, halo), the mean share of the grid the tiles cover and how
//! many frames stay under a max share. docs/video.md "Receiver: rendering only what changed".
//!
//!     cargo run --release --example render_plan -- STREAM.uigcs [MODEL_DIR]

use gstuigc::codec::{self, render::plan_tiles, Bundle, Reference};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("stream file");
    let dir = args
        .get(2)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| codec::default_model_dir().unwrap());
    let bundle = Bundle::load(&dir).unwrap();
    let mut c = codec::token_codec_with_threads(&bundle, 1).unwrap();
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos + 4 <= data.len() {
        let n = u32::from_le_bytes(data[pos..pos + 4].try_into().unwrap()) as usize;
        packets.push(&data[pos + 4..pos + 4 + n]);
        pos += 4 + n;
    }
    let settings = [(0, 2), (1, 2), (1, 3), (2, 3), (2, 4), (3, 4)];
    let mut shares: Vec<Vec<f64>> = vec![Vec::new(); settings.len()];
    let mut changed_n = Vec::new();
    let mut reference: Option<Reference> = None;
    for p in &packets {
        let h = codec::bitstream::parse_packet(p).unwrap().header;
        let next = if h.inter.is_none() {
            let d = c.decode(p).unwrap();
            Reference::intra(h.frame, h.width, h.height, d.grid, d.colour)
        } else {
            c.decode_inter(p, reference.as_ref().unwrap(), false)
                .unwrap()
                .reference
        };
        if let (Some(old), true) = (&reference, h.inter.is_some()) {
            let g = &next.grid;
            let changed: Vec<bool> = g
                .tokens
                .iter()
                .zip(&old.grid.tokens)
                .map(|(a, b)| a != b)
                .collect();
            changed_n.push(changed.iter().filter(|&&x| x).count());
            for (i, &(m, halo)) in settings.iter().enumerate() {
                let rects = plan_tiles(&changed, g.rows, g.cols, m, halo);
                let t: usize = rects
                    .iter()
                    .map(|r| r.grow(halo, g.rows, g.cols).area())
                    .sum();
                shares[i].push(t as f64 / (g.rows * g.cols) as f64);
            }
        }
        reference = Some(next);
    }
    let n = changed_n.len() as f64;
    println!(
        "{} inter frames, changed tokens per frame: mean {:.1}, max {}",
        changed_n.len(),
        changed_n.iter().sum::<usize>() as f64 / n,
        changed_n.iter().max().unwrap_or(&0)
    );
    println!("| margin | halo | mean tile share | frames <= 0.3 | <= 0.5 | <= 0.7 |");
    println!("|---|---|---|---|---|---|");
    for (i, &(m, halo)) in settings.iter().enumerate() {
        let s = &shares[i];
        let under = |x: f64| s.iter().filter(|&&v| v <= x).count() as f64 / n * 100.0;
        println!(
            "| {m} | {halo} | {:.3} | {:.0} % | {:.0} % | {:.0} % |",
            s.iter().sum::<f64>() / n,
            under(0.3),
            under(0.5),
            under(0.7)
        );
    }
}
