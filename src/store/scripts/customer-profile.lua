-- A customer's profile in one read: lifetime spend, first payment date, subscriptions, and the
-- usage counters of each subscription's current period. The period keys are built here rather
-- than passed in because which periods are current is only known once the subscriptions are
-- read; they follow `subscriptionPeriod` (subscription-period.ts) and carry the customer's hash
-- tag, so they live in the same slot as KEYS.
-- KEYS: spend, subscriptions. ARGV: the customer's usage key prefix.
-- Returns { spend or '', firstPaymentAt or '', { { record, subscriptionId, usage fields (HGETALL) }, … } }.
local spend = redis.call('HMGET', KEYS[1], 'spend', 'firstPaymentAt')
local subscriptions = {}
for index, record in ipairs(redis.call('HVALS', KEYS[2])) do
  local subscription = cjson.decode(string.match(record, '^[^|]*|[^|]*|(.*)$'))
  -- %.0f prints an integral double exactly, as JavaScript prints the same number.
  local period = 'subscription:' .. subscription.subscriptionId .. ':' .. string.format('%.0f', subscription.periodStart)
  subscriptions[index] = { record, subscription.subscriptionId, redis.call('HGETALL', ARGV[1] .. period) }
end
return { spend[1] or '', spend[2] or '', subscriptions }
