"""Users of the running API for the end-to-end tests: each test gets new ones, so nothing leaks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.integration.steno_client import StenoClient


@pytest.fixture
async def alice() -> AsyncIterator[StenoClient]:
    client = StenoClient()
    yield client
    await client.close()


@pytest.fixture
async def bob() -> AsyncIterator[StenoClient]:
    client = StenoClient()
    yield client
    await client.close()
