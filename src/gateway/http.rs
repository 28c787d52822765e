//! The gateway's HTTP side (axum, on the gateway's tokio runtime):
//!
//! | path | what |
//! |---|---|
//! | `/` | page listing the streams with their stats and a live view of each |
//! | `/api/streams` | the same stats as JSON |
//! | `/streams/{id}/latest.png` | the stream's latest decoded frame |
//! | `/streams/{id}/live.mjpeg` | live view (`multipart/x-mixed-replace` JPEG frames) |
//! | `/streams/{id}/archive?from=S&to=S` | archived packets received in a time range (Unix seconds), as a `.uigcs` stream (`uigc stream-decode` reads it) |
//! | `/metrics` | Prometheus text format |

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use super::archive;
use super::{now_us, Gateway, Refusal, StreamView};
use crate::codec::RgbImage;

/// Live viewers served at once (each costs a JPEG encode per frame).
pub const MAX_VIEWERS: usize = 32;

type Gw = Arc<Gateway>;
/// A per-stream metric: name, type, help, value.
type PerStream = (
    &'static str,
    &'static str,
    &'static str,
    fn(&StreamView) -> f64,
);

pub fn router(gw: Gw) -> Router {
    let viewers = Arc::new(tokio::sync::Semaphore::new(MAX_VIEWERS));
    Router::new()
        .route("/", get(index))
        .route("/api/streams", get(streams_json))
        .route("/streams/{id}/latest.png", get(latest_png))
        .route(
            "/streams/{id}/live.mjpeg",
            get(move |s, p| live(s, p, viewers.clone())),
        )
        .route("/streams/{id}/archive", get(archive_range))
        .route("/metrics", get(metrics))
        .with_state(gw)
}

fn snapshot(gw: &Gateway) -> Vec<(u32, StreamView)> {
    let views = gw.views.streams.lock().unwrap_or_else(|e| e.into_inner());
    let mut v: Vec<(u32, StreamView)> = views
        .iter()
        .map(|(k, v)| {
            let mut v = v.clone();
            v.latest = None;
            (*k, v)
        })
        .collect();
    v.sort_unstable_by_key(|(k, _)| *k);
    v
}

fn stream_json(id: u32, v: &StreamView, now: u64) -> serde_json::Value {
    serde_json::json!({
        "stream": id,
        "packets": v.packets,
        "bytes": v.bytes,
        "refused": v.refused,
        "lost": v.lost,
        "late": v.late,
        "loss": if v.packets + v.lost > 0 { v.lost as f64 / (v.packets + v.lost) as f64 } else { 0.0 },
        "bitrate": v.bitrate(now),
        "last_packet_age_s": (now.saturating_sub(v.last_time_us)) as f64 / 1e6,
        "decoded": v.decoded,
        "exact": v.exact,
        "concealed": v.concealed,
        "decode_errors": v.decode_errors,
        "skipped": v.skipped,
        "shed": v.shed,
        "queued": v.queued,
        "decode_lag_ms": v.decode_lag_ms,
        "decode_lag_max_ms": v.decode_lag_max_ms,
        "decode_ms": v.decode_ms,
        "decode_ms_mean": if v.decoded + v.decode_errors > 0 { v.decode_ms_total / (v.decoded + v.decode_errors) as f64 } else { 0.0 },
        "last_frame": v.last_frame,
        "last_status": v.last_status,
        "last_error": v.last_error,
        "width": v.size.0,
        "height": v.size.1,
    })
}

/// Gateway-wide counters as JSON.
pub fn totals_json(gw: &Gateway) -> serde_json::Value {
    let c = &gw.counters;
    let mut refused = serde_json::Map::new();
    for r in Refusal::ALL {
        refused.insert(r.as_str().into(), c.refused(r).into());
    }
    serde_json::json!({
        "received": c.received.load(Ordering::Relaxed),
        "received_bytes": c.received_bytes.load(Ordering::Relaxed),
        "archived": c.archived.load(Ordering::Relaxed),
        "archived_bytes": c.archived_bytes.load(Ordering::Relaxed),
        "refused": refused,
        "shed": c.shed.load(Ordering::Relaxed),
        "truncated_bytes": c.truncated_bytes.load(Ordering::Relaxed),
        "streams": gw.streams(),
        "nats": nats_json(gw),
    })
}

/// The JetStream publisher's counters (`null` without `--nats`).
fn nats_json(gw: &Gateway) -> serde_json::Value {
    #[cfg(feature = "nats")]
    if let Some(p) = &gw.nats {
        let c = &p.counters;
        return serde_json::json!({
            "published": c.published.load(Ordering::Relaxed),
            "duplicates": c.duplicates.load(Ordering::Relaxed),
            "errors": c.errors.load(Ordering::Relaxed),
            "shed": c.shed.load(Ordering::Relaxed),
        });
    }
    let _ = gw;
    serde_json::Value::Null
}

