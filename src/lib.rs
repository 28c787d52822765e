//! uigc: ultra-low-bitrate image coding. The codec core lives in [`codec`]; the GStreamer
//! plugin `uigc` (elements `uigcenc` and `uigcdec`, thin shells around [`codec::Model`]) is
//! registered below.
#![allow(unused_doc_comments)]

pub mod codec;
#[cfg(feature = "gateway")]
pub mod gateway;
pub mod linksim;

/**
 * plugin-uigc:
 *
 * Ultra-low-bitrate image coding (VQ tokenizer + multi-stage prior): one frame is one packet of
 * a few hundred bytes, carried in one UDP datagram.
 */
#[cfg(feature = "gst")]
use gst::glib;

#[cfg(feature = "gst")]
mod element;
#[cfg(feature = "gst")]
mod uigcdec;
#[cfg(feature = "gst")]
mod uigcenc;
#[cfg(feature = "gst")]
mod uigcparse;
#[cfg(feature = "gst")]
mod uigcsrc;

#[cfg(feature = "gst")]
fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    uigcenc::register(plugin)?;
    uigcdec::register(plugin)?;
    uigcparse::register(plugin)?;
    uigcsrc::register(plugin)?;
    Ok(())
}

#[cfg(feature = "gst")]
gst::plugin_define!(
    uigc,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    env!("CARGO_PKG_VERSION"),
    // GStreamer's name for the MIT licence (the crate is MIT OR Apache-2.0).
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    "2026-11-25"
);
