-- A customer's auto-recharge and its state in a month.
-- KEYS: auto-recharge. ARGV: month.
-- Returns {} when off, else { threshold, amount, limit, recharged, failures, disabled,
-- attemptId or '', attemptAmount or '', leaseUntil or '' }.
local f = redis.call('HMGET', KEYS[1], 'th', 'am', 'li', 'mo', 're', 'fa', 'di', 'at', 'aa', 'lu')
if not f[1] then
  return {}
end
local recharged = (f[4] == ARGV[1] and f[5]) or '0'
return { f[1], f[2], f[3], recharged, f[6] or '0', f[7] or '0', f[8] or '', f[9] or '', f[10] or '' }
