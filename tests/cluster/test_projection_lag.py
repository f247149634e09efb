"""Behind the balancer, one client's requests reach different API instances. While the projection
is behind (restarting, or rebalancing after a frozen broker), an instance learns who owns what
another instance just took from the record that instance left in Redis: asking only the history
view, it answered 404 for the conversation and the reply the client had just been given."""

from __future__ import annotations

import asyncio
import json
import os
import signal

import pytest
from httpx_sse import aconnect_sse

from tests.chaos.faults import heal, steno_pids
from tests.cluster.conftest import api_urls, on, timeout
from tests.integration.steno_client import Sse, StenoClient, scripted_reply, text_of

pytestmark = [pytest.mark.cluster, pytest.mark.integration, timeout(180)]


async def test_while_the_projections_are_paused_the_other_instance_serves_what_one_instance_took(
    alice: StenoClient,
) -> None:
    first, second = api_urls()[:2]
    a, b = on(alice, first), on(alice, second)
    paused = steno_pids("projections")
    assert paused, "no projections process runs under the cluster's supervisord"
    try:
        for pid in paused:
            os.kill(pid, signal.SIGSTOP)
        try:
            conversation = await a.new_conversation()  # answered once its 5 s wait for the view is over
            sent = await a.post_message(conversation, "taken while history was behind")
            assert sent.status_code == 202, sent.text
            response_id = sent.json()["response_id"]
            # a second start waits the view out too: the reply's id is now older than any wait for the view
            later = await a.new_conversation()
            for started in (conversation, later):
                seen = await b.http.get(f"/v1/conversations/{started}/messages")
                assert seen.status_code == 200, seen.text
            async with aconnect_sse(b.http, "GET", f"/v1/responses/{response_id}/events") as source:
                assert source.response.status_code == 200, await source.response.aread()
                for pid in paused:
                    os.kill(pid, signal.SIGCONT)
                events = [Sse(sse.event, sse.id, json.loads(sse.data)) async for sse in source.aiter_sse()]
        finally:
            for pid in paused:
                os.kill(pid, signal.SIGCONT)
            await asyncio.to_thread(heal)  # back in its group before the next test
        turns = await a.settled_history(conversation, timeout_s=60)
    finally:
        await asyncio.gather(a.close(), b.close())
    assert text_of(events) == scripted_reply("taken while history was behind")
    assert [t["content"] for t in turns] == ["taken while history was behind", text_of(events)]
