"""Lua scripts: each write is one atomic script that also appends its change-feed entry.

A write and its feed entry can therefore never be seen apart: a replica that reads the
feed up to some entry has seen every write up to it.
"""

from __future__ import annotations

from typing import Any

import redis

# KEYS: ep, ck, ids, score, feed, tenants
# ARGV: id, content_key, body, vec, hits, used, created, score, tenant, scope, capacity (0: none),
#       feed maxlen, episode key prefix
# -> {1, id, evicted ids...} when stored, {0, existing id} when the same content is already stored.
ADD = """
local existing = redis.call('HGET', KEYS[2], ARGV[2])
if existing and redis.call('EXISTS', ARGV[13] .. existing) == 1 then
  return {0, existing}
end
redis.call('HSET', KEYS[1], 'body', ARGV[3], 'vec', ARGV[4], 'hits', ARGV[5], 'used', ARGV[6],
           'created', ARGV[7], 'ck', ARGV[2], 'scope', ARGV[10])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[7], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[1])
redis.call('SADD', KEYS[6], ARGV[9])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], '*', 'op', 'add', 't', ARGV[9], 'id', ARGV[1])
local result = {1, ARGV[1]}
local capacity = tonumber(ARGV[11])
if capacity > 0 then
  local excess = redis.call('ZCARD', KEYS[3]) - capacity
  if excess > 0 then
    local victims = redis.call('ZRANGE', KEYS[4], 0, excess)
    for _, victim in ipairs(victims) do
      if excess > 0 and victim ~= ARGV[1] then
        local key = ARGV[13] .. victim
        local ck = redis.call('HGET', key, 'ck')
        if ck and redis.call('HGET', KEYS[2], ck) == victim then
          redis.call('HDEL', KEYS[2], ck)
        end
        redis.call('DEL', key)
        redis.call('ZREM', KEYS[3], victim)
        redis.call('ZREM', KEYS[4], victim)
        redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[12], '*', 'op', 'del', 't', ARGV[9], 'id', victim,
                   'why', 'capacity')
        table.insert(result, victim)
        excess = excess - 1
      end
    end
  end
end
return result
"""

# KEYS: ep, score   ARGV: id, now, hit weight (s), delta  -> new hit count, or -1 when gone.
HIT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local hits = redis.call('HINCRBY', KEYS[1], 'hits', ARGV[4])
redis.call('HSET', KEYS[1], 'used', ARGV[2])
redis.call('ZADD', KEYS[2], tonumber(ARGV[2]) + tonumber(ARGV[3]) * math.log(1 + hits), ARGV[1])
return hits
"""

# KEYS: ep, feed   ARGV: body, tenant, id, feed maxlen  -> 1 updated, 0 gone.
UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], 'body', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'op', 'upd', 't', ARGV[2], 'id', ARGV[3])
return 1
"""

# KEYS: ep, ck, ids, score, feed   ARGV: id, tenant, reason, feed maxlen  -> 1 deleted, 0 gone.
DELETE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
local ck = redis.call('HGET', KEYS[1], 'ck')
if ck and redis.call('HGET', KEYS[2], ck) == ARGV[1] then
  redis.call('HDEL', KEYS[2], ck)
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'op', 'del', 't', ARGV[2], 'id', ARGV[1], 'why', ARGV[3])
return 1
"""

# Deletes up to ARGV[2] episodes of a tenant without feed entries (the final DROP announces it).
# KEYS: ids, score   ARGV: episode key prefix, chunk  -> how many were deleted.
DROP_CHUNK = """
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
for _, id in ipairs(ids) do
  redis.call('DEL', ARGV[1] .. id)
end
if #ids > 0 then
  redis.call('ZREM', KEYS[1], unpack(ids))
  redis.call('ZREM', KEYS[2], unpack(ids))
end
return #ids
"""

# KEYS: ids, score, ck, tenants, feed   ARGV: tenant, now, feed maxlen
# -> 1 when the tenant is gone (and announced), 0 when episodes arrived meanwhile (drop more chunks).
DROP_FINISH = """
if redis.call('ZCARD', KEYS[1]) > 0 then
  return 0
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[3], '*', 'op', 'drop', 't', ARGV[1], 'at', ARGV[2])
return 1
"""


# Bulk reads pack each episode into one string: a header of eight 4-byte big-endian lengths,
# then id and FETCH_FIELDS; a missing episode has an empty body. One reply element per
# episode instead of eight (the Python RESP parser costs ~15 us per element), and no big
# table.concat (slow in Redis's Lua).
FETCH_FIELDS = ("body", "vec", "hits", "used", "ck", "created", "scope")
_PACK_ONE = """
local function pack_one(prefix, id)
  local v = redis.call('HMGET', prefix .. id, 'body', 'vec', 'hits', 'used', 'ck', 'created', 'scope')
  for j = 1, 7 do
    if not v[j] then v[j] = '' end
  end
  return struct.pack('>I4I4I4I4I4I4I4I4', #id, #v[1], #v[2], #v[3], #v[4], #v[5], #v[6], #v[7])
    .. id .. v[1] .. v[2] .. v[3] .. v[4] .. v[5] .. v[6] .. v[7]
end
"""

# ARGV: episode key prefix, id...  -> packed episodes
FETCH = (
    _PACK_ONE
    + """
local out = {}
for i = 2, #ARGV do
  out[#out + 1] = pack_one(ARGV[1], ARGV[i])
end
return out
"""
)

# KEYS: ids   ARGV: episode key prefix, cursor, count  -> {next cursor, packed episodes}
SCAN_FETCH = (
    _PACK_ONE
    + """
local reply = redis.call('ZSCAN', KEYS[1], ARGV[2], 'COUNT', ARGV[3])
local members = reply[2]
local out = {}
for i = 1, #members, 2 do
  out[#out + 1] = pack_one(ARGV[1], members[i])
end
return {reply[1], out}
"""
)


class Scripts:
    """The scripts registered once; each call may pass a client or pipeline to run on."""

    def __init__(self, client: redis.Redis) -> None:
        self.add: Any = client.register_script(ADD)
        self.hit: Any = client.register_script(HIT)
        self.update: Any = client.register_script(UPDATE)
        self.delete: Any = client.register_script(DELETE)
        self.drop_chunk: Any = client.register_script(DROP_CHUNK)
        self.drop_finish: Any = client.register_script(DROP_FINISH)
        self.fetch: Any = client.register_script(FETCH)
        self.scan_fetch: Any = client.register_script(SCAN_FETCH)
