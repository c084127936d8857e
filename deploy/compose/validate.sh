#!/usr/bin/env bash
# Checks compose.yaml of this directory offline, without Docker:
#   1. compose-spec.json is the vendored schema, unchanged (its sha256 below);
#   2. compose.yaml parses (duplicate keys refused, as Compose refuses them;
#      `<<` merge keys resolved, as Compose resolves them) and is valid against
#      the Compose Specification's JSON schema (draft 2020-12, with Python's
#      `jsonschema`; unknown fields are refused by the schema itself);
#   3. what the schema leaves open: durations are Go durations (`5s`, `1m30s`);
#      the names that tie the services together agree: every `depends_on`
#      names a service, every build context and Dockerfile and every bound
#      file exists; and the Sluice services (command `serve`): at least two,
#      each with its own SLUICE_INSTANCE_ID (static group membership) and
#      otherwise the same command, image and spec file, which is bound from a
#      file here that parses, names a broker that is a service here and keeps
#      its checkpoints in `s3://BUCKET/PREFIX` on an endpoint (AWS_ENDPOINT_URL)
#      that is a service here, with credentials and a region in the
#      environment; each waits for that service to be healthy and for the
#      one-shot service that creates every topic of the spec (its command
#      names them) to complete, and has a healthcheck on /readyz.
#
# compose-spec.json is the schema of the Compose Specification
# (https://github.com/compose-spec/compose-spec, schema/compose-spec.json,
# Apache-2.0), as vendored, unchanged, by PyPI's check-jsonschema 0.39.0
# (check_jsonschema/builtin_schemas/vendor/compose-spec.json). To update it:
# `pip download --no-deps check-jsonschema==VERSION`, copy that file here, and
# change COMPOSE_SPEC_SOURCE and COMPOSE_SPEC_SHA256 below.
#
# Python: $SLUICE_PYTHON, or the venv deploy/local/setup.sh installs (with
# jsonschema and PyYAML). Prints a summary on its last line; exits non-zero on
# the first problem found.
set -euo pipefail

COMPOSE_SPEC_SOURCE="check-jsonschema 0.39.0"
COMPOSE_SPEC_SHA256=d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64

dir="$(cd "$(dirname "$0")" && pwd)"
python="${SLUICE_PYTHON:-${SLUICE_CACHE:-$HOME/.cache/sluice}/pyarrow-venv/bin/python}"
if ! "$python" -c 'import jsonschema, yaml' 2>/dev/null; then
  echo "validate.sh: $python cannot import jsonschema and yaml; run deploy/local/setup.sh" >&2
  exit 2
fi

exec "$python" - "$dir" "$COMPOSE_SPEC_SOURCE" "$COMPOSE_SPEC_SHA256" <<'EOF'
import hashlib, json, os, re, sys
from importlib.metadata import version
from urllib.parse import urlsplit
import jsonschema, yaml

here, source, sha256 = sys.argv[1:]
shown = "deploy/compose"

def fail(message):
    sys.exit(f"{shown}: {message}")

# 1. The schema, as vendored.
with open(os.path.join(here, "compose-spec.json"), "rb") as f:
    raw = f.read()
if hashlib.sha256(raw).hexdigest() != sha256:
    fail(f"compose-spec.json is not the one of {source} (sha256 {sha256}); see validate.sh")
schema = json.loads(raw)

# 2. The file parses and is valid against the schema.
class Loader(yaml.SafeLoader):
    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)

def load(path):
    try:
        with open(path) as f:
            return yaml.load(f, Loader=Loader)
    except (OSError, yaml.YAMLError) as e:
        fail(f"{os.path.relpath(path, here)} does not parse: {e}")

compose = load(os.path.join(here, "compose.yaml"))
validator = jsonschema.Draft202012Validator(schema)
errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
if errors:
    fail("compose.yaml is not valid against the Compose Specification:\n" + "\n".join(
        f"  {e.json_path}: {e.message}" for e in errors))

# 3. The names that tie the services together.
services = compose["services"]

def listed(value):
    """A list of `A=B` strings or a mapping, as a mapping."""
    if isinstance(value, dict):
        return {k: "" if v is None else str(v) for k, v in value.items()}
    return dict(item.split("=", 1) if "=" in item else (item, "") for item in value or [])

def service_of(url, what):
    host = urlsplit(url if "://" in url else f"tcp://{url}").hostname
    if host not in services:
        fail(f"{what} {url}: {host} is not a service here")
    return host

