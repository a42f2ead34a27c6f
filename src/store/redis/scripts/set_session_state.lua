-- KEYS: session, lease, checkpoint. ARGV: checkpoint, session TTL (ms).
-- Like any other write, it keeps the session alive (and starts it).
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
redis.call('HSETNX', KEYS[1], 'next', '1')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
