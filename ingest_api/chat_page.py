"""The web chat page at `/` and its assets under `/static/`, all served by steno (no CDN).

The page is plain ES modules plus one vendored library (markdown-it, in `static/vendor/`). Its
Content-Security-Policy lets it run only scripts and styles from steno itself and connect only
to steno: if a reply's Markdown ever slipped an element past the renderer's escaping, an inline
script or `onerror=` handler in it would still not run, and an image could not call home.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(
            STATIC / "index.html",
            headers={"Content-Security-Policy": CONTENT_SECURITY_POLICY, "Cache-Control": "no-cache"},
        )
