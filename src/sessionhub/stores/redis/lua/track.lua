-- Shared by the scripts that add, move, end and sweep sessions: the books kept
-- next to the records. Every key a script touches is one of its KEYS, as Redis
-- requires (a Cluster refuses the others, and checks the declared ones before
-- the script runs, so a slot that is half migrated stops the script before it
-- writes anything). A script names the keys it needs from the record key it
-- is given (same namespace, same hash tag, so the same Cluster slot):
--   <ns>:s:{tag}<digest>  a session record
--   <ns>:u:{tag}<user>    a user's index: zset of record digests, score = login time
--   <ns>:x:{tag}          the shard's expiry schedule: zset, score = expiry (ms)
--   <ns>:e:{tag}          the shard's event stream
-- and when one it needs was not declared, it writes nothing and answers
-- need(names): the client calls it again with those declared too. So every
-- script checks first and writes last.
-- A schedule member is the record's digest (22 characters), followed, for a
-- logged-in session, by its user digest (22) and principal (JSON): the sweep
-- can then report the session and clean its index once the record is gone.
-- Schedule scores may lag behind a session's expiry as it slides: the sweep
-- looks at a due record again and moves its entry to when Redis says it
-- expires. `opts` holds the store's event settings: maxlen (0: no stream) and
-- anonymous ('1': track and report sessions without a principal).

local DIGEST = 22

-- What a record key holds for a while after its session was ended by someone
-- else (limit, admin, the user elsewhere) shortly after it was created: a
-- retry of that create (its reply was lost) must find the key taken, not
-- bring the session back. And, for FORWARD_WINDOW ms after a rotation (a
-- login) moved its session to a new key: FORWARD and the new handle. A commit
-- of a request that loaded the session before the rotation follows it (the
-- client sends it again to the new key), so its changes land in the rotated
-- session; a read never does. Every script reads both as "no session here":
-- a record starts with a digit, these with "!".
local ENDED = '!'
local FORWARD = '!>'
local RETRY_WINDOW = 10000
-- FORWARD_WINDOW comes from sessionhub.stores.base (see scripts.py).

local declared = {}
for _, key in ipairs(KEYS) do
  declared[key] = true
end

-- The answer of a script that needs `names` declared too: it wrote nothing.
local function need(names)
  local reply = { '?' }
  for _, name in ipairs(names) do
    reply[#reply + 1] = name
  end
  return reply
end

-- Those of `names` that were not declared.
local function undeclared(names)
  local missing = {}
  for _, name in ipairs(names) do
    if not declared[name] then
      missing[#missing + 1] = name
    end
  end
  return missing
end

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

-- The digest a record key names.
local function digest_of(key)
  local _, _, digest = split_key(key)
  return digest
end

-- The name of a key of the same namespace and tag as `key`.
local function sibling(key, kind, rest)
  local ns, tag = split_key(key)
  return ns .. ':' .. kind .. ':{' .. tag .. '}' .. (rest or '')
end

local function record_key(key, digest)
  return sibling(key, 's', digest)
end

local function index_key(key, user)
  return sibling(key, 'u', user)
end

-- The value of metadata field `name` of a record, or nil.
local function field(blob, name)
  return string.match(blob, '\n' .. name .. '\t([^\n]*)')
end

-- The user index a record belongs to (a logged-in session's), or nil.
local function index_of(key, blob)
  local user = field(blob, '!u')
  return user and index_key(key, user)
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

local function emit(stream, opts, fields)
  if opts.maxlen > 0 then
    redis.call('XADD', stream, 'MAXLEN', '~', opts.maxlen, '*', unpack(fields))
  end
  events[#events + 1] = fields
end

-- Report an event about a record (nothing for an anonymous session, unless tracked).
local function report(stream, opts, kind, handle, now, blob, extra)
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
  emit(stream, opts, fields)
end

-- Enter a record stored at `key` in its user's index and in the schedule.
local function track(key, schedule, opts, blob, now, ttl)
  local member, user = member_of(digest_of(key), blob)
  if user then
    local index = index_key(key, user)
    local since = tonumber(field(blob, '!a') or '') or header(blob)
    redis.call('ZADD', index, since, digest_of(key))
    extend(index, ttl)
  elseif opts.anonymous ~= '1' then
    return
  end
  redis.call('ZADD', schedule, now + ttl, member)
end

-- Take the record stored at `key` out of the schedule and its user's index
-- (an index left empty goes with its last entry).
local function untrack(key, schedule, blob)
  local member, user = member_of(digest_of(key), blob)
  redis.call('ZREM', schedule, member)
  if user then
    redis.call('ZREM', index_key(key, user), digest_of(key))
  end
end

-- End the session whose record `blob` is at `key` on purpose: delete it,
-- untrack it, report why ('' reports nothing: the session lives on under
-- another key).
local function finish(key, schedule, stream, opts, shard, blob, now, reason)
  local created = header(blob)
  local age = now - (created or 0)
  if reason ~= 'logout' and reason ~= '' and age < RETRY_WINDOW then
    -- The creator may not have had its reply yet (a logout proves it had).
    redis.call('SET', key, ENDED, 'PX', RETRY_WINDOW - math.max(age, 0))
  else
    redis.call('DEL', key)
  end
  untrack(key, schedule, blob)
  if reason ~= '' then
    report(stream, opts, 'deleted', shard .. digest_of(key), now, blob, { 'r', reason })
  end
end

-- The sessions of an index, read (not changed) to make room for one more:
-- the live ones oldest first and the records of those to end, or need(...)
-- when some member's record key was not declared. `ok` is false when the
-- policy is to refuse and there is no room.
local function plan_room(key, index, now, max, policy)
  local members = redis.call('ZRANGE', index, 0, -1)
  local keys = {}
  for i, digest in ipairs(members) do
    keys[i] = record_key(key, digest)
  end
  local missing = undeclared(keys)
  if #missing > 0 then
    return nil, need(missing)
  end
  local live, gone = {}, {}
  for i, digest in ipairs(members) do
    local blob = get_record(keys[i])
    if blob then
      live[#live + 1] = { keys[i], blob }
    else
      gone[#gone + 1] = digest
    end
  end
  local excess = #live - max + 1
  if excess > 0 and policy == 'refuse' then
    return { ok = false }
  end
  local ending = {}
  for i = 1, math.max(excess, 0) do
    ending[i] = live[i]
  end
  return { ok = true, ending = ending, gone = gone }
end

-- Carry out a plan of plan_room's.
local function make_room(plan, index, schedule, stream, opts, shard, now)
  for _, digest in ipairs(plan.gone) do
    redis.call('ZREM', index, digest)
  end
  for _, entry in ipairs(plan.ending) do
    finish(entry[1], schedule, stream, opts, shard, entry[2], now, 'limit')
  end
end
