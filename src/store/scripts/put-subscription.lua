-- Stores a subscription's state unless a newer version (updatedAt) is stored: webhooks arrive
-- out of order and the newest wins. Values are `<order>|<updatedAt>|<json>`, where `order` is
-- the first-insertion position, so listing keeps insertion order whatever the hash encoding.
-- KEYS: subscriptions. ARGV: subscriptionId, updatedAt, json. Returns 1 when applied.
local current = redis.call('HGET', KEYS[1], ARGV[1])
local order
if current then
  local stored_order, stored_updated_at = string.match(current, '^(%d+)|([^|]+)|')
  if tonumber(stored_updated_at) > tonumber(ARGV[2]) then
    return 0
  end
  order = stored_order
else
  order = tostring(redis.call('HLEN', KEYS[1]) + 1)
end
redis.call('HSET', KEYS[1], ARGV[1], order .. '|' .. ARGV[2] .. '|' .. ARGV[3])
return 1
