"""The inference bridge: inference requests from Kafka to Triton, each generated token back as an event.

gRPC's client runs on its legacy I/O manager here, not its EventEngine client (gRPC's own switch,
`GRPC_EXPERIMENTS=-event_engine_client`). Every response of a Triton stream is one token, and
the EventEngine client costs more CPU a response on its way to the event loop: reading a
reply at a GPU's pace (a token every ~10 ms per stream) cost ~150 µs of CPU a token with it and
~100 without, ~52 and ~43 with tokens back to back (docs/capacity-rounds.md, twenty-seventh
round). gRPC reads the variable once, when it is first imported, so it is set here, before any
of the package's modules imports it; a value the environment already has is kept. A gRPC that
no longer knows the switch logs "Unknown experiment" and runs its EventEngine client.
"""

import os

GRPC_EXPERIMENTS = "-event_engine_client"

os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)
