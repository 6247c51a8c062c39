-- Store a new session unless its key exists; enter it in the books; report it.
-- KEYS[1] record. ARGV: handle, now, ttl, maxlen, anonymous, limit ('' for
-- none), limit policy, report ('1'; '' for the copy a login's move across
-- slots makes: hand_over.lua reports the move once it is done), record.
-- Returns { 1 stored | 0 taken | -1 limit reached, {}, events }.
local blob = ARGV[9]
local existing = redis.call('GET', KEYS[1])
if existing then
  -- The same record: a retry of a create that succeeded.
  return { existing == blob and 1 or 0, {}, {} }
end
local b, digest = books(KEYS[1])
local opts = { maxlen = tonumber(ARGV[4]), anonymous = ARGV[5] }
local handle, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local user = field(blob, '!u')
if user and ARGV[6] ~= '' then
  local index = index_key(b, user)
  if not make_room(b, opts, string.sub(handle, 1, 1), index, now, tonumber(ARGV[6]), ARGV[7]) then
    return { -1, {}, events }
  end
end
redis.call('SET', KEYS[1], blob, 'PX', ttl)
track(b, opts, digest, blob, now, ttl)
if ARGV[8] == '1' then
  report(b, opts, 'created', handle, now, blob, {})
  if user then
    report(b, opts, 'authenticated', handle, now, blob, {})
  end
end
return { 1, {}, events }
