#!/usr/bin/env python3
"""bench/tools: the cost of one MCP tool call, as a worker loop sees it.

Workload: N sequential calls (one in flight at a time) of a trivial tool, made through a
port from a uv loop by $(BUILD)/mcp_driver, timed from eddy_mcp_call to the callback (the
manager's thread, the pipe or HTTP round trip, the server's own work and the hop back).
Servers: @modelcontextprotocol/server-everything (node) `echo` over stdio and over
streamable HTTP, and tests/fixtures/mcp/server.py (the `mcp` package, Python) `echo` over
stdio. Each row is the median of RUNS runs of the per-run median and p90, in microseconds.
Timings never decide anything; record them in bench/RESULTS.md.

    python3 bench/tools/bench.py --build build [--n 500] [--runs 3]
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, ".cache", "mcp")
EVERYTHING = os.path.join(CACHE, "node_modules", "@modelcontextprotocol", "server-everything",
                          "dist", "index.js")
PY = os.path.join(CACHE, "venv", "bin", "python")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "mcp", "server.py")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def run(build, server, tool, args, n):
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"mcp": {"s": server}}, f)
    p = subprocess.Popen([os.path.join(build, "mcp_driver"), f.name], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1,
                         env=dict(os.environ, EDDY_LOG="error"))
    try:
        p.stdin.write(json.dumps({"op": "wait", "timeout": 30000}) + "\n")
        benches = []
        for count in (50, n):  # a warm-up, then the measured run
            p.stdin.write(json.dumps({"op": "bench", "server": "s", "tool": tool, "args": args,
                                      "n": count}) + "\n")
            p.stdin.flush()
            for line in p.stdout:
                m = json.loads(line)
                if m["op"] == "bench":
                    if "error" in m:
                        raise SystemExit("bench/tools: %s" % m["error"])
                    benches.append(m)
                    break
        p.stdin.write('{"op":"stop"}\n')
        p.stdin.flush()
        p.wait(15)
        return benches[1]
    finally:
        if p.poll() is None:
            p.kill()
        os.unlink(f.name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if subprocess.run(["sh", os.path.join(ROOT, "tests", "tools", "mcp.sh")]).returncode:
        return 1
    port = free_port()
    http = subprocess.Popen(["node", EVERYTHING, "streamableHttp"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=dict(os.environ, PORT=str(port)))
    rows = [
        ("server-everything (node), stdio", {"command": ["node", EVERYTHING, "stdio"]}, "echo",
         {"message": "x"}),
        ("mcp package (Python), stdio", {"command": [PY, FIXTURE]}, "echo", {"text": "x"}),
        ("server-everything (node), streamable HTTP",
         {"url": "http://127.0.0.1:%d/mcp" % port}, "echo", {"message": "x"}),
    ]
    try:
        time.sleep(1.5)
        print("bench/tools: %d sequential MCP calls per run, median of %d runs (%s)"
              % (a.n, a.runs, time.strftime("%Y-%m-%d")))
        print("%-44s %12s %12s" % ("server, transport", "median us", "p90 us"))
        for name, srv, tool, args in rows:
            rs = [run(a.build, srv, tool, args, a.n) for _ in range(a.runs)]
            print("%-44s %12.0f %12.0f" % (name, statistics.median(r["median_us"] for r in rs),
                                           statistics.median(r["p90_us"] for r in rs)),
                  flush=True)
    finally:
        http.terminate()
        http.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
