-- Reads the balance view after pruning expired reservations, so `reserved` is only live money.
-- KEYS: balance, reservation expiries, reservation amounts. ARGV: now.
reservations_prune(KEYS[1], KEYS[2], KEYS[3], ARGV[1])
return balance_view(KEYS[1])
