"""`steno` command line: run the local stack and operate steno."""

from __future__ import annotations

import argparse

from infra import stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steno", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="install, start and health-check the whole stack")
    commands.add_parser("down", help="stop everything steno started")
    commands.add_parser("status", help="say what runs, where, and where its log is")
    args = parser.parse_args(argv)

    if args.command == "up":
        stack.up()
    elif args.command == "down":
        stack.down()
    elif args.command == "status":
        return 0 if stack.status() else 1
    return 0
