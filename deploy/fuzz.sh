#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets: parse_packet, token_decode, full_decode) one after
# the other for SECONDS each (default 60), starting from the committed seeds (fuzz/seeds/TARGET)
# plus what earlier runs found (fuzz/corpus/TARGET, not committed). Needs the nightly toolchain
# and cargo-fuzz: deploy/setup.sh --fuzz. Not part of deploy/test.sh or CI.
# Usage: deploy/fuzz.sh [SECONDS] [TARGET...]
# Environment: FUZZ_SANITIZER (default none: src/codec has no unsafe code, and overflow checks and
# debug assertions stay on; `address` for AddressSanitizer, a full rebuild), FUZZ_LOG_DIR (fuzz/logs).
# Exit status 1 when a target found a crash (the input is in fuzz/artifacts/TARGET/; turn it into
# a regression test in tests/fuzz_regressions.rs), 0 otherwise. Prints executions per target.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
secs="${1:-60}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(parse_packet token_decode full_decode)
san="${FUZZ_SANITIZER:-none}"
logs="${FUZZ_LOG_DIR:-$root/fuzz/logs}"; mkdir -p "$logs"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: needs the nightly toolchain and cargo-fuzz: bash deploy/setup.sh --fuzz" >&2
  exit 2
fi
# Build every target once, then run the binaries (no rebuild between targets).
cargo +nightly fuzz build --sanitizer "$san" >"$logs/build.log" 2>&1 || { echo "fuzz: build failed: $logs/build.log" >&2; tail -20 "$logs/build.log" >&2; exit 2; }
bin="$root/fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release"
fail=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="$logs/$t.log"
  echo "fuzz: $t for ${secs}s (log $log)"
  set +e
  "$bin/$t" -artifact_prefix="fuzz/artifacts/$t/" -max_total_time="$secs" -timeout=20 \
    -rss_limit_mb=4096 -max_len=4096 -print_final_stats=1 "fuzz/corpus/$t" "fuzz/seeds/$t" \
    >"$log" 2>&1
  rc=$?
  set -e
  execs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)"
  cov="$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -1 || true)"
  if [ "$rc" = 0 ]; then
    echo "fuzz: $t ok: ${execs:-?} executions in ${secs}s, $cov, corpus $(ls "fuzz/corpus/$t" | wc -l) inputs"
  else
    fail=1
    echo "fuzz: $t FAILED (exit $rc) after ${execs:-?} executions: see $log and fuzz/artifacts/$t/"
    grep -E 'panicked|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -5 || true
  fi
done
exit "$fail"
