"""What the components above infra plug into it, found through Python entry points.

infra is the bottom layer: it imports nothing of ours but `schemas`. Yet the `steno` command
runs every component's operations (`steno replay`, `steno token`, ...) and `steno up` must
migrate every keyspace that holds views. So each component declares those in pyproject.toml,
under the groups below, and infra finds them by name, never by import:

    [project.entry-points."steno.commands"]   NAME = "package.module:Command object"
    [project.entry-points."steno.keyspaces"]  NAME = "package.module:function returning a keyspace name"

Entry points are installed metadata: after changing them, reinstall (`make install` does it
when pyproject.toml changes).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points

COMMANDS = "steno.commands"
KEYSPACES = "steno.keyspaces"


@dataclass(frozen=True)
class Command:
    """One `steno NAME` subcommand. A component's module that defines it should import nothing
    heavy: every `steno` run loads every command, and `run` imports what it needs."""

    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def commands() -> dict[str, Command]:
    """Every registered subcommand, by name."""
    found = {point.name: point.load() for point in entry_points(group=COMMANDS)}
    for name, command in found.items():
        if not isinstance(command, Command):
            raise TypeError(f"entry point {name!r} of {COMMANDS} is {command!r}, not an infra.components.Command")
    return dict(sorted(found.items()))


def keyspaces() -> list[str]:
    """The keyspaces that components keep views in beyond the configured one (e.g. the live
    generation after a swap), each asked of its registered function."""
    return [point.load()() for point in entry_points(group=KEYSPACES)]
