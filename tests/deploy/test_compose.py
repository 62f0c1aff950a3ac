"""deploy.compose: the fleet of deploy/docker-compose.yml, in containers.

Builds the images (deploy/base-image.sh, deploy/redis.Dockerfile,
deploy/Dockerfile), starts Redis, the broker, 4 workers and the fake
upstream (50 ms) with CURVE on; batches run in the client service:
  1. a stranger's key and a plain connection are refused (CURVE allow-list);
  2. a 20,000-job batch while the broker container is killed and started,
     one worker killed, one worker cut off the network for 10 s and the
     Redis container restarted (AOF volume kept);
  3. a batch while the workers are scaled 2 -> 8 -> 1 (SIGTERM drains);
  4. `down -v` leaves no container, network or volume behind.
Every result file must hold each custom_id once, in input order. Prints the
figures (wall time, jobs/s, lost, duplicates, executed twice).
Without a Docker Engine it prints a SKIP line and exits 0. Everything it
starts is removed on the way out, also on failure; the images it caches are
llmq-base:12, llmq-redis:12, llmq:deploy-test and llmq-build:deploy-test
(its build stage, the layer cache of the next run).
    /usr/bin/python3 tests/deploy/test_compose.py [--jobs 20000] [--keep]"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
IMAGE = "llmq:deploy-test"
REDIS_IMAGE = "llmq-redis:12"
BUILD_IMAGE = "llmq-build:deploy-test"
CONCURRENCY = 4        # per worker: keeps the chaos batch long enough to hurt
LATENCY_MS = 50


def log(msg):
    print(f"[deploy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sh(*argv, check=True, capture=True, timeout=900, env=None):
    r = subprocess.run(list(argv), capture_output=capture, text=True, timeout=timeout,
                       env=env, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {r.returncode}\n"
                             f"{(r.stdout or '')[-3000:]}\n{(r.stderr or '')[-3000:]}")
    return r


def docker_answers():
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=30,
                              stdin=subprocess.DEVNULL).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def compose_tool():
    """`docker compose` (v2) when present, else `docker-compose` (v1)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def build_images():
    """Returns (seconds, llmq image size in MB)."""
    t0 = time.monotonic()
    base = sh("sh", os.path.join(DEPLOY, "base-image.sh"), capture=True).stdout.split()[-1]
    log(f"base image {base}")
    sh("docker", "build", "-q", "--force-rm", "-f", os.path.join(DEPLOY, "redis.Dockerfile"),
       "--build-arg", f"BASE={base}", "-t", REDIS_IMAGE, DEPLOY, timeout=1200)
    build = ["docker", "build", "-q", "--force-rm", "-f", os.path.join(DEPLOY, "Dockerfile"),
             "--build-arg", f"BASE={base}"]
    sh(*build, "-t", IMAGE, ROOT, timeout=1500)
    # Keep the build stage tagged (the cache of the next run) and drop the
    # build stages of earlier sources, which no tag holds any more.
    sh(*build, "--target", "build", "-t", BUILD_IMAGE, ROOT, timeout=600)
    sh("docker", "image", "prune", "-f", "--filter", "label=org.llmq.stage=build")
    size = int(sh("docker", "image", "inspect", "-f", "{{.Size}}", IMAGE).stdout) / 1e6
    uid = sh("docker", "run", "--rm", "--entrypoint", "id", IMAGE, "-u").stdout.strip()
    assert uid == "10001", f"the llmq image runs as uid {uid}, not the non-root 10001"
    return time.monotonic() - t0, size


