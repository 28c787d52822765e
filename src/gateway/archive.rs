//! The gateway's packet archive: one directory per stream, append-only segment files of
//! checksummed records. Plain `std` I/O, no async: the gateway calls it on the receive path,
//! `uigc replay` and the checks read it offline.
//!
//! ```text
//! ROOT/<stream id, 8 hex digits>/<first record's sequence number, 16 hex digits>.uga
//!
//! segment  = magic "UIGCARC1" (8 bytes), then records
//! record   = length u32 LE (payload bytes, 1..=MAX_RECORD)
//!            crc32 u32 LE (over the 8 time bytes and the payload)
//!            receive time u64 LE (microseconds since the Unix epoch)
//!            payload (the packet, exactly as received)
//! ```
//!
//! Each record is written with one `write` call straight to the file (no user-space buffer), so a
//! gateway killed at any point (`kill -9`) leaves every record it had written in the page cache:
//! only power loss can lose the records written since the last fsync ([`FsyncPolicy`]). A crash in
//! the middle of a write leaves a *torn tail*: on opening, the last segment is scanned and cut back
//! to its last complete record with a valid checksum ([`StreamArchive::open`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"UIGCARC1";
/// Bytes of a record before its payload.
pub const RECORD_HEADER: usize = 16;
/// Largest payload a record may hold (a UDP datagram's maximum).
pub const MAX_RECORD: usize = 65_535;
/// File name extension of segments.
pub const SEGMENT_EXT: &str = "uga";

/// When appended records are flushed to the disk (`fsync`). Every policy survives a killed
/// gateway (the records are in the kernel after each write); the policy bounds what a power
/// loss or kernel crash can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// After every record: nothing acknowledged by the archive is lost, at one fsync per packet.
    Always,
    /// At most once per interval per stream (a power loss loses at most the interval's records).
    Interval(Duration),
    /// Never explicitly (the kernel writes back within ~30 s by default).
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            _ => {
                let ms = s.strip_suffix("ms").unwrap_or(s);
                ms.parse::<u64>()
                    .map(|ms| Self::Interval(Duration::from_millis(ms)))
                    .map_err(|_| {
                        format!("fsync policy {s:?}: expected always, never or an interval in ms")
                    })
            }
        }
    }
}

/// Limits of one stream's archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// A segment is closed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Retention: when a stream's segments exceed this size, its oldest segments are deleted
    /// (0: keep everything).
    pub stream_bytes: u64,
    pub fsync: FsyncPolicy,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            stream_bytes: 1 << 30,
            fsync: FsyncPolicy::Interval(Duration::from_millis(1000)),
        }
    }
}

/// One archived packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Receive time, microseconds since the Unix epoch.
    pub time_us: u64,
    pub payload: Vec<u8>,
}

/// CRC-32 of a record's time and payload.
pub fn record_crc(time_us: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&time_us.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// A record's bytes as written to a segment.
pub fn encode_record(time_us: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&record_crc(time_us, payload).to_le_bytes());
    out.extend_from_slice(&time_us.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Records as a `.uigcs` packet stream (each payload preceded by its length, u32 LE): the form
/// `uigc stream-decode` reads and whose SHA-256 `uigc archive-check` prints.
pub fn to_uigcs(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(&(r.payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&r.payload);
    }
    out
}

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The segment ends after a complete record.
    Clean,
    /// Bytes after the last valid record at this offset: an incomplete record (a torn write) or
    /// one whose length or checksum is wrong.
    Invalid { offset: u64, reason: String },
}

/// Reads every valid record of a segment, stopping at the first invalid one.
pub fn read_segment(path: &Path) -> io::Result<(Vec<Record>, Tail)> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(parse_segment(&data))
}

