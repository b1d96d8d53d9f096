-- Lowers `pending` by what Dodo confirmed deducting, never below zero, once per deduction id:
-- a redelivered `credit.deducted` (its done-mark lost in a crash) must not lower it twice. The
-- id is remembered even with nothing pending, since usage settled later is not what it confirmed.
-- KEYS: balance, applied ids. ARGV: now, deductionId, amount, forgetAt, gcTtlMs.
if not apply_once(KEYS[2], 'deducted:' .. ARGV[2], ARGV[1], ARGV[4], ARGV[5]) then
  return 0
end
local pending = redis.call('HGET', KEYS[1], 'pending')
if not pending then
  return 1
end
local remaining = bignum_sub(bignum_parse(pending), bignum_parse(ARGV[3]))
if bignum_sign(remaining) < 0 then
  remaining = bignum_parse('0')
end
redis.call('HSET', KEYS[1], 'pending', bignum_tostring(remaining))
return 1
