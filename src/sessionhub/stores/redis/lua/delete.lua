-- End one session. KEYS[1] record. ARGV: handle, now, reason ('' to end it
-- without an event: the copy of a move across slots that did not complete),
-- maxlen, anonymous.
-- Returns { 1 ended | 0 already gone | 2 rotated: the handle it was rotated to, ... }.
local forward = forward_of(redis.call('GET', KEYS[1]))
if forward then
  return { 2, forward, {} }
end
local b, digest = books(KEYS[1])
local opts = { maxlen = tonumber(ARGV[4]), anonymous = ARGV[5] }
local ended, index = finish(b, opts, string.sub(ARGV[1], 1, 1), digest, tonumber(ARGV[2]), ARGV[3])
if index then
  settle(b, index)
end
return { ended and 1 or 0, {}, events }
