-- Merge a commit and move the session to a new key, in one step.
-- KEYS[1] old key, KEYS[2] new key; ARGV as for apply.lua.
local blob = redis.call('GET', KEYS[1])
if not blob then
  -- Gone, or this is a retry of a rotation that already happened.
  local moved = redis.call('GET', KEYS[2])
  if not moved then
    return false
  end
  local created, accessed, idle, deadline, version = header(moved)
  if not created then
    return false
  end
  return { fmt(created), fmt(accessed), fmt(idle), fmt(deadline), fmt(version) }
end
local merged, meta, ttl = merge(blob, tonumber(ARGV[1]), ARGV[2], ARGV[3], ARGV[4] == '1', 5)
if not merged then
  return redis.error_reply('SESSIONHUB malformed record')
end
redis.call('DEL', KEYS[1])
if ttl <= 0 then
  return false
end
redis.call('SET', KEYS[2], merged, 'PX', ttl)
return meta
