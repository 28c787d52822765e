#!/usr/bin/env bash
# Usage: pipelines/lossy-link.sh [DROP=0.2] [FRAMES=100] [VIDEO=../shared/data/video/vtest.avi]
# Sender -> lossy link -> receiver on loopback. The link is uigc-linksim (built with the plugin):
# DROP of the datagrams lost, DUP (0.05) duplicated, REORDER (0.05) reordered, HOSTILE (0) share
# preceded by a hostile datagram, all from SEED (1). The sender refreshes every REFRESH (20)
# frames. Waits until the receiver has accounted for every datagram the link sent (deadline
# 120 s: a receiver that cannot keep up says so), then prints the link's log and every counter
# of uigcdec (frames sent = decoded + dropped + lost + late + lost after the last one).
# The receiver is `udpsrc ! uigcdec` on purpose: it tests the decoder's own accounting of every
# datagram (a deployed receiver puts uigcsrc and a queue in front: receive-display.sh).
. "$(dirname "$0")/common.sh"
drop="${1:-0.2}"; frames="${2:-100}"; file="${3:-$root/../shared/data/video/vtest.avi}"
linksim="$GST_PLUGIN_PATH/uigc-linksim"
[ -x "$linksim" ] || { echo "uigc-linksim not found next to the plugin ($GST_PLUGIN_PATH): cargo build --release" >&2; exit 1; }
tmp="$(mktemp -d)"
recv=""; link=""
cleanup() { for p in $recv $link; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
gst-launch-1.0 -m udpsrc address="$HOST" port="$PORT" ! uigcdec name=d stats-every=1 \
  ! videoconvert ! fakesink >"$tmp/recv.log" 2>&1 &
recv=$!
"$linksim" --to "$HOST:$PORT" --loss "$drop" --duplicate "${DUP:-0.05}" --reorder "${REORDER:-0.05}" \
  --hostile "${HOSTILE:-0}" --seed "${SEED:-1}" --spare-first 1 --idle-exit 2 >"$tmp/link.log" &
link=$!
for _ in $(seq 100); do grep -q '^port ' "$tmp/link.log" && break; sleep 0.1; done
lport="$(sed -n 's/^port //p' "$tmp/link.log")"
[ -n "$lport" ] || { echo "uigc-linksim did not start" >&2; exit 1; }
if [ -f "$file" ]; then
  src=(filesrc location="$file" ! decodebin ! videoconvert)
else
  echo "note: $file absent, sending videotestsrc" >&2
  src=(videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=10/1 ! videoconvert)
fi
gst-launch-1.0 -q "${src[@]}" ! identity eos-after="$frames" ! uigcenc refresh-frames="${REFRESH:-20}" \
  ! udpsink host=127.0.0.1 port="$lport" >"$tmp/send.log" 2>&1 \
  || { echo "sender failed:" >&2; cat "$tmp/send.log" >&2; exit 1; }
wait "$link"; link=""
report="$(tail -1 "$tmp/link.log")"
sent="$(echo "$report" | sed -E 's/.*"delivered":([0-9]+).*/\1/')"
hostile="$(echo "$report" | sed -E 's/.*"hostile":([0-9]+).*/\1/')"
want=$((sent + hostile))
counter() { grep -o "$1=(guint64)[0-9]*" "$tmp/recv.log" | tail -1 | grep -o '[0-9]*$' || echo 0; }
accounted() { echo $(( $(counter frames-decoded) + $(counter frames-dropped) + $(counter frames-late) + $(counter frames-duplicate) )); }
deadline=$((SECONDS + 120))
while [ "$(accounted)" -lt "$want" ]; do
  if [ $SECONDS -ge $deadline ]; then
    echo "after 120 s the receiver accounted for $(accounted) of $want datagrams" >&2
    break
  fi
  sleep 0.2
done
echo "link: $report"
received="$(echo "$report" | sed -E 's/.*"received":([0-9]+).*/\1/')"
printf 'the sender sent %s packets, drop=%s; the receiver counted: ' "$received" "$drop"
for c in decoded dropped lost late duplicate concealed behind; do printf '%s %s, ' "$c" "$(counter frames-$c)"; done
echo "datagrams accounted $(accounted) of $want"
grep -E 'WARNING|ERROR' "$tmp/recv.log" | head -5 || true
