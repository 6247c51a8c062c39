-- Read a session and, when due, push its idle expiry forward (and its user
-- index's TTL with it: an index lives as long as its longest-lived session).
-- KEYS[1] session, KEYS[2] its user's index (a logged-in session's). ARGV[1]
-- now (ms); ARGV[2] refresh share of the idle timeout. A forward is returned
-- as it is: the client tells it from a record.
local raw = redis.call('GET', KEYS[1])
if forward_of(raw) then
  return raw
end
local blob = record_of(raw)
if not blob then
  return false
end
local created, accessed, idle, deadline, version, body = header(blob)
if not created then
  return blob -- not a record: the client rejects it and says so
end
local now = tonumber(ARGV[1])
if accessed < now and now - accessed >= idle * tonumber(ARGV[2]) then
  local ttl = math.min(now + idle, deadline) - now
  if ttl <= 0 then
    redis.call('DEL', KEYS[1])
    return false
  end
  local index = index_of(KEYS[1], blob)
  if index and not declared[index] then
    return need({ index })
  end
  blob = fmt(created) .. ' ' .. fmt(now) .. ' ' .. fmt(idle) .. ' ' .. fmt(deadline) .. ' '
    .. fmt(version) .. (body ~= '' and '\n' .. body or '')
  redis.call('SET', KEYS[1], blob, 'PX', ttl)
  if index then
    extend(index, ttl)
  end
end
return blob
