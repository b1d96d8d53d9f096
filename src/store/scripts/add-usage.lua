-- Adds to one period's usage counters (exact beyond int64) and restarts an expired period.
-- KEYS: usage period. ARGV: now, expiresAt, gcTtlMs, counterName, amount, ...
usage_add(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV, 4, #ARGV)
return 1
