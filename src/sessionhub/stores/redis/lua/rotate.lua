-- Merge a commit and move the session to a new key, in one step; the old key
-- forwards to the new one for FORWARD_WINDOW ms.
-- KEYS[1] old record, KEYS[2] new record, KEYS[3] the old record's schedule,
-- KEYS[4] the new one's, KEYS[5] the new one's stream, then the user's index
-- (a logged-in session's) and, under a session limit, the records of the
-- sessions in it. ARGV: now, idle|'', deadline|'', clear, old handle, new
-- handle, maxlen, anonymous, limit ('' for none), limit policy, then
-- name/value pairs as for apply.lua. A change that sets the principal is a
-- login: it is checked against the limit and reported as 'authenticated'; a
-- login onto a session of another principal changes nothing.
-- Returns { 1 moved | 0 gone | -1 limit reached | -2 another principal's
-- | 2 rotated by someone else: the handle it was rotated to, meta, events }.
local raw = redis.call('GET', KEYS[1])
local forward = forward_of(raw)
if forward and forward ~= ARGV[6] then
  return { 2, forward, {} }
end
local blob = record_of(raw)
if not blob then
  -- Gone, or this is a retry of a rotation that already happened.
  local moved = get_record(KEYS[2])
  local created, accessed, idle, deadline, version = header(moved or '')
  if not created then
    return { 0, {}, {} }
  end
  return { 1, { fmt(created), fmt(accessed), fmt(idle), fmt(deadline), fmt(version) }, {} }
end
local login = nil
for i = 11, #ARGV, 2 do
  if ARGV[i] == '!p' and ARGV[i + 1] ~= '' then
    login = ARGV[i + 1]
  end
end
local bound = field(blob, '!p')
if login and bound and bound ~= login then
  return { -2, {}, {} }
end
local now = tonumber(ARGV[1])
local merged, meta, ttl = merge(blob, now, ARGV[2], ARGV[3], ARGV[4] == '1', 11)
if not merged then
  return redis.error_reply('SESSIONHUB malformed record')
end
if ttl <= 0 then
  -- Timed out meanwhile: left in the schedule, so the sweep reports it.
  redis.call('DEL', KEYS[1])
  return { 0, {}, {} }
end
local wanted = {}
local old_index = index_of(KEYS[1], blob)
local index = index_of(KEYS[2], merged)
for _, name in ipairs({ old_index or KEYS[1], index or KEYS[2] }) do
  if not declared[name] then
    wanted[#wanted + 1] = name
  end
end
if #wanted > 0 then
  return need(wanted)
end
local opts = { maxlen = tonumber(ARGV[7]), anonymous = ARGV[8] }
local plan
if login and index and ARGV[9] ~= '' then
  plan, wanted = plan_room(KEYS[2], index, now, tonumber(ARGV[9]), ARGV[10])
  if not plan then
    return wanted
  elseif not plan.ok then
    return { -1, {}, {} }
  end
end
-- Checked: from here on, only writes.
if plan then
  make_room(plan, index, KEYS[4], KEYS[5], opts, string.sub(ARGV[6], 1, 1), now)
end
redis.call('SET', KEYS[1], FORWARD .. ARGV[6], 'PX', FORWARD_WINDOW)
untrack(KEYS[1], KEYS[3], blob)
redis.call('SET', KEYS[2], merged, 'PX', ttl)
track(KEYS[2], KEYS[4], opts, merged, now, ttl)
report(KEYS[5], opts, login and 'authenticated' or 'rotated', ARGV[6], now, merged, { 'o', ARGV[5] })
return { 1, meta, events }
