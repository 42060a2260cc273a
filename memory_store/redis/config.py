"""Settings of the Redis-backed memory (`--memory redis://host:port/db`)."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

from pydantic import BaseModel, Field


class RedisOptions(BaseModel):
    replica_id: str | None = Field(
        None, description="this replica's name for its feed position (default: hostname + data dir digest)"
    )
    key_prefix: str = Field("speedup", min_length=1, description="prefix of every Redis key")
    socket_timeout_s: float = Field(0.25, gt=0, description="timeout of every Redis call made for a request")
    feed_block_ms: int = Field(100, ge=10, le=5000, description="how long one change-feed read waits")
    feed_maxlen: int = Field(500_000, ge=1000, description="change-feed entries kept (approximate)")
    retry_interval_s: float = Field(0.5, gt=0, description="pause between reconnection attempts")
    spool_fsync: bool = Field(True, description="fsync each spooled write (survives power loss, not just kill -9)")

    model_config = {"extra": "forbid"}

    def replica_name(self, data_dir: Path) -> str:
        if self.replica_id:
            return self.replica_id
        digest = hashlib.sha1(str(data_dir.expanduser().resolve()).encode()).hexdigest()[:8]
        return f"{socket.gethostname()}-{digest}"
