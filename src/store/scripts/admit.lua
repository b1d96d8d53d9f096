-- A request's admission, all or nothing: duplicate id check, the customer's profile, the
-- subscription that covers the request and its hard cap, then the credit hold. Nothing is held
-- unless everything passes, so concurrent requests cannot pass the balance, nor the cap by more
-- than one request's estimate.
-- Every hold of the request lives under its id in the reservation expiry ZSET (the registry of
-- what is live); credits in the amount HASH, what it holds against limits (a hard cap, a key's
-- budget) in the limit-holds HASH, as `<period key>\n<unit>\n<amount>` entries joined by `\r`.
-- `settle` and `release` remove the id from the ZSET; limit holds left without their id are
-- orphans this script drops.
-- KEYS: balance, reservation expiries, reservation amounts, limit holds, applied ids, spend,
--       subscriptions, budgets.
-- ARGV: now, requestId, replace, readProfile, usagePrefix, expiresAt, gcTtlMs, hasCredits, min,
--       max, overdraft, estimatedTokens, estimatedCost, budgetKey ('' for none), budgetMonth,
--       budgetDay, statusCount, status…, planCount, then per plan: productId, chargeCredits,
--       capUnit ('' for none), capAmount, perSeat.
-- Returns { duplicate, profile, covering subscription's stored record or '', capped, credits,
--   budget }: duplicate '' | 'in_flight' | 'settled'; profile {} or as customer-profile.lua;
--   capped {} or { unit, used, limit }; credits {} or { 'ok', reserved, available, syncedAt } |
--   { 'insufficient', available, syncedAt } | { 'no_balance' }; budget {} or
--   { 'ok' | 'exceeded', used, hard or '', soft or '', period }.
local now = ARGV[1]
local request_id = ARGV[2]
reservations_prune(KEYS[1], KEYS[2], KEYS[3], now)
if ARGV[3] == '1' then
  reservation_remove(KEYS[1], KEYS[2], KEYS[3], request_id)
else
  if redis.call('ZSCORE', KEYS[2], request_id) then
    return { 'in_flight', {}, '', {}, {}, {} }
  end
  local forget_at = redis.call('ZSCORE', KEYS[5], 'settle:' .. request_id)
  if forget_at and tonumber(forget_at) > tonumber(now) then
    return { 'settled', {}, '', {}, {}, {} }
  end
end

local subscriptions = subscriptions_read(KEYS[7])
local profile = {}
if ARGV[4] == '1' then
  profile = profile_read(KEYS[6], KEYS[7], ARGV[5], subscriptions)
end

-- What a limit's period has settled and what requests in flight hold against it, dropping the
-- holds of requests no longer live as they are seen.
local function limit_used(period_key, unit)
  local used = bignum_parse('0')
  local counted = redis.call('HMGET', period_key, 'c:' .. unit, '@expiresAt')
  if counted[2] and tonumber(counted[2]) > tonumber(now) then
    used = bignum_or_zero(counted[1])
  end
  local holds = redis.call('HGETALL', KEYS[4])
  for position = 1, #holds, 2 do
    local holder = holds[position]
    if holder ~= request_id and redis.call('ZSCORE', KEYS[2], holder) then
      for entry in string.gmatch(holds[position + 1], '[^\r]+') do
        local hold_period, hold_unit, hold_amount = string.match(entry, '^(.*)\n([^\n]*)\n([^\n]*)$')
        if hold_period == period_key and hold_unit == unit then
          used = bignum_add(used, bignum_parse(hold_amount))
        end
      end
    elseif holder ~= request_id then
      redis.call('HDEL', KEYS[4], holder)
    end
  end
  return used
end

local index = 17
local statuses = {}
for _ = 1, tonumber(ARGV[index]) do
  index = index + 1
  statuses[ARGV[index]] = true
end
index = index + 1
local plans = {}
for _ = 1, tonumber(ARGV[index]) do
  plans[ARGV[index + 1]] = {
    charge_credits = ARGV[index + 2] == '1',
    cap_unit = ARGV[index + 3],
    cap_amount = ARGV[index + 4],
    per_seat = ARGV[index + 5] == '1',
  }
  index = index + 5
end

