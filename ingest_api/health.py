"""Liveness and readiness, unauthenticated, for process supervisors and load balancers."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from fastapi import APIRouter, Response, status

from ingest_api.services import Deps

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(deps: Deps, response: Response) -> dict[str, object]:
    """Ready when the token feed is consuming and both views answer."""
    checks = {
        "token_feed": deps.feed.healthy,
        "redis": await _passes(deps.redis.ping()),
        "cassandra": await _passes(asyncio.to_thread(deps.session.execute, "SELECT release_version FROM system.local")),
    }
    ready = all(checks.values())
    if not ready:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {"ready": ready, "checks": checks}


async def _passes(check: Awaitable[object]) -> bool:
    try:
        return bool(await asyncio.wait_for(check, timeout=2))
    except Exception:
        return False
