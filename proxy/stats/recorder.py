"""StatsRecorder: a request observer that buffers figures in memory and flushes them off the request path."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from proxy.serving.accounting import Accounting
from proxy.stats.figures import (
    TIERS,
    Increments,
    add_into,
    audit_increments,
    rating_increments,
    reflection_increments,
    request_increments,
    verification_increments,
)
from proxy.stats.pricing import Pricing
from proxy.stats.store import Batch, StatsStore

log = logging.getLogger(__name__)

MAX_PENDING_KEYS = 100_000  # if the store stays down, keep at most this many (tenant, minute) buckets


class StatsRecorder:
    """Adds every finished request to per-tenant, per-minute figures.

    `request_finished`, `record_rating` and `record_reflection_tokens` only add to an in-memory
    buffer under a lock (microseconds) and never raise; a daemon thread writes the buffer to the
    store every `flush_interval_s`, and `close()` writes what is left.
    """

    def __init__(
        self,
        store: StatsStore,
        pricing: Pricing | None = None,
        flush_interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.pricing = pricing or Pricing()
        self.flush_interval_s = flush_interval_s
        self._clock = clock
        self._pending: Batch = {}
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._closed = False
        self.flush_failures = 0
        self._thread = threading.Thread(target=self._run, name="stats-flush", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- the request path: buffer only ---------------------------------------------------------

    def request_finished(self, account: Accounting) -> None:
        try:
            self._add(account.tenant, request_increments(account, self.pricing))
        except Exception as error:  # noqa: BLE001 - stats must never fail a request
            log.warning("stats: request not recorded: %s", error)

    def record_rating(self, tenant: str, tier: str, rating: str) -> None:
        """One rating of a response served at `tier` ("reuse", "guided", "cold"); rating "bad" counts as bad.

        Call it once per rating event; the bad-rating rate of reused answers is
        bad ratings of reuse responses / rated reuse responses.
        """
        try:
            if tier not in TIERS:
                log.warning("stats: rating for unknown tier %r ignored", tier)
                return
            self._add(tenant, rating_increments(tier, rating))
        except Exception as error:  # noqa: BLE001
            log.warning("stats: rating not recorded: %s", error)

    def record_reflection_tokens(self, tenant: str, tokens: int, model: str = "") -> None:
        """Tokens the backend spent on a reflection (prompt + completion); counted against net savings.

        The split is unknown here, so money is priced at the completion rate (the dearer one).
        """
        try:
            self._add(tenant, reflection_increments(0, int(tokens), model, self.pricing))
        except Exception as error:  # noqa: BLE001
            log.warning("stats: reflection tokens not recorded: %s", error)

    def record_audit(self, tenant: str, agreed: bool) -> None:
        """One reuse checked against a fresh answer (proxy/serving/audit.py)."""
        try:
            self._add(tenant, audit_increments(agreed))
        except Exception as error:  # noqa: BLE001
            log.warning("stats: audit not recorded: %s", error)

    def record_verification(self, tenant: str, outcome: str, tokens: int) -> None:
        """One unsure-band pair put to the reuse verifier (proxy/serving/equivalence.py)."""
        try:
            self._add(tenant, verification_increments(outcome, tokens))
        except Exception as error:  # noqa: BLE001
            log.warning("stats: verification not recorded: %s", error)

    def reflection_spent(self, cost: Any) -> None:
        """Listener for proxy.learning.reflection_writer.ReflectionCost (tenant, prompt_tokens, completion_tokens)."""
        try:
            figures = reflection_increments(
                int(cost.prompt_tokens), int(cost.completion_tokens), getattr(cost, "model", "") or "", self.pricing
            )
            self._add(cost.tenant, figures)
        except Exception as error:  # noqa: BLE001
            log.warning("stats: reflection cost not recorded: %s", error)

    def _add(self, tenant: str, figures: Increments) -> None:
        minute = int(self._clock() // 60)
        with self._lock:
            bucket = self._pending.get((tenant, minute))
            if bucket is None:
                if len(self._pending) >= MAX_PENDING_KEYS:
                    return
                bucket = self._pending[(tenant, minute)] = {}
            add_into(bucket, figures)

    # -- off the request path ------------------------------------------------------------------

    def flush(self) -> bool:
        """Write buffered figures to the store; on failure they go back into the buffer. Never raises."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
            if not batch:
                return True
            try:
                self.store.add(batch)
                return True
            except Exception as error:  # noqa: BLE001 - a store outage must not lose the figures
                self.flush_failures += 1
                log.warning("stats: flush failed, will retry: %s", error)
                with self._lock:
                    for key, figures in batch.items():
                        if key in self._pending or len(self._pending) < MAX_PENDING_KEYS:
                            add_into(self._pending.setdefault(key, {}), figures)
                return False

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval_s):
            self.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self.flush()
        try:
            self.store.close()
        except Exception as error:  # noqa: BLE001
            log.warning("stats: closing the store failed: %s", error)
        atexit.unregister(self.close)