-- The covering subscription: newest `updatedAt`, then the larger id (as coveringSubscription does).
local covering = nil
local covering_plan = nil
local covering_record = ''
for _, entry in ipairs(subscriptions) do
  local subscription = entry.subscription
  local plan = plans[subscription.productId]
  -- A grace period (`graceEndsAt`, a past_due subscription's deadline) counts until it ends.
  local in_grace = subscription.graceEndsAt == nil or tonumber(subscription.graceEndsAt) > tonumber(now)
  if plan and statuses[subscription.status] and in_grace then
    if not covering or subscription.updatedAt > covering.updatedAt
      or (subscription.updatedAt == covering.updatedAt and subscription.subscriptionId > covering.subscriptionId) then
      covering = subscription
      covering_plan = plan
      covering_record = entry.record
    end
  end
end

local limit_holds = {}
local charge_credits = true
if covering then
  charge_credits = covering_plan.charge_credits
  if covering_plan.cap_unit ~= '' then
    local unit = covering_plan.cap_unit
    local period_key = subscription_usage_key(ARGV[5], covering)
    local limit = bignum_parse(covering_plan.cap_amount)
    if covering_plan.per_seat and tonumber(covering.quantity) > 1 then
      limit = bignum_mul_small(limit, math.floor(tonumber(covering.quantity)))
    end
    local used = limit_used(period_key, unit)
    -- Refused once what is used and held reaches the cap: admitted requests can pass it by no
    -- more than one request's estimate, and concurrent ones see each other's holds.
    local amount = unit == 'tokens' and ARGV[12] or ARGV[13]
    if bignum_cmp(used, limit) >= 0 then
      return { '', profile, covering_record, { unit, bignum_tostring(used), bignum_tostring(limit) }, {}, {} }
    end
    limit_holds[#limit_holds + 1] = period_key .. '\n' .. unit .. '\n' .. amount
  end
end

-- The key's budget, when the request names a key that has one (only requests that spend credits).
local budget = {}
if ARGV[14] ~= '' and charge_credits then
  local stored = redis.call('HGET', KEYS[8], ARGV[14])
  if stored then
    local hard, soft, period = string.match(stored, '^([^|]*)|([^|]*)|([^|]*)$')
    local period_id = period == 'day' and ARGV[16] or ARGV[15]
    local period_key = ARGV[5] .. 'budget:' .. string.len(ARGV[14]) .. ':' .. ARGV[14] .. ':' .. period_id
    local used = limit_used(period_key, 'cost')
    local exceeded = hard ~= '' and bignum_cmp(used, bignum_parse(hard)) >= 0
    budget = { exceeded and 'exceeded' or 'ok', bignum_tostring(used), hard, soft, period_key }
    -- Refused once spent and held reach the hard limit: passed by no more than one request.
    if exceeded then
      return { '', profile, covering_record, {}, {}, budget }
    end
    limit_holds[#limit_holds + 1] = period_key .. '\ncost\n' .. ARGV[13]
  end
end

local credits = {}
local reserved = nil
if ARGV[8] == '1' and charge_credits then
  if redis.call('HEXISTS', KEYS[1], 'balance') == 0 then
    return { '', profile, covering_record, {}, { 'no_balance' }, budget }
  end
  local fields = redis.call('HMGET', KEYS[1], 'balance', 'reserved', 'syncedAt')
  local held = bignum_or_zero(fields[2])
  local available = bignum_sub(bignum_parse(fields[1]), held)
  local spendable = bignum_add(available, bignum_parse(ARGV[11]))
  local synced_at = fields[3] or '0'
  if bignum_sign(spendable) <= 0 or bignum_cmp(spendable, bignum_parse(ARGV[9])) < 0 then
    return { '', profile, covering_record, {}, { 'insufficient', bignum_tostring(available), synced_at }, budget }
  end
  reserved = bignum_parse(ARGV[10])
  if bignum_cmp(spendable, reserved) < 0 then
    reserved = spendable
  end
  redis.call('HSET', KEYS[3], request_id, bignum_tostring(reserved))
  redis.call('HSET', KEYS[1], 'reserved', bignum_tostring(bignum_add(held, reserved)))
  extend_expiry(KEYS[3], ARGV[7])
  credits = { 'ok', bignum_tostring(reserved), bignum_tostring(bignum_sub(available, reserved)), synced_at }
end

if reserved or #limit_holds > 0 then
  redis.call('ZADD', KEYS[2], ARGV[6], request_id)
  extend_expiry(KEYS[2], ARGV[7])
end
if #limit_holds > 0 then
  redis.call('HSET', KEYS[4], request_id, table.concat(limit_holds, '\r'))
  extend_expiry(KEYS[4], ARGV[7])
end
return { '', profile, covering_record, {}, credits, budget }