duration = re.compile(r"([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+")
for name, s in services.items():
    check = s.get("healthcheck") or {}
    times = {f"healthcheck.{k}": check.get(k) for k in ("interval", "timeout", "start_period", "start_interval")}
    for field, value in {**times, "stop_grace_period": s.get("stop_grace_period")}.items():
        if value is not None and not duration.fullmatch(str(value)):
            fail(f"service {name}: {field} {value!r} is not a duration (e.g. 5s, 1m30s)")
    for other in s.get("depends_on") or []:
        if other not in services:
            fail(f"service {name}: depends on {other}, which is not a service here")
    build = s.get("build")
    if build is not None:
        context = os.path.join(here, build if isinstance(build, str) else build.get("context", "."))
        dockerfile = os.path.join(context, build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
        if not os.path.isfile(dockerfile):
            fail(f"service {name}: no Dockerfile {os.path.relpath(dockerfile, here)}")
    for v in s.get("volumes") or []:
        if isinstance(v, str) and v.startswith((".", "/")):
            if not os.path.exists(os.path.join(here, v.split(":")[0])):
                fail(f"service {name}: binds {v.split(':')[0]}, which does not exist")

def command_of(s):
    c = s.get("command") or []
    return c.split() if isinstance(c, str) else c

sluices = {n: s for n, s in services.items() if command_of(s)[:1] == ["serve"]}
if len(sluices) < 2:
    fail(f"{len(sluices)} Sluice services (command `serve`); a shared pipeline needs two or more")
instances = {}
for name, s in sluices.items():
    env = listed(s.get("environment"))
    instance = env.get("SLUICE_INSTANCE_ID", "")
    if not instance:
        fail(f"service {name}: no SLUICE_INSTANCE_ID (static group membership)")
    if instance in instances.values():
        fail(f"service {name}: SLUICE_INSTANCE_ID {instance} is also {[n for n, i in instances.items() if i == instance][0]}'s")
    instances[name] = instance
    alike = lambda t: {k: v for k, v in t.items() if k not in ("hostname", "ports", "container_name")}
    first = next(iter(sluices.values()))
    if alike(s) | {"environment": None} != alike(first) | {"environment": None} or \
            {k: v for k, v in env.items() if k != "SLUICE_INSTANCE_ID"} != \
            {k: v for k, v in listed(first.get("environment")).items() if k != "SLUICE_INSTANCE_ID"}:
        fail(f"service {name} differs from {next(iter(sluices))} beyond its instance id, host name and ports")

# One spec, the same for all (checked just above): the first service's.
name, s = next(iter(sluices.items()))
env = listed(s.get("environment"))
args = command_of(s)
files = [a.split("=", 1)[1] for a in args if a.startswith("--pipeline=")]
files += [b for a, b in zip(args, args[1:]) if a == "--pipeline"]
if len(files) != 1:
    fail(f"service {name}: {len(files)} --pipeline FILE; one expected")
binds = [v.split(":") for v in s.get("volumes") or [] if isinstance(v, str)]
bound = [b for b in binds if len(b) >= 2 and b[1] == files[0]]
if not bound or "ro" not in bound[0][2:]:
    fail(f"service {name}: --pipeline {files[0]} is not a file here bound read-only")
spec = load(os.path.join(here, bound[0][0]))
pipeline = spec.get("name")
group = (spec.get("source") or {}).get("group") or f"sluice-{pipeline}"
service_of(str((spec.get("kafka") or {}).get("brokers", "")).split(",")[0], "kafka.brokers")
checkpoint = spec.get("checkpoint") or {}
where = str(checkpoint.get("dir", ""))
bucket, _, prefix = where.removeprefix("s3://").partition("/")
if not where.startswith("s3://") or not bucket or not prefix.strip("/"):
    fail(f"{bound[0][0]}: checkpoint.dir {where or '(none)'} is not s3://BUCKET/PREFIX "
         "(the processes share their tasks' checkpoints)")
for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
    if not env.get(key):
        fail(f"service {name}: no {key} for {where}")
if not (env.get("AWS_REGION") or (checkpoint.get("s3") or {}).get("region")):
    fail(f"service {name}: no AWS_REGION (or checkpoint.s3.region) for {where}")
endpoint = (checkpoint.get("s3") or {}).get("endpoint") or env.get("AWS_ENDPOINT_URL")
if not endpoint:
    fail(f"service {name}: no AWS_ENDPOINT_URL (or checkpoint.s3.endpoint) for {where}")
store = service_of(endpoint, "the S3 endpoint")
if bucket not in json.dumps(services[store].get("command")):
    fail(f"service {store}: its command does not create the bucket {bucket}")
depends = s.get("depends_on") or {}
if isinstance(depends, list) or (depends.get(store) or {}).get("condition") != "service_healthy":
    fail(f"service {name}: does not wait for {store} to be healthy")
topics = list((spec.get("source") or {}).get("topics") or [])
topics += [o["topic"] for o in (spec.get("outputs") or {}).values() if o.get("topic")]
topics += [t for t in [(spec.get("dead_letter") or {}).get("topic")] if t]
creators = [d for d, c in depends.items() if c.get("condition") == "service_completed_successfully"]
made = " ".join(json.dumps(services[d].get("command")) for d in creators)
missing = [t for t in topics if f" {t} " not in made.replace("\\n", " ").replace('"', " ")]
if not creators or missing:
    fail(f"service {name}: no one-shot service it waits for creates the topics {missing or topics}")
if "/readyz" not in json.dumps((s.get("healthcheck") or {}).get("test")):
    fail(f"service {name}: no healthcheck on /readyz")

print(f"{shown}: compose.yaml valid against the Compose Specification (compose-spec.json of {source}; "
      f"jsonschema {version('jsonschema')}, offline); {len(sluices)} Sluice services "
      f"({', '.join(instances.values())}) run pipeline {pipeline} in group {group}, "
      f"checkpoints in {where} on service {store}")
EOF
