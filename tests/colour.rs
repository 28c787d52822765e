//! The colour thumbnail (packet flag bit 2): round trips, rate control, corruption, and that it
//! does what it is for on a real photo.

mod common;

use common::*;
use gstuigc::codec::{
    token_codec, Bundle, Colour, ColourParams, ColourThumb, Error, FrameParams, RgbImage,
    TokenCodec, TokenGrid,
};

fn codec() -> TokenCodec {
    token_codec(&Bundle::load(tiny_model_dir()).unwrap()).unwrap()
}

fn grid_for(img: &RgbImage) -> TokenGrid {
    let (rows, cols) = img.grid();
    let tokens = (0..rows * cols).map(|i| ((i * 7) % 16) as u16).collect();
    TokenGrid::new(rows, cols, tokens)
}

#[test]
fn colour_packets_round_trip_tokens_and_thumbnail() {
    let mut c = codec();
    for (w, h, params) in [
        (190, 120, ColourParams::default()),
        (17, 9, ColourParams::new(8, 1).unwrap()),
        (300, 200, ColourParams::new(128, 32).unwrap()),
    ] {
        let img = synthetic(w, h, 3);
        let g = grid_for(&img);
        let thumb = ColourThumb::from_image(&img, params);
        let plain = c.encode(&g, w, h, FrameParams::default()).unwrap();
        let enc = c
            .encode_with_colour(&g, w, h, FrameParams::default(), Some(&thumb))
            .unwrap();
        assert_eq!(enc.header.colour, Some(params));
        assert!(enc.bytes.len() > plain.bytes.len());
        assert!(enc.colour_bits > 0.0);
        assert_eq!(enc.coded_tokens, plain.coded_tokens);
        let dec = c.decode(&enc.bytes).unwrap();
        assert_eq!(dec.grid, g, "{w}x{h}");
        assert_eq!(dec.colour.as_ref(), Some(&thumb), "{w}x{h}");
        assert!(c.decode(&plain.bytes).unwrap().colour.is_none());
    }
    // The token codec alone cannot make a thumbnail (it has no frame).
    let img = synthetic(64, 64, 1);
    let params = FrameParams {
        colour: Colour::On(ColourParams::default()),
        ..Default::default()
    };
    assert!(matches!(
        c.encode(&grid_for(&img), 64, 64, params),
        Err(Error::InvalidArgument(_))
    ));
    // A thumbnail of another frame size is refused.
    let other = ColourThumb::from_image(&synthetic(200, 64, 1), ColourParams::default());
    assert!(c
        .encode_with_colour(
            &grid_for(&img),
            64,
            64,
            FrameParams::default(),
            Some(&other)
        )
        .is_err());
}

#[test]
fn every_bit_flip_of_a_colour_packet_is_detected() {
    let mut c = codec();
    let img = synthetic(190, 120, 4);
    let thumb = ColourThumb::from_image(&img, ColourParams::new(16, 2).unwrap());
    let p = c
        .encode_with_colour(
            &grid_for(&img),
            190,
            120,
            FrameParams::default(),
            Some(&thumb),
        )
        .unwrap()
        .bytes;
    assert_every_bit_flip_is_detected(&mut c, &p);
    for n in 0..p.len() {
        assert!(c.decode(&p[..n]).is_err(), "cut at {n}");
    }
}

/// `On` pays for the thumbnail out of the token budget; `Auto` keeps it only when every token
/// still fits; neither ever exceeds the cap.
#[test]
fn budgets_with_the_thumbnail() {
    let mut model = load(&tiny_model_dir());
    let img = synthetic(256, 160, 6);
    let plain = model.encode(&img, FrameParams::default()).unwrap();
    let on = Colour::On(ColourParams::default());
    let auto = Colour::Auto(ColourParams::default());
    let with = model
        .encode(
            &img,
            FrameParams {
                colour: on,
                ..Default::default()
            },
        )
        .unwrap();
    let (n_plain, n_with) = (plain.packet.bytes.len(), with.packet.bytes.len());
    assert!(n_with > n_plain);
    // No budget: auto sends it with every token, not with a partial keep policy.
    let params = |colour, stages, max_bytes| FrameParams {
        colour,
        stages,
        max_bytes,
        ..Default::default()
    };
    let e = model.encode(&img, params(auto, None, None)).unwrap();
    assert!(e.packet.header.colour.is_some());
    let e = model.encode(&img, params(auto, Some(4), None)).unwrap();
    assert!(e.packet.header.colour.is_none());
    let e = model.encode(&img, params(on, Some(4), None)).unwrap();
    assert!(e.packet.header.colour.is_some());
    for cap in [n_plain - 20, n_plain, n_with - 1, n_with, n_with + 50] {
        let a = model.encode(&img, params(auto, None, Some(cap))).unwrap();
        assert!(a.packet.bytes.len() <= cap, "auto, cap {cap}");
        assert_eq!(
            a.packet.header.colour.is_some(),
            cap >= n_with,
            "auto, cap {cap}"
        );
        if cap >= n_plain {
            assert_eq!(
                a.packet.coded_tokens, plain.packet.coded_tokens,
                "auto, cap {cap}"
            );
        }
        match model.encode(&img, params(on, None, Some(cap))) {
            Ok(o) => {
                assert!(o.packet.bytes.len() <= cap, "on, cap {cap}");
                assert!(o.packet.header.colour.is_some());
                assert!(o.packet.coded_tokens <= a.packet.coded_tokens);
            }
            Err(Error::BudgetTooSmall { min, .. }) => assert!(min > cap),
            Err(e) => panic!("on, cap {cap}: {e}"),
        }
        let dec = model.decode(&a.packet.bytes).unwrap();
        assert_eq!((dec.image.width, dec.image.height), (256, 160));
    }
}

