//! Writes the worst packets docs/reliability.md measures: well-formed headers that ask for as
//! much work as the format allows, and corrupt or hostile payloads with a valid packet check
//! (the check is no authentication: anyone can compute it). For the shipped model unless
//! `UIGC_MODEL` names another bundle.
//!
//! ```sh
//! cargo run --release --example craft_hostile -- OUT_DIR [REAL_PACKET.uigc]
//! ```
//! With a real packet (e.g. `uigc encode kodim23.png -o k23.uigc`) it also writes that packet
//! with one payload bit flipped (a packet damaged in transit).

use std::path::PathBuf;

use gstuigc::codec::bitstream::{
    check_value, write_header_prefix, write_packet, Header, FLAG_DENSE, VERSION,
};
use gstuigc::codec::{default_model_dir, Bundle};

fn main() {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().expect("usage: craft_hostile OUT_DIR [PACKET]"));
    let real = args.next().map(PathBuf::from);
    let dir = std::env::var_os("UIGC_MODEL")
        .map(Into::into)
        .unwrap_or_else(|| default_model_dir().unwrap());
    let bundle = Bundle::load(&dir).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(out.join(name), bytes).unwrap();
        println!("{name}: {} bytes", bytes.len());
    };
    let header = |w: u32, h: u32, stages: u8, flags: u8| Header {
        version: VERSION,
        flags,
        model_id: bundle.model_id,
        stream_id: 0,
        frame: 0,
        width: w,
        height: h,
        stages,
        colour: None,
        inter: None,
        check: 0,
    };
    // Nothing coded: the token check value covers the header alone, so the packet is valid.
    let empty = |w: u32, h: u32, flags: u8| {
        let mut hd = header(w, h, 0, flags);
        hd.check = check_value(&write_header_prefix(&hd), std::iter::empty());
        write_packet(&hd, &[])
    };
    write("valid-16x16-0stages.uigc", &empty(16, 16, 0));
    write("valid-640x480-0stages.uigc", &empty(640, 480, 0));
    write("valid-768x512-0stages.uigc", &empty(768, 512, 0));
    write("valid-768x528-0stages.uigc", &empty(768, 528, 0));
    write("valid-1024x512-0stages.uigc", &empty(1024, 512, 0));
    write("valid-1024x528-0stages.uigc", &empty(1024, 528, 0));
    write("valid-1920x1080-0stages.uigc", &empty(1920, 1080, 0));
    write("valid-3840x2160-0stages.uigc", &empty(3840, 2160, 0));
    write(
        "valid-1920x1080-dense-0stages.uigc",
        &empty(1920, 1080, FLAG_DENSE),
    );
    // The same headers padded to one byte per token: what a default receiver accepts for them
    // (zero bytes decode as nothing; the packet is valid).
    // 992x384 = 1488 tokens: the largest grid a 1500-byte packet may carry whatever the work
    // limit (one token per byte), padded to 1500 bytes.
    {
        let mut hd = header(992, 384, 0, 0);
        hd.check = check_value(&write_header_prefix(&hd), std::iter::empty());
        let pad = 1500 - write_packet(&hd, &[]).len();
        write(
            "valid-992x384-0stages-1500B.uigc",
            &write_packet(&hd, &vec![0; pad]),
        );
    }
    for (w, h) in [(1920u32, 1080u32), (3840, 2160)] {
        let mut hd = header(w, h, 0, 0);
        hd.check = check_value(&write_header_prefix(&hd), std::iter::empty());
        let tokens = (w.div_ceil(16) * h.div_ceil(16)) as usize;
        let pad = tokens - write_packet(&hd, &[]).len();
        write(
            &format!("valid-{w}x{h}-0stages-padded.uigc"),
            &write_packet(&hd, &vec![0; pad]),
        );
    }
    // A 1500-byte packet of random payload with a valid packet check (a hostile sender): every
    // stage of the grid is decoded from it, then the token check value refuses it.
    let mut s = 0x9e37_79b9u32;
    let mut random = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                s as u8
            })
            .collect()
    };
    for (w, h, stages) in [
        (1024, 512, 10u8),
        (3840, 2160, 1),
        (768, 512, 10),
        (992, 384, 10),
        (640, 480, 10),
    ] {
        let hd = header(w, h, stages, 0);
        let len = 1500 - write_packet(&hd, &[]).len();
        write(
            &format!("hostile-{w}x{h}-{stages}stages-1500B.uigc"),
            &write_packet(&hd, &random(len)),
        );
    }
    if let Some(real) = real {
        let mut p = std::fs::read(&real).unwrap();
        let at = p.len() / 2;
        p[at] ^= 0x10;
        write("corrupt-real-bitflip.uigc", &p);
    }
}
