-- Undoes a reserve or an admission whose call was abandoned at its deadline (see
-- redis-calls.ts): releases what the request holds only if it is still what that call made, with
-- its expiry (and its amount, when the caller knows it), so an undo that runs late, or twice,
-- never releases a later hold under the same id. A cap hold left without its id is an orphan
-- admit.lua drops.
-- KEYS: balance, reservation expiries, reservation amounts.
-- ARGV: now, reservationId, expiresAt, amount ('' for any). Returns 1 when it released, else 0.
reservations_prune(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
local expires_at = redis.call('ZSCORE', KEYS[2], ARGV[2])
local amount = redis.call('HGET', KEYS[3], ARGV[2])
if not expires_at or tonumber(expires_at) ~= tonumber(ARGV[3]) or (ARGV[4] ~= '' and amount ~= ARGV[4]) then
  return 0
end
reservation_remove(KEYS[1], KEYS[2], KEYS[3], ARGV[2])
return 1
