-- Shared by the scripts that add, move, end and sweep sessions: the books kept
-- next to the records. Every key below is named from a record key and keeps
-- its hash tag, so a script naming one stays in the slot of the key it was
-- called with (Cluster routes by that key):
--   <ns>:u:{tag}<user>  a user's index: zset of record digests, score = login time
--   <ns>:x:{tag}        the shard's expiry schedule: zset, score = expiry (ms)
--   <ns>:e:{tag}        the shard's event stream
-- A schedule member is the record's digest (22 characters), followed, for a
-- logged-in session, by its user digest (22) and principal (JSON): the sweep
-- can then report the session and clean its index once the record is gone.
-- `opts` holds the store's event settings: maxlen (0: no stream) and
-- anonymous ('1': track and report sessions without a principal).

local DIGEST = 22

-- What a record key holds for a while after its session was ended by someone
-- else (limit, admin, the user elsewhere) shortly after it was created: a
-- retry of that create (its reply was lost) must find the key taken, not
-- bring the session back. And, for FORWARD_WINDOW ms after a rotation (a
-- login) moved its session to a new key: FORWARD and the new handle. A commit
-- of a request that loaded the session before the rotation follows it (the
-- client sends it again to the new key: a script touches only its KEYS), so
-- its changes land in the rotated session; a read never does. Every script
-- reads both as "no session here": a record starts with a digit, these with "!".
local ENDED = '!'
local FORWARD = '!>'
local RETRY_WINDOW = 10000
-- FORWARD_WINDOW comes from sessionhub.stores.base (see scripts.py).

-- The record in a key's value, or nil (none, ended or forwarded).
local function record_of(raw)
  if raw and string.byte(raw, 1) == 33 then -- 33 is "!"
    return nil
  end
  return raw
end

-- The handle a forward in a key's value leads to, or nil.
local function forward_of(raw)
  if raw and string.sub(raw, 1, 2) == FORWARD then
    return string.sub(raw, 3)
  end
  return nil
end

-- The record at `key`, or nil (none, ended or forwarded).
local function get_record(key)
  return record_of(redis.call('GET', key))
end

local function split_key(key)
  return string.match(key, '^(.*):%a:{([^}]*)}(.*)$')
end

local function books(key)
  local ns, tag, rest = split_key(key)
  return {
    ns = ns,
    tag = tag,
    schedule = ns .. ':x:{' .. tag .. '}',
    stream = ns .. ':e:{' .. tag .. '}',
  }, rest
end

local function record_key(b, digest)
  return b.ns .. ':s:{' .. b.tag .. '}' .. digest
end

local function index_key(b, user)
  return b.ns .. ':u:{' .. b.tag .. '}' .. user
end

-- The value of metadata field `name` of a record, or nil.
local function field(blob, name)
  return string.match(blob, '\n' .. name .. '\t([^\n]*)')
end

local function principal_text(json)
  if not json or json == '' then
    return nil
  end
  local ok, value = pcall(cjson.decode, json)
  if ok and type(value) == 'string' then
    return value
  end
  return nil
end

-- The schedule member of a record, and its user digest if logged in.
local function member_of(digest, blob)
  local user = field(blob, '!u')
  if user then
    return digest .. user .. (field(blob, '!p') or ''), user
  end
  return digest, nil
end

-- Push a key's expiry out to at least `ttl` ms (a new key has none yet).
local function extend(key, ttl)
  if redis.call('PTTL', key) < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end

local events = {}

local function emit(b, opts, fields)
  if opts.maxlen > 0 then
    redis.call('XADD', b.stream, 'MAXLEN', '~', opts.maxlen, '*', unpack(fields))
  end
  events[#events + 1] = fields
end

-- Report an event about a record (nothing for an anonymous session, unless tracked).
local function report(b, opts, kind, handle, now, blob, extra)
  local principal = principal_text(field(blob, '!p'))
  if not principal and opts.anonymous ~= '1' then
    return
  end
  local fields = { 't', kind, 'h', handle, 'at', fmt(now) }
  if principal then
    fields[#fields + 1] = 'p'
    fields[#fields + 1] = principal
  end
  for _, value in ipairs(extra) do
    fields[#fields + 1] = value
  end
  local created, accessed, idle, deadline = header(blob)
  if created then
    fields[#fields + 1] = 'c'
    fields[#fields + 1] = fmt(created)
    fields[#fields + 1] = 'x'
    fields[#fields + 1] = fmt(math.min(accessed + idle, deadline))
  end
  emit(b, opts, fields)
end

-- Enter a stored record in its user's index and in the schedule.
local function track(b, opts, digest, blob, now, ttl)
  local member, user = member_of(digest, blob)
  if user then
    local index = index_key(b, user)
    local since = tonumber(field(blob, '!a') or '') or header(blob)
    redis.call('ZADD', index, since, digest)
    extend(index, ttl)
  elseif opts.anonymous ~= '1' then
    return
  end
  redis.call('ZADD', b.schedule, now + ttl, member)
end

-- A tracked record's expiry moved: follow it (a no-op for untracked ones).
local function retrack(b, digest, blob, now, ttl)
  local member, user = member_of(digest, blob)
  if user then
    extend(index_key(b, user), ttl)
  end
  redis.call('ZADD', b.schedule, 'XX', now + ttl, member)
end

-- Take a record out of the books; returns its user's index key, if any.
local function untrack(b, digest, blob)
  local member, user = member_of(digest, blob)
  redis.call('ZREM', b.schedule, member)
  if user then
    local index = index_key(b, user)
    redis.call('ZREM', index, digest)
    return index
  end
  return nil
end

-- After sessions left an index: drop entries whose record is gone, and let
-- the index live exactly as long as its longest-lived session.
local function settle(b, index)
  local longest = 0
  for _, digest in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    local ttl = redis.call('PTTL', record_key(b, digest))
    if ttl == -2 then
      redis.call('ZREM', index, digest)
    elseif ttl > longest then
      longest = ttl
    end
  end
  if longest > 0 then
    redis.call('PEXPIRE', index, longest)
  else
    redis.call('DEL', index)
  end
end

-- End one session on purpose: delete it, untrack it, report why ('' reports
-- nothing: the session lives on under another key). False if already gone.
local function finish(b, opts, shard, digest, now, reason)
  local key = record_key(b, digest)
  local blob = get_record(key)
  if not blob then
    return false, nil
  end
  local created = header(blob)
  local age = now - (created or 0)
  if reason ~= 'logout' and reason ~= '' and age < RETRY_WINDOW then
    -- The creator may not have had its reply yet (a logout proves it had).
    redis.call('SET', key, ENDED, 'PX', RETRY_WINDOW - math.max(age, 0))
  else
    redis.call('DEL', key)
  end
  local index = untrack(b, digest, blob)
  if reason ~= '' then
    report(b, opts, 'deleted', shard .. digest, now, blob, { 'r', reason })
  end
  return true, index
end

-- Make room in a user's index for one more session: end the oldest ones, or
-- return false when the policy is to refuse.
local function make_room(b, opts, shard, index, now, max, policy)
  local live = {}
  for _, digest in ipairs(redis.call('ZRANGE', index, 0, -1)) do
    if get_record(record_key(b, digest)) then
      live[#live + 1] = digest
    else
      redis.call('ZREM', index, digest)
    end
  end
  local excess = #live - max + 1
  if excess <= 0 then
    return true
  end
  if policy == 'refuse' then
    return false
  end
  for i = 1, excess do
    finish(b, opts, shard, live[i], now, 'limit')
  end
  settle(b, index)
  return true
end
