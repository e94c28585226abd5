"""The Lua scripts: every change to an object's keys is one of these, so it
is atomic on the server, and every lease decision reads the server's clock
(``TIME``, or a key's ``PX`` expiry), never a client's.

Keys of one object (``Conn.key``) share a hash tag, so one script touches
one Redis Cluster slot.  Each script is safe to send twice (redis-py's
retries are off and ``Conn.run`` retries instead): acquires and puts carry a
token or a sequence number that a second run recognises.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Scripts"]

# -- every kind ------------------------------------------------------------------------
# KEYS: meta, body (the SharedMemory's string, the queue's stream, else meta)
# ARGV: create ('n' open or create, 't' create, 'f' open), kind, token, field/value pairs
OPEN = r"""
local meta = KEYS[1]
if redis.call('EXISTS', meta) == 1 then
  if redis.call('HGET', meta, 'kind') ~= ARGV[2] then return {'corrupt'} end
  local mine = redis.call('HGET', meta, 'creator') == ARGV[3]
  if ARGV[1] == 't' and not mine then return {'exists'} end
  return {mine and 'created' or 'opened', redis.call('HGETALL', meta)}
end
if ARGV[1] == 'f' then return {'missing'} end
redis.call('HSET', meta, 'kind', ARGV[2], 'creator', unpack(ARGV, 3))
if ARGV[2] == 'shm' then
  redis.call('DEL', KEYS[2])
  redis.call('SETRANGE', KEYS[2], tonumber(redis.call('HGET', meta, 'size')) - 1, '\0')
elseif ARGV[2] == 'mq' then
  redis.call('DEL', KEYS[2])
  redis.call('XGROUP', 'CREATE', KEYS[2], 'g', '0', 'MKSTREAM')
end
return {'created', redis.call('HGETALL', meta)}
"""

# -- Lock: meta {acquired, released, died, rtoken}, owner (token, PX lease), wake list ----
# A grant while acquired ~= released took the lock over from a holder whose
# lease ran out: that is owner_died.  acquired is the fence.
# KEYS: meta, owner  ARGV: token, lease ms  -> {1, died, fence} | {0, pttl} | {-1}
LOCK_ACQUIRE = r"""
local state = redis.call('HMGET', KEYS[1], 'acquired', 'released', 'died')
if not state[1] then return {-1} end
local acquired = tonumber(state[1])
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then return {1, tonumber(state[3]), acquired} end
if holder then return {0, redis.call('PTTL', KEYS[2])} end
local died = 0
if acquired ~= tonumber(state[2]) then died = 1 end
acquired = acquired + 1
redis.call('HSET', KEYS[1], 'acquired', acquired, 'released', acquired - 1, 'died', died)
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return {1, died, acquired}
"""

# KEYS: meta, owner, wake  ARGV: token  -> 1 released | 0 the lease was gone
LOCK_RELEASE = r"""
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  redis.call('HSET', KEYS[1], 'released', redis.call('HGET', KEYS[1], 'acquired'),
             'rtoken', ARGV[1])
  redis.call('DEL', KEYS[3])
  redis.call('RPUSH', KEYS[3], '1')
  return 1
end
if redis.call('HGET', KEYS[1], 'rtoken') == ARGV[1] then return 1 end
return 0
"""

# KEYS: owner  ARGV: token, lease ms  -> 1 renewed | 0 lost
LOCK_RENEW = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

# -- Semaphore: meta {value, rid, rlost}, holders (zset token -> expiry ms), wake list -----
# Holders whose lease ran out (by the server's clock) give their permit back
# first, in every script.
_NOW_AND_RECLAIM = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
if #expired > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('HINCRBY', KEYS[1], 'value', #expired)
end
"""

# KEYS: meta, holders  ARGV: token, lease ms  -> {1} | {0, ms to the next expiry or -1} | {-1}
SEM_ACQUIRE = (
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
    + _NOW_AND_RECLAIM
    + r"""
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return {1} end
local value = tonumber(redis.call('HGET', KEYS[1], 'value'))
if value > 0 then
  redis.call('HSET', KEYS[1], 'value', value - 1)
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
  return {1}
end
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then return {0, tonumber(first[2]) - now} end
return {0, -1}
"""
)

