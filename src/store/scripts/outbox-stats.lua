-- Counts one shard's events: waiting (ready, delayed, and leased whose lease lapsed: they are
-- claimable again), leased (lease still running) and dead-lettered. Read-only.
-- KEYS: ready, delayed, leased, dead order. ARGV: now. Returns { waiting, leased, dead }.
local lapsed = redis.call('ZCOUNT', KEYS[3], '-inf', ARGV[1])
local leased = redis.call('ZCARD', KEYS[3]) - lapsed
local waiting = redis.call('ZCARD', KEYS[1]) + redis.call('ZCARD', KEYS[2]) + lapsed
return { waiting, leased, redis.call('ZCARD', KEYS[4]) }
