//! Writes the golden packets of tests/data/golden-packet/ from the committed token grid
//! `tokens.u16le` (itself written by models/make_golden_packets.py, which runs this program).
//! The tests only read these files: they never rewrite them. Run only for a deliberate change of
//! the packet format or the prior, and say so in the commit (CONTRIBUTING.md).
//!
//! ```sh
//! cargo run --example make_golden_packets
//! ```

use std::path::{Path, PathBuf};

use gstuigc::codec::{token_codec, Bundle, FrameParams, TokenGrid};

const ROWS: usize = 13;
const COLS: usize = 21;

fn read_u16(path: &Path) -> Vec<u16> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("wrote {} ({} bytes)", path.display(), bytes.len());
}

fn main() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = repo.join("tests/data/golden-packet");
    let tokens = read_u16(&dir.join("tokens.u16le"));
    assert_eq!(
        tokens.len(),
        ROWS * COLS,
        "tokens.u16le is not a 13x21 grid"
    );
    let grid = TokenGrid::new(ROWS, COLS, tokens);

    // The unigram tiny model, every stage (tests/codec_roundtrip.rs::golden_packet).
    let bundle = Bundle::load(repo.join("tests/data/tiny-model")).unwrap();
    let params = FrameParams {
        stream_id: 42,
        frame: 1234,
        ..Default::default()
    };
    let enc = token_codec(&bundle)
        .unwrap()
        .encode(&grid, 330, 200, params)
        .unwrap();
    write(&dir.join("packet.uigc"), &enc.bytes);

    // The integer prior, 4 stages + 9 adaptive tokens (golden_packet_integer_prior_adaptive).
    let bundle = Bundle::load(repo.join("tests/data/tiny-model-int")).unwrap();
    let params = FrameParams {
        stream_id: 7,
        frame: 99,
        stages: Some(4),
        extra: 9,
        ..Default::default()
    };
    let enc = token_codec(&bundle)
        .unwrap()
        .encode(&grid, 330, 200, params)
        .unwrap();
    assert_eq!(enc.extra_tokens, 9);
    write(&dir.join("packet-int-adaptive.uigc"), &enc.bytes);
}
