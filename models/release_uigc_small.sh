#!/usr/bin/env bash
# Exact commands used to build models/uigc-small and models/uigc-small-k64 from a training run.
# usage: models/release_uigc_small.sh [RUN]   (default RUN=tok-k256-a; run from anywhere)
set -euo pipefail
RUN=${1:-tok-k256-a}
PY=${PY:-$HOME/.cache/uigc/venv/bin/python}
cd "$(dirname "$0")"
$PY -m uigc_models.export --ckpt "$RUN" --out uigc-small --name uigc-small --version 0.1.0
$PY -m uigc_models.evaluate --bundle uigc-small --out "$HOME/.cache/uigc/runs/eval-uigc-small"
$PY -m uigc_models.reduce_codebook --ckpt "$RUN" --k 64 --run "$RUN-k64" --minutes ${K64_MINUTES:-5}
$PY -m uigc_models.export --ckpt "$RUN-k64" --out uigc-small-k64 --name uigc-small-k64 --version 0.1.0
$PY -m uigc_models.evaluate --bundle uigc-small-k64 --out "$HOME/.cache/uigc/runs/eval-uigc-small-k64"
