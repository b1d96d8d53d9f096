-- Releases a reservation; 1 only when it was still live, so a double release changes nothing.
-- KEYS: balance, reservation expiries, reservation amounts. ARGV: now, reservationId.
reservations_prune(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
if reservation_remove(KEYS[1], KEYS[2], KEYS[3], ARGV[2]) then
  return 1
end
return 0
