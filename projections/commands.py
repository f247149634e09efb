"""The projections' `steno` subcommands: replay, analytics, export (registered as entry points of
`steno.commands` in pyproject.toml). Each imports its machinery only when it runs."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from infra.components import Command


def _replay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reset", action="store_true", help="empty the views first (stop the live projection before)")
    parser.add_argument("--from", dest="start", metavar="OFFSET|TIME", help="start at this offset or ISO time")
    parser.add_argument("--to", dest="end", metavar="OFFSET|TIME", help="stop before this offset or ISO time")
    parser.add_argument("--conversation", metavar="ID", help="only this conversation (reads only its partition)")
    parser.add_argument(
        "--keyspace", metavar="NAME", help="into generation NAME (Cassandra keyspace and Redis namespace)"
    )
    parser.add_argument("--swap", action="store_true", help="into a new generation, then make it live")


def _replay(args: argparse.Namespace) -> int:
    from projections import replay_command

    replay_command.run(
        start=args.start,
        end=args.end,
        conversation=args.conversation,
        keyspace=args.keyspace,
        swap=args.swap,
        reset=args.reset,
    )
    return 0


def _analytics_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reset", action="store_true", help="forget committed offsets: recount the whole log")
    parser.add_argument("--port", type=int, help="where /metrics listens (default: settings.analytics.port, 9464)")
    parser.add_argument("--no-view", action="store_true", help="serve /metrics only, no terminal view")


def _analytics(args: argparse.Namespace) -> int:
    from projections.analytics import service

    with _group_in_use_refused("analytics"):
        service.run(reset=args.reset, port=args.port, view=not args.no_view)
    return 0


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reset", action="store_true", help="forget committed offsets: export the log again")
    parser.add_argument("--out", type=Path, help="the folder of the files (default: settings.export.out_dir)")
    parser.add_argument("--once", action="store_true", help="export what the log holds now, then exit")


def _export(args: argparse.Namespace) -> int:
    from projections.analytics import export

    with _group_in_use_refused("export"):
        export.run(reset=args.reset, out=args.out, once=args.once)
    return 0


@contextmanager
def _group_in_use_refused(command: str) -> Iterator[None]:
    """`--reset` while another instance consumes the group: exit saying so, not with a traceback."""
    from projections.consuming import GroupInUseError

    try:
        yield
    except GroupInUseError as exc:
        raise SystemExit(f"steno {command} --reset: {exc}") from exc


replay = Command("rebuild the history and context views from the conversation log", _replay_arguments, _replay)
analytics = Command("live figures from the log: /metrics and a terminal view", _analytics_arguments, _analytics)
export = Command("write the log to Parquet files partitioned by day and event type", _export_arguments, _export)
