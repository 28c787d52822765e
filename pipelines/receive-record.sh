#!/usr/bin/env bash
# Usage: pipelines/receive-record.sh [OUT=received.mkv] [uigcdec properties...]  (UDP PORT -> uigcdec -> MJPEG in Matroska; Ctrl-C ends the file cleanly)
. "$(dirname "$0")/common.sh"
out="${1:-received.mkv}"; shift || true
exec gst-launch-1.0 -e udpsrc port="$PORT" ! uigcdec "$@" ! videoconvert ! jpegenc \
  ! matroskamux ! filesink location="$out"
