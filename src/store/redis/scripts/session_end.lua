-- KEYS: session, lease, checkpoint, hold. ARGV: sequence, sequence + 1
-- (empty for an abort), session TTL (ms), changes channel, session name,
-- hold (ms, aborts). Publishes the session's name when its lease ended or
-- it moved.
local changed = false
if redis.call('GET', KEYS[2]) == ARGV[1] then
  redis.call('DEL', KEYS[2])
  changed = true
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local waits_for_it = (redis.call('HGET', KEYS[1], 'next') or '1') == ARGV[1]
if ARGV[2] ~= '' then
  if waits_for_it then
    redis.call('HSET', KEYS[1], 'next', ARGV[2])
    changed = true
  end
  if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('DEL', KEYS[4]) end
elseif waits_for_it and tonumber(ARGV[6]) > 0 and redis.call('PTTL', KEYS[4]) < tonumber(ARGV[6]) then
  redis.call('SET', KEYS[4], ARGV[1], 'PX', ARGV[6])
end
touch(ARGV[3])
if changed then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return 1
