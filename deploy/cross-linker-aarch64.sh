#!/usr/bin/env bash
# Linker of the aarch64 cross builds (deploy/cross-check-aarch64.sh, with and without --gst): Debian's
# cross gcc, told where the arm64 sysroot's shared libraries are so that the libraries GStreamer
# and GLib pull in (libffi, libpcre2, liborc, ...) resolve at link time.
set -euo pipefail
sysroot="${UIGC_AARCH64_SYSROOT:-${UIGC_HOME:-$HOME/.cache/uigc}/sysroot-aarch64}"
exec aarch64-linux-gnu-gcc \
  -Wl,-rpath-link,"$sysroot/usr/lib/aarch64-linux-gnu" \
  -Wl,-rpath-link,"$sysroot/lib/aarch64-linux-gnu" "$@"
