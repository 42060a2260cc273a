"""export-sft: good episodes and corrections as chat fine-tuning JSONL, never bad ones or other tenants'."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from memory_store.scope import memory_key
from proxy.cli import main
from proxy.learning.export_sft import SINGLE_TURN, ExportedEpisode, export_sft, in_holdout
from tests.conftest import ProxyFactory, RunningProxy

pytestmark = pytest.mark.timeout(600)

SYSTEM = "Answer with one short sentence."
ACME_QUESTION = "Dan has 7 kites and loses 3. How many kites does Dan have left?"
GLOBEX_QUESTION = "Eve has 2 boxes of 6 eggs. How many eggs does Eve have?"
GLOBEX_CORRECTION = "Eve has 12 eggs (globex-only correction)."


def ask(proxy: RunningProxy, question: str, api_key: str):
    return proxy.client(api_key=api_key).chat.completions.create(
        model="qwen",
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}],
        temperature=0,
        max_tokens=32,
    )


def rate(proxy: RunningProxy, response_id: str, api_key: str, rating: str, **extra: str) -> None:
    body = {"response_id": response_id, "rating": rating, **extra}
    answer = httpx.post(
        proxy.url + "/v1/feedback", json=body, headers={"Authorization": f"Bearer {api_key}"}, timeout=30
    )
    assert answer.status_code == 200, answer.text


def read_jsonl(*paths: Path) -> list[dict]:
    return [json.loads(line) for path in paths for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_sft_writes_valid_chat_jsonl_without_other_tenants_data(
    start_proxy: ProxyFactory, llama_url: str, tmp_path: Path
) -> None:
    proxy = start_proxy(llama_url, api_keys={"key-a": "acme", "key-b": "globex"}, admin_key="admin-secret")
    acme = ask(proxy, ACME_QUESTION, "key-a")
    globex = ask(proxy, GLOBEX_QUESTION, "key-b")
    proxy.settle()
    rate(proxy, acme.id, "key-a", "good")
    rate(proxy, globex.id, "key-b", "bad", correction=GLOBEX_CORRECTION)
    proxy.settle()

    def export(tenant: str, name: str) -> tuple[Path, Path]:
        train, held = tmp_path / f"{name}-train.jsonl", tmp_path / f"{name}-held.jsonl"
        argv = ["export-sft", "--tenant", tenant, "--url", proxy.url, "--admin-key", "admin-secret"]
        assert main([*argv, "--out", str(train), "--holdout", "0.5", "--holdout-out", str(held)]) == 0
        return train, held

    train, held = export("acme", "acme")
    [example] = read_jsonl(train, held)
    assert example == {
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": ACME_QUESTION},
            {"role": "assistant", "content": acme.choices[0].message.content},
        ]
    }
    text = train.read_text() + held.read_text()
    assert GLOBEX_QUESTION not in text and "globex" not in text

    again = export("acme", "acme-again")
    assert [p.read_bytes() for p in again] == [train.read_bytes(), held.read_bytes()]  # deterministic

    [corrected] = read_jsonl(*export("globex", "globex"))
    assert corrected["messages"][-1] == {"role": "assistant", "content": GLOBEX_CORRECTION}  # never the bad answer

    assert main(["export-sft", "--tenant", "acme", "--url", proxy.url, "--out", str(train)]) == 1  # no admin key


# -- without a backend -----------------------------------------------------------------------


def _line(question: str, answer: str, **fields) -> str:
    fields.setdefault("context_fingerprint", SINGLE_TURN)
    episode = ExportedEpisode(tenant="t", scope="s", question=question, answer=answer, system=None, **fields)
    return episode.model_dump_json()


def test_only_trustworthy_single_turn_answers_are_exported_once(tmp_path: Path) -> None:
    multi_turn = memory_key(
        "t",
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "q"},
            ]
        },
    )
    lines = [
        _line("Q1", "good answer", rating="good"),
        _line("  q1 ", "Good   answer", rating="good", created_at=2e9),  # the same after normalising
        _line("Q2", "bad answer", rating="bad"),
        _line("Q3", "failed check", verifier="fail"),
        _line("Q4", "passed check", verifier="pass"),
        _line("Q5", "nobody checked"),
        _line("Q6", "answer in a conversation", rating="good", context_fingerprint=multi_turn.context_fingerprint),
        _line("Q7", "first try", rating="good"),
        _line("Q7", "the correction", rating="gold"),
    ]
    out = tmp_path / "train.jsonl"
    report = export_sft(lines, out)
    answers = [example["messages"][-1]["content"] for example in read_jsonl(out)]
    assert sorted(answers) == ["Good   answer", "passed check", "the correction"]
    assert report.skipped == {
        "duplicate": 1,
        "rated_bad": 1,
        "failed_verifier": 1,
        "unverified": 1,
        "multi_turn": 1,
        "superseded_by_correction": 1,
    }
    assert len(read_jsonl(out)) == report.train == 3
    export_sft(lines, out, include_unverified=True)
    assert "nobody checked" in out.read_text()


def test_holdout_split_is_deterministic_and_keeps_a_question_on_one_side() -> None:
    questions = [f"question number {i}" for i in range(400)]
    held = [q for q in questions if in_holdout(q, 0.1)]
    assert 20 <= len(held) <= 60
    assert held == [q for q in questions if in_holdout(q, 0.1)]
    assert all(in_holdout(q.upper() + "  ", 0.1) for q in held)  # same question after normalising
    assert held != [q for q in questions if in_holdout(q, 0.1, seed=1)]
