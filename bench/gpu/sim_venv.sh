#!/usr/bin/env bash
# A stand-in for the H200's Python here (no GPU): Python 3.12 with the packages that machine
# already has and convatlas's worker path uses (jax, numpy, h5py, opencv, pillow, rich, tqdm,
# absl-py, ml-dtypes, six) and nothing else: no TensorFlow, Keras, Celery or Redis. run.sh then
# installs the carried wheels into it exactly as there:
#
#   bash bench/gpu/sim_venv.sh                                  # → .cache/h200-sim (git-ignored)
#   PYTHON=.cache/h200-sim/bin/python bash bench/gpu/run.sh --smoke
#
# (jax 0.11.2 as there, its CPU wheel: the H200 has the CUDA 13 plugin beside it.)
set -euo pipefail
cd "$(dirname "$0")/../.."
PY312=${PY312:-}
if [ -z "$PY312" ]; then  # the first Python 3.12 that runs (a pyenv shim may not)
  for c in python3.12 /root/.pyenv/versions/3.12*/bin/python3.12; do
    if "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then PY312=$c; break; fi
  done
fi
[ -n "$PY312" ] || { echo "no Python 3.12 here: set PY312" >&2; exit 2; }
VENV=.cache/h200-sim
[ -x "$VENV/bin/python" ] || "$PY312" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "jax==0.11.2" "jaxlib==0.11.2" numpy h5py opencv-python-headless pillow rich tqdm \
  absl-py ml-dtypes six packaging shellingham
"$VENV/bin/python" -c "import jax, numpy, cv2, h5py; print('h200 stand-in:', jax.__version__, numpy.__version__)"
