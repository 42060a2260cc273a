"""Bad input never hurts the proxy, its connections or its memory (issue 11).

Each case the issue measured, against a real proxy with the stub backend: a 400 (or a 500) in
OpenAI's envelope, nothing forwarded or remembered, and the kept-alive connection still serving
the next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ProxyFactory, RunningProxy, ServerThread, stub_url

KEY = "key-acme-hardening-01"
OTHER_KEY = "key-globex-hardening-2"
ADMIN_KEY = "admin-key-hardening-003"
AUTH = {"authorization": f"Bearer {KEY}"}
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
QUESTION = [{"role": "user", "content": "What is the answer?"}]


@pytest.fixture
def proxy(start_proxy: ProxyFactory, stub_backend: ServerThread) -> RunningProxy:
    return start_proxy(stub_url(stub_backend), api_keys={KEY: "acme", OTHER_KEY: "globex"}, admin_key=ADMIN_KEY)


@pytest.fixture
def http(proxy: RunningProxy) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy.url, timeout=30) as client:
        yield client


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def assert_connection_serves_again(http: httpx.Client, failed: httpx.Response) -> None:
    """The next request goes over the same kept-alive connection, and succeeds."""
    assert "close" not in failed.headers.get("connection", "").lower()
    following = http.get("/v1/models", headers=AUTH)
    assert following.status_code == 200
    assert following.extensions["network_stream"] is failed.extensions["network_stream"]


def episodes(proxy: RunningProxy) -> int:
    proxy.settle()
    memory = proxy.container.memory
    assert memory is not None
    return sum(memory.count(tenant) for tenant in memory.tenants())


def post_raw(http: httpx.Client, body: bytes, path: str = "/v1/chat/completions") -> httpx.Response:
    return http.post(path, content=body, headers={**AUTH, "content-type": "application/json"})


def refused(proxy: RunningProxy, http: httpx.Client, body: bytes, stub_backend: ServerThread) -> dict[str, Any]:
    """Posts a body that must be refused: 400 envelope, no backend call, nothing stored, connection kept."""
    before, calls = episodes(proxy), stub_backend.app.state.calls
    response = post_raw(http, body)
    error = assert_envelope(response, 400)
    assert stub_backend.app.state.calls == calls
    assert episodes(proxy) == before
    assert_connection_serves_again(http, response)
    return error


# -- 1. bad bodies: 400 at parse time ---------------------------------------------------------------


def test_a_non_string_text_part_gets_a_400_envelope(
    proxy: RunningProxy, http: httpx.Client, stub_backend: ServerThread
) -> None:
    body = b'{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}'
    error = refused(proxy, http, body, stub_backend)
    assert error["param"] == "messages.0.content"


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_nan_in_a_pass_through_field_gets_a_400_envelope(
    proxy: RunningProxy, http: httpx.Client, stub_backend: ServerThread, number: str
) -> None:
    body = b'{"top_p":%s,"messages":[{"role":"user","content":"hi"}]}' % number.encode()
    error = refused(proxy, http, body, stub_backend)
    assert error["code"] == "invalid_json"


def test_a_non_finite_number_deep_inside_the_body_gets_a_400_envelope(
    proxy: RunningProxy, http: httpx.Client, stub_backend: ServerThread
) -> None:
    body = b'{"tools":[{"type":"function","function":{"parameters":{"x":[1,NaN]}}}],"messages":[]}'
    refused(proxy, http, body, stub_backend)


def test_a_lone_surrogate_gets_a_400_envelope(
    proxy: RunningProxy, http: httpx.Client, stub_backend: ServerThread
) -> None:
    body = b'{"messages":[{"role":"user","content":"What is \\ud800?"}]}'
    error = refused(proxy, http, body, stub_backend)
    assert "surrogate" in error["message"]


def test_a_surrogate_pair_is_an_ordinary_character(proxy: RunningProxy, http: httpx.Client) -> None:
    body = b'{"model":"stub","messages":[{"role":"user","content":"What is \\ud83d\\ude00?"}]}'
    assert post_raw(http, body).status_code == 200


def test_json_nested_1000_deep_gets_a_400_envelope(
    proxy: RunningProxy, http: httpx.Client, stub_backend: ServerThread
) -> None:
    body = b'{"metadata":' + b"[" * 1000 + b"]" * 1000 + b',"messages":[{"role":"user","content":"hi"}]}'
    error = refused(proxy, http, body, stub_backend)
    assert "nested deeper than 64" in error["message"]


def test_json_nested_within_the_limit_is_forwarded(proxy: RunningProxy, http: httpx.Client) -> None:
    body = b'{"model":"stub","metadata":' + b"[" * 60 + b"]" * 60 + b',"messages":[{"role":"user","content":"hi"}]}'
    assert post_raw(http, body).status_code == 200


# -- 4. the values validated are the values forwarded -----------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stream", '"false"'),
        ("stream", "0"),
        ("temperature", '"0"'),
        ("temperature", "true"),
        ("n", '"2"'),
        ("n", "2.0"),
        ("max_tokens", '"5"'),
        ("max_completion_tokens", "5.5"),
        ("stream_options", '{"include_usage":"yes"}'),
    ],
)
def test_a_string_where_the_proxy_reads_a_number_or_boolean_gets_a_400(
    proxy: RunningProxy, http: httpx.Client, stub_backend: ServerThread, field: str, value: str
) -> None:
    body = b'{"%s":%s,"messages":[{"role":"user","content":"hi"}]}' % (field.encode(), value.encode())
    error = refused(proxy, http, body, stub_backend)
    assert error["param"].startswith(field)


def test_typed_values_are_forwarded_as_validated(
    proxy: RunningProxy, http: httpx.Client, stub_backend: ServerThread
) -> None:
    body = {"model": "stub", "messages": QUESTION, "stream": False, "temperature": 0, "max_tokens": 5}
    assert http.post("/v1/chat/completions", json=body, headers=AUTH).status_code == 200
    forwarded = stub_backend.app.state.bodies[-1]
    assert forwarded["stream"] is False and forwarded["temperature"] == 0


# -- the catch-all: an unexpected exception is a 500 envelope, and the connection lives on ----------


def test_an_unexpected_exception_gets_a_500_envelope_and_keeps_the_connection(
    proxy: RunningProxy, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(proxy.container.pipeline, "handle", broken)
    response = http.post("/v1/chat/completions", json={"messages": QUESTION}, headers=AUTH)
    error = assert_envelope(response, 500)
    assert error["type"] == "api_error" and error["code"] == "internal_error"
    assert "a bug" not in error["message"]  # logged, not shown
    assert_connection_serves_again(http, response)


# -- admin routes: tenant names -----------------------------------------------------------------------


def test_a_snowman_tenant_exports_with_an_rfc5987_file_name(proxy: RunningProxy, http: httpx.Client) -> None:
    response = http.get("/admin/tenants/%E2%98%83/export", headers=ADMIN)
    assert response.status_code == 200, response.text
    disposition = response.headers["content-disposition"]
    assert disposition == "attachment; filename=\"_-episodes.jsonl\"; filename*=UTF-8''%E2%98%83-episodes.jsonl"
    assert_connection_serves_again(http, response)


@pytest.mark.parametrize("name", ["%0d%0a", "a%00b", "x%0aSet-Cookie:%20y", "%7f", "%c2%85"])
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/admin/tenants/{t}/export"),
        ("GET", "/admin/tenants/{t}/episodes"),
        ("GET", "/admin/tenants/{t}/episodes/e1"),
        ("DELETE", "/admin/tenants/{t}/reflections/r1"),
        ("DELETE", "/admin/tenants/{t}"),
    ],
)
def test_a_tenant_name_with_control_characters_gets_a_400_envelope(
    proxy: RunningProxy, http: httpx.Client, name: str, method: str, path: str
) -> None:
    response = http.request(method, path.format(t=name), headers=ADMIN)
    error = assert_envelope(response, 400)
    assert error["code"] == "invalid_tenant" and error["param"] == "tenant"
    assert_connection_serves_again(http, response)


def test_a_bad_tenant_name_is_looked_at_only_after_the_admin_key(proxy: RunningProxy, http: httpx.Client) -> None:
    assert_envelope(http.get("/admin/tenants/%00/export"), 401)
    assert_envelope(http.get("/admin/tenants/%00/export", headers=AUTH), 403)


# -- 3. corrections ------------------------------------------------------------------------------------


def served_id(http: httpx.Client, question: str) -> str:
    body = {"model": "stub", "messages": [{"role": "user", "content": question}]}
    response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    return response.json()["id"]


@pytest.mark.parametrize("correction", ["   ", "\n\t \r\n", "\u0000", "42\u0000", "\x1b[31m42", "\u0085"])
def test_an_empty_or_control_character_correction_is_not_stored_as_gold(
    proxy: RunningProxy, http: httpx.Client, correction: str
) -> None:
    response_id = served_id(http, "What is six times seven?")
    before = episodes(proxy)
    response = http.post(
        "/v1/feedback", json={"response_id": response_id, "rating": "bad", "correction": correction}, headers=AUTH
    )
    error = assert_envelope(response, 400)
    assert error["param"] == "correction"
    assert episodes(proxy) == before
    assert_connection_serves_again(http, response)


def test_a_correction_is_stored_stripped(proxy: RunningProxy, http: httpx.Client) -> None:
    response_id = served_id(http, "What is six times seven?")
    response = http.post(
        "/v1/feedback",
        json={"response_id": response_id, "rating": "bad", "correction": "  It is 42.\n\tReally.\n "},
        headers=AUTH,
    )
    assert response.status_code == 200, response.text
    memory = proxy.container.memory
    assert memory is not None
    gold = memory.get("acme", response.json()["gold_episode_id"])
    assert gold is not None and gold.answer == "It is 42.\n\tReally."


def test_a_lone_surrogate_in_feedback_gets_a_400_envelope(proxy: RunningProxy, http: httpx.Client) -> None:
    body = b'{"response_id":"chatcmpl-x","rating":"bad","correction":"\\udc00"}'
    assert_envelope(post_raw(http, body, "/v1/feedback"), 400)


# -- 5. per-request memory modes cost money: allowed per tenant ----------------------------------------


def ask_with_mode(http: httpx.Client, key: str, question: str, mode: str) -> httpx.Response:
    body = {"model": "stub", "messages": [{"role": "user", "content": question}], "speedup": {"memory_mode": mode}}
    response = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response


def test_a_requested_memory_mode_is_ignored_for_a_tenant_not_allowed_to_choose(
    start_proxy: ProxyFactory, stub_backend: ServerThread
) -> None:
    proxy = start_proxy(
        stub_url(stub_backend),
        api_keys={KEY: "acme", OTHER_KEY: "globex"},
        memory_modes={"min_cluster_size": 1, "request_override_tenants": ["globex"]},
    )
    calls = stub_backend.app.state.calls
    with httpx.Client(base_url=proxy.url, timeout=30) as http:
        for i in range(3):
            # reflect_update writes a lesson after every new episode: backend calls the client does not see.
            response = ask_with_mode(http, KEY, f"How many pencils are in box {i}?", "reflect_update")
            assert response.headers["x-speedup-memory-mode"] == "exemplars"  # the configured mode is used
            proxy.settle()
        assert stub_backend.app.state.calls == calls + 3  # one call a request: no lessons
        allowed = ask_with_mode(http, OTHER_KEY, "How many crayons are in box 1?", "reflect_update")
        assert allowed.headers["x-speedup-memory-mode"] == "reflect_update"


# -- 2. observability needs the admin key once keys are configured -------------------------------------


def test_healthz_shows_only_its_status_without_the_admin_key(proxy: RunningProxy, http: httpx.Client) -> None:
    for headers in ({}, AUTH, {"x-api-key": ""}):
        assert http.get("/healthz", headers=headers).json() == {"status": "ok"}
    detailed = http.get("/healthz", headers=ADMIN).json()
    assert detailed["status"] == "ok" and detailed["backend_reachable"] is True
    assert detailed["backend"].startswith("http://127.0.0.1") and "memory" in detailed


def test_metrics_need_the_admin_key_when_keys_are_configured(proxy: RunningProxy, http: httpx.Client) -> None:
    assert_envelope(http.get("/metrics"), 401)
    assert_envelope(http.get("/metrics", headers={"x-api-key": ""}), 401)
    assert_envelope(http.get("/metrics", headers=AUTH), 403)
    metrics = http.get("/metrics", headers=ADMIN)
    assert metrics.status_code == 200 and "speedup_requests_total" in metrics.text


def test_healthz_is_degraded_when_the_backend_is_unreachable(start_proxy: ProxyFactory) -> None:
    proxy = start_proxy("http://127.0.0.1:9/v1")  # no keys: details for everyone
    health = httpx.get(proxy.url + "/healthz", timeout=10).json()
    assert health["status"] == "degraded" and health["backend_reachable"] is False
    assert health["memory"]["backend"] == "local"
