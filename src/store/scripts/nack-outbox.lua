-- Returns events still leased under the batch's lease id to the outbox, due at availableAt
-- (delayed until then), optionally rewritten under the same id. Attempts are kept.
-- KEYS: ready, delayed, leased, meta, events.
-- ARGV: leaseId, availableAt, eventId, replacementJson ('' keeps the event), ...
local lease_id, available_at = ARGV[1], ARGV[2]
for index = 3, #ARGV, 2 do
  local event_id, replacement = ARGV[index], ARGV[index + 1]
  local meta = outbox_leased_meta(KEYS[4], event_id, lease_id)
  if meta then
    meta.leaseId = ''
    redis.call('HSET', KEYS[4], event_id, cjson.encode(meta))
    outbox_forget(KEYS[1], KEYS[2], KEYS[3], meta.member)
    redis.call('ZADD', KEYS[2], available_at, meta.member)
    if replacement ~= '' then
      redis.call('HSET', KEYS[5], event_id, replacement)
    end
  end
end
return 1
