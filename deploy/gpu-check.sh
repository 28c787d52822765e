#!/usr/bin/env bash
# GPU check for the day a GPU machine is at hand (docs/edge.md, "GPU check").
#
#   deploy/gpu-check.sh prepare    HERE (the build machine): builds the CLI with
#                                  --features cuda,tensorrt (no GStreamer, no gateway: the GPU
#                                  machine may have neither) into .gpu-carry/, with test frames
#                                  at 640x480 and 1280x720 (vtest.avi when present, else
#                                  videotestsrc); prints the size (the carry limit is 64 MiB)
#   deploy/gpu-check.sh run        THERE: probes the GPU, ONNX Runtime and its providers, then
#                                  per provider (cpu, cuda, tensorrt fp32, tensorrt fp16) and
#                                  size: encoder and decoder frames/s, first-frame latency
#                                  (warm-up) with an empty and with a filled TensorRT engine
#                                  cache, and packets made on the GPU decoded on the CPU with
#                                  the token differences against CPU packets counted
#   deploy/gpu-check.sh run --dry-run
#                                  the same with every provider replaced by cpu (tests the script
#                                  on a machine without a GPU)
#
# Environment (run): UIGC_BIN (the uigc binary; default .gpu-carry/uigc, else target/release),
# UIGC_ORT_LIBRARY (libonnxruntime.so; default: the one of python3's onnxruntime package),
# OUT (results folder; default $OUT when set, else ./gpu-check-out), FRAMES (frames per stream,
# default 10), TIME_LIMIT (seconds per command, default 240), PYTHON (the python whose
# onnxruntime to probe; default python3). Results: $OUT/gpu-check.log and
# $OUT/summary.txt. Never fails silently: every step prints ok/FAILED and the error line.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
carry="$root/.gpu-carry"
mode="${1:-}"
dry=0
[ "${2:-}" = "--dry-run" ] && dry=1

