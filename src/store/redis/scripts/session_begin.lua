-- KEYS: per session (a batch: one or more), its hash, lease, checkpoint
-- and hold keys. ARGV: per session, the sequence number, the lease (ms)
-- and the session TTL (ms).
-- Returns per session {code, next}: 0 run, 1 early, 2 stale, 3 skipped,
-- 4 busy (the session is then held for the number for the lease).
local function begin(k, seq, lease, ttl)
  local nxt = redis.call('HGET', k[1], 'next')
  if not nxt then
    nxt = '1'
    redis.call('HSET', k[1], 'next', nxt)
    redis.call('PEXPIRE', k[1], ttl)
  end
  -- An existing session is kept alive by its turns' ends (`touch`).
  local c = cmp(seq, nxt)
  if c < 0 then
    local gaps = redis.call('HGET', k[1], 'gaps')
    if gaps then
      for from, to in string.gmatch(gaps, '(%d+)-(%d+)') do
        if cmp(from, seq) <= 0 and cmp(seq, to) < 0 then return {3, nxt} end
      end
    end
    return {2, nxt}
  end
  if c > 0 then
    local early = redis.call('HGET', k[1], 'early')
    if not early or cmp(early, nxt) <= 0 or cmp(seq, early) < 0 then
      redis.call('HSET', k[1], 'early', seq)
    end
    local latest = redis.call('HGET', k[1], 'latest')
    if not latest or cmp(latest, nxt) <= 0 or cmp(seq, latest) > 0 then
      redis.call('HSET', k[1], 'latest', seq)
    end
    return {1, nxt}
  end
  if redis.call('SET', k[2], seq, 'NX', 'PX', lease) then
    redis.call('DEL', k[4])
    return {0, nxt}
  end
  -- Leased by another delivery of it: busy.
  if redis.call('PTTL', k[4]) < tonumber(lease) then
    redis.call('SET', k[4], seq, 'PX', lease)
  end
  return {4, nxt}
end

local out = {}
for i = 1, #KEYS / 4 do
  local a = 3 * (i - 1)
  out[i] = begin(session_keys(i), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
return out
