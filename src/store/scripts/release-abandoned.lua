-- Undoes a reserve whose call was abandoned at its deadline (see redis-calls.ts): releases the
-- reservation only if it is still the one that call made, with its expiry and its amount, so an
-- undo that runs late, or twice, never releases a later reservation under the same id.
-- KEYS: balance, reservation expiries, reservation amounts.
-- ARGV: now, reservationId, expiresAt, amount. Returns 1 when it released, else 0.
reservations_prune(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local expires_at = redis.call('ZSCORE', KEYS[2], ARGV[2])
local amount = redis.call('HGET', KEYS[3], ARGV[2])
if not expires_at or tonumber(expires_at) ~= tonumber(ARGV[3]) or amount ~= ARGV[4] then
  return 0
end
reservation_remove(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
return 1