/// What the thumbnail is for: on a real photo with the shipped model it brings the decoded
/// colours (block means) close to the photo's and raises PSNR.
#[test]
fn thumbnail_corrects_the_colours_of_a_real_photo() {
    let Some(dir) = shipped_model_or_skip("thumbnail_corrects_the_colours_of_a_real_photo") else {
        return;
    };
    let mut model = load(&dir);
    let photo = read_png(&repo().join("docs/sample/kodim23.png"));
    let params = ColourParams::default();
    let off = model.encode(&photo, FrameParams::default()).unwrap();
    let on = model
        .encode(
            &photo,
            FrameParams {
                colour: Colour::On(params),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(on.tokens, off.tokens);
    let a = model.decode(&off.packet.bytes).unwrap().image;
    let b = model.decode(&on.packet.bytes).unwrap().image;
    let target = ColourThumb::from_image(&photo, params);
    let block_error = |img: &RgbImage| -> i64 {
        let t = ColourThumb::from_image(img, params);
        (0..3)
            .flat_map(|p| t.planes[p].iter().zip(&target.planes[p]))
            .map(|(x, y)| (x - y).abs() as i64)
            .sum()
    };
    let (ea, eb) = (block_error(&a), block_error(&b));
    assert!(eb * 3 < ea, "block-mean error {ea} -> {eb}");
    let (pa, pb) = (psnr(&photo, &a), psnr(&photo, &b));
    assert!(pb > pa + 1.0, "PSNR {pa:.2} -> {pb:.2} dB");
    eprintln!(
        "kodim23: {} -> {} bytes, PSNR {pa:.2} -> {pb:.2} dB, block-mean error {ea} -> {eb}",
        off.packet.bytes.len(),
        on.packet.bytes.len()
    );
}

/// Auto density with the colour thumbnail: a dense packet is only chosen with the thumbnail
/// when the normal packet has one (a dense packet without it is worse than a normal one with it).
#[test]
fn auto_density_keeps_the_thumbnail() {
    use gstuigc::codec::Density;
    let mut model = load(&tiny_model_dir());
    let img = synthetic(128, 96, 2);
    let auto = Colour::Auto(ColourParams::default());
    let params = |colour, max_bytes| FrameParams {
        colour,
        max_bytes,
        ..Default::default()
    };
    let normal = model.encode(&img, params(auto, None)).unwrap();
    assert!(normal.packet.header.colour.is_some());
    let dense = |m: &mut gstuigc::codec::Model, colour| {
        m.encode_auto(&img, params(colour, None), Density::Dense)
            .unwrap()
            .packet
            .bytes
            .len()
    };
    let (d_plain, d_colour) = (dense(&mut model, Colour::Off), dense(&mut model, auto));
    assert!(d_colour > d_plain);
    let mut dense_seen = false;
    for cap in (d_plain.saturating_sub(40)..d_colour + 40).step_by(8) {
        let enc = model
            .encode_auto(&img, params(auto, Some(cap)), Density::Auto)
            .unwrap();
        assert!(enc.packet.bytes.len() <= cap);
        if enc.packet.header.dense() {
            assert!(
                enc.packet.header.colour.is_some(),
                "cap {cap}: dense without thumbnail"
            );
            dense_seen = true;
        }
    }
    assert!(
        dense_seen,
        "a budget above the dense packet with thumbnail goes dense"
    );
}

/// `--extra N` with every stage sent adds no token, so it must not cost the automatic thumbnail
/// (it did: 1290 -> 811 bytes on a Kodak photo, issue 15).
#[test]
fn auto_thumbnail_survives_extra_tokens_when_every_stage_is_sent() {
    let mut model = load(&tiny_model_dir());
    let img = synthetic(96, 64, 3);
    for extra in [0, 5] {
        let p = model
            .encode(
                &img,
                FrameParams {
                    extra,
                    colour: Colour::Auto(ColourParams::default()),
                    ..Default::default()
                },
            )
            .unwrap()
            .packet;
        assert!(p.header.colour.is_some(), "extra {extra}: no thumbnail");
    }
}
