"""API keys with scopes: `Authorization: Bearer <key>`; keys are compared by their sha256."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from omnirec.settings import hash_key


def _presented_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise HTTPException(401, "Missing API key: send 'Authorization: Bearer <key>'",
                            headers={"WWW-Authenticate": "Bearer"})
    return key.strip()


def require(scope: str):
    async def check(request: Request) -> str:  # async: a plain def would cost a threadpool hop
        digest = hash_key(_presented_key(request))
        keys: dict[str, frozenset[str]] = request.app.state.api_keys
        scopes = next((s for known, s in keys.items() if hmac.compare_digest(known, digest)), None)
        if scopes is None:
            raise HTTPException(401, "Unknown API key", headers={"WWW-Authenticate": "Bearer"})
        if scope not in scopes and "admin" not in scopes:
            raise HTTPException(403, f"API key lacks the '{scope}' scope")
        return scope

    return Depends(check)


RecommendScope = Annotated[str, require("recommend")]
ProfileScope = Annotated[str, require("profile")]
