"""API keys with scopes: `Authorization: Bearer <key>`; keys are compared by their sha256.
A known key is then rate-limited (api/ratelimit.py): 429 with Retry-After past its budget."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from api.ratelimit import retry_after
from omnirec.settings import hash_key


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking: the key's digest and its scopes."""

    key_digest: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def _presented_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPException(401, "Missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    return key.strip()


def require(scope: str):
    async def check(request: Request) -> Caller:  # async: a plain def would cost a threadpool hop
        digest = hash_key(_presented_key(request))
        keys: dict[str, frozenset[str]] = request.app.state.api_keys
        known = next((k for k in keys if hmac.compare_digest(k, digest)), None)
        if known is None:
            raise HTTPException(401, "Unknown API key", headers={"WWW-Authenticate": "Bearer"})
        caller = Caller(known, keys[known])
        if not caller.may(scope):
            raise HTTPException(403, f"API key lacks the '{scope}' scope")
        wait_s = request.app.state.rate_limits.take(known)
        if wait_s:
            raise HTTPException(429, "Rate limit of this API key exceeded", headers={"Retry-After": retry_after(wait_s)})
        return caller

    return Depends(check)


RecommendScope = Annotated[Caller, require("recommend")]
ProfileScope = Annotated[Caller, require("profile")]
AdminScope = Annotated[Caller, require("admin")]
