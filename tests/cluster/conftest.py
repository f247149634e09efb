"""The cluster mode's tests run in their own pytest, with the cluster's settings (`make test` runs
`STENO_PROFILE=cluster pytest -m cluster tests/cluster`): every address and port below comes
from infra/conf/profiles/cluster.env. The session starts the cluster stack if it is not up and
leaves it running; it never touches the single-node stack, which other tests use meanwhile."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator

import pytest

from infra import app_services
from infra.process import say
from infra.settings import REPO_ROOT, settings
from tests.chaos.conftest import pytest_terminal_summary, tallies  # noqa: F401  (the chaos table, under the cluster's root)
from tests.integration.steno_client import StenoClient

STENO = str(REPO_ROOT / ".venv" / "bin" / "steno")
UP_TIMEOUT_S = 600  # a cold start: jars, KRaft formats, three Cassandra nodes joining one by one


def timeout(test_s: int) -> pytest.MarkDecorator:
    """A test's time limit, plus the cluster's start-up: the session fixture starts the cluster
    inside whichever test runs first, and pytest-timeout counts fixture set-up as the test's."""
    return pytest.mark.timeout(UP_TIMEOUT_S + test_s)


def api_urls() -> list[str]:
    """Each API instance's own address (behind the balancer at settings.api.url)."""
    return [app_services.api_url(p) for p in app_services.PROGRAMS if p.kind == "api"]


@pytest.fixture(scope="session", autouse=True)
def cluster_stack() -> None:
    """The cluster stack, started here unless `steno status` finds it healthy."""
    if settings.stack.instances < 2:
        pytest.fail("tests/cluster need the cluster settings: STENO_PROFILE=cluster pytest -m cluster tests/cluster")
    if subprocess.run([STENO, "status"], capture_output=True, timeout=120, cwd=REPO_ROOT).returncode == 0:
        return
    began = time.monotonic()
    up = subprocess.run([STENO, "up"], capture_output=True, text=True, timeout=UP_TIMEOUT_S, cwd=REPO_ROOT)
    assert up.returncode == 0, f"`steno up --cluster` failed:\n{up.stderr[-4000:]}"
    say(f"cluster stack started in {time.monotonic() - began:.0f}s")


@pytest.fixture
async def alice() -> AsyncIterator[StenoClient]:
    """A user on the balancer's address; `on(alice, url)` is the same user on one instance."""
    client = StenoClient()
    yield client
    await client.close()


def on(client: StenoClient, url: str) -> StenoClient:
    """Another connection of the same user (another tab), to the API at `url`."""
    other = StenoClient(client.user)
    other.http.base_url = url
    return other
