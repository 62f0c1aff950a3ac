#!/bin/sh
# Runs inside the clean Debian container of tests/deb/test_deb.sh: installs
# the package, starts everything the way the systemd units would, runs a
# batch, purges the package. Argument: the .deb path.
set -eu
DEB="$1"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "$DEB" redis-server systemd curl >/dev/null
echo "in-container: installed $(dpkg-query -W -f='${Package} ${Version}' llmq)"

for b in llmq llmq-broker llmq-worker; do
    $b --version | head -1
done
test -f /etc/llmq/broker.env && test -f /etc/llmq/worker.env
grep -qx /etc/llmq/broker.env /var/lib/dpkg/info/llmq.conffiles
systemd-analyze verify /usr/lib/systemd/system/llmq-broker.service \
    /usr/lib/systemd/system/llmq-worker@.service 2>&1 | grep -v "^$" || true
if systemd-analyze verify /usr/lib/systemd/system/llmq-broker.service \
        /usr/lib/systemd/system/llmq-worker@.service 2>&1 | grep -qi "llmq.*\(error\|invalid\|unknown\)"; then
    echo "in-container: systemd-analyze found problems in the units"; exit 1
fi

# ExecStart of a unit, the way systemd would run it (no shell expansion).
execstart() { sed -n 's/^ExecStart=//p' "/usr/lib/systemd/system/$1"; }

redis-server --port 6379 --bind 127.0.0.1 --save "" --daemonize yes >/dev/null
echo "sk-test-$$" > /etc/llmq/api-key
chmod 600 /etc/llmq/api-key
llmq-fake-upstream --port 8000 --api-key "sk-test-$$" --log-level warn &
PIDS="$!"
(set -a; . /etc/llmq/broker.env; set +a; exec $(execstart llmq-broker.service)) \
    >/tmp/broker.log 2>&1 &
PIDS="$PIDS $!"
# The worker unit: EnvironmentFile=worker.env, the key as a credential.
(set -a; . /etc/llmq/worker.env; set +a
 LLMQ_UPSTREAM_URL=http://127.0.0.1:8000 LLMQ_API_KEY_FILE=/etc/llmq/api-key \
 LLMQ_WORKER_ID="$(hostname)-1" exec $(execstart llmq-worker@.service)) >/tmp/worker.log 2>&1 &
PIDS="$PIDS $!"

i=0
while ! llmq --connect-timeout 1 workers 2>/dev/null | grep -q -- "-1 "; do
    i=$((i + 1))
    [ $i -lt 30 ] || { cat /tmp/broker.log /tmp/worker.log; exit 1; }
    sleep 1
done
n=0
while [ $n -lt 50 ]; do
    printf '{"custom_id":"r%d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi %d"}]}}\n' $n $n
    n=$((n + 1))
done > /tmp/batch.jsonl
llmq run /tmp/batch.jsonl -o /tmp/out.jsonl --quiet >/dev/null
test "$(wc -l < /tmp/out.jsonl)" -eq 50
test "$(grep -c '"error":null' /tmp/out.jsonl)" -eq 50
curl -sf http://127.0.0.1:9100/metrics | grep -q '^llmq_jobs_completed_total{upstream="default"} 50$' ||
    { echo "in-container: broker metrics missing"; exit 1; }
echo "in-container: a 50-job batch ran through the packaged broker and worker"

kill $PIDS 2>/dev/null || true
redis-cli shutdown nosave >/dev/null 2>&1 || true
wait $PIDS 2>/dev/null || true
dpkg --purge llmq >/dev/null
for f in /usr/bin/llmq /usr/bin/llmq-broker /usr/lib/systemd/system/llmq-broker.service /etc/llmq/broker.env; do
    [ ! -e "$f" ] || { echo "in-container: $f left after purge"; exit 1; }
done
echo "in-container: purged cleanly"
