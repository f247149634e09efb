"""The API's `steno` subcommand: `steno token USER` (registered as an entry point of
`steno.commands` in pyproject.toml)."""

from __future__ import annotations

import argparse

from infra.components import Command


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("user")


def _token(args: argparse.Namespace) -> int:
    from ingest_api.auth import issue_token

    print(issue_token(args.user))
    return 0


token = Command("print a bearer token for a user (local secret)", _arguments, _token)
