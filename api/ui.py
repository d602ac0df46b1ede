"""The browser apps served by the API: the checkout assistant at /app and the retention
dashboard at /app/retention. Plain HTML/CSS/JS from api/static; they call the public /v1 API
with the API key the user types in (kept in the browser's localStorage, never in the page)."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"

# The pages load only their own scripts and styles and talk only to this origin.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
                               "base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def install(app: FastAPI) -> None:
    """Serve the apps: /app (checkout), /app/retention (dashboard), /app/static/* (assets)."""
    app.mount("/app/static", StaticFiles(directory=STATIC), name="app-static")

    @app.get("/app", include_in_schema=False)
    async def checkout_app() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers=PAGE_HEADERS)

    @app.get("/app/retention", include_in_schema=False)
    async def retention_app() -> FileResponse:
        return FileResponse(STATIC / "retention.html", headers=PAGE_HEADERS)
