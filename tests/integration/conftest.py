"""Fixtures shared by the integration tests, which run against the real local stack."""

from __future__ import annotations

import pytest

from infra import stack


@pytest.fixture(scope="session")
def steno_topics() -> None:
    """Every steno topic exists: `make up` creates them, a broker started by hand gets them here."""
    stack.create_topics()
