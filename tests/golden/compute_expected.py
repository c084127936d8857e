#!/usr/bin/env python3
"""Writes the golden windowing cases: inputs and the outputs they must produce.

This is an independent reference model of Sluice's windowing semantics,
written from the README's description, not from the host code:

Per batch (records arrive in batches, each batch with a processing time):
 1. A record's windows: tumbling [floor(t/size)*size, +size); hopping every
    [s, s+size) with s a multiple of slide containing t; session [t, t+gap).
 2. A record is late when every one of its windows has end + lateness <= W,
    the watermark as of the end of the previous batch. A late record is
    dead-lettered with "late: window [START, END) was already finalized"
    (for hopping: the latest of its windows) and not aggregated.
 3. Other records are folded into their windows (sessions of a key merge when
    they overlap or touch).
 4. Per partition: max event time seen (late records included) and last
    processing time with records. W' = min over partitions not idle
    (now - last_seen < idle_timeout) of max - bound; W = max(W, W') (if every
    partition is idle W stays).
 5. Windows with end + lateness <= W are final: emitted once and forgotten.
    In update mode, every other window changed in this batch emits a
    non-final result. Results are ordered by (end, start, key).

Run: python3 tests/golden/compute_expected.py   (rewrites tests/golden/*/)
"""

import json
import os
from datetime import datetime, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
S, M = 1000, 60_000


