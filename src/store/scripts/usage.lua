-- Usage counters of one customer for one period: a HASH of `c:<name>` -> integer string plus
-- `@expiresAt` (logical, from the store's clock). Counters may exceed int64 (money units), so
-- they are summed with the bignum library, never HINCRBY. An expired period restarts at zero.

-- Adds the counters from `counters[first]` (name, amount pairs) up to `counters[last]`.
local function usage_add(usage_key, now, expires_at, gc_ttl_ms, counters, first, last)
  local current_expiry = redis.call('HGET', usage_key, '@expiresAt')
  if current_expiry and tonumber(current_expiry) <= tonumber(now) then
    redis.call('DEL', usage_key)
  end
  redis.call('HSET', usage_key, '@expiresAt', expires_at)
  local index = first
  while index < last do
    local field = 'c:' .. counters[index]
    redis.call('HSET', usage_key, field, bignum_add_strings(redis.call('HGET', usage_key, field), counters[index + 1]))
    index = index + 2
  end
  redis.call('PEXPIRE', usage_key, gc_ttl_ms)
  return redis.call('HGET', usage_key, 'c:cost') or '0'
end
