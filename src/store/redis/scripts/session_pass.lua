-- KEYS: per session (a batch: one or more), its hash, lease, checkpoint
-- and hold keys. ARGV: per session, the sequence number finished, the next
-- number, the lease (ms) for it, the session TTL (ms), the changes channel
-- and the session's name. Finishes the number and asks for the next one's
-- turn, as `finish` then `begin` would (session_prelude.lua).
-- Returns per session {code, next} as session_begin.lua.

-- The common case, the session waiting for `seq` with its lease held for
-- `seq` or run out, takes seven commands; anything else goes the long way.
local function pass(k, seq, after, lease, ttl, channel, name)
  local r = redis.call('HMGET', k[1], 'next', 'early', 'latest')
  local leased = r[1] == seq and redis.call('GET', k[2])
  if r[1] == seq and (not leased or leased == seq) then
    local held = redis.call('GET', k[4])
    redis.call('HSET', k[1], 'next', after)
    redis.call('SET', k[2], after, 'PX', lease)
    if held then redis.call('DEL', k[4]) end
    touch(k, ttl)
    if held or r[2] or r[3] then redis.call('PUBLISH', channel, name) end
    return {0, after}
  end
  finish(k, seq, after, ttl, channel, name, '0')
  return begin(k, after, lease, ttl)
end

local out = {}
for i = 1, #KEYS / 4 do
  local a = 6 * (i - 1)
  out[i] = pass(session_keys(i), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
end
return out
