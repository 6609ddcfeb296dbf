#!/usr/bin/env bash
# What the device machine runs for issue 15's GPU check: the carried peer wheels, then benchmarks/gpu.py.
#
#   bash benchmarks/gpu_run.sh [gpu.py arguments]     # from the repository root, on a machine with one CUDA GPU
#
# The wheels (.whl/, ignored by git, carried with the call) hold the peers the device image lacks: inf-cl,
# siglip-kernel, open_clip_torch and its pure dependencies ftfy and wcwidth. They go to /tmp/site, never into the
# image's own environment; a wheel that fails to install leaves its peer missing, which gpu.py reports (not
# fatal). contrasphere itself runs from src/ on PYTHONPATH (an editable install would need a build backend from a
# registry, which the machine cannot reach). Everything is logged to $OUT/gpu.log and the report goes to
# $OUT/gpu.json, rewritten after every phase and speed case, so a run stopped early still returns what it measured.
# CONTRASPHERE_COMMIT, if set, is recorded as the commit (the device copy of the tree has no .git).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LIMIT=${GPU_LIMIT_S:-280}  # hard stop of gpu.py (its own budget, --budget-s, is 210 s by default)

{
  echo "== $(date -u +%FT%TZ) $(uname -m) $($PY --version 2>&1)"
  nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu,clocks.sm,clocks.max.sm \
    --format=csv 2>&1 || echo "nvidia-smi failed"
  SITE=/tmp/site
  mkdir -p "$SITE"
  if compgen -G ".whl/*.whl" >/dev/null; then
    echo "== installing $(ls .whl | tr '\n' ' ')"
    pip_install() {
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"
    }
    if ! pip_install .whl/*.whl; then
      echo "== the wheels together failed; one at a time"
      for wheel in .whl/*.whl; do pip_install "$wheel" || echo "   could not install $wheel"; done
    fi
  else
    echo "== no .whl/ folder: the peers that the image lacks will be reported missing"
  fi
  export PYTHONPATH="$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}"
  "$PY" -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.cuda.is_available())"
  timeout -k 10 "$LIMIT" "$PY" benchmarks/gpu.py --out "$OUT/gpu.json" "$@"
  rc=$?
  echo "== gpu.py exited with $rc at $(date -u +%FT%TZ)"
  exit $rc
} 2>&1 | tee "$OUT/gpu.log"
exit "${PIPESTATUS[0]}"