class Stack:
    """One compose project with its own folder of secrets and data."""

    def __init__(self, tool):
        self.tool = tool
        self.project = f"llmqdeploy{os.getpid()}"
        self.dir = tempfile.mkdtemp(prefix="llmq-deploy-")
        self.data = os.path.join(self.dir, "data")
        self.secrets = os.path.join(self.dir, "secrets")
        os.makedirs(self.data)
        os.makedirs(self.secrets)
        os.chmod(self.data, 0o777)    # written by the client container (uid 10001)
        os.chmod(self.secrets, 0o777)
        self.env = dict(os.environ)
        self.env.update({
            "LLMQ_IMAGE": IMAGE, "LLMQ_REDIS_IMAGE": REDIS_IMAGE,
            "LLMQ_UPSTREAM_URL": "http://fake:8000", "LLMQ_CONCURRENCY": str(CONCURRENCY),
            "LLMQ_FAKE_LATENCY_MS": str(LATENCY_MS), "LLMQ_BIND": "127.0.0.1",
            "LLMQ_FRONTEND_PORT": str(free_port()), "LLMQ_BACKEND_PORT": str(free_port()),
            "LLMQ_DATA_DIR": self.data, "LLMQ_SECRETS_DIR": self.secrets,
            "LLMQ_HEALTH_INTERVAL": "2s",
        })
        self.net = f"{self.project}_default"

    # ---- setup ----
    def make_secrets(self):
        """API key, and CURVE key pairs made with `llmq keygen` in the image,
        so the files belong to the image's user (uid 10001)."""
        with open(os.path.join(self.secrets, "api_key"), "w") as f:
            f.write("sk-deploy-test-%d\n" % os.getpid())
        os.chmod(os.path.join(self.secrets, "api_key"), 0o644)
        for k in ("broker", "worker", "client", "stranger"):
            sh("docker", "run", "--rm", "-v", f"{self.secrets}:/k", "--entrypoint", "llmq",
               IMAGE, "keygen", f"/k/{k}")
        pubs = [open(os.path.join(self.secrets, f"{k}.pub")).read().strip()
                for k in ("broker", "worker", "client")]
        with open(os.path.join(self.secrets, "curve_clients"), "w") as f:
            f.write("# broker (its own health check), workers, the client\n")
            f.write("\n".join(pubs) + "\n")
        os.chmod(os.path.join(self.secrets, "curve_clients"), 0o644)
        self.env["LLMQ_CURVE_SERVER_KEY"] = pubs[0]
        shutil.copy(os.path.join(self.secrets, "stranger.key"), self.data)
        os.chown(os.path.join(self.data, "stranger.key"), 10001, 10001)

    def compose_argv(self, *args):
        """The compose command line of this stack (CURVE overlay, profile fake)."""
        return [*self.tool, "-p", self.project, "-f", os.path.join(DEPLOY, "docker-compose.yml"),
                "-f", os.path.join(DEPLOY, "docker-compose.curve.yml"), "--profile", "fake",
                *args]

    def compose(self, *args, check=True, timeout=600):
        return sh(*self.compose_argv(*args), check=check, env=self.env, timeout=timeout)

    def client_argv(self, *args):
        """`llmq ARGS` in the client service (folder LLMQ_DATA_DIR at /data)."""
        return self.compose_argv("run", "--rm", "--no-deps", "-T", "client", *args)

    def up(self, workers):
        self.compose("up", "-d", "--no-build", "--no-recreate", "--scale", f"worker={workers}",
                     timeout=900)

    # ---- containers ----
    def ids(self, service):
        """Ids of the service's containers, running or not (docker ps on the
        compose labels: much quicker than `compose ps`)."""
        return sh("docker", "ps", "-aq", "--filter",
                  f"label=com.docker.compose.project={self.project}", "--filter",
                  f"label=com.docker.compose.service={service}").stdout.split()

    def state(self, cid):
        return sh("docker", "inspect", "-f", "{{.State.Status}}", cid, check=False).stdout.strip()

    def health(self, cid):
        return sh("docker", "inspect", "-f", "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
                  cid, check=False).stdout.strip()

    def wait(self, cond, what, timeout=180):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if cond():
                return
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()}")

    def wait_healthy(self, service, n):
        self.wait(lambda: sum(self.health(c) == "healthy" for c in self.ids(service)) >= n,
                  f"{n} healthy {service} containers")

    def fake(self, path, method="GET"):
        if not getattr(self, "fake_ip", None):     # the fake container never restarts
            cid = self.ids("fake")[0]
            self.fake_ip = sh("docker", "inspect", "-f",
                              "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                              cid).stdout.strip()
        req = urllib.request.Request(f"http://{self.fake_ip}:8000{path}", method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"{}")

    def logs(self):
        r = self.compose("logs", "--no-color", "--tail", "25", check=False)
        return (r.stdout or "")[-6000:]

    def down(self):
        self.compose("down", "-v", "--remove-orphans", "-t", "5", check=False)

    def leftovers(self):
        label = f"label=com.docker.compose.project={self.project}"
        left = sh("docker", "ps", "-aq", "--filter", label).stdout.split()
        left += sh("docker", "network", "ls", "-q", "--filter", label).stdout.split()
        left += sh("docker", "volume", "ls", "-q", "--filter", label).stdout.split()
        return left


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write_batch(path, n, prefix):
    with open(path, "w") as f:
        for i in range(n):
            cid = f"{prefix}{i:06d}"
            f.write(json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": "m", "metadata": {"custom_id": cid},
                                         "messages": [{"role": "user", "content": f"q {i}"}]}})
                    + "\n")
    os.chmod(path, 0o644)


