-- KEYS: record. ARGV: window (ms) [, reply body, content type].
-- A record already done keeps its first reply; any other (claimed by
-- whoever, or gone) becomes done (a claim's token field stays: only a
-- claimed record's token counts).
if redis.call('HGET', KEYS[1], 'state') == 'done' then return 0 end
if #ARGV >= 3 then
  redis.call('HSET', KEYS[1], 'state', 'done', 'body', ARGV[2], 'type', ARGV[3])
else
  redis.call('HSET', KEYS[1], 'state', 'done')
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