async fn streams_json(State(gw): State<Gw>) -> Response {
    let now = now_us();
    let streams: Vec<_> = snapshot(&gw)
        .iter()
        .map(|(id, v)| stream_json(*id, v, now))
        .collect();
    let body = serde_json::json!({ "totals": totals_json(&gw), "streams": streams });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn index(State(gw): State<Gw>) -> Html<String> {
    let now = now_us();
    let t = totals_json(&gw);
    let mut rows = String::new();
    let mut tiles = String::new();
    for (id, v) in snapshot(&gw) {
        let _ = write!(
            rows,
            "<tr><td>{id}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{:.1} %</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
            v.packets,
            v.bytes,
            v.bitrate(now) / 1e3,
            if v.packets + v.lost > 0 {
                100.0 * v.lost as f64 / (v.packets + v.lost) as f64
            } else {
                0.0
            },
            v.decoded,
            v.exact,
            v.shed,
            v.decode_lag_ms,
            (now.saturating_sub(v.last_time_us)) as f64 / 1e6,
            v.last_frame.map_or("-".into(), |f| f.to_string()),
            html_escape(&v.last_status),
        );
        let _ = write!(
            tiles,
            "<figure><a href=\"/streams/{id}/live.mjpeg\"><img class=\"live\" \
             src=\"/streams/{id}/latest.png\" alt=\"stream {id}\"></a>\
             <figcaption>stream {id} · frame {} · {}</figcaption></figure>",
            v.last_frame.map_or("-".into(), |f| f.to_string()),
            html_escape(&v.last_status),
        );
    }
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>uigc gateway</title>\
         <meta http-equiv=\"refresh\" content=\"30\"><style>\
         body{{font-family:sans-serif;margin:1em}} table{{border-collapse:collapse;font-size:12px}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}\
         figure{{display:inline-block;margin:3px}} img{{width:144px;display:block}}\
         figcaption{{font-size:11px}}</style></head><body>\
         <h1>uigc gateway</h1><p>{} streams · {} packets received · {} archived · refused {} · \
         shed (not decoded) {}</p>\
         <script>setInterval(()=>{{for(const i of document.querySelectorAll('img.live'))\
         i.src=i.src.split('?')[0]+'?t='+Date.now()}},1000)</script>\
         <div>{tiles}</div><table><tr><th>stream</th><th>packets</th><th>bytes</th><th>kbit/s</th><th>loss</th>\
         <th>decoded</th><th>exact</th><th>shed</th><th>decode lag ms</th><th>last packet s ago</th>\
         <th>frame</th><th>status</th></tr>{rows}</table></body></html>",
        t["streams"],
        t["received"],
        t["archived"],
        Refusal::ALL.iter().map(|&r| gw.counters.refused(r)).sum::<u64>(),
        t["shed"],
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn latest(gw: &Gateway, id: u32) -> Option<(Arc<RgbImage>, u64)> {
    let views = gw.views.streams.lock().unwrap_or_else(|e| e.into_inner());
    let v = views.get(&id)?;
    Some((v.latest.clone()?, v.generation))
}

pub(crate) fn encode(img: &RgbImage, png: bool) -> Result<Vec<u8>, String> {
    use image::ImageEncoder;
    let mut out = Vec::new();
    let r = if png {
        image::codecs::png::PngEncoder::new(&mut out).write_image(
            &img.data,
            img.width,
            img.height,
            image::ExtendedColorType::Rgb8,
        )
    } else {
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85).write_image(
            &img.data,
            img.width,
            img.height,
            image::ExtendedColorType::Rgb8,
        )
    };
    r.map_err(|e| e.to_string())?;
    Ok(out)
}

async fn latest_png(State(gw): State<Gw>, Path(id): Path<u32>) -> Response {
    let Some((img, _)) = latest(&gw, id) else {
        return (
            StatusCode::NOT_FOUND,
            format!("stream {id}: no decoded frame\n"),
        )
            .into_response();
    };
    match tokio::task::spawn_blocking(move || encode(&img, true)).await {
        Ok(Ok(png)) => ([(header::CONTENT_TYPE, "image/png")], png).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn live(
    State(gw): State<Gw>,
    Path(id): Path<u32>,
    viewers: Arc<tokio::sync::Semaphore>,
) -> Response {
    let Ok(permit) = viewers.try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_VIEWERS} live viewers already\n"),
        )
            .into_response();
    };
    let rx = gw.views.frames.subscribe();
    // State: (gateway, frame notifications, last generation sent, viewer permit).
    let state = (gw, rx, 0u64, permit);
    let frames =
        futures_util::stream::unfold(state, move |(gw, mut rx, sent, permit)| async move {
            loop {
                if let Some((img, generation)) = latest(&gw, id) {
                    if generation != sent {
                        let jpeg = tokio::task::spawn_blocking(move || encode(&img, false))
                            .await
                            .ok()?
                            .ok()?;
                        let mut part = format!(
                            "--frame\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n",
                            jpeg.len()
                        )
                        .into_bytes();
                        part.extend_from_slice(&jpeg);
                        part.extend_from_slice(b"\r\n");
                        return Some((
                            Ok::<_, std::convert::Infallible>(part),
                            (gw, rx, generation, permit),
                        ));
                    }
                }
                rx.changed().await.ok()?;
            }
        });
    (
        [(
            header::CONTENT_TYPE,
            "multipart/x-mixed-replace; boundary=frame",
        )],
        Body::from_stream(frames),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Range {
    from: Option<f64>,
    to: Option<f64>,
}

async fn archive_range(
    State(gw): State<Gw>,
    Path(id): Path<u32>,
    Query(range): Query<Range>,
) -> Response {
    let from = range.from.map_or(0, |s| (s.max(0.0) * 1e6) as u64);
    let to = range.to.map_or(u64::MAX, |s| (s.max(0.0) * 1e6) as u64);
    let root = gw.config.archive_dir.clone();
    let read = tokio::task::spawn_blocking(move || archive::read_stream(&root, id, from, to)).await;
    match read {
        Ok(Ok(records)) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            archive::to_uigcs(&records),
        )
            .into_response(),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            (StatusCode::NOT_FOUND, format!("stream {id}: no archive\n")).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(gw): State<Gw>) -> Response {
    let c = &gw.counters;
    let mut m = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = writeln!(m, "# HELP uigc_gateway_{name} {help}\n# TYPE uigc_gateway_{name} counter\nuigc_gateway_{name} {v}");
    };
    counter(
        "received_packets_total",
        "Packets received (UDP and TCP).",
        c.received.load(Ordering::Relaxed),
    );
    counter(
        "received_bytes_total",
        "Bytes received.",
        c.received_bytes.load(Ordering::Relaxed),
    );
    counter(
        "archived_packets_total",
        "Packets appended to the archive.",
        c.archived.load(Ordering::Relaxed),
    );
    counter(
        "archived_bytes_total",
        "Packet bytes appended to the archive.",
        c.archived_bytes.load(Ordering::Relaxed),
    );
    counter(
        "shed_packets_total",
        "Archived packets not decoded (decode queue full).",
        c.shed.load(Ordering::Relaxed),
    );
    let _ = writeln!(m, "# HELP uigc_gateway_refused_packets_total Packets refused, by reason.\n# TYPE uigc_gateway_refused_packets_total counter");
    for r in Refusal::ALL {
        let _ = writeln!(
            m,
            "uigc_gateway_refused_packets_total{{reason=\"{}\"}} {}",
            r.as_str(),
            c.refused(r)
        );
    }
    let _ = writeln!(m, "# HELP uigc_gateway_streams Streams with an open archive.\n# TYPE uigc_gateway_streams gauge\nuigc_gateway_streams {}", gw.streams());
    let views = snapshot(&gw);
    let per_stream: [PerStream; 6] = [
        (
            "stream_packets_total",
            "counter",
            "Packets archived per stream.",
            |v| v.packets as f64,
        ),
        (
            "stream_lost_frames_total",
            "counter",
            "Frame counters missing per stream.",
            |v| v.lost as f64,
        ),
        (
            "stream_decoded_frames_total",
            "counter",
            "Frames decoded per stream.",
            |v| v.decoded as f64,
        ),
        (
            "stream_exact_frames_total",
            "counter",
            "Frames decoded exactly per stream.",
            |v| v.exact as f64,
        ),
        (
            "stream_shed_packets_total",
            "counter",
            "Packets not decoded per stream (queue full).",
            |v| v.shed as f64,
        ),
        (
            "stream_decode_lag_seconds",
            "gauge",
            "Arrival to decoded picture, last frame.",
            |v| v.decode_lag_ms / 1e3,
        ),
    ];
    for (name, kind, help, f) in per_stream {
        let _ = writeln!(
            m,
            "# HELP uigc_gateway_{name} {help}\n# TYPE uigc_gateway_{name} {kind}"
        );
        for (id, v) in &views {
            let _ = writeln!(m, "uigc_gateway_{name}{{stream=\"{id}\"}} {}", f(v));
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], m).into_response()
}
