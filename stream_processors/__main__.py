"""`python -m stream_processors`: run the Faust worker (moderation and context assembly).

The worker runs on uvloop, like every steno process: the event loop's own bookkeeping (tasks,
futures, socket readiness) is a large share of a message's cost in Python's pure asyncio loop.
"""

import faust
import mode.loop

from infra import garbage_collector
from stream_processors.app import create_app


def main() -> None:
    garbage_collector.tune()
    mode.loop.use("uvloop")  # before the app exists: it sets the policy the worker's loop comes from
    app = create_app()
    garbage_collector.freeze_startup()  # the app, its clients and its models live as long as the process
    faust.Worker(app, loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    main()
