"""What the API does on every request and every streamed token stays off the slow paths."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute

from ingest_api.app import create_app


def _api_routes(routes: Sequence[BaseRoute]) -> Iterator[APIRoute]:
    """Every APIRoute, those of included routers too (FastAPI nests them)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif (included := getattr(route, "original_router", None)) is not None:
            yield from _api_routes(included.routes)


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for sub in dependant.dependencies:
        if sub.call is not None:
            yield sub.call
        yield from _calls(sub)


def _is_async(call: Callable[..., Any]) -> bool:
    """A coroutine function, or an object whose `__call__` is one (HTTPBearer)."""
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(type(call).__call__)


def test_no_route_runs_a_dependency_or_handler_in_the_thread_pool() -> None:
    """FastAPI runs a plain `def` dependency or handler in its thread pool: thread hops on every
    request that cost more CPU than the authentication itself."""
    routes = list(_api_routes(create_app().routes))
    assert len(routes) > 10
    sync = {
        f"{route.path}: {getattr(call, '__qualname__', call)}"
        for route in routes
        for call in [route.endpoint, *_calls(route.dependant)]
        if not _is_async(call)
    }
    assert sync == set()
