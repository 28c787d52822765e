//! The gateway's network side on tokio: UDP datagrams, TCP uplinks (store-and-forward batches:
//! each packet preceded by its length as u32 little-endian, the `.uigcs` format), the HTTP
//! server and the archive's periodic flush.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::archive::{FsyncPolicy, MAX_RECORD};
use super::{Gateway, Refusal};

/// Where the gateway listens (`None`: that side is off).
#[derive(Debug, Clone)]
pub struct Listen {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// Receive buffer asked for the UDP socket in bytes (the kernel caps it at
    /// `net.core.rmem_max`): datagrams arriving while the receive task is busy wait there.
    pub udp_buffer: usize,
    /// TCP uplinks served at once; further connections are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP uplink silent for this long is closed.
    pub tcp_idle: Duration,
}

/// The addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub http: Option<SocketAddr>,
    /// The UDP receive buffer the kernel granted (bytes).
    pub udp_buffer: Option<usize>,
}

/// Runs the gateway until SIGINT/SIGTERM; `ready` is called once every socket is bound.
pub fn run(gw: Arc<Gateway>, listen: Listen, ready: impl FnOnce(&Bound)) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("uigc-gateway")
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    rt.block_on(serve(gw, listen, ready))
}

async fn serve(gw: Arc<Gateway>, listen: Listen, ready: impl FnOnce(&Bound)) -> Result<(), String> {
    let mut bound = Bound::default();
    let udp = match listen.udp {
        Some(a) => {
            let (s, granted) =
                bind_udp(a, listen.udp_buffer).map_err(|e| format!("UDP {a}: {e}"))?;
            bound.udp = Some(s.local_addr().map_err(|e| e.to_string())?);
            bound.udp_buffer = Some(granted);
            if granted < listen.udp_buffer {
                log::warn!(
                    "UDP receive buffer: {granted} bytes granted of {} asked (raise \
                     net.core.rmem_max to absorb longer bursts)",
                    listen.udp_buffer
                );
            }
            Some(s)
        }
        None => None,
    };
    let (tcp, bound_tcp) = bind_tcp(listen.tcp, "TCP").await?;
    let (http, bound_http) = bind_tcp(listen.http, "HTTP").await?;
    (bound.tcp, bound.http) = (bound_tcp, bound_http);
    #[cfg(feature = "nats")]
    if let Some(p) = &gw.nats {
        // Before the ready line: a server that cannot be reached fails the start.
        p.start().await?;
    }
    ready(&bound);
    if let Some(s) = udp {
        tokio::spawn(udp_loop(gw.clone(), s));
    }
    if let Some(l) = tcp {
        tokio::spawn(tcp_loop(
            gw.clone(),
            l,
            listen.max_tcp_connections,
            listen.tcp_idle,
        ));
    }
    if let Some(l) = http {
        let app = super::http::router(gw.clone());
        tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                log::error!("HTTP server: {e}");
            }
        });
    }
    if let FsyncPolicy::Interval(d) = gw.config.archive.fsync {
        // Records of a stream that went quiet still reach the disk within the interval.
        let gw = gw.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(d);
            loop {
                tick.tick().await;
                let gw = gw.clone();
                let _ = tokio::task::spawn_blocking(move || gw.sync()).await;
            }
        });
    }
    shutdown_signal().await;
    gw.sync();
    Ok(())
}

/// A TCP listener on `addr` (none without an address) and the address it bound.
async fn bind_tcp(
    addr: Option<SocketAddr>,
    what: &str,
) -> Result<(Option<TcpListener>, Option<SocketAddr>), String> {
    let Some(a) = addr else {
        return Ok((None, None));
    };
    let l = TcpListener::bind(a)
        .await
        .map_err(|e| format!("{what} {a}: {e}"))?;
    let local = l.local_addr().map_err(|e| e.to_string())?;
    Ok((Some(l), Some(local)))
}

/// A UDP socket with a larger receive buffer (what the kernel grants is returned).
fn bind_udp(addr: SocketAddr, buffer: usize) -> std::io::Result<(UdpSocket, usize)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    s.set_recv_buffer_size(buffer)?;
    s.bind(&addr.into())?;
    s.set_nonblocking(true)?;
    // Linux reports twice the size set (it counts its bookkeeping): the usable part is half.
    let granted = s.recv_buffer_size()? / 2;
    Ok((UdpSocket::from_std(s.into())?, granted))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
    }
}

async fn udp_loop(gw: Arc<Gateway>, socket: UdpSocket) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, _from)) => {
                let _ = gw.accept(&buf[..n]);
            }
            Err(e) => {
                log::warn!("UDP receive: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn tcp_loop(gw: Arc<Gateway>, listener: TcpListener, max: usize, idle: Duration) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if open.load(Ordering::Relaxed) >= max {
            log::warn!("TCP uplink from {peer} refused: {max} connections open");
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let (gw, open) = (gw.clone(), open.clone());
        tokio::spawn(async move {
            if let Err(e) = tcp_uplink(&gw, stream, idle).await {
                log::info!("TCP uplink from {peer} closed: {e}");
            }
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// One store-and-forward uplink: length-prefixed packets until the peer closes. A length of 0
/// or above the largest record ends the connection (counted as oversize): the framing is lost.
async fn tcp_uplink(gw: &Gateway, mut s: TcpStream, idle: Duration) -> Result<(), String> {
    let mut buf = vec![0u8; MAX_RECORD];
    loop {
        let mut len = [0u8; 4];
        match tokio::time::timeout(idle, s.read_exact(&mut len)).await {
            Err(_) => return Err("idle".into()),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(_)) => {}
        }
        let n = u32::from_le_bytes(len) as usize;
        if n == 0 || n > MAX_RECORD {
            gw.counters.received.fetch_add(1, Ordering::Relaxed);
            gw.counters.refuse(Refusal::Oversize);
            return Err(format!("record length {n}"));
        }
        match tokio::time::timeout(idle, s.read_exact(&mut buf[..n])).await {
            Err(_) => return Err("idle".into()),
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(_)) => {}
        }
        let _ = gw.accept(&buf[..n]);
    }
}
