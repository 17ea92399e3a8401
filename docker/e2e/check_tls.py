"""TLS in the compose deployment (docker-compose.tls.yml), checked from inside the worker.

    docker compose -f docker-compose.yml -f docker-compose.tls.yml exec -T worker python - < docker/e2e/check_tls.py

Redis and S3 answer over TLS with the fleet's CA; plain TCP gets no answer, and TLS without
the CA fails verification. Exits 1 on the first check that does not hold.
"""

from __future__ import annotations

import os
import ssl
import sys
from collections.abc import Callable

import boto3
import redis
from botocore.config import Config

ca, url, endpoint = (os.environ["CONVATLAS_TLS_CA"], os.environ["CONVATLAS_BROKER_URL"],
                     os.environ["CONVATLAS_S3_ENDPOINT"])
assert url.startswith("rediss://") and endpoint.startswith("https://"), (url.split("@")[-1], endpoint)
bucket = os.environ["CONVATLAS_S3_BUCKET"]


def fails(what: str, action: Callable[[], object]) -> None:
    try:
        action()
    except Exception as e:  # noqa: BLE001 - any failure to talk is the point
        print(f"refused as it should be: {what} ({type(e).__name__})")
        return
    sys.exit(f"{what} WORKED: plain or unverified connections must fail")


def s3(endpoint: str, verify: str | bool) -> object:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", verify=verify,
                        config=Config(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=5))


assert redis.Redis.from_url(url, ssl_ca_certs=ca, socket_timeout=10).ping()
print("rediss:// with the CA: PING answered")
s3(endpoint, ca).list_objects_v2(Bucket=bucket, MaxKeys=1)  # type: ignore[attr-defined]
print("https S3 with the CA: bucket listed")
plain = "redis://" + url.removeprefix("rediss://")
fails("plain redis:// to the TLS port", lambda: redis.Redis.from_url(plain, socket_timeout=5).ping())
fails("rediss:// without the CA", lambda: redis.Redis.from_url(
    url, socket_timeout=5, ssl_cert_reqs=ssl.CERT_REQUIRED).ping())
fails("plain http to S3", lambda: s3("http://" + endpoint.removeprefix("https://"), False)
      .list_objects_v2(Bucket=bucket, MaxKeys=1))  # type: ignore[attr-defined]
fails("https S3 without the CA", lambda: s3(endpoint, True).list_objects_v2(Bucket=bucket, MaxKeys=1))  # type: ignore[attr-defined]
