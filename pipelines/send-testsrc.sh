#!/usr/bin/env bash
# Usage: pipelines/send-testsrc.sh [WIDTHxHEIGHT=640x480] [FPS=10] [uigcenc properties...]  (videotestsrc -> uigcenc -> UDP HOST:PORT)
. "$(dirname "$0")/common.sh"
size="${1:-640x480}"; fps="${2:-10}"; shift $(( $# < 2 ? $# : 2 ))
exec gst-launch-1.0 videotestsrc is-live=true pattern=ball \
  ! "video/x-raw,width=${size%x*},height=${size#*x},framerate=$fps/1" \
  ! videoconvert ! uigcenc "$@" ! udpsink host="$HOST" port="$PORT"
