"""Least privilege in the compose deployment, checked from inside a role's own container.

    docker compose exec -T worker python - worker < docker/e2e/check_roles.py

Uses only the container's environment (its Redis ACL user, its S3 key if any): the forbidden
actions must be refused by Redis and SeaweedFS, the role's own writes must pass. Prints one
line per check; exits 1 on the first one that does not hold.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable

import boto3
import redis
from botocore.config import Config
from botocore.exceptions import ClientError

ROLE = sys.argv[1]
QUEUE = "convatlas"


def refused(what: str, action: Callable[[], object]) -> None:
    try:
        action()
    except redis.exceptions.NoPermissionError:
        print(f"{ROLE}: refused as it should be: {what}")
        return
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("AccessDenied", "Forbidden", "403"):
            print(f"{ROLE}: refused as it should be: {what} ({code})")
            return
        sys.exit(f"{ROLE}: {what}: unexpected S3 error {code}: {e}")
    sys.exit(f"{ROLE}: {what} was ALLOWED")


def allowed(what: str, action: Callable[[], object]) -> None:
    try:
        action()
    except (redis.exceptions.RedisError, ClientError) as e:
        sys.exit(f"{ROLE}: {what} was refused: {e}")
    print(f"{ROLE}: allowed: {what}")


r = redis.Redis.from_url(os.environ["CONVATLAS_BROKER_URL"], socket_timeout=10)
allowed("PING", r.ping)
for command in (("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"),
                ("ACL", "LIST"), ("SHUTDOWN", "NOSAVE")):
    refused(" ".join(command), lambda c=command: r.execute_command(*c))  # type: ignore[misc]
refused("GET of another role's key", lambda: r.get("not-convatlas"))
if ROLE == "flower":
    allowed("LLEN of the queue", lambda: r.llen(QUEUE))
    refused("LPUSH to the queue", lambda: r.lpush(QUEUE, "x"))
    refused("SET of a task result", lambda: r.set("celery-task-meta-e2e", "{}"))
    leaked = sorted(k for k in os.environ if k.startswith("AWS_"))
    if leaked:
        sys.exit(f"flower: has S3 credentials {leaked}")
    print("flower: no S3 credentials in its environment")
    sys.exit(0)
if ROLE == "producer":
    refused("HGETALL of the workers' unacked deliveries", lambda: r.hgetall("unacked"))

bucket, prefix = os.environ["CONVATLAS_S3_BUCKET"], os.environ["CONVATLAS_S3_PREFIX"].strip("/")
s3 = boto3.client("s3", endpoint_url=os.environ["CONVATLAS_S3_ENDPOINT"], region_name="us-east-1",
                  config=Config(retries={"max_attempts": 1}))
probe = f"e2e-roles-{uuid.uuid4().hex[:8]}"
own, other = ("inputs", "results") if ROLE == "producer" else ("results", "inputs")
allowed(f"put under {own}/", lambda: s3.put_object(Bucket=bucket, Key=f"{prefix}/{own}/{probe}", Body=b"x"))
# the bucket policy: its own records are kept too (SeaweedFS's Write would include delete)
refused(f"delete under {own}/", lambda: s3.delete_object(Bucket=bucket, Key=f"{prefix}/{own}/{probe}"))
allowed("put a run's manifest", lambda: s3.put_object(Bucket=bucket, Key=f"{prefix}/runs/{probe}/manifest.json", Body=b"{}"))
refused("delete a run's manifest", lambda: s3.delete_object(Bucket=bucket, Key=f"{prefix}/runs/{probe}/manifest.json"))
allowed("put and delete a run's active marker",
        lambda: (s3.put_object(Bucket=bucket, Key=f"{prefix}/runs/active/{probe}", Body=b""),
                 s3.delete_object(Bucket=bucket, Key=f"{prefix}/runs/active/{probe}")))
allowed("list the bucket", lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/", MaxKeys=1))
refused(f"put under {other}/", lambda: s3.put_object(Bucket=bucket, Key=f"{prefix}/{other}/{probe}", Body=b"x"))
refused(f"delete under {other}/", lambda: s3.delete_object(Bucket=bucket, Key=f"{prefix}/{other}/{probe}"))
refused("put outside the prefix", lambda: s3.put_object(Bucket=bucket, Key=probe, Body=b"x"))
refused("create a bucket", lambda: s3.create_bucket(Bucket=f"{probe}-bucket"))
refused("delete the bucket", lambda: s3.delete_bucket(Bucket=bucket))
