"""Redis ACL users per role: producer, worker, Flower.

Each role gets only the commands, keys and pub/sub channels it was seen to use (MONITOR and
``ACL LOG`` on a full fleet run: Celery 5.6 / kombu 5.7's Redis transport, the Redis result
backend, run progress and the healer lock), so a leaked worker password cannot FLUSHALL,
CONFIG, KEYS, MONITOR, SHUTDOWN or read another role's keys. The ``default`` user stays the
operator's (the stack itself, tests, ``redis-cli``).

What each uses:

- queue ``convatlas`` and its priority lists ``convatlas\\x06\\x16N``: LPUSH (producer),
  BRPOP/LLEN (worker), LLEN (Flower's queue lengths); kombu's bindings ``_kombu.binding.*``
  and ``_kombu.binding_deadlines`` (SADD/SMEMBERS/SREM, ZADD/ZRANGEBYSCORE/ZREM in Lua);
- kombu's unacked store ``unacked``, ``unacked_index``, ``unacked_mutex``: the worker's
  deliveries (HSET/ZADD) and the restore sweep that every consuming channel runs (the
  worker's, and Flower's, which consumes its control replies);
- remote control: ``<node>.celery.pidbox`` and ``<uuid>.reply.celery.pidbox`` lists, the
  ``/<db>.celery.pidbox`` broadcast channel; task events: ``/<db>.celeryev/*`` channels and
  ``celeryev.<uuid>`` bindings;
- results ``celery-task-meta-<id>`` (SET/GET and a PUBLISH on the channel of the same name);
- run progress ``convatlas:run:<id>:*`` (Lua scripts: SETBIT, HINCRBY, HSETNX …) and the
  healer's lock ``convatlas:healer`` (SET NX / GET / DEL), both under ``convatlas*``.

PSUBSCRIBE patterns are checked literally against the allowed channel patterns, so the exact
patterns Celery subscribes to are listed (they carry the database number).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

ROLES = ("producer", "worker", "flower")

# commands every client sends: the handshake (redis-py: HELLO / AUTH; Redis 7.0 has no CLIENT SETINFO), PING
# for health checks, SELECT for a database other than 0, MULTI/EXEC for kombu's pipelines
_CONNECTION = ("hello", "auth", "ping", "select", "client|setname",
               "client|id", "multi", "exec", "discard", "watch", "unwatch", "time")
_PUBSUB = ("publish", "subscribe", "unsubscribe", "psubscribe", "punsubscribe")
# kombu's bindings ``_kombu.binding.*`` and their deadlines ``_kombu.binding_deadlines``, kept
# by two Lua scripts (REFRESH_BINDING, SWEEP_BINDINGS) that every consumer, Flower's event
# receiver too, runs
_BINDINGS = ("sadd", "srem", "smembers", "sismember", "zadd", "zrangebyscore", "zrem", "exists",
             "eval", "evalsha", "script|load", "script|exists")
_PROGRESS = ("hset", "hget", "hgetall", "hsetnx", "hincrby", "setbit", "getbit", "bitcount",
             "expire")

# kombu's restore sweep, run by every consuming channel (the worker's, and Flower's for its
# control replies): SET NX on ``unacked_mutex``, then put back what a dead consumer held
_UNACKED = ("set", "zrange", "zrangebyscore", "hget", "hdel", "hset", "rpush", "lpush", "zrem")

COMMANDS: dict[str, tuple[str, ...]] = {
    "producer": (*_CONNECTION, *_PUBSUB, *_BINDINGS, *_PROGRESS,
                 "lpush", "rpush", "llen", "brpop", "del", "exists", "get", "set", "setex"),
    "worker": (*_CONNECTION, *_PUBSUB, *_BINDINGS, *_PROGRESS,
               "lpush", "rpush", "rpop", "brpop", "llen", "lrange", "del", "exists", "get",
               "set", "setex", "pexpire", "zadd", "zrem", "zrange", "zrangebyscore", "hdel",
               "hlen"),
    "flower": (*_CONNECTION, *_PUBSUB, *_BINDINGS, *_UNACKED, "lpush", "brpop", "llen", "del",
               "get"),
}

_CONTROL_KEYS = ("~_kombu.*", "~*.celery.pidbox*", "~celeryev.*")
_UNACKED_KEYS = ("~unacked", "~unacked_index", "~unacked_mutex")
KEYS: dict[str, tuple[str, ...]] = {
    "producer": ("~convatlas*", "~celery-task-meta-*", *_CONTROL_KEYS),
    "worker": ("~convatlas*", "~celery-task-meta-*", *_UNACKED_KEYS, *_CONTROL_KEYS),
    # Flower only reads the queue's length and results; it writes its own control replies
    "flower": ("%R~convatlas*", "%R~celery-task-meta-*", *_UNACKED_KEYS, *_CONTROL_KEYS),
}


def channels(db: int = 0) -> tuple[str, ...]:
    """Pub/sub channels of every role: task events, the control broadcast, task results."""
    events, pidbox = f"/{db}.celeryev/", f"/{db}.celery.pidbox"
    return (f"&{events}*", f"&{events}worker.*", f"&{pidbox}", "&celery-task-meta-*")


def user_line(role: str, password: str, db: int = 0) -> str:
    """One ``user`` directive for redis.conf; the password only as its SHA-256."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; known: {ROLES}")
    digest = hashlib.sha256(password.encode()).hexdigest()
    rules = ["on", f"#{digest}", "resetkeys", "resetchannels", *KEYS[role], *channels(db),
             "-@all", *(f"+{c}" for c in COMMANDS[role])]
    return f"user {role} " + " ".join(rules)


def acl_lines(passwords: Mapping[str, str], db: int = 0) -> list[str]:
    """``user`` directives for each role in ``passwords``."""
    return [user_line(role, pw, db) for role, pw in passwords.items()]
