"""`python -m ingest_api` serves the API on settings.api.host:port.

On SIGTERM (a deploy, `steno restart api`, supervisord stopping it) every open SSE stream is
ended cleanly first, so clients reconnect with their last id at once; requests in flight get
`api.shutdown_grace_s` to finish, then the process exits.
"""

from types import FrameType

import uvicorn
from fastapi import FastAPI

from infra import garbage_collector
from infra.settings import settings
from ingest_api.app import create_app
from ingest_api.request_ids import configure_logging


class ApiServer(uvicorn.Server):
    def __init__(self, app: FastAPI) -> None:
        self._app = app
        config = uvicorn.Config(
            app,
            host=settings.api.host,
            port=settings.api.port,
            log_level="info",
            access_log=settings.api.access_log,
            log_config=None,  # uvicorn's lines go through configure_logging's handler, with the request id
            timeout_graceful_shutdown=settings.api.shutdown_grace_s,
        )
        super().__init__(config)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        services = getattr(self._app.state, "services", None)  # None until start-up has run
        if services is not None:
            services.feed.close_streams_soon()
        super().handle_exit(sig, frame)


garbage_collector.tune()
configure_logging()
ApiServer(create_app()).run()
