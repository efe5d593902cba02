"""Start and stop a Triton Inference Server on a model repository (``reminder triton serve``).

The ``tritonserver`` binary comes from PATH (NVIDIA's containers), from ``binary``, or from
the ``nvidia-pytriton`` wheel (the ``triton`` extra), which ships Triton with its Python
backend and runs on a CPU. For the wheel's server, this module prepares a backend folder
once (the wheel's backends, with the Python backend stub of this interpreter's version) and
lets the Python backend import this environment's numpy and onnxruntime
(``REMINDER_TRITON_SITE``). That stub is built against numpy 1: with numpy 2 its output
tensors come back empty, so the wheel's server runs with a folder of its own holding numpy<2
and onnxruntime (``python_site``, by default ``<prefix>/triton-site``, which ``make setup``
fills). The server polls the repository, so a version added while it serves is loaded
without a restart.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from reminder.errors import LocalError, MissingDependency, ReminderError


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reminder" / "triton"


def find_tritonserver(binary: str | Path | None = None) -> tuple[Path, Path | None, list[str]]:
    """``(binary, backend folder or None for the binary's own, extra library folders)``."""
    if binary is not None:
        path = Path(binary)
        if not path.is_file():
            raise ReminderError(f"`binary` {binary} is not a file")
        return path, None, []
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path), None, []
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("no tritonserver: run it in NVIDIA's Triton container (docs/serving.md), put it on "
                                "PATH, or install the wheel that ships one: pip install --no-deps nvidia-pytriton")
    package = Path(list(spec.submodule_search_locations)[0])
    server = package / "tritonserver"
    libraries = [str(p) for p in package.parent.glob("nvidia_pytriton.libs") if p.is_dir()]
    return server / "bin" / "tritonserver", _prepared_backends(server), libraries


def _prepared_backends(server: Path) -> Path:
    """The wheel's backends with this Python's stub in ``python/`` (made once, atomically)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = server / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingDependency(f"the tritonserver wheel has no Python backend stub for Python {version}")
    target = _cache_root() / f"backends-{int(stub.stat().st_mtime)}-py{version}"
    if not (target / "python" / "triton_python_backend_stub").is_file():
        staging = target.with_name(target.name + f".{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(server / "backends", staging)
        shutil.copy2(stub, staging / "python" / "triton_python_backend_stub")
        try:
            os.replace(staging, target)
        except OSError:  # another process made it first
            shutil.rmtree(staging, ignore_errors=True)
    return target


class TritonServer:
    """``with TritonServer(repo, http_port=8000) as server: ...`` runs ``tritonserver`` on
    ``repo`` (listening on ``host``, 127.0.0.1 by default) until the block ends."""

    def __init__(self, repo: str | Path, *, host: str = "127.0.0.1", http_port: int = 8000, grpc_port: int = 8001,
                 metrics_port: int = 8002, binary: str | Path | None = None, poll_seconds: int = 1,
                 log_path: str | Path | None = None, threads: int | None = None,
                 python_site: str | Path | None = None):
        self.repo = Path(repo)
        if not self.repo.is_dir():
            raise ReminderError(f"model repository {repo} is not a folder (create it with reminder triton add)")
        self.host, self.http_port, self.grpc_port, self.metrics_port = host, http_port, grpc_port, metrics_port
        self.binary, self.backends, self.libraries = find_tritonserver(binary)
        self.poll_seconds, self.threads = poll_seconds, threads
        self.python_site = python_site or os.environ.get("REMINDER_TRITON_SITE") or default_python_site()
        if self.backends is not None and not _numpy1_site(self.python_site):
            raise MissingDependency(
                f"the tritonserver of the nvidia-pytriton wheel runs its Python backend with numpy 1 (with numpy 2 it "
                f"returns empty tensors): give `python_site` a folder with numpy<2 and onnxruntime, made once with "
                f"pip install --target {default_python_site()} 'numpy<2' onnxruntime")
        self.log_path = Path(log_path) if log_path else self.repo.parent / f".{self.repo.name}.tritonserver.log"
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.host}:{self.grpc_port}"

    def command(self) -> list[str]:
        command = [str(self.binary), f"--model-repository={self.repo.resolve()}",
                   f"--http-address={self.host}", f"--http-port={self.http_port}",
                   f"--grpc-address={self.host}", f"--grpc-port={self.grpc_port}",
                   f"--metrics-address={self.host}", f"--metrics-port={self.metrics_port}",
                   "--model-control-mode=poll", f"--repository-poll-secs={self.poll_seconds}"]
        if self.backends is not None:
            command.append(f"--backend-directory={self.backends}")
        return command

    def start(self, timeout: float = 120.0) -> "TritonServer":
        environment = dict(os.environ)
        if self.python_site and Path(self.python_site).is_dir():
            environment["REMINDER_TRITON_SITE"] = str(self.python_site)
        if self.threads:
            environment["REMINDER_TRITON_THREADS"] = str(self.threads)
        if self.libraries:
            environment["LD_LIBRARY_PATH"] = os.pathsep.join(
                self.libraries + [p for p in environment.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=environment,
                                            start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise LocalError(f"tritonserver exited with code {self.process.returncode} before it was ready: "
                                 f"{_last_error(self.log_path)} (log: {self.log_path})")
            if self.ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise LocalError(f"tritonserver was not ready within {timeout:.0f} s (log: {self.log_path})")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM (Triton finishes the requests in flight), then SIGKILL after ``timeout``."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def default_python_site() -> Path:
    """Where ``make setup`` puts the Python packages of the wheel's Python backend."""
    return Path(sys.prefix) / "triton-site"


def _numpy1_site(site) -> bool:
    """Whether ``site`` (a folder, or None) holds numpy 1 (and onnxruntime)."""
    if site is None:
        return False
    folder = Path(site)
    versions = [p.name.split("-")[1] for p in folder.glob("numpy-*.dist-info")]
    return bool(versions) and versions[0].startswith("1.") and (folder / "onnxruntime").is_dir()


def _last_error(log_path: Path) -> str:
    try:
        lines = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "no log"
    errors = [line for line in lines if line.startswith("E") or "error" in line.lower()]
    return (errors or lines or ["no output"])[-1][:300]
