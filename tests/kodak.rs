//! The 24 Kodak images (../shared/data/kodak) through the default model (the tiny test model
//! when the shipped one is absent): all stages round-trip exactly and the range coder stays
//! within `ideal * 1.005 + 32` bits of the prior's ideal code length per packet.

mod common;

use common::*;
use gstuigc::codec::FrameParams;

#[test]
fn kodak_round_trip_and_coding_overhead() {
    let test = "kodak_round_trip_and_coding_overhead";
    let Some(kodak) = kodak_dir(test) else { return };
    let dir = shipped_model_or_skip(test).unwrap_or_else(tiny_model_dir);
    let mut model = load(&dir);
    let (mut ideal_sum, mut payload_sum, mut worst) = (0.0f64, 0usize, f64::MIN);
    for i in 1..=24 {
        let path = kodak.join(format!("kodim{i:02}.png"));
        let img = read_png(&path);
        let grid = model.tokenize(&img).unwrap();
        let enc = model
            .token_codec()
            .encode(&grid, img.width, img.height, FrameParams::default())
            .unwrap();
        let p = &enc;
        let bound = p.ideal_bits * 1.005 + 32.0;
        assert!(
            p.payload_bits as f64 <= bound,
            "kodim{i:02}: {} payload bits > {bound:.1}",
            p.payload_bits
        );
        let dec = model.token_codec().decode(&p.bytes).unwrap();
        assert_eq!(dec.grid, grid, "kodim{i:02}");
        ideal_sum += p.ideal_bits;
        payload_sum += p.payload_bits;
        worst = worst.max(p.payload_bits as f64 - p.ideal_bits);
    }
    eprintln!(
        "kodak ({}): payload {payload_sum} bits vs ideal {ideal_sum:.0} bits: ratio {:.5}, \
         worst excess {worst:.1} bits/packet",
        dir.display(),
        payload_sum as f64 / ideal_sum
    );
}
