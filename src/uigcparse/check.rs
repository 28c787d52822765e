// SPDX-License-Identifier: MIT OR Apache-2.0

//! The packet check `uigcparse` and `uigcsrc` share: settings, counters, properties and the
//! `*-stats` message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gst::glib;
use gst::prelude::*;

use crate::codec::{self, PacketError};
use crate::element::lock;

const DEFAULT_MAX_PIXELS: u64 = codec::DEFAULT_MAX_PIXELS;
const DEFAULT_WORK_LIMIT: u64 = codec::DEFAULT_WORK_LIMIT;
/// The largest UDP payload: no datagram is refused for its size by default.
const DEFAULT_MAX_SIZE: u32 = 65_507;
const DEFAULT_STATS_INTERVAL: u32 = 0;

#[derive(Debug, Clone, Copy)]
struct Settings {
    max_pixels: u64,
    work_limit: u64,
    max_size: u32,
    stats_interval: u32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_pixels: DEFAULT_MAX_PIXELS,
            work_limit: DEFAULT_WORK_LIMIT,
            max_size: DEFAULT_MAX_SIZE,
            stats_interval: DEFAULT_STATS_INTERVAL,
        }
    }
}

/// Why a datagram was dropped.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Larger than `max-size`.
    TooBig(usize),
    /// Not a packet: header, version or packet check (`bitstream::parse_packet`).
    Corrupt(PacketError),
    /// A valid packet above `max-pixels` or the work limit.
    OverLimits(PacketError),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooBig(n) => write!(f, "{n} bytes, above max-size"),
            Refusal::Corrupt(e) => write!(f, "corrupt: {e}"),
            Refusal::OverLimits(e) => write!(f, "over the limits: {e}"),
        }
    }
}

/// The counters (atomics: read by the property getters from any thread).
#[derive(Debug, Default)]
struct Counts {
    passed: AtomicU64,
    corrupt: AtomicU64,
    over_limits: AtomicU64,
    too_big: AtomicU64,
    bytes_dropped: AtomicU64,
}

/// Settings, counters and the stats clock of one element's packet check.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    settings: Mutex<Settings>,
    counts: Counts,
    last_stats: Mutex<Option<Instant>>,
}

fn counter(name: &str, nick: &str, blurb: &str) -> glib::ParamSpec {
    glib::ParamSpecUInt64::builder(name)
        .nick(nick)
        .blurb(blurb)
        .read_only()
        .build()
}

impl Checker {
    /// The properties of the check: limits, `stats-interval` and the read-only counters.
    pub(crate) fn properties() -> Vec<glib::ParamSpec> {
        vec![
            glib::ParamSpecUInt64::builder("max-pixels")
                .nick("Max pixels")
                .blurb(
                    "Largest frame passed on (width x height; twice each side for a dense \
                     packet), as uigcdec's max-pixels",
                )
                .minimum(1)
                .default_value(DEFAULT_MAX_PIXELS)
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt64::builder("work-limit")
                .nick("Work limit")
                .blurb(
                    "Tokens a packet may make the decoder work on whatever its size; above it, \
                     one token per byte of the packet (as uigcdec's work-limit)",
                )
                .default_value(DEFAULT_WORK_LIMIT)
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt::builder("max-size")
                .nick("Max size")
                .blurb("Largest datagram passed on, in bytes")
                .minimum(1)
                .default_value(DEFAULT_MAX_SIZE)
                .mutable_playing()
                .build(),
            glib::ParamSpecUInt::builder("stats-interval")
                .nick("Stats interval")
                .blurb(
                    "Post an element message with every counter (`uigcparse-stats` / \
                     `uigcsrc-stats`) at most this often (milliseconds, checked when a datagram \
                     arrives) and at the end of the stream (0: only at the end)",
                )
                .default_value(DEFAULT_STATS_INTERVAL)
                .mutable_playing()
                .build(),
            counter(
                "packets-passed",
                "Packets passed",
                "Valid packets pushed downstream",
            ),
            counter(
                "packets-dropped",
                "Packets dropped",
                "Datagrams dropped, for any reason (the sum of the three below)",
            ),
            counter(
                "packets-corrupt",
                "Corrupt packets",
                "Datagrams dropped as no valid packet: header, version or packet check",
            ),
            counter(
                "packets-over-limits",
                "Packets over the limits",
                "Valid packets dropped for max-pixels or the work limit",
            ),
            counter(
                "packets-too-big",
                "Packets too big",
                "Datagrams dropped for max-size",
            ),
            counter(
                "bytes-dropped",
                "Bytes dropped",
                "Bytes of the datagrams dropped",
            ),
        ]
    }

