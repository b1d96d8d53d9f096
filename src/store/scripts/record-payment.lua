-- Adds a payment to lifetime spend once per payment id; the first payment date is the earliest
-- `paidAt` seen (payments can arrive out of order).
-- KEYS: spend, applied spend ids. ARGV: paymentId, amount, paidAt.
-- Returns { applied (0|1), spend, firstPaymentAt ('' when none) }.
local applied = redis.call('SADD', KEYS[2], 'payment:' .. ARGV[1])
if applied == 1 then
  local fields = redis.call('HMGET', KEYS[1], 'spend', 'firstPaymentAt')
  redis.call('HSET', KEYS[1], 'spend', bignum_add_strings(fields[1], ARGV[2]))
  if not fields[2] or tonumber(ARGV[3]) < tonumber(fields[2]) then
    redis.call('HSET', KEYS[1], 'firstPaymentAt', ARGV[3])
  end
end
local fields = redis.call('HMGET', KEYS[1], 'spend', 'firstPaymentAt')
return { applied, fields[1] or '0', fields[2] or '' }
