"""The compose deployment's per-role credentials: Redis ACL users and SeaweedFS S3 identities.

docker-compose.yml's one-shot ``roles`` service runs ``python -m convatlas.stack.compose_roles``
before Redis and SeaweedFS start. It reads each role's secrets from the environment (``.env``)
and writes two files into two volumes, each mounted by one server:

- ``redis-users.conf``: one ``user`` line per role (``redis_acl``), with only each password's
  SHA-256; Redis reads it with its config;
- ``s3.json``: SeaweedFS's identities (``s3_identities``): the operator's Admin key for the
  ``bucket`` job, then the producer's and the workers' keys with their prefixes. Flower gets none.

Each file is written whole, then renamed, so a server never reads half of it. The rules are the
local stack's (``convatlas stack up``): one definition of what each role may do.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from convatlas.stack.redis_acl import ROLES as REDIS_ROLES
from convatlas.stack.redis_acl import acl_lines
from convatlas.stack.s3_identities import ROLES as S3_ROLES
from convatlas.stack.s3_identities import identity, role_actions

# secrets go into URLs and config lines unescaped (see .env.example)
_SAFE = re.compile(r"[A-Za-z0-9_-]{16,}")


def _secret(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "")
    if not _SAFE.fullmatch(value):
        raise SystemExit(f"{name}: set it in .env to at least 16 letters, digits, '-' or '_' "
                         "(scripts/compose-env.sh writes a fresh .env)")
    return value


def redis_users(env: Mapping[str, str]) -> str:
    """redis.conf ``user`` lines: producer, worker and Flower from ``REDIS_<ROLE>_PASSWORD``."""
    passwords = {r: _secret(env, f"REDIS_{r.upper()}_PASSWORD") for r in REDIS_ROLES}
    return "\n".join(acl_lines(passwords)) + "\n"


def s3_identities(env: Mapping[str, str]) -> str:
    """SeaweedFS's s3.json: the operator (Admin, ``S3_ACCESS_KEY``) and one identity per role
    from ``S3_<ROLE>_ACCESS_KEY`` / ``S3_<ROLE>_SECRET_KEY``, limited to the bucket and prefix."""
    bucket = env.get("CONVATLAS_S3_BUCKET") or "convatlas"
    prefix = env.get("CONVATLAS_S3_PREFIX", "convatlas")
    identities = [identity("operator", _secret(env, "S3_ACCESS_KEY"), _secret(env, "S3_SECRET_KEY"),
                           ["Admin", "Read", "List", "Tagging", "Write"])]
    for role in S3_ROLES:
        keys = (_secret(env, f"S3_{role.upper()}_ACCESS_KEY"), _secret(env, f"S3_{role.upper()}_SECRET_KEY"))
        identities.append(identity(role, *keys, role_actions(role, bucket, prefix)))
    access = [i["credentials"][0]["accessKey"] for i in identities]
    if len(set(access)) != len(access):
        raise SystemExit("S3 access keys must differ between the operator and each role")
    return json.dumps({"identities": identities}, indent=1) + "\n"


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redis-dir", type=Path, required=True, help="folder for redis-users.conf")
    parser.add_argument("--s3-dir", type=Path, required=True, help="folder for s3.json")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    users, ids = redis_users(env), s3_identities(env)  # both checked before either is written
    # the Redis file holds only password hashes; s3.json holds keys, and is readable by the S3
    # container's user whoever that is (its volume is mounted in that container only)
    _write(args.redis_dir / "redis-users.conf", users, 0o644)
    _write(args.s3_dir / "s3.json", ids, 0o644)
    print(f"roles: {len(REDIS_ROLES)} Redis users ({', '.join(REDIS_ROLES)}), "
          f"{len(S3_ROLES)} S3 identities ({', '.join(S3_ROLES)}) and the operator's")


if __name__ == "__main__":
    main()
