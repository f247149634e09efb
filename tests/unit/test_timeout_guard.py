"""A test past its timeout fails even when it swallowed the timeout's exception (`tests.timeout_guard`)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]  # where `tests` imports from

TESTS = """
import time
import pytest

@pytest.mark.timeout(0.2)
def test_that_swallows_its_timeout():
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except BaseException:  # what a garbage-collector or asyncio callback does with it
            pass

@pytest.mark.timeout(0.2)
def test_that_runs_too_long():
    time.sleep(5)

@pytest.mark.timeout(5)
def test_within_its_timeout():
    pass
"""


@pytest.fixture
def tests_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """Three tests under the guard, in a subprocess: an inner run's alarm must not replace the outer test's."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(TESTS)
    return pytester


def run(pytester: pytest.Pytester, *options: str) -> pytest.RunResult:
    plugins = ("-p", "tests.timeout_guard", "-p", "no:asyncio", "-p", "no:cacheprovider")
    return pytester.runpytest_subprocess(*plugins, "-rA", *options)


def test_a_test_that_swallowed_its_timeout_fails_and_the_others_as_before(tests_run: pytest.Pytester) -> None:
    result = run(tests_run)
    # The swallowing test's call passed and its teardown reports the overrun; the test whose timeout
    # was raised failed once, with no second error from the guard.
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_that_swallows_its_timeout*",
            "ran *s, past its 0.2 s timeout*swallowed*",
            "*Failed: Timeout (>0.2s) from pytest-timeout*",
        ]
    )


def test_with_func_only_the_call_itself_fails(tests_run: pytest.Pytester) -> None:
    result = run(tests_run, "-o", "timeout_func_only=true")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*_ test_that_swallows_its_timeout _*", "ran *s, past its 0.2 s timeout*"])
