"""The bridge's process has gRPC's client switch set before gRPC is imported (gRPC reads it then)."""

import os
import subprocess
import sys

import inference_bridge

# Run as the bridge starts (`python -m inference_bridge` imports the package, then __main__): print
# GRPC_EXPERIMENTS as it is at the moment the first module imports grpc.
PROBE = """
import os, sys

class GrpcImport:
    def find_spec(self, name, path=None, target=None):
        if name == "grpc":
            print(os.environ.get("GRPC_EXPERIMENTS"))
            sys.meta_path.remove(self)
        return None

sys.meta_path.insert(0, GrpcImport())
import inference_bridge.__main__
"""


def grpc_experiments_at_grpc_import(environment: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=environment, capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.splitlines()[0]


def test_grpc_is_imported_with_the_legacy_client_switched_on() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}
    assert grpc_experiments_at_grpc_import(environment) == inference_bridge.GRPC_EXPERIMENTS == "-event_engine_client"


def test_an_operators_own_grpc_experiments_are_kept() -> None:
    environment = {**os.environ, "GRPC_EXPERIMENTS": "event_engine_client"}
    assert grpc_experiments_at_grpc_import(environment) == "event_engine_client"
