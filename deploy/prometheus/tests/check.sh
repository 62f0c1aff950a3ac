#!/bin/sh
# ctest prometheus.rules: the scrape config, the alert rules and their unit
# tests, and the Grafana dashboard, with promtool (Debian's prometheus package).
set -e
cd "$(dirname "$0")/.."
command -v promtool >/dev/null || { echo "promtool missing: run scripts/install-deps.sh"; exit 1; }
promtool check config prometheus.yml
promtool check rules llmq-alerts.yml
promtool test rules tests/alerts_test.yml
/usr/bin/python3 ../grafana/check_dashboard.py
