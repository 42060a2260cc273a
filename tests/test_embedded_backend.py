"""The embedded llama.cpp server (xllamacpp, child process) with the real default model."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from proxy.backend.llamacpp import (
    DEFAULT_ALIAS,
    EmbeddedLlamaServer,
    LlamaServerError,
    LlamaServerOptions,
    default_server_options,
)

pytestmark = pytest.mark.timeout(300)

QUESTION = "What is 2+3? Answer with just the number."


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedLlamaServer]:
    log = tmp_path_factory.mktemp("llama") / "server.log"
    with EmbeddedLlamaServer(default_server_options(log_path=log)) as srv:
        yield srv


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=120) as c:
        yield c


def _chat(client: httpx.Client, server: EmbeddedLlamaServer, **body: object) -> httpx.Response:
    return client.post(f"{server.base_url}/chat/completions", json={"model": DEFAULT_ALIAS, **body})


def _pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (an orphan may await reaping by init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # ignore TIME_WAIT leftovers
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_chat_completion_answers_simple_arithmetic(server: EmbeddedLlamaServer, client: httpx.Client) -> None:
    resp = _chat(client, server, messages=[{"role": "user", "content": QUESTION}], temperature=0)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert "5" in body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] > 0 and body["usage"]["completion_tokens"] > 0


def test_streaming_with_include_usage_ends_with_a_usage_chunk(
    server: EmbeddedLlamaServer, client: httpx.Client
) -> None:
    events: list[str] = []
    with client.stream(
        "POST",
        f"{server.base_url}/chat/completions",
        json={
            "messages": [{"role": "user", "content": QUESTION}],
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"Connection": "close"},  # the server may drop keep-alive connections after a stream
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line.removeprefix("data: ") for line in resp.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert "5" in text
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_hitting_max_tokens_reports_finish_reason_length(server: EmbeddedLlamaServer, client: httpx.Client) -> None:
    resp = _chat(
        client,
        server,
        messages=[{"role": "user", "content": "Write a long poem about the sea."}],
        max_tokens=5,
        temperature=0,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5


def test_models_endpoint_lists_the_default_alias(server: EmbeddedLlamaServer, client: httpx.Client) -> None:
    resp = client.get(f"{server.base_url}/models")
    assert resp.status_code == 200
    assert [m["id"] for m in resp.json()["data"]] == [DEFAULT_ALIAS]


def test_n_choices_are_served_up_to_the_slot_count_and_rejected_beyond(
    server: EmbeddedLlamaServer, client: httpx.Client
) -> None:
    """Documents this llama.cpp build: n>1 works (one slot per choice), n > n_parallel is a 400."""
    messages = [{"role": "user", "content": "Name an animal."}]
    ok = _chat(client, server, messages=messages, n=2, max_tokens=4)
    assert ok.status_code == 200, ok.text
    assert [c["index"] for c in ok.json()["choices"]] == [0, 1]

    too_many = _chat(client, server, messages=messages, n=server.options.n_parallel + 1, max_tokens=4)
    assert too_many.status_code == 400
    error = too_many.json()["error"]
    assert error["type"] == "invalid_request_error" and "'n'" in error["message"]


def test_prompt_longer_than_a_slot_is_rejected_not_crashing(server: EmbeddedLlamaServer, client: httpx.Client) -> None:
    resp = _chat(client, server, messages=[{"role": "user", "content": "word " * 3000}], max_tokens=4)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "exceed_context_size_error"
    assert server.is_running()


def test_stop_ends_the_process_and_frees_the_port(tmp_path: Path) -> None:
    srv = EmbeddedLlamaServer(default_server_options(log_path=tmp_path / "server.log"))
    srv.start()
    srv.wait_healthy(timeout_s=120)
    pid, port = srv.pid, srv.port
    assert pid is not None and _pid_alive(pid) and not _port_is_free(port)

    srv.stop()
    assert not srv.is_running()
    assert not _pid_alive(pid)
    assert _port_is_free(port)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    srv.stop()  # idempotent


def test_server_does_not_outlive_a_killed_parent(tmp_path: Path) -> None:
    """If the proxy is SIGKILLed (no cleanup runs), the llama server must still go away."""
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from proxy.backend.llamacpp import EmbeddedLlamaServer, default_server_options
        srv = EmbeddedLlamaServer(default_server_options(log_path=Path({str(tmp_path / "server.log")!r})))
        srv.start()
        srv.wait_healthy(120)
        print(srv.pid, srv.port, srv._tmpdir, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        pid_s, port_s, tmpdir = parent.stdout.readline().split()
        child_pid, port, ready_file = int(pid_s), int(port_s), Path(tmpdir) / "ready.json"
        assert _pid_alive(child_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 30
    while _pid_alive(child_pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _pid_alive(child_pid), "llama server outlived its parent"
    assert _port_is_free(port)
    assert not ready_file.exists() and not ready_file.parent.exists()


def test_unloadable_model_fails_fast_with_the_server_log(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"not a gguf file" * 100)
    srv = EmbeddedLlamaServer(LlamaServerOptions(model_path=bogus, log_path=tmp_path / "server.log"))
    srv.start()
    try:
        with pytest.raises(LlamaServerError, match="exited with code") as info:
            srv.wait_healthy(timeout_s=60)
        assert "invalid magic" in str(info.value) or "failed to load model" in str(info.value)
    finally:
        srv.stop()
