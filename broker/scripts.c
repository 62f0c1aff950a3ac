/* scripts: see scripts.h. Conventions shared by all scripts:
 *   P = ARGV[1] (key prefix), batch meta hash  P..'b:'..id,
 *   jobs  P..'b:'..id..':jobs'  (index -> job payload, payload.h),
 *   att   P..'b:'..id..':att'   (index -> attempts leased so far, for jobs
 *         leased more than once: a job leased once has no entry),
 *   res   P..'b:'..id..':res'   (index -> 'S'|'F' .. output line),
 *   q     P..'b:'..id..':q'     (list of indices to run again),
 *   P..'leases'  zset member "id|index" (payload.h) -> lease deadline (unix ms),
 *   P..'delayed' zset "id|index" -> retry due time (unix ms),
 *   P..'batches' zset id -> created (unix s), P..'active' set of unfinished
 *   batches, P..'name:'..name -> id, P..'finished' zset id -> finished (unix
 *   s), P..'fetched' zset id -> first complete fetch of its results (unix s).
 * A job's payload and attempt count are removed once it has its final
 * result (forget_job): a finished batch keeps only its results.
 * A job is "leased" while it has a member in P..'leases'; the meta field
 * 'leased' counts them per batch and only changes together with that zset. */
#include "scripts.h"

#include "payload.h"

#include <stddef.h>

/* Helpers prepended to the scripts that need them. */
#define LQ_LUA_LIB                                                                                 \
    "local P = ARGV[1]\n" LQ_PAYLOAD_LUA                                                           \
    "local function unlease(m, member)\n"                                                          \
    "  if redis.call('ZREM', P..'leases', member) == 1 then\n"                                     \
    "    redis.call('HINCRBY', m, 'leased', -1)\n"                                                 \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function finish_if_done(id, m, now, state, closed, total, done, leased)\n"               \
    "  if (state == 'in_progress' or state == 'submitting') and closed == '1' and"                 \
    " done >= total then\n"                                                                        \
    "    redis.call('HSET', m, 'state', 'completed', 'finished_at', math.floor(now / 1000))\n"    \
    "    redis.call('SREM', P..'active', id)\n"                                                    \
    "    redis.call('ZADD', P..'finished', math.floor(now / 1000), id)\n"                          \
    "  elseif state == 'cancelling' and leased <= 0 then\n"                                       \
    "    redis.call('HSET', m, 'state', 'cancelled', 'finished_at', math.floor(now / 1000))\n"    \
    "    redis.call('SREM', P..'active', id)\n"                                                    \
    "    redis.call('ZADD', P..'finished', math.floor(now / 1000), id)\n"                          \
    "  end\n"                                                                                      \
    "end\n"                                                                                        \
    "local function check_finish(id, m, now)\n"                                                   \
    "  local f = redis.call('HMGET', m, 'state', 'closed', 'total', 'completed', 'failed',"       \
    " 'leased')\n"                                                                                 \
    "  finish_if_done(id, m, now, f[1], f[2], tonumber(f[3]), tonumber(f[4]) + tonumber(f[5]),"   \
    " tonumber(f[6]))\n"                                                                           \
    "end\n"                                                                                        \
    "local function forget_job(m, idx, cache)\n"                                                   \
    "  redis.call('HDEL', m..':jobs', idx)\n"                                                      \
    "  redis.call('HDEL', m..':att', idx)\n"                                                       \
    "  if cache then redis.call('HDEL', m..':ck', idx) end\n"                                      \
    "end\n"                                                                                        \
    "local function record(id, m, idx, failed, resp, err, now, attempt, cache)\n"                  \
    "  local payload = redis.call('HGET', m..':jobs', idx) or '0:'\n"                              \
    "  local line = '{\"id\":\"batch_req_'..id..'_'..idx..'\",\"custom_id\":'..\n"                 \
    "    cjson.encode(cid_of(payload))..',\"response\":'..(resp ~= '' and resp or 'null')..\n"   \
    "    ',\"error\":'..(err ~= '' and err or 'null')..'}'\n"                                      \
    "  redis.call('HSET', m..':res', idx, (failed and 'F' or 'S')..attempt..'|'..line)\n"          \
    "  forget_job(m, idx, cache)\n"                                                                \
    "  redis.call('HINCRBY', m, failed and 'failed' or 'completed', 1)\n"                          \
    "  local member = member_of(id, idx)\n"                                                        \
    "  unlease(m, member)\n"                                                                       \
    "  redis.call('ZREM', P..'delayed', member)\n"                                                 \
    "end\n"

/* OPEN(P, name, upstream, max_attempts, timeout_ms, priority, now_s, new_id,
 * fingerprint, cache 1/0) -> {id, created(1/0, -1: the name is taken by another input),
 * submitted, state} */