/// Parses a segment's bytes (see [`read_segment`]).
pub fn parse_segment(data: &[u8]) -> (Vec<Record>, Tail) {
    let mut records = Vec::new();
    if data.len() < SEGMENT_MAGIC.len() || &data[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
        let reason = "no segment magic".to_string();
        return (records, Tail::Invalid { offset: 0, reason });
    }
    let mut pos = SEGMENT_MAGIC.len();
    while pos < data.len() {
        let invalid = |reason: &str| Tail::Invalid {
            offset: pos as u64,
            reason: reason.to_string(),
        };
        let Some(head) = data.get(pos..pos + RECORD_HEADER) else {
            return (records, invalid("incomplete record header"));
        };
        let len = u32::from_le_bytes(head[0..4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(head[4..8].try_into().unwrap());
        let time_us = u64::from_le_bytes(head[8..16].try_into().unwrap());
        if len == 0 || len > MAX_RECORD {
            return (records, invalid(&format!("record length {len}")));
        }
        let Some(payload) = data.get(pos + RECORD_HEADER..pos + RECORD_HEADER + len) else {
            return (records, invalid("incomplete record"));
        };
        if record_crc(time_us, payload) != crc {
            return (records, invalid("record checksum mismatch"));
        }
        records.push(Record {
            time_us,
            payload: payload.to_vec(),
        });
        pos += RECORD_HEADER + len;
    }
    (records, Tail::Clean)
}

/// Directory of one stream inside the archive root.
pub fn stream_dir(root: &Path, stream_id: u32) -> PathBuf {
    root.join(format!("{stream_id:08x}"))
}

/// Stream ids present in an archive root, ascending.
pub fn list_streams(root: &Path) -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(root)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if name.len() == 8 {
            if let Ok(id) = u32::from_str_radix(&name, 16) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Segment files of a stream directory with their first sequence numbers, in order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == SEGMENT_EXT) {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned());
            if let Some(seq) = stem.and_then(|s| u64::from_str_radix(&s, 16).ok()) {
                segs.push((seq, path));
            }
        }
    }
    segs.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segs)
}

/// Every valid record of a stream with receive time in `from_us..=to_us`, in order; invalid
/// tails (a torn last record of a live segment) end their segment's part.
pub fn read_stream(
    root: &Path,
    stream_id: u32,
    from_us: u64,
    to_us: u64,
) -> io::Result<Vec<Record>> {
    let mut out = Vec::new();
    for (_, path) in list_segments(&stream_dir(root, stream_id))? {
        let (records, _) = read_segment(&path)?;
        out.extend(
            records
                .into_iter()
                .filter(|r| (from_us..=to_us).contains(&r.time_us)),
        );
    }
    Ok(out)
}

/// What opening a stream's archive found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Records already in the archive.
    pub records: u64,
    pub bytes: u64,
    /// Bytes cut from the end of the last segment (a torn tail), 0 when clean.
    pub truncated_bytes: u64,
}

/// The append side of one stream's archive.
pub struct StreamArchive {
    dir: PathBuf,
    limits: ArchiveLimits,
    file: File,
    /// Size of the open segment.
    segment_len: u64,
    /// Sequence number of the next record.
    next_seq: u64,
    /// Bytes of all segments of the stream.
    total_bytes: u64,
    last_sync: Instant,
    dirty: bool,
    /// A segment was created since the last flush: its directory entry is flushed too.
    dir_dirty: bool,
}

impl StreamArchive {
    /// Opens (or creates) a stream's archive under `root`, cutting a torn tail of its last
    /// segment back to the last valid record.
    pub fn open(
        root: &Path,
        stream_id: u32,
        limits: ArchiveLimits,
    ) -> io::Result<(Self, Recovery)> {
        let dir = stream_dir(root, stream_id);
        fs::create_dir_all(&dir)?;
        let segs = list_segments(&dir)?;
        let mut rec = Recovery::default();
        let mut total_bytes = 0;
        let mut next_seq = 0;
        for (i, (seq, path)) in segs.iter().enumerate() {
            let (records, tail) = read_segment(path)?;
            let mut len = fs::metadata(path)?.len();
            if i + 1 == segs.len() {
                if let Tail::Invalid { offset, .. } = tail {
                    // A torn tail, or a segment file created without its magic.
                    let keep = offset.max(SEGMENT_MAGIC.len() as u64);
                    let f = OpenOptions::new().write(true).open(path)?;
                    if offset < SEGMENT_MAGIC.len() as u64 {
                        f.set_len(0)?;
                        (&f).write_all(SEGMENT_MAGIC)?;
                    }
                    rec.truncated_bytes = len.saturating_sub(keep);
                    f.set_len(keep)?;
                    f.sync_all()?;
                    len = keep;
                }
            }
            rec.records += records.len() as u64;
            rec.bytes += records.iter().map(|r| r.payload.len() as u64).sum::<u64>();
            total_bytes += len;
            next_seq = seq + records.len() as u64;
        }
        let (file, segment_len) = match segs.last() {
            Some((_, path)) => {
                let mut f = OpenOptions::new().append(true).open(path)?;
                let len = f.seek(SeekFrom::End(0))?;
                (f, len)
            }
            None => {
                let f = new_segment(&dir, 0, limits.fsync == FsyncPolicy::Always)?;
                total_bytes += SEGMENT_MAGIC.len() as u64;
                (f, SEGMENT_MAGIC.len() as u64)
            }
        };
        let archive = Self {
            dir,
            limits,
            file,
            segment_len,
            next_seq,
            total_bytes,
            last_sync: Instant::now(),
            dirty: segs.is_empty(),
            dir_dirty: segs.is_empty() && limits.fsync != FsyncPolicy::Always,
        };
        Ok((archive, rec))
    }

