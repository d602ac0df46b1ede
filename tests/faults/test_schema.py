"""schemathesis against the API's own OpenAPI document (issue 13): property-based requests, valid
and invalid, to every documented operation of the real app (real Redis, real broker), and every
answer checked against the document: no server error, a documented status code and content type,
a body of the documented schema. Valid requests and invalid ones (schemathesis' negative mode:
wrong types, out-of-range values, missing fields). Bounded: ``EXAMPLES`` per operation and mode
(about 150 requests), without shrinking.

The server-sent-events stream is left out: it answers by holding the connection open."""

from __future__ import annotations

import time
from itertools import product

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app

EXAMPLES = {GenerationMode.POSITIVE: 8, GenerationMode.NEGATIVE: 4}  # negative cases cost more to generate
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
AUTH = {"Authorization": "Bearer every-scope"}
LEFT_OUT = ("/v1/alerts/churn/stream",)


def test_every_answer_matches_the_openapi_document(settings):
    app = create_app(settings.model_copy(update={
        "api_keys": {"every-scope": ["recommend", "profile", "admin"]}, "rate_limit_per_s": 0.0}))
    failures: dict[str, str] = {}
    took: dict[str, float] = {}
    calls = 0
    with TestClient(app):  # runs the lifespan: the Redis pool, the producer, the store
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        for operation, mode in product(operations, GenerationMode):
            if operation.path in LEFT_OUT:
                continue

            @given(case=operation.as_strategy(generation_mode=mode))
            @hypothesis_settings(max_examples=EXAMPLES[mode], deadline=None, suppress_health_check=list(HealthCheck),
                                 derandomize=True, database=None, phases=[Phase.explicit, Phase.generate])
            def run(case):
                nonlocal calls
                calls += 1
                case.call_and_validate(headers={**(case.headers or {}), **AUTH}, checks=CHECKS)

            name = f"{operation.method.upper()} {operation.path} ({mode.value})"
            started = time.monotonic()
            try:
                run()
            except Unsatisfiable:
                pass  # an operation without parameters has no invalid requests to make
            except BaseException as exc:  # noqa: BLE001 - schemathesis raises a BaseExceptionGroup: collected
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                failures[name] = str(exc)[:1500]
            took[name] = time.monotonic() - started
    print(f"\nschemathesis: {calls} requests to {len(operations) - len(LEFT_OUT)} operations, "
          f"{len(failures)} failing; slowest:", *sorted(took.items(), key=lambda kv: -kv[1])[:3])
    assert not failures, "\n\n".join(f"{name}:\n{text}" for name, text in failures.items())