static const char s_open[] =
    "local P = ARGV[1]\n"
    "local name = ARGV[2]\n"
    "if name ~= '' then\n"
    "  local existing = redis.call('GET', P..'name:'..name)\n"
    "  if existing then\n"
    "    local st = redis.call('HMGET', P..'b:'..existing, 'state', 'submitted', 'fingerprint')\n"
    "    if st[1] then\n"
    "      if ARGV[9] ~= '' and st[3] and st[3] ~= '' and st[3] ~= ARGV[9] then\n"
    "        return {existing, -1, tonumber(st[2]), st[1]}\n"
    "      end\n"
    "      return {existing, 0, tonumber(st[2]), st[1]}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local id = ARGV[8]\n"
    "redis.call('HSET', P..'b:'..id, 'name', name, 'upstream', ARGV[3], 'max_attempts', ARGV[4],\n"
    "  'timeout_ms', ARGV[5], 'priority', ARGV[6], 'state', 'submitting', 'closed', 0,\n"
    "  'total', 0, 'submitted', 0, 'cursor', 0, 'completed', 0, 'failed', 0, 'retried', 0,\n"
    "  'duplicates', 0, 'leased', 0, 'prompt_tokens', 0, 'completion_tokens', 0,\n"
    "  'created_at', ARGV[7], 'finished_at', 0, 'fingerprint', ARGV[9], 'cache', ARGV[10])\n"
    "redis.call('ZADD', P..'batches', ARGV[7], id)\n"
    "redis.call('SADD', P..'active', id)\n"
    "if name ~= '' then redis.call('SET', P..'name:'..name, id) end\n"
    "return {id, 1, 0, 'submitting'}\n";

/* CHUNK(P, id, first, with_keys, payload..., [key...]) -> {submitted} or {-1}
 * unknown batch, {-2, submitted} gap, {-3, submitted} batch not accepting
 * jobs. With with_keys = '1' the n payloads are followed by their n cache
 * keys, stored (in ':ck') only when the batch was opened with cache. */
static const char s_chunk[] =
    "local P = ARGV[1]\n"
    "local m = P..'b:'..ARGV[2]\n"
    "local st = redis.call('HMGET', m, 'state', 'submitted', 'closed', 'cache')\n"
    "if not st[1] then return {-1} end\n"
    "local submitted = tonumber(st[2])\n"
    "local first = tonumber(ARGV[3])\n"
    "local keyed = ARGV[4] == '1'\n"
    "local n = #ARGV - 4\n"
    "if keyed then n = n / 2 end\n"
    "if first > submitted then return {-2, submitted} end\n"
    "local skip = submitted - first\n"
    "if skip >= n then return {submitted} end\n"
    "if st[3] == '1' or st[1] ~= 'submitting' then return {-3, submitted} end\n"
    "local args, keys = {}, {}\n"
    "for i = skip + 1, n do\n"
    "  local idx = string.format('%d', first + i - 1)\n"
    "  args[#args + 1] = idx\n"
    "  args[#args + 1] = ARGV[4 + i]\n"
    "  if keyed and st[4] == '1' and ARGV[4 + n + i] ~= '' then\n"
    "    keys[#keys + 1] = idx\n"
    "    keys[#keys + 1] = ARGV[4 + n + i]\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', m..':jobs', unpack(args))\n"
    "if #keys > 0 then redis.call('HSET', m..':ck', unpack(keys)) end\n"
    "submitted = first + n\n"
    "redis.call('HSET', m, 'submitted', string.format('%d', submitted))\n"
    "return {submitted}\n";

/* CLOSE(P, id, total, now_ms) -> {state} or {-1} unknown, {-2, submitted} */
static const char s_close[] = LQ_LUA_LIB
    "local id = ARGV[2]\n"
    "local m = P..'b:'..id\n"
    "local st = redis.call('HMGET', m, 'state', 'submitted', 'closed')\n"
    "if not st[1] then return {-1} end\n"
    "if tonumber(st[2]) ~= tonumber(ARGV[3]) then return {-2, tonumber(st[2])} end\n"
    "if st[3] ~= '1' then\n"
    "  redis.call('HSET', m, 'closed', 1, 'total', ARGV[3])\n"
    "  if st[1] == 'submitting' then redis.call('HSET', m, 'state', 'in_progress') end\n"
    "  check_finish(id, m, tonumber(ARGV[4]))\n"
    "end\n"
    "return {redis.call('HGET', m, 'state')}\n";

/* LEASE(P, id, n, lease_deadline_ms, now_ms) -> {more, k, {idx, attempt,
 * payload} k times, [first, payload...]}: k jobs with their attempt, then
 * optionally a run of fresh jobs (attempt 1) at indices first, first + 1,
 * ... (a missing payload is nil). In a batch opened with cache, a job whose request has a
 * cached response is answered here (its result written, counted in
 * 'cached') and not returned: it never reaches a worker. */
