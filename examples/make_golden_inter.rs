//! Writes the golden inter packet of tests/data/golden-inter/: `inputs.json` (a reference grid,
//! the new grid, the change mask, the refresh band and both colour thumbnails, from a fixed
//! xorshift generator) and `packet.uigc` (the shipped prior's inter packet for them). The tests
//! only read these files. Run only for a deliberate change of the inter format or the prior, and
//! say so in the commit (CONTRIBUTING.md).
//!
//! ```sh
//! cargo run --release --example make_golden_inter
//! ```

use std::path::PathBuf;

use gstuigc::codec::{
    token_codec_with_threads, Bundle, ColourParams, ColourThumb, InterFrame, Reference, TokenGrid,
};

const ROWS: usize = 15;
const COLS: usize = 20;

fn xorshift(s: &mut u32) -> u32 {
    *s ^= *s << 13;
    *s ^= *s >> 17;
    *s ^= *s << 5;
    *s
}

fn thumb(s: &mut u32, params: ColourParams) -> ColourThumb {
    let (rows, cols) = params.grid(COLS as u32 * 16, ROWS as u32 * 16);
    let planes = std::array::from_fn(|p| {
        let (lo, hi) = params.range(p);
        (0..rows * cols)
            .map(|_| lo + (xorshift(s) % (hi - lo + 1) as u32) as i32)
            .collect()
    });
    ColourThumb {
        params,
        rows,
        cols,
        planes,
    }
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut s = 21u32;
    let mut reference = vec![0u16; ROWS * COLS];
    for p in 0..ROWS * COLS {
        reference[p] = if p % COLS > 0 && !xorshift(&mut s).is_multiple_of(3) {
            reference[p - 1]
        } else {
            (xorshift(&mut s) % 256) as u16
        };
    }
    let mut tokens = reference.clone();
    let mut changed = vec![false; ROWS * COLS];
    for p in 0..ROWS * COLS {
        if xorshift(&mut s) % 100 < 8 {
            tokens[p] = ((tokens[p] as u32 + 1 + xorshift(&mut s) % 255) % 256) as u16;
            changed[p] = true;
        }
    }
    let params = ColourParams::default();
    let (colour_ref, colour_new) = (thumb(&mut s, params), thumb(&mut s, params));
    let colour_changed: Vec<bool> = (0..colour_new.rows * colour_new.cols)
        .map(|i| i % 3 == 0)
        .collect();
    let band = (2usize, 6usize);
    let json = serde_json::json!({
        "width": COLS * 16, "height": ROWS * 16, "rows": ROWS, "cols": COLS,
        "reference_frame": 41, "frame": 42, "stream_id": 17, "band": [band.0, band.1],
        "reference": reference, "tokens": tokens, "changed": changed,
        "colour_reference": colour_ref.planes, "colour_new": colour_new.planes,
        "colour_changed": colour_changed,
    });
    let bundle = Bundle::load(repo.join("models/uigc-small")).expect("the shipped model");
    let mut codec = token_codec_with_threads(&bundle, 1).expect("prior");
    let r = Reference::intra(
        41,
        (COLS * 16) as u32,
        (ROWS * 16) as u32,
        TokenGrid::new(ROWS, COLS, reference),
        Some(colour_ref),
    );
    let new = TokenGrid::new(ROWS, COLS, tokens);
    let frame = InterFrame {
        tokens: &new,
        changed: &changed,
        band,
        colour: Some(&colour_new),
        colour_changed: &colour_changed,
    };
    let (packet, _) = codec
        .encode_inter(&r, &frame, 17, 42)
        .expect("inter packet");
    let dir = repo.join("tests/data/golden-inter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("inputs.json"), json.to_string()).unwrap();
    std::fs::write(dir.join("packet.uigc"), &packet.bytes).unwrap();
    println!(
        "wrote {} ({} bytes)",
        dir.join("packet.uigc").display(),
        packet.bytes.len()
    );
}
