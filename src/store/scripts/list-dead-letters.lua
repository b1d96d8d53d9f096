-- The `limit` oldest dead-letter records of one shard, oldest first. Read-only.
-- KEYS: dead order, dead records. ARGV: limit. Returns record JSON strings.
local members = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
local records = {}
for _, member in ipairs(members) do
  local record = redis.call('HGET', KEYS[2], outbox_event_id(member))
  if record then
    records[#records + 1] = record
  end
end
return records
