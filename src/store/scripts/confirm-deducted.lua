-- Lowers `pending` by what Dodo confirmed deducting, never below zero.
-- KEYS: balance. ARGV: amount.
local pending = redis.call('HGET', KEYS[1], 'pending')
if not pending then
  return 0
end
local remaining = bignum_sub(bignum_parse(pending), bignum_parse(ARGV[1]))
if remaining.sign < 0 then
  remaining = bignum_parse('0')
end
redis.call('HSET', KEYS[1], 'pending', bignum_tostring(remaining))
return 1
