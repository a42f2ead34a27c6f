-- KEYS: record. ARGV: fresh token, lease (ms).
-- Returns {code, has reply, body, content type}: 0 acquired, 1 in progress,
-- 2 done. (No `false` in replies: RESP3 would turn it into a boolean.)
local r = redis.call('HMGET', KEYS[1], 'state', 'body', 'type')
if r[1] == 'done' then
  if r[2] then return {2, 1, r[2], r[3] or ''} end
  return {2, 0, '', ''}
end
if r[1] then return {1, 0, '', ''} end
redis.call('HSET', KEYS[1], 'state', 'claimed', 'token', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {0, 0, '', ''}