static const char s_lease[] = LQ_LUA_LIB
    "local id = ARGV[2]\n"
    "local m = P..'b:'..id\n"
    "local st = redis.call('HMGET', m, 'state', 'submitted', 'cursor', 'cache')\n"
    "if st[1] ~= 'submitting' and st[1] ~= 'in_progress' then return {0} end\n"
    "local n = tonumber(ARGV[3])\n"
    "local deadline = ARGV[4]\n"
    "local now = tonumber(ARGV[5])\n"
    "local cache = st[4] == '1'\n"
    "local hits, hit_pt, hit_ct, misses = 0, 0, 0, 0\n"
    "local function from_cache(idx)\n"
    "  if not cache then return false end\n"
    "  local key = redis.call('HGET', m..':ck', idx)\n"
    "  local v = key and key ~= '' and redis.call('GET', P..'cache:'..key)\n"
    "  if not v then misses = misses + 1 return false end\n"
    "  local a = string.find(v, ':', 1, true)\n"
    "  local b = string.find(v, ':', a + 1, true)\n"
    "  hits = hits + 1\n"
    "  hit_pt = hit_pt + tonumber(string.sub(v, 1, a - 1))\n"
    "  hit_ct = hit_ct + tonumber(string.sub(v, a + 1, b - 1))\n"
    "  record(id, m, idx, false, string.sub(v, b + 1), '', now, 0, true)\n"
    "  return true\n"
    "end\n"
    "local out = {0, 0}\n"
    "-- got: jobs taken (leased, or answered from the cache up to 5000 more)\n"
    "local got, leased, budget = 0, 0, n + (cache and 5000 or 0)\n"
    "while leased < n and got < budget do\n"
    "  local idx = redis.call('LPOP', m..':q')\n"
    "  if not idx then break end\n"
    "  local member = member_of(id, idx)\n"
    "  if redis.call('HEXISTS', m..':res', idx) == 0 and\n"
    "     not redis.call('ZSCORE', P..'leases', member) then\n"
    "    got = got + 1\n"
    "    if not from_cache(idx) then\n"
    "      local att = tonumber(redis.call('HGET', m..':att', idx) or '1') + 1\n"
    "      redis.call('HSET', m..':att', idx, string.format('%d', att))\n"
    "      redis.call('ZADD', P..'leases', deadline, member)\n"
    "      out[#out + 1] = tonumber(idx)\n"
    "      out[#out + 1] = att\n"
    "      out[#out + 1] = redis.call('HGET', m..':jobs', idx)\n"
    "      out[2] = out[2] + 1\n"
    "      leased = leased + 1\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local cursor = tonumber(st[3])\n"
    "local submitted = tonumber(st[2])\n"
    "local fresh = {}\n"
    "while leased + #fresh < n and got < budget and cursor < submitted do\n"
    "  if not from_cache(cursor) then fresh[#fresh + 1] = cursor end\n"
    "  cursor = cursor + 1\n"
    "  got = got + 1\n"
    "end\n"
    "if #fresh > 0 then\n"
    "  local keys, z = {}, {}\n"
    "  for i, idx in ipairs(fresh) do\n"
    "    local k = string.format('%d', idx)\n"
    "    keys[i] = k\n"
    "    z[#z + 1] = deadline\n"
    "    z[#z + 1] = member_of(id, k)\n"
    "  end\n"
    "  local payloads = redis.call('HMGET', m..':jobs', unpack(keys))\n"
    "  -- consecutive indices (no cache hit between them): the first, then the payloads\n"
    "  local run = fresh[#fresh] - fresh[1] == #fresh - 1\n"
    "  if run then out[#out + 1] = fresh[1] end\n"
    "  for i, idx in ipairs(fresh) do\n"
    "    if not run then\n"
    "      out[#out + 1] = idx\n"
    "      out[#out + 1] = 1\n"
    "      out[2] = out[2] + 1\n"
    "    end\n"
    "    out[#out + 1] = payloads[i]\n"
    "  end\n"
    "  redis.call('ZADD', P..'leases', unpack(z))\n"
    "  leased = leased + #fresh\n"
    "end\n"
    "redis.call('HSET', m, 'cursor', string.format('%d', cursor))\n"
    "if leased > 0 then redis.call('HINCRBY', m, 'leased', string.format('%d', leased)) end\n"
    "if hits > 0 then\n"
    "  redis.call('HINCRBY', m, 'cached', hits)\n"
    "  redis.call('HINCRBY', m, 'cached_prompt_tokens', hit_pt)\n"
    "  redis.call('HINCRBY', m, 'cached_completion_tokens', hit_ct)\n"
    "  redis.call('HINCRBY', P..'cache_stats', 'hits', hits)\n"
    "  redis.call('HINCRBY', P..'cache_stats', 'tokens_saved', hit_pt + hit_ct)\n"
    "  check_finish(id, m, now)\n"
    "end\n"
    "if misses > 0 then redis.call('HINCRBY', P..'cache_stats', 'misses', misses) end\n"
    "if cursor < submitted or redis.call('LLEN', m..':q') > 0 then out[1] = 1 end\n"
    "return out\n";

