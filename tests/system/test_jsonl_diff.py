"""Differential check of the JSONL validator (issue 18): on a generated
corpus of valid and invalid batch lines -- overlong and invalid UTF-8,
encoded and escaped surrogates, deep nesting, duplicate keys, NUL bytes,
non-standard numbers, control characters, random byte mutations -- the
verdict of `llmq submit` agrees with a reference built on Python's json
(UTF-8 decoded strictly) plus llmq's documented rules. Where plain Python
json differs from llmq, the difference falls into one of the categories
documented in docs/security.md ("JSONL input vs Python's json"); each
category is exercised here and any other disagreement fails the test.

llmq's verdict comes from the real binary: each file holds a fixed valid
line, the line under test, and a broken line, so validation always fails
before any connection is made and every line's error is printed."""
import json
import os
import random
import subprocess
import sys
import tempfile
import unittest

import harness

MAX_CUSTOM_ID, MAX_URL = 512, 2048
JANSSON_MAX_DEPTH = 2048  # JSON_PARSER_MAX_DEPTH of jansson 2.14
INT64 = (-(1 << 63), (1 << 63) - 1)


class Refused(Exception):
    pass


def _no_dups(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Refused("dup_keys")
    return dict(pairs)


def _int(s):
    v = int(s)
    if not INT64[0] <= v <= INT64[1]:
        raise Refused("big_number")
    return v


def _float(s):
    v = float(s)
    if v in (float("inf"), float("-inf")):
        raise Refused("big_number")
    return v


def _const(s):
    raise Refused("nan_inf")


def _walk_strings(v, depth=0):
    if isinstance(v, str):
        if "\0" in v:
            raise Refused("nul_escape")
        if any(0xD800 <= ord(c) <= 0xDFFF for c in v):
            raise Refused("lone_surrogate")
    elif isinstance(v, list):
        for x in v:
            _walk_strings(x, depth + 1)
    elif isinstance(v, dict):
        for k, x in v.items():
            _walk_strings(k, depth + 1)
            _walk_strings(x, depth + 1)


def _depth(text):
    """Nesting depth as jansson counts it: every value is one level deeper
    than its container (so '[]' is 1 and '[1]' is 2); the line is JSON."""
    d = m = 0
    in_str = esc = False
    for c in text:
        if in_str:
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            m = max(m, d + 1)
        elif c in "-0123456789tfn":
            m = max(m, d + 1)
        elif c in "[{":
            d += 1
            m = max(m, d)
        elif c in "]}":
            d -= 1
    return m


def _rules(obj):
    """llmq's per-line rules (client/jobline.h) on a parsed line."""
    if not isinstance(obj, dict):
        return False
    cid, method, url, body = (obj.get(k) for k in ("custom_id", "method", "url", "body"))
    if not isinstance(cid, str) or not cid or len(cid.encode("utf-8", "surrogatepass")) > MAX_CUSTOM_ID:
        return False
    if method != "POST" or not isinstance(url, str) or not url.startswith("/"):
        return False
    if len(url.encode("utf-8", "surrogatepass")) > MAX_URL:
        return False
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        return False
    return isinstance(body, dict)


def python_plain(line):
    """Plain Python json with strict UTF-8 + llmq's field rules."""
    try:
        text = line.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return _rules(obj)


def reference(line):
    """(verdict, category): Python json made as strict as llmq documents,
    and the first documented rule that refused the line (None if none)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return False, None
    try:
        obj = json.loads(text, object_pairs_hook=_no_dups, parse_int=_int, parse_float=_float,
                         parse_constant=_const)
        _walk_strings(obj)
    except Refused as e:
        return False, str(e)
    except RecursionError:
        return False, "depth"
    except ValueError:
        return False, None
    if _depth(text) > JANSSON_MAX_DEPTH:
        return False, "depth"
    return _rules(obj), None


def good(cid, body='{"model":"m","messages":[{"role":"user","content":"hi"}]}'):
    return ('{"custom_id":"%s","method":"POST","url":"/v1/chat/completions","body":%s}'
            % (cid, body)).encode()


def corpus():
    """The generated lines: hand-made edge cases, then seeded mutations."""
    lines = []
    n = [0]

    def add(b):
        n[0] += 1
        lines.append(b)

    def cid():
        return "c%04d" % len(lines)

    add(good(cid()))
    # UTF-8: overlong, invalid, truncated, surrogates encoded, above U+10FFFF
    for bad in (b"\xc0\xaf", b"\xe0\x80\xaf", b"\xf0\x80\x80\xaf", b"\xff", b"\xfe", b"\x80",
                b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
                b"\xf8\x88\x80\x80\x80", b"\xc3\xa9", b"\xe2\x82\xac", b"\xf0\x9f\x98\x80"):
        add(good(cid()).replace(b'"hi"', b'"h' + bad + b'i"'))
        add(good(cid()).replace(b'"c', b'"' + bad + b'c', 1))
    # escapes: surrogates lone and paired, NUL, others
    for esc in (rb"\ud800", rb"\udfff", rb"\ud83d\ude00", rb"\ude00\ud83d", rb"\ud83d", rb"\u0000",
                rb"\u00e9", rb"\/", rb"\b\f\n\r\t", rb"\u", rb"\u12", rb"\x41", rb"\'", rb"\U0041"):
        add(good(cid()).replace(b'"hi"', b'"' + esc + b'"'))
        add(good(cid()).replace(b'"c', b'"' + esc + b'c', 1))
    # raw control characters and NUL bytes
    for ch in (b"\x00", b"\x01", b"\t", b"\x1f", b"\x7f"):
        add(good(cid()).replace(b'"hi"', b'"h' + ch + b'i"'))
        add(good(cid()).replace(b',"method"', ch + b',"method"'))
    # duplicate keys: top level, in the body, nested deep
    add(b'{"custom_id":"%s","custom_id":"x","method":"POST","url":"/x","body":{}}' % cid().encode())
    add(good(cid(), '{"a":1,"a":2}'))
    add(good(cid(), '{"a":{"b":[{"c":1,"c":1}]}}'))
    add(good(cid(), '{"a":1,"\\u0061":2}'))
    # numbers
    for num in ("0", "-0", "1e308", "1e309", "-1e400", "9223372036854775807", "9223372036854775808",
                "-9223372036854775809", "123456789012345678901234567890", "1.5e-400", "01", "1.",
                ".5", "+1", "1e", "0x10", "NaN", "Infinity", "-Infinity", "1E+2", "-", "2.5E-3"):
        add(good(cid(), '{"t":%s}' % num))
    # nesting depth
    for d in (10, 500, 1000, 2000, 2046, 2047, 2048, 2049, 2100, 5000):
        add(good(cid(), '{"d":' + "[" * d + "]" * d + "}"))
        add(good(cid(), '{"d":' + '{"a":' * d + "1" + "}" * d + "}"))
    # structure and rules
    for s in (b"[]", b"{}", b"null", b"1", b'"x"', b"{", b'{"a":1,}', b'{"a":1}x', b'{"a":1} ',
              b' {"a":1}', b"\x0c{}", b"{/*c*/}", b"{'a':1}"):
        add(s)
    add(b'{"custom_id":"","method":"POST","url":"/x","body":{}}')
    add(b'{"custom_id":"%s","method":"post","url":"/x","body":{}}' % cid().encode())
    add(b'{"custom_id":"%s","method":"POST","url":"x","body":{}}' % cid().encode())
    add(b'{"custom_id":"%s","method":"POST","url":"/a b","body":{}}' % cid().encode())
    add(b'{"custom_id":"%s","method":"POST","url":"/a\\u0001","body":{}}' % cid().encode())
    add(b'{"custom_id":"%s","method":"POST","url":"/x","body":[]}' % cid().encode())
    add(b'{"custom_id":"%s","method":"POST","url":"/x"}' % cid().encode())
    add(b'{"custom_id":"%s","method":"POST","url":"/x","b\\u006fdy":{"k":1}}' % cid().encode())
    add(b'{"custom_id":"%s","method":"POST","url":"/%s","body":{}}' % (cid().encode(), b"u" * 2047))
    add(b'{"custom_id":"%s","method":"POST","url":"/%s","body":{}}' % (cid().encode(), b"u" * 2048))
    add(b'{"custom_id":"%s","method":"POST","url":"/x","body":{}}' % (b"i" * 512))
    add(b'{"custom_id":"%s","method":"POST","url":"/x","body":{}}' % (b"j" * 513))
    add(b'{"custom_id":"%s\\u00e9","method":"POST","url":"/x","body":{}}' % (b"k" * 510))
    add(b'{"custom_id":7,"method":"POST","url":"/x","body":{}}')
    # seeded random mutations of valid lines
    rnd = random.Random(18)
    alphabet = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"\\", b"\\u", b"\xc3", b"\xa9", b"\xed",
                b"\xa0", b"\x00", b" ", b"1", b"e", b"-", b"null", b"true", b"\xff", b"\\ud800"]
    for i in range(500):
        base = bytearray(good("m%04d" % i, '{"p":"abc","q":[1,2.5,{"r":null}],"s":true}'))
        for _ in range(rnd.randint(1, 3)):
            pos = rnd.randrange(len(base))
            op = rnd.randrange(3)
            if op == 0:
                del base[pos]
            elif op == 1:
                base[pos:pos] = rnd.choice(alphabet)
            else:
                base[pos] = rnd.randrange(256)
        line = bytes(base)
        if b"\n" in line or b"\r" in line:
            continue
        add(line)
    return [ln for ln in lines if ln.strip(b" \t") and not ln.startswith(b"\xef\xbb\xbf")]


def llmq_verdicts(lines, workdir):
    """Runs `llmq submit` on one file per line; True where the line passed."""
    first = good("zz-first-line")
    out = []
    for i, line in enumerate(lines):
        path = os.path.join(workdir, "l%04d.jsonl" % i)
        with open(path, "wb") as f:
            f.write(first + b"\n" + line + b"\n{\n")
        r = subprocess.run([os.path.join(harness.BIN, "llmq"), "--broker", "tcp://127.0.0.1:9",
                            "submit", path], capture_output=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        err = r.stderr.decode(errors="replace")
        if r.returncode != 1 or f"{path}:3:" not in err:
            raise AssertionError(f"unexpected llmq outcome on line {i}: rc={r.returncode} {err}")
        if f"{path}:1:" in err:
            raise AssertionError(f"the fixed first line was refused: {err}")
        out.append(f"{path}:2:" not in err)
    return out


class JsonlDifferential(unittest.TestCase):
    def test_llmq_agrees_with_python_json(self):
        sys.setrecursionlimit(50000)
        lines = corpus()
        with tempfile.TemporaryDirectory(prefix="llmq-jsonl-diff-") as d:
            got = llmq_verdicts(lines, d)
        mismatches, diff_plain = [], {}
        for line, ok in zip(lines, got):
            ref, cat = reference(line)
            if ok != ref:
                mismatches.append((line[:200], ok, ref))
            if ok != python_plain(line):
                key = cat or ("depth" if _depth(line.decode("utf-8", "replace")) > 900 else
                              "unexplained")
                diff_plain[key] = diff_plain.get(key, 0) + 1
        accepted = sum(got)
        print(f"\ncorpus: {len(lines)} lines, {accepted} accepted, {len(lines) - accepted} refused",
              file=sys.stderr)
        print(f"differences from plain Python json, by documented category: {diff_plain}",
              file=sys.stderr)
        self.assertEqual(mismatches, [], "llmq and the strict reference disagree")
        self.assertNotIn("unexplained", diff_plain)
        for cat in ("dup_keys", "nan_inf", "nul_escape", "lone_surrogate", "big_number", "depth"):
            self.assertIn(cat, diff_plain, f"category {cat} not exercised")
        self.assertGreater(accepted, 50)
        self.assertGreater(len(lines) - accepted, 200)


if __name__ == "__main__":
    harness.main()
