-- KEYS: lease. ARGV: sequence, lease (ms). Extends the session's lease
-- only if it is still held for this number; returns 1 if it was.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
