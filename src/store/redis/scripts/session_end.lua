-- KEYS: session, lease, checkpoint, hold. ARGV: sequence, sequence + 1
-- (empty for an abort), session TTL (ms), changes channel, session name,
-- hold (ms, aborts). Publishes the session's name when its lease ended or
-- it moved, and another worker may wait for it: a later number was
-- reported early (`early`/`latest` above `next`), or the session is held
-- (a busy number, or a retry, comes back).
local r = redis.call('HMGET', KEYS[1], 'next', 'early', 'latest')
local changed = false
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  changed = true
end
if not r[1] then return 0 end
local held = redis.call('GET', KEYS[4])
local waited = held or (r[2] and cmp(r[2], r[1]) > 0) or (r[3] and cmp(r[3], r[1]) > 0)
local waits_for_it = r[1] == ARGV[1]
if ARGV[2] ~= '' then
  if waits_for_it then
    redis.call('HSET', KEYS[1], 'next', ARGV[2])
    changed = true
  end
  if held == ARGV[1] then redis.call('DEL', KEYS[4]) end
elseif waits_for_it and tonumber(ARGV[6]) > 0 and redis.call('PTTL', KEYS[4]) < tonumber(ARGV[6]) then
  redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[6])
end
touch(ARGV[3])
if changed and waited then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
