#!/usr/bin/env python3
"""bench/fluss: eddy's native Fluss client against pyfluss on one cluster, side by side.

Workload (6 columns: id BIGINT, user STRING, amount DOUBLE, ts TIMESTAMP_LTZ(3),
flag BOOLEAN, note STRING; 3 buckets; ARROW log with the default ZSTD codec):
  produce  N rows into a fresh log table (append, then flush)
  scan     the same N rows back from the earliest offsets
  lookup   N point lookups with 64 in flight on a PK table of N rows
Each client writes its own table; both scan the eddy-written table, both look
up in the same PK table. Medians of --repeat runs; ratios are eddy / pyfluss
(higher is better for eddy). Timings only print; nothing passes or fails.

    python3 bench/fluss/bench.py --build build [--rows 200000] [--lookups 20000] [--repeat 3]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PY = os.path.join(ROOT, ".cache", "pyfluss", "bin", "python")
COLS = [("id", "BIGINT NOT NULL"), ("user", "STRING"), ("amount", "DOUBLE"),
        ("ts", "TIMESTAMP_LTZ(3)"), ("flag", "BOOLEAN"), ("note", "STRING")]


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def create(args, boot, table, pk):
    doc = {"columns": [{"name": n, "type": t} for n, t in COLS], "buckets": 3}
    if pk:
        doc["primary_key"] = ["id"]
    path = os.path.join(ROOT, ".cache", "bench-fluss-%s.json" % table.replace(".", "_"))
    with open(path, "w") as f:
        json.dump(doc, f)
    eddy = os.path.join(args.build, "eddy")
    subprocess.run([eddy, "fluss", "drop-table", table, "--if-exists", "--bootstrap", boot],
                   capture_output=True)
    sh([eddy, "fluss", "create-table", table, path, "--bootstrap", boot])


# Lookup keys are BIGINTs from 2^21 on: their key bytes (4-byte varints) have no
# Murmur3 tail, where fluss-rust (pyfluss) and Java disagree on the bucket for bytes
# >= 0x80 (see the issue note): both clients then find every row.
LOOKUP_BASE = 1 << 21


CRASHES = []


def run(cmd, base=0):
    """One measurement; a peer that dies by a signal is run again (up to 3 times) and noted."""
    for attempt in range(3):
        p = subprocess.run(cmd, capture_output=True, text=True,
                           env=dict(os.environ, BENCH_ID_BASE=str(base)))
        if p.returncode == 0:
            return json.loads(p.stdout.strip().splitlines()[-1])
        CRASHES.append("%s -> %d: %s" % (" ".join(os.path.basename(c) for c in cmd[:4]),
                                         p.returncode, p.stderr.strip()[-300:]))
    raise RuntimeError("failed 3 times: %s" % CRASHES[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--rows", type=int, default=200000)
    ap.add_argument("--lookups", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    args.build = os.path.abspath(args.build)
    sh([os.path.join(ROOT, "tests", "fluss", "pyfluss.sh")])
    boot = sh([os.path.join(ROOT, "tests", "fluss", "cluster.sh"), "start"]).stdout.split()[-1]
    ebin = os.path.join(args.build, "eddy_fluss_bench")
    pyb = [PY, os.path.join(ROOT, "bench", "fluss", "pyfluss_bench.py")]
    res = {k: {"eddy": [], "pyfluss": []} for k in ("produce", "scan", "lookup")}
    # the PK table for lookups, filled once
    create(args, boot, "bench.pk", True)
    run([ebin, boot, "bench.pk", "produce", str(args.lookups)], LOOKUP_BASE)
    for rep in range(args.repeat):
        for who in ("eddy", "pyfluss"):
            table = "bench.log_%s_%d" % (who, rep)
            create(args, boot, table, False)
            cmd = [ebin, boot, table] if who == "eddy" else pyb + [boot, table]
            res["produce"][who].append(run(cmd + ["produce", str(args.rows)]))
            res["scan"][who].append(run(cmd + ["scan", str(args.rows)]))
            res["lookup"][who].append(run(cmd[:-1] + ["bench.pk", "lookup", str(args.lookups), "64"],
                                          LOOKUP_BASE))
    print("bench/fluss: %d rows x 6 columns, 3 buckets, ZSTD Arrow; %d lookups, 64 in flight; "
          "median of %d" % (args.rows, args.lookups, args.repeat))
    print("%-8s %14s %14s %10s %10s %8s" % ("op", "eddy rows/s", "pyfluss rows/s", "eddy MB/s",
                                           "py MB/s", "ratio"))
    for op in ("produce", "scan", "lookup"):
        e = [r["rows"] / r["seconds"] for r in res[op]["eddy"]]
        p = [r["rows"] / r["seconds"] for r in res[op]["pyfluss"]]
        eb = [r["bytes"] / r["seconds"] / 1e6 for r in res[op]["eddy"]]
        pb = [r["bytes"] / r["seconds"] / 1e6 for r in res[op]["pyfluss"]]
        me, mp = statistics.median(e), statistics.median(p)
        print("%-8s %14.0f %14.0f %10.1f %10.1f %7.2fx" % (op, me, mp, statistics.median(eb),
                                                        statistics.median(pb), me / mp))
        for who in ("eddy", "pyfluss"):
            want = args.rows if op != "lookup" else args.lookups
            bad = [r for r in res[op][who] if r["rows"] != want or (op == "lookup" and r["found"] != want)]
            if bad:
                print("  warning: %s %s: %s" % (who, op, bad))
    for c in CRASHES:
        print("  rerun after a crash: %s" % c)
    return 0


if __name__ == "__main__":
    sys.exit(main())
