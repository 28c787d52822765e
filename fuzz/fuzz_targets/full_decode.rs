//! The full receiver with ONNX Runtime and the tiny test model: a sequence of packets
//! (fuzz/src/lib.rs `chunks`) through one `StreamDecoder` (intra and inter packets, loss,
//! concealment, recovery, size changes). Every frame shown has the packet's size (a concealed
//! one: the last picture's) and every packet is counted once.
#![no_main]

use std::sync::{Mutex, OnceLock};

use gstuigc::codec::bitstream::parse_packet;
use gstuigc::codec::{FrameStatus, Model, RuntimeOptions, StreamDecoder};
use libfuzzer_sys::fuzz_target;
use uigc_fuzz::{chunks, repo, FUZZ_MAX_PIXELS};

fn model() -> &'static Mutex<Model> {
    static M: OnceLock<Mutex<Model>> = OnceLock::new();
    M.get_or_init(|| {
        let opts = RuntimeOptions {
            threads: 1,
            ..RuntimeOptions::default()
        };
        let mut m = Model::load(repo().join("tests/data/tiny-model"), &opts).expect("tiny model");
        m.token_codec().set_max_pixels(FUZZ_MAX_PIXELS);
        Mutex::new(m)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut m = model().lock().unwrap();
    let mut dec = StreamDecoder::new();
    let packets = chunks(data);
    let mut shown: Option<(u32, u32)> = None;
    for (packet, _) in &packets {
        let packet = packet.as_slice();
        if let Ok(f) = dec.decode(&mut m, packet) {
            let h = parse_packet(packet)
                .expect("a decoded packet parses")
                .header;
            let size = (f.image.width, f.image.height);
            if f.status == FrameStatus::Concealed {
                // The last picture again, whatever size the packet claims.
                assert_eq!(Some(size), shown);
            } else {
                assert_eq!(size, (h.width, h.height));
            }
            assert_eq!(f.image.data.len(), (size.0 * size.1 * 3) as usize);
            shown = Some(size);
        }
    }
    let s = dec.stats();
    assert_eq!(s.exact + s.concealed + s.dropped, packets.len() as u64);
});
