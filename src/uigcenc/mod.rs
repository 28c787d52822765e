// SPDX-License-Identifier: MIT OR Apache-2.0

/**
 * element-uigcenc:
 * @short_description: uigc ultra-low-bitrate image encoder: one raw frame in, one packet out.
 *
 * Encodes each raw video frame into one self-contained uigc packet (docs/bitstream.md): the
 * frame is tokenized by the model's VQ tokenizer and the tokens are range-coded with the model's
 * multi-stage prior. Every packet is a sync point (intra-only), so one UDP datagram carries one
 * frame and a lost datagram costs exactly one frame.
 *
 * The sink pad takes RGB and the formats cameras give (I420, NV12, YUY2, BGRx, ...) at any size
 * up to 8192x8192; anything that is not RGB is converted internally. The source pad gives
 * `video/x-uigc`. With `keep`, `max-frame-bytes` or `target-bitrate` the encoder sends fewer
 * stages of the schedule and the decoder regenerates the rest; a frame that fits no budget even
 * with no stage is dropped with a warning (counted in `frames-dropped`). With `qos=true` (the
 * default here) frames that are already late downstream are dropped instead of queued.
 *
 * ## Example pipelines
 * ```bash
 * # camera -> UDP
 * gst-launch-1.0 v4l2src ! videoconvert ! uigcenc ! udpsink host=127.0.0.1 port=5600
 * # test source, at most 1500 bytes per frame, 20 kbit/s
 * gst-launch-1.0 videotestsrc is-live=true ! video/x-raw,width=640,height=480,framerate=5/1 \
 *   ! uigcenc model=tests/data/tiny-model target-bitrate=20000 max-frame-bytes=1500 \
 *   ! udpsink host=127.0.0.1 port=5600
 * ```
 *
 * Since: 0.1
 */
use gst::glib;
use gst::prelude::*;

use crate::codec;
use crate::element::ExecutionProvider;

mod imp;

glib::wrapper! {
    pub struct UigcEnc(ObjectSubclass<imp::UigcEnc>) @extends gst_video::VideoEncoder, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    ExecutionProvider::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    Keep::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    Density::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(
        Some(plugin),
        "uigcenc",
        gst::Rank::PRIMARY,
        UigcEnc::static_type(),
    )
}

/// Which share of the token grid the encoder sends; the decoder regenerates the rest.
#[derive(Debug, Eq, PartialEq, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstUigcKeep")]
pub(crate) enum Keep {
    #[default]
    #[enum_value(name = "All: every stage of the schedule", nick = "all")]
    All,
    #[enum_value(name = "Half: 1/2 of the tokens", nick = "half")]
    Half,
    #[enum_value(name = "Quarter: 1/4 of the tokens", nick = "quarter")]
    Quarter,
    #[enum_value(name = "Eighth: 1/8 of the tokens", nick = "eighth")]
    Eighth,
    #[enum_value(name = "Sixteenth: 1/16 of the tokens", nick = "sixteenth")]
    Sixteenth,
    #[enum_value(name = "Thirty-second: 1/32 of the tokens", nick = "thirty-second")]
    ThirtySecond,
    #[enum_value(
        name = "Sixty-fourth: 1/64 of the tokens (the coarsest lattice)",
        nick = "sixty-fourth"
    )]
    SixtyFourth,
    #[enum_value(
        name = "None: no token, the decoder generates the whole frame",
        nick = "none"
    )]
    None,
}

/// Number of schedule stages (a prefix) that codes the share `keep` of the tokens with an
/// `interleave2x2` schedule of `levels` levels (1 + 3 * levels stages). Stage 0 is the lattice of
/// step 2^levels (1/4^levels of the tokens); within level l the three stages each add 1/4^l. With
/// levels = 3: all = 10, half = 8, quarter = 7, eighth = 5, sixteenth = 4, thirty-second = 2,
/// sixty-fourth = 1, none = 0. Shares finer than the lattice give 1 stage.
#[derive(Debug, Eq, PartialEq, Clone, Copy, Default, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstUigcDensity")]
pub(crate) enum Density {
    #[enum_value(name = "Normal: one token per 16x16 pixels", nick = "normal")]
    Normal,
    #[enum_value(
        name = "Dense: four tokens per 16x16 pixels (the bundle's dense graphs, else the frame at twice its size; about 4x the bytes)",
        nick = "dense"
    )]
    Dense,
    #[default]
    #[enum_value(
        name = "Auto: dense only when the byte budget leaves room for it",
        nick = "auto"
    )]
    Auto,
}

impl From<Density> for codec::Density {
    fn from(d: Density) -> Self {
        match d {
            Density::Normal => codec::Density::Normal,
            Density::Dense => codec::Density::Dense,
            Density::Auto => codec::Density::Auto,
        }
    }
}

pub(crate) fn keep_to_stages(keep: Keep, levels: u8) -> usize {
    let Some(schedule) = codec::schedule::Schedule::new(levels) else {
        return 1;
    };
    // keep = 1 / 2^e; the mapping is the core's. Finer than the coarsest stage: one stage.
    let e = match keep {
        Keep::None => return 0,
        Keep::All => 0,
        Keep::Half => 1,
        Keep::Quarter => 2,
        Keep::Eighth => 3,
        Keep::Sixteenth => 4,
        Keep::ThirtySecond => 5,
        Keep::SixtyFourth => 6,
    };
    schedule.stages_for_fraction(e).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_maps_to_stage_counts_of_three_levels() {
        let got: Vec<usize> = [
            Keep::All,
            Keep::Half,
            Keep::Quarter,
            Keep::Eighth,
            Keep::Sixteenth,
            Keep::ThirtySecond,
            Keep::SixtyFourth,
            Keep::None,
        ]
        .into_iter()
        .map(|k| keep_to_stages(k, 3))
        .collect();
        assert_eq!(got, vec![10, 8, 7, 5, 4, 2, 1, 0]);
    }

    #[test]
    fn keep_clamps_to_the_lattice() {
        assert_eq!(keep_to_stages(Keep::All, 1), 4);
        assert_eq!(keep_to_stages(Keep::Half, 1), 2);
        assert_eq!(keep_to_stages(Keep::Quarter, 1), 1);
        assert_eq!(keep_to_stages(Keep::SixtyFourth, 1), 1);
        assert_eq!(keep_to_stages(Keep::None, 1), 0);
    }
}
