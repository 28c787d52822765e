#!/usr/bin/env bash
# Usage: pipelines/receive-display.sh [uigcdec properties...]  (UDP PORT -> uigcdec -> screen; fakesink without a display)
# uigcsrc drops corrupt datagrams in its own thread and the queue lets the decoder work in
# another, so a flood on the port does not cost valid packets (docs/gstreamer.md, "Receiving").
. "$(dirname "$0")/common.sh"
exec gst-launch-1.0 uigcsrc port="$PORT" \
  ! queue max-size-buffers=64 max-size-bytes=0 max-size-time=0 leaky=downstream \
  ! uigcdec "$@" ! videoconvert ! $SINK
