#!/usr/bin/env bash
# Usage: pipelines/fixed-camera.sh [VIDEO=../shared/data/video/vtest.avi] [SECONDS=10] [uigcenc properties...]
# A fixed telemetry camera over a narrow link, on loopback: the clip is played as a 10 fps camera
# into uigcenc (inter packets by default: only what moved is sent, gradual refresh, here a leaky
# bucket of 15 kbit/s unless properties say otherwise) -> UDP -> uigcdec -> PNG frames in
# out/fixed-camera/. Prints the packets' total size and the receiver's counters.
. "$(dirname "$0")/common.sh"
video="${1:-$root/../shared/data/video/vtest.avi}"; shift || true
seconds="${1:-10}"; shift || true
frames=$((seconds * 10))
[ -f "$video" ] || { echo "no video file $video" >&2; exit 1; }
props=("$@")
[ ${#props[@]} -eq 0 ] && props=(target-bitrate=15000)
out="$root/out/fixed-camera"
rm -rf "$out"; mkdir -p "$out"
gst-launch-1.0 -q uigcsrc port="$PORT" address="$HOST" \
  ! queue max-size-buffers=64 max-size-bytes=0 max-size-time=0 leaky=downstream ! uigcdec name=dec ! videoconvert ! pngenc ! multifilesink location="$out/frame_%05d.png" &
rx=$!
sleep 1
# The sender runs in real time (udpsink sync=true) and gets EOS (-e) after SECONDS.
gst-launch-1.0 -q -e filesrc location="$video" ! decodebin ! videoconvert ! videorate \
  ! video/x-raw,framerate=10/1 ! uigcenc "${props[@]}" ! tee name=t \
  t. ! queue ! udpsink host="$HOST" port="$PORT" sync=true \
  t. ! queue ! filesink location="$out/packets.bin" &
tx=$!
sleep "$seconds"; kill -INT $tx 2>/dev/null || true; wait $tx 2>/dev/null || true
# A receiver slower than real time is still decoding: wait until every frame is shown or no new
# frame came for 15 s, then stop it.
last=-1; quiet=0
while [ $quiet -lt 15 ]; do
  n=$(ls "$out"/frame_*.png 2>/dev/null | wc -l)
  [ "$n" -ge "$frames" ] && break
  if [ "$n" -eq "$last" ]; then quiet=$((quiet + 1)); else quiet=0; last=$n; fi
  sleep 1
done
kill -INT $rx 2>/dev/null || true; wait $rx 2>/dev/null || true
bytes=$(stat -c %s "$out/packets.bin")
shown=$(ls "$out"/frame_*.png 2>/dev/null | wc -l)
echo "sent ${seconds} s of 10 fps video in $bytes bytes ($((bytes * 8 / seconds / 1000)) kbit/s); $shown frames shown in $out (a receiver slower than real time shows fewer)"
