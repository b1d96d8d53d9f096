-- Ends the attempt holding the lease, once. A failure gives its amount back to the month it was
-- counted in (nothing was charged) and counts one failure; `requires_action` counts one failure
-- and keeps its amount (the customer may still complete the payment); `maxFailures` in a row
-- disable auto-recharge until it is set again.
-- A success starts a cooldown: a balance read before its credits landed must not start another.
-- KEYS: auto-recharge. ARGV: attemptId, outcome, maxFailures, now, cooldownMs.
-- Returns { applied (0|1), failures, disabled (0|1) }.
local f = redis.call('HMGET', KEYS[1], 'at', 'aa', 'amo', 'mo', 're', 'fa', 'di')
local failures = tonumber(f[6] or '0')
if f[1] ~= ARGV[1] then
  return { 0, failures, tonumber(f[7] or '0') }
end
redis.call('HDEL', KEYS[1], 'at', 'aa', 'amo', 'lu')
local disabled = tonumber(f[7] or '0')
if ARGV[2] == 'succeeded' then
  failures = 0
  redis.call('HSET', KEYS[1], 'cu', tonumber(ARGV[4]) + tonumber(ARGV[5]))
else
  if ARGV[2] == 'failed' and f[3] == f[4] then
    redis.call('HSET', KEYS[1], 're', bignum_tostring(bignum_sub(bignum_or_zero(f[5]), bignum_parse(f[2]))))
  end
  failures = failures + 1
  if failures >= tonumber(ARGV[3]) then
    disabled = 1
  end
end
redis.call('HSET', KEYS[1], 'fa', failures, 'di', disabled)
return { 1, failures, disabled }
