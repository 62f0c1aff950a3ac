#!/usr/bin/python3
"""Generate an OpenAI Batch API input file for llmq demos and benchmarks.

    gen_batch.py N OUT [--body-bytes B] [--model M] [--max-tokens T]

Writes N lines (OUT may be "-" for stdout) of the form

    {"custom_id":"req-<i>","method":"POST","url":"/v1/chat/completions",
     "body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"..."}],
             "max_tokens":16,"metadata":{"custom_id":"req-<i>"}}}

(one line each). body.metadata.custom_id repeats the id so that the fake
upstream (tests/fake) can count requests per job. The user message is
about B bytes long (default 120, which makes lines of about 300 bytes);
its text is plain ASCII, deterministic, and varies with i.
"""
import argparse
import json
import sys

WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
         "mike november oscar papa quebec romeo sierra tango uniform victor whiskey "
         "xray yankee zulu").split()


def content(i, nbytes):
    head = "Request %d: summarise in one sentence:" % i
    parts = [head]
    size = len(head)
    k = i
    while size < nbytes:
        w = WORDS[k % len(WORDS)]
        k = (k * 1103515245 + 12345) & 0x7FFFFFFF
        parts.append(w)
        size += len(w) + 1
    return " ".join(parts)[:max(nbytes, len(head))]


def main():
    ap = argparse.ArgumentParser(description="Generate an OpenAI Batch API JSONL file.")
    ap.add_argument("n", type=int, help="number of requests")
    ap.add_argument("out", help="output path, or - for stdout")
    ap.add_argument("--body-bytes", type=int, default=120,
                    help="approximate length of each user message (default 120)")
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("--max-tokens", type=int, default=16)
    a = ap.parse_args()
    if a.n < 0 or a.body_bytes < 0:
        ap.error("N and --body-bytes must be >= 0")

    out = sys.stdout if a.out == "-" else open(a.out, "w", encoding="utf-8", newline="\n")
    enc = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
    buf = []
    for i in range(1, a.n + 1):
        cid = "req-%d" % i
        line = {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": a.model,
                "messages": [{"role": "user", "content": content(i, a.body_bytes)}],
                "max_tokens": a.max_tokens,
                "metadata": {"custom_id": cid},
            },
        }
        buf.append(enc.encode(line))
        if len(buf) >= 10000:
            out.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")
    if out is not sys.stdout:
        out.close()


if __name__ == "__main__":
    main()
