"""Parametric memory: good episodes as an OpenAI chat fine-tuning file (JSONL of {"messages": [...]}).

Input is the admin export (`GET /admin/tenants/{t}/export`: one episode a line, with the model
and system messages of its scope). Kept: gold episodes (corrections), episodes rated good, and
unrated episodes that passed the verifier (`include_unverified` also keeps unrated, unchecked
ones). Never: episodes rated bad or failing the verifier, multi-turn episodes (their history is
not stored), and other answers to a question that has a correction. De-duplicated by normalised
question and answer; the holdout split hashes the normalised question, so it is deterministic and
a question never lands in both files.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from memory_store.episode import Episode
from memory_store.scope import memory_key, message_text

_RANK = {"gold": 3, "good": 2}
SINGLE_TURN = memory_key("-", {"messages": [{"role": "user", "content": "-"}]}).context_fingerprint  # type: ignore[union-attr]


class ExportedEpisode(Episode):
    """One line of the admin export: the episode plus its scope's model and system messages."""

    model: str | None = None
    system: list[dict[str, Any]] | None = None


class SftExample(BaseModel):
    messages: list[dict[str, str]]


class ExportReport(BaseModel):
    read: int = 0
    train: int = 0
    holdout: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def skip_reason(episode: Episode, include_unverified: bool = False) -> str | None:
    """Why an episode must not be trained on, or None."""
    if episode.rating == "bad":
        return "rated_bad"
    if episode.rating not in _RANK and episode.verifier == "fail":
        return "failed_verifier"
    if episode.rating not in _RANK and episode.verifier != "pass" and not include_unverified:
        return "unverified"
    if episode.context_fingerprint != SINGLE_TURN:
        return "multi_turn"
    if episode.question_capped:
        return "question_cut"  # only its beginning is kept: not the question that was answered
    if not episode.question.strip() or not episode.answer.strip():
        return "empty"
    return None


def _rank(episode: Episode) -> tuple[int, float]:
    return (_RANK.get(episode.rating or "", 1 if episode.verifier == "pass" else 0), episode.created_at)


def select(
    episodes: Iterable[ExportedEpisode], include_unverified: bool = False
) -> tuple[list[ExportedEpisode], Counter[str]]:
    """The episodes worth training on, one per normalised question+answer, in a stable order."""
    skipped: Counter[str] = Counter()
    best: dict[tuple[str, str, str], ExportedEpisode] = {}
    corrected: set[tuple[str, str]] = set()
    for episode in episodes:
        reason = skip_reason(episode, include_unverified)
        if reason is not None:
            skipped[reason] += 1
            continue
        question = (episode.scope, normalise(episode.question))
        if episode.rating == "gold":
            corrected.add(question)
        key = (*question, normalise(episode.answer))
        kept = best.get(key)
        if kept is not None:
            skipped["duplicate"] += 1
            if _rank(episode) <= _rank(kept):
                continue
        best[key] = episode
    chosen = []
    for (scope, question, _), episode in best.items():
        if (scope, question) in corrected and episode.rating != "gold":
            skipped["superseded_by_correction"] += 1
            continue
        chosen.append(episode)
    chosen.sort(key=lambda e: (e.created_at, e.id))
    return chosen, skipped


def to_example(episode: ExportedEpisode) -> SftExample:
    messages: list[dict[str, str]] = []
    for message in episode.system or []:
        text = message_text(message).strip()
        if text:
            messages.append({"role": "system", "content": text})
    messages.append({"role": "user", "content": episode.question})
    messages.append({"role": "assistant", "content": episode.answer})
    return SftExample(messages=messages)


def in_holdout(question: str, fraction: float, seed: int = 0) -> bool:
    if fraction <= 0:
        return False
    digest = hashlib.sha256(f"{seed}\x1f{normalise(question)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def parse_export(lines: Iterable[str]) -> list[ExportedEpisode]:
    return [ExportedEpisode.model_validate_json(line) for line in lines if line.strip()]


def export_sft(
    lines: Iterable[str],
    out: Path,
    holdout: float = 0.0,
    holdout_out: Path | None = None,
    seed: int = 0,
    include_unverified: bool = False,
) -> ExportReport:
    """Write the training file (and the holdout file when `holdout` > 0); returns the counts."""
    if holdout > 0 and holdout_out is None:
        raise ValueError("a holdout fraction needs a holdout output file")
    episodes = parse_export(lines)
    chosen, skipped = select(episodes, include_unverified)
    report = ExportReport(read=len(episodes), skipped=dict(skipped))
    train, held = [], []
    for episode in chosen:
        (held if in_holdout(episode.question, holdout, seed) else train).append(to_example(episode))
    _write(out, train)
    report.train = len(train)
    if holdout_out is not None:
        _write(holdout_out, held)
        report.holdout = len(held)
    return report


def _write(path: Path, examples: list[SftExample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example.model_dump(), ensure_ascii=False) + "\n")