    /// Appends one record (one `write` call), rotating segments and applying the retention and
    /// fsync policy. Returns the record's sequence number.
    pub fn append(&mut self, time_us: u64, payload: &[u8]) -> io::Result<u64> {
        if payload.is_empty() || payload.len() > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("record of {} bytes (1..={MAX_RECORD})", payload.len()),
            ));
        }
        if self.segment_len >= self.limits.segment_bytes {
            self.rotate()?;
        }
        let bytes = encode_record(time_us, payload);
        self.file.write_all(&bytes)?;
        self.segment_len += bytes.len() as u64;
        self.total_bytes += bytes.len() as u64;
        self.dirty = true;
        let seq = self.next_seq;
        self.next_seq += 1;
        match self.limits.fsync {
            FsyncPolicy::Always => self.sync()?,
            FsyncPolicy::Interval(d) if self.last_sync.elapsed() >= d => self.sync()?,
            _ => {}
        }
        Ok(seq)
    }

    /// Flushes the open segment to the disk if anything was written since the last flush.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dir_dirty {
            self.file.sync_all()?;
            File::open(&self.dir)?.sync_all()?;
            // The stream's directory may be new as well.
            if let Some(root) = self.dir.parent() {
                File::open(root)?.sync_all()?;
            }
            self.dir_dirty = false;
            self.dirty = false;
        }
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Bytes of all the stream's segments.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Records appended over the archive's life (the next sequence number).
    pub fn records(&self) -> u64 {
        self.next_seq
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.sync()?;
        let always = self.limits.fsync == FsyncPolicy::Always;
        self.file = new_segment(&self.dir, self.next_seq, always)?;
        self.dir_dirty = !always;
        self.dirty = !always;
        self.segment_len = SEGMENT_MAGIC.len() as u64;
        self.total_bytes += self.segment_len;
        if self.limits.stream_bytes > 0 {
            // Retention: drop the oldest closed segments while over the limit.
            let segs = list_segments(&self.dir)?;
            for (_, path) in &segs[..segs.len().saturating_sub(1)] {
                if self.total_bytes <= self.limits.stream_bytes {
                    break;
                }
                let len = fs::metadata(path)?.len();
                fs::remove_file(path)?;
                self.total_bytes -= len;
            }
        }
        Ok(())
    }
}

