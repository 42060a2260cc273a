"""Run llama.cpp's OpenAI-compatible HTTP server (from the xllamacpp wheel) as a child process.

Usage::

    with EmbeddedLlamaServer(default_server_options()) as server:
        httpx.post(f"{server.base_url}/chat/completions", json={...})

The child is ``python -m proxy.backend.llamacpp_runner`` (xllamacpp has no CLI of its own).
It is stopped with SIGTERM then SIGKILL, at interpreter exit, and - via a ppid watchdog
and PR_SET_PDEATHSIG - when this process dies.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from proxy.backend.model_files import cache_root, ensure_default_model

DEFAULT_ALIAS = "qwen2.5-coder-0.5b-instruct"
_LOG_ROTATE_BYTES = 20 * 1024 * 1024


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 2


@dataclass(frozen=True)
class LlamaServerOptions:
    """How to run the embedded server.

    ``ctx_size`` is the TOTAL KV context: llama.cpp splits it evenly across the
    ``n_parallel`` slots (8192 / 4 = 2048 tokens per request, prompt + completion).
    """

    model_path: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port, reported back by the child
    ctx_size: int = 8192
    n_parallel: int = 4
    threads: int = field(default_factory=_default_threads)
    threads_batch: int | None = None  # None: same as threads
    alias: str = DEFAULT_ALIAS  # the model id shown by /v1/models
    metrics: bool = True  # expose Prometheus /metrics
    # The model's Jinja chat template: llama.cpp's OpenAI tool calling (tools -> tool_calls) needs it.
    jinja: bool = True
    extra_params: dict[str, Any] = field(default_factory=dict)  # xllamacpp.CommonParams fields, dotted
    log_path: Path | None = None  # default: <cache>/logs/llama-server.log (appended)


def _child_env() -> dict[str, str]:
    """Our environment, with this package importable even when run from a source checkout."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def default_server_options(cache_dir: Path | None = None, **overrides: Any) -> LlamaServerOptions:
    """Options for the default model, assembling it first if needed."""
    return LlamaServerOptions(model_path=ensure_default_model(cache_dir), **overrides)


class LlamaServerError(RuntimeError):
    """The server process failed to start, died, or did not become healthy."""


class EmbeddedLlamaServer:
    def __init__(self, options: LlamaServerOptions, *, cache_dir: Path | None = None) -> None:
        self.options = options
        self.log_path = options.log_path or cache_root(cache_dir) / "logs" / "llama-server.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._log_offset = 0
        self._tmpdir: Path | None = None
        self._port: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the server process; returns at once (use :meth:`wait_healthy`)."""
        if self._proc is not None:
            raise LlamaServerError("server already started")
        opts = self.options
        self._tmpdir = Path(tempfile.mkdtemp(prefix="speedup-llama-"))
        ready_file = self._tmpdir / "ready.json"
        # PR_SET_PDEATHSIG fires when the spawning *thread* exits, so arm it only from the main thread.
        from_main = threading.current_thread() is threading.main_thread()
        cmd = [
            sys.executable, "-m", "proxy.backend.llamacpp_runner",
            "--model", str(Path(opts.model_path).resolve()),
            "--host", opts.host,
            "--port", str(opts.port),
            "--ctx-size", str(opts.ctx_size),
            "--parallel", str(opts.n_parallel),
            "--threads", str(opts.threads),
            "--threads-batch", str(opts.threads_batch or opts.threads),
            "--alias", opts.alias,
            "--metrics" if opts.metrics else "--no-metrics",
            "--jinja" if opts.jinja else "--no-jinja",
            "--ready-file", str(ready_file),
            "--parent-pid", str(os.getpid()),
            *(["--pdeathsig"] if from_main else []),
        ]  # fmt: skip
        for name, value in opts.extra_params.items():
            cmd += ["--param", f"{name}={json.dumps(value)}"]
        self._log = self._open_log()
        self._log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(cmd)}\n".encode())
        self._log.flush()
        self._proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # terminal Ctrl-C goes to us; we stop the child in order
            env=_child_env(),
        )
        self._port = opts.port or None
        atexit.register(self.stop)

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        """Block until GET /health returns 200; raise LlamaServerError with the log tail otherwise."""
        proc = self._require_proc()
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                if proc.poll() is not None:
                    raise LlamaServerError(
                        f"llama server exited with code {proc.returncode} before becoming healthy; "
                        f"log {self.log_path}:\n{self.log_tail()}"
                    )
                if self._port is None:
                    self._port = self._read_ready_port()
                if self._port is not None:
                    try:
                        if client.get(f"{self.root_url}/health").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                if time.monotonic() > deadline:
                    raise LlamaServerError(
                        f"llama server not healthy after {timeout_s:.0f}s; log {self.log_path}:\n{self.log_tail()}"
                    )
                time.sleep(0.1)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``. Safe to call more than once."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> EmbeddedLlamaServer:
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- info ------------------------------------------------------------------------------

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise LlamaServerError("port not known yet: call start() and wait_healthy() first")
        return self._port

    @property
    def root_url(self) -> str:
        """e.g. ``http://127.0.0.1:PORT`` (for /health, /metrics, /props)."""
        return f"http://{self.options.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """OpenAI-compatible base URL, e.g. ``http://127.0.0.1:PORT/v1``."""
        return f"{self.root_url}/v1"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The end of this run's part of the server log."""
        try:
            with self.log_path.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(self._log_offset, size - max_bytes))
                return fh.read().decode(errors="replace")
        except OSError as exc:
            return f"<cannot read log: {exc}>"

    # -- internals -------------------------------------------------------------------------

    def _require_proc(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            raise LlamaServerError("server not started")
        return self._proc

    def _open_log(self) -> IO[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if self.log_path.stat().st_size > _LOG_ROTATE_BYTES:
                os.replace(self.log_path, self.log_path.with_name(self.log_path.name + ".1"))
        except FileNotFoundError:
            pass
        fh = self.log_path.open("ab")
        self._log_offset = fh.tell()
        return fh

    def _read_ready_port(self) -> int | None:
        assert self._tmpdir is not None
        try:
            address = json.loads((self._tmpdir / "ready.json").read_text())["address"]
        except (OSError, ValueError, KeyError):
            return None
        return int(httpx.URL(address).port or 80)
