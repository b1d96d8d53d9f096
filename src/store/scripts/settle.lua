-- The end of one request, all or nothing and once per settlement id: releases the reservation,
-- moves `cost` from the balance view to `pending`, appends the usage events to this customer's
-- outbox shard (same hash tag, hence same slot) and adds the usage counters of each period
-- given (the billing period's, a key budget's).
-- `pending` grows even without a view: Dodo has not deducted this usage either, and the next
-- sync must subtract it.
-- KEYS: balance, reservation expiries, reservation amounts, applied ids, outbox ready,
--       outbox meta, outbox events, outbox sequence, outbox enqueued, usage period...
-- ARGV: now, settlementId, forgetAt, gcTtlMs, hasReservation ('1'|'0'), reservationId, cost,
--       eventCount, eventId, eventJson, ..., then per usage period key:
--       counterCount, usageExpiresAt, usageGcTtlMs, counterName, amount, ...
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

local event_count = tonumber(ARGV[8])
local index = 9
for _ = 1, event_count do
  outbox_append(KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], now, ARGV[index], ARGV[index + 1])
  index = index + 2
end

local reply = { 1, balance_view(KEYS[1]) }
for key_index = 10, #KEYS do
  local counter_count = tonumber(ARGV[index])
  local first = index + 3
  local last = first + 2 * counter_count - 1
  reply[#reply + 1] = usage_add(KEYS[key_index], now, ARGV[index + 1], ARGV[index + 2], ARGV, first, last)
  index = last + 1
end
return reply
