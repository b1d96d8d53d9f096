-- One customer's balance view and live reservations, shared by the scripts that touch them.
-- Invariant: the balance hash's `reserved` field equals the sum of the amounts of the
-- reservations in the expiry ZSET (id -> expiresAt) and the amount HASH (id -> amount), after
-- `reservations_prune` has dropped those that expired at or before `now`. Every script prunes
-- first, so expiry needs no timer and a crashed holder's money comes back on its own.
-- The view exists exactly when the balance hash has a `balance` field.

local function reservations_prune(balance_key, expiry_key, amount_key, now)
  local expired = redis.call('ZRANGEBYSCORE', expiry_key, '-inf', now)
  if #expired == 0 then
    return
  end
  local reserved = bignum_or_zero(redis.call('HGET', balance_key, 'reserved'))
  for _, reservation_id in ipairs(expired) do
    reserved = bignum_sub(reserved, bignum_or_zero(redis.call('HGET', amount_key, reservation_id)))
    redis.call('HDEL', amount_key, reservation_id)
  end
  redis.call('ZREMRANGEBYSCORE', expiry_key, '-inf', now)
  redis.call('HSET', balance_key, 'reserved', bignum_tostring(reserved))
end

-- Removes a (pruned, hence live) reservation; true when it existed.
local function reservation_remove(balance_key, expiry_key, amount_key, reservation_id)
  if redis.call('ZREM', expiry_key, reservation_id) == 0 then
    return false
  end
  local amount = bignum_or_zero(redis.call('HGET', amount_key, reservation_id))
  redis.call('HDEL', amount_key, reservation_id)
  local reserved = bignum_or_zero(redis.call('HGET', balance_key, 'reserved'))
  redis.call('HSET', balance_key, 'reserved', bignum_tostring(bignum_sub(reserved, amount)))
  return true
end

-- { balance, reserved, pending, syncedAt, lastTopUp ('' when none) } as strings, or an empty
-- reply when there is no view.
local function balance_view(balance_key)
  local fields = redis.call('HMGET', balance_key, 'balance', 'reserved', 'pending', 'syncedAt', 'topUp')
  if not fields[1] then
    return {}
  end
  return { fields[1], fields[2] or '0', fields[3] or '0', fields[4] or '0', fields[5] or '' }
end

-- Lets a key live at least `ttl_ms` more: garbage collection only, never a logical expiry.
local function extend_expiry(key, ttl_ms)
  local remaining = redis.call('PTTL', key)
  if remaining >= 0 and remaining >= tonumber(ttl_ms) then
    return
  end
  redis.call('PEXPIRE', key, ttl_ms)
end

-- Remembers `member` in the ZSET of applied ids until `forget_at`; false when it is already
-- remembered (so the operation it guards runs once per id).
local function apply_once(applied_key, member, now, forget_at, gc_ttl_ms)
  redis.call('ZREMRANGEBYSCORE', applied_key, '-inf', now)
  if redis.call('ZSCORE', applied_key, member) then
    return false
  end
  redis.call('ZADD', applied_key, forget_at, member)
  extend_expiry(applied_key, gc_ttl_ms)
  return true
end
