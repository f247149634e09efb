"""litellm, as its users point it at an OpenAI-compatible server (`openai/<model>` with api_base)."""

from __future__ import annotations

from typing import Any

import httpx
import litellm
import openai
import pytest

from tests.compat.conftest import BASE_URL
from tests.integration.steno_client import scripted

pytestmark = pytest.mark.integration

SCRIPT = "Thought: look it up.\nObservation: 42"


@pytest.fixture
def options(token: str) -> dict[str, Any]:
    """How a litellm user names steno; each call also gets an OpenAI client over the recording transport."""
    return {"model": "openai/scripted", "api_base": BASE_URL, "api_key": token, "num_retries": 0}


@pytest.fixture
def sync_client(token: str, http_client: httpx.Client) -> openai.OpenAI:
    return openai.OpenAI(base_url=BASE_URL, api_key=token, max_retries=0, http_client=http_client)


@pytest.fixture
def async_client(token: str, async_http_client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=BASE_URL, api_key=token, max_retries=0, http_client=async_http_client)


def test_completion_is_the_models_text_and_honours_stop(options: dict[str, Any], sync_client: openai.OpenAI) -> None:
    plain = litellm.completion(**options, client=sync_client, messages=[{"role": "user", "content": "hello"}])
    stopped = litellm.completion(
        **options,
        client=sync_client,
        messages=[{"role": "user", "content": scripted("q", script=SCRIPT)}],
        stop=["Obs"],
    )

    assert plain.choices[0].message.content == "You said: hello"
    assert stopped.choices[0].message.content == "Thought: look it up.\n"
    assert stopped.choices[0].finish_reason == "stop"
    assert plain.usage.completion_tokens == 3


def test_a_stream_with_usage(options: dict[str, Any], sync_client: openai.OpenAI) -> None:
    chunks = list(
        litellm.completion(
            **options,
            client=sync_client,
            messages=[{"role": "user", "content": "stream this"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "You said: stream this"
    usage = [c.usage for c in chunks if getattr(c, "usage", None)]
    assert usage and usage[-1].completion_tokens == 4


async def test_acompletion_with_sampling_options(options: dict[str, Any], async_client: openai.AsyncOpenAI) -> None:
    reply = await litellm.acompletion(
        **options,
        client=async_client,
        messages=[{"role": "user", "content": scripted("q", echo_sampling=True)}],
        temperature=0.5,
        seed=3,
        max_tokens=60,
    )

    content = reply.choices[0].message.content
    assert '"temperature": 0.5' in content and '"seed": 3' in content and '"max_tokens": 60' in content


def test_errors_are_litellms_exceptions_with_steno_s_message(
    options: dict[str, Any], sync_client: openai.OpenAI
) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    with pytest.raises(litellm.BadRequestError, match="steno's models call no tools"):
        litellm.completion(**options, client=sync_client, messages=[{"role": "user", "content": "hi"}], tools=[tool])
    with pytest.raises(litellm.NotFoundError, match="does not exist"):
        litellm.completion(
            **{**options, "model": "openai/gpt-9"}, client=sync_client, messages=[{"role": "user", "content": "hi"}]
        )
