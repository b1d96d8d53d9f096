-- Counts one shard's events: waiting (ready, delayed, and leased whose lease lapsed: they are
-- claimable again), leased (lease still running) and dead-lettered; the bytes Redis uses for
-- them (MEMORY USAGE, sampled: an estimate); and the enqueue time of the oldest event still to
-- deliver. Read-only.
-- KEYS: ready, delayed, leased, dead order, meta, events, dead records, enqueued. ARGV: now.
-- Returns { waiting, leased, dead, bytes, oldestEnqueuedAt ('' when none) }.
local lapsed = redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[1])
local leased = redis.call('ZCARD', KEYS[3]) - lapsed
local waiting = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + lapsed
local bytes = 0
for _, key in ipairs(KEYS) do
  bytes = bytes + (redis.call('MEMORY', 'USAGE', key) or 0)
end
local oldest = redis.call('ZRANGE', KEYS[8], 0, 0, 'WITHSCORES')
return { waiting, leased, redis.call('ZCARD', KEYS[4]), bytes, oldest[2] or '' }
