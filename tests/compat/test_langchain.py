"""langchain-openai's ChatOpenAI pointed at steno: invoke, stream, batch, structured output, usage, Responses."""

from __future__ import annotations

import httpx
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel, SecretStr

from tests.compat.conftest import BASE_URL
from tests.integration.steno_client import scripted

pytestmark = pytest.mark.integration


class City(BaseModel):
    name: str
    population: int


@pytest.fixture
def chat(token: str, http_client: httpx.Client, async_http_client: httpx.AsyncClient) -> ChatOpenAI:
    return ChatOpenAI(
        model="scripted",
        base_url=BASE_URL,
        api_key=SecretStr(token),
        max_retries=0,
        http_client=http_client,
        http_async_client=async_http_client,
    )


def test_invoke_batch_and_stop(chat: ChatOpenAI) -> None:
    answer = chat.invoke("hello")
    batch = chat.batch(["one", "two"])
    stopped = chat.bind(stop=["Obs"]).invoke(scripted("q", script="Thought: x\nObservation: y"))

    assert answer.content == "You said: hello"
    assert [message.content for message in batch] == ["You said: one", "You said: two"]
    assert stopped.content == "Thought: x\n"


def test_stream_with_usage(chat: ChatOpenAI) -> None:
    counted = chat.model_copy(update={"stream_usage": True})
    chunks = list(counted.stream("stream this"))
    whole = chunks[0]
    for chunk in chunks[1:]:
        whole += chunk

    assert whole.content == "You said: stream this"
    assert whole.usage_metadata is not None and whole.usage_metadata["output_tokens"] == 4


def test_with_structured_output(chat: ChatOpenAI) -> None:
    city = chat.with_structured_output(City).invoke("Paris")  # langchain-openai's default: method="json_schema"
    with pytest.raises(openai.BadRequestError, match="steno's models call no tools"):
        chat.with_structured_output(City, method="function_calling").invoke("Paris")

    assert city == City(name="Paris", population=0)


def test_json_mode_returns_a_json_object(chat: ChatOpenAI) -> None:
    as_json = chat.with_structured_output(method="json_mode").invoke("Paris")

    assert as_json == {"text": "Paris"}


async def test_ainvoke_through_the_responses_api(chat: ChatOpenAI) -> None:
    responses = chat.model_copy(update={"use_responses_api": True})

    answer = await responses.ainvoke("hello responses")
    streamed = [chunk async for chunk in responses.astream("stream responses")]

    assert answer.text == "You said: hello responses"
    assert "".join(chunk.text for chunk in streamed) == "You said: stream responses"
