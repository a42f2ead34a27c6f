-- KEYS: per session (a batch: one or more), its hash, lease, checkpoint
-- and hold keys. ARGV: per session, the sequence number, the lease (ms)
-- and the session TTL (ms).
-- Returns per session {code, next}: 0 run, 1 early, 2 stale, 3 skipped,
-- 4 busy (the session is then held for the number for the lease).
local out = {}
for i = 1, #KEYS / 4 do
  local a = 3 * (i - 1)
  out[i] = begin(session_keys(i), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
end
return out
