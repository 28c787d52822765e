// SPDX-License-Identifier: MIT OR Apache-2.0

/**
 * element-uigcdec:
 * @short_description: uigc ultra-low-bitrate image decoder: one packet in, one RGB frame out.
 *
 * Decodes uigc packets (docs/bitstream.md), one packet per buffer as `udpsrc` delivers one
 * datagram per buffer, into RGB frames of the size the packet names; the output renegotiates
 * when that size changes. Stages the sender did not send are regenerated from the prior.
 *
 * A corrupt, truncated, foreign or wrong-model packet is dropped with a weighted decoder error
 * (a warning in the log; the base class's `max-errors` decides when to give up, -1 = never) and
 * the stream goes on. `frames-decoded`, `frames-dropped`, `frames-lost` (gaps in the frame
 * counter of each sender's stream id), `frames-late` and `frames-duplicate` (reordered and
 * repeated packets, dropped without decoding) count what happened. A receiver that cannot keep
 * up with a live input says so: a bus warning, a QoS message, `frames-behind` and `busy`.
 *
 * ## Example pipelines
 * ```bash
 * # UDP -> screen
 * gst-launch-1.0 udpsrc port=5600 ! uigcdec ! videoconvert ! autovideosink
 * # UDP -> file
 * gst-launch-1.0 -e udpsrc port=5600 ! uigcdec ! videoconvert ! x264enc tune=zerolatency \
 *   ! mp4mux ! filesink location=received.mp4
 * ```
 *
 * Since: 0.1
 */
use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct UigcDec(ObjectSubclass<imp::UigcDec>) @extends gst_video::VideoDecoder, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "uigcdec",
        gst::Rank::PRIMARY,
        UigcDec::static_type(),
    )
}

/// How a packet's frame counter relates to what its stream delivered before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arrival {
    /// The first packet of the stream, the next frame, or one after a gap of `lost` frames (a
    /// sender restart counts as a new start).
    New { lost: u32 },
    /// Older than the newest frame already received and not received before (reordered on
    /// the link): too late to be shown. `was_lost`: it was counted lost when a successor
    /// arrived (false for a frame from before the first packet heard).
    Late { was_lost: bool },
    /// A frame already received (duplicated on the link).
    Duplicate,
}

fn shl(x: u64, n: u32) -> u64 {
    x.checked_shl(n).unwrap_or(0)
}

/// What one sender's frame counters delivered: the newest frame and, for the [`Self::WINDOW`]
/// frames before it, which arrived and which were counted lost. Tells new, late and duplicated
/// packets apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Seen {
    last: u32,
    /// Bit `i`: frame `last - 1 - i` arrived.
    received: u64,
    /// Bit `i`: frame `last - 1 - i` was counted lost.
    lost: u64,
}

impl Seen {
    /// Largest backwards step taken as a late (reordered) packet rather than a restarted sender.
    pub(crate) const WINDOW: u32 = 64;

    pub(crate) fn new(frame: u32) -> Self {
        Self {
            last: frame,
            received: 0,
            lost: 0,
        }
    }

    /// Classifies packet `frame` without recording it.
    pub(crate) fn classify(&self, frame: u32) -> Arrival {
        let ahead = frame.wrapping_sub(self.last);
        let back = ahead.wrapping_neg();
        if ahead == 0 {
            Arrival::Duplicate
        } else if ahead < 1 << 31 {
            Arrival::New { lost: ahead - 1 }
        } else if back <= Self::WINDOW {
            let bit = 1u64 << (back - 1);
            if self.received & bit != 0 {
                Arrival::Duplicate
            } else {
                Arrival::Late {
                    was_lost: self.lost & bit != 0,
                }
            }
        } else {
            // The sender restarted its counter.
            Arrival::New { lost: 0 }
        }
    }

    /// Records packet `frame` as received; returns its classification.
    pub(crate) fn record(&mut self, frame: u32) -> Arrival {
        let a = self.classify(frame);
        let ahead = frame.wrapping_sub(self.last);
        match a {
            Arrival::New { .. } if ahead < 1 << 31 => {
                // The old newest frame arrived; the ones between it and `frame` did not.
                let old = shl(1, ahead - 1);
                self.received = shl(self.received, ahead) | old;
                self.lost = shl(self.lost, ahead) | old.wrapping_sub(1);
                self.last = frame;
            }
            Arrival::New { .. } => *self = Self::new(frame),
            Arrival::Late { .. } => {
                let bit = 1u64 << (ahead.wrapping_neg() - 1);
                self.received |= bit;
                self.lost &= !bit;
            }
            Arrival::Duplicate => {}
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::{Arrival, Seen};

    fn lost(a: Arrival) -> u32 {
        match a {
            Arrival::New { lost } => lost,
            _ => 0,
        }
    }

    #[test]
    fn counts_gaps() {
        let mut s = Seen::new(0);
        let total: u32 = [1, 4, 5, 8].into_iter().map(|f| lost(s.record(f))).sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn wraps_reorders_duplicates_and_restarts() {
        let mut s = Seen::new(u32::MAX);
        assert_eq!(s.record(1), Arrival::New { lost: 1 }); // 0 lost across the wrap
        assert_eq!(s.record(0), Arrival::Late { was_lost: true }); // ... then it arrived late
        assert_eq!(s.record(0), Arrival::Duplicate); // a late one again
        assert_eq!(s.record(1), Arrival::Duplicate);
        assert_eq!(s.record(u32::MAX), Arrival::Duplicate);
        // Before the first packet heard: late, but never counted lost.
        assert_eq!(s.record(u32::MAX - 1), Arrival::Late { was_lost: false });
        assert_eq!(s.record(5000), Arrival::New { lost: 4998 });
        assert_eq!(s.record(4999 - 63), Arrival::Late { was_lost: true }); // oldest of the window
        assert_eq!(s.record(4999 - 64), Arrival::New { lost: 0 }); // restart
        assert_eq!(s.record(4999 - 63), Arrival::New { lost: 0 });
        assert_eq!(s.classify(4999 - 64), Arrival::Duplicate);
    }

    #[test]
    fn window_edges() {
        let mut s = Seen::new(10);
        assert_eq!(s.record(10 + 64), Arrival::New { lost: 63 });
        assert_eq!(s.classify(10), Arrival::Duplicate); // oldest bit of the window
        assert_eq!(s.classify(11), Arrival::Late { was_lost: true });
        assert_eq!(s.record(10 + 64 + 65), Arrival::New { lost: 64 });
        assert_eq!(s.classify(10 + 64), Arrival::New { lost: 0 }); // out of the window: restart
        assert_eq!(s.classify(10 + 64 + 1), Arrival::Late { was_lost: true });
    }
}
