//! Packet format v2: one self-contained packet per frame (see docs/bitstream.md).
//!
//! ```text
//! byte 0      magic 0x55 ('U')
//! byte 1      version (high nibble, = 2) | flags (low nibble: bit 0 adaptive, bit 1 dense,
//!             bit 2 colour thumbnail, bit 3 inter: coded against a reference grid)
//! bytes 2..6  model id (4 bytes)
//! varint      stream id (u32)
//! varint      frame counter (u32)
//! varint      width - 1, varint height - 1 (pixels, each 1..=MAX_DIMENSION)
//! byte        number of coded stages (a prefix of the schedule, 0..=stages)
//! byte        colour thumbnail parameters (only with flag bit 2, see [`super::colour`])
//! varint x3   inter packets only (flag bit 3): reference frame counter, refresh band start and
//!             clean rows (token rows, see [`super::temporal`])
//! 2 bytes     check value (little-endian), see [`check_value`]
//! 2 bytes     inter packets only: check value of the whole grid
//! 2 bytes     packet check (little-endian): CRC-32 of every other byte of the packet, low 16
//!             bits, verified by [`parse_packet`] before any other work (see [`packet_check`])
//! rest        range-coder payload
//! ```
//! Version 1 (no packet check) is refused: a v1 packet costs the decoder the whole prior pass
//! before its token check value can reject corruption.
//! Varints are LEB128 (7 bits per byte, low first, at most 5 bytes for a u32).

use super::colour::ColourParams;
use super::error::PacketError;

/// First byte of every packet.
pub const MAGIC: u8 = 0x55;
/// The packet version this build writes and reads (2: with the packet check; version 1 packets
/// are refused).
pub const VERSION: u8 = 2;
/// Flag: the packet carries adaptive extra tokens of stage `stages` with a coded position mask.
pub const FLAG_ADAPTIVE: u8 = 0x1;
/// Flag: the token grid is that of the frame resampled to twice its width and height (four
/// tokens per 16x16 output pixels); the decoder decodes at that size and halves it.
pub const FLAG_DENSE: u8 = 0x2;
/// Flag: the payload ends with a colour thumbnail (block means of the frame in YCbCr); its
/// parameters follow the stage count in one header byte.
pub const FLAG_COLOUR: u8 = 0x4;
/// Flag: an inter packet, coded against the receiver's token grid of an earlier frame (its
/// reference, named in the header); see [`super::temporal`].
pub const FLAG_INTER: u8 = 0x8;
/// Flags this version defines.
pub const KNOWN_FLAGS: u8 = FLAG_ADAPTIVE | FLAG_DENSE | FLAG_COLOUR | FLAG_INTER;

/// The inter fields of a packet header (flag bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterHeader {
    /// Frame counter of the packet whose grid this one is coded against.
    pub reference: u32,
    /// First token row of the refresh band (rows `band_start..clean_rows` are sent intra).
    pub band_start: u32,
    /// Token rows `0..clean_rows` form the clean area: coded with context from that area only.
    pub clean_rows: u32,
    /// Check value of the whole resulting grid (the header's `check` covers the clean area).
    pub check_full: u16,
}

/// Largest frame side in pixels the decoder accepts.
pub const MAX_DIMENSION: u32 = 8192;

/// A 4-byte model identifier (see docs/bundle.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ModelId(pub [u8; 4]);

impl std::fmt::Display for ModelId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// The parsed header of a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u8,
    pub flags: u8,
    pub model_id: ModelId,
    pub stream_id: u32,
    pub frame: u32,
    pub width: u32,
    pub height: u32,
    /// Number of schedule stages coded in the payload (a prefix of the schedule).
    pub stages: u8,
    /// Colour thumbnail parameters (`Some` exactly when the flag `FLAG_COLOUR` is set).
    pub colour: Option<ColourParams>,
    /// Inter fields (`Some` exactly when the flag `FLAG_INTER` is set).
    pub inter: Option<InterHeader>,
    pub check: u16,
}

impl Header {
    /// Whether the packet carries the dense (2x resampled) token grid.
    pub fn dense(&self) -> bool {
        self.flags & FLAG_DENSE != 0
    }

    /// Size (width, height) of the picture the token grid describes: the frame itself, or
    /// twice its size for a dense packet.
    pub fn coded_size(&self) -> (u32, u32) {
        coded_size(self.width, self.height, self.dense())
    }

    /// Whether this is an inter packet.
    pub fn is_inter(&self) -> bool {
        self.inter.is_some()
    }

