-- Undoes a webhook claim whose call was abandoned at its deadline (see redis-calls.ts): deletes
-- the record only if it is still that claim's own (`processing:<until>:<token>`), so the next
-- delivery can run at once instead of waiting out the processing TTL, and a claim made since by
-- another delivery is left alone.
-- KEYS: webhook record. ARGV: the claim's record.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
