"""Simon Willison's `llm` CLI with steno as an extra OpenAI model: prompt, continue with -c, options.

Configured as its users do (extra-openai-models.yaml and a stored key), in a temporary
LLM_USER_PATH so that nothing of the developer's own llm setup is read or changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas.events import InferenceRequested
from schemas.topics import INFERENCE_REQUESTS
from tests.compat.conftest import BASE_URL
from tests.integration.kafka_log import events_of
from tests.integration.steno_client import StenoClient, until

pytestmark = pytest.mark.integration
LLM = Path(sys.executable).with_name("llm")

Run = Callable[..., str]


@pytest.fixture
def llm(tmp_path: Path, token: str) -> Run:
    (tmp_path / "extra-openai-models.yaml").write_text(
        f"- model_id: steno-scripted\n  model_name: scripted\n  api_base: {BASE_URL}\n  api_key_name: steno\n"
    )
    (tmp_path / "keys.json").write_text(json.dumps({"steno": token}))
    environment = {**os.environ, "LLM_USER_PATH": str(tmp_path)}

    def run(*arguments: str) -> str:
        done = subprocess.run([str(LLM), *arguments], env=environment, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.rstrip("\n")

    return run


async def test_a_prompt_then_a_continuation_with_the_history(llm: Run, steno: StenoClient) -> None:
    first = llm("-m", "steno-scripted", "first question")
    second = llm("-c", "second question")

    assert (first, second) == ("You said: first question", "You said: second question")
    conversations: list[dict[str, str]] = []

    async def both_listed() -> bool:
        nonlocal conversations
        conversations = (await steno.http.get("/v1/conversations")).json()
        return len(conversations) == 2

    await until(both_listed)
    prompts = sorted((_prompt_of(c["id"]) for c in conversations), key=len)
    assert prompts == [["first question"], ["first question", "You said: first question", "second question"]]


def _prompt_of(conversation_id: str) -> list[str]:
    [request] = [e for e in events_of(INFERENCE_REQUESTS, conversation_id) if isinstance(e, InferenceRequested)]
    return [turn.content for turn in request.prompt if turn.role != "system"]


def test_options_stop_sampling_and_json(llm: Run) -> None:
    stopped = llm("-m", "steno-scripted", "-o", "stop", "Obs", 'scripted: {"script": "Thought: x\\nObservation: y"}\nq')
    sampled = llm(
        "-m", "steno-scripted", "-o", "temperature", "0.7", "-o", "seed", "5", 'scripted: {"echo_sampling": true}\nq'
    )
    as_json = llm("-m", "steno-scripted", "-o", "json_object", "1", "Paris")

    assert stopped == "Thought: x"  # llm strips the trailing newline it prints
    assert (json.loads(sampled)["temperature"], json.loads(sampled)["seed"]) == (0.7, 5)
    assert json.loads(as_json) == {"text": "Paris"}
