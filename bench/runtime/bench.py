#!/usr/bin/env python3
"""bench/runtime - what eddy's runtime costs per event, against a plain C floor.

Workload (bench/agents'): each event is one conversation: the model asks for
lookup_order, the tool runs (Lua in eddy, C in the floor), the model answers
(2 LLM calls, 1 tool call), one JSONL line per event is written. eddy runs with
the defaults (memory/history 20 runs per key and traces in SQLite), 64 events in
flight (max_in_flight: 64, limits: {concurrency: 64}). The floor
(bench/runtime/floor.c, built as $BUILD/bench_floor) is libcurl multi + jansson
and nothing else: the same two exchanges with the same request bodies (the key's
history kept in memory only), the same 64 in flight, the same one-key-at-a-time
order, no persistence, no traces, no retries.

First a shape check: both run 6 events on 2 keys against a small mock of their own
with --log, and each key's request bodies must be equal (else the bench fails).
Then all measured runs go to ONE mockllm, started once, and it prints side by side:
  (a) CPU per event: user+sys of the process (os.wait4 rusage) / events, over N
      distinct keys and over 200 keys (history grows per key); medians of
      --repeat alternating runs
  (b) the same for the floor, and eddy/floor
  (c) syscalls per event: one more run of each under strace -f -c (strace slows
      everything down; timings come only from the unstraced runs)
  (d) resident memory per in-flight conversation: N events over N keys with all
      in flight, the mock holding each answer --rss-latency-ms (rules of the same
      script, matched by "(parked)" in the event text); peak VmRSS sampled from
      /proc/PID/status, minus the peak of a run of one such event, / (N - 1)

Timings decide nothing: this prints a table and exits 0, or 1 when a run failed.

    python3 bench/runtime/bench.py [--build build] [--events 2000] [--keys 200]
        [--repeat 3] [--latency-ms 0] [--workers 1] [--rss-events 2000]
        [--rss-latency-ms 2000] [--no-strace] [--no-rss]
"""
import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def script(parked_ms):
    tool = {"reply": "Order ${tool.order_id} is ${tool.status}; carrier ${tool.carrier}, "
                     "expected ${tool.eta}."}
    call = {"tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "$1"}}]}
    return {"rules": [
        dict(tool, when={"last_role": "tool", "last_user_contains": "(parked)"},
             latency_ms=parked_ms),
        dict(call, when={"last_role": "user", "last_user_contains": "(parked)",
                         "last_user_regex": "order ([A-Z][0-9]{4})"}, latency_ms=parked_ms),
        dict(tool, when={"last_role": "tool"}),
        dict(call, when={"last_role": "user", "last_user_regex": "order ([A-Z][0-9]{4})"}),
        {"reply": "ok"}]}


JOB = """job: bench
key: customer_id
max_in_flight: %d
models:
  default:
    base_url: ${BASE_URL}
    model: gpt-4o-mini
    limits: { concurrency: %d }
agents:
  support:
    prompt:
      system: "You are the support agent of ACME Outdoor. Call lookup_order for order numbers."
      user: "{{event.text}}"
    tools: [ tools/lookup_order.lua ]
"""


class Failed(Exception):
    pass


class Bench:
    def __init__(self, a, tmp, base):
        self.a, self.tmp, self.base = a, tmp, base
        self.build = os.path.abspath(a.build)
        self.job_dir = os.path.join(tmp, "job")
        self.workers_arg = []
        self.runs = 0
        self.mock_pid = 0
        self.other_cpu = self.timed_wall = 0.0  # CPU s of other processes during timed runs

    # -- one run of one system ------------------------------------------------------------
    def command(self, system, events, in_flight, out):
        if system == "eddy":
            shutil.rmtree(os.path.join(self.job_dir, ".eddy"), ignore_errors=True)
            job = os.path.join(self.job_dir, "job-%d.yaml" % in_flight)
            with open(job, "w") as f:
                f.write(JOB % (in_flight, in_flight))
            return [os.path.join(self.build, "eddy"), "run", job, "--input", events,
                    "--output", out, "--quiet"] + self.workers_arg
        return [os.path.join(self.build, "bench_floor"), "--url", self.base + "/chat/completions",
                "--input", events, "--output", out, "--orders",
                os.path.join(self.job_dir, "orders.json"), "--in-flight", str(in_flight)]

    def run(self, system, events, n, in_flight, wrap=(), sample=False):
        """Run SYSTEM on EVENTS; return wall s, cpu s, peak VmRSS KB (when SAMPLE), peak in
        flight at the mock (when SAMPLE), sys cpu s."""
        self.runs += 1
        out = os.path.join(self.tmp, "out-%s-%d.jsonl" % (system, self.runs))
        err = open(os.path.join(self.tmp, "err-%s-%d.txt" % (system, self.runs)), "w+")
        env = dict(os.environ, BASE_URL=self.base, EDDY_LOG="warn")
        before = (machine_busy(), proc_cpu(self.mock_pid), sum(os.times()[:2]))
        t0 = time.monotonic()
        p = subprocess.Popen(list(wrap) + self.command(system, events, in_flight, out), env=env,
                             cwd=self.job_dir, stdout=subprocess.DEVNULL, stderr=err)
        peak_rss = peak_in_flight = 0
        last_stats = 0.0
        if sample:
            while True:
                pid, status, ru = os.wait4(p.pid, os.WNOHANG)
                if pid:
                    break
                peak_rss = max(peak_rss, vm_rss(p.pid))
                if time.monotonic() - last_stats > 0.1:
                    last_stats = time.monotonic()
                    peak_in_flight = max(peak_in_flight, self.stats().get("in_flight", 0))
                time.sleep(0.01)
        else:
            pid, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        if not wrap and not sample:
            self.other_cpu += (machine_busy() - before[0] - (ru.ru_utime + ru.ru_stime) -
                               (proc_cpu(self.mock_pid) - before[1]) -
                               (sum(os.times()[:2]) - before[2]))
            self.timed_wall += wall
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            err.seek(0)
            raise Failed("%s exited %d: %s\n%s" % (system, p.returncode, " ".join(p.args),
                                                   err.read()[-2000:]))
        err.close()
        ok = sum(1 for line in open(out) if line.strip() and
                 " is " in str(json.loads(line).get("output", "")))
        if ok != n:
            raise Failed("%s: %d good outputs of %d in %s" % (system, ok, n, out))
        return wall, ru.ru_utime + ru.ru_stime, peak_rss, peak_in_flight, ru.ru_stime

    def stats(self):
        try:
            with urllib.request.urlopen(self.base.rsplit("/v1", 1)[0] + "/stats", timeout=2) as r:
                return json.load(r)
        except OSError:
            return {}

    # -- (c) ------------------------------------------------------------------------------
    def syscalls(self, system, events, n):
        path = os.path.join(self.tmp, "strace-%s-%d.txt" % (system, self.runs + 1))
        self.run(system, events, n, 64, wrap=("strace", "-f", "-c", "-o", path))
        total, rows = 0, []
        for line in open(path):
            f = line.split()
            if not f or not re.match(r"^[0-9.]+$", f[0]):
                continue
            # % time, seconds, usecs/call, calls, [errors], syscall (the total line too)
            if f[-1] == "total":
                total = int(f[3])
            elif len(f) >= 5:
                rows.append((int(f[3]), f[-1]))
        rows.sort(reverse=True)
        return total, rows[:5]


def start_mock(build, tmp, name, latency, log=None):
    """Start mockllm on the script in TMP; return (process, base URL)."""
    port_file = os.path.join(tmp, "port-" + name)
    mock = subprocess.Popen([os.path.join(build, "mockllm"), "--script",
                             os.path.join(tmp, "script.json"), "--port", "0", "--port-file",
                             port_file, "--latency-ms", str(latency)] +
                            (["--log", log] if log else []), stdout=subprocess.DEVNULL)
    t0 = time.monotonic()
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        if mock.poll() is not None or time.monotonic() - t0 > 10:
            sys.exit("bench/runtime: mockllm did not start")
        time.sleep(0.02)
    return mock, "http://127.0.0.1:%s/v1" % open(port_file).read().strip()


def check_shape(a, b, tmp, orders):
    """The floor must send what eddy sends: run both on 6 events over 2 keys against a mock
    of their own with --log and compare each key's request bodies (call ids, which the mock
    numbers, and the key order of the tool result, which Lua does not fix, aside)."""
    events = os.path.join(b.job_dir, "events-shape.jsonl")
    write_events(events, 6, 2, orders, seed=2)
    bodies = {}
    main_base = b.base
    try:
        for system in ("eddy", "floor"):
            log = os.path.join(tmp, "shape-%s.log" % system)
            mock, b.base = start_mock(b.build, tmp, "shape-" + system, 0, log)
            try:
                b.run(system, events, 6, 64)
            finally:
                mock.send_signal(signal.SIGTERM)
                mock.wait()
            per_key = {}
            for line in open(log):
                body = json.loads(line)["body"]
                for m in body.get("messages", []):
                    if m.get("role") == "tool":
                        m["content"] = json.loads(m["content"])
                text = re.sub(r"call_[0-9]+_[0-9]+", "ID", json.dumps(body, sort_keys=True))
                per_key.setdefault(body["messages"][1]["content"], []).append(text)
            bodies[system] = per_key
    finally:
        b.base = main_base
    n = sum(len(v) for v in bodies["eddy"].values())
    if bodies["eddy"] != bodies["floor"] or n != 12:
        raise Failed("the floor's request bodies differ from eddy's (see %s/shape-*.log)" % tmp)
    return n


def machine_busy():
    """CPU seconds all cores spent outside idle and iowait since boot (/proc/stat)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")


def proc_cpu(pid):
    """User+sys CPU seconds of PID so far (0 when it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read()
    except OSError:
        return 0.0
    f = st[st.rindex(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def vm_rss(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def write_events(path, n, keys, orders, parked=False, seed=1):
    rnd = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            text = "Where is my order %s?" % rnd.choice(orders)
            f.write(json.dumps({"id": "e%d" % i, "customer_id": "c%d" % (i % keys),
                                "text": text + (" (parked)" if parked else "")}) + "\n")


def cpu_ticks():
    """{pid: (name, utime+stime ticks)} of every process now."""
    res = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % pid) as f:
                st = f.read()
        except OSError:
            continue
        name = st[st.index("(") + 1:st.rindex(")")]
        f = st[st.rindex(")") + 2:].split()
        res[int(pid)] = (name, int(f[11]) + int(f[12]))
    return res


def busy_note(seconds=1.0):
    """Which processes used CPU over the last SECONDS (like top), to print with the figures."""
    hz = os.sysconf("SC_CLK_TCK")
    t0 = cpu_ticks()
    time.sleep(seconds)
    t1 = cpu_ticks()
    busy = []
    for pid, (name, ticks) in t1.items():
        if pid in t0 and pid != os.getpid():
            pct = 100.0 * (ticks - t0[pid][1]) / hz / seconds
            if pct >= 5:
                busy.append((pct, "%s (pid %d) %.0f%%" % (name, pid, pct)))
    busy.sort(reverse=True)
    load = open("/proc/loadavg").read().split()[:3]
    return "load %s; %s" % (" ".join(load), ", ".join(b[1] for b in busy) if busy
                            else "no other process above 5% CPU")


def median_runs(b, events, n, repeat):
    res = {"eddy": [], "floor": []}
    for i in range(repeat):
        for system in ("eddy", "floor") if i % 2 == 0 else ("floor", "eddy"):
            res[system].append(b.run(system, events, n, 64))
    return {s: (statistics.median(r[0] for r in v), statistics.median(r[1] for r in v),
                min(r[1] for r in v), max(r[1] for r in v),
                statistics.median(r[4] / max(r[1], 1e-9) for r in v)) for s, v in res.items()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--keys", type=int, default=200, help="keys of the second workload")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--latency-ms", type=int, default=0, help="mock latency for (a)-(c)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--rss-events", type=int, default=2000)
    ap.add_argument("--rss-latency-ms", type=int, default=2000)
    ap.add_argument("--no-strace", action="store_true")
    ap.add_argument("--no-rss", action="store_true")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    for exe in ("eddy", "mockllm", "bench_floor"):
        if not os.access(os.path.join(build, exe), os.X_OK):
            sys.exit("bench/runtime: %s/%s missing (make bench-runtime builds it)" % (build, exe))
    if not a.no_strace and not shutil.which("strace"):
        sys.exit("bench/runtime: strace not found (apt-get install strace, or --no-strace)")

    tmp = tempfile.mkdtemp(prefix="eddy-bench-runtime-")
    job_dir = os.path.join(tmp, "job")
    os.makedirs(os.path.join(job_dir, "tools"))
    ex = os.path.join(ROOT, "examples", "order-support")
    shutil.copy(os.path.join(ex, "orders.json"), job_dir)
    shutil.copy(os.path.join(ex, "tools", "lookup_order.lua"), os.path.join(job_dir, "tools"))
    orders = sorted(json.load(open(os.path.join(ex, "orders.json"))))
    ev_distinct = os.path.join(job_dir, "events-distinct.jsonl")
    ev_few = os.path.join(job_dir, "events-few.jsonl")
    ev_parked = os.path.join(job_dir, "events-parked.jsonl")
    ev_parked1 = os.path.join(job_dir, "events-parked-1.jsonl")
    write_events(ev_distinct, a.events, a.events, orders)
    write_events(ev_few, a.events, a.keys, orders)
    write_events(ev_parked, a.rss_events, a.rss_events, orders, parked=True)
    write_events(ev_parked1, 1, 1, orders, parked=True)
    with open(os.path.join(tmp, "script.json"), "w") as f:
        json.dump(script(a.rss_latency_ms), f)

    mock, base = start_mock(build, tmp, "main", a.latency_ms)
    b = Bench(a, tmp, base)
    b.mock_pid = mock.pid
    rc = 0
    try:
        check_shape(a, b, tmp, orders)
        rc = report(a, b, ev_distinct, ev_few, ev_parked, ev_parked1)
    except Failed as e:
        print("bench/runtime: FAILED: %s" % e, file=sys.stderr)
        rc = 1
    finally:
        mock.send_signal(signal.SIGTERM)
        mock.wait()
    if rc == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("bench/runtime: files kept in %s" % tmp, file=sys.stderr)
    sys.exit(rc)


def report(a, b, ev_distinct, ev_few, ev_parked, ev_parked1):
    n = a.events
    eddy = os.path.join(b.build, "eddy")
    help_text = subprocess.run([eddy, "run", "--help"], capture_output=True, text=True)
    if "--workers" in help_text.stdout + help_text.stderr:
        b.workers_arg = ["--workers", str(a.workers)]
        workers = "workers: %d (eddy run --workers %d)" % (a.workers, a.workers)
    else:
        workers = "workers: not supported by this eddy (one event loop%s)" % (
            "; --workers %d ignored" % a.workers if a.workers != 1 else "")
    print("bench/runtime: %d events, each 2 LLM calls + 1 tool call (eddy: Lua, floor: C), "
          "64 in flight, mock latency %d ms" % (n, a.latency_ms))
    print("eddy: memory (history 20) and traces on (defaults); floor: %s/bench_floor "
          "(libcurl multi + jansson, history in memory, nothing persisted)" % b.build)
    print(workers)
    print("machine: %d cores; before: %s" % (os.cpu_count(), busy_note()))
    print("request bodies: the floor's equal eddy's (12 requests of 6 events on 2 keys compared)")
    print("cpu: user+sys of the process (wait4), median of %d alternating runs [min-max]; "
          "sys: the kernel's share of it" % a.repeat)
    print()
    hdr = "%-24s %-11s %8s %9s %20s %6s %14s" % ("workload", "system", "wall s", "events/s",
                                                 "cpu ms/event", "sys", "syscalls/event")
    print(hdr)
    print("-" * len(hdr))
    tops = []
    for name, events in (("%d ev / %d keys" % (n, n), ev_distinct),
                         ("%d ev / %d keys" % (n, a.keys), ev_few)):
        med = median_runs(b, events, n, a.repeat)
        sc = {}
        if not a.no_strace:
            for system in ("eddy", "floor"):
                sc[system] = b.syscalls(system, events, n)
                tops.append((name, system, sc[system]))
        for system in ("eddy", "floor"):
            wall, cpu, lo, hi, sys_share = med[system]
            print("%-24s %-11s %8.2f %9.0f %7.3f [%.3f-%.3f] %5.0f%% %14s" % (
                name, system, wall, n / wall, 1e3 * cpu / n, 1e3 * lo / n, 1e3 * hi / n,
                100 * sys_share,
                "%.1f" % (sc[system][0] / n) if sc else "-"))
        e, f = med["eddy"], med["floor"]
        print("%-24s %-11s %8s %9s %20s %6s %14s" % (
            "", "eddy/floor", "%.2fx" % (e[0] / f[0]), "", "%.2fx" % (e[1] / max(f[1], 1e-6)), "",
            "%.2fx" % (sc["eddy"][0] / max(sc["floor"][0], 1)) if sc else "-"))
    print("other processes during the timed runs: %.2f CPU s in %.1f s (%.0f%% of one core; "
          "the mock and this script not counted)" % (
              max(b.other_cpu, 0), b.timed_wall, 100 * max(b.other_cpu, 0) / max(b.timed_wall, 1e-9)))
    if tops:
        print()
        print("syscalls under strace -f -c (one run each; strace inflates time, so no timings "
              "from these runs); top 5 per event:")
        for name, system, (total, rows) in tops:
            print("  %-20s %-6s %s" % (name, system, ", ".join(
                "%s %.1f" % (sc_name, calls / n) for calls, sc_name in rows)))
    if not a.no_rss:
        m = a.rss_events
        print()
        print("resident memory per in-flight conversation: %d events over %d keys, all in flight "
              "(max_in_flight %d, concurrency %d), mock holds each answer %d ms" % (
                  m, m, m, m, a.rss_latency_ms))
        print("peak VmRSS sampled every 10 ms, minus the peak of a run of 1 such event, / %d"
              % (m - 1))
        hdr = "%-11s %14s %14s %16s %18s" % ("system", "idle (1 ev) MB", "peak MB",
                                             "KB/conversation", "mock peak in flight")
        print(hdr)
        print("-" * len(hdr))
        per = {}
        for system in ("eddy", "floor"):
            one = b.run(system, ev_parked1, 1, m, sample=True)
            full = b.run(system, ev_parked, m, m, sample=True)
            per[system] = (full[2] - one[2]) / (m - 1)
            print("%-11s %14.1f %14.1f %16.1f %18d" % (system, one[2] / 1024, full[2] / 1024,
                                                       per[system], full[3]))
        print("%-11s %14s %14s %16s" % ("eddy/floor", "", "",
                                        "%.2fx" % (per["eddy"] / max(per["floor"], 1e-6))))
    print()
    print("machine after: %s" % busy_note())
    return 0


if __name__ == "__main__":
    main()
