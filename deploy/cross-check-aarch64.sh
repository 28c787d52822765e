#!/usr/bin/env bash
# Packets encoded on this x86-64 machine decode to identical token grids on aarch64 (run under
# qemu-user): the integer prior and the range coder are exact on both architectures, in every
# regeneration mode. Usage: deploy/cross-check-aarch64.sh [--gst] [MODEL_DIR] [IMAGES...]
# Needs: rustup target aarch64-unknown-linux-gnu, gcc-aarch64-linux-gnu, qemu-user-static
# (deploy/setup.sh --dev installs them). The aarch64 build has no GStreamer and loads no ONNX
# Runtime: `uigc tokens` decodes packets to token grids with the integer prior only.
#
# --gst (after the check above): cross-builds the GStreamer plugin and the CLI with default
# features for aarch64 against the arm64 sysroot of `deploy/setup.sh --cross`, runs the arm64
# gst-launch-1.0 under qemu-user with the aarch64 plugin and the aarch64 ONNX Runtime
# (videotestsrc -> uigcenc -> packets, packets -> uigcdec -> frames), does the same on x86-64 with
# the debug plugin, and checks: the packets of both are byte-identical, each side's packets decode
# to the same token grids on the other, and uigcdec decodes the other side's packets (the decoded
# pixels' largest difference between the two machines is printed). Not in CI (a cold cross build
# of the plugin takes about half an hour on 2 cores); its output is in deploy/README.md.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
gst=0
if [ "${1:-}" = --gst ]; then gst=1; shift; fi
model="${1:-}"
if [ -z "$model" ]; then
  if [ -f models/uigc-small/manifest.toml ]; then model=models/uigc-small; else model=tests/data/tiny-model-int; fi
