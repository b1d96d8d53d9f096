-- Undoes a claim whose call was abandoned at its deadline (see redis-calls.ts): events still
-- leased under that call's lease id go back to ready, at their enqueue position, and the attempt
-- the claim counted is taken back (nobody sent them). Events leased under any other id, or
-- already gone, are left alone, so the undo is harmless late or twice.
-- KEYS: ready, delayed, leased, meta. ARGV: leaseId, member, ... (as the claim was given them)
for index = 2, #ARGV do
  local event_id = outbox_event_id(ARGV[index])
  local meta = outbox_leased_meta(KEYS[4], event_id, ARGV[1])
  if meta then
    meta.leaseId = ''
    if meta.attempts > 0 then
      meta.attempts = meta.attempts - 1
    end
    redis.call('HSET', KEYS[4], event_id, cjson.encode(meta))
    outbox_forget(KEYS[1], KEYS[2], KEYS[3], meta.member)
    redis.call('ZADD', KEYS[1], meta.enqueuedAt, meta.member)
  end
end
return 1
