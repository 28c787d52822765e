#!/usr/bin/env bash
# Usage: pipelines/receive-display.sh [uigcdec properties...]  (UDP PORT -> uigcdec -> screen; fakesink without a display)
. "$(dirname "$0")/common.sh"
exec gst-launch-1.0 udpsrc port="$PORT" ! uigcdec "$@" ! videoconvert ! $SINK
