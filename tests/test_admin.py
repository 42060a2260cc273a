"""Admin memory management over HTTP and the `speedup-proxy memory` commands: per tenant, admin only.

No backend is needed: memory is seeded directly with real MiniLM vectors.
"""

from __future__ import annotations

import json

import httpx
import pytest

from memory_store.embedding.embedder import MiniLMEncoder
from memory_store.episode import Episode
from memory_store.reflections import Reflection
from proxy.cli import main
from tests.conftest import ProxyFactory, RunningProxy

NO_BACKEND = "http://127.0.0.1:9/v1"  # never called by these tests
ADMIN = {"Authorization": "Bearer admin-secret"}


def seed(proxy: RunningProxy, encoder: MiniLMEncoder, tenant: str, question: str, answer: str) -> Episode:
    vector = encoder.encode([question])[0]
    episode = Episode(tenant=tenant, scope="s", question=question, context_fingerprint="c", answer=answer)
    return proxy.container.memory.add(episode, vector)


@pytest.fixture
def proxy(start_proxy: ProxyFactory, encoder: MiniLMEncoder) -> RunningProxy:
    running = start_proxy(NO_BACKEND, api_keys={"key-a": "acme", "key-b": "globex"}, admin_key="admin-secret")
    seed(running, encoder, "acme", "How do I reset my password?", "Use the reset link.")
    seed(running, encoder, "acme", "How many days of holiday do I get?", "25 days.")
    seed(running, encoder, "globex", "How do I reset my password? (globex)", "Ask IT.")
    vector = encoder.encode(["password reset"])[0]
    lesson = Reflection(tenant="acme", scope="s", kind="reflect_update", text="Point to the link.", vector=vector)
    running.container.learning.reflections.put(lesson)
    return running


def test_admin_endpoints_refuse_callers_without_the_admin_key(proxy: RunningProxy) -> None:
    assert httpx.get(proxy.url + "/admin/tenants").status_code == 401
    tenant_key = {"Authorization": "Bearer key-a"}
    assert httpx.get(proxy.url + "/admin/tenants", headers=tenant_key).status_code == 403
    assert httpx.get(proxy.url + "/admin/tenants/globex/episodes", headers=tenant_key).status_code == 403
    assert httpx.delete(proxy.url + "/admin/tenants/globex", headers=tenant_key).status_code == 403
    assert proxy.container.memory.count("globex") == 1


def test_admin_lists_searches_shows_deletes_and_exports_one_tenant_only(proxy: RunningProxy) -> None:
    def get(path: str, **params):
        answer = httpx.get(proxy.url + path, params=params, headers=ADMIN, timeout=30)
        assert answer.status_code == 200, answer.text
        return answer

    tenants = {row["tenant"]: row for row in get("/admin/tenants").json()["tenants"]}
    assert tenants["acme"]["episodes"] == 2 and tenants["acme"]["reflections"] == 1
    assert tenants["globex"]["episodes"] == 1

    listed = get("/admin/tenants/acme/episodes", limit=1).json()
    assert listed["total"] == 2 and len(listed["episodes"]) == 1
    found = get("/admin/tenants/acme/episodes", q="forgot my password").json()["episodes"]
    assert found[0]["question"] == "How do I reset my password?"
    assert all(e["tenant"] == "acme" for e in found)
    assert found[0]["similarity"] > found[-1]["similarity"]

    episode_id = found[0]["id"]
    assert get(f"/admin/tenants/acme/episodes/{episode_id}").json()["answer"] == "Use the reset link."
    assert httpx.get(proxy.url + f"/admin/tenants/globex/episodes/{episode_id}", headers=ADMIN).status_code == 404

    [lesson] = get("/admin/tenants/acme/reflections").json()["reflections"]
    assert lesson["text"] == "Point to the link." and "vector" not in lesson

    export = [json.loads(line) for line in get("/admin/tenants/acme/export").text.splitlines()]
    assert sorted(e["question"] for e in export) == [
        "How do I reset my password?",
        "How many days of holiday do I get?",
    ]

    assert httpx.delete(proxy.url + f"/admin/tenants/acme/episodes/{episode_id}", headers=ADMIN).status_code == 200
    assert httpx.get(proxy.url + f"/admin/tenants/acme/episodes/{episode_id}", headers=ADMIN).status_code == 404
    assert httpx.delete(proxy.url + f"/admin/tenants/acme/reflections/{lesson['id']}", headers=ADMIN).status_code == 200

    wiped = httpx.delete(proxy.url + "/admin/tenants/acme", headers=ADMIN).json()
    assert wiped["episodes"] == 1 and wiped["reflections"] == 0
    assert proxy.container.memory.count("acme") == 0 and proxy.container.memory.count("globex") == 1


def test_memory_commands_manage_a_running_proxy(
    proxy: RunningProxy, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    connect = ["--url", proxy.url, "--admin-key", "admin-secret", "--tenant", "acme"]
    assert main(["memory", "list", *connect]) == 0
    assert "2 episodes for tenant 'acme'" in capsys.readouterr().out

    assert main(["memory", "search", "password help", "--json", *connect]) == 0
    [first, *_] = json.loads(capsys.readouterr().out)["episodes"]
    assert first["question"] == "How do I reset my password?"

    assert main(["memory", "show", first["id"], *connect]) == 0
    assert json.loads(capsys.readouterr().out)["answer"] == "Use the reset link."

    assert main(["memory", "reflections", *connect]) == 0
    assert "Point to the link." in capsys.readouterr().out

    out = tmp_path / "acme.jsonl"
    assert main(["memory", "export", "--out", str(out), *connect]) == 0
    assert len(out.read_text().splitlines()) == 2

    assert main(["memory", "delete", first["id"], *connect]) == 0
    assert main(["memory", "show", first["id"], *connect]) == 1
    assert "404" in capsys.readouterr().err

    assert main(["memory", "delete-tenant", *connect]) == 2  # refuses without --yes
    assert main(["memory", "delete-tenant", "--yes", *connect]) == 0
    assert proxy.container.memory.count("acme") == 0 and proxy.container.memory.count("globex") == 1
    assert main(["memory", "list", "--url", proxy.url, "--admin-key", "wrong", "--tenant", "globex"]) == 1
