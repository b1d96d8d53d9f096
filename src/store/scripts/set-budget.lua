-- Sets a key's budget (`<hard>|<soft>|<period>`, money as integer strings, '' for no limit), or
-- removes it with an empty value.
-- KEYS: budgets. ARGV: key, value.
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
return 1
