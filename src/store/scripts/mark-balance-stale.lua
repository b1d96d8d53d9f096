-- Zeroes `syncedAt` of an existing view (keeping the view itself), so the next request refetches.
-- KEYS: balance.
if redis.call('HEXISTS', KEYS[1], 'balance') == 1 then
  redis.call('HSET', KEYS[1], 'syncedAt', '0')
end
return 1
