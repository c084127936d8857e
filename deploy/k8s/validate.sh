#!/usr/bin/env bash
# Checks the Kubernetes manifests of this directory offline, without a cluster:
#   1. every *.yaml parses, and each document has apiVersion, kind and a name;
#   2. kustomization.yaml uses only `resources` (so `kubectl apply -k` applies
#      exactly those files: the rendering is their documents in that order) and
#      lists every manifest here but the *.example.yaml ones, which it must not
#      list (applying them again would overwrite real credentials);
#   3. every document of the rendering and of the examples is valid against the
#      Kubernetes schemas of the versions below, with unknown fields refused
#      (`kubernetes-validate --strict`, whose package bundles the schemas: no
#      network is used); a kind it has no schema for is an error, not a warning;
#   4. the names that tie the documents together agree: selectors and pod
#      labels, the headless Service, the ConfigMap and Secret keys the pods use,
#      named ports, the Prometheus port; and the spec each server runs
#      (`--pipeline FILE`) is a key of a ConfigMap mounted at FILE, parses, and
#      checkpoints where every replica reaches (the replicas share their tasks'
#      checkpoints): an `s3://BUCKET/PREFIX` with the AWS credentials from a
#      Secret here and a region (env or the spec's `checkpoint.s3`), or below
#      the writable mount of a ReadWriteMany volume claimed here.
# Python: $SLUICE_PYTHON, or the venv deploy/local/setup.sh installs. Prints one
# line per document and version, then a summary on its last line; exits
# non-zero on the first kind of problem found.
set -euo pipefail

# The oldest Kubernetes the manifests target, and the newest the pinned
# kubernetes-validate (deploy/local/setup.sh) has schemas for.
KUBERNETES_VERSIONS=(1.31 1.37)

dir="$(cd "$(dirname "$0")" && pwd)"
python="${SLUICE_PYTHON:-${SLUICE_CACHE:-$HOME/.cache/sluice}/pyarrow-venv/bin/python}"
if ! "$python" -c 'import kubernetes_validate.utils, yaml' 2>/dev/null; then
  echo "validate.sh: $python cannot import kubernetes_validate; run deploy/local/setup.sh" >&2
  exit 2
fi

exec "$python" - "$dir" "${KUBERNETES_VERSIONS[@]}" <<'EOF'
import os, subprocess, sys
import yaml
from kubernetes_validate.version import __version__ as kv_version

here, versions = sys.argv[1], sys.argv[2:]
shown = "deploy/k8s"

def fail(message):
    sys.exit(f"{shown}: {message}")

# 1. Every file parses; every document names itself.
files = sorted(f for f in os.listdir(here) if f.endswith((".yaml", ".yml")))
docs = {}
for name in files:
    try:
        with open(os.path.join(here, name)) as f:
            found = [d for d in yaml.safe_load_all(f) if d is not None]
    except yaml.YAMLError as e:
        fail(f"{name} does not parse: {e}")
    if not found:
        fail(f"{name} has no document")
    for d in found:
        if not (isinstance(d, dict) and d.get("apiVersion") and d.get("kind")
                and (name == "kustomization.yaml" or (d.get("metadata") or {}).get("name"))):
            fail(f"{name}: a document without apiVersion, kind or metadata.name")
    docs[name] = found

# 2. The kustomization lists every manifest but the examples.
if "kustomization.yaml" not in docs:
    fail("kustomization.yaml is missing")
(kustomization,) = docs.pop("kustomization.yaml")
if kustomization["kind"] != "Kustomization" or set(kustomization) - {"apiVersion", "kind", "resources"}:
    fail("kustomization.yaml must be a Kustomization with `resources` only")
resources = kustomization.get("resources") or []
examples = sorted(n for n in docs if n.endswith(".example.yaml"))
if len(set(resources)) != len(resources):
    fail("kustomization.yaml lists a resource twice")
if sorted(resources) != sorted(set(docs) - set(examples)):
    fail(f"kustomization.yaml lists {sorted(resources)}; the manifests here (examples aside) "
         f"are {sorted(set(docs) - set(examples))}")

