-- Reserves `amount` against balance - live reservations, atomically, so concurrent requests
-- can never reserve more than the balance. A live reservation with the same id is replaced
-- (its amount stops counting before the check).
-- KEYS: balance, reservation expiries, reservation amounts.
-- ARGV: now, reservationId, amount, expiresAt, gcTtlMs.
-- Returns { 'no_balance' } or { 'insufficient' | 'ok', available, syncedAt }.
reservations_prune(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
if redis.call('HEXISTS', KEYS[1], 'balance') == 0 then
  return { 'no_balance' }
end
reservation_remove(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
local fields = redis.call('HMGET', KEYS[1], 'balance', 'reserved', 'syncedAt')
local reserved = bignum_or_zero(fields[2])
local available = bignum_sub(bignum_parse(fields[1]), reserved)
local amount = bignum_parse(ARGV[3])
local synced_at = fields[3] or '0'
if bignum_sign(available) <= 0 or bignum_cmp(available, amount) < 0 then
  return { 'insufficient', bignum_tostring(available), synced_at }
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[1], 'reserved', bignum_tostring(bignum_add(reserved, amount)))
extend_expiry(KEYS[2], ARGV[5])
extend_expiry(KEYS[3], ARGV[5])
return { 'ok', bignum_tostring(bignum_sub(available, amount)), synced_at }
