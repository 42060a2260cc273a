"""A backend that fails or lies never hurts the client or memory: each fault is an error the client
sees (a 4xx/5xx envelope, or an SSE error event and no [DONE]), is counted, is never stored, and the
next request on the same connection works."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from proxy.backend.client import MESSAGE_LIMIT, backend_message
from tests.conftest import ProxyFactory, RunningProxy
from tests.fault_backend import ANSWER, BODY_MODES, STATUSES, STREAM_ONLY_MODES, DroppingBackend, FaultBackend

MALFORMED = ["truncated_json", "list_body", "nan", "choices_strings", "choices_missing", "choices_empty"]
CODES = {
    **dict.fromkeys([*MALFORMED, "usage_string", "number_event", "string_event"], "backend_malformed"),
    "error_body": "backend_error",
    "error_mid_stream": "backend_error",
    "hang": "backend_timeout",
    "cut_body": "backend_unavailable",
    "no_done": "backend_incomplete",
}
CASES = [(mode, False) for mode in BODY_MODES] + [(mode, True) for mode in BODY_MODES + STREAM_ONLY_MODES]


def expected_code(mode: str, stream: bool) -> str:
    if mode in STATUSES:
        return "backend_rejected" if STATUSES[mode] < 500 else "backend_error"
    if stream and mode in ("choices_missing", "choices_empty"):
        # A chunk without choices is allowed (the usage chunk is one): such a stream just never answers.
        return "backend_incomplete"
    return CODES[mode]


def expected_status(code: str, mode: str) -> int:
    if code == "backend_rejected":
        return STATUSES[mode]
    return 504 if code == "backend_timeout" else 502


@pytest.fixture(scope="module")
def fault_server() -> Iterator[FaultBackend]:
    backend = FaultBackend()
    yield backend
    backend.stop()


@pytest.fixture
def fault(fault_server: FaultBackend) -> FaultBackend:
    fault_server.mode, fault_server.calls = "ok", 0
    return fault_server


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30) as client:
        yield client


def request_body(mode: str) -> dict[str, Any]:
    return {"model": "fault", "temperature": 0, "messages": [{"role": "user", "content": f"What is 6 x 7? ({mode})"}]}


def backend_errors(http: httpx.Client, proxy: RunningProxy) -> dict[str, float]:
    counts = {}
    for line in http.get(proxy.url + "/metrics").text.splitlines():
        if line.startswith("speedup_backend_errors_total{"):
            labels, value = line.rsplit(" ", 1)
            counts[labels.split('code="')[1].split('"')[0]] = float(value)
    return counts


def streamed(http: httpx.Client, proxy: RunningProxy, body: dict[str, Any]) -> tuple[int, str]:
    with http.stream("POST", proxy.url + "/v1/chat/completions", json={**body, "stream": True}) as response:
        return response.status_code, response.read().decode()


def data_events(raw: str) -> list[str]:
    return [line[len("data: ") :] for line in raw.splitlines() if line.startswith("data: ")]


def failure_of_stream(http: httpx.Client, proxy: RunningProxy, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The HTTP status and error of a failed stream: an envelope, or 200 with an error event as the last."""
    status, raw = streamed(http, proxy, body)
    if status != 200:
        return status, json.loads(raw)["error"]
    events = data_events(raw)
    assert "[DONE]" not in events, "a fault must never end in [DONE]"
    return status, json.loads(events[-1])["error"]


