-- Sets a customer's auto-recharge (threshold, amount, monthly limit as integer strings) or turns
-- it off (empty threshold). Either way failures are forgiven and a disabled customer is enabled
-- again; the month's total and an attempt in flight are kept: they are money already moving.
-- KEYS: auto-recharge. ARGV: threshold, amount, monthlyLimit.
if ARGV[1] == '' then
  if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
  end
  redis.call('HDEL', KEYS[1], 'th', 'am', 'li')
else
  redis.call('HSET', KEYS[1], 'th', ARGV[1], 'am', ARGV[2], 'li', ARGV[3])
end
redis.call('HSET', KEYS[1], 'fa', '0', 'di', '0')
return 1