# KEYS: meta, holders, wake  ARGV: release id, n, max value, tokens of this handle...
# -> {1, lost} | {-1} gone | {-2} over the maximum
SEM_RELEASE = (
    "if redis.call('EXISTS', KEYS[1]) == 0 then return {-1} end\n"
    + "if redis.call('HGET', KEYS[1], 'rid') == ARGV[1] then\n"
    + "  return {1, tonumber(redis.call('HGET', KEYS[1], 'rlost'))}\nend\n"
    + _NOW_AND_RECLAIM
    + r"""
local back, lost = tonumber(ARGV[2]), 0
local value = tonumber(redis.call('HGET', KEYS[1], 'value'))
for i = 4, #ARGV do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    lost = lost + 1
    back = back - 1  -- its permit came back when its lease ran out
  end
end
if value + back > tonumber(ARGV[3]) then return {-2} end
for i = 4, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
redis.call('HSET', KEYS[1], 'value', value + back, 'rid', ARGV[1], 'rlost', lost)
if back > 0 then
  redis.call('DEL', KEYS[3])
  local wakes = {}
  for i = 1, math.min(back, 64) do wakes[i] = '1' end
  redis.call('RPUSH', KEYS[3], unpack(wakes))
end
return {1, lost}
"""
)

# KEYS: meta, holders  ARGV: lease ms, tokens...  -> one 1 (renewed) or 0 (lost) per token
SEM_RENEW = (
    _NOW_AND_RECLAIM
    + r"""
local out = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('ZADD', KEYS[2], 'XX', now + tonumber(ARGV[1]), ARGV[i])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
"""
)

# KEYS: meta, holders  -> value | -1
SEM_VALUE = (
    "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end\n"
    + _NOW_AND_RECLAIM
    + "return tonumber(redis.call('HGET', KEYS[1], 'value'))\n"
)

# -- SharedMemory: meta {size, fence}, data (string of size bytes) ----------------------
# A write with a fence is refused when a write with a higher fence came first
# (the storage-side check of a lease lock's fencing token).
# KEYS: meta, data  ARGV: offset, bytes, fence or ''  -> 1 | -1 gone | -2 stale fence
SHM_WRITE = r"""
if redis.call('EXISTS', KEYS[2]) == 0 then return -1 end
if ARGV[3] ~= '' then
  local fence = tonumber(ARGV[3])
  local seen = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
  if fence < seen then return -2 end
  if fence > seen then redis.call('HSET', KEYS[1], 'fence', fence) end
end
redis.call('SETRANGE', KEYS[2], ARGV[1], ARGV[2])
return 1
"""

# -- MessageQueue: meta {capacity, max_message, lease, used}, stream s with group g,
#    room (wake list of producers), seen (hash producer -> last sequence number),
#    seen_at (zset producer -> server ms of its last put) ------------------------------
# A message costs what it would locally (8 bytes + its length rounded up to 8);
# capacity is checked here, never with XADD MAXLEN (which trims pending entries).
# KEYS: meta, s, seen, seen_at  ARGV: producer, first sequence number, messages...
# -> number of messages now in the queue (those of an earlier try included) | -1
MQ_PUT = r"""
local sizes = redis.call('HMGET', KEYS[1], 'capacity', 'used')
if not sizes[1] then return -1 end
local capacity, used = tonumber(sizes[1]), tonumber(sizes[2])
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local seq = tonumber(ARGV[2])
local put = 0
for i = 3, #ARGV do
  if seq > last then
    local cost = 8 + math.floor((#ARGV[i] + 7) / 8) * 8
    if used + cost > capacity then break end
    redis.call('XADD', KEYS[2], '*', 'd', ARGV[i])
    used = used + cost
    last = seq
  end
  put = put + 1
  seq = seq + 1
end
if put > 0 then
  redis.call('HSET', KEYS[1], 'used', used)
  redis.call('HSET', KEYS[3], ARGV[1], last)
end
-- At a producer's first put and every 64th: note when it was last seen, and
-- forget a few producers that put nothing for a day (bounded work per put).
if tonumber(ARGV[2]) % 64 == 1 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000
  redis.call('ZADD', KEYS[4], now, ARGV[1])
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - 86400000, 'LIMIT', 0, 4)
  for _, p in ipairs(old) do
    redis.call('HDEL', KEYS[3], p)
    redis.call('ZREM', KEYS[4], p)
  end
end
return put
"""

