"""One way to open the proxy's SQLite files: WAL, autocommit, shared across threads."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_sqlite(path: Path, schema: str) -> sqlite3.Connection:
    """The database at path (created with its folder if missing), with schema applied.

    WAL lets the request path read while a background thread writes; writes are
    serialised by each store's own lock, hence check_same_thread=False.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(schema)
    return db