    /// Token grid size of this frame: (rows, cols).
    pub fn grid(&self) -> (usize, usize) {
        let (w, h) = self.coded_size();
        (h.div_ceil(16) as usize, w.div_ceil(16) as usize)
    }
}

/// Largest frame side a packet may carry: [`MAX_DIMENSION`], half of it for a dense packet (the
/// decoder works at twice the size).
pub fn max_frame_side(dense: bool) -> u32 {
    if dense {
        MAX_DIMENSION / 2
    } else {
        MAX_DIMENSION
    }
}

/// The size of the picture a token grid describes for a `width` x `height` frame.
pub fn coded_size(width: u32, height: u32, dense: bool) -> (u32, u32) {
    let f = if dense { 2 } else { 1 };
    (width * f, height * f)
}

/// A parsed packet: header, the header bytes the check value covers, and the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet<'a> {
    pub header: Header,
    /// The header bytes before the check value (covered by the check value).
    pub header_bytes: &'a [u8],
    pub payload: &'a [u8],
}

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self, what: &'static str) -> Result<u8, PacketError> {
        let b = *self.data.get(self.pos).ok_or(PacketError::Truncated {
            what,
            len: self.data.len(),
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn varint(&mut self, what: &'static str) -> Result<u32, PacketError> {
        let mut v: u64 = 0;
        for i in 0..5 {
            let b = self.byte(what)?;
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return u32::try_from(v).map_err(|_| PacketError::BadVarint { field: what });
            }
        }
        Err(PacketError::BadVarint { field: what })
    }
}

/// Writes the header (without the check value) — the bytes the check value covers.
pub fn write_header_prefix(h: &Header) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.push(MAGIC);
    out.push((h.version << 4) | (h.flags & 0x0f));
    out.extend_from_slice(&h.model_id.0);
    put_varint(&mut out, h.stream_id);
    put_varint(&mut out, h.frame);
    put_varint(&mut out, h.width - 1);
    put_varint(&mut out, h.height - 1);
    out.push(h.stages);
    if let Some(c) = h.colour {
        out.push(c.to_byte());
    }
    if let Some(i) = h.inter {
        put_varint(&mut out, i.reference);
        put_varint(&mut out, i.band_start);
        put_varint(&mut out, i.clean_rows);
    }
    out
}

/// Assembles a packet from a header (whose `check` is used as is) and a payload; computes the
/// packet check.
pub fn write_packet(h: &Header, payload: &[u8]) -> Vec<u8> {
    let mut out = write_header_prefix(h);
    out.extend_from_slice(&h.check.to_le_bytes());
    if let Some(i) = h.inter {
        out.extend_from_slice(&i.check_full.to_le_bytes());
    }
    let crc = packet_check(&out, payload);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The packet check: CRC-32 (IEEE) over the bytes before it (header and check values) followed
/// by the payload, low 16 bits. It rejects a packet damaged in transit for the price of one pass
/// over its bytes, before the prior or the tokenizer run. It is no authentication: anyone can
/// compute it, and what a well-formed packet may cost is bounded by the decoder's limits.
pub fn packet_check(before: &[u8], payload: &[u8]) -> u16 {
    let mut h = crc32fast::Hasher::new();
    h.update(before);
    h.update(payload);
    (h.finalize() & 0xffff) as u16
}

/// Parses a packet. Checks everything that can be checked without the model: magic, version,
/// flags, varints, frame size bounds and the packet check (one CRC pass over the bytes). Stage
/// count, model id and the work limits are checked by the decoder.
pub fn parse_packet(data: &[u8]) -> Result<Packet<'_>, PacketError> {
    let mut r = Reader { data, pos: 0 };
    let magic = r.byte("magic")?;
    if magic != MAGIC {
        return Err(PacketError::BadMagic {
            found: magic,
            expected: MAGIC,
        });
    }
    let vf = r.byte("version")?;
    let (version, flags) = (vf >> 4, vf & 0x0f);
    if version != VERSION {
        return Err(PacketError::UnsupportedVersion {
            found: version,
            supported: VERSION,
        });
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(PacketError::ReservedFlags { flags });
    }
    let mut id = [0u8; 4];
    for b in &mut id {
        *b = r.byte("model id")?;
    }
    let stream_id = r.varint("stream id")?;
    let frame = r.varint("frame counter")?;
    let width = r.varint("width")?.saturating_add(1);
    let height = r.varint("height")?.saturating_add(1);
    let max = max_frame_side(flags & FLAG_DENSE != 0);
    if width > max || height > max {
        return Err(PacketError::BadFrameSize { width, height, max });
    }
    let stages = r.byte("stage count")?;
    let colour = if flags & FLAG_COLOUR != 0 {
        Some(ColourParams::from_byte(r.byte("colour parameters")?)?)
    } else {
        None
    };
    let inter = if flags & FLAG_INTER != 0 {
        Some((
            r.varint("reference frame")?,
            r.varint("band start")?,
            r.varint("clean rows")?,
        ))
    } else {
        None
    };
    let header_end = r.pos;
    let check = u16::from_le_bytes([r.byte("check value")?, r.byte("check value")?]);
    let inter = match inter {
        Some((reference, band_start, clean_rows)) => Some(InterHeader {
            reference,
            band_start,
            clean_rows,
            check_full: u16::from_le_bytes([r.byte("check value")?, r.byte("check value")?]),
        }),
        None => None,
    };
    let checks_end = r.pos;
    let expected = u16::from_le_bytes([r.byte("packet check")?, r.byte("packet check")?]);
    let actual = packet_check(&data[..checks_end], &data[r.pos..]);
    if actual != expected {
        return Err(PacketError::PacketCheckMismatch { expected, actual });
    }
    Ok(Packet {
        header: Header {
            version,
            flags,
            model_id: ModelId(id),
            stream_id,
            frame,
            width,
            height,
            stages,
            colour,
            inter,
            check,
        },
        header_bytes: &data[..header_end],
        payload: &data[r.pos..],
    })
}

