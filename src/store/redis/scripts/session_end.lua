-- KEYS: per session (a batch: one or more), its hash, lease, checkpoint
-- and hold keys. ARGV: per session, the sequence number, sequence + 1
-- (empty for an abort), the session TTL (ms), the changes channel, the
-- session's name and the hold (ms, aborts). Publishes the session's name
-- when its lease ended or it moved, and another worker may wait for it
-- (see `finish` in session_prelude.lua).
-- Returns per session 1, or 0 if the session is unknown.
local out = {}
for i = 1, #KEYS / 4 do
  local a = 6 * (i - 1)
  out[i] = finish(session_keys(i), ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6])
end
return out
