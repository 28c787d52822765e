#!/usr/bin/env bash
# Usage: pipelines/lossy-link.sh [DROP=0.2] [FRAMES=100] [VIDEO=../shared/data/video/vtest.avi]  (sender + receiver on loopback, DROP of the datagrams lost on the way)
. "$(dirname "$0")/common.sh"
drop="${1:-0.2}"; frames="${2:-100}"; file="${3:-$root/../shared/data/video/vtest.avi}"
log="$(mktemp)"
gst-launch-1.0 -v udpsrc port="$PORT" ! uigcdec ! videoconvert ! fakesink silent=false >"$log" 2>&1 &
recv=$!
trap 'kill $recv 2>/dev/null || true; rm -f "$log"' EXIT
sleep 2
gst-launch-1.0 filesrc location="$file" ! decodebin ! videoconvert ! identity eos-after="$frames" \
  ! uigcenc ! identity drop-probability="$drop" ! udpsink host="$HOST" port="$PORT"
sleep 2
got="$(grep -c 'last-message = chain' "$log" || true)"
echo "sent $frames frames with drop-probability=$drop: the receiver decoded $got"
grep -E 'WARNING|ERROR' "$log" | head -5 || true
