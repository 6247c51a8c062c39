-- Report the sessions of one shard whose time has come. KEYS[1] the shard's
-- schedule, KEYS[2] its stream, then, for each entry the client found due,
-- its record and (a logged-in session's) its user's index. ARGV: shard, now,
-- maxlen, then the entries. An entry no longer due (or no longer there) is
-- left alone; a due record still in Redis (its expiry slid since it was
-- scheduled, or the clocks differ by a little) is looked at again when Redis
-- says it expires; a missing one has expired (deletions leave the schedule
-- at once): it is taken out of its user's index and reported. Each entry is
-- reported once: it leaves the schedule in the same step.
-- Returns { entries handled, {}, events }.
local opts = { maxlen = tonumber(ARGV[3]), anonymous = '1' }
local now = tonumber(ARGV[2])
local due = {}
for i = 4, #ARGV do
  local member = ARGV[i]
  local key = record_key(KEYS[1], string.sub(member, 1, DIGEST))
  local index = #member > DIGEST and index_key(KEYS[1], string.sub(member, DIGEST + 1, 2 * DIGEST))
  local wanted = undeclared({ key, index or key })
  if #wanted > 0 then
    return need(wanted)
  end
  local score = tonumber(redis.call('ZSCORE', KEYS[1], member))
  if score and score <= now then
    due[#due + 1] = { member, key, index, score, redis.call('PTTL', key) }
  end
end
-- Checked: from here on, only writes.
for _, entry in ipairs(due) do
  local member, key, index, expires, ttl = unpack(entry)
  if ttl > 0 then
    redis.call('ZADD', KEYS[1], now + ttl, member)
  else
    redis.call('ZREM', KEYS[1], member)
    if ttl ~= -1 then -- -1: a record without a TTL, made by someone else: not ours to report
      if ttl == 0 then
        redis.call('DEL', key) -- expiring this very millisecond
      end
      local fields = { 't', 'expired', 'h', ARGV[1] .. string.sub(member, 1, DIGEST),
        'at', fmt(now), 'x', fmt(expires) }
      if index then
        redis.call('ZREM', index, string.sub(member, 1, DIGEST))
        local principal = principal_text(string.sub(member, 2 * DIGEST + 1))
        if principal then
          fields[#fields + 1] = 'p'
          fields[#fields + 1] = principal
        end
      end
      emit(KEYS[2], opts, fields)
    end
  end
end
return { #due, {}, events }
