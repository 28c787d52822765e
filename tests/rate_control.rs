//! Keep policies, adaptive tokens, regeneration modes and rate control on the integer prior.

mod common;

use common::*;
use gstuigc::codec::{
    token_codec_with_threads, Bundle, Error, FrameParams, KeepPolicy, RegenMode, TokenCodec,
    TokenGrid,
};

fn int_dir() -> std::path::PathBuf {
    repo().join("tests/data/tiny-model-int")
}

fn codec(threads: usize) -> TokenCodec {
    token_codec_with_threads(&Bundle::load(int_dir()).unwrap(), threads).unwrap()
}

/// A structured 24x40 grid (a 640x384 frame) over K = 16.
fn grid() -> TokenGrid {
    let (rows, cols) = (24, 40);
    let tokens = (0..rows * cols)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            (((r / 3) * 5 + (c / 4) * 3 + (r * c) % 3) % 16) as u16
        })
        .collect();
    TokenGrid::new(rows, cols, tokens)
}

#[test]
fn keep_policies_parse_and_map_to_prefixes() {
    let schedule = gstuigc::codec::schedule::Schedule::new(3).unwrap();
    for (s, n) in [
        ("all", 10),
        ("half", 8),
        ("quarter", 7),
        ("eighth", 5),
        ("sixteenth", 4),
        ("1/32", 2),
        ("sixty-fourth", 1),
        ("stages:3", 3),
    ] {
        let k: KeepPolicy = s.parse().unwrap();
        assert_eq!(k.stages(&schedule).unwrap(), n, "{s}");
    }
    assert!("1/128"
        .parse::<KeepPolicy>()
        .unwrap()
        .stages(&schedule)
        .is_err());
    assert!("stages:11"
        .parse::<KeepPolicy>()
        .unwrap()
        .stages(&schedule)
        .is_err());
    assert!("most".parse::<KeepPolicy>().is_err());
    for s in ["argmax", "iterative", "iterative:3", "sample", "sample:2"] {
        let m: RegenMode = s.parse().unwrap();
        assert_eq!(m.to_string().split(':').next(), s.split(':').next());
    }
    for s in ["iterative:3", "iterative:4:2", "sample:2"] {
        assert_eq!(s.parse::<RegenMode>().unwrap().to_string(), s);
    }
    for s in [
        "iterative:1",
        "sample:9",
        "best",
        "argmax:2",
        "iterative:4:0",
        "iterative:4:5",
        "sample:2:2",
        "iterative:4:x",
    ] {
        assert!(s.parse::<RegenMode>().is_err(), "{s}");
    }
}

/// Adaptive extras are tokens of the first dropped stage, and exactly those the decoder's argmax
/// regeneration would get wrong (cheapest first: a smaller count is a prefix of a larger one).
#[test]
fn adaptive_extras_round_trip_and_are_counted() {
    let mut c = codec(1);
    c.set_regen(RegenMode::Argmax);
    let four = FrameParams {
        stages: Some(4),
        ..Default::default()
    };
    // What the receiver regenerates when stages 0-3 are sent: stage 4's tables depend on those
    // stages only.
    let mut regenerated = |g: &TokenGrid| {
        let enc = c.encode(g, 640, 384, four).unwrap();
        c.decode(&enc.bytes).unwrap()
    };
    // The random test prior regenerates every stage-4 token of grid() wrongly: give every other
    // stage-4 position the token argmax regenerates, so that some are right and some wrong.
    let mut g = grid();
    let plan = gstuigc::codec::schedule::Schedule::new(3)
        .unwrap()
        .plan(g.rows, g.cols);
    let first = regenerated(&g);
    for (i, &p) in plan.stages[4].iter().enumerate() {
        if i % 2 == 0 {
            g.tokens[p as usize] = first.grid.tokens[p as usize];
        }
    }
    let plain = regenerated(&g);
    let stage4: std::collections::BTreeSet<usize> =
        plan.stages[4].iter().map(|&p| p as usize).collect();
    let wrong: std::collections::BTreeSet<usize> = stage4
        .iter()
        .copied()
        .filter(|&p| plain.grid.tokens[p] != g.tokens[p])
        .collect();
    assert!(
        wrong.len() > 7 && wrong.len() < stage4.len(),
        "the test grid needs some wrong and some right regenerations: {} of {}",
        wrong.len(),
        stage4.len()
    );
    let mut previous = std::collections::BTreeSet::new();
    for extra in [0usize, 1, 7, 40, 10_000] {
        let params = FrameParams {
            stages: Some(4),
            extra,
            ..Default::default()
        };
        let enc = c.encode(&g, 640, 384, params).unwrap();
        assert!(enc.extra_tokens <= extra);
        let dec = c.decode(&enc.bytes).unwrap();
        let sent = dec.coded.iter().filter(|&&x| x).count();
        assert_eq!(sent, enc.coded_tokens);
        assert_eq!(
            enc.coded_tokens,
            60 + enc.extra_tokens,
            "4 stages of a 24x40 grid = 60"
        );
        for (i, &x) in dec.coded.iter().enumerate() {
            if x {
                assert_eq!(dec.grid.tokens[i], g.tokens[i]);
            }
        }
        let extras: std::collections::BTreeSet<usize> = (0..dec.coded.len())
            .filter(|&p| dec.coded[p] && !plain.coded[p])
            .collect();
        assert_eq!(extras.len(), enc.extra_tokens);
        assert_eq!(enc.extra_tokens, extra.min(wrong.len()), "extra {extra}");
        assert!(
            extras.is_subset(&wrong),
            "extra {extra}: extras {:?} include tokens argmax regenerates right",
            extras.difference(&wrong).collect::<Vec<_>>()
        );
        assert!(
            previous.is_subset(&extras),
            "extra {extra}: not cheapest first"
        );
        previous = extras;
    }
    assert_eq!(previous, wrong, "every wrong token fits in 10,000 extras");
}