# Messages of consumers whose lease ran out come first (redelivered), then new ones.
# KEYS: meta, s  ARGV: consumer, count
# -> {-1} gone | {0, last id} nothing | {1, id, data, redelivered, ...}
MQ_TAKE = r"""
local lease = redis.call('HGET', KEYS[1], 'lease')
if not lease then return {-1} end
local want = tonumber(ARGV[2])
local out = {1}
local claimed = redis.call('XAUTOCLAIM', KEYS[2], 'g', ARGV[1], lease, '0-0', 'COUNT', want)
for _, e in ipairs(claimed[2]) do
  if e and e[2] then
    out[#out + 1] = e[1]; out[#out + 1] = e[2][2]; out[#out + 1] = 1
  end
end
local got = (#out - 1) / 3
if got < want then
  local r = redis.call('XREADGROUP', 'GROUP', 'g', ARGV[1], 'COUNT', want - got,
                       'STREAMS', KEYS[2], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      out[#out + 1] = e[1]; out[#out + 1] = e[2][2]; out[#out + 1] = 0
    end
  end
end
if #out > 1 then return out end
local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if newest[1] then return {0, newest[1][1]} end
return {0, '0-0'}
"""

# Remove handled messages that this consumer still holds.
# KEYS: meta, s, room  ARGV: consumer, id, cost, id, cost...  -> number removed
MQ_ACK = r"""
local removed, freed = 0, 0
for i = 2, #ARGV, 2 do
  local p = redis.call('XPENDING', KEYS[2], 'g', ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[1] then
    redis.call('XACK', KEYS[2], 'g', ARGV[i])
    redis.call('XDEL', KEYS[2], ARGV[i])
    removed = removed + 1
    freed = freed + tonumber(ARGV[i + 1])
  end
end
if freed > 0 then
  local sizes = redis.call('HMGET', KEYS[1], 'capacity', 'max_message', 'used')
  if sizes[1] then
    local used = tonumber(sizes[3])
    redis.call('HSET', KEYS[1], 'used', used - freed)
    -- a producer can be waiting only if the largest message did not fit
    if used + 8 + math.floor((tonumber(sizes[2]) + 7) / 8) * 8 > tonumber(sizes[1]) then
      redis.call('DEL', KEYS[3])
      redis.call('RPUSH', KEYS[3], '1')
    end
  end
end
return removed
"""

# Reset the idle time of a message this consumer holds (JUSTID: not a delivery);
# with ARGV[3] = '1' make it idle at once instead, for another consumer to take.
# KEYS: s  ARGV: consumer, id, give back  -> 1 | 0 not held any more
MQ_HOLD = r"""
local p = redis.call('XPENDING', KEYS[1], 'g', ARGV[2], ARGV[2], 1)
if not (p[1] and p[1][2] == ARGV[1]) then return 0 end
if ARGV[3] == '1' then
  redis.call('XCLAIM', KEYS[1], 'g', ARGV[1], 0, ARGV[2], 'IDLE', 1000000000000, 'JUSTID')
else
  redis.call('XCLAIM', KEYS[1], 'g', ARGV[1], 0, ARGV[2], 'JUSTID')
end
return 1
"""

# A consumer that holds nothing leaves the group (never one that holds
# messages: they would become unclaimable).  KEYS: s  ARGV: consumer
MQ_LEAVE = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if #redis.call('XPENDING', KEYS[1], 'g', '-', '+', 1, ARGV[1]) == 0 then
  redis.call('XGROUP', 'DELCONSUMER', KEYS[1], 'g', ARGV[1])
end
return 1
"""

_ALL = {
    "open": OPEN,
    "lock_acquire": LOCK_ACQUIRE,
    "lock_release": LOCK_RELEASE,
    "lock_renew": LOCK_RENEW,
    "sem_acquire": SEM_ACQUIRE,
    "sem_release": SEM_RELEASE,
    "sem_renew": SEM_RENEW,
    "sem_value": SEM_VALUE,
    "shm_write": SHM_WRITE,
    "mq_put": MQ_PUT,
    "mq_take": MQ_TAKE,
    "mq_ack": MQ_ACK,
    "mq_hold": MQ_HOLD,
    "mq_leave": MQ_LEAVE,
}


class Scripts:
    """The scripts registered on one client (sync or asyncio): attributes
    named as in ``_ALL``, each called as ``script(keys=[...], args=[...])``."""

    def __init__(self, client: Any) -> None:
        for attr, source in _ALL.items():
            setattr(self, attr, client.register_script(source))

    def __getattr__(self, attr: str) -> Any:  # (for mypy: the attributes set above)
        raise AttributeError(attr)
