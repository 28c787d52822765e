#!/usr/bin/env bash
# Usage: pipelines/send-camera.sh [DEVICE=/dev/video0] [uigcenc properties...]  (v4l2 camera -> uigcenc -> UDP HOST:PORT)
. "$(dirname "$0")/common.sh"
dev="${1:-/dev/video0}"; shift || true
exec gst-launch-1.0 v4l2src device="$dev" ! videoconvert ! uigcenc "$@" ! udpsink host="$HOST" port="$PORT"