/* REPORT(P, now_ms, cache_ttl_s, {id, idx, value, ptok, ctok, ctl}...) -> one
 * letter per result (a string): o ok, f failed, r retry, d dup, s resent,
 * t stale, g gone.
 * value is what res stores for a final result, ready made by the broker
 * ('S'|'F', attempt, '|', output line, whose last field is "error"); it also
 * tells the script the attempt. ptok and ctok are >= 0. ctl is the outcome
 * (0 ok, 1 retryable, 2 fatal), alone or, for a retryable result or one
 * whose custom_id the broker did not know, "outcome,delay_ms,cid_at":
 * the retry delay, and the byte offset in value where the script inserts
 * the custom_id (read from the payload; 0: none). A final success of a
 * batch opened with cache is stored as its request's cached response for
 * cache_ttl_s (0: not stored, e.g. while Redis is near full); a retryable
 * error that becomes final because its attempts are used up gets that said
 * at the end of its message.
 * Per result it writes only the job's result; the leases it drops, the
 * payloads it forgets and the batch counters are gathered in the script
 * and written once per batch per call. */
static const char s_report[] = LQ_LUA_LIB
    "local now = tonumber(ARGV[2])\n"
    "local codes = {}\n"
    "local metas, order = {}, {}\n"
    "-- the batch counters a call changes: read with the batch, written once at the end\n"
    "local counters = {'completed', 'failed', 'leased', 'prompt_tokens', 'completion_tokens',\n"
    "                  'duplicates', 'retried'}\n"
    "local function meta_of(id)\n"
    "  local x = metas[id]\n"
    "  if x == nil then\n"
    "    local m = P..'b:'..id\n"
    "    local f = redis.call('HMGET', m, 'state', 'max_attempts', 'cache', 'closed', 'total',\n"
    "                         unpack(counters))\n"
    "    if f[1] then\n"
    "      local was = {}\n"
    "      for i, k in ipairs(counters) do was[k] = f[5 + i] end\n"
    "      x = {m = m, state = f[1], max = tonumber(f[2]), cache = f[3] == '1', closed = f[4],\n"
    "           total = f[5], was = was, completed = 0,\n"
    "           failed = 0,\n"
    "           leased = 0, prompt_tokens = 0, completion_tokens = 0, duplicates = 0,\n"
    "           retried = 0,\n"
    "           -- att holds only jobs leased more than once: without it, skip its reads\n"
    "           att = redis.call('EXISTS', m..':att') == 1,\n"
    "           stopping = f[1] == 'cancelling' or f[1] == 'cancelled',\n"
    "           unlease = {}, forget = {}}\n"
    "      order[#order + 1] = id\n"
    "    else\n"
    "      x = false\n"
    "    end\n"
    "    metas[id] = x\n"
    "  end\n"
    "  return x\n"
    "end\n"
    "-- leases to drop and jobs to forget are collected, then removed with one\n"
    "-- call per batch (nothing in this script reads them meanwhile)\n"
    "local function unlease_x(x, member)\n"
    "  x.unlease[#x.unlease + 1] = member\n"
    "end\n"
    "-- the attempt of a stored or reported line: 'S'|'F', attempt, '|', ...\n"
    "local function attempt_of(line)\n"
    "  return string.sub(line, 2, string.find(line, '|', 1, true) - 1)\n"
    "end\n"
    "local function existing(x, id, idx, v)\n"
    "  if attempt_of(redis.call('HGET', x.m..':res', idx)) == attempt_of(v) then return 's' end\n"
    "  x.duplicates = x.duplicates + 1\n"
    "  unlease_x(x, member_of(id, idx))\n"
    "  return 'd'\n"
    "end\n"
    "local ttl = tonumber(ARGV[3])\n"
    "local last_id, x\n"
    "for b = 4, #ARGV, 6 do\n"
    "  local id, idx, v, ctl = ARGV[b], ARGV[b + 1], ARGV[b + 2], ARGV[b + 5]\n"
    "  local outcome, delay, cid_at = string.byte(ctl) - 48, 0, 0\n"
    "  if #ctl > 1 then\n"
    "    local d, c = string.match(ctl, '^%d,(%d+),(%d+)$')\n"
    "    delay, cid_at = tonumber(d), tonumber(c)\n"
    "  end\n"
    "  if id ~= last_id then x = meta_of(id) last_id = id end\n"
    "  local code\n"
    "  local member = id..'|'..idx -- member_of(id, idx), inlined\n"
    "  if not x then\n"
    "    code = 'g'\n"
    "  else\n"
    "    local final = true\n"
    "    if outcome == 1 then\n"
    "      if redis.call('HEXISTS', x.m..':res', idx) == 1 then\n"
    "        code = existing(x, id, idx, v)\n"
    "        final = false\n"
    "      else\n"
    "        local cur = x.att and tonumber(redis.call('HGET', x.m..':att', idx) or '1') or 1\n"
    "        if tonumber(attempt_of(v)) < cur then\n"
    "          code = 't'\n"
    "          final = false\n"
    "        elseif cur < x.max and not x.stopping then\n"
    "          unlease_x(x, member)\n"
    "          redis.call('ZADD', P..'delayed', now + delay, member)\n"
    "          x.retried = x.retried + 1\n"
    "          code = 'r'\n"
    "          final = false\n"
    "        end\n"
    "      end\n"
    "    end\n"
    "    if final then\n"
    "      local failed = outcome ~= 0\n"
    "      local pt, ct = ARGV[b + 3], ARGV[b + 4]\n"
    "      local store = x.cache and not failed and ttl > 0\n"
    "      local exhausted = outcome == 1 and not x.stopping\n"
    "      local resp\n"
    "      if store then\n"
    "        -- the response object: after the first ,\"response\": (custom_id is a JSON\n"
    "        -- string: it holds no unescaped quote), before ,\"error\":null}\n"
    "        local at = string.find(v, ',\"response\":', 1, true)\n"
    "        resp = string.sub(v, at + 12, #v - 14)\n"
    "      end\n"
    "      if exhausted then\n"
    "        -- the line ends with the error's message: ...\"message\":\"...\"}}\n"
    "        v = string.sub(v, 1, #v - 3)..' (not retried: all '..x.max..\n"
    "          ' attempts used, see --max-attempts)'..string.sub(v, #v - 2)\n"
    "      end\n"
    "      if cid_at > 0 then\n"
    "        local at = cid_at\n"
    "        local cid = cid_of(redis.call('HGET', x.m..':jobs', idx) or '0:')\n"
    "        v = string.sub(v, 1, at)..cjson.encode(cid)..string.sub(v, at + 1)\n"
    "      end\n"
    "      if redis.call('HSETNX', x.m..':res', idx, v) == 1 then\n"
    "        if failed then x.failed = x.failed + 1 else x.completed = x.completed + 1 end\n"
    "        if pt ~= '0' then x.prompt_tokens = x.prompt_tokens + tonumber(pt) end\n"
    "        if ct ~= '0' then x.completion_tokens = x.completion_tokens + tonumber(ct) end\n"
    "        unlease_x(x, member)\n"
    "        if store then\n"
    "          local key = redis.call('HGET', x.m..':ck', idx)\n"
    "          if key then\n"
    "            redis.call('SET', P..'cache:'..key, pt..':'..ct..':'..resp, 'EX', ttl)\n"
    "            redis.call('HINCRBY', P..'cache_stats', 'stores', 1)\n"
    "          end\n"
    "        end\n"
    "        x.forget[#x.forget + 1] = idx\n"
    "        code = failed and 'f' or 'o'\n"
    "      else\n"
    "        code = existing(x, id, idx, v)\n"
    "      end\n"
    "    end\n"
    "  end\n"
    "  codes[#codes + 1] = code\n"
    "end\n"
    "for _, id in ipairs(order) do\n"
    "  local x = metas[id]\n"
    "  if #x.unlease > 0 then\n"
    "    x.leased = x.leased - redis.call('ZREM', P..'leases', unpack(x.unlease))\n"
    "  end\n"
    "  if #x.forget > 0 then -- forget_job, for all of them\n"
    "    redis.call('HDEL', x.m..':jobs', unpack(x.forget))\n"
    "    if x.att then redis.call('HDEL', x.m..':att', unpack(x.forget)) end\n"
    "    if x.cache then redis.call('HDEL', x.m..':ck', unpack(x.forget)) end\n"
    "  end\n"
    "  local now_v, set = {}, {}\n"
    "  for _, k in ipairs(counters) do\n"
    "    now_v[k] = tonumber(x.was[k] or '0') + x[k]\n"
    "    if x[k] ~= 0 then\n"
    "      set[#set + 1] = k\n"
    "      set[#set + 1] = string.format('%d', now_v[k])\n"
    "    end\n"
    "  end\n"
    "  if #set > 0 then redis.call('HSET', x.m, unpack(set)) end\n"
    "  finish_if_done(id, x.m, now, x.state, x.closed, tonumber(x.total or '0'),\n"
    "                 now_v.completed + now_v.failed, now_v.leased)\n"
    "end\n"
    "return table.concat(codes)\n";

