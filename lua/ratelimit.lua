--[[
mod_redis_ratelimit: decide every limit of one request phase atomically,
for each request of a batch (the calls one child had queued for a node).
All limits are checked first; only when every one allows is anything
written, so a denied request spends nothing.  The arithmetic is the module's
rrl_algo_decide() (src/rrl_algo.c), line for line, in integer microseconds
(every value stays below 2^53, so Lua's doubles hold it exactly).

The requests of a batch, each decided as if alone, in turn (one sees what
those before it wrote), at one clock; a request alone is a batch of one:

KEYS      each request's, in turn: the keys of its n limits, then the plan
          keys some of them name (PREFIX plan/[VHOST:]...)
ARGV[1]   now in microseconds; empty: Redis TIME (the module always sends
          empty; the shared test vectors pass their own clock)
ARGV[2]   the number of requests
then per request: its number of limits n, then for limit i of it, 10:
          algorithm (0 gcra, 1 token-bucket, 2 fixed-window,
          3 sliding-window), count, period (us), burst, interval (us, the
          refill time of one unit), unit (us, sliding-window granularity),
          cost, mode (0 check and spend, 1 give back a spend: count=, at
          log time), until (mode 1: until when the spend mattered, its now
          + reset; else empty), plans (empty: the limit has no plans=;
          else the index of its plan key among the request's own KEYS
          (n + 1 for the first), read before deciding (plan(), below), or
          0: none to read; gcra then owes no more than its burst, whatever
          numbers spent before)
          A concurrency limit (RateLimitConcurrency): algorithm 4, count N,
          period its lease (us), interval and unit unused, cost 1, mode (0
          take a slot, 1 release it, 2 renew its lease), in until's place
          the slot's member, unique to its request; plans empty.
          Or, for a gcra limit without plans= that spends (mode 0, until
          and plans empty), what most requests send, 4: g, burst,
          interval, cost (fewer arguments: each costs Redis a string made
          and freed).

Stored values (strings; each written with PX no longer than it matters),
which say the algorithm that wrote them: gcra's is one number (so Redis
keeps it as an integer, the smallest encoding), the others' start with
their letter:
  gcra            "TAT"                   theoretical arrival time
  token-bucket    "t TOKENS TS"           tokens as of TS
  fixed-window    "f START COUNT"         START: of the window (us)
  sliding-window  "s START COUNT PREVIOUS"
A value of another algorithm (the limit's algorithm= changed, its name
kept) reads as no value, as do the two or three numbers the others wrote
before values carried their letter: the key starts afresh, as in the
local store.
A concurrency limit's key is a sorted set: a member per slot in use,
scored by its deadline (now + lease; renewed while the response goes on),
trimmed of expired members when a slot is taken, and kept (PEXPIRE) as
long as its longest lease.  A set under a rate's name, or a rate's value
under a concurrency limit's, also reads as nothing stored.

Reply: an entry per request, in order, each
       { all allowed (1/0), now (us),
         then for limit i: allowed (1/0), remaining, reset (us), retry (us),
         then for each limit that named a plan key, in order: what its plan
         said (0 no plan, 1 applied, 2 off, 3 does not parse or fit), and
         the count, period and burst it decided with (0 0 0 unless 1) }
       or an error entry (below), which fails that request alone.
A give-back is allowed; its reset is how long the value is kept now.
A slot taken has reset 0; a renewal's reset is the lease when the slot
was still held, 0 when its lease had run out (it is not taken again).
A limit whose plan is off is allowed and neither reads nor writes its key.
Plan keys are the operator's: read, never written.
A value of this algorithm the script cannot read is an error, never a
guess, as is a key of another type: that request's entry is an error
reply, "ERR rrl: item I: WHY", naming the limit by its place among the
request's limits, never the key (its value may be an API key), and nothing
of that request is written; the other requests are decided.

Two paths, one arithmetic: spend() decides the request most sites send
(every limit a gcra spend without plans=, on a gcra value or none) in few
steps; any other request, or a key holding anything else, goes to decide(),
whose code is made only in a call that needs it (each call runs the whole
script afresh, and builds whatever it defines).  Both spend with gcra() and
write with put().
]]

