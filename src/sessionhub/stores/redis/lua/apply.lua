-- Commit changes to an existing session; never recreate a missing one.
-- A session that timed out meanwhile stays in the schedule: the sweep reports it.
-- A session rotated meanwhile: returns the handle it was rotated to (the
-- client commits there).
-- KEYS[1] session, KEYS[2] its user's index (a logged-in session's). ARGV:
-- now, idle|'', deadline|'', clear '1'|'0', version read|'', the record as
-- the commit leaves it, its ttl, then name, value... While the stored version
-- is still the one the client read, the client's record is stored as it is
-- (returns 1): a merge costs more than everything else here. Otherwise the
-- changes are merged into the record as it is now (returns the merged header).
local raw = redis.call('GET', KEYS[1])
local forward = forward_of(raw)
if forward then
  return forward
end
local blob = record_of(raw)
if not blob then
  return false
end
local index = index_of(KEYS[1], blob)
if index and not declared[index] then
  return need({ index })
end
local now = tonumber(ARGV[1])
local stored, reply, ttl
if ARGV[5] ~= '' and string.match(blob, '^%d+ %d+ %d+ %d+ (%d+)') == ARGV[5] then
  stored, reply, ttl = ARGV[6], 1, tonumber(ARGV[7])
else
  stored, reply, ttl = merge(blob, now, ARGV[2], ARGV[3], ARGV[4] == '1', 8)
  if not stored then
    return redis.error_reply('SESSIONHUB malformed record')
  end
end
if ttl <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('SET', KEYS[1], stored, 'PX', ttl)
if index then
  extend(index, ttl)
end
return reply
