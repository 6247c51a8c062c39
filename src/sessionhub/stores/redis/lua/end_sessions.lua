-- End every session of one user but one. KEYS[1] the user's index. ARGV:
-- shard, now, reason, digest to keep ('' for none), maxlen, anonymous.
-- Returns { number ended, their digests, events }.
local b = books(KEYS[1])
local opts = { maxlen = tonumber(ARGV[5]), anonymous = ARGV[6] }
local ended = {}
for _, digest in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if digest ~= ARGV[4] and finish(b, opts, ARGV[1], digest, tonumber(ARGV[2]), ARGV[3]) then
    ended[#ended + 1] = digest
  end
end
settle(b, KEYS[1])
return { #ended, ended, events }
