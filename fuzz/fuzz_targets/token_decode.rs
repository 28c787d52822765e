//! The token decoder with the integer prior, no ONNX Runtime: a sequence of intra and inter
//! packets (fuzz/src/lib.rs `chunks`) decoded by the token codecs of the shipped model and of
//! the test bundles, each inter packet against the state the previous ones left (at first the
//! reference of the golden inter packet). Every decoded grid must be well formed.
#![no_main]

use std::sync::{Mutex, OnceLock};

use gstuigc::codec::bitstream::parse_packet;
use gstuigc::codec::{token_codec_with_threads, Bundle, Reference, TokenCodec};
use libfuzzer_sys::fuzz_target;
use uigc_fuzz::{chunks, repo, FUZZ_MAX_PIXELS};

struct State {
    codecs: Vec<TokenCodec>,
    golden_reference: Reference,
}

fn state() -> &'static Mutex<State> {
    static S: OnceLock<Mutex<State>> = OnceLock::new();
    S.get_or_init(|| {
        let codecs = [
            "models/uigc-small",
            "tests/data/tiny-model-int",
            "tests/data/tiny-model",
            "tests/data/tiny-model-k4",
        ]
        .iter()
        .map(|d| {
            let b = Bundle::load(repo().join(d)).unwrap_or_else(|e| panic!("{d}: {e}"));
            let mut c = token_codec_with_threads(&b, 1).unwrap();
            c.set_max_pixels(FUZZ_MAX_PIXELS);
            c
        })
        .collect();
        // The reference the golden inter packet was coded against (tests/data/golden-inter).
        let j: serde_json::Value = serde_json::from_slice(
            &std::fs::read(repo().join("tests/data/golden-inter/inputs.json")).unwrap(),
        )
        .unwrap();
        let u = |k: &str| j[k].as_u64().unwrap() as usize;
        let grid = gstuigc::codec::TokenGrid::new(
            u("rows"),
            u("cols"),
            j["reference"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u16)
                .collect(),
        );
        let params = gstuigc::codec::ColourParams::default();
        let (cr, cc) = params.grid(u("width") as u32, u("height") as u32);
        let colour = gstuigc::codec::ColourThumb {
            params,
            rows: cr,
            cols: cc,
            planes: std::array::from_fn(|p| {
                j["colour_reference"][p]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_i64().unwrap() as i32)
                    .collect()
            }),
        };
        let golden_reference = Reference::intra(
            u("reference_frame") as u32,
            u("width") as u32,
            u("height") as u32,
            grid,
            Some(colour),
        );
        Mutex::new(State {
            codecs,
            golden_reference,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let mut s = state().lock().unwrap();
    let s = &mut *s;
    let mut reference = s.golden_reference.clone();
    for (packet, clean_only) in chunks(data) {
        let (packet, clean_only) = (packet.as_slice(), clean_only);
        let which = parse_packet(packet).ok().and_then(|p| {
            s.codecs
                .iter()
                .position(|c| c.model_id() == p.header.model_id)
                .map(|i| (i, p.header.clone()))
        });
        let Some((i, header)) = which else {
            // Unparsable or foreign: must be refused, by every codec.
            assert!(s.codecs[0].decode(packet).is_err());
            continue;
        };
        let c = &mut s.codecs[i];
        let k = c.codebook_size();
        if header.inter.is_some() {
            if let Ok(d) = c.decode_inter(packet, &reference, clean_only) {
                let r = d.reference;
                assert_eq!((r.width, r.height), (header.width, header.height));
                assert_eq!((r.grid.rows, r.grid.cols), header.grid());
                assert_eq!(r.grid.tokens.len(), r.grid.rows * r.grid.cols);
                assert!(r.grid.tokens.iter().all(|&t| (t as usize) < k));
                assert!(d.exact_rows <= r.grid.rows);
                reference = r;
            }
        } else if let Ok(d) = c.decode(packet) {
            assert_eq!(d.header, header);
            assert_eq!((d.grid.rows, d.grid.cols), header.grid());
            assert_eq!(d.grid.tokens.len(), d.grid.rows * d.grid.cols);
            assert_eq!(d.coded.len(), d.grid.tokens.len());
            assert!(d.grid.tokens.iter().all(|&t| (t as usize) < k));
            reference =
                Reference::intra(header.frame, header.width, header.height, d.grid, d.colour);
        }
    }
});
