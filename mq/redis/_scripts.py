"""Key layout and the Lua scripts that make each broker operation one atomic server call.

Keys (``tactus`` is :data:`KEY_PREFIX`; ``q`` a queue name):

- ``tactus:{q}``: the stream, one entry a message, fields ``b`` (the body) and, for a message
  delivered before, ``n`` (how many times). Its consumer group :data:`GROUP` is created at id 0, so
  entries added before any consumer existed are delivered.
- ``tactus:{q}:delayed``: a sorted set of delayed messages scored by when they are due (the
  server's clock, milliseconds); a member is a 16-hex-digit token, ``n`` in 8 hex digits, then the
  body (the token keeps equal bodies apart).
- ``tactus:pub:<token>``: a sorted set of the batch numbers one publisher (a broker object) has
  added, the last :data:`PUBLISHED_KEPT`, so that a batch sent again after a lost reply is not
  added twice; it expires after :data:`PUBLISHER_TTL` seconds unused.

A stream key always ends with ``}`` and a delayed key with ``d``, so no queue name makes one
collide with the other. The braces are a cluster hash tag; cluster mode itself is not supported
(a reject writes to the dead-letter queue's stream, in another slot).

Every script reads time with ``TIME`` on the server, so publishers on machines whose clocks
disagree still agree on when a delayed message is due.
"""

from __future__ import annotations

#: What every key of Tactus starts with.
KEY_PREFIX = "tactus"
#: The consumer group of every queue.
GROUP = "tactus"
#: Seconds a publisher's batch record outlives its last publish.
PUBLISHER_TTL = 24 * 3600
#: Batch numbers a publisher's record keeps (newest); far more than could fail in a row.
PUBLISHED_KEPT = 1000


def stream_key(queue: str) -> str:
    """The stream of ``queue``."""
    return f"{KEY_PREFIX}:{{{queue}}}"


def delayed_key(queue: str) -> str:
    """The sorted set of ``queue``'s delayed messages."""
    return f"{KEY_PREFIX}:{{{queue}}}:delayed"


def queue_key_pattern(prefix: str) -> str:
    """A ``SCAN MATCH`` pattern for the keys of every queue whose name starts with ``prefix``
    (which must hold no glob character)."""
    return f"{KEY_PREFIX}:{{{prefix}*"


def publisher_key(token: str) -> str:
    """The record of the batches one publisher has added."""
    return f"{KEY_PREFIX}:pub:{token}"


_NOW = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

#: KEYS: the publisher's record, then one stream or delayed key per message.
#: ARGV: batch number, record TTL, record size, then per message: delay in ms (0: none), token,
#: body. Returns 1 if the batch was added now, 0 if it had been already.
PUBLISH = (
    _NOW
    + """
local seq = ARGV[1]
if redis.call('ZSCORE', KEYS[1], seq) then
  return 0
end
local now = nil
for i = 2, #KEYS do
  local a = 4 + (i - 2) * 3
  local delay = tonumber(ARGV[a])
  if delay > 0 then
    now = now or now_ms()
    redis.call('ZADD', KEYS[i], now + delay, ARGV[a + 1] .. '00000000' .. ARGV[a + 2])
  else
    redis.call('XADD', KEYS[i], '*', 'b', ARGV[a + 2])
  end
end
redis.call('ZADD', KEYS[1], seq, seq)
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -1 - tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
)

#: A consumer's round of upkeep. KEYS: stream, delayed. ARGV: group, consumer, visibility (ms),
#: XAUTOCLAIM cursor, how many to claim (0: none), how many due messages to move at most, idle
#: time (ms) after which a consumer holding nothing is removed from the group (0: don't look).
#: Moves due delayed messages into the stream (ZRANGEBYSCORE, XADD, ZREM: one script, so a
#: message is never in both or neither), creates the group if missing, claims entries idle longer
#: than the visibility (a dead consumer's), and forgets long-idle consumers holding nothing.
#: Returns {moved, ms until the next delayed message is due (-1: none), cursor, claimed entries}.
MAINTAIN = (
    _NOW
    + """
local stream, delayed = KEYS[1], KEYS[2]
local group, me = ARGV[1], ARGV[2]
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, tonumber(ARGV[6]))
for _, m in ipairs(due) do
  local n = tonumber(string.sub(m, 17, 24), 16)
  if n > 0 then
    redis.call('XADD', stream, '*', 'b', string.sub(m, 25), 'n', n)
  else
    redis.call('XADD', stream, '*', 'b', string.sub(m, 25))
  end
  redis.call('ZREM', delayed, m)
end
local wait = -1
local first = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if #first > 0 then
  wait = math.max(tonumber(first[2]) - now, 0)
end
local cursor, claimed = ARGV[4], {}
if tonumber(ARGV[5]) > 0 then
  local r = redis.pcall('XAUTOCLAIM', stream, group, me, ARGV[3], cursor, 'COUNT', ARGV[5])
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'NOGROUP', 1, true) then
      return redis.error_reply(r.err)
    end
    redis.call('XGROUP', 'CREATE', stream, group, '0', 'MKSTREAM')
    cursor = '0-0'
  else
    cursor, claimed = r[1], r[2]
  end
end
local sweep = tonumber(ARGV[7])
if sweep > 0 then
  local consumers = redis.pcall('XINFO', 'CONSUMERS', stream, group)
  if not consumers.err then
    for _, c in ipairs(consumers) do
      local f = {}
      for j = 1, #c, 2 do f[c[j]] = c[j + 1] end
      if f['name'] ~= me and f['pending'] == 0 and f['idle'] > sweep then
        redis.call('XGROUP', 'DELCONSUMER', stream, group, f['name'])
      end
    end
  end
