"""What the API's start-up leaves behind for the rest of the process's life."""

from __future__ import annotations

import gc

from fastapi import FastAPI

from ingest_api.services import lifespan


async def test_start_up_objects_are_frozen_out_of_the_gcs_full_passes() -> None:
    """Modules, schemas and clients built at start-up live as long as the process; walking them
    in every full collection cost ~50 ms a pass under load."""
    gc.unfreeze()
    try:
        async with lifespan(FastAPI()):
            assert gc.get_freeze_count() > 10_000
    finally:
        gc.unfreeze()
