#!/usr/bin/env bash
# Runs every test: installs what is needed (deploy/setup.sh --dev), then formatting and lint
# checks, the Rust tests (unit, integration, CLI) and the Python tests of models/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bash deploy/setup.sh --dev
venv="${UIGC_HOME:-$HOME/.cache/uigc}/venv"

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --quiet 2>&1 | tee /tmp/uigc-cargo-test.log
echo "== cross-architecture: x86-64 packets decode identically on aarch64 (qemu)"
bash deploy/cross-check-aarch64.sh
echo "== pytest models/tests"
set +e
(cd models && "$venv/bin/python" -m pytest -q tests)
rc=$?
set -e
# pytest exits 5 when it collected no test: that is a failure of this suite, not a pass.
if [ $rc -ne 0 ]; then echo "pytest failed (exit $rc)"; exit $rc; fi
echo "== all tests passed"
