#!/usr/bin/python3
"""Baseline 1: the asyncio + aiohttp batch script as it is commonly written.

    baseline_asyncio.py IN OUT --base-url URL [--concurrency N] [--max-attempts 5]
                        [--ca-file PEM]

Reads the whole OpenAI Batch JSONL file, starts one coroutine per line with
asyncio.gather, bounds the requests in flight with a Semaphore(concurrency),
retries 429 / 5xx / connection errors / timeouts with exponential backoff and
full jitter (base 0.5 s, cap 30 s, at most --max-attempts attempts; Retry-After
is not read, as in most such scripts) and, once everything is done, writes
OUT in the OpenAI batch output format, in input order. Everything is held in
memory, which is how such scripts are usually written.

On exit prints one JSON line to stdout: jobs, ok, failed, attempts, wall_s.
Run it with Debian's /usr/bin/python3 (python3-aiohttp).
"""
import argparse
import asyncio
import json
import random
import ssl
import sys
import time
import uuid

import aiohttp

RETRYABLE = {408, 409, 429} | set(range(500, 600))


async def run_one(session, sem, base_url, line, max_attempts, stats):
    req = json.loads(line)
    url = base_url + req["url"]
    last = None
    for attempt in range(max_attempts):
        if attempt:
            await asyncio.sleep(random.uniform(0, min(30.0, 0.5 * 2 ** (attempt - 1))))
        async with sem:
            stats["attempts"] += 1
            try:
                async with session.post(url, json=req["body"]) as resp:
                    body = await resp.json(content_type=None)
                    status = resp.status
                    rid = resp.headers.get("x-request-id", "")
            except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as e:
                last = {"error": {"code": "connection_error", "message": repr(e)}}
                continue
        out = {"status_code": status, "request_id": rid, "body": body}
        if 200 <= status < 300:
            return {"custom_id": req["custom_id"], "response": out, "error": None}
        last = {"response": out,
                "error": {"code": f"http_{status}", "message": str(body)[:500]}}
        if status not in RETRYABLE:
            break
    stats["failed"] += 1
    return {"custom_id": req["custom_id"], "response": last.get("response"),
            "error": last["error"]}


async def main_async(a):
    with open(a.input) as f:
        lines = [x for x in f if x.strip()]
    stats = {"attempts": 0, "failed": 0}
    sem = asyncio.Semaphore(a.concurrency)
    ctx = ssl.create_default_context(cafile=a.ca_file) if a.ca_file else None
    conn = aiohttp.TCPConnector(limit=a.concurrency, ssl=ctx)
    timeout = aiohttp.ClientTimeout(total=a.timeout)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        results = await asyncio.gather(
            *(run_one(session, sem, a.base_url, line, a.max_attempts, stats) for line in lines))
    batch = "batch_" + uuid.uuid4().hex
    with open(a.output, "w") as f:
        for i, r in enumerate(results):
            f.write(json.dumps({"id": f"batch_req_{batch}_{i}", **r}, separators=(",", ":")))
            f.write("\n")
    return len(lines), stats


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("input")
    ap.add_argument("output")
    ap.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000")
    ap.add_argument("--concurrency", type=int, default=100)
    ap.add_argument("--max-attempts", type=int, default=5)
    ap.add_argument("--ca-file", help="CA certificates (PEM) to trust for https:// (bench TLS)")
    ap.add_argument("--timeout", type=float, default=60.0, help="per request, seconds")
    a = ap.parse_args()
    t0 = time.monotonic()
    n, stats = asyncio.run(main_async(a))
    wall = time.monotonic() - t0
    print(json.dumps({"jobs": n, "ok": n - stats["failed"], "failed": stats["failed"],
                      "attempts": stats["attempts"], "wall_s": round(wall, 3)}))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