def failure_of_completion(http: httpx.Client, proxy: RunningProxy, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    with pytest.raises(openai.APIStatusError) as caught:
        proxy.client(http_client=http).chat.completions.create(**body)
    return caught.value.status_code, caught.value.response.json()["error"]


def assert_answers(http: httpx.Client, proxy: RunningProxy, body: dict[str, Any], stream: bool) -> None:
    if not stream:
        answer = proxy.client(http_client=http).chat.completions.create(**body)
        assert answer.choices[0].message.content == ANSWER
        return
    status, raw = streamed(http, proxy, body)
    events = data_events(raw)
    assert status == 200 and events[-1] == "[DONE]"
    chunks = [json.loads(event) for event in events[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == ANSWER


@pytest.mark.parametrize(("mode", "stream"), CASES, ids=[f"{m}-{'stream' if s else 'whole'}" for m, s in CASES])
def test_lying_backend_is_an_error_counted_and_never_remembered(
    start_proxy: ProxyFactory, fault: FaultBackend, http: httpx.Client, mode: str, stream: bool
) -> None:
    proxy = start_proxy(fault.url, backend_timeout_s=1)
    body = request_body(mode)
    code = expected_code(mode, stream)
    before = backend_errors(http, proxy).get(code, 0.0)
    fault.mode = mode
    status, error = (failure_of_stream if stream else failure_of_completion)(http, proxy, body)
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    if not stream or status != 200:
        assert status == expected_status(code, mode)
    assert len(error["message"]) <= MESSAGE_LIMIT + len("backend error (503): ")
    assert backend_errors(http, proxy)[code] == before + 1
    proxy.settle()
    assert proxy.container.memory.count() == 0
    fault.mode = "ok"
    assert_answers(http, proxy, body, stream)  # same client, same connection: the proxy is unharmed
    proxy.settle()
    assert proxy.container.memory.count() == 1  # memory still works: the zero above was no accident


def test_sdk_stream_raises_on_an_error_event_mid_stream(start_proxy: ProxyFactory, fault: FaultBackend) -> None:
    proxy = start_proxy(fault.url)
    fault.mode = "error_mid_stream"
    stream = proxy.client().chat.completions.create(**request_body("sdk"), stream=True)
    text = []
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            text.extend(choice.delta.content or "" for choice in chunk.choices)
    assert "".join(text) == "The answer"
    assert caught.value.message == "backend error: model crashed badly"


def test_error_in_a_200_body_is_a_502_with_the_backends_message(
    start_proxy: ProxyFactory, fault: FaultBackend, http: httpx.Client
) -> None:
    proxy = start_proxy(fault.url)
    fault.mode = "error_body"
    status, error = failure_of_completion(http, proxy, request_body("error"))
    assert (status, error["message"]) == (502, "backend error: model crashed badly")


def test_backend_error_pages_reach_the_client_short_and_plain(
    start_proxy: ProxyFactory, fault: FaultBackend, http: httpx.Client
) -> None:
    proxy = start_proxy(fault.url)
    fault.mode = "status_503"
    _, page = failure_of_completion(http, proxy, request_body("page"))
    plain_page = 'backend error (503): 503 Service Unavailable 503 Service Unavailable The upstream is "down".'
    assert page["message"].startswith(plain_page)
    assert "<" not in page["message"] and "color" not in page["message"]
    fault.mode = "status_400"
    status, rejected = failure_of_completion(http, proxy, request_body("long"))
    assert status == 400 and len(rejected["message"]) == MESSAGE_LIMIT and rejected["message"].endswith("…")


def test_backend_message_is_plain_short_text() -> None:
    assert backend_message("<p>a &amp;\n b</p><script>alert(1)</script>") == "a & b"
    assert backend_message("x" * 500) == "x" * (MESSAGE_LIMIT - 1) + "…"
    assert backend_message("fine") == "fine"


def test_backend_cut_mid_response_is_not_retried(
    start_proxy: ProxyFactory, fault: FaultBackend, http: httpx.Client
) -> None:
    proxy = start_proxy(fault.url)
    fault.mode = "cut_body"
    for attempt in range(5):
        status, error = failure_of_completion(http, proxy, request_body(f"cut {attempt}"))
        assert (status, error["code"]) == (502, "backend_unavailable")
    assert fault.calls == 5  # one generation asked for each request: a retry could double the work


@pytest.fixture
def dropping() -> Iterator[list[DroppingBackend]]:
    started: list[DroppingBackend] = []
    yield started
    for backend in started:
        backend.stop()


def plain(question: str) -> dict[str, Any]:
    """A request without memory: no background work that could call the backend too."""
    messages = [{"role": "user", "content": question}]
    return {"model": "fault", "messages": messages, "extra_body": {"speedup": {"memory": "off"}}}


def test_request_dropped_on_a_kept_alive_connection_is_retried_once(
    start_proxy: ProxyFactory, dropping: list[DroppingBackend]
) -> None:
    dropping.append(backend := DroppingBackend(drop="reused"))
    client = start_proxy(backend.url).client()
    assert client.chat.completions.create(**plain("first")).choices[0].message.content == ANSWER
    assert client.chat.completions.create(**plain("second")).choices[0].message.content == ANSWER
    assert backend.calls == 3  # the second was dropped unanswered on the kept-alive connection, then retried


def test_request_dropped_on_a_fresh_connection_is_not_retried(
    start_proxy: ProxyFactory, dropping: list[DroppingBackend]
) -> None:
    dropping.append(backend := DroppingBackend(drop="fresh"))
    with pytest.raises(openai.APIStatusError) as caught:
        start_proxy(backend.url).client().chat.completions.create(**plain("first"))
    assert caught.value.status_code == 502
    assert backend.calls == 1  # the backend had the whole request and may be generating: never asked twice
