"""The compatibility suite: the clients people point at an OpenAI-compatible server, against the running stack.

Every HTTP exchange a test's clients have with steno goes through a recording transport; when the
test ends, every body, stream chunk and Responses stream event it saw is validated against
OpenAI's published schema (tests/openai_conformance.Recorder), so a drift fails here before it
fails a user's typed client.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import openai
import pytest

from infra.settings import settings
from ingest_api.auth import issue_token
from tests.integration.steno_client import StenoClient, until
from tests.openai_conformance import Recorder

pytestmark = pytest.mark.integration
BASE_URL = f"{settings.api.url}/v1"


@pytest.fixture
async def steno() -> AsyncIterator[StenoClient]:
    """A new user, on steno's native API, to see what the OpenAI calls left in history."""
    client = StenoClient()
    yield client
    await client.close()


@pytest.fixture
def token(steno: StenoClient) -> str:
    return issue_token(steno.user)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    yield recorder
    recorder.check()


@pytest.fixture
def http_client(recorder: Recorder) -> Iterator[httpx.Client]:
    with httpx.Client(transport=recorder.sync_transport(), timeout=60) as client:
        yield client


@pytest.fixture
async def async_http_client(recorder: Recorder) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=recorder.async_transport(), timeout=60) as client:
        yield client


@pytest.fixture
async def sdk(token: str, async_http_client: httpx.AsyncClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=BASE_URL, api_key=token, max_retries=0, http_client=async_http_client)


async def only_conversation(steno: StenoClient) -> str:
    """The one conversation the test's user has, once the projection lists it."""
    conversations: list[dict[str, object]] = []

    async def listed() -> bool:
        nonlocal conversations
        conversations = (await steno.http.get("/v1/conversations")).json()
        return len(conversations) == 1

    await until(listed)
    return str(conversations[0]["id"])


async def reply_in_history(steno: StenoClient) -> str:
    """The assistant's text as history keeps it, once settled."""
    history = await steno.settled_history(await only_conversation(steno))
    return str(history[-1]["content"])
