"""Reuse-audit counts in Redis, shared by every replica (budget/reuse/audit.py decides on them).

    {prefix}:{<tenant>}:audit      hash: "<scope>|a" / "<scope>|d" -> agreements / disagreements,
                                   and "|a" / "|d" for the whole tenant
    {prefix}:audit:tenants         set: tenants with audits

The tenant's hash shares its keys' hash tag, so deleting a tenant deletes its audits too.
"""

from __future__ import annotations

import redis

from budget.reuse.audit import AuditCounts, ScopeCounts
from memory_store.redis.keys import RedisKeys

_OUTCOME = {True: "a", False: "d"}


class RedisAuditLedger:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.client = client
        self.keys = RedisKeys(prefix)
        self._tenants_key = f"{prefix}:audit:tenants"

    @classmethod
    def from_url(cls, url: str, prefix: str) -> RedisAuditLedger:
        client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, prefix)

    def _key(self, tenant: str) -> str:
        return f"{self.keys.tenant_base(tenant)}:audit"

    def add(self, tenant: str, scope: str, agreed: bool) -> AuditCounts:
        key = self._key(tenant)
        pipe = self.client.pipeline(transaction=False)  # in order on one connection: the read sees the add
        pipe.hincrby(key, f"{scope}|{_OUTCOME[agreed]}", 1)
        pipe.hincrby(key, f"|{_OUTCOME[agreed]}", 1)
        pipe.hmget(key, [f"{scope}|a", f"{scope}|d"])
        pipe.sadd(self._tenants_key, tenant)
        agreements, disagreements = pipe.execute()[2]
        return AuditCounts(int(agreements or 0), int(disagreements or 0))

    def _hashes(self) -> dict[str, dict[str, str]]:
        tenants = sorted(self.client.smembers(self._tenants_key))  # type: ignore[arg-type]
        pipe = self.client.pipeline(transaction=False)
        for tenant in tenants:
            pipe.hgetall(self._key(tenant))
        return dict(zip(tenants, pipe.execute(), strict=True))

    def scopes(self) -> ScopeCounts:
        out: ScopeCounts = {}
        for tenant, fields in self._hashes().items():
            for field, value in fields.items():
                scope, _, outcome = field.rpartition("|")
                if scope:
                    counts = out.setdefault((tenant, scope), AuditCounts())
                    if outcome == "a":
                        counts.agreements = int(value)
                    else:
                        counts.disagreements = int(value)
        return out

    def tenants(self) -> dict[str, AuditCounts]:
        return {
            tenant: AuditCounts(int(fields.get("|a", 0)), int(fields.get("|d", 0)))
            for tenant, fields in self._hashes().items()
            if fields
        }

    def close(self) -> None:
        self.client.close()