/* Shared by REQUEUE and EXPIRE: put one leased job back (or fail it when its
 * attempts are used up). Returns 1 if the job went back to its queue. */
#define LQ_LUA_REQUEUE_ONE                                                                         \
    "local function requeue_one(member, now, err)\n"                                               \
    "  local id, idx = split_member(member)\n"                                                     \
    "  if not id then redis.call('ZREM', P..'leases', member) return 0 end\n"                      \
    "  local m = P..'b:'..id\n"                                                                    \
    "  if redis.call('ZREM', P..'leases', member) == 0 then return 0 end\n"                        \
    "  local meta = redis.call('HMGET', m, 'state', 'max_attempts', 'cache')\n"                    \
    "  if not meta[1] then return 0 end\n"                                                         \
    "  redis.call('HINCRBY', m, 'leased', -1)\n"                                                   \
    "  local back = 0\n"                                                                           \
    "  if redis.call('HEXISTS', m..':res', idx) == 0 and meta[1] ~= 'cancelling' and"             \
    " meta[1] ~= 'cancelled' then\n"                                                               \
    "    local cur = tonumber(redis.call('HGET', m..':att', idx) or '1')\n"                        \
    "    if cur >= tonumber(meta[2]) then\n"                                                       \
    "      record(id, m, idx, true, '', err, now, cur, meta[3] == '1')\n"                          \
    "    else\n"                                                                                   \
    "      redis.call('RPUSH', m..':q', idx)\n"                                                    \
    "      back = 1\n"                                                                             \
    "    end\n"                                                                                    \
    "  end\n"                                                                                      \
    "  check_finish(id, m, now)\n"                                                                 \
    "  return back\n"                                                                              \
    "end\n"

