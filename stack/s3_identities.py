"""SeaweedFS S3 identities per role: what the producer and the workers may do in the bucket.

SeaweedFS identity actions are ``Read``, ``List``, ``Write``, ``Tagging`` and ``Admin``, each
optionally limited to ``bucket`` or to a key prefix (``Write:bucket/prefix/*``; a trailing
``*`` is the only wildcard). What they can express, checked against ``weed`` 4.48:

- no role has ``Admin`` (bucket creation and deletion, all buckets) or ``Tagging``; the stack
  creates the bucket with its operator key, which no client gets;
- each role writes only under its own prefixes: the producer ``inputs/`` (photos), ``runs/``
  (manifests, shards, the report of a run that needs no job) and ``atlas/`` (``convatlas atlas``
  builds a site from the bucket; ``submit atlas`` removes a stale summary); the workers
  ``results/`` (outputs and error records), ``runs/`` (reports, galleries, summaries) and
  ``atlas/`` (sites). The producer cannot write results, the workers cannot touch inputs;
- SeaweedFS identities have no separate delete action (``Write`` on a prefix includes
  DeleteObject there), so a bucket policy (``bucket_policy``, set by the operator when the
  bucket is made) denies DeleteObject to every principal on every key but the few the fleet
  replaces (``DELETABLE``): a run's ``active`` marker (producer, healer), a stale report or
  examples summary before a re-run waits on it, an atlas summary (producer). Photos, results,
  weights, manifests and pages are records nobody removes;
- both read and list the whole bucket (the producer lists results to queue only what is
  missing, the workers read inputs and manifests);
- Flower gets no identity at all.
"""

from __future__ import annotations

import json
from typing import Any

ROLES = ("producer", "worker")
# the only keys (under the fleet's prefix) anyone may delete: markers and summaries that a
# re-run replaces (report.active_key, report_key, examples_reduce.summary_key, sinks.summary_key)
DELETABLE = ("runs/active/*", "runs/*/report.json", "runs/*/examples.json", "atlas/*.json")
WRITES: dict[str, tuple[str, ...]] = {
    "producer": ("inputs", "runs", "atlas"),
    "worker": ("results", "runs", "atlas"),
}


def role_actions(role: str, bucket: str, prefix: str = "") -> list[str]:
    """SeaweedFS actions of ``role`` on ``bucket`` under the key prefix ``prefix``."""
    if role not in WRITES:
        raise ValueError(f"unknown role {role!r}; known: {ROLES}")
    base = f"{bucket}/{prefix.strip('/')}/" if prefix.strip("/") else f"{bucket}/"
    return [f"Read:{bucket}", f"List:{bucket}", *(f"Write:{base}{top}/*" for top in WRITES[role])]


def identity(name: str, access_key: str, secret_key: str, actions: list[str]) -> dict[str, Any]:
    """One entry of s3.json's ``identities``."""
    return {"name": name, "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
            "actions": actions}


def bucket_policy(bucket: str, prefix: str = "") -> dict[str, Any]:
    """A bucket policy denying DeleteObject to every principal, on every key but ``DELETABLE``."""
    base = f"{bucket}/{prefix.strip('/')}/" if prefix.strip("/") else f"{bucket}/"
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "ConvatlasRecordsAreKept", "Effect": "Deny", "Principal": "*",
        "Action": "s3:DeleteObject", "NotResource": [f"arn:aws:s3:::{base}{k}" for k in DELETABLE]}]}


def protect_bucket(client: Any, bucket: str, prefix: str = "") -> None:
    """Set :func:`bucket_policy` on ``bucket`` (a boto3 client with the operator's Admin key)."""
    client.put_bucket_policy(Bucket=bucket, Policy=json.dumps(bucket_policy(bucket, prefix)))


def main() -> None:
    """The compose deployment's bucket job: create the bucket with the operator's key (from
    the environment, as every client reads it) and set its policy."""
    from convatlas.shared.config import Settings
    from convatlas.shared.storage import s3_storage_from_settings

    settings = Settings.from_env()
    storage = s3_storage_from_settings(settings, create_bucket=True)
    protect_bucket(storage.client, settings.s3_bucket, settings.s3_prefix)
    print(f"bucket {settings.s3_bucket}: ready; deletes denied but of {', '.join(DELETABLE)}")


if __name__ == "__main__":
    main()
