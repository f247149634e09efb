"""The consumers' Kubernetes probe (`python -m infra.k8s.probe GROUP`) run the way a kubelet runs
it, against the real local stack: it passes for the process that is a member of the group and
fails for one that is not."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from infra import app_services, supervisor
from tests.integration.steno_client import until

pytestmark = pytest.mark.integration


def probe(group: str, pid: int) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "infra.k8s.probe", group, "--pid", str(pid)]
    return subprocess.run(command, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("name", sorted(app_services.GROUPS))
async def test_the_probe_passes_for_the_consumer_process_itself(name: str) -> None:
    group = app_services.GROUPS[name]

    def passes() -> bool:  # another test may be restarting the process: wait for it to serve
        pid = supervisor.pid(name)
        return pid is not None and probe(group, pid).returncode == 0

    await until(lambda: asyncio.to_thread(passes), timeout_s=60)


@pytest.mark.parametrize("name", sorted(app_services.GROUPS))
def test_the_probe_fails_for_a_process_that_is_not_a_member(name: str) -> None:
    result = probe(app_services.GROUPS[name], os.getpid())
    assert result.returncode == 1
    assert "not a member" in result.stderr
