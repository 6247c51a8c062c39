-- Store a new session unless its key exists; enter it in the books; report it.
-- KEYS[1] record, KEYS[2] its shard's schedule, KEYS[3] its shard's stream,
-- then, for a logged-in session, its user's index and, under a session limit,
-- the records of the sessions in that index. ARGV: handle, now, ttl, maxlen,
-- anonymous, limit ('' for none), limit policy, report ('1'; '' for the copy
-- a login's move across slots makes: hand_over.lua reports the move once it
-- is done), record.
-- Returns { 1 stored | 0 taken | -1 limit reached, {}, events }.
local blob = ARGV[9]
local existing = redis.call('GET', KEYS[1])
if existing then
  -- The same record: a retry of a create that succeeded.
  return { existing == blob and 1 or 0, {}, {} }
end
local index = index_of(KEYS[1], blob)
if index and not declared[index] then
  return need({ index })
end
local opts = { maxlen = tonumber(ARGV[4]), anonymous = ARGV[5] }
local handle, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local plan
if index and ARGV[6] ~= '' then
  local wanted
  plan, wanted = plan_room(KEYS[1], index, now, tonumber(ARGV[6]), ARGV[7])
  if not plan then
    return wanted
  elseif not plan.ok then
    return { -1, {}, {} }
  end
end
-- Checked: from here on, only writes.
if plan then
  make_room(plan, index, KEYS[2], KEYS[3], opts, string.sub(handle, 1, 1), now)
end
redis.call('SET', KEYS[1], blob, 'PX', ttl)
track(KEYS[1], KEYS[2], opts, blob, now, ttl)
if ARGV[8] == '1' then
  report(KEYS[3], opts, 'created', handle, now, blob, {})
  if index then
    report(KEYS[3], opts, 'authenticated', handle, now, blob, {})
  end
end
return { 1, {}, events }
