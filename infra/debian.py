"""Servers the stack takes from Debian's packages (redis-server, haproxy), installed on first use."""

from __future__ import annotations

import shutil
import subprocess

from infra.process import say


def ensure_installed(command: str, package: str) -> None:
    """Install `package` when `command` is missing (apt needs root, as on CI machines); the
    package lists are refreshed only when the first try fails."""
    if shutil.which(command):
        return
    say(f"installing Debian's {package} (first run only)...")
    install = ["apt-get", "install", "-y", "--no-install-recommends", package]
    env = {"DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, check=True)
        subprocess.run(install, env=env, check=True)
