// SPDX-License-Identifier: MIT OR Apache-2.0

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use gst_base::prelude::*;
use gst_base::subclass::base_src::CreateSuccess;
use gst_base::subclass::prelude::*;

use crate::element::lock;
use crate::uigcparse::check::Checker;

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "uigcsrc",
        gst::DebugColorFlags::empty(),
        Some("uigc UDP source"),
    )
});

const STATS: &str = "uigcsrc-stats";
const DEFAULT_ADDRESS: &str = "0.0.0.0";
const DEFAULT_PORT: i32 = 5600;
/// 4 MiB: a few seconds of a flood at line rate while the loop is descheduled (the system caps
/// it at net.core.rmem_max).
const DEFAULT_BUFFER_SIZE: i32 = 4 << 20;
/// How often a blocked receive looks whether the element is flushing or stopping.
const WAKE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
struct Settings {
    address: String,
    port: i32,
    buffer_size: i32,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            address: DEFAULT_ADDRESS.into(),
            port: DEFAULT_PORT,
            buffer_size: DEFAULT_BUFFER_SIZE,
        }
    }
}

#[derive(Default)]
pub struct UigcSrc {
    settings: Mutex<Settings>,
    checker: Checker,
    socket: Mutex<Option<Arc<UdpSocket>>>,
    flushing: AtomicBool,
}

impl UigcSrc {
    fn post(&self, st: gst::Structure) {
        let obj = self.obj();
        let _ = obj.post_message(gst::message::Element::builder(st).src(&*obj).build());
    }

    fn bind(s: &Settings) -> Result<(UdpSocket, usize), String> {
        let ip: IpAddr = s
            .address
            .parse()
            .map_err(|e| format!("address {:?}: {e}", s.address))?;
        let addr = SocketAddr::new(ip, s.port as u16);
        let domain = socket2::Domain::for_address(addr);
        let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))
            .map_err(|e| format!("socket: {e}"))?;
        if s.buffer_size > 0 {
            sock.set_recv_buffer_size(s.buffer_size as usize)
                .map_err(|e| format!("buffer-size {}: {e}", s.buffer_size))?;
        }
        sock.bind(&addr.into())
            .map_err(|e| format!("cannot bind {addr}: {e}"))?;
        sock.set_read_timeout(Some(WAKE))
            .map_err(|e| format!("read timeout: {e}"))?;
        let got = sock.recv_buffer_size().unwrap_or(0);
        Ok((sock.into(), got))
    }
}

#[glib::object_subclass]
impl ObjectSubclass for UigcSrc {
    const NAME: &'static str = "GstUigcSrc";
    type Type = super::UigcSrc;
    type ParentType = gst_base::PushSrc;
}

impl ObjectImpl for UigcSrc {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            let mut p = vec![
                glib::ParamSpecString::builder("address")
                    .nick("Address")
                    .blurb("Local address to listen on (0.0.0.0, ::, 127.0.0.1, ...)")
                    .default_value(Some(DEFAULT_ADDRESS))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("port")
                    .nick("Port")
                    .blurb(
                        "UDP port to listen on (0: the system picks one; read back once started)",
                    )
                    .minimum(0)
                    .maximum(65535)
                    .default_value(DEFAULT_PORT)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt::builder("buffer-size")
                    .nick("Buffer size")
                    .blurb(
                        "Receive buffer of the socket in bytes (0: the system's default; the \
                         system caps it at net.core.rmem_max)",
                    )
                    .minimum(0)
                    .default_value(DEFAULT_BUFFER_SIZE)
                    .mutable_ready()
                    .build(),
            ];
            p.extend(Checker::properties());
            p
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        if self.checker.set_property(pspec.name(), value) {
            return;
        }
        let mut s = lock(&self.settings);
        match pspec.name() {
            "address" => {
                s.address = crate::element::string_or(value, DEFAULT_ADDRESS);
            }
            "port" => s.port = value.get().expect("type checked upstream"),
            "buffer-size" => s.buffer_size = value.get().expect("type checked upstream"),
            other => unimplemented!("property {other}"),
        }
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        if let Some(v) = self.checker.property(pspec.name()) {
            return v;
        }
        let s = lock(&self.settings);
        match pspec.name() {
            "address" => s.address.to_value(),
            "port" => s.port.to_value(),
            "buffer-size" => s.buffer_size.to_value(),
            other => unimplemented!("property {other}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.set_live(true);
        obj.set_format(gst::Format::Time);
        obj.set_do_timestamp(true);
    }
}

impl GstObjectImpl for UigcSrc {}

impl ElementImpl for UigcSrc {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "uigc UDP source",
                "Source/Network",
                "Receives uigc packets over UDP and drops invalid datagrams (size, header, packet \
                 check, work limits) in its receiving loop, before they become buffers",
                "uigc developers",
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            vec![gst::PadTemplate::new(
                "src",
                gst::PadDirection::Src,
                gst::PadPresence::Always,
                &gst::Caps::builder("video/x-uigc").build(),
            )
            .unwrap()]
        });
        PAD_TEMPLATES.as_ref()
    }
}

impl BaseSrcImpl for UigcSrc {
    fn start(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let (sock, got) = Self::bind(&settings)
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ("uigcsrc: {e}")))?;
        let local = sock
            .local_addr()
            .map_err(|e| gst::error_msg!(gst::ResourceError::OpenRead, ("uigcsrc: {e}")))?;
        gst::info!(
            CAT,
            imp = self,
            "Listening on {local}, receive buffer {got} bytes (asked {})",
            settings.buffer_size
        );
        lock(&self.settings).port = i32::from(local.port());
        self.checker.reset();
        self.flushing.store(false, Ordering::SeqCst);
        *lock(&self.socket) = Some(Arc::new(sock));
        Ok(())
    }

    fn stop(&self) -> Result<(), gst::ErrorMessage> {
        *lock(&self.socket) = None;
        self.post(self.checker.stats(STATS));
        Ok(())
    }

    fn is_seekable(&self) -> bool {
        false
    }

    fn unlock(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn unlock_stop(&self) -> Result<(), gst::ErrorMessage> {
        self.flushing.store(false, Ordering::SeqCst);
        Ok(())
    }
}

impl PushSrcImpl for UigcSrc {
    fn create(
        &self,
        _buffer: Option<&mut gst::BufferRef>,
    ) -> Result<CreateSuccess, gst::FlowError> {
        let sock = lock(&self.socket).clone().ok_or(gst::FlowError::Flushing)?;
        let mut buf = vec![0u8; 65_536];
        let obj = self.obj();
        loop {
            if self.flushing.load(Ordering::SeqCst) {
                return Err(gst::FlowError::Flushing);
            }
            match sock.recv(&mut buf) {
                Ok(n) => {
                    let ok = self.checker.check(&buf[..n], *CAT, &*obj).is_ok();
                    if let Some(st) = self.checker.stats_due(STATS) {
                        self.post(st);
                    }
                    if ok {
                        buf.truncate(n);
                        return Ok(CreateSuccess::NewBuffer(gst::Buffer::from_mut_slice(buf)));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                // An ICMP error of an earlier send on this socket (none are sent): go on.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    gst::element_imp_error!(
                        self,
                        gst::ResourceError::Read,
                        ("uigcsrc: receive failed: {e}")
                    );
                    return Err(gst::FlowError::Error);
                }
            }
        }
    }
}
