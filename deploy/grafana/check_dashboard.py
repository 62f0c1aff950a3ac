#!/usr/bin/python3
"""Checks deploy/grafana/llmq-dashboard.json offline (no Grafana needed).

1. Schema: the fields Grafana's dashboard schema (schemaVersion 37) requires
   and the types it expects: uid, title, schemaVersion, time, templating,
   panels with unique integer ids, a known type, a gridPos inside the 24-column
   grid, and targets with refId and expr (rows hold no targets).
2. PromQL: every expr, with Grafana's variables replaced, is compiled by
   `promtool check rules` (as a recording rule), so a syntax error fails.
3. With --metrics FILE... (Prometheus text scraped from a live broker and
   worker): every llmq_* metric the dashboard queries is actually served.

Usage: check_dashboard.py [DASHBOARD] [--metrics FILE ...]; exit 0 when clean.
"""
import json
import os
import re
import subprocess
import sys
import tempfile

PANEL_TYPES = {"row", "stat", "timeseries", "table", "gauge", "bargauge", "text", "heatmap"}
VARS = {"$__rate_interval": "5m", "$__interval": "1m", "${datasource}": "prom",
        "$upstream": ".*"}


def fail(errors, msg):
    errors.append(msg)


def check_schema(d, errors):
    for key, typ in (("uid", str), ("title", str), ("schemaVersion", int), ("panels", list),
                     ("time", dict), ("templating", dict)):
        if not isinstance(d.get(key), typ):
            fail(errors, f"dashboard: '{key}' missing or not {typ.__name__}")
    if isinstance(d.get("uid"), str) and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", d["uid"]):
        fail(errors, "dashboard: uid must be 1-40 of [A-Za-z0-9_-]")
    for v in d.get("templating", {}).get("list", []):
        if not v.get("name") or not v.get("type"):
            fail(errors, f"templating: variable without name/type: {v}")
    ids = set()
    for p in d.get("panels", []):
        where = f"panel {p.get('id')} '{p.get('title')}'"
        if not isinstance(p.get("id"), int) or p["id"] in ids:
            fail(errors, f"{where}: id missing or not unique")
        ids.add(p.get("id"))
        if p.get("type") not in PANEL_TYPES:
            fail(errors, f"{where}: unknown type {p.get('type')}")
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) and g[k] >= 0 for k in "xywh"):
            fail(errors, f"{where}: gridPos needs non-negative integers x, y, w, h")
        elif g["x"] + g["w"] > 24 or g["w"] < 1 or g["h"] < 1:
            fail(errors, f"{where}: gridPos outside the 24-column grid")
        if p.get("type") == "row":
            continue
        if not p.get("title"):
            fail(errors, f"{where}: no title")
        targets = p.get("targets")
        if not targets:
            fail(errors, f"{where}: no targets")
            continue
        refs = [t.get("refId") for t in targets]
        if None in refs or len(set(refs)) != len(refs):
            fail(errors, f"{where}: targets need unique refIds")
        for t in targets:
            if not isinstance(t.get("expr"), str) or not t["expr"].strip():
                fail(errors, f"{where}: target {t.get('refId')} has no expr")


def exprs(d):
    out = []
    for p in d.get("panels", []):
        for t in p.get("targets", []) or []:
            e = t.get("expr", "")
            for k, v in VARS.items():
                e = e.replace(k, v)
            out.append((p.get("title"), e))
    for v in d.get("templating", {}).get("list", []):
        m = re.fullmatch(r"label_values\((.+),\s*\w+\)", v.get("definition", ""))
        if m:
            out.append((f"variable {v['name']}", m.group(1)))
    return out


def check_promql(d, errors):
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr{i}", "expr": e} for i, (_, e) in enumerate(exprs(d))]}]}
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False) as f:
        json.dump(rules, f)  # JSON is YAML
        path = f.name
    try:
        r = subprocess.run(["promtool", "check", "rules", path], capture_output=True, text=True)
    finally:
        os.unlink(path)
    if r.returncode != 0:
        fail(errors, "promtool rejected a dashboard query:\n" + r.stdout + r.stderr)


def check_served(d, metric_files, errors):
    served = set()
    for path in metric_files:
        with open(path) as f:
            for line in f:
                m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)", line)
                if m and not line.startswith("#"):
                    served.add(m.group(1))
    for title, e in exprs(d):
        for name in set(re.findall(r"\b(llmq_[a-z0-9_]+)", e)):
            if name not in served:
                fail(errors, f"'{title}': {name} is not served by the broker or worker")


def main(argv):
    metric_files = []
    if "--metrics" in argv:
        i = argv.index("--metrics")
        metric_files, argv = argv[i + 1:], argv[:i]
    path = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__),
                                                      "llmq-dashboard.json")
    with open(path) as f:
        d = json.load(f)
    errors = []
    check_schema(d, errors)
    check_promql(d, errors)
    if metric_files:
        check_served(d, metric_files, errors)
    for e in errors:
        print(f"check_dashboard: {e}", file=sys.stderr)
    if not errors:
        print(f"check_dashboard: {path}: {len(exprs(d))} queries OK")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