end
return {#due, wait, cursor, claimed}
"""
)

#: Settles entries the calling consumer holds. KEYS: stream, delayed, dead-letter stream, then
#: the notice streams. ARGV: group, consumer, mode, delay (ms), token (12 hex digits), how many
#: new entries to read afterwards (the room the settling leaves in the prefetch), how many ids
#: (k), the k ids, then one body per notice stream. Only entries still pending for this consumer
#: are touched (one that the visibility timeout gave to another consumer, or a purge removed, is
#: left alone), so a call sent again after a lost reply changes nothing. Modes:
#:
#: - ``ack``: the notices are added, then the entries acked and deleted (only if one is held:
#:   a repeated ack adds no notice twice);
#: - ``back``: a copy goes to the end of the stream, its ``n`` counting the deliveries so far,
#:   then the entry is acked and deleted; ``leave`` also removes the consumer from the group
#:   when it holds nothing more;
#: - ``later``: the same, but the copy waits in the delayed set for the delay;
#: - ``dead``: the body goes to the dead-letter stream, then the entry is acked and deleted;
#: - ``keep``: the entry's idle time is reset (XCLAIM ... JUSTID: not counted as a delivery),
#:   so that no other consumer claims it for another visibility timeout.
#:
#: Returns {the ids handled, the entries read afterwards}: one round trip acks a delivery and
#: takes the next, as RabbitMQ pushes the next message when one is acked.
SETTLE = (
    _NOW
    + """
local stream, delayed, dead = KEYS[1], KEYS[2], KEYS[3]
local group, me, mode = ARGV[1], ARGV[2], ARGV[3]
local k = tonumber(ARGV[7])
local held = {}
for i = 8, 7 + k do
  local p = redis.pcall('XPENDING', stream, group, ARGV[i], ARGV[i], 1, me)
  if type(p) == 'table' and p.err then
    return {{}, {}}
  end
  if #p == 1 then
    held[#held + 1] = {ARGV[i], tonumber(p[1][4])}
  end
end
local ids = {}
if mode == 'keep' then
  for _, h in ipairs(held) do
    redis.call('XCLAIM', stream, group, me, 0, h[1], 'JUSTID')
    ids[#ids + 1] = h[1]
  end
  return {ids, {}}
end
if mode == 'ack' and #held > 0 then
  for j = 4, #KEYS do
    redis.call('XADD', KEYS[j], '*', 'b', ARGV[7 + k + j - 3])
  end
end
local now = nil
for i, h in ipairs(held) do
  local id = h[1]
  if mode ~= 'ack' then
    local e = redis.call('XRANGE', stream, id, id)
    if #e == 1 then
      local f, body, n = e[1][2], '', 0
      for j = 1, #f, 2 do
        if f[j] == 'b' then body = f[j + 1] elseif f[j] == 'n' then n = tonumber(f[j + 1]) end
      end
      local seen = n + h[2]
      if mode == 'dead' then
        redis.call('XADD', dead, '*', 'b', body)
      elseif mode == 'later' then
        now = now or now_ms()
        local member = string.format('%s%04x%08x', ARGV[5], i % 65536, seen) .. body
        redis.call('ZADD', delayed, now + tonumber(ARGV[4]), member)
      else
        redis.call('XADD', stream, '*', 'b', body, 'n', seen)
      end
    end
  end
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
  ids[#ids + 1] = id
end
if mode == 'leave' then
  local left = redis.pcall('XPENDING', stream, group, '-', '+', 1, me)
  if type(left) == 'table' and not left.err and #left == 0 then
    redis.call('XGROUP', 'DELCONSUMER', stream, group, me)
  end
  return {ids, {}}
end
local read = {}
if tonumber(ARGV[6]) > 0 then
  local r = redis.pcall('XREADGROUP', 'GROUP', group, me, 'COUNT', ARGV[6], 'STREAMS', stream, '>')
  if type(r) == 'table' and not r.err then
    read = r[1][2]
  end
end
return {ids, read}
"""
)

#: KEYS: stream, delayed, per queue. ARGV: group. Returns per queue the messages waiting: the
#: stream's entries not being handled (XLEN less the pending ones) plus the delayed ones.
DEPTHS = """
local out = {}
for i = 1, #KEYS, 2 do
  local pending = 0
  local p = redis.pcall('XPENDING', KEYS[i], ARGV[1])
  if type(p) == 'table' and not p.err then
    pending = p[1]
  end
  local waiting = redis.call('XLEN', KEYS[i]) - pending
  if waiting < 0 then
    waiting = 0
  end
  out[#out + 1] = waiting + redis.call('ZCARD', KEYS[i + 1])
end
return out
"""

#: KEYS: stream, delayed. ARGV: group. Drops every message, those being handled too (their
#: consumers' acks then find nothing); returns how many there were.
PURGE = """
local count = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
redis.call('XTRIM', KEYS[1], 'MAXLEN', 0)
redis.call('DEL', KEYS[2])
while true do
  local p = redis.pcall('XPENDING', KEYS[1], ARGV[1], '-', '+', 1000)
  if (type(p) == 'table' and p.err) or #p == 0 then
    break
  end
  for _, e in ipairs(p) do
    redis.call('XACK', KEYS[1], ARGV[1], e[1])
  end
end
return count
"""
