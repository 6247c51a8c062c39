-- Take, renew or give up a lease. KEYS[1] the lease. ARGV: token, ttl in ms
-- ('' gives the lease up). Returns 1 if `token` holds the lease now.
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == '' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