/// The check value: CRC-32 over the header bytes before it and the decoded tokens (in coding
/// order, each as u16 little-endian), low 16 bits.
pub fn check_value(header_prefix: &[u8], coded_tokens: impl Iterator<Item = u16>) -> u16 {
    let mut h = crc32fast::Hasher::new();
    h.update(header_prefix);
    for t in coded_tokens {
        h.update(&t.to_le_bytes());
    }
    (h.finalize() & 0xffff) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            version: VERSION,
            flags: 0,
            model_id: ModelId([1, 2, 3, 4]),
            stream_id: 300,
            frame: 70000,
            width: 768,
            height: 512,
            stages: 10,
            colour: None,
            inter: None,
            check: 0xbeef,
        }
    }

    #[test]
    fn round_trip_and_size() {
        let h = header();
        let p = write_packet(&h, &[9, 8, 7]);
        assert_eq!(p.len(), 1 + 1 + 4 + 2 + 3 + 2 + 2 + 1 + 2 + 2 + 3);
        let parsed = parse_packet(&p).unwrap();
        assert_eq!(parsed.header, h);
        assert_eq!(parsed.payload, &[9, 8, 7]);
        assert_eq!(parsed.header_bytes, &write_header_prefix(&h)[..]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let p = write_packet(&header(), &[]);
        for n in 0..p.len() {
            let e = parse_packet(&p[..n]).unwrap_err();
            assert!(matches!(e, PacketError::Truncated { .. }), "{n}: {e:?}");
        }
        assert!(parse_packet(&p).is_ok());
    }

    #[test]
    fn foreign_and_malformed_headers() {
        let mut p = write_packet(&header(), &[1]);
        p[0] = 0x47;
        assert!(matches!(
            parse_packet(&p),
            Err(PacketError::BadMagic { .. })
        ));
        // Version 1 (no packet check) and unknown versions are refused.
        for (byte, found) in [(0x10, 1), (0x30, 3)] {
            let mut p = write_packet(&header(), &[1]);
            p[1] = byte;
            assert_eq!(
                parse_packet(&p),
                Err(PacketError::UnsupportedVersion {
                    found,
                    supported: 2
                })
            );
        }
        // Every flag bit is defined in version 1; an inter header round-trips with its fields.
        let mut h = header();
        h.flags = FLAG_INTER;
        h.inter = Some(InterHeader {
            reference: 69999,
            band_start: 4,
            clean_rows: 6,
            check_full: 0x1234,
        });
        let p = write_packet(&h, &[7, 8]);
        let parsed = parse_packet(&p).unwrap();
        assert_eq!(parsed.header, h);
        assert_eq!(parsed.payload, &[7, 8]);
        // Without its inter fields the packet is truncated, not misread.
        let cut = &p[..write_header_prefix(&h).len() + 1];
        assert!(matches!(
            parse_packet(cut),
            Err(PacketError::Truncated { .. })
        ));
        let mut h = header();
        h.width = MAX_DIMENSION + 1;
        let p = write_packet(&h, &[]);
        assert!(matches!(
            parse_packet(&p),
            Err(PacketError::BadFrameSize { .. })
        ));
        // A varint that never ends.
        let mut p = vec![MAGIC, 0x20, 0, 0, 0, 0];
        p.extend_from_slice(&[0xff; 8]);
        assert!(matches!(
            parse_packet(&p),
            Err(PacketError::BadVarint { .. })
        ));
        // A 5-byte varint above u32::MAX.
        let mut p = vec![MAGIC, 0x20, 0, 0, 0, 0];
        p.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(
            parse_packet(&p),
            Err(PacketError::BadVarint { .. })
        ));
    }

    #[test]
    fn dense_flag_doubles_the_grid() {
        let mut h = header();
        h.width = 17;
        h.height = 9;
        assert_eq!(h.grid(), (1, 2));
        h.flags = FLAG_DENSE;
        assert_eq!(h.coded_size(), (34, 18));
        assert_eq!(h.grid(), (2, 3));
        let p = write_packet(&h, &[1]);
        assert!(parse_packet(&p).unwrap().header.dense());
        // The coded size is bounded: a dense frame may be at most half the largest side.
        h.width = MAX_DIMENSION / 2 + 1;
        assert!(matches!(
            parse_packet(&write_packet(&h, &[1])),
            Err(PacketError::BadFrameSize { max, .. }) if max == MAX_DIMENSION / 2
        ));
        h.flags = 0;
        assert!(parse_packet(&write_packet(&h, &[1])).is_ok());
    }

    #[test]
    fn colour_flag_carries_its_parameter_byte() {
        let mut h = header();
        h.flags = FLAG_COLOUR | FLAG_ADAPTIVE;
        h.colour = Some(ColourParams::new(64, 5).unwrap());
        let p = write_packet(&h, &[7]);
        assert_eq!(p.len(), write_packet(&header(), &[7]).len() + 1);
        let parsed = parse_packet(&p).unwrap();
        assert_eq!(parsed.header, h);
        assert_eq!(parsed.payload, &[7]);
        // The parameter byte is covered by the check value (it is part of the header prefix).
        assert_eq!(parsed.header_bytes, &write_header_prefix(&h)[..]);
        // An undefined block size is refused; a missing byte is a truncation.
        let at = write_header_prefix(&h).len() - 1;
        let mut bad = p.clone();
        bad[at] = 0x07;
        assert!(matches!(parse_packet(&bad), Err(PacketError::BadColour(_))));
        assert!(matches!(
            parse_packet(&p[..at]),
            Err(PacketError::Truncated { .. })
        ));
    }

    #[test]
    fn packet_check_covers_every_byte() {
        let mut h = header();
        h.flags = FLAG_INTER;
        h.inter = Some(InterHeader {
            reference: 1,
            band_start: 0,
            clean_rows: 2,
            check_full: 0x1234,
        });
        for h in [header(), h] {
            let p = write_packet(&h, &[9, 8, 7, 6]);
            let at = p.len() - 4 - 2;
            assert_eq!(
                u16::from_le_bytes([p[at], p[at + 1]]),
                packet_check(&p[..at], &p[at + 2..])
            );
            // Any byte after the magic and version changed: refused by the packet check, unless
            // the header field it hits is refused first (a size or a varint out of range).
            for i in 2..p.len() {
                let mut q = p.clone();
                q[i] ^= 0x01;
                let e = parse_packet(&q).unwrap_err();
                assert!(
                    matches!(
                        e,
                        PacketError::PacketCheckMismatch { .. } | PacketError::Truncated { .. }
                    ),
                    "byte {i}: {e:?}"
                );
            }
            // A payload one byte longer or shorter is refused too.
            let mut q = p.clone();
            q.push(0);
            assert!(matches!(
                parse_packet(&q),
                Err(PacketError::PacketCheckMismatch { .. })
            ));
            assert!(matches!(
                parse_packet(&p[..p.len() - 1]),
                Err(PacketError::PacketCheckMismatch { .. })
            ));
        }
    }

    #[test]
    fn check_value_covers_header_and_tokens() {
        let a = check_value(b"abc", [1u16, 2, 3].into_iter());
        assert_ne!(a, check_value(b"abd", [1u16, 2, 3].into_iter()));
        assert_ne!(a, check_value(b"abc", [1u16, 2, 4].into_iter()));
    }
}
