"""Which llama-cpp-python build a venv holds: `steno up` replaces one built with other flags.

An earlier steno built llama.cpp with its AMX kernels on CPUs that have them, where they garble
SmolLM2's output (`infra.triton`); its wheel has the same version as the build without them, so
the version alone cannot tell them apart. pip is replaced by a recorder: what is tested is which
pip commands `steno up` would run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from infra import triton


@pytest.fixture
def pip_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, ...]]:
    calls: list[tuple[str, ...]] = []
    monkeypatch.setattr(triton, "_pip", lambda *args, **_: calls.append(args))
    monkeypatch.setattr(triton, "_INSTALLED_BUILD", tmp_path / "steno-llama-cpp-build")
    monkeypatch.setattr(triton, "_installed_version", lambda _: triton.LLAMA_CPP_VERSION)
    monkeypatch.setattr(triton, "_cached_llama_wheel", lambda: Path("llama_cpp_python-wheel.whl"))
    return calls


def test_a_build_with_other_flags_of_the_same_version_is_replaced(pip_calls: list[tuple[str, ...]]) -> None:
    triton._INSTALLED_BUILD.write_text("built-with-amx")

    triton._ensure_llama_cpp(install=True)

    assert pip_calls == [("uninstall", "--yes", "llama-cpp-python"), ("install", "llama_cpp_python-wheel.whl")]
    assert triton._installed_build() == triton._build_fingerprint()


def test_a_venv_that_does_not_say_which_build_it_holds_gets_this_one(pip_calls: list[tuple[str, ...]]) -> None:
    triton._ensure_llama_cpp(install=True)

    assert pip_calls[-1] == ("install", "llama_cpp_python-wheel.whl")
    assert triton._installed_build() == triton._build_fingerprint()


def test_this_build_is_left_alone(pip_calls: list[tuple[str, ...]]) -> None:
    triton._INSTALLED_BUILD.write_text(triton._build_fingerprint())

    triton._ensure_llama_cpp(install=True)

    assert pip_calls == []


def test_the_build_flags_are_part_of_the_wheel_cache_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """A wheel cached by a build with other flags is not reused for this one."""
    before = triton._build_fingerprint()
    monkeypatch.setattr(triton, "LLAMA_CPP_CMAKE_ARGS", triton.LLAMA_CPP_CMAKE_ARGS + " -DGGML_OTHER=ON")

    assert triton._build_fingerprint() != before
