"""Redis key layout. Every key of a tenant starts with `{prefix}:{<tenant>}:`.

The braces make the tenant a Redis Cluster hash tag (a tenant's keys share one slot), and
the tenant name is percent-quoted so that no name can reach into another tenant's keys.

    {prefix}:feed                      stream: change feed (op, t, id[, at]) for every replica
    {prefix}:tenants                   set: tenants that have episodes
    {prefix}:epoch                     string: identity of this Redis dataset (a wiped Redis gets a new one)
    {prefix}:replica:<id>:pos          string: last feed entry a replica applied (with expiry)
    {prefix}:{<tenant>}:ep:<id>        hash: body (episode JSON), vec (float32), hits, used, created, ck, scope
    {prefix}:{<tenant>}:ck             hash: content_key -> episode id (idempotent writes)
    {prefix}:{<tenant>}:ids            sorted set: episode id by created_at (listing, TTL, rebuild)
    {prefix}:{<tenant>}:score          sorted set: episode id by usefulness (eviction)
"""

from __future__ import annotations

from urllib.parse import quote


class RedisKeys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.feed = f"{prefix}:feed"
        self.tenants = f"{prefix}:tenants"
        self.epoch = f"{prefix}:epoch"

    def replica_pos(self, replica_id: str) -> str:
        return f"{self.prefix}:replica:{quote(replica_id, safe='')}:pos"

    def tenant_base(self, tenant: str) -> str:
        return f"{self.prefix}:{{{quote(tenant, safe='')}}}"

    def tenant_pattern(self, tenant: str) -> str:
        """A SCAN pattern matching every key of one tenant."""
        base = self.tenant_base(tenant)
        escaped = "".join("\\" + c if c in "*?[]\\" else c for c in base)
        return escaped + ":*"

    def episode_prefix(self, tenant: str) -> str:
        return self.tenant_base(tenant) + ":ep:"

    def episode(self, tenant: str, episode_id: str) -> str:
        return self.episode_prefix(tenant) + episode_id

    def content(self, tenant: str) -> str:
        return self.tenant_base(tenant) + ":ck"

    def ids(self, tenant: str) -> str:
        return self.tenant_base(tenant) + ":ids"

    def score(self, tenant: str) -> str:
        return self.tenant_base(tenant) + ":score"