    /// Sets one of [`Self::properties`]; false for another name.
    pub(crate) fn set_property(&self, name: &str, value: &glib::Value) -> bool {
        let mut s = lock(&self.settings);
        match name {
            "max-pixels" => s.max_pixels = value.get().expect("type checked upstream"),
            "work-limit" => s.work_limit = value.get().expect("type checked upstream"),
            "max-size" => s.max_size = value.get().expect("type checked upstream"),
            "stats-interval" => s.stats_interval = value.get().expect("type checked upstream"),
            _ => return false,
        }
        true
    }

    /// Reads one of [`Self::properties`]; None for another name.
    pub(crate) fn property(&self, name: &str) -> Option<glib::Value> {
        let s = *lock(&self.settings);
        let c = &self.counts;
        Some(match name {
            "max-pixels" => s.max_pixels.to_value(),
            "work-limit" => s.work_limit.to_value(),
            "max-size" => s.max_size.to_value(),
            "stats-interval" => s.stats_interval.to_value(),
            "packets-passed" => c.passed.load(Ordering::Relaxed).to_value(),
            "packets-dropped" => self.dropped().to_value(),
            "packets-corrupt" => c.corrupt.load(Ordering::Relaxed).to_value(),
            "packets-over-limits" => c.over_limits.load(Ordering::Relaxed).to_value(),
            "packets-too-big" => c.too_big.load(Ordering::Relaxed).to_value(),
            "bytes-dropped" => c.bytes_dropped.load(Ordering::Relaxed).to_value(),
            _ => return None,
        })
    }

    fn dropped(&self) -> u64 {
        let c = &self.counts;
        c.corrupt.load(Ordering::Relaxed)
            + c.over_limits.load(Ordering::Relaxed)
            + c.too_big.load(Ordering::Relaxed)
    }

    /// Zeroes the counters (a new start).
    pub(crate) fn reset(&self) {
        let c = &self.counts;
        for c in [
            &c.passed,
            &c.corrupt,
            &c.over_limits,
            &c.too_big,
            &c.bytes_dropped,
        ] {
            c.store(0, Ordering::Relaxed);
        }
        *lock(&self.last_stats) = None;
    }

    /// Checks one datagram and counts it: Ok when it is a packet a decoder with these limits
    /// may work on. The first refusal of each kind is a warning in the log (category `cat`),
    /// the rest debug lines: a flood must not become a flood of log lines.
    pub(crate) fn check(
        &self,
        data: &[u8],
        cat: gst::DebugCategory,
        obj: &impl IsA<gst::Object>,
    ) -> Result<(), Refusal> {
        let s = *lock(&self.settings);
        let verdict = if data.len() > s.max_size as usize {
            Err(Refusal::TooBig(data.len()))
        } else {
            match codec::bitstream::parse_packet(data) {
                Ok(p) => codec::check_work(&p.header, data.len(), s.max_pixels, s.work_limit)
                    .map_err(Refusal::OverLimits),
                Err(e) => Err(Refusal::Corrupt(e)),
            }
        };
        let c = &self.counts;
        match &verdict {
            Ok(()) => {
                c.passed.fetch_add(1, Ordering::Relaxed);
            }
            Err(r) => {
                let n = match r {
                    Refusal::TooBig(_) => &c.too_big,
                    Refusal::Corrupt(_) => &c.corrupt,
                    Refusal::OverLimits(_) => &c.over_limits,
                }
                .fetch_add(1, Ordering::Relaxed);
                c.bytes_dropped
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                if n == 0 {
                    gst::warning!(
                        cat,
                        obj = obj,
                        "Dropped a {}-byte datagram ({r}); further drops are counted",
                        data.len()
                    );
                } else {
                    gst::debug!(
                        cat,
                        obj = obj,
                        "Dropped a {}-byte datagram ({r})",
                        data.len()
                    );
                }
            }
        }
        verdict
    }

    /// The counters as a structure named `name`, when `stats-interval` has passed since the
    /// last one (the first call starts the clock).
    pub(crate) fn stats_due(&self, name: &str) -> Option<gst::Structure> {
        let interval = lock(&self.settings).stats_interval;
        if interval == 0 {
            return None;
        }
        let now = Instant::now();
        let mut last = lock(&self.last_stats);
        match *last {
            Some(t) if now.duration_since(t) < Duration::from_millis(interval.into()) => None,
            Some(_) => {
                *last = Some(now);
                drop(last);
                Some(self.stats(name))
            }
            None => {
                *last = Some(now);
                None
            }
        }
    }

    /// The counters as a structure named `name`.
    pub(crate) fn stats(&self, name: &str) -> gst::Structure {
        let c = &self.counts;
        gst::Structure::builder(name)
            .field("packets-passed", c.passed.load(Ordering::Relaxed))
            .field("packets-dropped", self.dropped())
            .field("packets-corrupt", c.corrupt.load(Ordering::Relaxed))
            .field("packets-over-limits", c.over_limits.load(Ordering::Relaxed))
            .field("packets-too-big", c.too_big.load(Ordering::Relaxed))
            .field("bytes-dropped", c.bytes_dropped.load(Ordering::Relaxed))
            .build()
    }
}
