"""The API's Prometheus metrics (prometheus-client), served at `GET /metrics` (no key: scrape it
from inside; do not route it from the internet).

- `omnirec_api_request_duration_seconds{method, route}`: a histogram of the time to each answer's
  headers (for the server-sent-events stream, the time to open it, not its length)
- `omnirec_api_requests_total{method, route, status}`: every answer by status code; 4xx and 5xx,
  429 (rate limited) and 503 (Redis or the broker away) are selections of it, e.g.
  `sum(rate(omnirec_api_requests_total{status=~"5.."}[5m]))`, `…{status="429"}`
- `omnirec_api_shed_total`: requests answered 503 at once because too many were in flight
  (api/shedding.py); they also count in the requests total, as route `unmatched`, status 503

`route` is the route's template (`/v1/customers/{customer_id}`), never the raw path, so ids do not
make new series; a path no route matches is `unmatched`. Each app has its own registry (so tests can
make several), and the counts are per API process. `GET /v1/metrics/summary` (the dashboard's live
panel) reads its `api` counts from this registry too (`ApiMetrics.counts`), so both say the same."""

from __future__ import annotations

import time

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.latency = Histogram("omnirec_api_request_duration_seconds", "Time to the answer's headers, by route",
                                 ["method", "route"], buckets=BUCKETS, registry=self.registry)
        self.requests = Counter("omnirec_api_requests_total", "Answers by route and status code",
                                ["method", "route", "status"], registry=self.registry)
        self.shed = Counter("omnirec_api_shed_total", "Requests answered 503 at once: too many in flight",
                            registry=self.registry)

    def expose(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    def counts(self) -> dict[str, int]:
        """This process's answers so far, from the counters `/metrics` shows (see `answer_counts`)."""
        return answer_counts(((s.labels.get("status", ""), s.value) for m in self.requests.collect()
                              for s in m.samples if s.name.endswith("_total")),
                             sum(s.value for m in self.shed.collect() for s in m.samples if s.name.endswith("_total")))


def answer_counts(by_status, shed: float) -> dict[str, int]:
    """Answers by kind, from (status code, count) pairs of `omnirec_api_requests_total`'s series.

    >>> answer_counts([("200", 5.0), ("404", 1.0), ("429", 2.0), ("503", 3.0), ("500", 1.0), ("503", 1.0)], 2.0)
    {'requests': 13, 'client_errors': 3, 'server_errors': 5, 'rate_limited': 2, 'unavailable': 4, 'shed': 2}
    """
    counts = dict.fromkeys(("requests", "client_errors", "server_errors", "rate_limited", "unavailable"), 0.0)
    for status, value in by_status:
        counts["requests"] += value
        if status.startswith("4"):
            counts["client_errors"] += value
        elif status.startswith("5"):
            counts["server_errors"] += value
        counts["rate_limited"] += value if status == "429" else 0.0
        counts["unavailable"] += value if status == "503" else 0.0
    return {**{k: int(v) for k, v in counts.items()}, "shed": int(shed)}


class MetricsMiddleware:
    """Outermost middleware: it sees every answer, the body limit's 413s included."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes every handler still is an answer of 500

        async def timed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self._observe(scope, status, time.perf_counter() - started)
            await send(message)

        observed = False
        try:
            await self.app(scope, receive, timed_send)
            observed = True
        finally:
            if not observed and status == 500:
                self._observe(scope, 500, time.perf_counter() - started)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        method, route = scope.get("method", ""), _route(scope)
        self.metrics.latency.labels(method, route).observe(seconds)
        self.metrics.requests.labels(method, route, str(status)).inc()


def _route(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", None) or "unmatched"
