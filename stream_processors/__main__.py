"""`python -m stream_processors`: run the Faust worker (moderation and context assembly)."""

import faust

from stream_processors.app import create_app


def main() -> None:
    faust.Worker(create_app(), loglevel="info").execute_from_commandline()


if __name__ == "__main__":
    main()
