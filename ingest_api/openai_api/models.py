"""`GET /v1/models`: the models steno can answer with, as Triton reports them ready.

A model is listed when steno knows how to prompt it (settings.models) and at least one Triton
endpoint the bridge routes to has it ready; asking Triton rather than trusting the settings
means a client never picks a model that would only fail later.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import tritonclient.grpc.aio as triton
from fastapi import APIRouter, status
from tritonclient.utils import InferenceServerException

from infra.settings import settings
from ingest_api.auth import User
from ingest_api.openai_api.errors import OpenAIError, OpenAIRoute

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["openai"], route_class=OpenAIRoute)
OWNER = "steno"
TRITON_TIMEOUT_S = 2.0


@router.get("/models")
async def list_models(user: User) -> dict[str, Any]:
    ready = await _ready_models()
    if ready is None:
        raise OpenAIError(status.HTTP_503_SERVICE_UNAVAILABLE, "no Triton endpoint answered: try again shortly")
    return {"object": "list", "data": [_model(name) for name in sorted(ready & settings.models.keys())]}


@router.get("/models/{model}")
async def retrieve_model(model: str, user: User) -> dict[str, Any]:
    """One model, if `GET /v1/models` would list it (known to steno and ready on Triton)."""
    ready = await _ready_models()
    if ready is None:
        raise OpenAIError(status.HTTP_503_SERVICE_UNAVAILABLE, "no Triton endpoint answered: try again shortly")
    if model not in ready & settings.models.keys():
        raise OpenAIError(
            status.HTTP_404_NOT_FOUND,
            f"the model {model!r} does not exist or is not ready: GET /v1/models lists those that are",
            param="model",
            code="model_not_found",
        )
    return _model(model)


async def _ready_models() -> set[str] | None:
    """Ready models over every endpoint; None when none answered."""
    answers = await asyncio.gather(*(_ready_on(url) for url in settings.triton.bridge_endpoints))
    reachable = [models for models in answers if models is not None]
    return set().union(*reachable) if reachable else None


async def _ready_on(url: str) -> set[str] | None:
    client = triton.InferenceServerClient(url)
    try:
        index = await asyncio.wait_for(client.get_model_repository_index(as_json=True), TRITON_TIMEOUT_S)
    except (InferenceServerException, TimeoutError) as exc:
        log.warning("Triton at %s did not list its models: %s", url, exc)
        return None
    finally:
        await client.close()
    return {model["name"] for model in index.get("models", []) if model.get("state") == "READY"}


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": OWNER}
