#!/usr/bin/env bash
# A flood of corrupt datagrams against a receiver while real packets arrive (issue 15): FRAMES
# packets of the vtest clip at 640x480 (shipped model, pre-encoded once into PACKETS) are sent at
# FPS frames/s through uigc-linksim, which relays them untouched and floods the receiver's port
# from a second thread as fast as it can (random bytes, truncated and bit-flipped copies of a
# real packet). Prints one line: packets the link delivered, frames the receiver decoded, the
# valid packets lost, the flood's rate, and the receiver's CPU time over the run.
# Usage: deploy/flood.sh RECEIVER [FRAMES=40] [FPS=2]
#   RECEIVER: uigcsrc   uigcsrc ! queue ! uigcdec          (the recommended receiver)
#             uigcparse udpsrc ! uigcparse ! queue ! uigcdec
#             udpsrc    udpsrc ! uigcdec                   (without the fix)
# Environment: GST_PLUGIN_PATH (target/release, else target/debug), UIGC_MODEL (the shipped
#   model), PACKETS (directory of pre-encoded packets; default /tmp/uigc-flood-packets),
#   FRAMES_DIR (/tmp/vtest: f_%05d.png frames of vtest.avi), NOFLOOD=1 (relay only: a baseline).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kind="${1:?usage: deploy/flood.sh uigcsrc|uigcparse|udpsrc [FRAMES] [FPS]}"
frames="${2:-40}"; fps="${3:-2}"
. "$root/pipelines/common.sh"
linksim="$GST_PLUGIN_PATH/uigc-linksim"
[ -x "$linksim" ] || { echo "flood: uigc-linksim not found in $GST_PLUGIN_PATH (cargo build)" >&2; exit 1; }
pk="${PACKETS:-/tmp/uigc-flood-packets}"
src_frames="${FRAMES_DIR:-/tmp/vtest}"
if [ "$(ls "$pk"/p_*.uigc 2>/dev/null | wc -l)" -lt "$frames" ]; then
  [ -f "$src_frames/f_00000.png" ] || { echo "flood: no frames in $src_frames (ffmpeg -i vtest.avi $src_frames/f_%05d.png)" >&2; exit 1; }
  rm -rf "$pk"; mkdir -p "$pk"
  gst-launch-1.0 -q multifilesrc location="$src_frames/f_%05d.png" index=0 stop-index=$((frames - 1)) \
    caps=image/png,framerate=10/1 ! pngdec ! videoconvert ! videoscale \
    ! video/x-raw,width=640,height=480 ! uigcenc refresh-frames=20 qos=false \
    ! multifilesink location="$pk/p_%05d.uigc"
fi
tmp="$(mktemp -d)"
recv=""; link=""
cleanup() { for p in $link $recv; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
queue="queue max-size-buffers=64 max-size-bytes=0 max-size-time=0 leaky=downstream"
case "$kind" in
  uigcsrc) src=(uigcsrc address=127.0.0.1 port="$port" stats-interval=500 ! $queue) ;;
  uigcparse) src=(udpsrc address=127.0.0.1 port="$port" reuse=false buffer-size=4194304 ! uigcparse stats-interval=500 ! $queue) ;;
  udpsrc) src=(udpsrc address=127.0.0.1 port="$port" reuse=false buffer-size=4194304) ;;
  *) echo "flood: unknown receiver $kind" >&2; exit 2 ;;
esac
gst-launch-1.0 -m "${src[@]}" ! uigcdec name=d stats-every=1 ! fakesink sync=false >"$tmp/rx.log" 2>&1 &
recv=$!
sleep 3  # the model loads
ticks() { awk '{print $14 + $15}' "/proc/$recv/stat"; }
t0=$(ticks)
flood=(--flood --flood-template "$pk/p_00001.uigc")
[ -n "${NOFLOOD:-}" ] && flood=()
"$linksim" --to "127.0.0.1:$port" "${flood[@]}" --idle-exit 3 >"$tmp/link.log" &
link=$!
for _ in $(seq 100); do grep -q '^port ' "$tmp/link.log" 2>/dev/null && break; sleep 0.1; done
lport="$(sed -n 's/^port //p' "$tmp/link.log")"
start=$(date +%s.%N)
python3 - "$pk" "$lport" "$fps" "$frames" <<'EOF'
import glob, socket, sys, time
pk, port, fps, n = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t0 = time.monotonic()
for i, f in enumerate(sorted(glob.glob(pk + "/p_*.uigc"))[:n]):
    time.sleep(max(0.0, t0 + i / fps - time.monotonic()))
    s.sendto(open(f, "rb").read(), ("127.0.0.1", port))
EOF
wait "$link"; link=""
# Until the receiver is quiet (its queue and socket drained), at most 120 s.
counter() { grep -o "$1=(guint64)[0-9]*" "$tmp/rx.log" | tail -1 | grep -o '[0-9]*$' || echo 0; }
last=-1; quiet=0; waited=0
while [ $quiet -lt 5 ] && [ $waited -lt 120 ]; do
  n=$(( $(counter frames-decoded) + $(counter frames-dropped) ))
  if [ "$n" -eq "$last" ]; then quiet=$((quiet + 1)); else quiet=0; last=$n; fi
  sleep 1; waited=$((waited + 1))
done
t1=$(ticks); end=$(date +%s.%N)
kill "$recv" 2>/dev/null || true; wait "$recv" 2>/dev/null || true; recv=""
report="$(tail -1 "$tmp/link.log")"
python3 - "$report" "$(counter frames-decoded)" "$(counter frames-dropped)" "$(counter frames-lost)" \
  "$((t1 - t0))" "$(getconf CLK_TCK)" "$start" "$end" "$kind" "$(counter packets-dropped)" <<'EOF'
import json, sys
r = json.loads(sys.argv[1]); dec, dropped, lost = map(int, sys.argv[2:5])
cpu = int(sys.argv[5]) / int(sys.argv[6]); wall = float(sys.argv[8]) - float(sys.argv[7])
f = r.get("flood") or {}
sent = r["delivered"]
print(f"{sys.argv[9]}: link delivered {sent} valid packets; receiver decoded {dec}, "
      f"valid lost {sent - dec}, uigcdec frames-dropped {dropped} frames-lost {lost}; "
      + (f"{sys.argv[9]} dropped {sys.argv[10]} datagrams; " if sys.argv[9] != "udpsrc" else "")
      + f"flood {f.get('datagrams', 0)} datagrams in {f.get('seconds', 0):.1f} s = "
      f"{f.get('datagrams_per_s', 0):.0f}/s, {f.get('mbit_per_s', 0):.0f} Mbit/s; "
      f"receiver CPU {cpu:.1f} s over {wall:.0f} s ({100 * cpu / wall:.0f} % of one core)")
EOF
