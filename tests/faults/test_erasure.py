"""Erasure against the real broker (tansu), flow, Redis and API (issue 13, item 7).

A customer with a stitched web session, a churn alert and an offer contact is erased with
``DELETE /v1/customers/{id}``: every key that names them or their alias, before and after, is
listed (none after; another customer's keys unchanged byte for byte). Then late events of the
erased id and of its alias, produced after the tombstone, change nothing. ``omnirec customers
erase`` does the same from the command line."""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import redis
from fastapi.testclient import TestClient

from api.main import create_app
from omnirec.stack import settings_env
from online_models import keys
from tests.integration.kafka_tools import produce, wait_for
from tests.seed import CATALOG, purchase

DAY = 86_400_000
ADMIN = {"Authorization": "Bearer ops-key"}
TILL = {"Authorization": "Bearer till-key"}


def keys_naming(client: redis.Redis, prefix: str, names: tuple[str, ...]) -> list[str]:
    """Every key under ``prefix`` whose name or content holds one of ``names`` (each stream entry
    that does is listed on its own), as ``key`` or ``key#entry``."""
    needles = [n.encode() for n in names]

    def named(blob: bytes) -> bool:
        return any(n in blob for n in needles)

    found = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        kind = client.type(key)
        name = key.decode()
        if kind == b"stream":
            found += [f"{name}#{entry_id.decode()}" for entry_id, fields in client.xrange(key)
                      if named(b"".join(k + v for k, v in fields.items()))]
            continue
        if kind == b"string":
            content = [client.get(key)]
        elif kind == b"hash":
            content = [k + v for k, v in client.hgetall(key).items()]
        elif kind == b"zset":
            content = [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
        else:
            content = list(client.smembers(key))
        if named(key) or any(named(c or b"") for c in content):
            found.append(name)
    return sorted(found)


def dump(client: redis.Redis, found: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in found:
        key, _, entry = item.partition("#")
        out[item] = client.xrange(key, entry, entry) if entry else client.get(key)
    return out


def profile(client, scheme, customer_id):
    raw = client.get(scheme.customer(customer_id))
    return keys.decode_profile(raw) if raw else None


def test_erasure_removes_every_key_and_late_events_change_nothing(settings, run_flow):
    now = int(time.time() * 1000)
    start = now - 400 * DAY  # history, in the past
    s = settings.model_copy(update={"churn_wall_clock": False, "churn_shards": 2,
                                    "api_keys": {"ops-key": ["admin"], "till-key": ["recommend", "profile"]}})
    scheme = keys.KeyScheme(s.key_prefix)
    client = redis.Redis.from_url(s.redis_url)

    def session(customer, alias, ts):  # a web session that logs in: the alias is stitched
        view = {"event_id": f"v-{alias}", "type": "product_view", "ts": ts, "channel": "web",
                "anonymous_id": alias, "sku": "CF-1"}
        login = {"event_id": f"i-{alias}", "type": "identify", "ts": ts + 60_000, "channel": "web",
                 "anonymous_id": alias, "customer_id": customer}
        return [(alias.encode(), view), (alias.encode(), login)]

    weekly = {c: [purchase(w, c, ["CF-1"], ts=start + w * 7 * DAY) for w in range(8)] for c in ("c-erase", "c-stay")}
    others = [purchase(0, f"c-{c}", ["TR-1"], ts=start + (c % 50) * DAY) for c in range(60)]
    shown = {"event_id": "fb-1", "type": "impression", "ts": start + 10 * DAY, "customer_id": "c-erase",
             "offer_id": "winback-15", "channel": "store"}

    flow = run_flow(s)
    produce(s, s.topic_catalog, [(p["sku"].encode(), p) for p in CATALOG])
    produce(s, s.topic_web, session("c-erase", "anon-erase", start) + session("c-stay", "anon-stay", start))
    produce(s, s.topic_store, [(e["customer_id"].encode(), e)
                               for e in sorted(weekly["c-erase"] + weekly["c-stay"] + others, key=lambda e: e["ts"])])
    produce(s, s.topic_feedback, [(b"c-erase", shown)])
    produce(s, s.topic_store, [(b"c-late", purchase(0, "c-late", ["CF-1"], ts=start + 300 * DAY))])

    def ready():
        erase, stay = profile(client, scheme, "c-erase"), profile(client, scheme, "c-stay")
        alerts = [e for e in client.xrange(scheme.churn_alerts()) if b'"c-erase"' in e[1][b"alert"]
                  or b'"c-stay"' in e[1][b"alert"]]
        return (erase and stay and erase.orders == 8 and stay.orders == 8 and erase.aliases == ["anon-erase"]
                and erase.contacts.shown and len(alerts) == 2 and profile(client, scheme, "c-late"))
    wait_for(ready, 120, "both customers' histories, the stitched sessions, the contact and both alerts")

    erased_before = keys_naming(client, s.key_prefix, ("c-erase", "anon-erase"))
    kept = keys_naming(client, s.key_prefix, ("c-stay", "anon-stay"))
    kept_before = dump(client, kept)
    print("\nkeys of c-erase before:", *erased_before, sep="\n  ")
    assert {scheme.customer("c-erase"), scheme.alias("anon-erase")} <= set(erased_before)
    assert any(k.startswith(scheme.churn_alerts() + "#") for k in erased_before)  # their alert entry
    assert any(k.startswith(scheme.churn_alert_seen("c-erase:")) for k in erased_before)

    with TestClient(create_app(s)) as api:
        assert api.delete("/v1/customers/c-erase", headers=TILL).status_code == 403  # admin only
        response = api.delete("/v1/customers/c-erase", headers=ADMIN)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["aliases"] == ["anon-erase"] and body["alerts_deleted"] == 1
        assert body["keys_deleted"] == 3  # profile, alias, the alert's seen key
        assert api.get("/v1/customers/c-erase", headers=TILL).status_code == 404

    erased_after = keys_naming(client, s.key_prefix, ("c-erase", "anon-erase"))
    print("keys of c-erase after:", *erased_after or ["(none)"], sep="\n  ")
    assert erased_after == []

    # the tombstone reached the flow: a probe behind it on the same partition is applied
    produce(s, s.topic_web, [(b"c-erase", purchase(0, "c-probe-0", ["CF-1"], ts=start + 301 * DAY))])
    wait_for(lambda: profile(client, scheme, "c-probe-0"), 60, "the probe behind the tombstone")
    # late events of the erased id and its alias, each followed by a probe on its partition
    late = purchase(9, "c-erase", ["CF-1"], ts=start + 301 * DAY)
    late_alias = {"event_id": "v-late", "type": "product_view", "ts": start + 301 * DAY, "channel": "web",
                  "anonymous_id": "anon-erase", "sku": "CF-1"}
    produce(s, s.topic_store, [(b"c-erase", late), (b"c-erase", purchase(0, "c-probe-1", ["CF-1"], ts=late["ts"]))])
    produce(s, s.topic_web, [(b"anon-erase", late_alias),
                             (b"anon-erase", purchase(0, "c-probe-2", ["CF-1"], ts=late["ts"]))])
    wait_for(lambda: profile(client, scheme, "c-probe-1") and profile(client, scheme, "c-probe-2"), 60,
             "the probes behind the late events")
    assert keys_naming(client, s.key_prefix, ("c-erase", "anon-erase")) == []
    assert dump(client, keys_naming(client, s.key_prefix, ("c-stay", "anon-stay"))) == kept_before

    # the command line: the same erasure for another customer
    assert profile(client, scheme, "c-42") is not None
    env = {**settings_env(s), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "omnirec.cli", "customers", "erase", "c-42"], env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout.strip().splitlines()[-1])["keys_deleted"] == 1
    assert keys_naming(client, s.key_prefix, ("c-42",)) == [] and profile(client, scheme, "c-4") is not None

    assert flow.alive(), flow.log()[-3000:]
    assert "Traceback" not in flow.log(), flow.log()[-3000:]
    client.close()
