"""The process's hard exits (`infra.wedged.hard_exit`), recorded instead of done."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest

from infra import wedged


@dataclass
class Exits:
    statuses: list[int] = field(default_factory=list)
    happened: threading.Event = field(default_factory=threading.Event)  # set on the first

    def record(self, status: int) -> None:
        self.statuses.append(status)
        self.happened.set()


def recorded_exits(monkeypatch: pytest.MonkeyPatch) -> Exits:
    exits = Exits()
    monkeypatch.setattr(wedged, "hard_exit", exits.record)
    return exits
