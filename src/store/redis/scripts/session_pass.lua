-- KEYS: per session (a batch: one or more), its hash, lease, checkpoint
-- and hold keys. ARGV: per session, the sequence number finished, the next
-- number, the lease (ms) for it, the session TTL (ms), the changes channel
-- and the session's name. Finishes the number and asks for the next one's
-- turn, as session_end.lua then session_begin.lua would.
-- Returns per session {code, next} as session_begin.lua.
local out = {}
for i = 1, #KEYS / 4 do
  local a = 6 * (i - 1)
  local k = session_keys(i)
  local seq, after, lease, ttl = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  finish(k, seq, after, ttl, ARGV[a + 5], ARGV[a + 6], '0')
  out[i] = begin(k, after, lease, ttl)
end
return out
