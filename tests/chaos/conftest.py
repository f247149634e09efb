"""The chaos suite shares the running stack with every other test: it starts from a healthy
stack and leaves one, and reports its table at the end of the run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict

import pytest

from infra.settings import settings
from tests.chaos.checker import Tally, table
from tests.chaos.faults import StackNotHealthy, heal

RESULTS = settings.stack.root / "chaos"
TALLIES = pytest.StashKey[list[Tally]]()


@pytest.fixture(autouse=True)
async def healthy_stack() -> AsyncIterator[None]:
    """Each fault starts on a healthy stack and is healed before the next test, whatever happened."""
    await _healed()
    yield
    await _healed()


async def _healed() -> None:
    """Heal the stack, or end the whole run: every later test shares this stack, and each would
    fail only after its own timeout, hiding the cause under an hour of them."""
    try:
        await asyncio.to_thread(heal)
    except StackNotHealthy as broken:
        pytest.exit(f"the chaos suite left the stack broken, so no later test can pass: {broken}", returncode=1)


@pytest.fixture(scope="session")
def tallies(request: pytest.FixtureRequest) -> Iterator[list[Tally]]:
    """Each fault's line; written to .stack/chaos/latest.json and .md once the suite is done."""
    found: list[Tally] = []
    request.config.stash[TALLIES] = found
    yield found
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps([asdict(t) for t in found], indent=2) + "\n")
    (RESULTS / "latest.md").write_text(table(found) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    found = config.stash.get(TALLIES, [])
    if found:
        terminalreporter.write_sep("=", "chaos: what clients saw under each fault")
        terminalreporter.write_line(table(found))
        terminalreporter.write_line(f"(written to {RESULTS / 'latest.json'})")
