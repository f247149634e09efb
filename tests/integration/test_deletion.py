"""A deletion is known to every API process at once, and an OpenAI `store=false` exchange is deleted
once answered even when the API process that accepted it is killed first.

Beside the running API (A), each test starts a second API process (B) of its own on another port,
as a load balancer would spread one user's requests over two instances.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from infra.settings import REPO_ROOT
from ingest_api.auth import issue_token
from tests.integration.steno_client import StenoClient, scripted, until

pytestmark = pytest.mark.integration

STARTUP_S = 60.0


@dataclass(frozen=True)
class ApiProcess:
    process: subprocess.Popen
    url: str


@pytest.fixture
def second_api() -> Iterator[ApiProcess]:
    """Another API process on a free port, serving the same stores as the running one."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "ingest_api.app:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    api = ApiProcess(subprocess.Popen(argv, cwd=REPO_ROOT, stdin=subprocess.DEVNULL), f"http://127.0.0.1:{port}")
    try:
        _until_ready(api)
        yield api
    finally:
        api.process.kill()
        api.process.wait()


@pytest.fixture
async def alice_on_b(alice: StenoClient, second_api: ApiProcess) -> AsyncIterator[httpx.AsyncClient]:
    """Alice, talking to API process B."""
    headers = {"Authorization": f"Bearer {issue_token(alice.user)}"}
    async with httpx.AsyncClient(base_url=second_api.url, headers=headers, timeout=30) as client:
        yield client


async def test_a_conversation_deleted_through_one_api_process_is_refused_by_another_at_once(
    alice: StenoClient, alice_on_b: httpx.AsyncClient
) -> None:
    conversation_id = await alice.new_conversation()
    await alice.send(conversation_id, "remember me")
    assert (await alice_on_b.get(f"/v1/conversations/{conversation_id}/messages")).status_code == 200  # B knows it

    assert (await alice.http.delete(f"/v1/conversations/{conversation_id}")).status_code == 204  # through A
    started = time.monotonic()
    refused = await alice_on_b.get(f"/v1/conversations/{conversation_id}/messages")
    elapsed = time.monotonic() - started

    assert refused.status_code == 404
    assert elapsed < 1.0
    sent = await alice_on_b.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "still there?"})
    assert sent.status_code == 404


async def test_a_message_sent_through_another_api_process_right_after_the_deletion_is_refused(
    alice: StenoClient, alice_on_b: httpx.AsyncClient
) -> None:
    """B remembers the owner and leaves the deletion marker to the reply's claim (one Redis round
    trip for both): the claim finds it, and nothing is written or claimed."""
    conversation_id = await alice.new_conversation()
    assert (await alice_on_b.get(f"/v1/conversations/{conversation_id}/messages")).status_code == 200  # B knows it

    assert (await alice.http.delete(f"/v1/conversations/{conversation_id}")).status_code == 204  # through A
    sent = await alice_on_b.post(f"/v1/conversations/{conversation_id}/messages", json={"content": "still there?"})

    assert sent.status_code == 404, sent.text
    assert (await alice_on_b.get(f"/v1/conversations/{conversation_id}/messages")).status_code == 404


async def test_store_false_is_deleted_once_answered_though_the_process_that_accepted_it_was_killed(
    alice: StenoClient, alice_on_b: httpx.AsyncClient, second_api: ApiProcess
) -> None:
    accepted = await alice_on_b.post(
        "/v1/responses",
        json={
            "model": "scripted",
            "input": scripted("forget me " + " ".join(f"w{i}" for i in range(20)), itl_ms=100),
            "store": False,
            "background": True,
        },
    )
    assert accepted.status_code == 200, accepted.text
    second_api.process.send_signal(signal.SIGKILL)  # B dies while the reply is being generated (~2 s)
    second_api.process.wait()

    listed: list[dict] = []

    async def listed_once() -> bool:
        nonlocal listed
        listed = (await alice.http.get("/v1/conversations")).json()
        return len(listed) == 1

    await until(listed_once)  # the exchange is in history while it is answered
    conversation_id = listed[0]["id"]

    async def deleted() -> bool:
        return (await alice.http.get("/v1/conversations")).json() == []

    await until(deleted, timeout_s=30)  # the reply ends, then a surviving process deletes it
    assert (await alice.http.get(f"/v1/conversations/{conversation_id}/messages")).status_code == 404


def _until_ready(api: ApiProcess) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if api.process.poll() is not None:
            raise RuntimeError(f"the second API process exited with {api.process.returncode}")
        try:
            if httpx.get(f"{api.url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the second API process was not ready within {STARTUP_S}s")
