"""The state runs leave in Redis: read it, compare it, delete it (kept here so that the fault tests
depend on nothing but the fixtures of tests/conftest.py and kafka_tools' produce / wait_for)."""

from __future__ import annotations

import redis

from online_models import keys


def snapshot(redis_url: str, prefix: str) -> dict[str, object]:
    """Everything under a key prefix, with the prefix stripped."""
    client = redis.Redis.from_url(redis_url)
    try:
        state: dict[str, object] = {}
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            kind = client.type(key)
            name = key.decode()[len(prefix):]
            if kind == b"string":
                state[name] = client.get(key)
            elif kind == b"hash":
                state[name] = client.hgetall(key)
            elif kind == b"zset":
                state[name] = dict(client.zrange(key, 0, -1, withscores=True))
            elif kind == b"set":
                state[name] = client.smembers(key)
            elif kind == b"stream":
                state[name] = [fields for _id, fields in client.xrange(key)]
        return state
    finally:
        client.close()


def differences(redis_url: str, a: str, b: str) -> list[str]:
    """Keys (prefix stripped) whose values differ between prefixes ``a`` and ``b``, or that only
    one has; the flow metrics hash is left out (it counts wall-clock things)."""
    left, right = snapshot(redis_url, a), snapshot(redis_url, b)
    metrics = keys.KeyScheme(a).flow_metrics().removeprefix(a)
    names = (set(left) | set(right)) - {metrics}
    return sorted(k for k in names if left.get(k) != right.get(k))


def delete_prefix(redis_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        found = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(found), 500):
            client.delete(*found[start:start + 500])
    finally:
        client.close()
