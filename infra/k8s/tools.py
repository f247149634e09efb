"""kustomize and kubeconform, built from their Go modules at pinned versions, cached per machine.

`python -m infra.k8s.tools` (run by `make k8s-tools`, which `make test` depends on) builds what is
missing into `.stack/cache/go-tools/<tool>-<version>/`; a version bump here builds the new one
beside the old. The test suite only looks them up (`path`), so a missing tool fails with the
command that builds it. Needs Go ≥ 1.26 (both modules' `go` directive).
"""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from infra.process import say
from infra.settings import settings


@dataclass(frozen=True)
class GoTool:
    name: str
    package: str  # the main package, as `go install` takes it
    version: str

    @property
    def binary(self) -> Path:
        return settings.stack.cache_dir / "go-tools" / f"{self.name}-{self.version}" / self.name


KUSTOMIZE = GoTool("kustomize", "sigs.k8s.io/kustomize/kustomize/v5", "v5.8.2")
KUBECONFORM = GoTool("kubeconform", "github.com/yannh/kubeconform/cmd/kubeconform", "v0.8.0")
TOOLS = (KUSTOMIZE, KUBECONFORM)


class ToolMissing(RuntimeError):
    """A tool the manifests' validation needs has not been built on this machine."""


def path(tool: GoTool) -> Path:
    """The built binary, or an error that says how to build it."""
    if not tool.binary.is_file():
        raise ToolMissing(f"{tool.name} {tool.version} is not built here: run `make k8s-tools`")
    return tool.binary


def build(tool: GoTool) -> None:
    """`go install` one tool into its versioned directory (Go's own caches make rebuilds quick)."""
    say(f"k8s-tools: building {tool.name} {tool.version} with `go install` (about a minute on a cold machine)...")
    started = time.monotonic()
    env = {**os.environ, "GOBIN": str(tool.binary.parent), "GOFLAGS": "-buildvcs=false"}
    try:
        subprocess.run(["go", "install", "-v", f"{tool.package}@{tool.version}"], env=env, check=True)
    except FileNotFoundError:
        raise ToolMissing("`go` is not on PATH: install Go 1.26 or newer (https://go.dev/dl/)") from None
    say(f"k8s-tools: {tool.name} built in {time.monotonic() - started:.0f} s: {tool.binary}")


def main() -> None:
    for tool in TOOLS:
        if not tool.binary.is_file():
            build(tool)


if __name__ == "__main__":
    main()
