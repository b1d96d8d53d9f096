-- A customer's subscriptions as `putSubscription` stores them (`<order>|<updatedAt>|<json>`),
-- and the usage counters of each one's current period. The period key follows
-- `subscriptionPeriod` (subscription-period.ts) and carries the customer's hash tag, so it lives
-- in the same slot as the customer's other keys.

-- { { record = <stored value>, subscription = <decoded json> }, … }
local function subscriptions_read(subscriptions_key)
  local list = {}
  for index, record in ipairs(redis.call('HVALS', subscriptions_key)) do
    list[index] = { record = record, subscription = cjson.decode(string.match(record, '^[^|]*|[^|]*|(.*)$')) }
  end
  return list
end

local function subscription_usage_key(usage_prefix, subscription)
  -- %.0f prints an integral double exactly, as JavaScript prints the same number.
  return usage_prefix .. 'subscription:' .. subscription.subscriptionId .. ':' .. string.format('%.0f', subscription.periodStart)
end

-- The profile reply of `customer-profile.lua` and `admit.lua`, from subscriptions already read.
local function profile_read(spend_key, subscriptions_key, usage_prefix, subscriptions)
  local spend = redis.call('HMGET', spend_key, 'spend', 'firstPaymentAt')
  local reply = {}
  for index, entry in ipairs(subscriptions) do
    local subscription = entry.subscription
    reply[index] = { entry.record, subscription.subscriptionId, redis.call('HGETALL', subscription_usage_key(usage_prefix, subscription)) }
  end
  return { spend[1] or '', spend[2] or '', reply }
end