# 3. The rendering and the examples against the schemas, every document.
checked = resources + examples
command = [sys.executable, "-m", "kubernetes_validate", "--strict"]
for v in versions:
    command += ["-k", v]
run = subprocess.run(command + checked, cwd=here, capture_output=True, text=True)
lines = (run.stdout + run.stderr).splitlines()
for line in lines:
    print(line)
expected = sum(len(docs[n]) for n in checked) * len(versions)
if run.returncode != 0 or any(not l.startswith("INFO ") for l in lines) or len(lines) != expected:
    fail(f"kubernetes-validate found problems (exit {run.returncode}; "
         f"{len(lines)} lines for {expected} document checks)")

# 4. The names that tie the documents together.
rendered = [d for n in resources for d in docs[n]]
every = rendered + [d for n in examples for d in docs[n]]
def named(kind):
    return {d["metadata"]["name"]: d for d in every if d["kind"] == kind}
services, config_maps, secrets = named("Service"), named("ConfigMap"), named("Secret")
claims = named("PersistentVolumeClaim")

def parsed(cm, key):
    try:
        return yaml.safe_load(cm["data"][key])
    except yaml.YAMLError as e:
        fail(f"configmap/{cm['metadata']['name']}: {key} does not parse: {e}")

def mount_of(path, mounts):
    """The mount whose directory holds `path` (the deepest one), if any."""
    holding = [m for m in mounts
               if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    return max(holding, key=lambda m: len(m["mountPath"]), default=None)
for s in [d for d in rendered if d["kind"] == "StatefulSet"]:
    sts = s["metadata"]["name"]
    pod = s["spec"]["template"]
    labels = pod["metadata"].get("labels") or {}
    def selects(selector, what):
        if not selector or any(labels.get(k) != v for k, v in selector.items()):
            fail(f"{what} selects {selector}, not the pods of statefulset/{sts} ({labels})")
    selects(s["spec"]["selector"].get("matchLabels"), f"statefulset/{sts}")
    headless = services.get(s["spec"]["serviceName"])
    if not headless or headless["spec"].get("clusterIP") != "None":
        fail(f"statefulset/{sts}: serviceName {s['spec']['serviceName']} is not a headless Service here")
    for d in rendered:
        if d["kind"] == "Service":
            selects(d["spec"].get("selector"), f"service/{d['metadata']['name']}")
        if d["kind"] == "PodDisruptionBudget":
            selects(d["spec"]["selector"].get("matchLabels"), f"poddisruptionbudget/{d['metadata']['name']}")
    containers = pod["spec"]["containers"]
    ports = {p.get("name"): p["containerPort"] for c in containers for p in c.get("ports", [])}
    for d in services.values():
        for p in d["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in ports:
                fail(f"service/{d['metadata']['name']}: no container port named {p['targetPort']}")
    for c in containers:
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = (c.get(probe) or {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                fail(f"container {c['name']}: {probe} uses port {port}, which it does not name")
    scrape = (pod["metadata"].get("annotations") or {}).get("prometheus.io/port")
    if scrape is not None and int(scrape) not in ports.values():
        fail(f"statefulset/{sts}: prometheus.io/port {scrape} is not a container port")
    for c in containers:
        for e in c.get("env", []):
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref:
                secret = secrets.get(ref["name"]) or fail(f"env {e['name']}: no Secret {ref['name']} here")
                if ref["key"] not in {**secret.get("data", {}), **secret.get("stringData", {})}:
                    fail(f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}")
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref:
                cm = config_maps.get(ref["name"]) or fail(f"env {e['name']}: no ConfigMap {ref['name']} here")
                if ref["key"] not in cm.get("data", {}) and not ref.get("optional"):
                    fail(f"env {e['name']}: ConfigMap {ref['name']} has no key {ref['key']}")
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    for v in volumes.values():
        if "configMap" in v:
            cm = config_maps.get(v["configMap"]["name"]) or fail(f"volume {v['name']}: no ConfigMap here")
            for item in v["configMap"].get("items", []):
                if item["key"] not in cm.get("data", {}):
                    fail(f"volume {v['name']}: ConfigMap {cm['metadata']['name']} has no key {item['key']}")
        if "persistentVolumeClaim" in v and v["persistentVolumeClaim"]["claimName"] not in claims:
            fail(f"volume {v['name']}: no PersistentVolumeClaim {v['persistentVolumeClaim']['claimName']} here")
    for c in containers:
        args, mounts = c.get("args", []), c.get("volumeMounts", [])
        for m in mounts:
            if m["name"] not in volumes:
                fail(f"container {c['name']}: mounts volume {m['name']}, which the pod does not have")
        files = [a.split("=", 1)[1] for a in args if a.startswith("--pipeline=")]
        files += [b for a, b in zip(args, args[1:]) if a == "--pipeline"]
        if not files:
            fail(f"container {c['name']}: no --pipeline FILE: the server would run no pipeline")
        for file in files:
            m = mount_of(file, mounts)
            source = volumes[m["name"]].get("configMap") if m else None
            if not source:
                fail(f"container {c['name']}: --pipeline {file} is not in a mounted ConfigMap")
            inside = file[len(m["mountPath"].rstrip("/")) + 1:]
            items = source.get("items")
            keys = [i["key"] for i in items if i["path"] == inside] if items else [inside]
            cm = config_maps[source["name"]]
            if not keys or keys[0] not in cm.get("data", {}):
                fail(f"container {c['name']}: --pipeline {file}: configmap/{source['name']} has no such key")
            spec = parsed(cm, keys[0])
            checkpoint = spec.get("checkpoint") or {}
            where = str(checkpoint.get("dir", ""))
            what = f"configmap/{source['name']}: {keys[0]}: checkpoint.dir {where or '(none)'}"
            if where.startswith("s3://"):
                # In S3: a bucket and a prefix; the credentials from a Secret
                # (never the spec), a region from the env or the spec.
                bucket, _, prefix = where[len("s3://"):].partition("/")
                if not bucket or not prefix.strip("/"):
                    fail(f"{what}: not s3://BUCKET/PREFIX")
                env = {e["name"]: e for e in c.get("env", [])}
                for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                    if "secretKeyRef" not in ((env.get(name) or {}).get("valueFrom") or {}):
                        fail(f"{what}: container {c['name']} has no {name} from a Secret")
                region = [n for n in ("AWS_REGION", "AWS_DEFAULT_REGION") if n in env]
                if not region and not (checkpoint.get("s3") or {}).get("region"):
                    fail(f"{what}: no region (AWS_REGION or checkpoint.s3.region)")
                endpoint = env.get("AWS_ENDPOINT_URL") or {}
                ref = (endpoint.get("valueFrom") or {}).get("configMapKeyRef")
                url = config_maps[ref["name"]].get("data", {}).get(ref["key"]) if ref else endpoint.get("value")
                if url is not None and not url.startswith(("http://", "https://")):
                    fail(f"{what}: AWS_ENDPOINT_URL {url!r} is not an http(s) URL")
                continue
            shared = mount_of(where, mounts) if where.startswith("/") else None
            claim = (volumes[shared["name"]].get("persistentVolumeClaim") or {}) if shared else {}
            modes = (claims.get(claim.get("claimName")) or {}).get("spec", {}).get("accessModes", [])
            if "ReadWriteMany" not in modes or shared.get("readOnly"):
                fail(f"{what} is neither s3://BUCKET/PREFIX nor below the writable mount of a "
                     "ReadWriteMany volume claimed here (replicas share their tasks' checkpoints)")
for cm in config_maps.values():
    for key in cm.get("data", {}):
        if key.endswith((".yaml", ".yml")):
            parsed(cm, key)

n_docs = sum(len(docs[n]) for n in checked)
print(f"{shown}: {n_docs} documents in {len(checked)} files valid against Kubernetes "
      f"{' and '.join(versions)} (kubernetes-validate {kv_version}, strict, offline); "
      f"kustomization lists all {len(resources)} to apply")
EOF
