-- The live sessions of one user, oldest login first. KEYS[1] the user's index.
-- Returns for each: digest, header line, auth time, client info ('' if none).
-- Entries whose record is gone are dropped on the way.
local b = books(KEYS[1])
local found, gone = {}, false
for _, digest in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local blob = get_record(record_key(b, digest))
  if blob then
    found[#found + 1] = {
      digest, string.match(blob, '^[^\n]*'), field(blob, '!a') or '', field(blob, '!c') or '',
    }
  else
    gone = true
  end
end
if gone then
  settle(b, KEYS[1])
end
return found
