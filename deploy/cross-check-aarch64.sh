#!/usr/bin/env bash
# Packets encoded on this x86-64 machine decode to identical token grids on aarch64 (run under
# qemu-user): the integer prior and the range coder are exact on both architectures, in every
# regeneration mode. Usage: deploy/cross-check-aarch64.sh [MODEL_DIR] [IMAGES...]
# Needs: rustup target aarch64-unknown-linux-gnu, gcc-aarch64-linux-gnu, qemu-user-static
# (deploy/setup.sh --dev installs them). The aarch64 build has no GStreamer and loads no ONNX
# Runtime: `uigc tokens` decodes packets to token grids with the integer prior only.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
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
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
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
exit $fail
