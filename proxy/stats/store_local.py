"""Figures in a SQLite file beside the local memory: one row per tenant, minute and figure.

A second table keeps the same sums per hour, so that the 7-day window reads 168 hours
instead of 10,080 minutes.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from proxy.stats.store import RETENTION_MINUTES, Batch, Rows

_SCHEMA = """
CREATE TABLE IF NOT EXISTS figures (
    tenant TEXT NOT NULL,
    minute INTEGER NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (minute, tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hourly (
    tenant TEXT NOT NULL,
    minute INTEGER NOT NULL,  -- the hour's first minute
    name TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (minute, tenant, name)
) WITHOUT ROWID;
"""

_UPSERT = """
INSERT INTO {table} (tenant, minute, name, value) VALUES (?, ?, ?, ?)
ON CONFLICT (minute, tenant, name) DO UPDATE SET value = value + excluded.value
"""

PRUNE_EVERY_S = 600.0


class LocalStatsStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._pruned_at = 0.0

    def add(self, batch: Batch) -> None:
        rows = [
            (tenant, minute, name, value)
            for (tenant, minute), figures in batch.items()
            for name, value in figures.items()
        ]
        if not rows:
            return
        hourly: dict[tuple[str, int, str], float] = {}
        for tenant, minute, name, value in rows:
            key = (tenant, minute - minute % 60, name)
            hourly[key] = hourly.get(key, 0.0) + value
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(_UPSERT.format(table="figures"), rows)
                self._db.executemany(_UPSERT.format(table="hourly"), [(*key, value) for key, value in hourly.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._prune()

    def _prune(self) -> None:
        now = time.time()
        if now - self._pruned_at < PRUNE_EVERY_S:
            return
        self._pruned_at = now
        for table in ("figures", "hourly"):
            self._db.execute(f"DELETE FROM {table} WHERE minute < ?", (int(now // 60) - RETENTION_MINUTES,))

    def read(self, tenants: list[str] | None, start_minute: int, end_minute: int, step_minutes: int) -> Rows:
        table = "hourly" if step_minutes % 60 == 0 and start_minute % 60 == 0 else "figures"
        sql = f"SELECT ? + ((minute - ?) / ?) * ?, name, SUM(value) FROM {table} WHERE minute >= ? AND minute < ?"
        args: list[object] = [start_minute, start_minute, step_minutes, step_minutes, start_minute, end_minute]
        if tenants is not None:
            if not tenants:
                return {}
            sql += f" AND tenant IN ({','.join('?' * len(tenants))})"
            args += tenants
        sql += " GROUP BY 1, 2"
        with self._lock:
            found = self._db.execute(sql, args).fetchall()
        rows: Rows = {}
        for step, name, value in found:
            rows.setdefault(int(step), {})[name] = float(value)
        return rows

    def tenants(self) -> list[str]:
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT DISTINCT tenant FROM figures ORDER BY tenant")]

    def close(self) -> None:
        with self._lock:
            self._db.close()
