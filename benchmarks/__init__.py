"""steno's benchmarks (`make bench`).

`inference_bridge` is imported first so that every benchmark reads Triton with the gRPC client the
bridge runs (gRPC's client switch, set in `inference_bridge/__init__.py`, must precede the first
import of grpc, which `infra.triton` would otherwise make): the pipeline's direct side and
`triton_transport` measure the bridge's own reader.
"""

import inference_bridge  # noqa: F401  (for its side effect: see above)
