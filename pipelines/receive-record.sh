#!/usr/bin/env bash
# Usage: pipelines/receive-record.sh [OUT=received.mkv] [uigcdec properties...]  (UDP PORT -> uigcdec -> MJPEG in Matroska; Ctrl-C ends the file cleanly)
. "$(dirname "$0")/common.sh"
out="${1:-received.mkv}"; shift || true
exec gst-launch-1.0 -e uigcsrc port="$PORT" \
  ! queue max-size-buffers=64 max-size-bytes=0 max-size-time=0 leaky=downstream \
  ! uigcdec "$@" ! videoconvert ! jpegenc \
  ! matroskamux ! filesink location="$out"
