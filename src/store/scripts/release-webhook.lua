-- Gives up a processing claim so the next delivery runs again; a `done` record stays.
-- KEYS: webhook record.
local record = redis.call('GET', KEYS[1])
if record and string.sub(record, 1, 11) == 'processing:' then
  redis.call('DEL', KEYS[1])
end
return 1