/* REQUEUE(P, now_ms, err_json, member...) -> number requeued */
static const char s_requeue[] = LQ_LUA_LIB LQ_LUA_REQUEUE_ONE
    "local now = tonumber(ARGV[2])\n"
    "local n = 0\n"
    "for i = 4, #ARGV do n = n + requeue_one(ARGV[i], now, ARGV[3]) end\n"
    "return n\n";

/* EXPIRE(P, now_ms, err_json, limit) -> {batch ids that got work back} */
static const char s_expire[] = LQ_LUA_LIB LQ_LUA_REQUEUE_ONE
    "local now = tonumber(ARGV[2])\n"
    "local members = redis.call('ZRANGEBYSCORE', P..'leases', '-inf', now, 'LIMIT', 0,"
    " tonumber(ARGV[4]))\n"
    "local ids, seen = {}, {}\n"
    "for _, member in ipairs(members) do\n"
    "  if requeue_one(member, now, ARGV[3]) == 1 then\n"
    "    local id = split_member(member)\n"
    "    if not seen[id] then seen[id] = true ids[#ids + 1] = id end\n"
    "  end\n"
    "end\n"
    "return ids\n";

/* PROMOTE(P, now_ms, limit) -> {next_due_ms or -1, batch ids with work} */
static const char s_promote[] =
    "local P = ARGV[1]\n" LQ_PAYLOAD_LUA
    "local now = tonumber(ARGV[2])\n"
    "local members = redis.call('ZRANGEBYSCORE', P..'delayed', '-inf', now, 'LIMIT', 0,"
    " tonumber(ARGV[3]))\n"
    "local out, seen = {-1}, {}\n"
    "for _, member in ipairs(members) do\n"
    "  redis.call('ZREM', P..'delayed', member)\n"
    "  local id, idx = split_member(member)\n"
    "  if id then\n"
    "    local m = P..'b:'..id\n"
    "    local state = redis.call('HGET', m, 'state')\n"
    "    if (state == 'in_progress' or state == 'submitting') and\n"
    "       redis.call('HEXISTS', m..':res', idx) == 0 then\n"
    "      redis.call('RPUSH', m..':q', idx)\n"
    "      if not seen[id] then seen[id] = true out[#out + 1] = id end\n"
    "    end\n"
    "  end\n"
    "end\n"
    "local nxt = redis.call('ZRANGE', P..'delayed', 0, 0, 'WITHSCORES')\n"
    "if nxt[2] then out[1] = tonumber(nxt[2]) end\n"
    "return out\n";

/* CANCEL(P, id, now_ms) -> {state} or {-1} */
static const char s_cancel[] = LQ_LUA_LIB
    "local id = ARGV[2]\n"
    "local m = P..'b:'..id\n"
    "local state = redis.call('HGET', m, 'state')\n"
    "if not state then return {-1} end\n"
    "if state == 'submitting' or state == 'in_progress' then\n"
    "  redis.call('HSET', m, 'state', 'cancelling')\n"
    "  redis.call('DEL', m..':q')\n"
    "  check_finish(id, m, tonumber(ARGV[3]))\n"
    "end\n"
    "return {redis.call('HGET', m, 'state')}\n";

/* LIST(P, limit, only_active) -> {flat HGETALL of each batch, with 'id'} */
static const char s_list[] =
    "local P = ARGV[1]\n"
    "local ids\n"
    "if ARGV[3] == '1' then ids = redis.call('SMEMBERS', P..'active')\n"
    "else ids = redis.call('ZREVRANGE', P..'batches', 0, tonumber(ARGV[2]) - 1) end\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local h = redis.call('HGETALL', P..'b:'..id)\n"
    "  if #h > 0 then\n"
    "    h[#h + 1] = 'id'\n"
    "    h[#h + 1] = id\n"
    "    out[#out + 1] = h\n"
    "  end\n"
    "end\n"
    "return out\n";

/* ACTIVE(P) -> {id, state, upstream, priority, timeout_ms, ...}: the
 * active batches, 5 fields each; every broker reads it twice a second
 * (broker/fleet.c), so it reads 4 fields per batch and nothing else. */
static const char s_active[] =
    "local P = ARGV[1]\n"
    "local out = {}\n"
    "for _, id in ipairs(redis.call('SMEMBERS', P..'active')) do\n"
    "  local f = redis.call('HMGET', P..'b:'..id, 'state', 'upstream', 'priority', 'timeout_ms')\n"
    "  if f[1] then\n"
    "    out[#out + 1] = id\n"
    "    for k = 1, 4 do out[#out + 1] = f[k] or '' end\n"
    "  end\n"
    "end\n"
    "return out\n";

/* RESULTS(P, id, from, max, now_s) -> {next, done, idx, line...}
 * The first page that reaches the end of a finished batch marks it fetched
 * (fetched_at, and the 'fetched' zset that retention reads).
 * Walks indices from 'from'; stops at the first job with no result unless
 * the batch is finished (then missing ones, never run, are skipped). A page
 * holds at most 4 MiB of lines (always at least one), so it fits a message. */
