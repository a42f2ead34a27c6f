-- KEYS: records (a batch: one or more). ARGV: per record, a fresh token
-- and the lease (ms). Claims each record in turn; returns per record
-- {code, has reply, body, content type}: 0 acquired, 1 in progress,
-- 2 done. (No `false` in replies: RESP3 would turn it into a boolean.)
local out = {}
for i = 1, #KEYS do
  local token, lease = ARGV[2 * i - 1], ARGV[2 * i]
  local r = redis.call('HMGET', KEYS[i], 'state', 'body', 'type')
  if r[1] == 'done' then
    if r[2] then out[i] = {2, 1, r[2], r[3] or ''} else out[i] = {2, 0, '', ''} end
  elseif r[1] then
    out[i] = {1, 0, '', ''}
  else
    redis.call('HSET', KEYS[i], 'state', 'claimed', 'token', token)
    redis.call('PEXPIRE', KEYS[i], lease)
    out[i] = {0, 0, '', ''}
  end
end
return out
