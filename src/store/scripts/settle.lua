-- The end of one request, all or nothing and once per settlement id: releases the reservation,
-- moves `cost` from the balance view to `pending`, appends the usage events to this customer's
-- outbox shard (same hash tag, hence same slot) and adds the usage counters of each period
-- given (the billing period's, a key budget's), and marks the customer recently active in the
-- shard's bounded set (the most recent `recentMax` are kept) for the reconciliation job.
-- `pending` grows even without a view: Dodo has not deducted this usage either, and the next
-- sync must subtract it.
-- KEYS: balance, reservation expiries, reservation amounts, applied ids, outbox ready,
--       outbox meta, outbox events, outbox sequence, outbox enqueued, recent customers,
--       usage period...
-- ARGV: now, settlementId, forgetAt, gcTtlMs, hasReservation ('1'|'0'), reservationId, cost,
--       eventCount, customerId, recentMax, eventId, eventJson, ..., then per usage period key:
--       counterCount, usageExpiresAt, usageGcTtlMs, counterName, amount, ... (a counterCount of
--       -1 and no pairs: the previous period's counters again)
-- Returns { applied (0|1), view, costAfter... } (each usage period's `cost` counter after it).
local now = ARGV[1]
reservations_prune(KEYS[1], KEYS[2], KEYS[3], now)
if not apply_once(KEYS[4], 'settle:' .. ARGV[2], now, ARGV[3], ARGV[4]) then
  return { 0, balance_view(KEYS[1]) }
end
if ARGV[5] == '1' then
  reservation_remove(KEYS[1], KEYS[2], KEYS[3], ARGV[6])
end
local cost = bignum_parse(ARGV[7])
local fields = redis.call('HMGET', KEYS[1], 'balance', 'pending')
if fields[1] then
  redis.call('HSET', KEYS[1], 'balance', bignum_tostring(bignum_sub(bignum_parse(fields[1]), cost)))
end
redis.call('HSET', KEYS[1], 'pending', bignum_tostring(bignum_add(bignum_or_zero(fields[2]), cost)))

redis.call('ZADD', KEYS[10], now, ARGV[9])
local recent_max = tonumber(ARGV[10])
if redis.call('ZCARD', KEYS[10]) > recent_max then
  redis.call('ZREMRANGEBYRANK', KEYS[10], 0, -(recent_max + 1))
end

local event_count = tonumber(ARGV[8])
local index = 11
for _ = 1, event_count do
  outbox_append(KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], now, ARGV[index], ARGV[index + 1])
  index = index + 2
end

local reply = { 1, balance_view(KEYS[1]) }
local first, last = 0, -1
for key_index = 11, #KEYS do
  local counter_count = tonumber(ARGV[index])
  local header = index
  -- A count of -1: the same counters as the period before, not sent again.
  if counter_count >= 0 then
    first = index + 3
    last = first + 2 * counter_count - 1
    index = last + 1
  else
    index = index + 3
  end
  reply[#reply + 1] = usage_add(KEYS[key_index], now, ARGV[header + 1], ARGV[header + 2], ARGV, first, last)
end
return reply
