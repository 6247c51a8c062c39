-- Merge a commit into an existing session; never recreate a missing one.
-- A session that timed out meanwhile stays in the schedule: the sweep reports it.
-- KEYS[1] session; ARGV: now, idle|'', deadline|'', clear '1'|'0', name, value...
local blob = get_record(KEYS[1])
if not blob then
  return false
end
local merged, meta, ttl = merge(blob, tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4] == '1', 5)
if not merged then
  return redis.error_reply('SESSIONHUB malformed record')
end
if ttl <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('SET', KEYS[1], merged, 'PX', ttl)
local b, digest = books(KEYS[1])
retrack(b, digest, merged, tonumber(ARGV[1]), ttl)
return meta
