-- One shard's outbox. Each event has its JSON (opaque, never re-encoded here) in the events
-- HASH, its metadata {attempts, enqueuedAt, leaseId, member} in the meta HASH, and its member
-- (a 16-digit enqueue sequence, then the event id) in exactly one of three ZSETs:
--   ready   (due now; score enqueuedAt, so ZRANGE yields the oldest first, ties in enqueue order),
--   delayed (nacked, waiting out a backoff; score availableAt),
--   leased  (claimed by a worker; score lease expiry).
-- Every event still to deliver (ready, delayed or leased) is also in the enqueued ZSET (score
-- enqueuedAt), so the oldest one, and hence how far delivery lags, is one ZRANGE away.

local OUTBOX_SEQUENCE_WIDTH = 16

local function outbox_event_id(member)
  return string.sub(member, OUTBOX_SEQUENCE_WIDTH + 1)
end

local function outbox_meta(meta_key, event_id)
  local encoded = redis.call('HGET', meta_key, event_id)
  if not encoded then
    return nil
  end
  return cjson.decode(encoded)
end

-- The metadata of `event_id` when it is still leased under `lease_id`, else nil.
local function outbox_leased_meta(meta_key, event_id, lease_id)
  local meta = outbox_meta(meta_key, event_id)
  if meta and lease_id ~= '' and meta.leaseId == lease_id then
    return meta
  end
  return nil
end

local function outbox_append(ready_key, meta_key, events_key, sequence_key, enqueued_key, now, event_id, event_json)
  if redis.call('HEXISTS', meta_key, event_id) == 1 then
    return
  end
  local sequence = redis.call('INCR', sequence_key)
  local member = string.format('%0' .. OUTBOX_SEQUENCE_WIDTH .. 'd', sequence) .. event_id
  redis.call('HSET', events_key, event_id, event_json)
  redis.call('HSET', meta_key, event_id,
    cjson.encode({ attempts = 0, enqueuedAt = now, leaseId = '', member = member }))
  redis.call('ZADD', ready_key, now, member)
  redis.call('ZADD', enqueued_key, now, member)
end

-- Moves delayed events whose backoff is over back to ready, at their enqueue position.
local function outbox_promote(ready_key, delayed_key, meta_key, now)
  local due = redis.call('ZRANGEBYSCORE', delayed_key, '-inf', now)
  for _, member in ipairs(due) do
    redis.call('ZREM', delayed_key, member)
    local meta = outbox_meta(meta_key, outbox_event_id(member))
    if meta then
      redis.call('ZADD', ready_key, meta.enqueuedAt, member)
    end
  end
end

-- Takes a member out of every state set (before deleting or dead-lettering its event).
local function outbox_forget(ready_key, delayed_key, leased_key, member)
  redis.call('ZREM', ready_key, member)
  redis.call('ZREM', delayed_key, member)
  redis.call('ZREM', leased_key, member)
end

-- Removes an event from the outbox altogether: its place in every queue, its meta, its body.
local function outbox_delete(ready_key, delayed_key, leased_key, meta_key, events_key, enqueued_key, event_id, member)
  outbox_forget(ready_key, delayed_key, leased_key, member)
  redis.call('ZREM', enqueued_key, member)
  redis.call('HDEL', meta_key, event_id)
  redis.call('HDEL', events_key, event_id)
end
