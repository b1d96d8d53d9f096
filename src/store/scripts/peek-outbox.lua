-- Lists one shard's claimable events, oldest first, without claiming them: those whose lease
-- lapsed (a worker died), then due ready events. claimOutbox merges the lists of every shard so
-- a batch is oldest first across shards, then claims with claim-outbox.lua, which re-checks.
-- Promoting delayed events whose backoff is over is the only write.
-- KEYS: ready, delayed, leased, meta. ARGV: now, max.
-- Returns { { lapsedMember, enqueuedAt, ... }, { readyMember, enqueuedAt, ... } }.
local now, max = ARGV[1], tonumber(ARGV[2])
outbox_promote(KEYS[1], KEYS[2], KEYS[4], now)
local lapsed = {}
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, max)) do
  local meta = outbox_meta(KEYS[4], outbox_event_id(member))
  lapsed[#lapsed + 1] = member
  lapsed[#lapsed + 1] = meta and meta.enqueuedAt or '0'
end
return { lapsed, redis.call('ZRANGE', KEYS[1], 0, max - 1, 'WITHSCORES') }
