#!/usr/bin/env python3
"""bench/agents - eddy against the OpenAI Agents SDK (JS) on the same mock model.

Workload: N support questions over N customers; each conversation is the dynamic
loop user -> model asks for lookup_order -> Lua/JS tool -> model answers (2 LLM
calls, 1 tool call). Both systems talk to one mockllm (C, epoll) with the same
script and latency, with the same concurrency limit, and write one JSONL line per
event. eddy also persists each key's memory and every run's trace to SQLite; the
peer keeps nothing. Each system runs REPEAT times, alternating; medians reported.

    python3 bench/agents/bench.py [--events 2000] [--repeat 3]
"""
import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, ".cache", "bench")
PEER_PKGS = ["@openai/agents@0.20.0", "zod@4"]

SCRIPT = {"rules": [
    {"when": {"last_role": "tool"},
     "reply": "Order ${tool.order_id} is ${tool.status}; carrier ${tool.carrier}, expected ${tool.eta}."},
    {"when": {"last_role": "user", "last_user_regex": "order ([A-Z][0-9]{4})"},
     "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "$1"}}]},
    {"reply": "ok"}]}

STREAM = EDDY_ONLY = False

JOB = """job: bench
key: customer_id
models:
  default:
    base_url: ${BASE_URL}
    model: gpt-4o-mini
    limits: { concurrency: %d }%s
agents:
  support:
    prompt:
      system: "You are the support agent of ACME Outdoor. Call lookup_order for order numbers."
      user: "{{event.text}}"
    tools: [ tools/lookup_order.lua ]
    memory: { history: 4 }
"""


def ensure_peer():
    if os.path.exists(os.path.join(CACHE, "node_modules", "@openai", "agents")):
        return
    os.makedirs(CACHE, exist_ok=True)
    with open(os.path.join(CACHE, "package.json"), "w") as f:
        json.dump({"name": "eddy-bench-peers", "private": True, "type": "module"}, f)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"] + PEER_PKGS, cwd=CACHE,
                   check=True)


def timed(cmd, env=None, cwd=None):
    """Run CMD under /usr/bin/time; return wall s, cpu s, max RSS MB."""
    fmt = "%e %U %S %M"
    p = subprocess.run(["/usr/bin/time", "-f", fmt] + cmd, env=env, cwd=cwd,
                       capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), p.stderr[-2000:]))
    wall, user, sys_, rss = p.stderr.strip().splitlines()[-1].split()
    return float(wall), float(user) + float(sys_), int(rss) / 1024.0


def count_ok(path, n):
    lines = [json.loads(l) for l in open(path) if l.strip()]
    ok = sum(1 for l in lines if "is " in str(l.get("output", "")))
    if ok != n:
        sys.exit("%s: %d good outputs of %d" % (path, ok, n))


