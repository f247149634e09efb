"""`python -m ingest_api` serves the API on settings.api.host:port."""

import uvicorn

from infra.settings import settings

uvicorn.run("ingest_api.app:app", host=settings.api.host, port=settings.api.port, log_level="info")
