-- Subtracts a refund (or lost dispute) from lifetime spend once per refund id.
-- KEYS: spend, applied spend ids. ARGV: refundId, amount.
-- Returns { applied (0|1), spend, firstPaymentAt ('' when none) }.
local applied = redis.call('SADD', KEYS[2], 'refund:' .. ARGV[1])
if applied == 1 then
  local spend = bignum_or_zero(redis.call('HGET', KEYS[1], 'spend'))
  redis.call('HSET', KEYS[1], 'spend', bignum_tostring(bignum_sub(spend, bignum_parse(ARGV[2]))))
end
local fields = redis.call('HMGET', KEYS[1], 'spend', 'firstPaymentAt')
return { applied, fields[1] or '0', fields[2] or '' }
