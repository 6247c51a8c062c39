-- The last step of a login that moves a session to another Cluster slot
-- (RedisCommands._move in store.py): end the old record if it is still the
-- version the move copied, and report the move. KEYS[1] the old record,
-- KEYS[2] its schedule, KEYS[3] its stream, KEYS[4] its user's index (a
-- logged-in session's). ARGV: old handle, now, version copied, new handle,
-- event ('authenticated' or 'rotated'), maxlen, anonymous, the new record
-- (for the event).
-- Returns { 1 done | 0 gone | 2 changed since copied, the record if changed
-- | 3 rotated by someone else, the handle it was rotated to, events }.
-- The old key then forwards to the new handle for FORWARD_WINDOW ms: a retry
-- of this step (its reply lost) finds its own move done, and the commits of
-- requests that loaded the session before the move follow it.
local raw = redis.call('GET', KEYS[1])
local forward = forward_of(raw)
if forward == ARGV[4] then
  return { 1, '', {} }
elseif forward then
  return { 3, forward, {} }
end
local blob = record_of(raw)
if not blob then
  return { 0, '', {} }
end
local _, _, _, _, version = header(blob)
if version ~= tonumber(ARGV[3]) then
  return { 2, blob, {} }
end
local index = index_of(KEYS[1], blob)
if index and not declared[index] then
  return need({ index })
end
redis.call('SET', KEYS[1], FORWARD .. ARGV[4], 'PX', FORWARD_WINDOW)
untrack(KEYS[1], KEYS[2], blob)
local opts = { maxlen = tonumber(ARGV[6]), anonymous = ARGV[7] }
report(KEYS[3], opts, ARGV[5], ARGV[4], tonumber(ARGV[2]), ARGV[8], { 'o', ARGV[1] })
return { 1, '', events }
