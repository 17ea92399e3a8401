# syntax=docker/dockerfile:1
# The convatlas image: Celery worker (default command), Flower and the producer CLI.
# GPU by default (TensorFlow with its CUDA wheels; the host needs the NVIDIA container toolkit).
# CPU-only:  docker build --build-arg TENSORFLOW="tensorflow>=2.16,<2.22" -t convatlas .
# CI (scripts/compose-e2e.sh) builds this file unchanged with the classic builder
# (DOCKER_BUILDKIT=0: the syntax line would make BuildKit pull a frontend image), CPU
# TensorFlow and a debootstrap Debian bookworm stand-in tagged as the FROM image.
FROM python:3.11-slim-bookworm

ARG TENSORFLOW="tensorflow[and-cuda]>=2.16,<2.22"

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=1 \
    CONVATLAS_CACHE_DIR=/var/cache/convatlas \
    # The checkout in /app wins over site-packages: samples/ is found next to the code.
    PYTHONPATH=/app

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin convatlas \
    && mkdir -p /var/cache/convatlas \
    && chown convatlas /var/cache/convatlas

WORKDIR /app

# TensorFlow first: the largest layer, rebuilt only when the build arg changes.
RUN pip install "${TENSORFLOW}"

COPY pyproject.toml README.md ./
# convatlas/ holds the package's __init__ and links to the rooms below (see README, Layout).
COPY convatlas ./convatlas
COPY shared ./shared
COPY producer ./producer
COPY workers ./workers
COPY stack ./stack
COPY samples ./samples
RUN pip install . && python -c "import convatlas.producer.cli, convatlas.workers.app"

USER convatlas

# The one worker command line (convatlas.workers.config.worker_argv): threads pool, task events,
# CONVATLAS_WORKER_CONCURRENCY threads (default 2 × CONVATLAS_MAX_BATCH).
CMD ["convatlas", "worker", "--hostname", "worker@%h"]
