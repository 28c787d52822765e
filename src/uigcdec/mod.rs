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
 * the stream goes on. `frames-decoded`, `frames-dropped` and `frames-lost` (gaps in the frame
 * counter of each sender's stream id) count what happened.
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

/// Counts frames lost on the link from the frame counters of one sender.
#[derive(Debug, Default)]
pub(crate) struct LossCounter {
    last: std::collections::HashMap<u32, u32>,
}

impl LossCounter {
    /// Largest backwards step taken as a late (reordered) packet rather than a restarted sender.
    const REORDER_WINDOW: u32 = 64;

    /// Records packet `frame` of `stream`; returns the change of the lost-frame count (a late
    /// packet that was counted lost gives -1).
    pub(crate) fn record(&mut self, stream: u32, frame: u32) -> i64 {
        let Some(last) = self.last.get_mut(&stream) else {
            self.last.insert(stream, frame);
            return 0;
        };
        let ahead = frame.wrapping_sub(*last);
        if ahead == 0 {
            // Duplicate.
            0
        } else if ahead < 1 << 31 {
            *last = frame;
            i64::from(ahead - 1)
        } else if ahead.wrapping_neg() <= Self::REORDER_WINDOW {
            // Arrived late: it was counted as lost when its successor came.
            -1
        } else {
            // The sender restarted its counter.
            *last = frame;
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LossCounter;

    #[test]
    fn counts_gaps_per_stream() {
        let mut c = LossCounter::default();
        let lost: i64 = [(0, 0), (0, 1), (0, 4), (1, 7), (1, 8), (0, 5), (1, 10)]
            .into_iter()
            .map(|(s, f)| c.record(s, f))
            .sum();
        assert_eq!(lost, 3);
    }

    #[test]
    fn wraps_reorders_and_restarts() {
        let mut c = LossCounter::default();
        assert_eq!(c.record(0, u32::MAX), 0);
        assert_eq!(c.record(0, 1), 1); // 0 lost across the wrap
        assert_eq!(c.record(0, 0), -1); // ... then it arrived late
        assert_eq!(c.record(0, 1), 0); // duplicate
        assert_eq!(c.record(0, 5000), 4998);
        assert_eq!(c.record(0, 3), 0); // restart
        assert_eq!(c.record(0, 4), 0);
    }
}
