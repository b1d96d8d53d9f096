-- Leases the given events of one shard if they are still claimable (ready, or leased under a
-- lapsed lease): concurrent claimers may have taken some since they were peeked, and each event
-- goes to exactly one. Each claim counts one more attempt and stamps the batch's lease id,
-- which ack/nack/dead-letter check.
-- KEYS: ready, leased, meta, events, enqueued. ARGV: now, leaseExpiresAt, leaseId, member, ...
-- Returns a flat list: member, eventJson, attempts, enqueuedAt, ...
local now, lease_expires_at, lease_id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
local claimed = {}
for index = 4, #ARGV do
  local member = ARGV[index]
  local claimable = redis.call('ZSCORE', KEYS[1], member)
  if not claimable then
    local lease_expiry = redis.call('ZSCORE', KEYS[2], member)
    claimable = lease_expiry and tonumber(lease_expiry) <= now
  end
  local event_id = outbox_event_id(member)
  local meta = claimable and outbox_meta(KEYS[3], event_id)
  if meta then
    meta.attempts = meta.attempts + 1
    meta.leaseId = lease_id
    redis.call('HSET', KEYS[3], event_id, cjson.encode(meta))
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZADD', KEYS[2], lease_expires_at, member)
    claimed[#claimed + 1] = member
    claimed[#claimed + 1] = redis.call('HGET', KEYS[4], event_id)
    claimed[#claimed + 1] = tostring(meta.attempts)
    claimed[#claimed + 1] = meta.enqueuedAt
  elseif claimable then
    -- A member without metadata can never be delivered: drop it rather than offer it forever.
    redis.call('ZREM', KEYS[1], member)
    redis.call('ZREM', KEYS[2], member)
    redis.call('ZREM', KEYS[5], member)
  end
end
return claimed
