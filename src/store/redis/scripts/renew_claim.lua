-- KEYS: record. ARGV: token, lease (ms). Extends the claim only if this
-- token still holds it; returns 1 if it did.
local r = redis.call('HMGET', KEYS[1], 'state', 'token')
if r[1] == 'claimed' and r[2] == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
