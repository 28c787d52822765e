#!/usr/bin/env bash
# Edge benchmark: encoder-only and decoder-only frames/s of the uigcenc / uigcdec elements
# (gst-launch-1.0) on videotestsrc and on real footage (vtest.avi scaled), model load excluded.
#
# Usage: deploy/bench-edge.sh [WIDTHxHEIGHT=640x480] [FRAMES=25] [RUNS=3]
# Environment:
#   EP=cpu|cuda|tensorrt|auto   execution provider of both elements (default cpu)
#   ELEMENT_PROPS="..."         extra properties for both elements (e.g. "threads=2 fp16=true")
#   ENC_PROPS="..."             extra properties for uigcenc only (e.g. "encoder=fast")
#   VTEST=/path/vtest.avi       real footage (default ../shared/data/video/vtest.avi; skipped
#                               when absent)
#   SOURCES="testsrc vtest"     which inputs to run
#   UIGC_MODEL, GST_PLUGIN_PATH as for pipelines/common.sh
#
# How: every figure is (FRAMES - 5) / (time of FRAMES frames - time of 5 frames), so model
# loading, warm-up and pipeline start cancel out; each is the median of RUNS runs. Inputs are
# decoded and scaled to raw RGB files first, so the encoder figure does not include the video
# decoder or the scaler; the decoder-only figure decodes the encoder's own packets (one file
# per packet through multifilesrc), stream mode (intra first, then inter packets) as sent.
set -euo pipefail
. "$(dirname "$0")/../pipelines/common.sh"
size="${1:-640x480}"; frames="${2:-25}"; runs="${3:-3}"
w="${size%x*}"; h="${size#*x}"
base=5
[ "$frames" -gt "$base" ] || { echo "FRAMES must be > $base" >&2; exit 2; }
ep="${EP:-cpu}"
props="ep=$ep ${ELEMENT_PROPS:-}"
[ -n "${UIGC_MODEL:-}" ] && props="$props model=$UIGC_MODEL"
vtest="${VTEST:-$root/../shared/data/video/vtest.avi}"
sources="${SOURCES:-testsrc vtest}"
work="$(mktemp -d "${TMPDIR:-/tmp}/uigc-bench-edge.XXXXXX")"
trap 'rm -rf "$work"' EXIT

now() { date +%s.%N; }
# Seconds one gst-launch-1.0 run takes.
timed() {
  local t0 t1
  t0=$(now)
  # shellcheck disable=SC2086
  gst-launch-1.0 -q "$@" >"$work/log" 2>&1 || { cat "$work/log" >&2; return 1; }
  t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f\n", b - a }'
}
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Raw RGB input of `frames` frames: $work/<src>.rgb
make_raw() {
  local src=$1
  case "$src" in
    testsrc)
      gst-launch-1.0 -q videotestsrc num-buffers="$frames" pattern=smpte \
        ! "video/x-raw,format=RGB,width=$w,height=$h,framerate=10/1" \
        ! filesink location="$work/$src.rgb" ;;
    vtest)
      gst-launch-1.0 -q filesrc location="$vtest" ! decodebin ! videoconvert ! videoscale \
        ! "video/x-raw,format=RGB,width=$w,height=$h" \
        ! identity eos-after="$frames" ! filesink location="$work/$src.rgb" ;;
  esac
}

raw_src() { # raw_src SRC N: a pipeline head giving N frames of SRC
  echo "filesrc location=$work/$1.rgb ! rawvideoparse format=rgb width=$w height=$h framerate=10/1 ! identity eos-after=$2"
}

enc_run() { # enc_run SRC N
  # shellcheck disable=SC2046
  timed $(raw_src "$1" "$2") ! uigcenc $props ${ENC_PROPS:-} ! fakesink sync=false
}

dec_run() { # dec_run SRC N
  timed multifilesrc location="$work/$1-pkt/p%05d.uigc" index=0 stop-index=$(($2 - 1)) \
    caps="video/x-uigc,framerate=10/1" ! uigcdec $props ! fakesink sync=false
}

fps() { # fps FUNC SRC: median frames/s of (frames - base) frames, load excluded
  local i a b
  for i in $(seq "$runs"); do
    a=$("$1" "$2" "$base"); b=$("$1" "$2" "$frames")
    awk -v a="$a" -v b="$b" -v n=$((frames - base)) 'BEGIN { if (b > a) printf "%.3f\n", n / (b - a); else print "nan" }'
  done | median
}

echo "bench-edge: $size, $frames frames ($((frames - base)) timed), median of $runs runs, EP=$ep," \
  "props '$props', encoder props '${ENC_PROPS:-}', $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for src in $sources; do
  if [ "$src" = vtest ] && [ ! -f "$vtest" ]; then
    echo "vtest: $vtest not found, skipped"; continue
  fi
  make_raw "$src"
  mkdir -p "$work/$src-pkt"
  # shellcheck disable=SC2046
  gst-launch-1.0 -q $(raw_src "$src" "$frames") ! uigcenc $props ${ENC_PROPS:-} \
    ! multifilesink location="$work/$src-pkt/p%05d.uigc"
  bytes=$(cat "$work/$src-pkt"/p*.uigc | wc -c)
  enc=$(fps enc_run "$src")
  dec=$(fps dec_run "$src")
  printf '%-8s %s: encoder %6.2f frames/s, decoder %6.2f frames/s (%d B/frame)\n' \
    "$src" "$size" "$enc" "$dec" $((bytes / frames))
done
