#!/usr/bin/env bash
# Set up (if needed) and run every check: ruff, the compose file, the whole test suite.
# The tests start their own Redis, SeaweedFS, Celery workers and Flower on free loopback ports.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy    # the package (convatlas/*), configured in pyproject.toml
.venv/bin/python -m pytest "$@"
