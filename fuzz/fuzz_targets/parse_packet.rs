//! The packet parser (src/codec/bitstream.rs): any bytes give a packet or a typed error, and a
//! parsed packet written back parses to the same header and payload.
#![no_main]

use gstuigc::codec::bitstream::{parse_packet, write_packet};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = parse_packet(data) else {
        return;
    };
    let h = p.header.clone();
    // Derived sizes never overflow or panic on a parsed header.
    let (rows, cols) = h.grid();
    let (w, h2) = h.coded_size();
    assert!(rows >= 1 && cols >= 1 && w >= h.width && h2 >= h.height);
    let again = write_packet(&h, p.payload);
    let q = parse_packet(&again).expect("a written packet parses");
    assert_eq!(q.header, h);
    assert_eq!(q.payload, p.payload);
});
