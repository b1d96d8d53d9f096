-- Applies a Dodo balance observed at `observedAt` unless a later observation was applied
-- (`observedAt` is kept apart from `syncedAt`, which markBalanceStale zeroes). The view becomes
-- dodoBalance - pending: usage settled here that Dodo may not have deducted yet.
-- KEYS: balance, reservation expiries, reservation amounts.
-- ARGV: now, dodoBalance, observedAt. Returns { applied (0|1), view, previous balance ('' when
-- there was no view) }: what the observation corrected, measured in the same atomic step.
reservations_prune(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local last_observed_at = redis.call('HGET', KEYS[1], 'observedAt')
local applied = 0
local previous = ''
if not last_observed_at or tonumber(ARGV[3]) >= tonumber(last_observed_at) then
  previous = redis.call('HGET', KEYS[1], 'balance') or ''
  local pending = bignum_or_zero(redis.call('HGET', KEYS[1], 'pending'))
  local balance = bignum_sub(bignum_parse(ARGV[2]), pending)
  redis.call('HSET', KEYS[1], 'balance', bignum_tostring(balance), 'pending', bignum_tostring(pending),
    'syncedAt', ARGV[3], 'observedAt', ARGV[3])
  applied = 1
end
return { applied, balance_view(KEYS[1]), previous }
