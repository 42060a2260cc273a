"""The spool: writes that could not reach Redis, kept on local disk until it is back.

Append-only JSONL, one record per write ({"op": "add", "episode", "vector"}, "update",
"delete", "drop"; "hits": hit counts still buffered when the memory closed). A flush renames
the file aside, replays it in order and deletes it only when every record went through; a
failed or interrupted flush is replayed later. Replays are harmless because every Redis write
is idempotent (adds by content_key), so each spooled episode ends up in Redis exactly once
even across crashes. Hit counts are the exception: approximate, a crash mid-replay may count
them twice.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from memory_store.episode import Episode

log = logging.getLogger(__name__)

Record = dict[str, Any]


def add_record(episode: Episode, vector: np.ndarray) -> Record:
    raw = np.asarray(vector, dtype=np.float32).tobytes()
    return {"op": "add", "episode": episode.model_dump(mode="json"), "vector": base64.b64encode(raw).decode()}


def hits_record(tenant: str, episode_id: str, delta: int) -> Record:
    return {"op": "hits", "tenant": tenant, "id": episode_id, "delta": delta}


def record_vector(record: Record) -> np.ndarray:
    return np.frombuffer(base64.b64decode(record["vector"]), dtype=np.float32)


class Spool:
    def __init__(self, directory: Path, fsync: bool = True) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.active = directory / "spool.jsonl"
        self.flushing = directory / "spool.flushing.jsonl"
        self.fsync = fsync
        _end_torn_line(self.active)
        _end_torn_line(self.flushing)
        self._lock = threading.Lock()  # guards the active file
        self._flush_lock = threading.Lock()  # one flush or purge at a time
        self._depth = sum(1 for _ in self._records(self.active)) + sum(1 for _ in self._records(self.flushing))
        self.flushed = 0

    @property
    def depth(self) -> int:
        """Records waiting for Redis."""
        return self._depth

    def append(self, record: Record) -> None:
        line = json.dumps(record, separators=(",", ":")) + "\n"
        with self._lock, open(self.active, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            if self.fsync:
                os.fsync(handle.fileno())
            self._depth += 1

    def records(self) -> list[Record]:
        """Everything pending, oldest first (the file being flushed, then the active one)."""
        with self._lock:
            return list(self._records(self.flushing)) + list(self._records(self.active))

    def flush(self, apply: Callable[[Record], None]) -> int:
        """Replay pending records through `apply`, in order; an exception leaves them for the next try."""
        with self._flush_lock:
            total = 0
            while True:
                with self._lock:
                    if not self.flushing.exists():
                        if not self.active.exists():
                            return total
                        os.replace(self.active, self.flushing)
                batch = list(self._records(self.flushing))
                for record in batch:
                    apply(record)
                with self._lock:
                    self.flushing.unlink(missing_ok=True)
                    self._depth = max(0, self._depth - len(batch))
                    self.flushed += len(batch)
                total += len(batch)

    def purge_tenant(self, tenant: str, before: float) -> int:
        """Drop a deleted tenant's pending writes made up to `before` (its deletion time)."""

        def doomed(record: Record) -> bool:
            if record.get("op") in ("add", "update"):
                episode = record["episode"]
                return episode["tenant"] == tenant and float(episode["created_at"]) <= before
            return record.get("tenant") == tenant

        removed = 0
        with self._flush_lock, self._lock:
            for path in (self.flushing, self.active):
                if not path.exists():
                    continue
                kept = [r for r in self._records(path) if not doomed(r)]
                removed_here = sum(1 for _ in self._records(path)) - len(kept)
                if not removed_here:
                    continue
                removed += removed_here
                tmp = path.with_name(path.name + ".tmp")
                with open(tmp, "w", encoding="utf-8") as handle:
                    handle.writelines(json.dumps(r, separators=(",", ":")) + "\n" for r in kept)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            self._depth = max(0, self._depth - removed)
        return removed

    @staticmethod
    def _records(path: Path) -> Iterator[Record]:
        try:
            handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            return
        with handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    # A line cut short by a crash mid-append: the write it held was never acknowledged.
                    log.warning("skipping a torn spool line %s:%d", path, number)


def _end_torn_line(path: Path) -> None:
    """Terminate a line cut short by a crash, so that the next append starts a line of its own."""
    try:
        with open(path, "rb+") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                return
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")
    except FileNotFoundError:
        return
