// SPDX-License-Identifier: MIT OR Apache-2.0

/**
 * element-uigcsrc:
 * @short_description: UDP source for uigc packets that drops invalid datagrams before they become buffers.
 *
 * Receives uigc packets on a UDP port, like `udpsrc`, and checks every datagram as `uigcparse`
 * does (size, header, packet check, `max-pixels`, `work-limit`) in its receiving loop: an
 * invalid datagram costs one receive call and one CRC pass and never becomes a buffer; valid
 * packets are pushed, one per buffer, timestamped on arrival (a live source).
 *
 * Why not `udpsrc ! uigcparse`: `udpsrc` pays a poll, a buffer allocation and a push for every
 * datagram, and on a loaded 2-core machine drains about half the datagrams one flooding process
 * sends on loopback; the kernel then drops the rest, valid packets with them. This source reads
 * the same flood several times faster (docs/reliability.md, "Floods on the network"). Put a
 * `queue` behind it so that decoding runs in another thread and the socket is always drained.
 *
 * ## Example pipelines
 * ```bash
 * gst-launch-1.0 uigcsrc port=5600 \
 *   ! queue max-size-buffers=64 max-size-bytes=0 max-size-time=0 leaky=downstream \
 *   ! uigcdec ! videoconvert ! autovideosink
 * ```
 *
 * Since: 0.1
 */
use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct UigcSrc(ObjectSubclass<imp::UigcSrc>) @extends gst_base::PushSrc, gst_base::BaseSrc, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "uigcsrc",
        gst::Rank::NONE,
        UigcSrc::static_type(),
    )
}
