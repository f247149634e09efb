"""A request's sampling options as the `sampling_parameters` of Triton's vLLM backend.

The names are vLLM's (`SamplingParams`): `stop`, `temperature`, `top_p`, `seed`,
`presence_penalty`, `frequency_penalty`, and `guided_decoding` ({"json": schema} or
{"json_object": true}) for structured output. steno's local models (infra/models) read the same
names, so a request means the same on the local stack and on a production vLLM fleet.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from schemas.events import InferenceRequested, SamplingOptions

PASSED_AS_IS = ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty")


def sampling_parameters(request: InferenceRequested, model_defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The model's configured extras, overridden by what the client asked for, and the reply's cap."""
    return {**model_defaults, **client_parameters(request.sampling), "max_tokens": request.max_tokens}


def client_parameters(options: SamplingOptions) -> dict[str, Any]:
    """Only what the client set: an unset option leaves the model's own setting."""
    parameters: dict[str, Any] = {
        name: getattr(options, name) for name in PASSED_AS_IS if getattr(options, name) is not None
    }
    if options.stop:
        parameters["stop"] = list(options.stop)
    if options.response_format is not None:
        schema = options.response_format.json_schema
        parameters["guided_decoding"] = {"json": json.loads(schema)} if schema is not None else {"json_object": True}
    return parameters
