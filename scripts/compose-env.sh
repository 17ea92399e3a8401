#!/usr/bin/env sh
# A fresh .env for docker-compose.yml: one random secret per role and service.
#   sh scripts/compose-env.sh > .env && chmod 600 .env
# Extra lines (FLOWER_USER=..., FLOWER_PORT=5556, ...) can follow; .env.example lists every setting.
set -eu
secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }
for name in REDIS_PASSWORD REDIS_PRODUCER_PASSWORD REDIS_WORKER_PASSWORD REDIS_FLOWER_PASSWORD \
    S3_ACCESS_KEY S3_SECRET_KEY S3_PRODUCER_ACCESS_KEY S3_PRODUCER_SECRET_KEY \
    S3_WORKER_ACCESS_KEY S3_WORKER_SECRET_KEY FLOWER_PASSWORD; do
    echo "$name=$(secret)"
done
