-- End one session. KEYS[1] record, KEYS[2] its shard's schedule, KEYS[3] its
-- shard's stream, KEYS[4] its user's index (a logged-in session's). ARGV:
-- handle, now, reason ('' to end it without an event: the copy of a move
-- across slots that did not complete), maxlen, anonymous.
-- Returns { 1 ended | 0 already gone | 2 rotated: the handle it was rotated to, {}, events }.
local raw = redis.call('GET', KEYS[1])
local forward = forward_of(raw)
if forward then
  return { 2, forward, {} }
end
local blob = record_of(raw)
if not blob then
  return { 0, {}, {} }
end
local index = index_of(KEYS[1], blob)
if index and not declared[index] then
  return need({ index })
end
local opts = { maxlen = tonumber(ARGV[4]), anonymous = ARGV[5] }
finish(KEYS[1], KEYS[2], KEYS[3], opts, string.sub(ARGV[1], 1, 1), blob, tonumber(ARGV[2]), ARGV[3])
return { 1, {}, events }
