-- Moves events still leased under the batch's lease id out of the outbox and into the
-- dead-letter ZSET (member -> deadAt) and HASH (eventId -> record), with Dodo's reason. A
-- repeated dead letter of the same event id replaces the older record.
-- KEYS: ready, delayed, leased, meta, events, enqueued, dead order, dead records.
-- ARGV: leaseId, deadAt, eventId, reason, ...
local lease_id, dead_at = ARGV[1], ARGV[2]
for index = 3, #ARGV, 2 do
  local event_id, reason = ARGV[index], ARGV[index + 1]
  local meta = outbox_leased_meta(KEYS[4], event_id, lease_id)
  if meta then
    local previous = redis.call('HGET', KEYS[8], event_id)
    if previous then
      redis.call('ZREM', KEYS[7], cjson.decode(previous).member)
    end
    local record = {
      event = redis.call('HGET', KEYS[5], event_id),
      reason = reason,
      attempts = meta.attempts,
      deadAt = dead_at,
      member = meta.member,
    }
    redis.call('HSET', KEYS[8], event_id, cjson.encode(record))
    redis.call('ZADD', KEYS[7], dead_at, meta.member)
    outbox_delete(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], event_id, meta.member)
  end
end
return 1
