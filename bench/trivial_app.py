"""The latency ceiling: the API's stack (FastAPI + uvicorn/uvloop/httptools + orjson Response)
returning a constant, with no auth, no Redis and no ranking."""

from __future__ import annotations

import orjson
from fastapi import FastAPI
from fastapi.responses import Response

BODY = orjson.dumps({"customer_id": "c-1", "known_customer": True, "context": "home",
                     "items": [{"sku": f"SK-{i:03d}", "score": 1.0 / (i + 1)} for i in range(10)]})

app = FastAPI(title="bench-trivial")


@app.get("/ping")
async def ping() -> Response:
    return Response(BODY, media_type="application/json")
