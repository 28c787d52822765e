#!/usr/bin/env bash
# A fleet into one ground station on loopback: N simulated devices (examples/fleet.rs: fixed
# cameras looking at their own crop of vtest.avi, or a synthetic scene without it) send uigc
# streams over UDP for S seconds into one `uigc gateway`; then every packet sent is looked up in
# the archive (count and SHA-256 per stream), the decode statistics and the HTTP endpoints are
# read, and a screenshot of the stream page is taken with headless Chromium when it is installed.
#
#   bash deploy/gateway-fleet.sh [DEVICES=50] [SECONDS=60] [SCREENSHOT.png]
#
# Frames: $UIGC_FLEET_FRAMES (a folder of PNGs), else /tmp/vtest if present (extract vtest.avi
# there as docs/video.md shows), else synthetic. Prints one JSON summary line at the end.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
devices="${1:-50}"
seconds="${2:-60}"
shot="${3:-}"
frames="${UIGC_FLEET_FRAMES:-/tmp/vtest}"
target="${CARGO_TARGET_DIR:-$here/target}"
cargo build --release --quiet --bin uigc --example fleet
work="$(mktemp -d /tmp/uigc-fleet.XXXXXX)"
gw_pid=""
cleanup() { [ -n "$gw_pid" ] && kill "$gw_pid" 2>/dev/null; wait 2>/dev/null || true; }
trap cleanup EXIT
"$target/release/uigc" gateway --archive "$work/archive" --udp 127.0.0.1:0 --http 127.0.0.1:0 \
  --stats-every 5 --decode-workers 1 --threads 1 > "$work/gateway.jsonl" 2> "$work/gateway.log" &
gw_pid=$!
for _ in $(seq 1 300); do
  grep -q '"ready"' "$work/gateway.jsonl" 2>/dev/null && break
  kill -0 "$gw_pid" 2>/dev/null || { cat "$work/gateway.log"; exit 1; }
  sleep 0.2
done
ready="$(head -1 "$work/gateway.jsonl")"
udp="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["udp"])' "$ready")"
http="$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["http"])' "$ready")"
echo "gateway: UDP $udp, HTTP http://$http/ , archive $work/archive"
frame_args=()
[ -d "$frames" ] && frame_args=(--frames "$frames")
# UIGC_FLEET_REUSE=DIR: send the packets coded by an earlier run (its sent/ folder) again.
[ -n "${UIGC_FLEET_REUSE:-}" ] && frame_args+=(--reuse "$UIGC_FLEET_REUSE")
"$target/release/examples/fleet" --to "$udp" --devices "$devices" --seconds "$seconds" \
  "${frame_args[@]}" --out "$work/sent" &
fleet_pid=$!
# The screenshot is taken live, three quarters into the sending.
want=$((devices * seconds * 3 / 4))
while kill -0 "$fleet_pid" 2>/dev/null; do
  n="$(curl -sf "http://$http/api/streams" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totals"]["archived"])')"
  if [ -n "$shot" ] && [ "$n" -ge "$want" ]; then
    browser="$(command -v chromium || command -v chromium-browser || true)"
    if [ -n "$browser" ]; then
      "$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1280,1100 \
        --virtual-time-budget=3000 --screenshot="$shot" "http://$http/" 2>/dev/null
      echo "screenshot: $shot ($n packets archived)"
    else
      echo "no chromium: no screenshot (apt-get install chromium)" >&2
    fi
    shot=""
  fi
  sleep 1
done
wait "$fleet_pid"
# Let the decoder finish the queued frames (it may lag; the archive does not).
for _ in $(seq 1 120); do
  curl -sf "http://$http/api/streams" > "$work/streams.json"
  python3 - "$work/streams.json" <<'PY' && break
import json, sys
v = json.load(open(sys.argv[1]))
sys.exit(0 if all(s["queued"] == 0 for s in v["streams"]) else 1)
PY
  sleep 1
done
curl -sf "http://$http/metrics" > "$work/metrics.txt"
"$target/release/uigc" archive-check "$work/archive" > "$work/archive.jsonl"
kill "$gw_pid"; wait "$gw_pid" 2>/dev/null || true; gw_pid=""
echo "work folder: $work"
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
sent = json.load(open(f"{work}/sent/sent.json"))
arch = {r["stream"]: r for r in map(json.loads, open(f"{work}/archive.jsonl"))}
streams = json.load(open(f"{work}/streams.json"))
stats = [json.loads(l) for l in open(f"{work}/gateway.jsonl") if '"uptime_s"' in l]
missing = [s["stream"] for s in sent["streams"]
           if arch.get(s["stream"], {}).get("sha256") != s["sha256"]]
st = streams["streams"]
summary = {
    "devices": sent["devices"], "seconds": sent["seconds"], "packets_sent": sent["packets"],
    "bytes_sent": sent["bytes"], "packets_archived": sum(r["records"] for r in arch.values()),
    "streams_archived_identical": len(sent["streams"]) - len(missing), "streams_differing": missing,
    "decoded": sum(s["decoded"] for s in st), "exact": sum(s["exact"] for s in st),
    "shed": sum(s["shed"] for s in st), "lost_on_link": sum(s["lost"] for s in st),
    "max_decode_lag_ms": max((x["max_decode_lag_ms"] for x in stats), default=None),
    "decode_ms_mean": stats[-1]["decode_ms_mean"] if stats else None,
    "packets_per_s_peak": max((x["packets_per_s"] for x in stats), default=None),
    "refused": streams["totals"]["refused"],
}
print(json.dumps(summary))
sys.exit(1 if missing else 0)
PY