local floor = math.floor

-- floor(a / b) for integers below 2^53, whatever rounding a / b did
local function idiv(a, b)
  local q = floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

-- a stored number: digits, at most 2^53 (what a double holds exactly)
local function num(s)
  if s and #s <= 16 then
    local v = s + 0           -- digits (the caller matched them)
    if v <= 9007199254740992 then
      return v
    end
  end
  return nil
end

local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = t[1] * 1000000 + t[2]          -- two strings, as numbers
end

-- a rate's value, kept as long as it matters (ttl us): gone when that is
-- already over
local function put(key, value, ttl)
  if ttl > 0 then
    redis.call('SET', key, value, 'PX',
               string.format('%d', idiv(ttl + 999, 1000)))
  else
    redis.call('DEL', key)
  end
end

-- a limit's entry in its request's reply, after the r entries there: the
-- reply's length then
local function answer(reply, r, allowed, remaining, reset, retry)
  reply[r + 1] = allowed and 1 or 0
  reply[r + 2] = remaining
  reply[r + 3] = reset
  reply[r + 4] = retry
  return r + 4
end

-- gcra's spend of cost from base (the TAT, or now when it is past): allowed,
-- the TAT a spend leaves, remaining, reset and retry (rrl_gcra)
local function gcra(base, tau, T, cost)
  local want, retry = base + cost * T, 0
  local allowed = want - now <= tau
  if allowed then
    base = want
  else
    retry = want - now - tau
  end
  local remaining = 0
  if tau - (base - now) > 0 then
    remaining = idiv(tau - (base - now), T)
  end
  return allowed, want, remaining, base - now, retry
end

-- The rest: every algorithm, mode, plan and concurrency limit, and the
-- errors; made by the first request spend() hands over.  The whole script
-- runs afresh for every call, and most calls need none of this.
local decide = nil