def rfc3339(ms):
    d = datetime.fromtimestamp(ms // 1000, tz=timezone.utc)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def event(i, user, kind, t, amount):
    return {"event_id": f"e{i}", "user_id": user, "event_type": kind, "timestamp": rfc3339(t), "amount": amount}


def windows_of(spec, t):
    w = spec["window"]
    if "tumbling" in w:
        size = w["tumbling"]
        s = t // size * size
        return [(s, s + size)]
    if "hopping" in w:
        size, slide = w["hopping"]
        first = (t - size) // slide * slide + slide
        return [(s, s + size) for s in range(first, t + 1, slide) if s <= t < s + size]
    gap = w["session"]
    return [(t, t + gap)]


def simulate(spec, batches, key_field, finish):
    lateness, bound, idle = spec["lateness"], spec["bound"], spec["idle"]
    mode = spec["output"]
    state = {}  # (key, start) -> [end, acc, changed]
    maxes, seen = {}, {}
    W = None
    out, dlq = [], []
    for batch in batches:
        now = batch["now_ms"]
        for r in batch["records"]:
            e, p = r["event"], r["partition"]
            t = int(datetime.strptime(e["timestamp"], "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000)
            key = e[key_field]
            wins = windows_of(spec, t)
            if W is not None and all(end + lateness <= W for (_, end) in wins):
                s, end = max(wins, key=lambda x: x[1])
                dlq.append({"event_id": e["event_id"], "reason": f"late: window [{rfc3339(s)}, {rfc3339(end)}) was already finalized"})
            else:
                for (s, end) in wins:
                    if end + lateness <= (W if W is not None else -10**18):
                        continue  # this hopping window is closed; the record still counts for the open ones
                    if "session" in spec["window"]:
                        merge_session(state, key, s, end, e, t)
                    else:
                        st = state.setdefault((key, s), [end, [], False])
                        st[1].append((t, e))
                        st[2] = True
            maxes[p] = max(maxes.get(p, t), t)
            seen[p] = now
        active = [maxes[p] - bound for p in maxes if now - seen[p] < idle]
        if active:
            w2 = min(active)
            W = w2 if W is None else max(W, w2)
        due = sorted(((st[0], s, k) for (k, s), st in state.items()), key=lambda x: (x[0], x[1], x[2]))
        for end, s, k in due:
            st = state[(k, s)]
            if W is not None and end + lateness <= W:
                out.append({"final": True, "value": finish(k, s, end, st[1])})
                del state[(k, s)]
            elif mode == "update" and st[2]:
                out.append({"final": False, "value": finish(k, s, end, st[1])})
        for st in state.values():
            st[2] = False
    return out, dlq


def merge_session(state, key, s, end, e, t):
    records = [(t, e)]
    for (k, s2) in [x for x in state if x[0] == key]:
        end2 = state[(k, s2)][0]
        if s2 <= end and s <= end2:  # overlap or touch
            records += state[(k, s2)][1]
            s, end = min(s, s2), max(end, end2)
            del state[(k, s2)]
    state[(key, s)] = [end, records, True]


def agg_result(key, s, end, recs):
    return {
        "window_start": rfc3339(s), "window_end": rfc3339(end), "event_type": key,
        "count": len(recs), "sum_amount": sum(e["amount"] for _, e in recs),
        "unique_users": len({e["user_id"] for _, e in recs}),
    }


def session_result(key, s, end, recs):
    ts = [t for t, _ in recs]
    return {"user_id": key, "session_start": rfc3339(s), "session_end": rfc3339(end),
            "events": len(recs), "duration_ms": max(ts) - min(ts)}


def batches_of(rows):
    """rows: (batch, now_ms, partition, event) -> batches in order."""
    out = {}
    for b, now, p, e in rows:
        out.setdefault(b, {"now_ms": now, "records": []})["records"].append({"partition": p, "event": e})
    return [out[b] for b in sorted(out)]


def case(name, spec, rows, key_field, finish, yaml):
    batches = batches_of(rows)
    outputs, dlq = simulate(spec, batches, key_field, finish)
    d = os.path.join(HERE, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "aggregate.yaml"), "w") as f:
        f.write(yaml)
    with open(os.path.join(d, "input.jsonl"), "w") as f:
        for i, b in enumerate(batches):
            for r in b["records"]:
                f.write(json.dumps({"batch": i, "now_ms": b["now_ms"], "partition": r["partition"], "event": r["event"]}) + "\n")
    with open(os.path.join(d, "expected.jsonl"), "w") as f:
        for o in outputs:
            f.write(json.dumps(o) + "\n")
    with open(os.path.join(d, "expected-dlq.jsonl"), "w") as f:
        for o in dlq:
            f.write(json.dumps(o) + "\n")


def base(window, lateness=0, bound=10 * S, idle=30 * S, output="append"):
    return {"window": window, "lateness": lateness, "bound": bound, "idle": idle, "output": output}


def yaml_for(window_yaml, lateness="0s", bound="10s", idle="30s", output="append"):
    return (f"window: {window_yaml}\nwatermark: {{ max_out_of_orderness: {bound}, idle_timeout: {idle} }}\n"
            f"allowed_lateness: {lateness}\noutput: {output}\n")


def main():
    users = ["u1", "u2", "u3"]
    kinds = ["click", "view", "purchase"]

    # 1. Tumbling, in order, several keys, two partitions, both active.
    rows, i = [], 0
    for b in range(6):
        for p in range(2):
            for j in range(3):
                t = T0 + b * 30 * S + p * 1000 + j * 7 * S
                rows.append((b, b * 1000, p, event(i, users[(i * 7) % 3], kinds[i % 3], t, 1.25 * (i % 8))))
                i += 1
    case("tumbling-in-order", base({"tumbling": M}), rows, "event_type", agg_result, yaml_for("{ tumbling: 1m }"))

    # 2. Out of order within the bound (10 s): records go back up to 8 s.
    rows = []
    offsets = [0, 5, -3, 12, 4, 20, 15, 31, 25, 50, 44, 58, 61, 55, 70, 90, 84, 125, 118, 130]
    for n, off in enumerate(offsets):
        t = T0 + 40 * S + off * S
        rows.append((n // 4, n * 100, 0, event(n, users[n % 3], kinds[n % 2], t, 0.5 * n)))
    case("out-of-order", base({"tumbling": M}), rows, "event_type", agg_result, yaml_for("{ tumbling: 1m }"))

    # 3. Late beyond lateness: a window closes, then records for it arrive.
    rows = [
        (0, 0, 0, event(0, "u1", "click", T0 + 5 * S, 1.0)),
        (0, 0, 0, event(1, "u2", "click", T0 + 50 * S, 2.0)),
        (1, 100, 0, event(2, "u1", "click", T0 + 75 * S, 3.0)),  # W = 65 s: [0, 60 s) closes
        (2, 200, 0, event(3, "u3", "click", T0 + 59 * S, 4.0)),  # late
        (2, 200, 0, event(4, "u1", "view", T0 + 10 * S, 5.0)),   # late
        (2, 200, 0, event(5, "u2", "click", T0 + 62 * S, 6.0)),  # on time
        (3, 300, 0, event(6, "u2", "click", T0 + 135 * S, 7.0)),
    ]
    case("late", base({"tumbling": M}), rows, "event_type", agg_result, yaml_for("{ tumbling: 1m }"))

    # 4. Allowed lateness keeps a window open; update mode shows the changes.
    rows = [
        (0, 0, 0, event(0, "u1", "click", T0 + 5 * S, 1.0)),
        (1, 100, 0, event(1, "u2", "click", T0 + 75 * S, 2.0)),  # W = 65 s; [0,60) open until W >= 90 s
        (2, 200, 0, event(2, "u3", "click", T0 + 30 * S, 3.0)),  # within lateness: folded
        (3, 300, 0, event(3, "u1", "click", T0 + 105 * S, 4.0)),  # W = 95 s: [0,60) final
        (4, 400, 0, event(4, "u2", "click", T0 + 40 * S, 5.0)),  # late now
        (5, 500, 0, event(5, "u2", "click", T0 + 200 * S, 6.0)),
    ]
    case("allowed-lateness-update", base({"tumbling": M}, lateness=30 * S, output="update"), rows,
         "event_type", agg_result, yaml_for("{ tumbling: 1m }", lateness="30s", output="update"))

    # 5. Idle partition: partition 1 falls silent; after 30 s of processing
    # time it stops holding the watermark back.
    rows = [(0, 0, 0, event(0, "u1", "click", T0 + 1 * S, 1.0)), (0, 0, 1, event(1, "u2", "view", T0 + 2 * S, 2.0))]
    for n in range(2, 9):
        rows.append((n, (n - 1) * 10 * S, 0, event(n, "u1", "click", T0 + n * 20 * S, 0.5)))
    case("idle-partition", base({"tumbling": M}), rows, "event_type", agg_result, yaml_for("{ tumbling: 1m }"))

    # 6. Hopping windows: 1 m size, 20 s slide.
    rows = []
    for n in range(16):
        t = T0 + n * 11 * S
        rows.append((n // 3, n * 100, n % 2, event(n, users[n % 3], kinds[n % 2], t, 0.25 * n)))
    case("hopping", base({"hopping": (M, 20 * S)}, bound=5 * S), rows, "event_type", agg_result,
         yaml_for("{ hopping: { size: 1m, slide: 20s } }", bound="5s"))

    # 7. Session windows per user (30 s gap), including a record that bridges
    # two sessions in a later batch.
    rows = [
        (0, 0, 0, event(0, "u1", "click", T0 + 0 * S, 1.0)),
        (0, 0, 0, event(1, "u1", "click", T0 + 20 * S, 1.0)),
        (0, 0, 0, event(2, "u2", "view", T0 + 5 * S, 1.0)),
        (1, 100, 0, event(3, "u1", "click", T0 + 80 * S, 1.0)),   # new session for u1
        (1, 100, 0, event(4, "u2", "view", T0 + 35 * S, 1.0)),    # touches u2's [5 s, 35 s): extends it
        (2, 200, 0, event(5, "u1", "click", T0 + 50 * S, 1.0)),   # touches u1's [0,50) and [80,110): bridges them
        (3, 300, 0, event(6, "u3", "click", T0 + 200 * S, 1.0)),  # W = 140 s: all above close
        (4, 400, 0, event(7, "u1", "click", T0 + 30 * S, 1.0)),   # late
        (5, 500, 0, event(8, "u3", "click", T0 + 400 * S, 1.0)),
    ]
    case("session", base({"session": 30 * S}, bound=M), rows, "user_id", session_result,
         yaml_for("{ session: { gap: 30s } }", bound="1m"))


if __name__ == "__main__":
    main()
