"""Abuse of the HTTP API against the real server (`omnirec api`: uvicorn), the real broker and Redis
(issue 13, "forged ids" and "oversized bodies"). Measured before: a forged `recommendation_id`
answered 500 or reset the connection, a `recommend` key could dismiss another customer's offer
(202), and a 50 MB body was accepted (200, the API grew by 84 MB)."""

from __future__ import annotations

import base64
import subprocess
import sys

import httpx
import orjson

from omnirec.stack import free_port, settings_env, stop_pid
from online_models.refs import DecisionRef, RecommendationRef, SigningKeys, encode_ref
from tests.integration.kafka_tools import consume, wait_for

SECRET = "the signing secret of this test"
SHOP = {"Authorization": "Bearer shop-key"}


def test_forged_ids_and_oversized_bodies_get_4xx_and_nothing_reaches_the_broker(settings, tmp_path):
    s = settings.model_copy(update={"api_keys": {"shop-key": ["recommend"]}, "signing_keys": {"k1": SECRET},
                                    "max_request_bytes": 1_048_576})
    port = free_port()
    log = open(tmp_path / "api.log", "ab")  # noqa: SIM115 - the child has it
    server = subprocess.Popen([sys.executable, "-m", "omnirec.cli", "api", "--port", str(port)], env=settings_env(s),
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    log.close()
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=30) as api:
            def up():
                try:
                    return api.get("/healthz").status_code == 200
                except httpx.TransportError:
                    return False
            wait_for(up, 60, "the API to answer")

            keys = SigningKeys.of({"k1": SECRET})
            genuine = encode_ref(DecisionRef("c-1", "winback-15", "lapsed", "web", False, 1_795_601_700_000, 7), keys)
            tag, kid, body, mac = genuine.split(".")
            fields = orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
            fields[0] = "c-2"  # somebody else's offer, under the genuine mac
            altered = f"{tag}.{kid}.{base64.urlsafe_b64encode(orjson.dumps(fields)).rstrip(b'=').decode()}.{mac}"
            made_up = encode_ref(RecommendationRef("c-1", "cart", None, 1_795_601_700_000, 1, "BL-1", (1e308,) * 8),
                                 SigningKeys.of({"k1": "a secret I made up myself"}))
            forged = [("decision_id", altered), ("recommendation_id", made_up), ("decision_id", f"d1.{body}"),
                      ("decision_id", "d1.garbage"), ("recommendation_id", "r1.k9." + body + "." + mac)]
            for field, value in forged:
                response = api.post("/v1/feedback", json={field: value, "event": "dismiss"}, headers=SHOP)
                assert response.status_code == 400, (field, value, response.text)
                assert response.json()["detail"]
            accepted = api.post("/v1/feedback", json={"decision_id": genuine, "event": "dismiss"}, headers=SHOP)
            assert accepted.status_code == 202, accepted.text

            # 2 MiB, announced by Content-Length (refused unread), and streamed in chunks without one
            big = b'{"basket": ["' + b"x" * (2 * 1024 * 1024) + b'"]}'
            announced = api.post("/v1/cross-sell", content=big, headers={**SHOP, "Content-Type": "application/json"})
            assert announced.status_code == 413 and announced.json()["detail"]
            chunks = (big[i:i + 65_536] for i in range(0, len(big), 65_536))
            streamed = api.post("/v1/cross-sell", content=chunks, headers={**SHOP, "Content-Type": "application/json"})
            assert streamed.status_code == 413 and streamed.json()["detail"]
            # a body within the limit is read and answered on its merits
            fits = api.post("/v1/cross-sell", json={"basket": ["TR-1"], "k": 3}, headers=SHOP)
            assert fits.status_code == 200, fits.text
            assert api.get("/healthz").status_code == 200 and server.poll() is None

        produced = consume(s, s.topic_feedback, expected=2, timeout=15)  # waits: a second one would be a leak
        assert [orjson.loads(m.value())["customer_id"] for m in produced] == ["c-1"]
        assert orjson.loads(produced[0].value())["decision_id"] == genuine
    finally:
        stop_pid(server.pid, timeout=10)
    assert "Traceback" not in (tmp_path / "api.log").read_text(errors="replace")
