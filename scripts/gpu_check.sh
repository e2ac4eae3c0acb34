#!/usr/bin/env bash
# One command for a CUDA machine without TensorRT / onnxruntime-gpu / a package index (see scripts/gpu/README.md):
#   scripts/gpu_check.sh [OUT_DIR]         (default: gpu-check-out; the whole run stays under 8 minutes)
# Runs `pytest -m gpu`, then every scripts/gpu/check_*.py as `python CHECK --json OUT/check_NAME.json`, and writes
# OUT/report.json + OUT/report.md: what ran, what passed, every figure, and everything that could not be tested and why.
# The 8 minutes hold by construction: every step's timeout is cut to what is left of BUDGET_S (default 450 s, less
# 20 s kept for the report); a step with under 15 s left is not started and the report lists it as not run.
# WHEELS=DIR installs small pure-Python wheels brought along (pytest, pluggy, iniconfig, tqdm, polygraphy) with
# pip --no-index first. PYTHON=... picks the interpreter (default: .venv/bin/python if present, else python3).
set -u
cd "$(dirname "$0")/.."
OUT="${1:-gpu-check-out}"
mkdir -p "$OUT"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export WASTE_EDGE_CACHE="${WASTE_EDGE_CACHE:-$OUT/cache}"
START=$(date +%s)
BUDGET_S="${BUDGET_S:-450}"
# seconds a step may take: its own cap, cut to what is left of the budget (20 s kept for the report)
allow() { local left=$(( BUDGET_S - 20 - ($(date +%s) - START) )); [ "$left" -lt "$1" ] && echo "$left" || echo "$1"; }
log() { echo "[gpu_check $(( $(date +%s) - START ))s] $*" | tee -a "$OUT/gpu_check.log"; }
: > "$OUT/gpu_check.log"

if [ -n "${WHEELS:-}" ]; then
  log "installing brought-along wheels from $WHEELS (no index)"
  "$PY" -m pip install -q --no-index --find-links "$WHEELS" "$WHEELS"/*.whl >> "$OUT/gpu_check.log" 2>&1 || log "some wheels did not install (see the log)"
fi

log "environment probe"
timeout "$(allow 60)" "$PY" scripts/gpu/report.py --probe "$OUT/environment.json" 2>>"$OUT/gpu_check.log" || log "environment probe failed"
if command -v nvidia-smi >/dev/null 2>&1; then nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true; fi
if "$PY" -c "import json,sys; sys.exit(0 if json.load(open('$OUT/environment.json')).get('cuda_devices', 0) > 0 else 1)" 2>/dev/null; then
  log "CUDA GPU found: $("$PY" -c "import json; print(json.load(open('$OUT/environment.json'))['cuda_device_names'])")"
else
  log "NO CUDA GPU FOUND on this machine: the GPU checks below will report 'skipped'"
fi

T=$(allow 240)
log "pytest -m gpu (timeout $T s)"
if [ "$T" -lt 15 ]; then
  log "pytest -m gpu not started: the time budget is spent"
  echo "budget" > "$OUT/pytest-gpu.rc"
elif "$PY" -c "import pytest" 2>/dev/null; then
  timeout "$T" "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml="$OUT/pytest-gpu.xml" > "$OUT/pytest-gpu.txt" 2>&1
  echo $? > "$OUT/pytest-gpu.rc"
  tail -3 "$OUT/pytest-gpu.txt" | tee -a "$OUT/gpu_check.log"
else
  log "pytest is not installed: bring its wheels (WHEELS=DIR)"
  echo "missing" > "$OUT/pytest-gpu.rc"
fi

for check in scripts/gpu/check_*.py; do
  [ -e "$check" ] || continue
  name=$(basename "$check" .py); name=${name#check_}
  T=$(allow 150)
  if [ "$T" -lt 15 ]; then
    log "check $name not started: the time budget is spent"
    echo "budget" > "$OUT/check_$name.rc"
    continue
  fi
  log "check $name (timeout $T s)"
  timeout "$T" "$PY" "$check" --json "$OUT/check_$name.json" > "$OUT/check_$name.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || log "check $name exited $rc (see $OUT/check_$name.log)"
  echo $rc > "$OUT/check_$name.rc"
done

log "report"
"$PY" scripts/gpu/report.py --out "$OUT" --seconds $(( $(date +%s) - START ))
status=$?
log "done in $(( $(date +%s) - START )) s: $OUT/report.md, $OUT/report.json"
exit $status
