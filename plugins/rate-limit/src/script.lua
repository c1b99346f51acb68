-- weir rate-limit: one decision for every limit of one key, atomically, on
-- Redis's clock (microseconds). The arithmetic of src/algorithm.rs.
--
-- KEYS[i]   the state of limit i (GCRA: a string, the theoretical arrival
--           time; sliding window: a hash {w = window index, c = its count,
--           p = the previous window's count})
-- ARGV[1]   the most permits to grant
-- ARGV[2]   when none can be granted, the permits to time the retry for
-- ARGV[3]   1: grant at most half of what is left (leases)
-- then per limit i, ARGV[4 + 3(i-1) ..]:
--   kind    "g" (GCRA) or "w" (sliding window)
--   span    GCRA: microseconds between two tokens; window: its length
--   cap     GCRA: the burst; window: the quota
--
-- Replies {granted, retry_us, hold_us, remaining_1, reset_us_1, ...}:
-- hold_us is how long a node may keep granted permits unused (a lease).
if redis.replicate_commands then redis.replicate_commands() end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local want = tonumber(ARGV[1])
local wait_for = tonumber(ARGV[2])
local share = ARGV[3] == '1'

local limits = {}
local least = want
for i = 1, #KEYS do
  local at = 4 + (i - 1) * 3
  local l = { kind = ARGV[at], span = tonumber(ARGV[at + 1]), cap = tonumber(ARGV[at + 2]) }
  local room
  if l.kind == 'g' then
    local tat = tonumber(redis.call('GET', KEYS[i])) or now
    if tat < now then tat = now end
    l.tat = tat
    room = (l.cap * l.span - (tat - now)) / l.span
  else
    local w = math.floor(now / l.span)
    local v = redis.call('HMGET', KEYS[i], 'w', 'c', 'p')
    local sw, c, p = tonumber(v[1]), tonumber(v[2]) or 0, tonumber(v[3]) or 0
    if sw == w - 1 then p = c; c = 0 elseif sw ~= w then p = 0; c = 0 end
    l.w, l.c, l.p = w, c, p
    l.into = now - w * l.span
    room = l.cap - (p * (1 - l.into / l.span) + c)
  end
  if room <= 0 then l.avail = 0 else l.avail = math.floor(room + 1e-9) end
  if l.avail < least then least = l.avail end
  limits[i] = l
end

local granted = least
if share and granted > 0 then
  granted = math.min(granted, math.max(1, math.floor(least / 2)))
end

local reply = { granted, 0, 0 }
local retry, hold = 0, nil
for i = 1, #KEYS do
  local l = limits[i]
  local reset, wait, keep
  local need = math.min(wait_for, l.cap)
  if l.kind == 'g' then
    local tat = l.tat + granted * l.span
    if granted > 0 then
      redis.call('SET', KEYS[i], string.format('%.17g', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
    end
    reset = tat - now
    wait = tat + (need - l.cap) * l.span - now
    keep = granted * l.span
  else
    local c = l.c + granted
    if granted > 0 then
      redis.call('HSET', KEYS[i], 'w', l.w, 'c', c, 'p', l.p)
      redis.call('PEXPIRE', KEYS[i], math.ceil(2 * l.span / 1000) + 1000)
    end
    reset = l.span - l.into
    if c + need > l.cap then
      wait = l.span - l.into + l.span * math.max(0, 1 - (l.cap - need) / c)
    elseif l.p > 0 then
      wait = l.span * (1 - (l.cap - need - c) / l.p) - l.into
    else
      wait = 0
    end
    keep = l.span - l.into
  end
  if granted == 0 and wait > retry then retry = wait end
  if hold == nil or keep < hold then hold = keep end
  reply[3 + 2 * i - 1] = l.avail - granted
  reply[3 + 2 * i] = math.ceil(reset)
end
reply[2] = math.ceil(retry)
reply[3] = math.floor(hold or 0)
return reply
