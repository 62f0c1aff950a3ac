"""deploy.k8s: validates deploy/k8s offline, without kubectl or a cluster.

Makes (once, cached under the build folder) a venv with the pinned validator
of requirements-k8s.txt, then runs validate_k8s.py in it. Only the package
installs touch the network (PyPI); the schemas come inside the packages and
the repository.
    /usr/bin/python3 tests/deploy/test_k8s.py --bin build"""
import argparse
import hashlib
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REQ = os.path.join(HERE, "requirements-k8s.txt")


def venv(build):
    """Returns the venv's python, making or refreshing the venv when the
    requirements changed."""
    d = os.path.join(os.path.abspath(build), "deploy-venv")
    py = os.path.join(d, "bin", "python")
    with open(REQ, "rb") as f:
        want = hashlib.sha256(f.read()).hexdigest()
    stamp = os.path.join(d, ".requirements.sha256")
    if os.path.exists(stamp) and open(stamp).read() == want and os.path.exists(py):
        return py
    shutil.rmtree(d, ignore_errors=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", d], check=True)
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "--no-input", "-r", REQ], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stdout[-3000:], r.stderr[-3000:], sep="\n", file=sys.stderr)
        raise SystemExit("deploy.k8s: could not install the pinned validator "
                         "(requirements-k8s.txt) from PyPI")
    with open(stamp, "w") as f:
        f.write(want)
    return py


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="build", help="the CMake build folder")
    args = ap.parse_args()
    py = venv(args.bin)
    r = subprocess.run([py, os.path.join(HERE, "validate_k8s.py")])
    print("deploy.k8s: " + ("1 passed, 0 failed" if r.returncode == 0 else "0 passed, 1 failed"))
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