#[test]
fn regenerated_packets_decode_identically_with_any_thread_count() {
    let g = grid();
    for params in [
        FrameParams {
            stages: Some(7),
            ..Default::default()
        },
        FrameParams {
            stages: Some(2),
            extra: 12,
            ..Default::default()
        },
        FrameParams {
            max_bytes: Some(40),
            ..Default::default()
        },
    ] {
        let packets: Vec<Vec<u8>> = [1, 2, 8]
            .into_iter()
            .map(|t| codec(t).encode(&g, 640, 384, params).unwrap().bytes)
            .collect();
        assert!(
            packets.windows(2).all(|w| w[0] == w[1]),
            "encoder output depends on threads"
        );
        for mode in [
            RegenMode::Argmax,
            RegenMode::Iterative {
                passes: 3,
                sharpen: 0,
            },
            RegenMode::Iterative {
                passes: 3,
                sharpen: 2,
            },
            RegenMode::Sample { sharpen: 1 },
        ] {
            let grids: Vec<TokenGrid> = [1, 2, 8]
                .into_iter()
                .map(|t| {
                    let mut c = codec(t);
                    c.set_regen(mode);
                    c.decode(&packets[0]).unwrap().grid
                })
                .collect();
            assert!(
                grids.windows(2).all(|w| w[0] == w[1]),
                "{mode}: decoder depends on threads"
            );
        }
    }
}

