"""deploy/grafana/speedup-proxy.json queries only metrics the proxy really exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ProxyFactory, ServerThread, stub_url

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "speedup-proxy.json"

# PromQL words that look like names but are not metrics.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "offset",
    "bool",
    "and",
    "or",
    "unless",
    "inf",
    "nan",
}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
    "untyped": ("",),
    "unknown": ("",),
}


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels", []))


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = [target["expr"] for panel in panels(dashboard["panels"]) for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana label_values() query) selects."""
    text = re.sub(r"\$\{[^}]*\}|\$\w+", "x", expr)  # Grafana variables
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range selectors
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)  # label lists
    text = re.sub(r"^\s*label_values\s*\(\s*([a-zA-Z_:][\w:]*)\s*,\s*\w+\s*\)\s*$", r"\1", text)
    names = set()
    for match in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(?![\w:])(?!\s*\()", text):
        word = match.group(1)
        if word.lower() not in KEYWORDS:
            names.add(word)
    return names


def exported_names(metrics_text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def test_metric_name_extraction() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le) (rate(speedup_request_latency_seconds_bucket{tier="reuse"}'
        '[$__rate_interval]))) / on (tenant) group_left sum(speedup_episodes{tenant=~"$tenant"}) offset 5m'
    )
    assert metric_names(expr) == {"speedup_request_latency_seconds_bucket", "speedup_episodes"}
    assert metric_names("label_values(speedup_requests_total, tenant)") == {"speedup_requests_total"}
    assert metric_names("sum(rate(a_total[5m])) by (tier) * 100") == {"a_total"}


def test_dashboard_is_well_formed() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [panel["id"] for panel in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard["panels"]):
        assert panel["title"] and set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"])
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "tenant"} <= variables


def test_every_queried_metric_is_exported(start_proxy: ProxyFactory, stub_backend: ServerThread) -> None:
    proxy = start_proxy(stub_url(stub_backend))
    for _ in range(2):  # one cold, one reuse
        proxy.client().chat.completions.create(
            model="m", messages=[{"role": "user", "content": "What is the boiling point of water?"}], temperature=0
        )
        proxy.settle()
    exported = exported_names(httpx.get(proxy.url + "/metrics").text)

    dashboard = json.loads(DASHBOARD.read_text())
    exprs = queries(dashboard)
    assert len(exprs) >= 20
    queried: dict[str, list[str]] = {}
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        for name in names:
            queried.setdefault(name, []).append(expr)
    missing = {name: where[0] for name, where in queried.items() if name not in exported}
    assert not missing, f"the dashboard queries metrics the proxy does not export: {missing}"
    # The headline figures are all on the dashboard.
    for name in (
        "speedup_requests_total",
        "speedup_saved_tokens_total",
        "speedup_saved_seconds_total",
        "speedup_backend_completion_tokens_total",
        "speedup_request_latency_seconds_bucket",
        "speedup_proxy_added_latency_seconds_bucket",
        "speedup_episodes",
    ):
        assert name in queried, name
