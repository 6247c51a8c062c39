-- Shared by the scripts below: the record format of sessionhub/record.py.
-- A record is "created accessed idle deadline version" then "\n"-separated
-- fields "name\tvalue". Times are milliseconds; Lua numbers are doubles, which
-- hold them exactly.

local function fmt(n)
  return string.format('%.0f', n)
end

-- Header values of a record, or nil if it is not one.
local function header(blob)
  local created, accessed, idle, deadline, version, body =
    string.match(blob, '^(%d+) (%d+) (%d+) (%d+) (%d+)\n?(.*)$')
  if not created then
    return nil
  end
  return tonumber(created), tonumber(accessed), tonumber(idle), tonumber(deadline),
    tonumber(version), body
end

-- Merge a commit into a record. ARGV from `first` on holds name/value pairs;
-- an empty value removes the field. Returns the new record and its header.
local function merge(blob, now, idle_arg, deadline_arg, clear, first)
  local created, _, idle, deadline, version, body = header(blob)
  if not created then
    return nil
  end
  if idle_arg ~= '' then idle = tonumber(idle_arg) end
  if deadline_arg ~= '' then deadline = tonumber(deadline_arg) end
  version = version + 1
  local changes = {}
  for i = first, #ARGV, 2 do
    changes[ARGV[i]] = ARGV[i + 1]
  end
  local lines = {}
  for line in string.gmatch(body, '[^\n]+') do
    local tab = string.find(line, '\t', 1, true)
    local name = tab and string.sub(line, 1, tab - 1) or line
    local change = changes[name]
    if change == nil then
      -- 33 is "!": metadata survives clear()
      if not clear or string.byte(name, 1) == 33 then
        lines[#lines + 1] = line
      end
    else
      if change ~= '' then
        lines[#lines + 1] = name .. '\t' .. change
      end
      changes[name] = false
    end
  end
  for i = first, #ARGV, 2 do
    local change = changes[ARGV[i]]
    if change and change ~= '' then
      lines[#lines + 1] = ARGV[i] .. '\t' .. change
      changes[ARGV[i]] = false
    end
  end
  local head = fmt(created) .. ' ' .. fmt(now) .. ' ' .. fmt(idle) .. ' ' .. fmt(deadline)
    .. ' ' .. fmt(version)
  if #lines > 0 then
    blob = head .. '\n' .. table.concat(lines, '\n')
  else
    blob = head
  end
  return blob, { fmt(created), fmt(now), fmt(idle), fmt(deadline), fmt(version) },
    math.min(now + idle, deadline) - now
end
