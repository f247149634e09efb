"""`steno` command line: run the local stack and operate steno."""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="steno", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="install, start and health-check the whole stack")
    commands.add_parser("down", help="stop everything steno started")
    commands.add_parser("status", help="say what runs, where, and where its log is")
    token = commands.add_parser("token", help="print a bearer token for a user (local secret)")
    token.add_argument("user")
    replay = commands.add_parser("replay", help="rebuild the history and context views from the conversation log")
    replay.add_argument("--reset", action="store_true", help="empty the views first (stop the live projection before)")
    replay.add_argument("--from", dest="start", metavar="OFFSET|TIME", help="start at this offset or ISO time")
    replay.add_argument("--to", dest="end", metavar="OFFSET|TIME", help="stop before this offset or ISO time")
    replay.add_argument("--conversation", metavar="ID", help="only this conversation (reads only its partition)")
    replay.add_argument(
        "--keyspace", metavar="NAME", help="into generation NAME (Cassandra keyspace and Redis namespace)"
    )
    replay.add_argument("--swap", action="store_true", help="into a new generation, then make it live")
    analytics = commands.add_parser("analytics", help="live figures from the log: /metrics and a terminal view")
    analytics.add_argument("--reset", action="store_true", help="forget committed offsets: recount the whole log")
    analytics.add_argument("--port", type=int, help="where /metrics listens (default: settings.analytics.port, 9464)")
    analytics.add_argument("--no-view", action="store_true", help="serve /metrics only, no terminal view")
    export = commands.add_parser("export", help="write the log to Parquet files partitioned by day and event type")
    export.add_argument("--reset", action="store_true", help="forget committed offsets: export the log again")
    export.add_argument("--out", type=Path, help="the folder of the files (default: settings.export.out_dir)")
    export.add_argument("--once", action="store_true", help="export what the log holds now, then exit")
    args = parser.parse_args(argv)

    # Imports are per command: `steno token` must not need the servers' client libraries warm.
    if args.command == "token":
        from ingest_api.auth import issue_token

        print(issue_token(args.user))
        return 0
    if args.command == "replay":
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
    if args.command in ("analytics", "export"):
        return _run_log_consumer(args)

    from infra import stack

    if args.command == "status":
        return 0 if stack.status() else 1
    if args.command == "down":
        stack.down()
        return 0
    stack.up()
    _print_chat_address()
    return 0


def _print_chat_address() -> None:
    """The chat page, opened as a local user: the token rides in the URL fragment, never sent to a server."""
    from infra.settings import settings
    from ingest_api.auth import issue_token

    print(f"steno is up. Chat: {settings.api.url}/#token={issue_token('you')}")


def _run_log_consumer(args: argparse.Namespace) -> int:
    """`steno analytics` / `steno export`: run one consumer group of the log until interrupted."""
    from projections.consuming import GroupInUseError

    try:
        if args.command == "analytics":
            from projections.analytics import service

            service.run(reset=args.reset, port=args.port, view=not args.no_view)
        else:
            from projections.analytics import export

            export.run(reset=args.reset, out=args.out, once=args.once)
    except GroupInUseError as exc:
        raise SystemExit(f"steno {args.command} --reset: {exc}") from exc
    return 0
