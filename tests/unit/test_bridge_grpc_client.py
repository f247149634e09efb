"""The bridge's process, and the benchmarks that read Triton as it does, have gRPC's client switch
set before gRPC is imported (gRPC reads it then)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import inference_bridge

REPO = Path(__file__).parents[2]  # where `benchmarks` imports from

# Import `module` as its process would (`python -m inference_bridge` imports the package, then
# __main__) and print GRPC_EXPERIMENTS as it is at the moment the first module imports grpc.
PROBE = """
import os, sys

class GrpcImport:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc":
            print(os.environ.get("GRPC_EXPERIMENTS"))
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, GrpcImport())
import importlib
importlib.import_module(sys.argv[1])
"""


def grpc_experiments_at_grpc_import(module: str, environment: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.splitlines()[0]


@pytest.mark.parametrize("module", ["inference_bridge.__main__", "benchmarks.pipeline", "benchmarks.triton_transport"])
def test_grpc_is_imported_with_the_legacy_client_switched_on(module: str) -> None:
    environment = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert grpc_experiments_at_grpc_import(module, environment) == inference_bridge.GRPC_EXPERIMENTS
    assert inference_bridge.GRPC_EXPERIMENTS == "-event_engine_client"


def test_an_operators_own_grpc_experiments_are_kept() -> None:
    environment = {**os.environ, "GRPC_EXPERIMENTS": "event_engine_client"}
    assert grpc_experiments_at_grpc_import("inference_bridge.__main__", environment) == "event_engine_client"
