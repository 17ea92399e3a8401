#!/usr/bin/env bash
# Set up convatlas on a fresh Debian/Ubuntu machine: system packages, a virtualenv in .venv,
# the project with its dev extras. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/ensure_system_deps.sh

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "creating .venv" >&2
    "$PY" -m venv .venv
fi
stamp=.venv/.convatlas-installed
want=$(cat pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "installing convatlas and its dependencies into .venv (about a minute)" >&2
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi
