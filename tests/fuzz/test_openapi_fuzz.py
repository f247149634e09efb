"""Property-based fuzzing of every operation in the running API's OpenAPI document (Schemathesis):
valid and invalid parameters and bodies, authenticated as a user of the run's own, must never get a
server error (5xx) nor take more than a few seconds (design rule 10: bad input is cheap).

Deterministic (`derandomize`: the same cases every run) and sized to about a minute on a 2-core
machine. Its writes (conversations it manages to start or rename, sign-ins) belong to a fresh
`fuzz-...` user, so no other test or user sees them.
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error

from infra.settings import settings
from ingest_api.app import create_app
from ingest_api.auth import issue_token
from schemas.events import new_id

pytestmark = pytest.mark.integration

FUZZ_USER = f"fuzz-{new_id()}"
EXAMPLES_PER_OPERATION = 100
SLOW_S = 3.0  # "no request slower than a few seconds": the longest legitimate wait is ~1 s
REQUEST_TIMEOUT_S = 10.0  # a stalled request fails the check above instead of the whole run
# Readiness and the model list answer 503 while a store or Triton is down: that is their job.
STORE_DEPENDENT = {"/readyz", "/v1/models"}


# The document the running API serves, built from the same code without a network call, so that
# collecting this module needs no stack; the cases are sent to the running API.
schema = schemathesis.openapi.from_dict(create_app().openapi())


@schema.parametrize()
@hypothesis_settings(
    max_examples=EXAMPLES_PER_OPERATION,
    derandomize=True,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure is reported as generated
    suppress_health_check=list(HealthCheck),
)
def test_no_request_gets_a_server_error_or_stalls(case: schemathesis.Case) -> None:
    started = time.monotonic()
    response = case.call(
        base_url=settings.api.url,
        headers={"Authorization": f"Bearer {issue_token(FUZZ_USER)}"},
        timeout=REQUEST_TIMEOUT_S,
    )
    elapsed = time.monotonic() - started

    if not (response.status_code == 503 and case.operation.path in STORE_DEPENDENT):
        case.validate_response(response, checks=[not_a_server_error])
    assert elapsed < SLOW_S, f"{case.method} {case.formatted_path} took {elapsed:.2f}s"
