-- A key's budget with its current period's spend and what live requests hold against it, as
-- `admit.lua` counts them (read only: orphans are left for the next admission to drop).
-- KEYS: budgets, reservation expiries, limit holds.
-- ARGV: key, usagePrefix, month, day, now.
-- Returns {} when no budget is set, else { hard or '', soft or '', period, periodId, spent, held }.
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if not stored then
  return {}
end
local hard, soft, period = string.match(stored, '^([^|]*)|([^|]*)|([^|]*)$')
local period_id = period == 'day' and ARGV[4] or ARGV[3]
local period_key = ARGV[2] .. 'budget:' .. string.len(ARGV[1]) .. ':' .. ARGV[1] .. ':' .. period_id
local spent = bignum_parse('0')
local counted = redis.call('HMGET', period_key, 'c:cost', '@expiresAt')
if counted[2] and tonumber(counted[2]) > tonumber(ARGV[5]) then
  spent = bignum_or_zero(counted[1])
end
local held = bignum_parse('0')
local holds = redis.call('HGETALL', KEYS[3])
for position = 1, #holds, 2 do
  local expires_at = redis.call('ZSCORE', KEYS[2], holds[position])
  if expires_at and tonumber(expires_at) > tonumber(ARGV[5]) then
    for entry in string.gmatch(holds[position + 1], '[^\r]+') do
      local hold_period, hold_unit, hold_amount = string.match(entry, '^(.*)\n([^\n]*)\n([^\n]*)$')
      if hold_period == period_key and hold_unit == 'cost' then
        held = bignum_add(held, bignum_parse(hold_amount))
      end
    end
  end
end
return { hard, soft, period, period_id, bignum_tostring(spent), bignum_tostring(held) }
