-- Records the customer's last top-up in their balance hash, unless a newer one is recorded: the
-- greater time, then the greater ledger entry id, wins, so retried or out-of-order webhooks leave
-- the same answer whichever process applies them. `balance_view` reports its amount.
-- KEYS: balance. ARGV: topUpId, amount, at. Returns 1 when applied, else 0.
local fields = redis.call('HMGET', KEYS[1], 'topUpAt', 'topUpId')
local at = tonumber(ARGV[3])
if fields[1] then
  local last_at = tonumber(fields[1])
  if at < last_at or (at == last_at and ARGV[1] <= (fields[2] or '')) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'topUp', ARGV[2], 'topUpAt', ARGV[3], 'topUpId', ARGV[1])
return 1
