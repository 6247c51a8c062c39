-- Report the sessions of one shard whose time has come. KEYS[1] the shard's
-- schedule. ARGV: shard, now, batch, maxlen. A due record still in Redis (the
-- clocks differ by a little) is looked at again when Redis says it expires; a
-- missing one has expired (deletions leave the schedule at once): it is taken
-- out of its user's index and reported. Each entry is reported once: it
-- leaves the schedule in the same step. Returns { entries handled, {}, events }.
local b = books(KEYS[1])
local opts = { maxlen = tonumber(ARGV[4]), anonymous = '1' }
local now = tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[3])
for i = 1, #due, 2 do
  local member, expires = due[i], due[i + 1]
  local digest = string.sub(member, 1, DIGEST)
  local ttl = redis.call('PTTL', record_key(b, digest))
  if ttl > 0 then
    redis.call('ZADD', KEYS[1], now + ttl, member)
  else
    redis.call('ZREM', KEYS[1], member)
    if ttl ~= -1 then -- -1: a record without a TTL, made by someone else: not ours to report
      if ttl == 0 then
        redis.call('DEL', record_key(b, digest)) -- expiring this very millisecond
      end
      local fields = { 't', 'expired', 'h', ARGV[1] .. digest, 'at', fmt(now), 'x', expires }
      if #member > DIGEST then
        -- the index disappears with its last entry
        redis.call('ZREM', index_key(b, string.sub(member, DIGEST + 1, 2 * DIGEST)), digest)
        local principal = principal_text(string.sub(member, 2 * DIGEST + 1))
        if principal then
          fields[#fields + 1] = 'p'
          fields[#fields + 1] = principal
        end
      end
      emit(b, opts, fields)
    end
  end
end
return { #due / 2, {}, events }
