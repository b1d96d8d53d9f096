-- Usage counters of one customer for one period: a HASH of `c:<name>` -> integer string plus
-- `@expiresAt` (logical, from the store's clock). An expired period restarts at zero.

-- Adds `amount` (an integer string) to a counter exactly. HINCRBY while the counter and the
-- amount fit in 64 bits (up to about $9.2M at 10^-12 USD a unit): one command, no parsing in
-- Lua. Past that Redis refuses the HINCRBY without changing anything (not an integer it can
-- read, or an overflow), and the bignum library adds the decimal strings instead.
local function counter_add(key, field, amount)
  local added = redis.pcall('HINCRBY', key, field, amount)
  if type(added) == 'table' and added.err then
    redis.call('HSET', key, field, bignum_add_strings(redis.call('HGET', key, field), amount))
  end
end

-- Adds the counters from `counters[first]` (name, amount pairs) up to `counters[last]`.
local function usage_add(usage_key, now, expires_at, gc_ttl_ms, counters, first, last)
  local current_expiry = redis.call('HGET', usage_key, '@expiresAt')
  if current_expiry and tonumber(current_expiry) <= tonumber(now) then
    redis.call('DEL', usage_key)
  end
  redis.call('HSET', usage_key, '@expiresAt', expires_at)
  local index = first
  while index < last do
    counter_add(usage_key, 'c:' .. counters[index], counters[index + 1])
    index = index + 2
  end
  redis.call('PEXPIRE', usage_key, gc_ttl_ms)
  return redis.call('HGET', usage_key, 'c:cost') or '0'
end
