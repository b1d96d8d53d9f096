-- The customers of one shard settled at or after `since`, most recent first, at most `limit`.
-- KEYS: recent customers. ARGV: since, limit. Returns { customerId, activeAt, ... }.
return redis.call('ZREVRANGEBYSCORE', KEYS[1], '+inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, tonumber(ARGV[2]))
