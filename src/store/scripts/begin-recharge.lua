-- Starts a recharge: one attempt per customer at a time (a lease), its amount counted in the
-- month's total in the same step, so no two attempts — in any process — can pass the monthly
-- limit together. A lapsed lease is taken again under the same attempt: its charge may have
-- reached Dodo, so the caller looks it up instead of charging anew.
-- KEYS: auto-recharge. ARGV: attemptId, available, month, leaseMs, now.
-- Returns { status, attemptId or recharged, amount or limit, first (0|1) }.
local f = redis.call('HMGET', KEYS[1], 'th', 'am', 'li', 'di', 'at', 'aa', 'lu', 'mo', 're', 'ln')
if not f[1] then
  return { 'off' }
end
if f[4] == '1' then
  return { 'disabled' }
end
if bignum_cmp(bignum_parse(ARGV[2]), bignum_parse(f[1])) >= 0 then
  return { 'above_threshold' }
end
local now = tonumber(ARGV[5])
local lease_until = now + tonumber(ARGV[4])
if f[5] then
  if tonumber(f[7]) > now then
    return { 'in_flight' }
  end
  redis.call('HSET', KEYS[1], 'lu', lease_until)
  return { 'resume', f[5], f[6] }
end
local cool_until = redis.call('HGET', KEYS[1], 'cu')
if cool_until and tonumber(cool_until) > now then
  return { 'cooling' }
end
local recharged = bignum_parse('0')
if f[8] == ARGV[3] then
  recharged = bignum_or_zero(f[9])
end
local after = bignum_add(recharged, bignum_parse(f[2]))
if bignum_cmp(after, bignum_parse(f[3])) > 0 then
  local first = 0
  if f[10] ~= ARGV[3] then
    first = 1
  end
  redis.call('HSET', KEYS[1], 'mo', ARGV[3], 're', bignum_tostring(recharged), 'ln', ARGV[3])
  return { 'monthly_limit', bignum_tostring(recharged), f[3], first }
end
redis.call('HSET', KEYS[1], 'mo', ARGV[3], 're', bignum_tostring(after), 'at', ARGV[1], 'aa', f[2],
  'amo', ARGV[3], 'lu', lease_until)
return { 'started', ARGV[1], f[2] }
