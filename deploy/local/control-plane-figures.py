#!/usr/bin/env python3
"""Control-plane figures of `sluice serve`, against a broker of its own.

- Upload to running, per example module: from the start of the module's
  upload (POST /v1/modules/NAME: streamed, compiled with a cold compilation
  cache, validated, stored) to the first batch of a new pipeline using it
  (a record waits in its input topic).
- Swap pause under continuous load: a strategy-map pipeline is fed by a
  producer that never lets it idle; the module is swapped to a second
  version several times. `swap_ms` is the work at the batch boundary;
  `pause_ms` the time from the last batch on the old version to the
  first on the new (see the swap record in the status document).

Usage: deploy/local/control-plane-figures.py   (after deploy/local/setup.sh;
builds the release host and the example guests first)."""

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SLUICE = os.path.join(ROOT, "target/release/sluice")
GUESTS = os.path.join(ROOT, "target/wasm32-wasip2/guest")
SWAPS = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(base, method, path, body=None, content_type="application/json"):
    """The server takes a body only with its route's content type."""
    headers = {"Content-Type": content_type} if body is not None else {}
    request = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait(what, check, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.002)
    sys.exit(f"timed out waiting for {what}")


def spec(name, brokers, module, source, out, aggregate=False):
    window = (
        "    aggregate:\n      window: { tumbling: 1m }\n"
        "      watermark: { max_out_of_orderness: 5s, idle_timeout: 10s }\n"
        if aggregate
        else ""
    )
    return (
        f"name: {name}\nkafka: {{ brokers: \"{brokers}\" }}\n"
        f"source: {{ topics: [{source}] }}\nbatch: {{ max_records: 1000, max_wait: 10ms }}\n"
        f"transforms:\n  - module: {module}\n{window}"
        f"outputs:\n  default: {{ topic: {out} }}\n  alerts: {{ topic: {out} }}\n"
        f"dead_letter: {{ topic: {out}-dlq }}\n"
    ).encode()


def main():
    subprocess.run(["cargo", "build", "--locked", "--release", "-p", "sluice"], cwd=ROOT, check=True)
    subprocess.run(
        ["cargo", "build", "--locked", "--profile", "guest", "--target", "wasm32-wasip2",
         "-p", "filter-heartbeats", "-p", "strategy-map", "-p", "alert-router", "-p", "event-window-agg"],
        cwd=ROOT, check=True)
    nisshi = subprocess.run([os.path.join(ROOT, "deploy/local/setup.sh")], check=True,
                            capture_output=True, text=True).stdout.strip().splitlines()[-1]
    work = tempfile.mkdtemp(prefix="sluice-figures-")
    port = free_port()
    brokers = f"127.0.0.1:{port}"
    processes = []
    try:
        processes.append(subprocess.Popen(
            [nisshi, "broker", "--listener-url", f"tcp://{brokers}", "--advertised-listener-url",
             f"tcp://{brokers}", "--storage-engine", "memory://nisshi/", "--group-initial-rebalance-delay", "0s"],
            cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait("the broker", lambda: socket.socket().connect_ex(("127.0.0.1", port)) == 0)
        server = subprocess.Popen(
            [SLUICE, "serve", "--data", os.path.join(work, "data"), "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "server.log"), "w"), text=True,
            # A compilation cache of its own: the first upload of each module compiles it.
            env={**os.environ, "RUST_LOG": "warn", "XDG_CACHE_HOME": os.path.join(work, "cache")})
        processes.append(server)
        base = server.stdout.readline().strip().removeprefix("listening on ")

        modules = [("filter-heartbeats", False), ("strategy-map", False), ("alert-router", False),
                   ("event-window-agg", True)]
        topics = [t for m, _ in modules for t in (f"{m}-in", f"{m}-out", f"{m}-out-dlq")]
        topics += ["load-in", "load-out", "load-out-dlq"]
        subprocess.run([SLUICE, "create-topics", "--brokers", brokers, "--partitions", "1", *topics], check=True)

        print("| module | size (KiB) | upload + validate (ms) | upload to first batch (ms) |")
        print("|---|---:|---:|---:|")
        for module, aggregate in modules:
            subprocess.run([SLUICE, "sample", "--brokers", brokers, "--topic", f"{module}-in", "--count", "1"],
                           check=True, stdout=subprocess.DEVNULL)
            wasm = open(os.path.join(GUESTS, module.replace("-", "_") + ".wasm"), "rb").read()
            started = time.monotonic()
            status, body = http(base, "POST", f"/v1/modules/{module}", wasm, "application/wasm")
            assert status == 201, body
            uploaded = time.monotonic()
            status, body = http(base, "POST", "/v1/pipelines",
                                spec(module, brokers, module, f"{module}-in", f"{module}-out", aggregate),
                                "application/yaml")
            assert status == 201, body
            wait(f"{module}'s first batch", lambda: (http(base, "GET", f"/v1/pipelines/{module}")[1]
                                                    .get("progress") or {}).get("totals", {}).get("input_rows"))
            running = time.monotonic()
            print(f"| {module} | {len(wasm) / 1024:.0f} | {(uploaded - started) * 1000:.0f} "
                  f"| {(running - started) * 1000:.0f} |")

        # Swaps under continuous load.
        wasm = open(os.path.join(GUESTS, "strategy_map.wasm"), "rb").read()
        second = wasm + b"\x00\x0d\x0bsluice-swap2"  # a custom section: other bytes, same code
        for body in (wasm, second):
            http(base, "POST", "/v1/modules/map", body, "application/wasm")
        status, body = http(base, "POST", "/v1/pipelines", spec("load", brokers, "map@1", "load-in", "load-out"),
                        "application/yaml")
        assert status == 201, body
        producer = subprocess.Popen([SLUICE, "sample", "--brokers", brokers, "--topic", "load-in",
                                     "--count", "5000000"], stdout=subprocess.DEVNULL)
        processes.append(producer)
        wait("load", lambda: ((http(base, "GET", "/v1/pipelines/load")[1].get("progress") or {})
                              .get("totals", {}).get("input_rows", 0)) > 50_000)
        records = []
        for i in range(SWAPS):
            time.sleep(0.5)
            status, body = http(base, "POST", "/v1/pipelines/load/swap",
                                json.dumps({"module": f"map@{2 - i % 2}"}).encode())
            assert status == 200, body
            records.append(body["swap"]["id"])
        time.sleep(0.5)
        _, doc = http(base, "GET", "/v1/pipelines/load")
        swaps = [s for s in doc["swaps"] if s["state"] == "live"]
        assert len(swaps) == SWAPS, doc["swaps"]
        rows = doc["progress"]["input_rows_per_second"]
        for key in ("swap_ms", "pause_ms"):
            values = sorted(s[key] for s in swaps)
            print(f"swap under load ({SWAPS} swaps, ~{rows:.0f} records/s): {key} "
                  f"median {statistics.median(values):.1f}, max {values[-1]:.1f}")
    finally:
        for p in reversed(processes):
            p.terminate()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
