"""`python -m infra.k8s.probe GROUP`: the liveness/readiness check of a consumer container.

The processors, the bridge and the projections serve no HTTP, so Kubernetes probes them with this
command. It passes when the container's own process is a member of its Kafka consumer group and
the group is stable: the check `steno status` makes (`infra.app_services`), for the process that
Kubernetes started as PID 1 (the container's command is `python -m <component>`, no shell), so a
frozen or disconnected process fails it even while its old membership has not yet timed out
elsewhere. Exits 0 when healthy, 1 (with the reason) when not.
"""

from __future__ import annotations

import argparse
import sys

from infra.app_services import GROUPS
from infra.kafka_clients import stable_member

CONTAINER_PID = 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.k8s.probe", description=__doc__)
    parser.add_argument("group", choices=sorted(GROUPS.values()), help="the consumer group the process belongs to")
    parser.add_argument("--pid", type=int, default=CONTAINER_PID, help="the consumer's PID (default: the container's)")
    args = parser.parse_args(argv)
    try:
        member = stable_member(args.group, args.pid)
    except Exception as exc:  # Kafka unreachable, timeout: unhealthy, and say why
        print(f"{args.group}: could not describe the group: {exc}", file=sys.stderr)
        return 1
    if not member:
        print(f"{args.group}: process {args.pid} is not a member of a stable group", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
