-- KEYS: session, lease, checkpoint, hold. ARGV: sequence, lease (ms),
-- session TTL (ms).
-- Returns {code, next}: 0 run, 1 early, 2 stale, 3 skipped, 4 busy (the
-- session is then held for the number for the lease).
local seq = ARGV[1]
local nxt = redis.call('HGET', KEYS[1], 'next')
if not nxt then
  nxt = '1'
  redis.call('HSET', KEYS[1], 'next', nxt)
end
touch(ARGV[3])
local c = cmp(seq, nxt)
if c < 0 then
  local gaps = redis.call('HGET', KEYS[1], 'gaps')
  if gaps then
    for from, to in string.gmatch(gaps, '(%d+)-(%d+)') do
      if cmp(from, seq) <= 0 and cmp(seq, to) < 0 then return {3, nxt} end
    end
  end
  return {2, nxt}
end
if c > 0 then
  local early = redis.call('HGET', KEYS[1], 'early')
  if not early or cmp(early, nxt) <= 0 or cmp(seq, early) < 0 then
    redis.call('HSET', KEYS[1], 'early', seq)
  end
  local latest = redis.call('HGET', KEYS[1], 'latest')
  if not latest or cmp(latest, nxt) <= 0 or cmp(seq, latest) > 0 then
    redis.call('HSET', KEYS[1], 'latest', seq)
  end
  return {1, nxt}
end
if redis.call('EXISTS', KEYS[2]) == 1 then
  if redis.call('PTTL', KEYS[4]) < tonumber(ARGV[2]) then
    redis.call('SET', KEYS[4], seq, 'PX', ARGV[2])
  end
  return {4, nxt}
end
redis.call('SET', KEYS[2], seq, 'PX', ARGV[2])
redis.call('DEL', KEYS[4])
return {0, nxt}
