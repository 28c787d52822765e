#!/usr/bin/env bash
# Usage: pipelines/receive-rtp.sh [uigcdec properties...]  (RTP on UDP PORT -> rtpgstdepay -> uigcdec -> screen; a frame with a lost fragment is lost as a whole)
. "$(dirname "$0")/common.sh"
exec gst-launch-1.0 udpsrc port="$PORT" \
  caps="application/x-rtp,media=application,clock-rate=90000,encoding-name=X-GST" \
  ! rtpjitterbuffer latency=200 ! rtpgstdepay ! uigcparse \
  ! queue max-size-buffers=64 max-size-bytes=0 max-size-time=0 leaky=downstream ! uigcdec "$@" ! videoconvert ! $SINK
