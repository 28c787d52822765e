#!/usr/bin/env bash
# Quick start: installs what is needed, builds uigc, then encodes and decodes the sample photo
# with the shipped default model. Usage: deploy/demo.sh [IMAGE] (default: docs/sample/kodim23.png)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash deploy/setup.sh --runtime
cargo build --release --quiet
img="${1:-docs/sample/kodim23.png}"
mkdir -p out
name="$(basename "${img%.*}")"
./target/release/uigc encode "$img" -o "out/$name.uigc"
./target/release/uigc info "out/$name.uigc"
./target/release/uigc decode "out/$name.uigc" -o "out/$name.decoded.png"
echo "reconstruction: out/$name.decoded.png"