fi
shift || true
imgs=("$@")
if [ ${#imgs[@]} -eq 0 ]; then
  if [ -d ../shared/data/kodak ]; then
    imgs=(../shared/data/kodak/kodim01.png ../shared/data/kodak/kodim04.png ../shared/data/kodak/kodim23.png)
  else
    imgs=(docs/sample/kodim23.png)
  fi
fi
target=aarch64-unknown-linux-gnu
# Both builds (with and without GStreamer) link with the same wrapper: cargo passes the linker
# to every rustc of the target, so a different one would rebuild every dependency at each switch.
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="$here/deploy/cross-linker-aarch64.sh"
echo "[cross] building uigc for $target (no GStreamer)"
cargo build --quiet --profile cross --no-default-features --bin uigc --target "$target"
cargo build --quiet --profile cross --no-default-features --bin uigc
tdir="${CARGO_TARGET_DIR:-target}"
x86=$tdir/cross/uigc
arm=$tdir/$target/cross/uigc
file "$arm" | grep -q aarch64 || { echo "[cross] $arm is not an aarch64 binary" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
packets=()
for img in "${imgs[@]}"; do
  name="$(basename "${img%.*}")"
  "$x86" encode "$img" -o "$work/$name.all.uigc" --model "$model" >/dev/null 2>&1
  "$x86" encode "$img" -o "$work/$name.300.uigc" --model "$model" --max-bytes 300 >/dev/null 2>&1
  "$x86" encode "$img" -o "$work/$name.q.uigc" --model "$model" --keep quarter --extra 20 >/dev/null 2>&1
  packets+=("$work/$name.all.uigc" "$work/$name.300.uigc" "$work/$name.q.uigc")
done
# A camera stream: an intra packet, then inter packets (changed tokens, refresh bands, colour).
frames=()
if [ -d ../shared/data/kodak ]; then
  k=../shared/data/kodak
  frames=("$k/kodim01.png" "$k/kodim01.png" "$k/kodim02.png" "$k/kodim03.png" "$k/kodim03.png")
else
  frames=(docs/sample/kodim23.png docs/sample/kodim23.png)
fi
"$x86" stream-encode "${frames[@]}" -o "$work/stream.uigcs" --model "$model" --refresh-frames 3 \
  --change-threshold 0 >/dev/null 2>&1
packets+=("$work/stream.uigcs")
fail=0
for regen in argmax iterative:3 sample:2; do
  "$x86" tokens "${packets[@]}" --model "$model" --regen "$regen" --threads 2 > "$work/x86.txt"
  qemu-aarch64-static -L /usr/aarch64-linux-gnu "$arm" tokens "${packets[@]}" --model "$model" \
    --regen "$regen" --threads 1 > "$work/arm.txt"
  if cmp -s "$work/x86.txt" "$work/arm.txt"; then
    echo "[cross] $regen: ${#packets[@]} packet files ($(wc -l < "$work/x86.txt") grids, inter packets included) decode to identical token grids on x86-64 and aarch64"
  else
    echo "[cross] $regen: MISMATCH between x86-64 and aarch64" >&2
    diff <(cut -c1-120 "$work/x86.txt") <(cut -c1-120 "$work/arm.txt") >&2 || true
    fail=1
  fi
done
[ $gst = 1 ] || exit $fail

# --- --gst: the plugin's elements on aarch64 under qemu ------------------------------------------
uigc_home="${UIGC_HOME:-$HOME/.cache/uigc}"
sysroot="${UIGC_AARCH64_SYSROOT:-$uigc_home/sysroot-aarch64}"
ort_arm="$uigc_home/lib-aarch64/libonnxruntime.so"
for f in "$sysroot/usr/bin/gst-launch-1.0" "$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig/gstreamer-video-1.0.pc" "$ort_arm"; do
  [ -e "$f" ] || { echo "[cross] $f missing: run deploy/setup.sh --cross" >&2; exit 1; }
done
echo "[cross] building the plugin and uigc for $target with GStreamer (sysroot $sysroot)"
export UIGC_AARCH64_SYSROOT="$sysroot" PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR_aarch64_unknown_linux_gnu="$sysroot"
export PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu="$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig:$sysroot/usr/share/pkgconfig"
export PKG_CONFIG_PATH_aarch64_unknown_linux_gnu=
cargo build --quiet --profile cross --target "$target" --lib --bin uigc
cargo build --quiet --lib --bin uigc
arm_dir=$tdir/$target/cross
x86_dir=$tdir/debug
for f in "$arm_dir/libgstuigc.so" "$arm_dir/uigc"; do
  file "$f" | grep -q aarch64 || { echo "[cross] $f is not an aarch64 binary" >&2; exit 1; }
done
echo "[cross] aarch64: $(du -h "$arm_dir/libgstuigc.so" | cut -f1) libgstuigc.so, $(du -h "$arm_dir/uigc" | cut -f1) uigc; highest glibc symbol version needed: $(aarch64-linux-gnu-objdump -T "$arm_dir/libgstuigc.so" "$arm_dir/uigc" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)"
# arm64 GStreamer under qemu: its own registry, only the plugins used, no forked scanner (a
# forked arm64 gst-plugin-scanner would need binfmt_misc).
mkdir -p "$work/gst-sys" "$work/gst-uigc" "$work/x86" "$work/arm" "$work/x86-by-arm" "$work/arm-by-x86"
for p in coreelements videotestsrc videoconvertscale multifile; do
  ln -s "$sysroot/usr/lib/aarch64-linux-gnu/gstreamer-1.0/libgst$p.so" "$work/gst-sys/"
done
ln -s "$here/$arm_dir/libgstuigc.so" "$work/gst-uigc/" 2>/dev/null || ln -s "$arm_dir/libgstuigc.so" "$work/gst-uigc/"
arm_run() {
  env QEMU_LD_PREFIX="$sysroot" \
    LD_LIBRARY_PATH="$sysroot/usr/lib/aarch64-linux-gnu:$sysroot/lib/aarch64-linux-gnu" \
    GST_REGISTRY_FORK=no GST_REGISTRY_1_0="$work/arm-registry.bin" \
    GST_PLUGIN_SYSTEM_PATH_1_0="$work/gst-sys" GST_PLUGIN_PATH_1_0="$work/gst-uigc" \
    UIGC_ORT_LIBRARY="$ort_arm" UIGC_MODEL="$here/$model" qemu-aarch64-static "$@"
}
x86_run() {
  env GST_PLUGIN_PATH_1_0="$x86_dir" GST_PLUGIN_PATH="$x86_dir" UIGC_MODEL="$here/$model" "$@"
}
nframes=${UIGC_CROSS_FRAMES:-4}
# SMPTE bars moving 8 pixels a frame: an intra packet, then inter packets with changed tokens.
# RGB in: uigcenc uses it as is (no colour conversion between the source and the tokenizer).
src=(videotestsrc num-buffers="$nframes" pattern=smpte horizontal-speed=8
  ! "video/x-raw,format=RGB,width=320,height=240,framerate=10/1")
t0=$(date +%s%N)
x86_run gst-launch-1.0 -q "${src[@]}" ! uigcenc ! multifilesink location="$work/x86/p-%05d.uigc"
t1=$(date +%s%N)
arm_run "$sysroot/usr/bin/gst-launch-1.0" -q "${src[@]}" ! uigcenc threads=1 ! multifilesink location="$work/arm/p-%05d.uigc"
t2=$(date +%s%N)
echo "[cross] uigcenc, $nframes frames 320x240, model $model: x86-64 $(( (t1 - t0) / 1000000 )) ms, aarch64 under qemu $(( (t2 - t1) / 1000000 )) ms"
n_x86=$(find "$work/x86" -name 'p-*.uigc' | wc -l); n_arm=$(find "$work/arm" -name 'p-*.uigc' | wc -l)
if [ "$n_x86" -ne "$nframes" ] || [ "$n_arm" -ne "$nframes" ]; then
  echo "[cross] FAIL: $n_x86 packets on x86-64, $n_arm on aarch64, $nframes expected" >&2; exit 1
fi
same=0
for f in "$work"/x86/p-*.uigc; do
  if cmp -s "$f" "$work/arm/$(basename "$f")"; then same=$((same + 1)); fi
done
sizes="$(for f in "$work"/arm/p-*.uigc; do stat -c %s "$f"; done | paste -sd/)"
if [ $same -eq "$nframes" ]; then
  echo "[cross] uigcenc: the $nframes packets ($sizes bytes) are byte-identical on x86-64 and aarch64"
else
  echo "[cross] FAIL uigcenc: only $same of $nframes packets are byte-identical on x86-64 and aarch64" >&2
  fail=1
fi
# Token grids of each side's packets, decoded on both machines (integer prior only).
to_uigcs() {  # packet files -> one .uigcs (u32 LE length + packet per record)
  python3 - "$@" <<'PY'
import struct, sys
out, files = sys.argv[1], sys.argv[2:]
with open(out, "wb") as o:
    for f in files:
        b = open(f, "rb").read()
        o.write(struct.pack("<I", len(b)) + b)
PY
}
to_uigcs "$work/x86.uigcs" "$work"/x86/p-*.uigc
to_uigcs "$work/arm.uigcs" "$work"/arm/p-*.uigc
for who in x86 arm; do
  "$x86" tokens "$work/$who.uigcs" --model "$model" > "$work/tok-$who-on-x86.txt"
  arm_run "$arm_dir/uigc" tokens "$work/$who.uigcs" --model "$model" --threads 1 > "$work/tok-$who-on-arm.txt"
  if cmp -s "$work/tok-$who-on-x86.txt" "$work/tok-$who-on-arm.txt"; then
    echo "[cross] packets made on $who decode to identical token grids on x86-64 and aarch64 ($(wc -l < "$work/tok-$who-on-x86.txt") grids)"
  else
    echo "[cross] FAIL: packets made on $who decode to different token grids on x86-64 and aarch64" >&2
    fail=1
  fi
done
# uigcdec on each machine decodes the other's packets; x86-64's packets are decoded on both.
dec=(! uigcdec ! "video/x-raw,format=RGB" ! multifilesink)
for who in x86 arm; do
  x86_run gst-launch-1.0 -q multifilesrc location="$work/$who/p-%05d.uigc" stop-index=$((nframes - 1)) \
    caps=video/x-uigc "${dec[@]}" location="$work/dec-$who-on-x86-%05d.rgb"
done
arm_run "$sysroot/usr/bin/gst-launch-1.0" -q multifilesrc location="$work/x86/p-%05d.uigc" \
  stop-index=$((nframes - 1)) caps=video/x-uigc ! uigcdec threads=1 ! "video/x-raw,format=RGB" \
  ! multifilesink location="$work/dec-x86-on-arm-%05d.rgb"
python3 - "$work" "$nframes" <<'PY' || fail=1
import os, sys
work, n = sys.argv[1], int(sys.argv[2])
worst = 0
for i in range(n):
    fr = {k: open(os.path.join(work, f"dec-{k}-{i:05d}.rgb"), "rb").read()
          for k in ("x86-on-x86", "arm-on-x86", "x86-on-arm")}
    if any(len(b) != 320 * 240 * 3 for b in fr.values()):
        print(f"[cross] FAIL uigcdec: frame {i}: {[len(b) for b in fr.values()]} bytes", file=sys.stderr)
        sys.exit(1)
    a, b = fr["x86-on-x86"], fr["x86-on-arm"]
    worst = max(worst, max(abs(x - y) for x, y in zip(a, b)))
print(f"[cross] uigcdec: x86-64 decoded aarch64's {n} packets, aarch64 decoded x86-64's ({n} "
      f"RGB frames each); the same packets decoded on the two machines differ by at most {worst} "
      "levels per pixel (the decoder network is floating point; the tokens are exact)")
PY
exit $fail
