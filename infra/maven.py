"""Fetch a server's jars from Maven Central: `mvn dependency:copy-dependencies` on a small pom.

No tarballs, no Docker: the pom pins the version, Maven resolves the dependencies, and the jars
land in a scratch folder that is renamed into place only when complete. The folder is stamped
with the pom's hash, so an interrupted download is redone and a version bump re-fetches
instead of mixing two versions' jars on one classpath.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from infra.process import say

STAMP = ".pom-sha256"


def fetch_jars(name: str, pom: Path, dest: Path) -> None:
    """Make `dest` hold exactly the jars the pom resolves to; cheap when it already does."""
    stamp = hashlib.sha256(pom.read_bytes()).hexdigest()
    if (dest / STAMP).is_file() and (dest / STAMP).read_text() == stamp:
        return
    if shutil.which("mvn") is None:
        raise RuntimeError(f"Maven (`mvn`) is needed to fetch {name}: apt-get install maven")
    say(f"{name}: fetching jars from Maven Central (first run only)...")
    started = time.monotonic()
    scratch = dest.with_name(dest.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    subprocess.run(
        [
            "mvn",
            "-B",
            "-Dstyle.color=never",
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={scratch}",
        ],
        check=True,
        stdout=sys.stderr,  # Maven's "Downloading ..." lines are the progress; keep stdout clean
    )
    (scratch / STAMP).write_text(stamp)
    shutil.rmtree(dest, ignore_errors=True)
    scratch.rename(dest)
    say(f"{name}: {len(list(dest.glob('*.jar')))} jars ready in {time.monotonic() - started:.0f}s")