static const char s_results[] =
    "local P = ARGV[1]\n"
    "local id = ARGV[2]\n"
    "local m = P..'b:'..id\n"
    "local f = redis.call('HMGET', m, 'state', 'total', 'submitted')\n"
    "if not f[1] then return {-1} end\n"
    "local finished = f[1] == 'completed' or f[1] == 'cancelled'\n"
    "local total = tonumber(f[3])\n"
    "local from, max = tonumber(ARGV[3]), tonumber(ARGV[4])\n"
    "local out = {0, 0}\n"
    "local idx = from\n"
    "local fields, names = {}, {}\n"
    "local last = math.min(from + math.min(max, 5000), total) - 1\n"
    "for i = from, last do\n"
    "  fields[#fields + 1] = i\n"
    "  names[#names + 1] = string.format('%d', i)\n"
    "end\n"
    "local got = {}\n"
    "if #fields > 0 then got = redis.call('HMGET', m..':res', unpack(names)) end\n"
    "local bytes = 0\n"
    "for k = 1, #fields do\n"
    "  local v = got[k]\n"
    "  if v and bytes > 0 and bytes + #v > 4194304 then break end\n"
    "  if v then\n"
    "    bytes = bytes + #v\n"
    "    out[#out + 1] = fields[k]\n"
    "    out[#out + 1] = v\n"
    "  elseif not finished then\n"
    "    break\n"
    "  end\n"
    "  idx = fields[k] + 1\n"
    "end\n"
    "out[1] = idx\n"
    "if finished and idx >= total then\n"
    "  out[2] = 1\n"
    "  if redis.call('HSETNX', m, 'fetched_at', ARGV[5]) == 1 then\n"
    "    redis.call('ZADD', P..'fetched', tonumber(ARGV[5]), id)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* Removes a finished or cancelled batch and every key it has. Big hashes go
 * with UNLINK (freed off Redis's main thread). */
#define LQ_LUA_DROP                                                                                \
    "local function drop_batch(id)\n"                                                              \
    "  local m = P..'b:'..id\n"                                                                    \
    "  local f = redis.call('HMGET', m, 'state', 'name')\n"                                        \
    "  if f[1] == 'cancelled' then\n"                                                             \
    "    local cur = '0'\n"                                                                        \
    "    repeat\n"                                                                                 \
    "      local r = redis.call('ZSCAN', P..'delayed', cur, 'MATCH', id..'|*', 'COUNT', 1000)\n"   \
    "      cur = r[1]\n"                                                                           \
    "      for i = 1, #r[2], 2 do redis.call('ZREM', P..'delayed', r[2][i]) end\n"                 \
    "    until cur == '0'\n"                                                                       \
    "  end\n"                                                                                      \
    "  redis.call('UNLINK', m..':jobs', m..':att', m..':res', m..':q')\n"                          \
    "  redis.call('DEL', m)\n"                                                                     \
    "  if f[2] and f[2] ~= '' and redis.call('GET', P..'name:'..f[2]) == id then\n"               \
    "    redis.call('DEL', P..'name:'..f[2])\n"                                                    \
    "  end\n"                                                                                      \
    "  redis.call('ZREM', P..'batches', id)\n"                                                     \
    "  redis.call('ZREM', P..'finished', id)\n"                                                    \
    "  redis.call('ZREM', P..'fetched', id)\n"                                                     \
    "  redis.call('SREM', P..'active', id)\n"                                                      \
    "end\n"

/* DELETE(P, id) -> {1} deleted, {-1} unknown, {-2, state} still active */
static const char s_delete[] =
    "local P = ARGV[1]\n" LQ_LUA_DROP
    "local id = ARGV[2]\n"
    "local state = redis.call('HGET', P..'b:'..id, 'state')\n"
    "if not state then return {-1} end\n"
    "if state ~= 'completed' and state ~= 'cancelled' then return {-2, state} end\n"
    "drop_batch(id)\n"
    "return {1}\n";

/* SWEEP(P, now_s, retention_s, require_fetched, limit) -> {ids deleted}
 * Removes the batches whose retention ran out: counted from the first
 * complete fetch of their results (require_fetched = '1'), or from when
 * they finished. */
static const char s_sweep[] =
    "local P = ARGV[1]\n" LQ_LUA_DROP
    "local src = ARGV[4] == '1' and P..'fetched' or P..'finished'\n"
    "local due = tonumber(ARGV[2]) - tonumber(ARGV[3])\n"
    "local ids = redis.call('ZRANGEBYSCORE', src, '-inf', due, 'LIMIT', 0, tonumber(ARGV[5]))\n"
    "local out = {}\n"
    "for _, id in ipairs(ids) do\n"
    "  local state = redis.call('HGET', P..'b:'..id, 'state')\n"
    "  if state == 'completed' or state == 'cancelled' or not state then\n"
    "    drop_batch(id)\n"
    "    out[#out + 1] = id\n"
    "  else\n"
    "    redis.call('ZREM', src, id)\n"
    "  end\n"
    "end\n"
    "return out\n";

/* CACHE_SCAN(P, cursor, upstream or '', clear 1/0) -> {cursor, entries,
 * bytes, removed}: one SCAN step over the cache's keys (of one upstream);
 * the broker calls it until the cursor is back to "0". */
static const char s_cache_scan[] =
    "local P = ARGV[1]\n"
    "local match = P..'cache:'..(ARGV[3] ~= '' and ARGV[3]..':' or '')..'*'\n"
    "local r = redis.call('SCAN', ARGV[2], 'MATCH', match, 'COUNT', 2000)\n"
    "local bytes, removed = 0, 0\n"
    "for _, k in ipairs(r[2]) do\n"
    "  if ARGV[4] == '1' then removed = removed + redis.call('UNLINK', k)\n"
    "  else bytes = bytes + redis.call('STRLEN', k) end\n"
    "end\n"
    "return {r[1], #r[2], bytes, removed}\n";

/* STATS(P, max) -> {id, name, upstream, state, closed, total, submitted,
 * completed, failed, leased, created_at, ...} for at most max active
 * batches: what /metrics shows per batch (broker/stats.c). */
static const char s_stats[] =
    "local P, max = ARGV[1], tonumber(ARGV[2])\n"
    "local out = {}\n"
    "for i, id in ipairs(redis.call('SMEMBERS', P..'active')) do\n"
    "  if i > max then break end\n"
    "  local f = redis.call('HMGET', P..'b:'..id, 'name', 'upstream', 'state', 'closed',\n"
    "    'total', 'submitted', 'completed', 'failed', 'leased', 'created_at')\n"
    "  out[#out+1] = id\n"
    "  for k = 1, 10 do out[#out+1] = f[k] or '' end\n"
    "end\n"
    "return out\n";

/* RLSHARE(P, broker_id, stale_ms, {upstream, demand 1/0, state or '', cut
 * or ''}...) -> {others, fleet_state, cut, ...; now_ms}: the rate limits
 * shared by the brokers (broker/rlstore.c), one call per broker every
 * 50 ms. Per upstream, the hash P..'rlshare:'..upstream holds
 * 'b:'..broker_id -> last seen (Redis time, ms) for each broker with demand
 * and 'cut' -> '<ms> <fleet rps> <broker_id>', the last rate a broker
 * lowered on a 429; it expires a minute after the last broker with demand
 * left. A broker with demand refreshes its entry, one without drops it;
 * entries older than stale_ms are dropped; state (the learned limits as
 * fleet totals) is written to P..'ratelimits'. Returns, per upstream, the
 * number of OTHER brokers with demand, the stored learned limits and the
 * last cut; then Redis's clock; then upstream, learned limits for every
 * upstream in P..'ratelimits' the broker did not ask about (so that it
 * starts a limiter for it from the fleet's state before it has demand). */
static const char s_rlshare[] =
    "local P, me, stale = ARGV[1], ARGV[2], tonumber(ARGV[3])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local out = {}\n"
    "for i = 4, #ARGV - 3, 4 do\n"
    "  local up, demand, state, cut = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]\n"
    "  local k = P..'rlshare:'..up\n"
    "  if state ~= '' then redis.call('HSET', P..'ratelimits', up, state) end\n"
    "  if cut ~= '' then redis.call('HSET', k, 'cut', now..' '..cut..' '..me) end\n"
    "  if demand == '1' then redis.call('HSET', k, 'b:'..me, now)\n"
    "  else redis.call('HDEL', k, 'b:'..me) end\n"
    "  local others, last_cut = 0, ''\n"
    "  local h = redis.call('HGETALL', k)\n"
    "  for j = 1, #h, 2 do\n"
    "    local f, v = h[j], h[j + 1]\n"
    "    if f == 'cut' then last_cut = v\n"
    "    elseif (tonumber(v) or 0) < now - stale then redis.call('HDEL', k, f)\n"
    "    elseif f ~= 'b:'..me then others = others + 1 end\n"
    "  end\n"
    "  if demand == '1' or cut ~= '' then redis.call('PEXPIRE', k, 60000) end\n"
    "  out[#out + 1] = others\n"
    "  out[#out + 1] = redis.call('HGET', P..'ratelimits', up) or ''\n"
    "  out[#out + 1] = last_cut\n"
    "end\n"
    "out[#out + 1] = now\n"
    "local asked = {}\n"
    "for i = 4, #ARGV - 3, 4 do asked[ARGV[i]] = true end\n"
    "local all = redis.call('HGETALL', P..'ratelimits')\n"
    "for j = 1, #all, 2 do\n"
    "  if not asked[all[j]] then\n"
    "    out[#out + 1] = all[j]\n"
    "    out[#out + 1] = all[j + 1]\n"
    "  end\n"
    "end\n"
    "return out\n";

const char *const lq_scripts[] = {
    s_open, s_chunk, s_close, s_lease, s_report, s_requeue, s_expire, s_promote, s_cancel, s_list,
    s_results, s_delete, s_sweep, s_cache_scan, s_stats, s_active, s_rlshare, NULL,
};
