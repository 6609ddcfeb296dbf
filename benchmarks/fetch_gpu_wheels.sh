#!/usr/bin/env bash
# Fetch the peer wheels benchmarks/gpu_run.sh installs on the GPU machine (Python 3.12, no registry there) into
# .whl/ (keep it out of git: `echo /.whl/ >> .git/info/exclude`). Run from the repository root where pip reaches PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
download() {
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$@"
}
# inf-cl (needs numpy and triton, on the image); siglip-kernel (torch, triton); open_clip (not on the image) and
# its pure dependencies ftfy and wcwidth (timm, torchvision, regex, tqdm, huggingface-hub, safetensors are there)
download inf-cl==1.2.1 siglip-kernel==0.1.2 open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
ls -l .whl
