#!/usr/bin/env bash
# GPU check of issue 4 (at most 5 minutes on one H200, no network): score harmonized_resnet50's architecture and a
# ViT-B/16 (random weights) on the full-size simulated Arcaro2020 twin with both protocols; print images/second of
# the activations extractor, its ratio to a bare forward loop on the same GPU, and peak GPU memory.
#
# Prepare here (PyPI reachable):   python benchmarks/gpu_wheels.py        # -> .whl/ (about 55 MiB, git-excluded)
# Run on the device machine:       bash benchmarks/gpu_check.sh           # carry: [".whl"]; timeout_s >= 320
# Results: stdout table, $OUT/gpu_throughput.json, $OUT/gpu_check.log  ->  copy the figures to benchmarks/RESULTS.md
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
OUT=${OUT:-$(mktemp -d)}
SITE=/tmp/bsitmaps-site
if ! ls .whl/*.whl >/dev/null 2>&1; then
  echo "gpu_check: no wheels in .whl/ - run 'python benchmarks/gpu_wheels.py' first and carry .whl" >&2
  exit 2
fi
# Only local wheels: NumPy 1.26 / pandas 2.2 / xarray 2022.3 / brainscore (the image has NumPy 2, no brainscore).
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
  || { echo "gpu_check: installing the carried wheels failed" >&2; exit 3; }
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 MPLBACKEND=Agg BS_INSTALL_DEPENDENCIES=no RESULTCACHING_DISABLE=1 \
  AWS_EC2_METADATA_DISABLED=true BRAINSCORE_SKIP_MEMORY_CHECK=1 BRAINSCORE_ITMAPS_HOME=/tmp/bsitmaps-home
# brainscore-vision imports cv2 at module level but uses it only for microsaccades (never requested here). If the
# image's OpenCV is built for NumPy 2 only, put a placeholder module first on the path that fails loudly on use.
if ! python3 -c "import cv2" >/dev/null 2>&1; then
  mkdir -p /tmp/bsitmaps-cv2
  cat > /tmp/bsitmaps-cv2/cv2.py <<'PY'
"""Placeholder for the GPU check: this machine's OpenCV needs NumPy 2; cv2 is only used for microsaccades."""


def __getattr__(name):
    raise ImportError(f"cv2.{name} is unavailable in the GPU check (OpenCV built for NumPy 2)")
PY
  export PYTHONPATH="/tmp/bsitmaps-cv2:$PYTHONPATH"
  echo "gpu_check: note: cv2 placeholder in use (image OpenCV incompatible with NumPy 1.26)"
fi
echo "gpu_check: wheels installed in $(( $(date +%s) - T0 )) s"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
timeout 285 python3 benchmarks/gpu_throughput.py --out "$OUT" --budget 225 2>&1 \
  | tee "$OUT/gpu_check.log" | grep -v -E "it/s\]|s/it\]|fold/s\]|image/s\]"
rc=${PIPESTATUS[0]}
echo "gpu_check: exit $rc after $(( $(date +%s) - T0 )) s (figures: $OUT/gpu_throughput.json)"
exit "$rc"
