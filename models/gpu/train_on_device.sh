#!/usr/bin/env bash
# Runs on the GPU machine (PyTorch installed, no network): ~9 minutes of bf16 training from a pack made
# by `python -m uigc_models.gpu_pack pack ...` (this script is copied into the pack as run.sh).
#
#   OUT=/path/to/returned/files bash PACK/run.sh            # the real run (CUDA if present)
#   OUT=/tmp/o DRY_RUN=1 bash PACK/run.sh                    # 3 tiny steps on the CPU (CI test)
#   MINUTES=5 OUT=... bash PACK/run.sh                       # another training length
#
# With the project's device tool (it sends the checkout it was started in, 64 MiB in all with what is
# carried): from models/ of that checkout,
#   python -m uigc_models.gpu_pack pack --ckpt RUN_OR_CKPT --out gpu/pack --max-side 768 --quality 90
#   (--total-mib auto: what the tracked files leave of the 64 MiB), then
#   run(command="OUT=$OUT bash models/gpu/pack/run.sh", carry=["models/gpu/pack"], timeout_s=600)
# Writes $OUT/gpu_ckpt.pt (<= 16 MiB), train.log, metrics.jsonl, status.json, config.json, run.log.
# Back here: python -m uigc_models.gpu_pack unpack --base <packed ckpt> --got gpu_ckpt.pt --out X.pt
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pack="${1:-$here}"
: "${OUT:?set OUT to the folder whose files come back}"
[ -f "$pack/pack.json" ] || { echo "no pack.json in $pack (make one with gpu_pack pack)" >&2; exit 2; }
mkdir -p "$OUT"
export UIGC_LPIPS_DIR="$pack/lpips" PYTHONPATH="$pack${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY="${PYTHON:-$(command -v python3 || command -v python)}"
args=(run --pack "$pack" --out "$OUT")
[ "${DRY_RUN:-0}" = 1 ] && args+=(--dry-run)
[ -n "${MINUTES:-}" ] && args+=(--minutes "$MINUTES")
cd "$pack"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.used,memory.total --format=csv,noheader || true
"$PY" -m uigc_models.gpu_pack "${args[@]}" 2>&1 | tee "$OUT/run.log"
