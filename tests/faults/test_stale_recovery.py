"""A recovery directory left by a flow on one broker, then `omnirec flow` against a fresh broker
with the same topic names: it stops with a message naming both, and `--reset-recovery` proceeds
(reading the new topics from the beginning)."""

from __future__ import annotations

import redis

from omnirec import recovery
from omnirec.stack import create_topics
from online_models import keys
from tests.integration.kafka_tools import produce, wait_for
from tests.seed import CATALOG, history, purchase


def _profile(settings, customer_id):
    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.get(keys.KeyScheme(settings.key_prefix).customer(customer_id))
    finally:
        client.close()
    return keys.decode_profile(raw) if raw else None


def test_a_stale_recovery_directory_stops_omnirec_flow_until_reset(settings, run_flow, own_broker,
                                                                    omnirec_flow):
    old = settings.model_copy(update={"churn_wall_clock": False})
    events = history(10)
    flow = run_flow(old)
    produce(old, old.topic_catalog, [(p["sku"].encode(), p) for p in CATALOG])
    produce(old, old.topic_store, [(e["customer_id"].encode(), e) for e in events])
    wait_for(lambda: sum(o for (t, _), o in recovery.stored_offsets(old.recovery_dir).items()
                         if t == old.topic_store) == len(events), 60, "a snapshot of every event read")
    flow.stop()
    assert recovery.read_identity(old.recovery_dir) is not None

    fresh = own_broker()
    new = old.model_copy(update={"kafka_bootstrap": fresh.bootstrap})
    create_topics(new)
    newcomers = [purchase(0, f"n-{i}", ["TR-1"]) for i in range(3)]
    produce(new, new.topic_store, [(e["customer_id"].encode(), e) for e in newcomers])

    refused = omnirec_flow(new)
    assert refused.wait(60) == 2
    message = refused.log_path.read_text()
    assert f"the recovery directory {new.recovery_dir} does not match the broker at {fresh.bootstrap}" in message
    assert f"topic {new.topic_store} was created again since (id " in message  # the old id and the new
    assert "beyond the partition's end" in message
    assert "--reset-recovery" in message
    assert "bytewax.run" not in message  # stopped before starting bytewax

    resumed = omnirec_flow(new, "--reset-recovery")
    wait_for(lambda: all(_profile(new, e["customer_id"]) for e in newcomers) or resumed.poll() is not None,
             60, "the reset flow to read the fresh broker from the beginning")
    assert resumed.poll() is None, resumed.log_path.read_text()[-3000:]
    assert recovery.read_identity(new.recovery_dir).bootstrap == fresh.bootstrap
