#!/usr/bin/env bash
# The sender pipeline of uigc-sender.service: camera -> uigcenc -> one UDP datagram per frame.
# Settings come from the environment (systemd: /etc/uigc/sender.env; see sender.env for each):
#   UIGC_SOURCE v4l2|csi|testsrc, UIGC_CAMERA, UIGC_WIDTH, UIGC_HEIGHT, UIGC_FPS, UIGC_HOST,
#   UIGC_PORT, UIGC_STREAM_ID, UIGC_BITRATE, UIGC_MAX_FRAME_BYTES, UIGC_EP, UIGC_THREADS,
#   UIGC_MODEL (read by the element itself), UIGC_ENC_OPTS (more uigcenc properties),
#   UIGC_NUM_BUFFERS (stop after N frames; 0 = run forever).
# Installed as /usr/local/lib/uigc/uigc-sender (deploy/README.md). `--print` shows the pipeline.
set -euo pipefail
src="${UIGC_SOURCE:-v4l2}"
camera="${UIGC_CAMERA:-/dev/video0}"
w="${UIGC_WIDTH:-640}"; h="${UIGC_HEIGHT:-480}"; fps="${UIGC_FPS:-10}"
host="${UIGC_HOST:?UIGC_HOST: the receiver (uigc gateway) address}"
port="${UIGC_PORT:-5004}"
n="${UIGC_NUM_BUFFERS:-0}"
[ "$n" = 0 ] && n=-1
case "$src" in
  v4l2) input=(v4l2src device="$camera" num-buffers="$n" ! videorate ! videoscale ! videoconvert
          ! "video/x-raw,width=$w,height=$h,framerate=$fps/1") ;;
  # Jetson CSI camera (Argus): UIGC_CAMERA is the sensor id (0, 1, ...).
  csi) input=(nvarguscamerasrc sensor-id="${camera#/dev/video}" num-buffers="$n"
          ! "video/x-raw(memory:NVMM),framerate=$fps/1" ! nvvidconv
          ! "video/x-raw,width=$w,height=$h,format=BGRx" ! videorate
          ! "video/x-raw,framerate=$fps/1") ;;
  testsrc) input=(videotestsrc is-live=true pattern=ball num-buffers="$n"
          ! "video/x-raw,width=$w,height=$h,framerate=$fps/1") ;;
  *) echo "uigc-sender: UIGC_SOURCE must be v4l2, csi or testsrc (got '$src')" >&2; exit 2 ;;
esac
enc=(uigcenc stream-id="${UIGC_STREAM_ID:-0}" target-bitrate="${UIGC_BITRATE:-0}"
  max-frame-bytes="${UIGC_MAX_FRAME_BYTES:-65507}" ep="${UIGC_EP:-cpu}" threads="${UIGC_THREADS:-0}")
# Word splitting is wanted here: UIGC_ENC_OPTS is a list of property=value words.
# shellcheck disable=SC2206
extra=(${UIGC_ENC_OPTS:-})
cmd=(gst-launch-1.0 -e "${input[@]}" ! videoconvert ! "${enc[@]}" "${extra[@]}"
  ! udpsink host="$host" port="$port" sync=false)
if [ "${1:-}" = --print ]; then printf '%s\n' "${cmd[*]}"; exit 0; fi
exec "${cmd[@]}"