local function general()
  -- each algorithm's value's shape, and who wrote a value: an algorithm,
  -- -1 (an older version's token-bucket, fixed- or sliding-window), or nil
  local SHAPE = { [0] = '^(%d+)$', '^t (%d+) (%d+)$', '^f (%d+) (%d+)$',
                  '^s (%d+) (%d+) (%d+)$' }
  local LETTER = { t = 1, f = 2, s = 3 }

  local function writer(state)
    if string.match(state, '^%d+$') then
      return 0
    end
    return LETTER[string.match(state, '^([tfs]) ') or '']
           or (string.match(state, '^%d+ %d+ ?%d*$') and -1)
  end

  -- plans=redis: the plan of a limit, the value of its plan key: "off", or
  -- RATE and at most one burst=N, words separated by spaces or tabs; RATE
  -- and the checks as RateLimit's (rrl_algo_parse_plan, rrl_algo_parse_rate
  -- and rrl_algo_check_params in src/rrl_algo.c, which t/vectors.json holds
  -- this to).  Returns what it said (0 none, 1 applied, 2 off, 3 does not
  -- parse or fit the limit), then count, period, burst, T and U to decide
  -- with: the plan's when applied, else the directive's as given.

  -- the seconds of a RATE's unit; the table is made on the first plan read
  -- (the whole script runs afresh for every call, and most read no plan)
  local UNITS = nil
  local function seconds(unit)
    UNITS = UNITS or { s = 1, sec = 1, secs = 1, second = 1, seconds = 1,
                     m = 60, min = 60, mins = 60, minute = 60, minutes = 60,
                     h = 3600, hr = 3600, hour = 3600, hours = 3600,
                     d = 86400, day = 86400, days = 86400 }
    return UNITS[string.lower(unit)]
  end
  local MAX_SECONDS = 366 * 86400
  local MAX_UNITS = 2 ^ 50              -- RRL_MAX_UNITS, RRL_MAX_REFILL
  local MAX_PRODUCT = 2 ^ 52

  -- digits only, from lo to hi (rrl_util_parse_int)
  local function whole(s, lo, hi)
    local v = s and string.match(s, '^%d+$') and tonumber(s)
    if v and v >= lo and v <= hi then
      return v
    end
    return nil
  end

  local function rate(text)
    local ns, rest = string.match(text, '^([^/]*)/(.*)$')
    local n = whole(ns, 1, math.huge)
    if not n then
      return nil
    end
    local ms, unit = string.match(rest, '^(%d*)(.*)$')
    local mult, sec = 1, seconds(unit)
    if ms ~= '' then
      mult = whole(ms, 1, MAX_SECONDS)
    end
    if not mult or not sec or mult * sec > MAX_SECONDS then
      return nil
    end
    local period = mult * sec * 1000000
    if n > period then
      return nil                 -- more than 1,000,000 per second
    end
    return n, period
  end

  local function plan(key, alg, count, period, burst, T, U, cost)
    local v = redis.pcall('GET', key)
    if not v then
      return 0, count, period, burst, T, U
    elseif type(v) == 'table' then
      v = ''                     -- not a string (WRONGTYPE): does not parse
    end
    local words = {}
    for w in string.gmatch(v, '[^ \t]+') do
      words[#words + 1] = w
    end
    if #words == 1 and string.lower(words[1]) == 'off' then
      return 2, count, period, burst, T, U
    end
    local n, p = rate(words[1] or '')
    local b = nil
    if words[2] and string.lower(string.sub(words[2], 1, 6)) == 'burst=' then
      b = whole(string.sub(words[2], 7), 1, MAX_UNITS)
    end
    if not n or #words > 2 or (words[2] and not b)
       or (b and alg >= 2) then
      return 3, count, period, burst, T, U
    end
    local t, u = idiv(p + n - 1, n), 0
    b = b or n
    if alg <= 1 then
      if b > idiv(MAX_UNITS, t) or cost > b then
        return 3, count, period, burst, T, U
      end
    elseif cost > n then
      return 3, count, period, burst, T, U
    elseif alg == 3 then
      for _, unit in ipairs({ 1, 1000, 1000000 }) do
        if n <= idiv(MAX_PRODUCT, idiv(p, unit)) then
          u = unit
          break
        end
      end
      if u == 0 then
        return 3, count, period, burst, T, U
      end
    end
    return 1, n, p, b, t, u
  end

  -- token-bucket's tokens as of now, and since when the partial refill runs
  local function refill(state, s1, s2, burst, T)
    local tokens, ts = burst, now
    if state then
      tokens, ts = s1, s2
    end
    if now > ts and tokens < burst then
      local add = idiv(now - ts, T)
      if add >= burst - tokens then
        tokens = burst
      else
        tokens = tokens + add
        ts = ts + add * T
      end
    end
    if tokens >= burst then
      tokens = burst
      ts = now
    end
    return tokens, ts
  end

  -- how long a sliding window's state matters: to the end of the next
  -- window while this one has a count, else to the end of this one
  local function sw_left(w, curr, prev, period)
    local left = 0
    if curr > 0 then
      left = w + 2 * period - now
    elseif prev > 0 then
      left = w + period - now
    end
    return math.max(left, 0)
  end

  -- is key a sorted set (a concurrency limit's)?  After a WRONGTYPE error
  local function is_zset(key)
    return redis.call('TYPE', key).ok == 'zset'
  end

  -- a concurrency limit's slot (RateLimitConcurrency): take, release or
  -- renew it; its write, if any, and its reply
  local function concurrency(key, count, period, mode, member)
    local nows = string.format('%d', now)
    local live = redis.pcall('ZCOUNT', key, '(' .. nows, '+inf')
    local fresh = false
    if type(live) == 'table' then
      if redis.call('TYPE', key).ok ~= 'string' then
        return nil, nil, 'not a sorted set (WRONGTYPE)'
      end
      live, fresh = 0, true     -- a rate's value under this name
    end
    local deadline = string.format('%d', now + period)
    if mode == 0 then
      if live + 1 <= count then
        return { 1, count - live - 1, 0, 0 },
               { z = 'take', key = key, member = member, fresh = fresh,
                 deadline = deadline, period = period }
      end
      return { 0, count - live, 0, 1000000 }, nil
    end
    local score = (not fresh) and redis.call('ZSCORE', key, member)
    if mode == 1 then
      return { 1, 0, 0, 0 }, score and { z = 'release', key = key,
                                         member = member } or nil
    end
    if score and tonumber(score) > now then
      return { 1, 0, period, 0 }, { z = 'renew', key = key, member = member,
                                    deadline = deadline, period = period }
    end
    return { 1, 0, 0, 0 }, nil
  end

  -- keep a concurrency limit's set as long as its longest lease
  local function keep(key, period)
    local ms = idiv(period + 999, 1000)
    if redis.call('PTTL', key) < ms then
      redis.call('PEXPIRE', key, ms)
    end
  end

  -- one request's items, its KEYS from KEYS[kb + 1] and its item count at
  -- ARGV[a0]: checked all, then (all allowed) written all; its reply entry
  -- (or an error entry: nothing of it written), how many KEYS it has, and
  -- where the next request's ARGV start
  local function decide(kb, a0)
    local n = ARGV[a0] + 0
    -- sized for one item at once (most requests), the others' grow it
    local reply = n > 0 and { 1, now, 0, 0, 0, 0 } or { 1, now }
    local r = 2                 -- its length
    local plans, cuts = nil, nil          -- made when a limit needs them
    local writes = {}
    local all = true
    local m = n                 -- its KEYS: the items', then its plan keys
    local at, after = { a0 + 1 }, a0 + 1  -- each item's first ARGV, the end

    for i = 1, n do
      at[i] = after
      if ARGV[after] == 'g' then
        after = after + 4
      else
        local pf = ARGV[after + 9]
        local pk = pf ~= '' and tonumber(pf)
        if pk and pk > 0 then
          m = m + 1
        end
        after = after + 10
      end
    end

    for i = 1, n do
      local a = at[i]
      -- only the numbers this item's algorithm and mode use are converted,
      -- each with + 0 (one strtod; tonumber does two): gcra without plans=
      -- needs no count, period or unit, a concurrency limit no burst,
      -- interval or unit
      local alg, cost, mode, pf
      local count, period, burst, T, U, untl
      if ARGV[a] == 'g' then              -- the short form: a gcra spend
        alg, burst, T, cost, mode, pf =
          0, ARGV[a + 1] + 0, ARGV[a + 2] + 0, ARGV[a + 3] + 0, 0, ''
      else
        alg, cost = ARGV[a] + 0, ARGV[a + 6] + 0
        mode, pf = ARGV[a + 7] + 0, ARGV[a + 9]
        if alg ~= 0 or pf ~= '' then
          count, period = ARGV[a + 1] + 0, ARGV[a + 2] + 0
        end
        if alg ~= 4 then
          burst, T = ARGV[a + 3] + 0, ARGV[a + 4] + 0
          if alg == 3 or pf ~= '' then
            U = ARGV[a + 5] + 0
          end
          if mode == 1 then
            untl = ARGV[a + 8] + 0
          end
        end
      end
      local key = KEYS[kb + i]
      if alg == 4 then
        local got, w, why = concurrency(key, count, period, mode,
                                        ARGV[a + 8])
        if why then
          return { err = 'ERR rrl: item ' .. i .. ': ' .. why }, m, after
        end
        if got[1] == 0 then
          all = false
        end
        if w then
          writes[#writes + 1] = w
        end
        r = answer(reply, r, got[1] == 1, got[2], got[3], got[4])
      else
        local said, capped = 0, pf ~= ''
        local pk = capped and tonumber(pf)
        if pk and pk > 0 then
          said, count, period, burst, T, U =
            plan(KEYS[kb + pk], alg, count, period, burst, T, U, cost)
          plans = plans or {}
          plans[#plans + 1] = said
          plans[#plans + 1] = said == 1 and count or 0
          plans[#plans + 1] = said == 1 and period or 0
          plans[#plans + 1] = said == 1 and burst or 0
        end
        local state, bad = false, nil
        if said ~= 2 then
          state = redis.pcall('GET', key)
        end
        local s1, s2, s3
        if type(state) == 'table' then
          if is_zset(key) then
            state = false     -- a concurrency limit's set under this name
          else
            bad = 'not a string (WRONGTYPE)'
          end
        elseif state then
          local who = writer(state)
          if who == alg then
            local a1, a2, a3 = string.match(state, SHAPE[alg])
            s1, s2, s3 = num(a1), num(a2), num(a3)
            if not s1 or (alg ~= 0 and not s2) or (alg == 3 and not s3) then
              bad = 'unreadable state'
            end
          elseif who then
            state = false           -- another algorithm's: nothing stored
          else
            bad = 'unreadable state'
          end
        end
        if bad then
          return { err = 'ERR rrl: item ' .. i .. ': ' .. bad }, m, after
        end

        local allowed, remaining, reset, retry = false, 0, 0, 0
        local value, ttl = nil, 0

        if said == 2 then
          allowed = true    -- its plan is off: this limit does not apply
        elseif mode == 1 then
          -- give back what a spend took and still holds (rrl_*_back)
          allowed = true
          if alg == 0 then
            if state and s1 > now and untl > now then
              local v = s1 - math.min(cost * T, s1 - now, untl - now)
              value, ttl = string.format('%d', v), v - now
            end
          elseif alg == 1 then
            local tokens, ts = refill(state, s1, s2, burst, T)
            local owed = 0
            if tokens < burst then
              owed = (burst - tokens) * T - (now - ts)
            end
            local back = math.min(cost * T, owed, untl - now)
            if back > 0 then
              local left = owed - back
              local k = idiv(left + T - 1, T)
              value = string.format('t %d %d', burst - k, now - (k * T - left))
              ttl = left
            end
          elseif alg == 2 then
            if state and untl > now and s1 == untl - period and s2 > 0 then
              local c = s2 - math.min(cost, s2)
              value = string.format('f %d %d', s1, c)
              if c > 0 then
                ttl = untl - now
              end
            end
          elseif state and untl > now then
            local start = untl - 2 * period
            local curr, prev = s2, s3
            if s1 == start then
              curr = curr - math.min(cost, curr)
            elseif s1 == start + period then
              prev = prev - math.min(cost, prev)
            end
            if s1 == start or s1 == start + period then
              value = string.format('s %d %d %d', s1, curr, prev)
              ttl = sw_left(s1, curr, prev, period)
            end
          end
          if ttl > 0 then
            reset = ttl
          end

        elseif alg == 0 then
          -- gcra
          local tau = burst * T
          local base = now
          if state and s1 > now then
            base = s1
          end
          if capped and base - now > tau then
            -- plans=: spent under other numbers beyond what these hold: all of
            -- these spent, kept as such whatever is decided (rrl_gcra)
            base = now + tau
            cuts = cuts or {}
            cuts[#cuts + 1] = { key, string.format('%d', base), tau }
          end
          local want
          allowed, want, remaining, reset, retry = gcra(base, tau, T, cost)
          if allowed then
            value = string.format('%d', want)
            ttl = want - now
          end

        elseif alg == 1 then
          -- token-bucket
          local tokens, ts = refill(state, s1, s2, burst, T)
          allowed = tokens >= cost
          if allowed then
            tokens = tokens - cost
            value = string.format('t %d %d', tokens, ts)
          else
            retry = (cost - tokens) * T - (now - ts)
          end
          remaining = tokens
          if tokens < burst then
            reset = (burst - tokens) * T - (now - ts)
          end
          ttl = reset

        elseif alg == 2 then
          -- fixed-window
          local w, c = idiv(now, period) * period, 0
          if state and s1 >= w then
            w, c = s1, s2           -- a clock going back stays put
          end
          local stop = w + period
          allowed = c + cost <= count
          if allowed then
            c = c + cost
            value = string.format('f %d %d', w, c)
            ttl = stop - now
          else
            retry = stop - now
          end
          if count - c > 0 then
            remaining = count - c
          end
          if c > 0 then
            reset = stop - now
          end

        else
          -- sliding-window
          local PU = idiv(period, U)
          local w, curr, prev = idiv(now, period) * period, 0, 0
          if state then
            if s1 >= w then
              w, curr, prev = s1, s2, s3
            elseif s1 == w - period then
              prev = s2
            end
          end
          local e = now - w
          if e < 0 then
            e = 0
          end
          local weight = PU - idiv(e, U)
          local avail = idiv(count * PU - prev * weight, PU)
          allowed = curr + cost <= avail
          if allowed then
            curr = curr + cost
            value = string.format('s %d %d %d', w, curr, prev)
            ttl = w + 2 * period - now
          else
            local a2, at = count - curr - cost, 0
            if a2 >= 0 and prev > 0 and PU - idiv(a2 * PU, prev) < PU then
              at = w + (PU - idiv(a2 * PU, prev)) * U
            else
              local e2 = 0
              if curr > 0 then
                e2 = PU - idiv((count - cost) * PU, curr)
                if e2 < 0 then
                  e2 = 0
                end
              end
              at = w + period + e2 * U
            end
            retry = at - now
          end
          if avail - curr > 0 then
            remaining = avail - curr
          end
          reset = sw_left(w, curr, prev, period)
        end

        if not allowed then
          all = false
        end
        if value then
          writes[#writes + 1] = { key, value, ttl }
        end
        r = answer(reply, r, allowed, remaining, reset, retry)
      end
    end

    for _, w in ipairs(cuts or {}) do
      put(w[1], w[2], w[3])
    end
    if all then
      for _, w in ipairs(writes) do
        if w.z == 'take' then
          if w.fresh then
            redis.call('DEL', w.key)
          end
          redis.call('ZREMRANGEBYSCORE', w.key, '-inf',
                     string.format('%d', now))
          redis.call('ZADD', w.key, w.deadline, w.member)
          keep(w.key, w.period)
        elseif w.z == 'renew' then
          redis.call('ZADD', w.key, 'XX', w.deadline, w.member)
          keep(w.key, w.period)
        elseif w.z == 'release' then
          redis.call('ZREM', w.key, w.member)
        else
          put(w[1], w[2], w[3])
        end
      end
    else
      reply[1] = 0
    end
    for _, v in ipairs(plans or {}) do
      r = r + 1
      reply[r] = v
    end
    return reply, m, after
  end

  return decide
end

-- the request of make bench and of most sites: every limit a gcra spend
-- without plans= (its item in the short form, g), each key holding a gcra
-- value or nothing.  Decided as decide() does, in fewer steps; nil
-- (nothing written) when the request is another, or a key holds anything
-- else: decide() takes it then.
local function spend(kb, a0)
  local n = ARGV[a0] + 0
  local after = a0 + 1 + 4 * n
  for a = a0 + 1, after - 1, 4 do
    if ARGV[a] ~= 'g' then
      return nil
    end
  end
  local reply = n > 0 and { 1, now, 0, 0, 0, 0 } or { 1, now }
  local r, all, want = 2, true, { 0 }   -- sized for one limit
  for i = 1, n do
    local a = a0 + 4 * i - 3
    local base, state = now, redis.pcall('GET', KEYS[kb + i])
    if state then
      local s1 = type(state) == 'string' and string.find(state, '^%d+$')
                 and num(state)
      if not s1 then
        return nil
      elseif s1 > now then
        base = s1
      end
    end
    local T = ARGV[a + 2] + 0
    local allowed, w, remaining, reset, retry =
      gcra(base, (ARGV[a + 1] + 0) * T, T, ARGV[a + 3] + 0)
    if allowed then
      want[i] = w
    else
      all = false
    end
    r = answer(reply, r, allowed, remaining, reset, retry)
  end
  if not all then
    reply[1] = 0
    return reply, n, after
  end
  for i = 1, n do
    put(KEYS[kb + i], string.format('%d', want[i]), want[i] - now)
  end
  return reply, n, after
end

-- the requests in turn, each on what those before it wrote
local batch, kb, a0 = {}, 0, 3
for j = 1, tonumber(ARGV[2]) do
  local entry, m, after = spend(kb, a0)
  if not entry then
    decide = decide or general()
    entry, m, after = decide(kb, a0)
  end
  batch[j] = entry
  kb = kb + m
  a0 = after
end
return batch
