#!/usr/bin/python3
"""Writes the seed corpora of the fuzz targets in tests/fuzz/seeds/<target>/
from inputs of the unit tests (test_jsonl.c, test_worker_headers.c,
test_ratelimit.c, the metrics and key-file tests). Run it again after
adding a case; fuzz_msg's seeds come from `test_msg --write-seeds`."""
import os
import struct
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seeds")

OK = b'{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":5}}'
LINES = [
    OK,
    b'{"custom_id":"x\\u00e9", "method":"POST", "url":"/v1/embeddings","body":{"input":"abcdefgh","model":"e","t":0.7}}',
    b'{"custom_id":"a","method":"POST","url":"/x","body":{"k":[1,2]}}',
    b'{"custom_id":"\xc3\xa9\xc0\xaf"}',
    b'{"\xc3\xa9":"\xc3\xbc",x}',
    b'{"custom_id":"a","custom_id":"b"}',
    b'{"a":"x\\u0000"}',
    b'{"a":99999999999999999999}',
    b'{"custom_id":"q\\"","method":"POST","url":"/x","body":{}}',
    b'{"custom_id":"a","method":"GET","url":"/x","body":{}}',
    b'{"custom_id":"a","method":"POST","url":"/v1/a b","body":{}}',
    b'{"custom_id":"a","method":"POST","url":"/x","body":[]}',
    b'{"custom_id":"a","method":"POST","url":"/x","body":{"prompt":["a",[1,2,3]],"n":3,"max_completion_tokens":7}}',
    b'{"custom_id":"a","method":"POST","url":"/x","body":{"input":[{"type":"text","text":"abcd"}],"d":[[[[[[[[1]]]]]]]]}}',
    b'{"custom_id":"\\ud83d\\ude00","method":"POST","url":"/x","body":{"a":"\\ud800"}}',
    b'[1,2]',
    b'',
]
HEADERS = [
    b"HTTP/1.1 100 Continue\nx-request-id: early\nHTTP/2 429\nX-Request-Id:   req_abc123  \nrequest-id: other\n"
    b"x-ratelimit-remaining-requests: 59\nx-ratelimit-remaining-tokens: 149984\nx-ratelimit-reset-requests: 1s\n"
    b"x-ratelimit-reset-tokens: 6m0s\nx-ratelimit-limit-requests: 60\nx-ratelimit-limit-tokens: 150000\n"
    b"content-length: 77\nx-unrelated: 5\nno colon here",
    b"Retry-After: 3\nretry-after-ms: 1234\nRETRY-AFTER-MS: 50\nRetry-After: Wed, 21 Oct 2015 07:28:00 GMT",
    b"Retry-After: Sunday, 06-Nov-94 08:49:37 GMT\nretry-after: 1.5\nretry-after-ms: 20.2",
    b"x-ratelimit-reset-tokens: 1h2m3.5s\nx-ratelimit-reset-requests: 250ms\nx-ratelimit-reset-requests: 3\xc2\xb5s\nx-ratelimit-reset-tokens: 999999h",
    b"request-id: r-9\nx-ratelimit-remaining-requests: lots\nx-ratelimit-reset-tokens: later\nretry-after: -5",
]
BODIES = [
    (0, 200, b'{"id":"c1","usage":{"prompt_tokens":3,"completion_tokens":4},"choices":[]}'),
    (0, 429, b'{"error":{"message":"Rate limit reached","type":"requests"}}'),
    (0, 500, b'<html>\n<body>Internal error \xff\xfe</body>\n</html>'),
    (0, 400, b'{"error":{"message":"bad \\u0000 \\n request","code":"x"}}\n'),
    (28, 0, b''),
    (7, 0, b''),
    (3, 0, b''),
    (0, 302, b'   '),
    (0, 200, b'[1,\n2]'),
]
RL = [
    b"rpm=60,tpm=150000\n\x00\x05\x01\x00x-ratelimit-limit-requests: 60\n\x04\x10\x05",
    b"rpm=1000\n\x11\x00retry-after: 2\n\x84\x20\x05\x00\x01\x03\x05",
    b"tpm=1\n\x02\x01" + struct.pack(">8q", 5000, 7, 100, 1000, 0, 0, 250, 60000) + b"\x05",
    b"\n\x00\x00\x00\x00\x12\x00" + b"\xff" * 64 + b"\x05",
    b"bogus\n\x05",
]


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def main():
    for i, line in enumerate(LINES):
        write("jobline", "line%02d" % i, line)
    write("jsonl", "batch", b"\x00" + b"\n".join(LINES[:3]) + b"\n")
    write("jsonl", "crlf_bom", b"\x00\xef\xbb\xbf" + OK + b"\r\n" + LINES[2] + b"\r\n\r\n")
    write("jsonl", "errors", b"\x00" + b"\n".join(LINES) + b"\n")
    write("jsonl", "dup", b"\x10" + OK + b"\n" + OK + b"\n" + LINES[2] + b"\n")
    write("jsonl", "short_limit", b"\x02" + OK + b"\n" + LINES[2])
    write("jsonl", "prompts", b"\x01hello\n\n  \nworld \xc3\xa9\n\xff\n")
    for i, h in enumerate(HEADERS):
        write("headers", "h%02d" % i, h)
    for i, (cc, st, body) in enumerate(BODIES):
        write("outcome", "o%02d" % i, bytes([cc, st >> 8, st & 255, 0]) + body)
    for i, r in enumerate(RL):
        write("ratelimit", "r%02d" % i, r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
