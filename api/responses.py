"""JSON bodies as orjson bytes (2–3x faster than letting FastAPI serialise a dict)."""

from __future__ import annotations

import orjson
from fastapi.responses import Response


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")
