-- KEYS: per session (a batch: one or more), its hash, lease, checkpoint
-- and hold keys. ARGV: per session, the sequence number, sequence + 1
-- (empty for an abort), the session TTL (ms), the changes channel, the
-- session's name and the hold (ms, aborts). Publishes the session's name
-- when its lease ended or it moved, and another worker may wait for it: a
-- later number was reported early (`early`/`latest` above `next`), or the
-- session is held (a busy number, or a retry, comes back).
-- Returns per session 1, or 0 if the session is unknown.
local function finish(k, seq, after, ttl, channel, name, hold)
  local r = redis.call('HMGET', k[1], 'next', 'early', 'latest')
  local changed = false
  if redis.call('GET', k[2]) == seq then
    redis.call('DEL', k[2])
    changed = true
  end
  if not r[1] then return 0 end
  local held = redis.call('GET', k[4])
  local waited = held or (r[2] and cmp(r[2], r[1]) > 0) or (r[3] and cmp(r[3], r[1]) > 0)
  local waits_for_it = r[1] == seq
  if after ~= '' then
    if waits_for_it then
      redis.call('HSET', k[1], 'next', after)
      changed = true
    end
    if held == seq then redis.call('DEL', k[4]) end
  elseif waits_for_it and tonumber(hold) > 0 and redis.call('PTTL', k[4]) < tonumber(hold) then
    redis.call('SET', k[4], seq, 'PX', hold)
  end
  touch(k, ttl)
  if changed and waited then redis.call('PUBLISH', channel, name) end
  return 1
end

local out = {}
for i = 1, #KEYS / 4 do
  local a = 6 * (i - 1)
  out[i] = finish(session_keys(i), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
end
return out
