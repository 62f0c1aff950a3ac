"""Validates deploy/k8s offline (run inside the venv of test_k8s.py).

1. Every Kubernetes object against the schemas of kubernetes-validate
   (strict: unknown fields are errors), for the oldest and newest Kubernetes
   versions we claim.
2. The KEDA ScaledObject against KEDA's CRD schema
   (deploy/k8s/schemas/keda.sh_scaledobjects.yaml), made strict the same way.
3. llmq's own rules for the manifests: probes, resources, the API key from a
   Secret, a PodDisruptionBudget for the workers, a grace period longer than
   the drain, the ScaledObject aimed at the worker Deployment on
   llmq_jobs_pending, CURVE on.
4. Each check rejects a broken copy of a good manifest (so a check that
   accepts everything fails here).
Prints one line per object and a summary; exit 1 on any failure."""
import copy
import glob
import os
import sys

import jsonschema
import kubernetes_validate
import yaml

K8S_VERSIONS = ["1.27.0", "1.37.0"]
HERE = os.path.dirname(os.path.abspath(__file__))
K8S_DIR = os.path.join(HERE, "..", "..", "deploy", "k8s")


def load_objects():
    objs = []
    for path in sorted(glob.glob(os.path.join(K8S_DIR, "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    objs.append((os.path.basename(path), doc))
    return objs


def strict(schema):
    """Copy of an OpenAPI v3 schema where objects with listed properties
    reject unknown ones (what kubectl --validate=strict does)."""
    s = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node \
                    and "additionalProperties" not in node:
                node["additionalProperties"] = False
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(s)
    return s


def keda_schema():
    with open(os.path.join(K8S_DIR, "schemas", "keda.sh_scaledobjects.yaml")) as f:
        crd = yaml.safe_load(f)
    ver = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"][0]
    return strict(ver["schema"]["openAPIV3Schema"])


def schema_errors(obj):
    """Errors of one object against its schema (Kubernetes or KEDA)."""
    if obj.get("apiVersion", "").startswith("keda.sh/"):
        v = jsonschema.Draft7Validator(keda_schema())
        return [f"{'.'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(obj)]
    errs = []
    for ver in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, ver, strict=True)
        except kubernetes_validate.ValidationError as e:
            errs.append(f"k8s {ver}: {'.'.join(map(str, e.path))}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            errs.append(f"k8s {ver}: no schema: {e}")
    return errs


def containers(obj):
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    return spec, spec.get("containers", [])


def env_of(c):
    return {e["name"]: e for e in c.get("env", [])}


def rule_errors(objs):
    """llmq's rules over the whole set of objects."""
    errs = []
    by = {(o["kind"], o["metadata"]["name"]): o for _, o in objs}
    for name in ("llmq-redis", "llmq-broker", "llmq-worker"):
        kind = "StatefulSet" if name == "llmq-redis" else "Deployment"
        o = by.get((kind, name))
        if o is None:
            errs.append(f"no {kind} {name}")
            continue
        _, cs = containers(o)
        for c in cs:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    errs.append(f"{name}/{c['name']}: no {probe}")
            req = c.get("resources", {}).get("requests", {})
            if "cpu" not in req or "memory" not in req:
                errs.append(f"{name}/{c['name']}: no cpu and memory requests")
    redis = by.get(("StatefulSet", "llmq-redis"), {})
    if not redis.get("spec", {}).get("volumeClaimTemplates"):
        errs.append("llmq-redis: no persistent volume")
    elif "--appendonly" not in " ".join(containers(redis)[1][0].get("args", [])):
        errs.append("llmq-redis: AOF is off")
    worker = by.get(("Deployment", "llmq-worker"))
    if worker:
        pod, cs = containers(worker)
        c = cs[0]
        env = env_of(c)
        if "LLMQ_API_KEY" in env and "value" in env["LLMQ_API_KEY"]:
            errs.append("llmq-worker: API key written into the pod spec")
        key_file = env.get("LLMQ_API_KEY_FILE", {}).get("value", "")
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        secrets = {v["name"] for v in pod.get("volumes", []) if "secret" in v}
        if not any(key_file.startswith(mounts[v] + "/") for v in secrets if v in mounts):
            errs.append("llmq-worker: LLMQ_API_KEY_FILE is not in a mounted Secret")
        args = c.get("args", [])
        drain = int(args[args.index("--drain-timeout") + 1]) if "--drain-timeout" in args else 30
        if pod.get("terminationGracePeriodSeconds", 30) <= drain:
            errs.append("llmq-worker: terminationGracePeriodSeconds does not cover the drain")
        if "LLMQ_CURVE_SERVER_KEY" not in env:
            errs.append("llmq-worker: CURVE is off")
        sel = worker["spec"]["selector"]["matchLabels"]
        if not any(o["kind"] == "PodDisruptionBudget" and
                   o["spec"]["selector"].get("matchLabels") == sel for _, o in objs):
            errs.append("llmq-worker: no PodDisruptionBudget")
    broker = by.get(("Deployment", "llmq-broker"))
    if broker and "LLMQ_CURVE_CLIENTS" not in env_of(containers(broker)[1][0]):
        errs.append("llmq-broker: no CURVE allow-list")
    so = [o for _, o in objs if o["kind"] == "ScaledObject"]
    if not so:
        errs.append("no KEDA ScaledObject")
    for o in so:
        ref = o["spec"]["scaleTargetRef"]
        if (ref.get("kind", "Deployment"), ref["name"]) != ("Deployment", "llmq-worker"):
            errs.append("ScaledObject: does not scale the llmq-worker Deployment")
        prom = [t for t in o["spec"]["triggers"] if t["type"] == "prometheus"]
        if not prom:
            errs.append("ScaledObject: no prometheus trigger")
        for t in prom:
            md = t["metadata"]
            for k in ("serverAddress", "query", "threshold"):
                if k not in md:
                    errs.append(f"ScaledObject: prometheus trigger without {k}")
            if "llmq_jobs_pending" not in md.get("query", ""):
                errs.append("ScaledObject: query is not on llmq_jobs_pending")
    return errs


def broken_copies(objs):
    """(description, object list) pairs that each check must reject."""
    out = []
    for i, (f, o) in enumerate(objs):
        if o["kind"] == "Deployment" and o["metadata"]["name"] == "llmq-worker":
            b = copy.deepcopy(o)
            b["spec"]["replicas"] = "four"
            out.append(("schema: replicas as a string", [(f, b)], "schema"))
            b = copy.deepcopy(o)
            b["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
            out.append(("schema: misspelt field", [(f, b)], "schema"))
            b = copy.deepcopy(o)
            del b["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
            out.append(("rules: no liveness probe", objs[:i] + [(f, b)] + objs[i + 1:], "rules"))
            b = copy.deepcopy(o)
            b["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
            out.append(("rules: grace shorter than drain", objs[:i] + [(f, b)] + objs[i + 1:],
                        "rules"))
        if o["kind"] == "ScaledObject":
            b = copy.deepcopy(o)
            del b["spec"]["triggers"]
            out.append(("keda schema: no triggers", [(f, b)], "schema"))
            b = copy.deepcopy(o)
            b["spec"]["minReplicaCount"] = "one"
            out.append(("keda schema: minReplicaCount as a string", [(f, b)], "schema"))
            b = copy.deepcopy(o)
            b["spec"]["scaleTargetRef"]["nme"] = "x"
            out.append(("keda schema: misspelt field", [(f, b)], "schema"))
            b = copy.deepcopy(o)
            b["spec"]["triggers"][0]["metadata"]["query"] = "sum(up)"
            out.append(("rules: query off the metric", objs[:i] + [(f, b)] + objs[i + 1:],
                        "rules"))
    return out


def main():
    objs = load_objects()
    failed = 0
    for f, o in objs:
        errs = schema_errors(o)
        print(f"{'ok  ' if not errs else 'FAIL'} {f}: {o['kind']} {o['metadata']['name']}")
        for e in errs:
            print(f"     {e}")
        failed += bool(errs)
    errs = rule_errors(objs)
    for e in errs:
        print(f"FAIL rule: {e}")
    failed += len(errs)
    caught = 0
    cases = broken_copies(objs)
    for what, objs_b, kind in cases:
        errs = [e for _, o in objs_b for e in schema_errors(o)] if kind == "schema" \
            else rule_errors(objs_b)
        if errs:
            caught += 1
        else:
            print(f"FAIL the validator accepted a broken manifest ({what})")
            failed += 1
    kinds = sorted({o["kind"] for _, o in objs})
    print(f"validated {len(objs)} objects ({', '.join(kinds)}) against Kubernetes "
          f"{' and '.join(K8S_VERSIONS)} and KEDA v1alpha1; {caught}/{len(cases)} broken "
          f"copies rejected")
    if len(cases) < 8:
        print("FAIL fewer broken copies than expected (manifests renamed?)")
        failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
