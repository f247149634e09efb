"""Plugins for every suite: a test past its timeout fails (`tests.timeout_guard`); `pytester`
runs that plugin's own tests."""

pytest_plugins = ["pytester", "tests.timeout_guard"]
