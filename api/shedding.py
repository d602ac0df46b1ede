"""Load shedding, as pure ASGI middleware: past `OMNIREC_API_MAX_IN_FLIGHT` requests at once in
this process, a request is answered 503 with `Retry-After` at once, before routing, auth or any
Redis read, so that a burst slows nobody down but the excess (measured before: with nothing
shedding, 500 req/s made every request wait 6–10 s).

The bound is on requests being worked on, not on a queue in front of them: on one event loop
every request in flight shares the CPU, so the latency of an accepted request grows with their
number, and bounding it bounds the p99 of what is accepted. Health, readiness and metrics are
never shed (a load balancer must still see the process alive and ready), and neither are
server-sent-event streams once open (they count while their headers are being prepared only).
Shed requests are counted in `omnirec_api_shed_total`, and in `omnirec_api_requests_total` with
status 503 like any other answer."""

from __future__ import annotations

from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

EXEMPT = frozenset({"/healthz", "/readyz", "/metrics"})


class LoadShedding:
    def __init__(self, app: ASGIApp, max_in_flight: int, retry_after_s: int, shed: Counter) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.in_flight = 0
        self.shed = shed
        self._refusal = [(b"content-type", b"application/json"), (b"retry-after", str(retry_after_s).encode())]
        self._body = (b'{"detail":"Overloaded: more than %d requests in flight; retry after %d s"}'
                      % (max_in_flight, retry_after_s))
        self._refusal.append((b"content-length", str(len(self._body)).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.shed.inc()
            await send({"type": "http.response.start", "status": 503, "headers": self._refusal})
            await send({"type": "http.response.body", "body": self._body})
            return
        self.in_flight += 1
        counted = True

        async def release_at_headers(message: Message) -> None:
            nonlocal counted
            # a stream's headers go out when it opens: from then on it waits, it does not work
            if counted and message["type"] == "http.response.start" and _is_stream(message):
                counted = False
                self.in_flight -= 1
            await send(message)

        try:
            await self.app(scope, receive, release_at_headers)
        finally:
            if counted:
                self.in_flight -= 1


def _is_stream(message: Message) -> bool:
    return any(name == b"content-type" and value.startswith(b"text/event-stream")
               for name, value in message.get("headers", ()))
