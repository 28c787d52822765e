#!/usr/bin/env bash
# Usage: pipelines/send-file.sh [VIDEO=../shared/data/video/vtest.avi] [uigcenc properties...]  (video file -> uigcenc -> UDP HOST:PORT, real time)
. "$(dirname "$0")/common.sh"
file="${1:-$root/../shared/data/video/vtest.avi}"; shift || true
exec gst-launch-1.0 filesrc location="$file" ! decodebin ! videoconvert ! uigcenc "$@" \
  ! udpsink host="$HOST" port="$PORT"
