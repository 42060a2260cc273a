"""Child-process entry point that runs llama.cpp's HTTP server via ``xllamacpp.Server``.

xllamacpp ships no CLI: constructing ``xllamacpp.Server(CommonParams)`` loads the model
and starts llama.cpp's native OpenAI-compatible HTTP server on background threads;
deleting the object shuts it down. This module wraps that in a process that:

* writes ``{"address": ..., "pid": ...}`` atomically to ``--ready-file`` once listening
  (so ``--port 0`` lets the OS pick a port without a bind race);
* shuts down cleanly on SIGTERM/SIGINT;
* exits when its parent dies (ppid polling, plus PR_SET_PDEATHSIG with ``--pdeathsig``).

Run by :class:`proxy.backend.llamacpp.EmbeddedLlamaServer`; not meant for direct use.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

_PR_SET_PDEATHSIG = 1


def _set_pdeathsig() -> None:
    """Ask Linux to SIGTERM us when the thread that spawned us exits."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _set_param(params: Any, dotted: str, raw: str) -> None:
    """Set ``params.a.b = json.loads(raw)`` (falling back to the raw string)."""
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    *parents, leaf = dotted.split(".")
    target = params
    for name in parents:
        target = getattr(target, name)
    if not hasattr(target, leaf):
        raise SystemExit(f"unknown xllamacpp CommonParams field: {dotted}")
    setattr(target, leaf, value)


def build_params(args: argparse.Namespace) -> Any:
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.model.path = str(args.model)
    params.hostnames = [args.host]
    params.port = args.port
    params.n_ctx = args.ctx_size
    params.n_parallel = args.parallel
    params.cpuparams.n_threads = args.threads
    params.cpuparams_batch.n_threads = args.threads_batch or args.threads
    params.endpoint_metrics = args.metrics
    # Set, not left to the binding's default: without Jinja templates llama.cpp answers tool
    # requests with the call written as text (finish_reason "stop", no tool_calls).
    params.use_jinja = args.jinja
    if args.alias:
        params.model_alias = {args.alias}
    for item in args.param:
        name, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--param expects NAME=JSON_VALUE, got {item!r}")
        _set_param(params, name, raw)
    return params


def _write_ready_file(path: Path, address: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"address": address, "pid": os.getpid()}))
    os.replace(tmp, path)


class _StopWaiter:
    """Wait for SIGTERM/SIGINT or the parent's death, logging which one (and who sent the signal)."""

    _SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, parent_pid: int) -> None:
        self.parent_pid = parent_pid
        self._flag = threading.Event()
        if hasattr(signal, "sigtimedwait"):
            # Block before xllamacpp starts its threads so they inherit the mask: the
            # signals are then only ever consumed by wait() below, with the sender's pid.
            signal.pthread_sigmask(signal.SIG_BLOCK, self._SIGNALS)
        else:  # pragma: no cover - macOS
            for sig in self._SIGNALS:
                signal.signal(sig, lambda *_: self._flag.set())

    def wait(self) -> str:
        while True:
            if hasattr(signal, "sigtimedwait"):
                info = signal.sigtimedwait(self._SIGNALS, 0.5)
                if info is not None:
                    return f"{signal.Signals(info.si_signo).name} from pid {info.si_pid}"
            elif self._flag.wait(0.5):  # pragma: no cover - macOS
                return "signal"
            if self.parent_pid and os.getppid() != self.parent_pid:
                return f"parent {self.parent_pid} is gone"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m proxy.backend.llamacpp_runner")
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctx-size", type=int, default=8192)
    ap.add_argument("--parallel", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--threads-batch", type=int, default=0)
    ap.add_argument("--alias", default="")
    ap.add_argument("--metrics", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--jinja", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--param", action="append", default=[], help="extra CommonParams field: NAME=JSON")
    ap.add_argument("--ready-file", type=Path, required=True)
    ap.add_argument("--parent-pid", type=int, default=0)
    ap.add_argument("--pdeathsig", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.pdeathsig:
        _set_pdeathsig()
    if args.parent_pid and os.getppid() != args.parent_pid:
        return 1  # parent died before we could arm the death signal

    waiter = _StopWaiter(args.parent_pid)

    if not args.model.is_file():
        print(f"model file not found: {args.model}", file=sys.stderr, flush=True)
        return 2

    import xllamacpp

    server = xllamacpp.Server(build_params(args))  # blocks until the model is loaded
    try:
        _write_ready_file(args.ready_file, server.listening_address)
        print(f"runner: serving on {server.listening_address}", file=sys.stderr, flush=True)
        reason = waiter.wait()
        print(f"runner: stopping ({reason})", file=sys.stderr, flush=True)
        del server  # ~Server stops the HTTP server and the main loop
    finally:
        # The parent normally removes its temp dir; after it was SIGKILLed nobody else will.
        args.ready_file.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            args.ready_file.parent.rmdir()  # only if empty
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
