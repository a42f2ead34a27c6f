-- KEYS: record. ARGV: token. Deletes the record only if this token still
-- holds the claim.
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] == 'claimed' and r[2] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
