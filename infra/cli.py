"""`steno` command line: run the local stack and operate steno.

`up`, `down`, `status`, `restart` and `stop` are infra's own; the components register the rest (`replay`, `token`,
...) as entry points (see `infra.components`), so infra imports none of them.
"""

from __future__ import annotations

import argparse
import os
import sys

from infra import components

PROCESSES = ("api", "processors", "bridge", "projections")  # infra.app_services.PROGRAMS, without importing it


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steno", description="run the local stack and operate steno")
    commands = parser.add_subparsers(dest="command", required=True)
    stack_options = argparse.ArgumentParser(add_help=False)
    stack_options.add_argument(
        "--cluster",
        action="store_true",
        help="the cluster mode of the stack (STENO_PROFILE=cluster: infra/conf/profiles/cluster.env)",
    )
    commands.add_parser("up", parents=[stack_options], help="install, start and health-check the whole stack")
    commands.add_parser("down", parents=[stack_options], help="stop everything steno started")
    commands.add_parser("status", parents=[stack_options], help="say what runs, where, and where its log is")
    for verb, purpose in (
        ("restart", "restart one of steno's processes, every instance of it (e.g. after a code change)"),
        ("stop", "stop one of steno's processes, every instance of it, until the next `steno up`"),
    ):
        commands.add_parser(verb, parents=[stack_options], help=purpose).add_argument("process", choices=PROCESSES)
    registered = components.commands()
    for name, command in registered.items():
        command.arguments(commands.add_parser(name, help=command.help))
    args = parser.parse_args(argv)

    if args.command in registered:
        return registered[args.command].run(args)
    if args.cluster and os.environ.get("STENO_PROFILE") != CLUSTER_PROFILE:
        _again_with_profile(CLUSTER_PROFILE, sys.argv[1:] if argv is None else argv)

    from infra import stack

    if args.command == "status":
        return 0 if stack.status() else 1
    if args.command == "down":
        stack.down()
        return 0
    if args.command == "restart":
        stack.restart(args.process)
        return 0
    if args.command == "stop":
        stack.stop(args.process)
        return 0
    stack.up()
    _print_chat_address()
    return 0


CLUSTER_PROFILE = "cluster"


def _again_with_profile(profile: str, argv: list[str]) -> None:
    """Run this same command again in a process whose settings are the profile's: settings are
    read once, at import, and every server and process the stack starts inherits the environment."""
    os.execve(sys.executable, [sys.executable, "-m", "infra", *argv], {**os.environ, "STENO_PROFILE": profile})


def _print_chat_address() -> None:
    """The chat page, which signs a local user in by username."""
    from infra.settings import settings

    print(f"steno is up. Chat: {settings.api.url}/")
