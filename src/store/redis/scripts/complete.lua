-- KEYS: records (a batch: one or more). ARGV: per record, the window
-- (ms), whether a reply is kept (1 or 0), the reply body and its content
-- type (both empty without a reply). A record already done keeps its
-- first reply; any other (claimed by whoever, or gone) becomes done (a
-- claim's token field stays: only a claimed record's token counts).
-- Returns per record 1 if it became done, 0 if it was done already.
local out = {}
for i = 1, #KEYS do
  local a = 4 * (i - 1)
  if redis.call('HGET', KEYS[i], 'state') == 'done' then
    out[i] = 0
  else
    if ARGV[a + 2] == '1' then
      redis.call('HSET', KEYS[i], 'state', 'done', 'body', ARGV[a + 3], 'type', ARGV[a + 4])
    else
      redis.call('HSET', KEYS[i], 'state', 'done')
    end
    redis.call('PEXPIRE', KEYS[i], ARGV[a + 1])
    out[i] = 1
  end
end
return out
