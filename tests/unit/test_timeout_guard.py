"""A test past its timeout fails even when it swallowed the timeout's exception, and one that
then hangs ends the run with its stack (`tests.timeout_guard`)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]  # where `tests` imports from
RUN_TIMEOUT_S = 60  # a hung inner run fails the test instead of hanging it

TESTS = """
import time
import pytest

@pytest.mark.timeout(1)
def test_that_swallows_its_timeout():
    deadline = time.monotonic() + 1.5  # past its limit, short of the backstop's twice it
    while time.monotonic() < deadline:
        try:
            time.sleep(0.01)
        except BaseException:  # what a garbage-collector or asyncio callback does with it
            pass

@pytest.mark.timeout(1)
def test_that_runs_too_long():
    time.sleep(5)

@pytest.mark.timeout(5)
def test_within_its_timeout():
    pass
"""


HANGING = """
import time
import pytest

@pytest.mark.timeout(1)
def test_within_its_timeout():
    pass

@pytest.mark.timeout(0)
def test_without_a_timeout_after_one_with_it():
    time.sleep(2.5)  # past twice the last test's limit: its backstop must have been disarmed

@pytest.mark.timeout(1)
def test_that_swallows_its_timeout_and_hangs():
    while True:
        try:
            time.sleep(0.01)
        except BaseException:
            pass
"""


@pytest.fixture
def tests_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return written(pytester, monkeypatch, TESTS)


def written(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tests: str) -> pytest.Pytester:
    """The tests, to run under the guard in a subprocess: an inner run's alarm must not replace the outer test's."""
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile(tests)
    return pytester


def run(pytester: pytest.Pytester, *options: str) -> pytest.RunResult:
    plugins = ("-p", "tests.timeout_guard", "-p", "no:asyncio", "-p", "no:cacheprovider")
    return pytester.runpytest_subprocess(*plugins, "-rA", *options, timeout=RUN_TIMEOUT_S)


def test_a_test_that_swallowed_its_timeout_fails_and_the_others_as_before(tests_run: pytest.Pytester) -> None:
    result = run(tests_run)
    # The swallowing test's call passed and its teardown reports the overrun; the test whose timeout
    # was raised failed once, with no second error from the guard.
    result.assert_outcomes(passed=2, failed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_that_swallows_its_timeout*",
            "ran *s, past its 1 s timeout*swallowed*",
            "*Failed: Timeout (>1.0s) from pytest-timeout*",
        ]
    )


def test_with_func_only_the_call_itself_fails(tests_run: pytest.Pytester) -> None:
    result = run(tests_run, "-o", "timeout_func_only=true")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*_ test_that_swallows_its_timeout _*", "ran *s, past its 1 s timeout*"])


def test_a_test_that_swallowed_its_timeout_and_hangs_ends_the_run_with_its_stack(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run(written(pytester, monkeypatch, HANGING), "-v")
    assert result.ret == 1, f"the hung run ended with {result.ret}"
    passed = ["*test_within_its_timeout PASSED*", "*test_without_a_timeout_after_one_with_it PASSED*"]
    result.stdout.fnmatch_lines(passed)  # the second one outlived twice the first one's limit
    result.stderr.fnmatch_lines(["Timeout (*)!", "*in test_that_swallows_its_timeout_and_hangs"])
