//! uigc: ultra-low-bitrate image coding. The codec core lives in [`codec`].

pub mod codec;