def workload(tmp, build, n, latency, conc, repeat):
    mock_dir = os.path.join(tmp, "mock-%d" % latency)
    os.makedirs(mock_dir)
    with open(os.path.join(mock_dir, "script.json"), "w") as f:
        json.dump(SCRIPT, f)
    port_file = os.path.join(mock_dir, "port")
    mock = subprocess.Popen([os.path.join(build, "mockllm"), "--script",
                             os.path.join(mock_dir, "script.json"), "--port", "0", "--port-file",
                             port_file, "--latency-ms", str(latency)], stdout=subprocess.DEVNULL)
    while not (os.path.exists(port_file) and open(port_file).read().strip()):
        time.sleep(0.02)
    base = "http://127.0.0.1:%s/v1" % open(port_file).read().strip()
    job_dir = os.path.join(tmp, "job")
    res = {"eddy": [], "peer": []}
    try:
        for i in range(repeat):
            systems = ("eddy", "peer") if i % 2 == 0 else ("peer", "eddy")
            for system in (s for s in systems if s == "eddy" or not EDDY_ONLY):
                out = os.path.join(tmp, "%s-%d-%d.jsonl" % (system, latency, i))
                if system == "eddy":
                    shutil.rmtree(os.path.join(job_dir, ".eddy"), ignore_errors=True)
                    with open(os.path.join(job_dir, "job.yaml"), "w") as f:
                        f.write(JOB % (conc, "\n    stream: true" if STREAM else ""))
                    env = dict(os.environ, BASE_URL=base, EDDY_LOG="warn")
                    r = timed([os.path.join(build, "eddy"), "run", "job.yaml", "--input",
                               "events.jsonl", "--output", out, "--quiet"], env=env, cwd=job_dir)
                else:
                    # ESM resolves packages next to the script: run a copy from the cache
                    peer = os.path.join(CACHE, "peer_openai_agents.mjs")
                    shutil.copy(os.path.join(ROOT, "bench", "agents", "peer_openai_agents.mjs"), peer)
                    r = timed(["node", peer,
                               os.path.join(job_dir, "events.jsonl"),
                               os.path.join(job_dir, "orders.json"), out, base, str(conc)],
                              cwd=CACHE)
                count_ok(out, n)
                res[system].append(r)
    finally:
        mock.send_signal(signal.SIGTERM)
        mock.wait()
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--stream", action="store_true",
                    help="eddy asks for streamed answers (the peer does not stream)")
    ap.add_argument("--eddy-only", action="store_true",
                    help="run eddy alone (to compare two eddy builds: --build other)")
    a = ap.parse_args()
    global STREAM, EDDY_ONLY
    STREAM, EDDY_ONLY = a.stream, a.eddy_only
    if not a.eddy_only:
        ensure_peer()
    tmp = tempfile.mkdtemp(prefix="eddy-bench-")
    job_dir = os.path.join(tmp, "job")
    os.makedirs(os.path.join(job_dir, "tools"))
    ex = os.path.join(ROOT, "examples", "order-support")
    shutil.copy(os.path.join(ex, "orders.json"), job_dir)
    shutil.copy(os.path.join(ex, "tools", "lookup_order.lua"), os.path.join(job_dir, "tools"))
    orders = sorted(json.load(open(os.path.join(ex, "orders.json"))))
    rnd = random.Random(1)
    with open(os.path.join(job_dir, "events.jsonl"), "w") as f:
        for i in range(a.events):
            f.write(json.dumps({"id": "e%d" % i, "customer_id": "c%d" % i,
                                "text": "Where is my order %s?" % rnd.choice(orders)}) + "\n")
    print("bench/agents: %d conversations (2 LLM calls + 1 tool each), %d runs per system, medians"
          % (a.events, a.repeat))
    print("%-34s %-9s %9s %9s %9s %9s" % ("workload", "system", "wall s", "conv/s", "cpu s", "rss MB"))
    for name, latency, conc in (("overhead: latency 0, 64 in flight", 0, 64),
                                ("in flight: latency 200 ms, all", 200, a.events)):
        res = workload(tmp, os.path.abspath(a.build), a.events, latency, conc, a.repeat)
        med = {}
        for system in ("eddy",) if a.eddy_only else ("eddy", "peer"):
            wall = statistics.median(r[0] for r in res[system])
            cpu = statistics.median(r[1] for r in res[system])
            rss = statistics.median(r[2] for r in res[system])
            med[system] = (wall, cpu, rss)
            label = "eddy" if system == "eddy" else "agents-js"
            print("%-34s %-9s %9.2f %9.0f %9.2f %9.1f" % (name, label, wall, a.events / wall, cpu, rss))
        if a.eddy_only:
            continue
        e, p = med["eddy"], med["peer"]
        print("%-34s %-9s %8.1fx %9s %8.1fx %8.1fx" % ("", "ratio", p[0] / e[0], "", p[1] / max(e[1], 0.01),
                                                      p[2] / e[2]))
    print("(ratio = agents-js / eddy: above 1 means eddy is faster / leaner)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
