#!/usr/bin/env bash
# Usage: pipelines/send-rtp.sh [VIDEO=../shared/data/video/vtest.avi|testsrc] [uigcenc properties...]  (frames of any size over RTP: rtpgstpay splits them into MTU-sized datagrams)
. "$(dirname "$0")/common.sh"
src="${1:-$root/../shared/data/video/vtest.avi}"; shift || true
if [ "$src" = testsrc ]; then
  input=(videotestsrc is-live=true ! video/x-raw,width=1280,height=720,framerate=10/1)
else
  input=(filesrc location="$src" ! decodebin)
fi
exec gst-launch-1.0 "${input[@]}" ! videoconvert ! uigcenc "$@" \
  ! rtpgstpay config-interval=1 mtu=1400 ! udpsink host="$HOST" port="$PORT"
