#!/usr/bin/env bash
# Usage: pipelines/bench.sh [WIDTHxHEIGHT=640x480] [FRAMES=100]  (throughput of videotestsrc ! uigcenc ! uigcdec ! fakesink, in frames/s)
. "$(dirname "$0")/common.sh"
size="${1:-640x480}"; frames="${2:-100}"
start=$(date +%s.%N)
gst-launch-1.0 -q videotestsrc num-buffers="$frames" pattern=smpte \
  ! "video/x-raw,format=RGB,width=${size%x*},height=${size#*x}" \
  ! uigcenc ! uigcdec ! fakesink sync=false
end=$(date +%s.%N)
awk -v n="$frames" -v s="$start" -v e="$end" -v sz="$size" \
  'BEGIN { printf "%s: %d frames in %.2f s = %.1f frames/s (model load included)\n", sz, n, e - s, n / (e - s) }'
