// SPDX-License-Identifier: MIT OR Apache-2.0

/**
 * element-uigcparse:
 * @short_description: uigc packet checker: drops invalid datagrams at line rate, passes valid ones.
 *
 * Checks each buffer (one datagram) the way `uigcdec` does before any decoding work, without a
 * model: the size (`max-size`), the header and the packet check (one CRC pass over the bytes:
 * docs/bitstream.md) and the limits that bound the work of a packet (`max-pixels`,
 * `work-limit`, as `uigcdec`'s). A valid packet is pushed on unchanged; an invalid one is
 * dropped and counted (`packets-corrupt`, `packets-over-limits`, `packets-too-big`). A check
 * costs well under a microsecond, no prior and no network run.
 *
 * Put it between `udpsrc` and a `queue` in front of `uigcdec`: the socket is then drained in
 * `udpsrc`'s thread at the rate datagrams arrive, while the decoder works in the queue's thread.
 * Without it, `udpsrc ! uigcdec` reads the socket only between two decodes, and a flood of
 * garbage fills the socket's receive buffer while a valid frame decodes, so the kernel drops
 * valid packets with the garbage (docs/reliability.md, "Floods on the network").
 *
 * ## Example pipelines
 * ```bash
 * gst-launch-1.0 udpsrc port=5600 buffer-size=4194304 ! uigcparse \
 *   ! queue max-size-buffers=64 max-size-bytes=0 max-size-time=0 leaky=downstream \
 *   ! uigcdec ! videoconvert ! autovideosink
 * ```
 *
 * Since: 0.1
 */
use gst::glib;
use gst::prelude::*;

pub(crate) mod check;
mod imp;

glib::wrapper! {
    pub struct UigcParse(ObjectSubclass<imp::UigcParse>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Rank none: placed by hand in a receiver pipeline (its output caps are its input caps, so
    // an autoplugger gains nothing from it).
    gst::Element::register(
        Some(plugin),
        "uigcparse",
        gst::Rank::NONE,
        UigcParse::static_type(),
    )
}
