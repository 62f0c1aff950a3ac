-- wrk script: POSTs a small chat completion to the fake upstream (or any
-- OpenAI-compatible server).
--   wrk -t1 -c100 -d5s -s bench/wrk_post.lua http://127.0.0.1:8000
-- Each request carries a distinct metadata.custom_id ("wrk-<thread>-<n>") so
-- that /counts on llmq-fake-upstream shows one entry per request.
-- Set WRK_PATH to hit another endpoint (default /v1/chat/completions).

local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

function init(args)
   thread_id = id or 0
   wrk.method = "POST"
   wrk.path = os.getenv("WRK_PATH") or "/v1/chat/completions"
   wrk.headers["Content-Type"] = "application/json"
   local key = os.getenv("OPENAI_API_KEY")
   if key then
      wrk.headers["Authorization"] = "Bearer " .. key
   end
end

function request()
   counter = counter + 1
   local body = string.format(
      '{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},' ..
      '{"role":"user","content":"Say hello number %d."}],"max_tokens":8,' ..
      '"metadata":{"custom_id":"wrk-%d-%d"}}', counter, thread_id, counter)
   return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
   local s = summary
   io.write(string.format("requests %d, non-2xx/3xx %d, errors connect %d read %d write %d timeout %d\n",
      s.requests, s.errors.status, s.errors.connect, s.errors.read, s.errors.write, s.errors.timeout))
end
