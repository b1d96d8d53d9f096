-- Adds a signed delta to the balance view once per adjustment id (remembered until forgetAt).
-- The id is remembered even when there is no view yet: the Dodo balance fetched next already
-- includes the adjustment, so a replay must not add it again.
-- KEYS: balance, reservation expiries, reservation amounts, applied ids.
-- ARGV: now, adjustmentId, delta, forgetAt, gcTtlMs. Returns the view (empty when none).
reservations_prune(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local has_view = redis.call('HEXISTS', KEYS[1], 'balance') == 1
if apply_once(KEYS[4], 'adjust:' .. ARGV[2], ARGV[1], ARGV[4], ARGV[5]) and has_view then
  local balance = bignum_parse(redis.call('HGET', KEYS[1], 'balance'))
  redis.call('HSET', KEYS[1], 'balance', bignum_tostring(bignum_add(balance, bignum_parse(ARGV[3]))))
end
return balance_view(KEYS[1])
