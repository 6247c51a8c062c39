-- End every session of one user but one. KEYS[1] the user's index, KEYS[2]
-- its shard's schedule, KEYS[3] its shard's stream, then the records of the
-- sessions in the index (the client read it first; a session that joined
-- since is asked for with need()). ARGV: shard, now, reason, digest to keep
-- ('' for none), maxlen, anonymous.
-- Returns { number ended, their digests, events }.
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local keys = {}
for i, digest in ipairs(members) do
  keys[i] = record_key(KEYS[1], digest)
end
local missing = undeclared(keys)
if #missing > 0 then
  return need(missing)
end
local opts = { maxlen = tonumber(ARGV[5]), anonymous = ARGV[6] }
local now = tonumber(ARGV[2])
local ending = {}
for i, digest in ipairs(members) do
  if digest ~= ARGV[4] then
    ending[#ending + 1] = { keys[i], get_record(keys[i]), digest }
  end
end
-- Checked: from here on, only writes.
local ended = {}
for _, entry in ipairs(ending) do
  if entry[2] then
    finish(entry[1], KEYS[2], KEYS[3], opts, ARGV[1], entry[2], now, ARGV[3])
    ended[#ended + 1] = entry[3]
  else
    redis.call('ZREM', KEYS[1], entry[3]) -- its record is gone already
  end
end
return { #ended, ended, events }
