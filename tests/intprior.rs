//! The Rust integer prior equals the Python reference (docs/prior.md) bit for bit on the
//! committed golden vectors, with any thread count, and refuses malformed prior files.

mod common;

use std::path::PathBuf;

use common::*;
use gstuigc::codec::intprior::IntPrior;
use gstuigc::codec::prior::Prior;
use gstuigc::codec::schedule::Schedule;
use gstuigc::codec::TokenGrid;
use serde::Deserialize;

#[derive(Deserialize)]
struct Golden {
    rows: usize,
    cols: usize,
    tokens: Vec<u16>,
    stages: Vec<Vec<u32>>,
}

fn golden_dir() -> PathBuf {
    repo().join("tests/data/intprior")
}

fn goldens() -> Vec<(String, Golden)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(golden_dir()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with("grid_") && name.ends_with(".json") {
            let g: Golden = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            out.push((name, g));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 5, "golden grids missing");
    out
}

#[test]
fn rust_equals_python_reference_every_stage_every_grid() {
    let schedule = Schedule::new(3).unwrap();
    for threads in [1, 2, 8] {
        let mut prior = IntPrior::load(
            &golden_dir().join("prior.bin"),
            16,
            schedule.num_stages(),
            threads,
        )
        .unwrap();
        for (name, g) in goldens() {
            let grid = TokenGrid::new(g.rows, g.cols, g.tokens.clone());
            let plan = schedule.plan(g.rows, g.cols);
            prior.reset();
            for (s, want) in g.stages.iter().enumerate() {
                let tables = prior.stage_tables(&grid, &plan, s).unwrap();
                let got: Vec<u32> = (0..plan.stages[s].len())
                    .flat_map(|i| tables.get(i).to_vec())
                    .collect();
                assert_eq!(&got, want, "{name}, stage {s}, {threads} threads");
            }
        }
    }
}

#[test]
fn stages_can_be_asked_out_of_order_after_reset() {
    // The cache catches up from any stage; asking a stage again recomputes it identically.
    let schedule = Schedule::new(3).unwrap();
    let mut prior = IntPrior::load(&golden_dir().join("prior.bin"), 16, 10, 1).unwrap();
    let (_, g) = goldens()
        .into_iter()
        .find(|(n, _)| n == "grid_16x16.json")
        .unwrap();
    let grid = TokenGrid::new(g.rows, g.cols, g.tokens.clone());
    let plan = schedule.plan(g.rows, g.cols);
    for s in [9, 4, 4, 0, 7] {
        let t = prior.stage_tables(&grid, &plan, s).unwrap();
        let got: Vec<u32> = (0..plan.stages[s].len())
            .flat_map(|i| t.get(i).to_vec())
            .collect();
        assert_eq!(got, g.stages[s], "stage {s}");
    }
}

#[test]
fn malformed_prior_files_are_refused_with_the_reason() {
    let bytes = std::fs::read(golden_dir().join("prior.bin")).unwrap();
    let dir = std::env::temp_dir().join(format!("uigc-intprior-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let check = |data: &[u8], k: usize, stages: usize, needle: &str| {
        let p = dir.join("p.bin");
        std::fs::write(&p, data).unwrap();
        let e = match IntPrior::load(&p, k, stages, 1) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("accepted a file that should fail with '{needle}'"),
        };
        assert!(e.contains(needle), "'{e}' should contain '{needle}'");
    };
    check(&bytes, 32, 10, "'K'");
    check(&bytes, 16, 7, "'stages'");
    check(&bytes[..bytes.len() - 5], 16, 10, "beyond the end");
    check(&bytes[..6], 16, 10, "magic");
    check(b"UGIP\xff\xff\xff\x7f", 16, 10, "header length");
    let mut bad = bytes.clone();
    bad[8] = b'[';
    check(&bad, 16, 10, "header");
    // Rename one tensor in the header: the loader names the missing one.
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let at = text.find("\"l1.wq\"").expect("l1.wq in header");
    let mut bad = bytes.clone();
    bad[at + 4] = b'x';
    check(&bad, 16, 10, "'l1.wq' is missing");
}
