-- Claims a webhook id for processing unless a live record says it is being processed or done.
-- The record is `<state>:<until>[:<token>]` with `until` on the store's clock; a claim carries
-- its caller's token, so only its own undo can delete it. PX is only garbage collection, longer
-- than the logical lifetime.
-- KEYS: webhook record. ARGV: now, processingUntil, gcTtlMs, token.
-- Returns 'claimed' | 'processing' | 'done'.
local record = redis.call('GET', KEYS[1])
if record then
  local state, live_until = string.match(record, '^(%a+):(%d+)')
  if state and tonumber(live_until) > tonumber(ARGV[1]) then
    return state
  end
end
redis.call('SET', KEYS[1], 'processing:' .. ARGV[2] .. ':' .. ARGV[4], 'PX', ARGV[3])
return 'claimed'