/// Creates a segment with its magic. With `sync` the file and its directory entry are flushed at
/// once (fsync policy `always`); otherwise the next [`StreamArchive::sync`] does it, so opening a
/// stream never stalls the receive path on the disk.
fn new_segment(dir: &Path, seq: u64, sync: bool) -> io::Result<File> {
    let path = dir.join(format!("{seq:016x}.{SEGMENT_EXT}"));
    let mut f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)?;
    f.write_all(SEGMENT_MAGIC)?;
    if sync {
        f.sync_all()?;
        // The new file's directory entry must survive a power loss too.
        File::open(dir)?.sync_all()?;
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("uigc-archive-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn limits(segment_bytes: u64, stream_bytes: u64) -> ArchiveLimits {
        ArchiveLimits {
            segment_bytes,
            stream_bytes,
            fsync: FsyncPolicy::Never,
        }
    }

    #[test]
    fn records_round_trip_across_segments_and_reopen() {
        let root = tmp("roundtrip");
        let (mut a, rec) = StreamArchive::open(&root, 7, limits(200, 0)).unwrap();
        assert_eq!(rec, Recovery::default());
        let payloads: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 10 + i as usize]).collect();
        for (i, p) in payloads.iter().enumerate() {
            assert_eq!(a.append(1000 + i as u64, p).unwrap(), i as u64);
        }
        drop(a);
        let segs = list_segments(&stream_dir(&root, 7)).unwrap();
        assert!(
            segs.len() > 3,
            "200-byte segments rotate: {} segments",
            segs.len()
        );
        let got = read_stream(&root, 7, 0, u64::MAX).unwrap();
        assert_eq!(got.len(), 20);
        for (i, r) in got.iter().enumerate() {
            assert_eq!((r.time_us, &r.payload), (1000 + i as u64, &payloads[i]));
        }
        assert_eq!(read_stream(&root, 7, 1005, 1009).unwrap().len(), 5);
        // Reopening continues the sequence in the last segment.
        let (mut a, rec) = StreamArchive::open(&root, 7, limits(200, 0)).unwrap();
        assert_eq!((rec.records, rec.truncated_bytes), (20, 0));
        assert_eq!(a.append(5000, b"next").unwrap(), 20);
        assert_eq!(list_streams(&root).unwrap(), vec![7]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn torn_tail_is_cut_back_to_the_last_valid_record() {
        let root = tmp("torn");
        let (mut a, _) = StreamArchive::open(&root, 1, limits(1 << 20, 0)).unwrap();
        for i in 0..5u64 {
            a.append(i, &[i as u8; 30]).unwrap();
        }
        drop(a);
        let (_, seg) = list_segments(&stream_dir(&root, 1)).unwrap().remove(0);
        let clean_len = fs::metadata(&seg).unwrap().len();
        // A write cut short: half a record at the end.
        let half = &encode_record(9, &[9; 30])[..20];
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(half)
            .unwrap();
        let (_, tail) = read_segment(&seg).unwrap();
        assert_eq!(
            tail,
            Tail::Invalid {
                offset: clean_len,
                reason: "incomplete record".into()
            }
        );
        let (mut a, rec) = StreamArchive::open(&root, 1, limits(1 << 20, 0)).unwrap();
        assert_eq!((rec.records, rec.truncated_bytes), (5, 20));
        assert_eq!(fs::metadata(&seg).unwrap().len(), clean_len);
        a.append(6, b"after").unwrap();
        drop(a);
        let got = read_stream(&root, 1, 0, u64::MAX).unwrap();
        assert_eq!(got.len(), 6);
        assert_eq!(got[5].payload, b"after");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_flipped_bit_ends_the_segment_at_that_record() {
        let mut seg = SEGMENT_MAGIC.to_vec();
        for i in 0..4u64 {
            seg.extend(encode_record(i, &[i as u8 + 1; 8]));
        }
        let third = SEGMENT_MAGIC.len() + 2 * (RECORD_HEADER + 8);
        seg[third + RECORD_HEADER + 3] ^= 0x10;
        let (records, tail) = parse_segment(&seg);
        assert_eq!(records.len(), 2);
        assert_eq!(
            tail,
            Tail::Invalid {
                offset: third as u64,
                reason: "record checksum mismatch".into()
            }
        );
        let mut huge = SEGMENT_MAGIC.to_vec();
        huge.extend(&(MAX_RECORD as u32 + 1).to_le_bytes());
        huge.extend([0; 12]);
        assert!(
            matches!(parse_segment(&huge).1, Tail::Invalid { reason, .. } if reason == "record length 65536")
        );
    }

    #[test]
    fn retention_deletes_the_oldest_segments() {
        let root = tmp("retention");
        let (mut a, _) = StreamArchive::open(&root, 3, limits(300, 1000)).unwrap();
        for i in 0..100u64 {
            a.append(i, &[1; 50]).unwrap();
            assert!(
                a.total_bytes() <= 1000 + 300 + 66,
                "{} bytes",
                a.total_bytes()
            );
        }
        drop(a);
        let got = read_stream(&root, 3, 0, u64::MAX).unwrap();
        assert!(
            got.len() < 30 && got.len() >= 10,
            "{} records kept",
            got.len()
        );
        // The newest records are the ones kept.
        assert_eq!(got.last().unwrap().time_us, 99);
        let on_disk: u64 = list_segments(&stream_dir(&root, 3))
            .unwrap()
            .iter()
            .map(|(_, p)| fs::metadata(p).unwrap().len())
            .sum();
        assert!(on_disk <= 1000 + 300 + 66, "{on_disk} bytes on disk");
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn fsync_policy_parses() {
        assert_eq!("always".parse(), Ok(FsyncPolicy::Always));
        assert_eq!("never".parse(), Ok(FsyncPolicy::Never));
        assert_eq!(
            "250ms".parse(),
            Ok(FsyncPolicy::Interval(Duration::from_millis(250)))
        );
        assert!("often".parse::<FsyncPolicy>().is_err());
    }
}
