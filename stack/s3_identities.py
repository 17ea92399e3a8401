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
- SeaweedFS has no separate delete action: ``Write`` on a prefix includes DeleteObject there
  (the producer removes a stale report and the run's ``active`` marker, the healer that
  marker too), so "no Delete" holds outside each role's write prefixes only;
- both read and list the whole bucket (the producer lists results to queue only what is
  missing, the workers read inputs and manifests);
- Flower gets no identity at all.
"""

from __future__ import annotations

from typing import Any

ROLES = ("producer", "worker")
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
