-- Records the customer's last top-up in their balance hash, unless a newer one is recorded: the
-- greater time, then the greater ledger entry id, wins, so retried or out-of-order webhooks leave
-- the same answer whichever process applies them. `balance_view` reports its amount.
-- KEYS: balance. ARGV: topUpId, amount, at. Returns 1 when applied, else 0.
-- Ids are compared byte by byte (UTF-8), as MemoryStore does: Lua's `<` on strings follows the
-- server's collation locale.
local function bytes_greater(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x > y
    end
  end
  return #a > #b
end

local fields = redis.call('HMGET', KEYS[1], 'topUpAt', 'topUpId')
local at = tonumber(ARGV[3])
if fields[1] then
  local last_at = tonumber(fields[1])
  if at < last_at or (at == last_at and not bytes_greater(ARGV[1], fields[2] or '')) then
    return 0
  end
end
redis.call('HSET', KEYS[1], 'topUp', ARGV[2], 'topUpAt', ARGV[3], 'topUpId', ARGV[1])
return 1
