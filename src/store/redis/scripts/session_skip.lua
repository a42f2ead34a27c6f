-- KEYS: session, lease, checkpoint, hold. ARGV: from, to, session TTL
-- (ms), gaps remembered, changes channel, session name. Returns 1 if the
-- session moved (and publishes its name).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if (redis.call('HGET', KEYS[1], 'next') or '1') ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 or redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'next', ARGV[2])
if cmp(ARGV[1], ARGV[2]) < 0 then
  local gaps = {}
  local old = redis.call('HGET', KEYS[1], 'gaps')
  if old then
    for gap in string.gmatch(old, '[^,]+') do gaps[#gaps + 1] = gap end
  end
  gaps[#gaps + 1] = ARGV[1] .. '-' .. ARGV[2]
  local first = math.max(1, #gaps - tonumber(ARGV[4]) + 1)
  redis.call('HSET', KEYS[1], 'gaps', table.concat(gaps, ',', first))
end
touch(session_keys(1), ARGV[3])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
