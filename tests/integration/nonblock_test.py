#!/usr/bin/env python3
"""Regression tests: nothing a worker loop does per event waits on the kernel
when it need not.

Span and trace ids come from a per-thread generator seeded once (one
getrandom per thread), not from a getrandom per id: `strace -f -c -e
trace=getrandom` counts the calls of a whole `eddy run` against the mock, and
the count must not grow with the number of events (10 against 200; each run
starts two spans, three ids). Needs strace (Debian package `strace`).

The other half (Fluss host names resolved off the loop) is tested in
tests/unit/test_fluss.c (test_slow_resolver, with tests/shim/slowdns.c).
Uses the runner and helpers of run.py.

    python3 tests/integration/nonblock_test.py --build build [--only NAME]
"""
import json
import os
import shutil
import sqlite3
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Mock, custom_job, copy_example, read_jsonl, write  # noqa: E402


def getrandom_calls(tmp, job, n_events):
    """Run JOB on N_EVENTS events under strace; returns (getrandom calls, outputs)."""
    name = "in-%d.jsonl" % n_events
    events = "".join(json.dumps({"id": "e%d" % i, "customer_id": "C%03d" % (i % 20),
                                 "text": "hello %d" % i}) + "\n" for i in range(n_events))
    write(os.path.join(tmp, name), events)
    out = os.path.join(tmp, "out-%d.jsonl" % n_events)
    counts = os.path.join(tmp, "strace-%d.txt" % n_events)
    cmd = ["strace", "-f", "-c", "-e", "trace=getrandom", "-o", counts,
           os.path.join(run.ARGS.build, "eddy"), "run", job, "--input",
           os.path.join(tmp, name), "--output", out]
    env = dict(os.environ)  # LeakSanitizer cannot run under ptrace (an ASan build)
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, "eddy run exited %d\nstderr:\n%s" % (p.returncode, p.stderr[-3000:])
    calls = 0
    for line in open(counts):
        f = line.split()
        if f and f[-1] == "getrandom":
            calls = int(f[3])
    return calls, read_jsonl(out)


def test_no_getrandom_per_span(tmp):
    """getrandom is called as often for 200 events as for 10 (per thread, not per span)."""
    if not shutil.which("strace"):
        raise AssertionError("this test needs strace: apt-get install -y strace")
    d = copy_example(tmp)
    with Mock(tmp, {"rules": [{"reply": "ok"}]}) as mock:
        job = custom_job(d, mock.base_url)
        few, out_few = getrandom_calls(tmp, job, 10)
        many, out_many = getrandom_calls(tmp, job, 200)
    assert len(out_few) == 10 and len(out_many) == 200, (len(out_few), len(out_many))
    assert all(o["output"] == "ok" for o in out_few + out_many), out_many[:3]
    db = sqlite3.connect(os.path.join(d, ".eddy", "t", "traces.db"))
    spans = db.execute("SELECT count(*) FROM spans").fetchone()[0]
    db.close()
    assert spans >= 2 * 210, spans  # the runs did start spans: invoke_agent and chat
    print("     getrandom calls: %d for 10 events, %d for 200 events (%d spans)" % (few, many, spans))
    # 190 more runs start 380 more spans (570 ids): one call each used to make it 570
    assert many - few <= 5, "getrandom grows with the events: %d for 10, %d for 200" % (few, many)


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return run.suite_main(TESTS, "eddy-nb-", 28, "nonblock")


if __name__ == "__main__":
    sys.exit(main())
