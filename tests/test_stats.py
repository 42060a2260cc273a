"""Stats: the figures a request adds, the stores (SQLite, Redis), the API, and agreement with Prometheus."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from budget.policy import Decision
from memory_store.episode import Episode
from proxy.serving.accounting import Accounting
from proxy.stats.figures import request_increments
from proxy.stats.pricing import Pricing
from proxy.stats.recorder import StatsRecorder
from proxy.stats.report import build_report
from proxy.stats.store import Batch, Rows
from proxy.stats.store_local import LocalStatsStore
from proxy.stats.store_redis import RedisStatsStore
from proxy.stats.summary import WINDOWS
from tests.conftest import ProxyFactory, ServerThread, free_port, stub_url

PRICING = Pricing(prices={"m": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0}})


def account(
    tier: str,
    prompt: int = 0,
    completion: int = 0,
    *,
    cold_tokens: int = 0,
    cold_seconds: float = 0.0,
    backend_seconds: float = 0.0,
    total_seconds: float = 0.01,
    escalated: bool = False,
    last_usage: dict[str, int] | None = None,
    tenant: str = "t",
    model: str = "m",
) -> Accounting:
    source = None
    if tier == "reuse":
        source = Episode(tenant=tenant, scope="s", question="q", context_fingerprint="c", answer="a")
    decision = Decision(
        tier=tier,  # type: ignore[arg-type]
        reuse_source=source,
        estimated_cold_tokens=cold_tokens,
        estimated_cold_seconds=cold_seconds,
    )
    return Accounting(
        tenant=tenant,
        decision=decision,
        started=0.0,
        usage={"prompt_tokens": prompt, "completion_tokens": completion},
        last_usage=last_usage or {},
        backend_seconds=backend_seconds,
        total_seconds=total_seconds,
        escalated=escalated,
        model=model,
    )


# -- what one request adds -----------------------------------------------------------------------


def test_a_cold_request_never_reports_a_saving() -> None:
    cold = account("cold", 30, 200, cold_tokens=500, cold_seconds=9.0, backend_seconds=2.0, total_seconds=2.1)
    assert cold.saved_tokens == 0 and cold.saved_seconds == 0.0
    figures = request_increments(cold, PRICING)
    assert "saved_tokens" not in figures and "saved_seconds" not in figures
    assert figures["req:cold"] == 1 and figures["completion_tokens"] == 200
    assert figures["money_spent"] == pytest.approx(0.03 + 0.4)
    assert "money_saved" not in figures


def test_guided_escalation_counts_against_the_saving() -> None:
    # First call cut off at 64 tokens, the retry made 120: 184 completion tokens against a cold 150.
    guided = account(
        "guided",
        prompt=600,
        completion=184,
        cold_tokens=150,
        cold_seconds=3.0,
        backend_seconds=4.0,
        total_seconds=4.05,
        escalated=True,
        last_usage={"prompt_tokens": 300, "completion_tokens": 120},
    )
    figures = request_increments(guided, PRICING)
    assert guided.saved_tokens == 0  # Accounting clamps at zero ...
    assert figures["overspent_tokens"] == 34  # ... the stats keep the overspend
    assert figures["esc_prompt_tokens"] == 300 and figures["esc_completion_tokens"] == 64
    assert figures["overspent_seconds"] == pytest.approx(1.0)
    assert figures["escalations"] == 1
    # money saved = -(34 completion at 2/1k) - (300 prompt at 1/1k)
    assert figures["money_saved"] == pytest.approx(-0.068 - 0.3)


def test_money_appears_only_where_prices_are_set(tmp_path: Path) -> None:
    reuse = account("reuse", cold_tokens=100, cold_seconds=2.0)
    assert "money_saved" not in request_increments(reuse, Pricing())
    assert "money_saved" not in request_increments(reuse, PRICING.model_copy(update={"prices": {"other": {}}}))
    wildcard = Pricing(prices={"*": {"completion_per_1k": 1.0}})
    assert request_increments(reuse, wildcard)["money_saved"] == pytest.approx(0.1)

    recorder = StatsRecorder(LocalStatsStore(tmp_path / "stats.sqlite3"), Pricing(), flush_interval_s=60)
    recorder.request_finished(reuse)
    report = build_report(recorder, None, Pricing(), WINDOWS["1h"], None)
    assert report["totals"]["money"] is None and "money_saved" not in report["series"]
    assert report["pricing"] == {"configured": False, "currency": None}
    recorder.close()


# -- the recorder and the local store ---------------------------------------------------------------


def traffic(recorder: StatsRecorder, tenant: str = "t") -> None:
    for _ in range(3):
        recorder.request_finished(account("cold", 20, 100, backend_seconds=1.0, total_seconds=1.01, tenant=tenant))
    for _ in range(6):
        recorder.request_finished(
            account("reuse", cold_tokens=100, cold_seconds=1.0, total_seconds=0.008, tenant=tenant)
        )
    recorder.request_finished(
        account(
            "guided", 50, 40, cold_tokens=100, cold_seconds=1.0, backend_seconds=0.4, total_seconds=0.42, tenant=tenant
        )
    )
    recorder.record_rating(tenant, "reuse", "bad")
    recorder.record_rating(tenant, "reuse", "good")
    recorder.record_rating(tenant, "reuse", "good")
    recorder.record_rating(tenant, "reuse", "good")
    recorder.record_rating(tenant, "cold", "bad")
    recorder.record_reflection_tokens(tenant, 25, model="m")


def check_totals(totals: dict, replicas: int = 1) -> None:
    r = replicas
    assert totals["requests"] == {"reuse": 6 * r, "guided": 1 * r, "cold": 3 * r, "total": 10 * r}
    assert totals["backend_tokens"] == {"prompt": 110 * r, "completion": 340 * r, "total": 450 * r}
    assert totals["saved_tokens"] == 660 * r  # 6 reuse x 100 + guided 100 - 40
    assert totals["reflection_tokens"] == 25 * r
    assert totals["net_saved_tokens"] == 635 * r
    assert totals["saved_seconds"] == pytest.approx(6.6 * r, abs=0.01)
    assert totals["reuse_rate"] == pytest.approx(0.6)
    assert totals["ratings"] == {"rated_reuse": 4 * r, "bad_reuse": 1 * r}
    assert totals["bad_rating_rate"] == pytest.approx(0.25)
    money = totals["money"]
    assert money["spent"] == pytest.approx(r * (0.110 + 0.680 + 0.050))  # + 25 reflection tokens at 2/1k
    assert money["net_saved"] == pytest.approx(r * (1.320 - 0.050))
    latency = totals["latency_seconds"]
    assert latency["total"]["p50"] == pytest.approx(0.008, rel=0.1)
    assert latency["total"]["p99"] == pytest.approx(1.01, rel=0.1)
    assert latency["proxy_added"]["p90"] == pytest.approx(0.01, rel=0.1)


def test_recorder_figures_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "stats.sqlite3"
    recorder = StatsRecorder(LocalStatsStore(path), PRICING, flush_interval_s=0.05)
    traffic(recorder)
    deadline = time.time() + 5
    while recorder._pending and time.time() < deadline:  # the background thread flushes by itself
        time.sleep(0.02)
    assert not recorder._pending
    recorder.close()

    reopened = StatsRecorder(LocalStatsStore(path), PRICING, flush_interval_s=60)
    report = build_report(reopened, None, PRICING, WINDOWS["24h"], None)
    check_totals(report["totals"])
    assert sum(report["series"]["reuse"]) == 6 and len(report["series"]["t"]) == 96
    assert build_report(reopened, None, PRICING, WINDOWS["1h"], ["nobody"])["totals"]["requests"]["total"] == 0
    assert reopened.store.tenants() == ["t"]
    reopened.close()


class FlakyStore:
    """A store that hangs or is down on cue."""

    def __init__(self) -> None:
        self.down = True
        self.release = threading.Event()  # add() hangs until this is set
        self.release.set()
        self.hanging = threading.Event()  # set while an add() is hanging
        self.batches: list[Batch] = []

    def add(self, batch: Batch) -> None:
        self.hanging.set()
        self.release.wait(timeout=10)
        self.hanging.clear()
        if self.down:
            raise ConnectionError("store down")
        self.batches.append(batch)

    def read(self, tenants: list[str] | None, start_minute: int, end_minute: int, step_minutes: int) -> Rows:
        return {}

    def tenants(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def test_recorder_never_blocks_nor_raises_and_keeps_figures_while_the_store_is_down() -> None:
    store = FlakyStore()
    store.release.clear()
    recorder = StatsRecorder(store, PRICING, flush_interval_s=0.01)
    recorder.request_finished(account("reuse", cold_tokens=10, cold_seconds=0.1))
    assert store.hanging.wait(timeout=5)  # a flush is now stuck in the store
    for _ in range(199):
        recorder.request_finished(account("reuse", cold_tokens=10, cold_seconds=0.1))
    recorder.record_rating("t", "nonsense-tier", "bad")
    recorder.request_finished(None)  # type: ignore[arg-type]  # a broken account is logged, not raised
    # Completion, not a stopwatch: had a request waited for the flush, the store would have been released
    # (after its 10 s timeout) before the requests finished.
    assert store.hanging.is_set()
    store.release.set()
    deadline = time.monotonic() + 5
    while recorder.flush_failures < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert recorder.flush_failures >= 1
    store.down = False
    assert recorder.flush()
    recorder.close()
    total = sum(b.get("req:reuse", 0) for batch in store.batches for b in batch.values())
    assert total == 200


# -- Redis: replicas add to the same figures --------------------------------------------------------


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.time() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.time() > deadline:
                process.kill()
                raise
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=10)


def test_redis_replicas_add_up_and_restarts_keep_figures(redis_url: str) -> None:
    replicas = [StatsRecorder(RedisStatsStore.from_url(redis_url), PRICING, flush_interval_s=60) for _ in range(2)]
    threads = [threading.Thread(target=traffic, args=(r,)) for r in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for recorder in replicas:
        recorder.close()

    fresh = StatsRecorder(RedisStatsStore.from_url(redis_url), PRICING, flush_interval_s=60)
    for window in ("1h", "24h", "7d"):  # minute hashes for 1h/24h, hour hashes for 7d
        report = build_report(fresh, None, PRICING, WINDOWS[window], None)
        check_totals(report["totals"], replicas=2)
    assert build_report(fresh, None, PRICING, WINDOWS["1h"], ["t"])["totals"]["requests"]["total"] == 20
    assert build_report(fresh, None, PRICING, WINDOWS["1h"], ["x"])["totals"]["requests"]["total"] == 0
    assert fresh.store.tenants() == ["t"]
    ttl = redis.Redis.from_url(redis_url).ttl(f"speedup:{{t}}:stats:h:{int(time.time() // 3600)}")
    assert 7 * 24 * 3600 < ttl <= 8 * 24 * 3600
    fresh.close()


# -- through a running proxy -----------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(url + "/metrics").text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def prom_sum(samples: dict, name: str, **labels: str) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and all(dict(sample_labels).get(k) == v for k, v in labels.items())
    )


def test_stats_api_and_prometheus_agree(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    client = proxy.client()
    questions = [
        "What is the capital of France?",
        "How many legs does a spider have?",
        "Who wrote the play Hamlet?",
        "Translate 'good morning' into German.",
    ]
    for question in questions:  # cold, remembered
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}], temperature=0)
    proxy.settle()
    for _ in range(2):
        for question in questions:  # reuse
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": question}], temperature=0)
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Describe a sunset in one line."}],
        stream=True,
        temperature=0.7,
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    proxy.settle()

    stats = httpx.get(proxy.url + "/v1/speedup/stats").json()
    samples = scrape(proxy.url)
    totals = stats["totals"]
    for tier in ("reuse", "guided", "cold"):
        prom = prom_sum(samples, "speedup_requests_total", tier=tier)
        assert totals["requests"][tier] == pytest.approx(prom, rel=0.01), tier
    assert totals["requests"]["reuse"] == 8 and totals["requests"]["cold"] == 5
    pairs = {
        "speedup_backend_prompt_tokens_total": totals["backend_tokens"]["prompt"],
        "speedup_backend_completion_tokens_total": totals["backend_tokens"]["completion"],
        "speedup_saved_tokens_total": totals["saved_tokens"],
        "speedup_saved_seconds_total": totals["saved_seconds"],
    }
    for name, ours in pairs.items():
        prom = prom_sum(samples, name)
        assert ours == pytest.approx(prom, rel=0.01, abs=0.002), name
    assert totals["backend_tokens"]["completion"] > 0 and totals["saved_tokens"] > 0
    assert prom_sum(samples, "speedup_request_latency_seconds_count") == totals["requests"]["total"]
    assert stats["memory"]["total"] == 5
    assert {e["hits"] for e in stats["top_episodes"]} == {2}
    assert len(stats["top_episodes"]) == 4
    assert totals["money"] is None


def test_stats_access_by_key(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    keys = {"key-alice": "alice", "key-bob": "bob"}
    proxy = start_proxy(stub_url(stub_backend), api_keys=keys, admin_key="key-admin")
    for key in keys:
        proxy.client(api_key=key).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hello"}], temperature=0
        )

    def get(path: str, key: str | None = None) -> httpx.Response:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return httpx.get(proxy.url + path, headers=headers)

    assert get("/v1/speedup/stats").status_code == 401
    assert get("/v1/speedup/stats", "wrong").status_code == 401
    alice = get("/v1/speedup/stats", "key-alice").json()
    assert alice["tenant"] == "alice" and alice["totals"]["requests"]["total"] == 1 and "tenants" not in alice
    assert get("/v1/speedup/stats?tenant=bob", "key-alice").status_code == 403
    everyone = get("/v1/speedup/stats?window=7d", "key-admin").json()
    assert everyone["totals"]["requests"]["total"] == 2 and everyone["tenants"] == ["alice", "bob"]
    assert get("/v1/speedup/stats?tenant=bob", "key-admin").json()["totals"]["requests"]["total"] == 1
    assert get("/v1/speedup/stats?window=2y", "key-admin").status_code == 400

    assert get("/dashboard").status_code == 401
    assert get("/dashboard", "key-alice").status_code == 403
    assert get("/dashboard?key=key-alice").status_code == 403
    page = get("/dashboard?key=key-admin")
    assert page.status_code == 200 and "uPlot.iife.min.js" in page.text
    assert get("/dashboard", "key-admin").status_code == 200
    assert get("/dashboard/static/uPlot.iife.min.js").text.startswith("/*! https://github.com/leeoniya/uPlot")
    assert get("/dashboard/static/..%2Fapp.py").status_code == 404


def test_reflection_costs_count_against_net_savings(tmp_path: Path) -> None:
    from proxy.learning.reflection_writer import ReflectionCost

    pricing = Pricing(prices={"*": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0}})
    recorder = StatsRecorder(LocalStatsStore(tmp_path / "stats.sqlite3"), pricing, flush_interval_s=60)
    recorder.request_finished(account("reuse", cold_tokens=500, cold_seconds=5.0))
    recorder.reflection_spent(ReflectionCost("t", "reflect", 100, 20, 1.5))
    recorder.record_reflection_tokens("t", 30)
    totals = build_report(recorder, None, pricing, WINDOWS["1h"], ["t"])["totals"]
    assert totals["saved_tokens"] == 500 and totals["reflection_tokens"] == 150
    assert totals["net_saved_tokens"] == 350
    assert totals["money"]["reflection"] == pytest.approx(0.1 + 0.04 + 0.06)
    assert totals["money"]["net_saved"] == pytest.approx(1.0 - 0.2)
    recorder.close()


def test_two_proxy_replicas_on_one_redis_report_the_same_figures(
    redis_url: str, start_proxy: ProxyFactory, stub_backend: ServerThread, tmp_path: Path
) -> None:
    replicas = [
        start_proxy(stub_url(stub_backend), data_dir=tmp_path / name, memory=redis_url, redis={"replica_id": name})
        for name in ("a", "b")
    ]
    for i, proxy in enumerate(replicas):
        for j in range(3):
            proxy.client().chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"Replica question {i}-{j}: name a river."}]
            )
    a, b = (httpx.get(p.url + "/v1/speedup/stats").json()["totals"] for p in replicas)
    # Each replica writes its own buffer before answering; the other's arrives within its flush interval.
    deadline = time.time() + 5
    while a["requests"]["total"] != 6 and time.time() < deadline:
        time.sleep(0.2)
        a = httpx.get(replicas[0].url + "/v1/speedup/stats").json()["totals"]
    b = httpx.get(replicas[1].url + "/v1/speedup/stats").json()["totals"]
    assert a["requests"]["total"] == b["requests"]["total"] == 6
    assert a["backend_tokens"] == b["backend_tokens"] == {"prompt": 60, "completion": 24, "total": 84}
    for proxy in replicas:
        proxy.container.stats.close()
    restarted = start_proxy(
        stub_url(stub_backend), data_dir=tmp_path / "c", memory=redis_url, redis={"replica_id": "c"}
    )
    assert httpx.get(restarted.url + "/v1/speedup/stats").json()["totals"]["requests"]["total"] == 6