def check_results(path, n, prefix):
    """Returns (lost, duplicate results); asserts input order."""
    ids = []
    with open(path) as f:
        for line in f:
            o = json.loads(line)
            ids.append(o["custom_id"])
            assert o.get("error") is None, f"failed job in the results: {line[:300]}"
    want = [f"{prefix}{i:06d}" for i in range(n)]
    lost = len(set(want) - set(ids))
    dups = len(ids) - len(set(ids))
    if lost == 0 and dups == 0:
        assert ids == want, "results are not in input order"
    return lost, dups


def executed_twice(stack, prefix):
    counts = stack.fake("/counts")
    counts = counts.get("counts", counts)
    return sum(1 for k, v in counts.items() if k.startswith(prefix) and int(v) > 1)


class Batch:
    """A `llmq run` in the client container, in the background."""

    def __init__(self, stack, name, n):
        self.stack, self.name, self.n = stack, name, n
        write_batch(os.path.join(stack.data, f"{name}.jsonl"), n, f"{name}-")
        stack.fake("/reset", method="POST")
        self.t0 = time.monotonic()
        self.p = subprocess.Popen(stack.client_argv("run", f"/data/{name}.jsonl", "-o",
                                                    f"/data/{name}.out", "--quiet"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=stack.env, stdin=subprocess.DEVNULL)

    def requests(self):
        return int(self.stack.fake("/stats")["requests"])

    def wait_requests(self, n, what):
        self.stack.wait(lambda: self.requests() >= n or self.p.poll() is not None,
                        f"{n} upstream requests ({what})", timeout=300)
        assert self.p.poll() is None, \
            f"the batch finished before '{what}': too fast for the chaos, lower the concurrency"

    def finish(self, timeout=900):
        out, err = self.p.communicate(timeout=timeout)
        wall = time.monotonic() - self.t0
        assert self.p.returncode == 0, \
            f"llmq run exited {self.p.returncode}\n{out[-2000:]}\n{err[-3000:]}\n" \
            f"{self.stack.logs()}"
        lost, dups = check_results(os.path.join(self.stack.data, f"{self.name}.out"), self.n,
                                   f"{self.name}-")
        twice = executed_twice(self.stack, f"{self.name}-")
        return {"jobs": self.n, "wall_s": round(wall, 1), "jobs_per_s": round(self.n / wall),
                "lost": lost, "duplicates": dups, "executed_twice": twice}


def curve_refusals(st):
    """A stranger's key and a plain connection get nothing from the broker
    (plain `docker run`s on the stack's network: quicker than compose run;
    the client service itself, with its allow-listed key, runs the batches)."""
    base = ["docker", "run", "--rm", "--network", st.net, "-v", f"{st.data}:/data", IMAGE,
            "llmq", "--broker", "tcp://broker:5555", "--connect-timeout", "3"]
    r = sh(*base, "--curve-server-key", st.env["LLMQ_CURVE_SERVER_KEY"],
           "--curve-secret-file", "/data/stranger.key", "list", check=False)
    assert r.returncode == 2, f"a key off the allow-list got in (exit {r.returncode}): {r.stderr}"
    r = sh(*base, "list", check=False)
    assert r.returncode == 2, f"a plain (non-CURVE) client got in (exit {r.returncode})"
    log("CURVE: stranger key and plain client refused")


def chaos(st, jobs):
    b = Batch(st, "chaos", jobs)
    step = max(jobs // 20, 100)
    b.wait_requests(step, "broker kill")
    broker = st.ids("broker")[0]
    sh("docker", "kill", broker)
    log("killed the broker container")
    time.sleep(1)
    if st.state(broker) != "running":
        sh("docker", "start", broker)
    st.wait_healthy("broker", 1)
    log("broker back")
    seen = b.requests()
    b.wait_requests(seen + step, "worker kill")
    w = st.ids("worker")
    sh("docker", "kill", w[0])
    log("killed worker container " + w[0][:12])
    seen = b.requests()
    b.wait_requests(seen + step, "network cut")
    sh("docker", "network", "disconnect", st.net, w[1])
    log("cut worker " + w[1][:12] + " off the network for 10 s")
    time.sleep(10)
    sh("docker", "network", "connect", st.net, w[1])
    seen = b.requests()
    b.wait_requests(seen + step, "redis restart")
    sh("docker", "restart", "-t", "10", st.ids("redis")[0])
    log("restarted the redis container (AOF volume kept)")
    return b.finish()


def scaling(st, jobs):
    """Workers 2 -> 8 -> 1 during one batch. The fake upstream is paused
    while compose works, so that the batch cannot end before the scaling
    does, and so that every worker told to go (SIGTERM) holds requests in
    flight: they must finish them (drain), exit 0, and nothing may run
    twice."""
    st.up(2)
    st.wait(lambda: len(st.ids("worker")) == 2, "2 workers")
    b = Batch(st, "scale", jobs)
    b.wait_requests(jobs // 20, "scale to 8")
    fake = st.ids("fake")[0]
    sh("docker", "pause", fake)
    try:
        st.up(8)
    finally:
        sh("docker", "unpause", fake)
    log("scaled workers 2 -> 8")
    b.wait_requests(b.requests() + 300, "scale to 1")
    sh("docker", "pause", fake)
    try:
        since = sh("date", "+%s").stdout.strip()
        workers = st.ids("worker")
        assert len(workers) == 8, f"{len(workers)} workers, wanted 8"
        down = subprocess.Popen(
            st.compose_argv("up", "-d", "--no-build", "--no-recreate", "--scale", "worker=1"),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=st.env,
            stdin=subprocess.DEVNULL)
        drains = {}   # container -> its "draining: ..." log line

        def draining():
            for c in workers:
                if c not in drains:
                    err = sh("docker", "logs", c, check=False).stderr
                    line = [x for x in err.splitlines() if "draining:" in x]
                    if line:
                        drains[c] = line[-1]
            return len(drains) >= len(workers) - 1
        st.wait(draining, "7 workers to start draining")
        held = sum(" 0 in flight" not in line for line in drains.values())
    finally:
        sh("docker", "unpause", fake)
    out, _ = down.communicate(timeout=300)
    assert down.returncode == 0, f"scaling to 1 failed:\n{out}"
    log(f"scaled workers 8 -> 1: {len(workers) - 1} drained, {held} of them with jobs in flight")
    time.sleep(1)
    exits = sh("docker", "events", "--since", since, "--until", sh("date", "+%s").stdout.strip(),
               "--filter", "type=container", "--filter", "event=die", "--filter",
               f"label=com.docker.compose.project={st.project}", "--filter",
               "label=com.docker.compose.service=worker", "--format",
               "{{.Actor.Attributes.name}} {{.Actor.Attributes.exitCode}}").stdout.split("\n")
    exits = [e.split() for e in exits if e.strip()]
    assert len(exits) == len(workers) - 1 and all(code == "0" for _, code in exits), \
        f"drained workers did not all exit 0: {exits}"
    res = b.finish()
    assert res["executed_twice"] == 0, \
        f"{res['executed_twice']} jobs ran twice while workers were scaled: a drain lost work"
    return res


def remove_stale_projects():
    """Takes down the stacks of earlier runs of this test that died without
    cleaning up (killed by a timeout): projects llmqdeploy<PID> whose PID is
    gone."""
    r = sh("docker", "ps", "-a", "--format", '{{.Label "com.docker.compose.project"}}',
           "--filter", "label=com.docker.compose.project", check=False)
    for project in sorted(set(r.stdout.split())):
        pid = project[len("llmqdeploy"):]
        if not project.startswith("llmqdeploy") or not pid.isdigit() or \
                os.path.exists(f"/proc/{pid}"):
            continue
        log(f"removing the stale stack {project}")
        ids = sh("docker", "ps", "-aq", "--filter",
                 f"label=com.docker.compose.project={project}").stdout.split()
        if ids:
            sh("docker", "rm", "-f", "-v", *ids, check=False)
        for kind in ("network", "volume"):
            ids = sh("docker", kind, "ls", "-q", "--filter",
                     f"label=com.docker.compose.project={project}").stdout.split()
            if ids:
                sh("docker", kind, "rm", *ids, check=False)


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("deploy.compose: terminated"))
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", help="ignored (the images build their own binaries)")
    ap.add_argument("--jobs", type=int, default=20000)
    ap.add_argument("--scale-jobs", type=int, default=2000)
    ap.add_argument("--figures", help="also write the figures to this file")
    ap.add_argument("--keep", action="store_true", help="leave the stack up on failure")
    args = ap.parse_args()
    if args.figures and os.path.exists(args.figures):
        os.unlink(args.figures)
    if not docker_answers():
        print("SKIP deploy.compose: no Docker Engine answers (docker info)")
        return 0
    tool = compose_tool()
    if tool is None:
        print("SKIP deploy.compose: neither `docker compose` nor docker-compose is installed")
        return 0
    remove_stale_projects()
    t_all = time.monotonic()
    build_s, size_mb = build_images()
    log(f"images built in {build_s:.0f} s; {IMAGE} is {size_mb:.0f} MB")
    st = Stack(tool)
    ok = False
    try:
        st.make_secrets()
        t0 = time.monotonic()
        st.up(4)
        st.wait_healthy("worker", 4)
        log(f"stack up with 4 healthy workers in {time.monotonic() - t0:.0f} s "
            f"(compose: {' '.join(tool)})")
        curve_refusals(st)
        res_chaos = chaos(st, args.jobs)
        log(f"chaos: {res_chaos}")
        res_scale = scaling(st, args.scale_jobs)
        log(f"scale 2->8->1: {res_scale}")
        for name, r in (("chaos", res_chaos), ("scale", res_scale)):
            assert r["lost"] == 0 and r["duplicates"] == 0, f"{name}: {r}"
        st.down()
        left = st.leftovers()
        assert not left, f"`down -v` left behind: {left}"
        ok = True
        lines = ["deployment test figures (docker compose, 4 workers x concurrency "
                 f"{CONCURRENCY}, fake upstream {LATENCY_MS} ms, CURVE on):",
                 f"  image llmq {size_mb:.0f} MB; image builds {build_s:.0f} s; "
                 f"whole test {time.monotonic() - t_all:.0f} s"]
        for name, r in (("broker kill + worker kill + 10 s network cut + redis restart",
                         res_chaos), ("workers scaled 2 -> 8 -> 1", res_scale)):
            lines.append(f"  {name}: {r['jobs']} jobs in {r['wall_s']} s "
                         f"({r['jobs_per_s']} jobs/s), lost {r['lost']}, duplicates "
                         f"{r['duplicates']}, executed twice {r['executed_twice']}")
        print("\n" + "\n".join(lines))
        if args.figures:
            with open(args.figures, "w") as f:
                f.write("\n".join(lines) + "\n")
        print("deploy.compose: 1 passed, 0 failed")
        return 0
    finally:
        if not ok:
            print(st.logs(), file=sys.stderr)
            if args.keep:
                print(f"--keep: project {st.project} left up, folder {st.dir}", file=sys.stderr)
        if ok or not args.keep:
            st.down()
            shutil.rmtree(st.dir, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except AssertionError as e:
        print(f"FAIL deploy.compose: {e}", file=sys.stderr)
        print("deploy.compose: 0 passed, 1 failed")
        sys.exit(1)
