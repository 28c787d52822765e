#!/usr/bin/env bash
# Exact commands used to build models/uigc-small and models/uigc-small-k64 from a training run.
# usage: models/release_uigc_small.sh [RUN_OR_CKPT]   (default tok-k256-a; run from anywhere)
#   VERSION=0.3.0                      bundle version written into the manifests
#   INT_PRIOR=path/to/prior.bin        integer prior attached to uigc-small (prior_train attach);
#                                      without it uigc-small keeps the export's unigram prior
#   K64_RUN=name                       run of the K=64 codebook reduction (default <run>-k64)
set -euo pipefail
RUN=${1:-tok-k256-a}
PY=${PY:-$HOME/.cache/uigc/venv/bin/python}
VERSION=${VERSION:-0.1.0}
K64_RUN=${K64_RUN:-$(basename "$RUN" .pt)-k64}
cd "$(dirname "$0")"
$PY -m uigc_models.export --ckpt "$RUN" --out uigc-small --name uigc-small --version "$VERSION"
# evaluate reads the export's unigram prior.bin (its bpp column): before the integer prior replaces it
$PY -m uigc_models.evaluate --bundle uigc-small --out "$HOME/.cache/uigc/runs/eval-uigc-small"
if [ -n "${INT_PRIOR:-}" ]; then
    $PY -m uigc_models.prior_train attach --bundle uigc-small --prior "$INT_PRIOR"
fi
$PY -m uigc_models.reduce_codebook --ckpt "$RUN" --k 64 --run "$K64_RUN" --minutes ${K64_MINUTES:-5}
$PY -m uigc_models.export --ckpt "$K64_RUN" --out uigc-small-k64 --name uigc-small-k64 --version "$VERSION"
$PY -m uigc_models.evaluate --bundle uigc-small-k64 --out "$HOME/.cache/uigc/runs/eval-uigc-small-k64"