#[test]
fn regeneration_modes_differ_but_keep_sent_tokens() {
    let g = grid();
    let mut c = codec(2);
    let enc = c
        .encode(
            &g,
            640,
            384,
            FrameParams {
                stages: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
    let mut grids = Vec::new();
    // Pairs that differ in one parameter only, so each comparison shows that parameter acts.
    for mode in [
        RegenMode::Argmax,
        RegenMode::Iterative {
            passes: 3,
            sharpen: 0,
        },
        RegenMode::Iterative {
            passes: 3,
            sharpen: 2,
        },
        RegenMode::Sample { sharpen: 1 },
        RegenMode::Sample { sharpen: 4 },
        RegenMode::Iterative {
            passes: 5,
            sharpen: 0,
        },
    ] {
        c.set_regen(mode);
        let d = c.decode(&enc.bytes).unwrap();
        assert_eq!(d.regen, mode);
        for (i, &x) in d.coded.iter().enumerate() {
            if x {
                assert_eq!(d.grid.tokens[i], g.tokens[i]);
            }
        }
        grids.push(d.grid);
    }
    // (assert! rather than assert_ne!: a failure names the parameter, not 960 tokens.)
    assert!(grids[0] != grids[3], "sample:1 = argmax");
    assert!(
        grids[1] != grids[2],
        "iterative:3: sharpen 2 (sampled candidates) = sharpen 0 (argmax candidates)"
    );
    assert!(grids[3] != grids[4], "sample: sharpen 4 = sharpen 1");
    assert!(grids[1] != grids[5], "iterative: 5 passes = 3 passes");
    assert!(grids[0] != grids[1], "iterative:3 = argmax");
    // Sampling is seeded from the packet: the same packet gives the same frame.
    c.set_regen(RegenMode::Sample { sharpen: 1 });
    assert_eq!(c.decode(&enc.bytes).unwrap().grid, grids[3]);
    c.set_regen(RegenMode::Iterative {
        passes: 3,
        sharpen: 2,
    });
    assert_eq!(c.decode(&enc.bytes).unwrap().grid, grids[2]);
}

#[test]
fn max_bytes_is_never_exceeded_and_uses_the_budget() {
    let g = grid();
    let mut c = codec(2);
    let full = c
        .encode(&g, 640, 384, FrameParams::default())
        .unwrap()
        .bytes
        .len();
    let mut last = 0;
    for cap in [18usize, 25, 40, 80, 150, 300, full, full + 100] {
        let enc = c
            .encode(
                &g,
                640,
                384,
                FrameParams {
                    max_bytes: Some(cap),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(enc.bytes.len() <= cap, "{} > {cap}", enc.bytes.len());
        assert!(
            enc.coded_tokens >= last,
            "more budget never sends fewer tokens"
        );
        last = enc.coded_tokens;
        c.decode(&enc.bytes).unwrap();
    }
    assert_eq!(
        last,
        g.tokens.len(),
        "a budget above the full packet sends everything"
    );
    match c.encode(
        &g,
        640,
        384,
        FrameParams {
            max_bytes: Some(8),
            ..Default::default()
        },
    ) {
        Err(Error::BudgetTooSmall { budget: 8, min }) => assert!(min > 8),
        other => panic!("expected BudgetTooSmall, got {other:?}"),
    }
}

/// Issue acceptance: every Kodak packet fits 150, 300, 600 and 1200 bytes.
#[test]
fn kodak_packets_fit_every_budget() {
    let test = "kodak_packets_fit_every_budget";
    let Some(kodak) = kodak_dir(test) else { return };
    let dir = shipped_model_or_skip(test).unwrap_or_else(int_dir);
    let mut model = load(&dir);
    for i in 1..=24 {
        let img = read_png(&kodak.join(format!("kodim{i:02}.png")));
        let grid = model.tokenize(&img).unwrap();
        for cap in [150usize, 300, 600, 1200] {
            let params = FrameParams {
                max_bytes: Some(cap),
                ..Default::default()
            };
            let enc = model
                .token_codec()
                .encode(&grid, img.width, img.height, params)
                .unwrap();
            assert!(
                enc.bytes.len() <= cap,
                "kodim{i:02} at {cap}: {} bytes",
                enc.bytes.len()
            );
            model.token_codec().decode(&enc.bytes).unwrap();
        }
    }
}

/// Several models on one link (two codebooks, K=16 and K=4): under a budget the encoder keeps
/// the packet that sends the most index bits per 16x16 pixels, never over the budget; the decoder
/// set decodes whichever it names. tiny-model-k4 sends every token in a few bytes (its prior is
/// nearly certain of its usual token) but only 2 index bits per block: it must win the small
/// budgets and lose the large ones to the K=16 model (4 bits per block).
#[test]
fn model_set_picks_a_codebook_under_the_budget() {
    use gstuigc::codec::{modelset::sent_bits_per_block, Density, ModelSet};
    let a = load(&tiny_model_dir());
    let b = load(&tiny_model_k4_dir());
    let (ka, kb) = (a.bundle().codebook_size, b.bundle().codebook_size);
    assert_eq!((ka, kb), (16, 4), "the test needs two codebook sizes");
    let mut set = ModelSet::new(vec![a, b]).unwrap();
    let img = synthetic(160, 96, 4);
    // Without a budget: the primary model.
    let (i, _) = set
        .encode_auto(&img, FrameParams::default(), Density::Normal)
        .unwrap();
    assert_eq!(i, 0);
    let mut chosen = Vec::new();
    for cap in [20usize, 30, 40, 60, 90, 140, 220, 400] {
        let params = FrameParams {
            max_bytes: Some(cap),
            ..Default::default()
        };
        let (i, enc) = match set.encode_auto(&img, params, Density::Normal) {
            Ok(r) => r,
            Err(gstuigc::codec::Error::BudgetTooSmall { min, .. }) => {
                assert!(min > cap);
                continue;
            }
            Err(e) => panic!("{e}"),
        };
        chosen.push((cap, i));
        assert!(enc.packet.bytes.len() <= cap);
        // The choice is the larger score of the two models' own rate-controlled packets.
        let mut scores = Vec::new();
        for (m, k) in set.models_mut().iter_mut().zip([ka, kb]) {
            scores.push(
                m.encode_auto(&img, params, Density::Normal)
                    .map(|f| sent_bits_per_block(&f, k))
                    .unwrap_or(-1.0),
            );
        }
        assert_ne!(scores[0], scores[1], "cap {cap}: a tie decides nothing");
        let want = if scores[1] > scores[0] { 1 } else { 0 };
        assert_eq!(i, want, "cap {cap}: scores {scores:?}");
        let dec = set.decode(&enc.packet.bytes).unwrap();
        assert_eq!(dec.tokens.header.model_id, set.models()[i].model_id());
        assert_eq!((dec.image.width, dec.image.height), (160, 96));
    }
    // Both codebooks win somewhere: K=4 at the smallest budget that fits, K=16 at the largest.
    assert_eq!(chosen.first().map(|c| c.1), Some(1), "{chosen:?}");
    assert_eq!(chosen.last().map(|c| c.1), Some(0), "{chosen:?}");
    // A set without the packet's model names both sides.
    let (_, enc) = set
        .encode_auto(&img, FrameParams::default(), Density::Normal)
        .unwrap();
    let mut only_b = ModelSet::new(vec![load(&tiny_model_b_dir())]).unwrap();
    let err = only_b.decode(&enc.packet.bytes).unwrap_err().to_string();
    assert!(
        err.contains(&set.models()[0].model_id().to_string())
            && err.contains(&only_b.models()[0].model_id().to_string()),
        "{err}"
    );
    // The same bundle twice is refused.
    assert!(ModelSet::new(vec![load(&tiny_model_dir()), load(&tiny_model_dir())]).is_err());
}
