"""One error body for every error the API answers: `{"detail": "<what is wrong>"}`, plus
`"errors": [{"loc", "msg", "type"}]` for a request that failed validation (422).

The errors never echo the value that was sent: FastAPI's default 422 body does, and a NaN or an
infinity in it cannot be serialised (measured before: `k: NaN` answered 500, `k: 1e400` reset
the connection)."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.responses import json_response


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer has this shape."""

    detail: str
    errors: list[FieldError] | None = None


DESCRIPTIONS = {
    400: "Bad request: a body that is not JSON (or not UTF-8), or an id this API did not issue (forged, "
         "altered or signed with an unknown key)",
    401: "Missing or unknown API key",
    403: "The API key lacks the scope",
    404: "Not found",
    413: "Request body larger than OMNIREC_MAX_REQUEST_BYTES",
    422: "Invalid request: `errors` names each field and what is wrong with it",
    429: "Rate limit of the API key exceeded: retry after `Retry-After` seconds",
    503: "Redis or the broker unavailable",
}


def responses(*codes: int) -> dict[int | str, dict]:
    """The OpenAPI `responses` of a route: each listed status with the error body."""
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in codes}


# what every route with an API key can answer besides its own
KEYED = (401, 403, 413, 422, 429)


def invalid(loc: tuple[str, ...], msg: str) -> RequestValidationError:
    """A 422 that a route raises after pydantic's checks, in the same shape as theirs."""
    return RequestValidationError([{"loc": loc, "msg": msg, "type": "value_error"}])


def install(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        response = json_response({"detail": str(exc.detail)}, exc.status_code)
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        errors = [{"loc": [str(part) if not isinstance(part, int) else part for part in error.get("loc", ())],
                   "msg": str(error.get("msg", "invalid")), "type": str(error.get("type", "value_error"))}
                  for error in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(str(part) for part in first["loc"])
        detail = f"{where}: {first['msg']}" if where else first["msg"]
        return json_response({"detail": detail, "errors": errors}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        return json_response({"detail": f"Internal error: {type(exc).__name__}"}, 500)
