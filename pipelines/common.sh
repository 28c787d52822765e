# Sourced by the pipeline scripts: finds the plugin and a model, sets loopback defaults.
# Environment: GST_PLUGIN_PATH (default: this checkout's target/release, else target/debug),
# UIGC_MODEL (default: the shipped model, else the tiny test model), HOST (127.0.0.1), PORT (5600).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${GST_PLUGIN_PATH:-}" ]; then
  for d in "$root/target/release" "$root/target/debug"; do
    if [ -f "$d/libgstuigc.so" ]; then export GST_PLUGIN_PATH="$d"; break; fi
  done
fi
if ! gst-inspect-1.0 uigcenc >/dev/null 2>&1; then
  echo "uigc plugin not found: run 'cargo build --release' in $root (or set GST_PLUGIN_PATH)" >&2
  exit 1
fi
if [ -z "${UIGC_MODEL:-}" ] && [ ! -f "$root/models/uigc-small/manifest.toml" ] \
  && [ ! -f /usr/local/share/uigc/models/uigc-small/manifest.toml ] \
  && [ ! -f /usr/share/uigc/models/uigc-small/manifest.toml ]; then
  export UIGC_MODEL="$root/tests/data/tiny-model"
  echo "note: no shipped model found, using the tiny test model ($UIGC_MODEL)" >&2
fi
HOST="${HOST:-127.0.0.1}"
PORT="${PORT:-5600}"
# Without a display, show nothing rather than fail.
if [ -n "${DISPLAY:-}${WAYLAND_DISPLAY:-}" ]; then SINK="${SINK:-autovideosink}"; else SINK="${SINK:-fakesink}"; fi