prepare() {
  set -e
  mkdir -p "$carry/frames640" "$carry/frames1280"
  # .gpu-carry/ is in .gitignore: the device tool carries ignored folders named in `carry`.
  # Own target folder: the default build in target/release stays as it is. SKIP_BUILD=1: frames
  # only (for a --dry-run with UIGC_BIN=target/release/uigc).
  [ "${SKIP_BUILD:-0}" = 1 ] || (cd "$root" && nice -n 5 cargo build --release --no-default-features --features cuda,tensorrt \
    --bin uigc --target-dir "$root/target/gpu")
  [ "${SKIP_BUILD:-0}" = 1 ] || cp "$root/target/gpu/release/uigc" "$carry/uigc"
  local vtest="$root/../shared/data/video/vtest.avi" n="${FRAMES:-10}" size
  for size in 640x480 1280x720; do
    local w="${size%x*}" h="${size#*x}" dir="$carry/frames${size%x*}"
    rm -f "$dir"/*.png
    if [ -f "$vtest" ]; then
      gst-launch-1.0 -q filesrc location="$vtest" ! decodebin ! videoconvert ! videoscale \
        ! "video/x-raw,format=RGB,width=$w,height=$h" ! identity eos-after="$n" \
        ! pngenc ! multifilesink location="$dir/f_%05d.png"
    else
      gst-launch-1.0 -q videotestsrc num-buffers="$n" pattern=ball \
        ! "video/x-raw,format=RGB,width=$w,height=$h" ! pngenc \
        ! multifilesink location="$dir/f_%05d.png"
    fi
  done
  echo "prepared $carry:"
  du -sh "$carry" "$carry"/* | sed 's/^/  /'
  echo "carry it with the repository (e.g. the device tool's carry: [\".gpu-carry\"]) and run"
  echo "  bash deploy/gpu-check.sh run"
}

# ---------------------------------------------------------------------------------------------
run_check() {
  local out="${OUT:-$root/gpu-check-out}"
  mkdir -p "$out"
  local log="$out/gpu-check.log" summary="$out/summary.txt"
  : >"$log"; : >"$summary"
  say() { echo "$*" | tee -a "$summary"; }
  limit="${TIME_LIMIT:-240}"
  local bin="${UIGC_BIN:-}"
  for b in "$bin" "$carry/uigc" "$root/target/release/uigc"; do
    if [ -n "$b" ] && [ -x "$b" ]; then bin="$b"; break; fi
  done
  [ -x "$bin" ] || { say "FAILED: no uigc binary (run 'deploy/gpu-check.sh prepare' here first)"; return 1; }
  say "uigc: $bin ($("$bin" --version 2>&1))"
  local model="${UIGC_MODEL:-$root/models/uigc-small}"
  # 1280x720 is 3600 tokens: above the default work limit (2048), give both ends more.
  local wl=(--work-limit 4096)
  say "model: $model"

  # --- probe ---------------------------------------------------------------------------------
  say "== probe"
  if command -v nvidia-smi >/dev/null; then
    say "gpu: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1 | head -1)"
  else
    say "gpu: no nvidia-smi"
  fi
  local py="${PYTHON:-python3}" ortdir=""
  if "$py" -c 'import onnxruntime' 2>/dev/null; then
    ortdir="$("$py" -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))')"
    say "python onnxruntime: $("$py" -c 'import onnxruntime as o; print(o.__version__, o.get_device(), o.get_available_providers())' 2>&1)"
    say "provider libraries: $(cd "$ortdir" && ls libonnxruntime* 2>/dev/null | tr '\n' ' ')"
  else
    say "python onnxruntime: not importable with $py"
  fi
  # CUDA / cuDNN / TensorRT libraries that pip packages bring (nvidia-*, tensorrt*).
  local extra=""
  if "$py" -c 'import sys' 2>/dev/null; then
    extra="$("$py" - <<'EOF' 2>/dev/null
import glob, os, site, sys
dirs = set()
for sp in site.getsitepackages() + [site.getusersitepackages()]:
    for pat in ("nvidia/*/lib", "tensorrt_libs", "tensorrt", "torch/lib"):
        for d in glob.glob(os.path.join(sp, pat)):
            if glob.glob(os.path.join(d, "*.so*")):
                dirs.add(d)
print(":".join(sorted(dirs)))
EOF
)"
  fi
  [ -n "$extra" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$extra"
  say "library folders added to LD_LIBRARY_PATH: ${extra:-none}"
  say "libnvinfer (TensorRT): $(echo "${LD_LIBRARY_PATH:-}" | tr ':' '\n' | while read -r d; do ls "$d"/libnvinfer.so.* 2>/dev/null; done | head -3 | tr '\n' ' ')"
  if [ -z "${UIGC_ORT_LIBRARY:-}" ] && [ -n "$ortdir" ]; then
    local lib
    lib="$(ls "$ortdir"/libonnxruntime.so* 2>/dev/null | grep -v providers | head -1)"
    [ -n "$lib" ] && export UIGC_ORT_LIBRARY="$lib"
  fi
  say "UIGC_ORT_LIBRARY=${UIGC_ORT_LIBRARY:-<default>}"
  # Engine caches: one fresh folder per provider and size under $out (--trt-cache below).

  # --- per provider and size -----------------------------------------------------------------
  local eps=(cpu cuda tensorrt tensorrt-fp16)
  local frames=${FRAMES:-10}
  stats() { # stats FILE: median encoder tokenizer+coding ms -> frames/s
    "$py" - "$1" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
if not rows:
    print("no frames"); sys.exit()
key = "tokenizer_ms" if "tokenizer_ms" in rows[0] else "decode_ms"
if key == "tokenizer_ms":
    t = [r["tokenizer_ms"] + r["coding_ms"] for r in rows[1:]] or [rows[0]["tokenizer_ms"] + rows[0]["coding_ms"]]
    tok = statistics.median(r["tokenizer_ms"] for r in rows[1:] or rows)
    print(f"{1000 / statistics.median(t):.1f} frames/s (median {statistics.median(t):.1f} ms: tokenizer {tok:.1f} ms)")
else:
    t = [r["decode_ms"] for r in rows[1:] or rows]
    net = [r.get("network_ms", 0) for r in rows[1:] or rows]
    print(f"{1000 / statistics.median(t):.1f} frames/s (median {statistics.median(t):.1f} ms: network {statistics.median(net):.1f} ms)")
EOF
  }
  for ep_name in "${eps[@]}"; do
    local ep="${ep_name%-fp16}" flags=()
    [ "$ep_name" = tensorrt-fp16 ] && flags+=(--fp16)
    [ "$dry" = 1 ] && ep=cpu
    for size in 640x480 1280x720; do
      local dir="$carry/frames${size%x*}" tag="${ep_name}-${size}"
      [ -d "$dir" ] || { say "$tag: no frames in $dir (prepare)"; continue; }
      say "== $tag (--ep $ep ${flags[*]:-})"
      local cache="$out/trt-$tag" pass
      rm -rf "$cache"
      for pass in empty-cache filled-cache; do
        [ "$pass" = filled-cache ] && [ "$ep" != tensorrt ] && continue
        local enc_out="$out/$tag.jsonl" err="$out/$tag.$pass.err"
        if timeout "$limit" "$bin" stream-encode "$dir" -o "$out/$tag.uigcs" --limit "$frames" \
          --model "$model" --ep "$ep" "${flags[@]}" --trt-cache "$cache" --warm-up "$size" "${wl[@]}" \
          >"$enc_out" 2>"$err"; then
          say "  encode ($pass): ok: $(grep -h 'warm-up' "$err" | sed 's/.*warm-up/warm-up/'); $(stats "$enc_out")"
        else
          say "  encode ($pass): FAILED: $(grep -v '^\s*$' "$err" | tail -1)"
          cat "$err" >>"$log"
          continue 2
        fi
        cat "$err" >>"$log"
      done
      grep -h 'loaded in' "$err" | sed 's/^/  /' | tee -a "$summary"
      # Decoder on this provider.
      local derr="$out/$tag.dec.err"
      if timeout "$limit" "$bin" stream-decode "$out/$tag.uigcs" -o "$out/$tag-frames" \
        --model "$model" --ep "$ep" "${flags[@]}" --trt-cache "$cache" --warm-up "$size" "${wl[@]}" \
        >"$out/$tag.dec.jsonl" 2>"$derr"; then
        say "  decode: ok: $(grep -h 'warm-up' "$derr" | sed 's/.*warm-up/warm-up/'); $(stats "$out/$tag.dec.jsonl")"
      else
        say "  decode: FAILED: $(grep -v '^\s*$' "$derr" | tail -1)"
      fi
      cat "$derr" >>"$log"
      rm -rf "$out/$tag-frames"
      # Packets of this provider decoded on the CPU, and token differences against the CPU.
      if [ "$ep" != cpu ] || [ "$dry" = 1 ]; then
        if "$bin" stream-decode "$out/$tag.uigcs" -o "$out/$tag-cpu" --model "$model" --ep cpu "${wl[@]}" \
          >/dev/null 2>>"$log"; then
          say "  its packets decode on the CPU: ok"
        else
          say "  its packets decode on the CPU: FAILED"
        fi
        rm -rf "$out/$tag-cpu"
        local diff=0 total=0 f
        for f in $(ls "$dir"/*.png | head -n 3); do
          "$bin" encode "$f" -o "$out/a.uigc" --model "$model" --ep "$ep" "${flags[@]}" \
            --trt-cache "$cache" "${wl[@]}" 2>>"$log" || continue
          "$bin" encode "$f" -o "$out/b.uigc" --model "$model" --ep cpu "${wl[@]}" 2>>"$log" || continue
          # `tokens` prints "NAME RxC t,t,...": compare the lists token by token.
          read -r d t < <(paste -d' ' \
            <("$bin" tokens "$out/a.uigc" --model "$model" "${wl[@]}" 2>/dev/null | awk '{ print $3 }' | tr ',' '\n') \
            <("$bin" tokens "$out/b.uigc" --model "$model" "${wl[@]}" 2>/dev/null | awk '{ print $3 }' | tr ',' '\n') \
            | awk 'NF == 2 { t++; if ($1 != $2) d++ } END { print d + 0, t + 0 }')
          diff=$((diff + d)); total=$((total + t))
        done
        say "  tokens differing from the CPU tokenizer (3 intra frames): $diff of $total"
      fi
    done
  done
  say "== done: $summary, full log $log"
}

case "$mode" in
  prepare) prepare ;;
  run) run_check ;;
  *) sed -n '2,26p' "$0"; exit 2 ;;
esac
