#!/usr/bin/env python3
"""Integration tests: the real `eddy` binary against the real mock LLM server.

Each test makes its own temp folder, starts mockllm on a free loopback port
with a script, writes a job there and runs `eddy`. Standard library only.

    python3 tests/integration/run.py --build build [--only NAME] [-v]
"""
import argparse
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "examples", "order-support")
ARGS = None


class Mock:
    """A mockllm process with a script; stopped on exit of the with-block."""

    def __init__(self, tmp, script, latency_ms=0):
        self.tmp = tmp
        self.script_path = os.path.join(tmp, "mock-script.json")
        with open(self.script_path, "w") as f:
            json.dump(script, f)
        self.port_file = os.path.join(tmp, "mock.port")
        self.log = os.path.join(tmp, "mock-requests.jsonl")
        self.latency_ms = latency_ms

    def __enter__(self):
        cmd = [os.path.join(ARGS.build, "mockllm"), "--script", self.script_path, "--port", "0",
               "--port-file", self.port_file, "--log", self.log]
        if self.latency_ms:
            cmd += ["--latency-ms", str(self.latency_ms)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            if os.path.exists(self.port_file) and open(self.port_file).read().strip():
                self.port = int(open(self.port_file).read())
                return self
            time.sleep(0.02)
        raise RuntimeError("mockllm did not start")

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    @property
    def base_url(self):
        return "http://127.0.0.1:%d/v1" % self.port

    def stats(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/stats" % self.port, timeout=5) as r:
            return json.load(r)

    def requests(self):
        if not os.path.exists(self.log):
            return []
        return [json.loads(l) for l in open(self.log) if l.strip()]


def eddy(*args, env=None, timeout=120, stdin=None, check=None):
    cmd = [os.path.join(ARGS.build, "eddy")] + list(args)
    if os.environ.get("EDDY_VALGRIND"):
        cmd = ["valgrind", "-q", "--error-exitcode=99", "--leak-check=full",
               "--errors-for-leak-kinds=definite"] + cmd
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout, input=stdin)
    if check is not None and p.returncode != check:
        raise AssertionError("eddy %s exited %d, expected %d\nstdout:\n%s\nstderr:\n%s" % (
            " ".join(args), p.returncode, check, p.stdout[-3000:], p.stderr[-3000:]))
    return p


class StdinRun:
    """`eddy run JOB --input - --output OUT` with stdin kept open and stderr collected
    (the live-reload and MCP suites): send() events, wait_log() for a line, outputs() once
    N have come (by event id), finish() closes stdin and returns the exit code."""

    def __init__(self, job, out, extra_args=(), env=None, ready=r"reading stdin",
                 ready_timeout=20):
        self.out = out
        cmd = [os.path.join(ARGS.build, "eddy"), "run", job, "--input", "-", "--output", out,
               "--log-level", "info"] + list(extra_args)
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True, env=env)
        self.err, self.lock = [], threading.Lock()
        self.t = threading.Thread(target=self._drain, daemon=True)
        self.t.start()
        self.wait_log(ready, timeout=ready_timeout)

    def _drain(self):
        for line in self.p.stderr:
            with self.lock:
                self.err.append(line)

    def log(self):
        with self.lock:
            return "".join(self.err)

    def send(self, *evs):
        if self.p.poll() is not None:
            raise AssertionError("eddy exited %s:\n%s" % (self.p.returncode, self.log()[-6000:]))
        self.p.stdin.write("".join(json.dumps(e) + "\n" for e in evs))
        self.p.stdin.flush()

    def wait_log(self, pattern, count=1, timeout=20):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if len(re.findall(pattern, self.log())) >= count:
                return
            if self.p.poll() is not None and len(re.findall(pattern, self.log())) < count:
                break
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %r in the log:\n%s" % (pattern, self.log()))

    def outputs(self, n, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            outs = read_jsonl(self.out)
            if len(outs) >= n:
                return {o["event_id"]: o for o in outs}
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %d outputs:\n%s" % (n, self.log()))

    def finish(self, timeout=60):
        self.p.stdin.close()
        rc = self.p.wait(timeout=timeout)
        self.t.join(10)
        return rc


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(l) for l in open(path) if l.strip()]


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def copy_example(tmp):
    d = os.path.join(tmp, "job")
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns(".eddy"))
    return d


def example_script():
    return json.load(open(os.path.join(EXAMPLE, "mock-script.json")))


def expected_answer(text, orders, history_len):
    """What the example's mock script answers for TEXT (see mock-script.json)."""
    import re
    m = re.search(r"order ([A-Z][0-9]{4})", text)
    if m:
        o = orders.get(m.group(1))
        if not o:
            return ("Sorry, I could not find that order (error: tool 'lookup_order' failed: ",
                    "no order %s). Please check the number." % m.group(1))
        return ("Order %s is %s; carrier %s, expected %s." % (m.group(1), o["status"], o["carrier"], o["eta"]),)
    if "return" in text:
        return ("You can return any item within 30 days for a full refund.",)
    if "ship to" in text:
        return ("Yes, we ship to Canada and most of Europe.",)
    return ("Thanks for your message. (This is message %d of our conversation.)" % history_len,)


# -- tests ----------------------------------------------------------------------

def test_example_end_to_end(tmp):
    """Every event yields exactly one right output; per-key order; a trace per run."""
    d = copy_example(tmp)
    with Mock(tmp, example_script()) as mock:
        out = os.path.join(tmp, "out.jsonl")
        summary = os.path.join(tmp, "summary.json")
        eddy("run", os.path.join(d, "job.yaml"), "--output", out, "--summary-json", summary,
             env={"OPENAI_BASE_URL": mock.base_url}, check=0)
    events = read_jsonl(os.path.join(d, "events.jsonl"))
    outputs = read_jsonl(out)
    orders = json.load(open(os.path.join(d, "orders.json")))
    assert len(outputs) == len(events), (len(outputs), len(events))
    by_id = {}
    for o in outputs:
        assert o["event_id"] not in by_id, "duplicate output for %s" % o["event_id"]
        by_id[o["event_id"]] = o
    seen_per_key = {}
    for ev in events:
        o = by_id[ev["id"]]
        assert o["key"] == ev["customer_id"] and o["agent"] == "support"
        n = seen_per_key.get(ev["customer_id"], 0) + 1
        seen_per_key[ev["customer_id"]] = n
        exp = expected_answer(ev["text"], orders, min(n, 11))
        for part in exp:
            assert part in o["output"], (ev, o["output"], exp)
        assert o["usage"]["total_tokens"] > 0 and o["turns"] >= 1
    # per-key output order equals input order
    pos = {o["event_id"]: i for i, o in enumerate(outputs)}
    for key in seen_per_key:
        ids = [e["id"] for e in events if e["customer_id"] == key]
        assert [pos[i] for i in ids] == sorted(pos[i] for i in ids), "order broken for " + key
    s = json.load(open(summary))
    assert s["events"] == 300 and s["runs_ok"] == 300 and s["dead_letters"] == 0, s
    db = sqlite3.connect(os.path.join(d, ".eddy", "order-support", "traces.db"))
    rows = dict(db.execute("SELECT event_id, trace_id FROM traces").fetchall())
    assert len(rows) == 300
    for o in outputs:
        assert rows[o["event_id"]] == o["trace_id"]
    n_tool_spans = db.execute("SELECT count(*) FROM spans WHERE name = 'execute_tool lookup_order'").fetchone()[0]
    assert n_tool_spans == s["tool_calls"] > 0
    llm = db.execute("SELECT attributes FROM spans WHERE name LIKE 'chat %' LIMIT 1").fetchone()[0]
    attrs = json.loads(llm)
    for k in ("gen_ai.request.model", "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
              "gen_ai.response.finish_reasons"):
        assert k in attrs, (k, attrs)
    # the CLI shows them
    tid = outputs[0]["trace_id"]
    p = eddy("trace", "show", tid[-10:], os.path.join(d, "job.yaml"), check=0)
    assert "invoke_agent support" in p.stdout and "chat gpt-4o-mini" in p.stdout, p.stdout
    assert tid in p.stdout, p.stdout
    # ids begin with their time (milliseconds): the traces of one moment share their
    # first digits, and a prefix of those is ambiguous, with the way out in the message
    same = [t for t in rows.values() if t[:10] == tid[:10]]
    p = eddy("trace", "show", tid[:10], os.path.join(d, "job.yaml"), check=None)
    if len(same) > 1:
        assert p.returncode == 1 and "ambiguous" in p.stderr and "last digits" in p.stderr, p
    else:
        assert tid in p.stdout, p.stdout
    p = eddy("trace", "show", tid[:24].upper(), os.path.join(d, "job.yaml"), check=0)
    assert tid in p.stdout, p.stdout
    for bad in ("%", "_", "", "xyz", tid + "0"):  # not read as LIKE patterns, nor matched
        p = eddy("trace", "show", bad, os.path.join(d, "job.yaml"), check=None)
        assert p.returncode == 1 and "not a trace id" in p.stderr, (bad, p.stderr)
    now_ms = time.time() * 1000
    assert all(abs(int(t[:12], 16) - now_ms) < 600000 for t in rows.values()), rows
    p = eddy("trace", "list", os.path.join(d, "job.yaml"), "--limit", "5", check=0)
    assert len(p.stdout.strip().splitlines()) == 6, p.stdout


FIXTURE_V1 = os.path.join(ROOT, "tests", "fixtures", "history-v1", "state.db")


def test_history_v1_store_is_migrated(tmp):
    """A store written by eddy before the neutral LLM layer (OpenAI-shaped history,
    tests/fixtures/history-v1) is migrated when opened; its conversations go on."""
    import sqlite3
    d = copy_example(tmp)
    script = {"rules": [{"reply": "ok"}]}
    with Mock(tmp, script) as mock:
        job = custom_job(d, mock.base_url, agent_extra="    memory: { history: 10 }")
        state = os.path.join(d, ".eddy", "t", "state.db")
        os.makedirs(os.path.dirname(state))
        shutil.copy(FIXTURE_V1, state)
        write(os.path.join(d, "in.jsonl"), json.dumps({"id": "e1", "customer_id": "C034",
                                                       "text": "Thanks!"}) + "\n")
        p = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "out.jsonl"), check=0)
        assert "migrated from schema version 1 to 4 (40 history entries" in p.stderr, p.stderr
        msgs = mock.requests()[0]["messages"]
    roles = [m["role"] for m in msgs]
    # system, three earlier runs (user, assistant + call, tool, assistant), the new user turn
    assert roles == ["system"] + ["user", "assistant", "tool", "assistant"] * 3 + ["user"], roles
    call = msgs[2]
    assert call["content"] == "" and call["tool_calls"][0]["function"]["name"] == "lookup_order"
    assert msgs[3]["tool_call_id"] == call["tool_calls"][0]["id"]
    assert msgs[3]["content"].startswith('{"status"')
    db = sqlite3.connect(state)
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "4"
    for (text,) in db.execute("SELECT messages FROM history"):
        for m in json.loads(text):
            assert set(m) == {"role", "parts"}, m
    db.close()
    # opened again: nothing more to migrate, and the run goes on
    os.unlink(os.path.join(tmp, "mock.port"))
    with Mock(tmp, script) as mock:
        job = custom_job(d, mock.base_url, agent_extra="    memory: { history: 10 }")
        p = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "out2.jsonl"), "--from-start", check=0)
        assert "migrated" not in p.stderr, p.stderr
        assert "1 runs ok" in p.stderr, p.stderr


def test_memory_continues(tmp):
    """A second `eddy run` continues each key's conversation and tool memory."""
    d = copy_example(tmp)
    write(os.path.join(d, "a.jsonl"),
          '{"id":"1","customer_id":"K1","text":"Where is my order A1001?"}\n'
          '{"id":"2","customer_id":"K2","text":"hello"}\n')
    write(os.path.join(d, "b.jsonl"),
          '{"id":"3","customer_id":"K1","text":"hello again"}\n'
          '{"id":"4","customer_id":"K2","text":"hello again"}\n')
    with Mock(tmp, example_script()) as mock:
        env = {"OPENAI_BASE_URL": mock.base_url}
        eddy("run", os.path.join(d, "job.yaml"), "--input", os.path.join(d, "a.jsonl"),
             "--output", os.path.join(tmp, "a.out"), env=env, check=0)
        eddy("run", os.path.join(d, "job.yaml"), "--input", os.path.join(d, "b.jsonl"),
             "--output", os.path.join(tmp, "b.out"), env=env, check=0)
        reqs = mock.requests()
    b = {o["event_id"]: o for o in read_jsonl(os.path.join(tmp, "b.out"))}
    assert "message 2 of our conversation" in b["3"]["output"], b["3"]
    assert "message 2 of our conversation" in b["4"]["output"], b["4"]
    # K1's second run saw its first conversation, tool call included, and its memory
    last = [r for r in reqs if any(m.get("content") == "hello again" for m in r["messages"])
            and "K1" in r["messages"][0]["content"]][0]
    roles = [m["role"] for m in last["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "assistant", "user"], roles
    assert "Last order this customer asked about: A1001" in last["messages"][0]["content"]
    db = sqlite3.connect(os.path.join(d, ".eddy", "order-support", "state.db"))
    doc = json.loads(db.execute("SELECT doc FROM key_memory WHERE key='K1'").fetchone()[0])
    assert doc == {"last_order": "A1001", "lookups": 1}, doc


def test_dead_letters(tmp):
    """Malformed lines go to the dead-letter file with line numbers; the rest run."""
    d = copy_example(tmp)
    write(os.path.join(d, "in.jsonl"),
          '{"id":"ok1","customer_id":"C1","text":"hello"}\n'
          'this is not json\n'
          '\n'
          '[1, 2, 3]\n'
          '{"id":"nokey","text":"no customer"}\n'
          '{"id":"badtype","customer_id":"C2","type":"mystery","text":"x"}\n'
          '{"id":"ok2","customer_id":"C1","text":"hello"}\n')
    dead = os.path.join(tmp, "dead.jsonl")
    with Mock(tmp, example_script()) as mock:
        eddy("run", os.path.join(d, "job.yaml"), "--input", os.path.join(d, "in.jsonl"),
             "--output", os.path.join(tmp, "out.jsonl"), "--dead-letter", dead,
             env={"OPENAI_BASE_URL": mock.base_url}, check=0)
    outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
    assert sorted(o["event_id"] for o in outs) == ["ok1", "ok2"], outs
    dl = read_jsonl(dead)
    lines = {r["line"]: r for r in dl}
    assert sorted(lines) == [2, 4, 5, 6], dl
    assert "in.jsonl:2:" in lines[2]["reason"] and "not valid JSON" in lines[2]["reason"]
    assert lines[2]["raw"] == "this is not json"
    assert "must be a JSON object" in lines[4]["reason"]
    assert "no key 'customer_id'" in lines[5]["reason"] and lines[5]["event_id"] == "nokey"
    assert "type 'mystery'" in lines[6]["reason"]


def custom_job(d, base_url, extra_model="", agent_extra="", tools=("tools/lookup_order.lua",),
               budget="{ turns: 6 }"):
    job = """job: t
key: customer_id
models:
  default:
    base_url: %s
    api_key: sk-test-SECRET-9f8e7d
    model: mock-model
    retry: { attempts: 3, backoff: 20ms..100ms }
    timeout: 5s
%s
agents:
  support:
    prompt: { system: "You help {{key}}.", user: "{{event.text}}" }
    tools: [ %s ]
    budget: %s
%s
""" % (base_url, extra_model, ", ".join(tools), budget, agent_extra)
    write(os.path.join(d, "job.yaml"), job)
    return os.path.join(d, "job.yaml")


def test_failing_tool_and_429(tmp):
    """A tool that raises and a 429-then-success both end in a correct output."""
    d = copy_example(tmp)
    write(os.path.join(d, "tools", "broken.lua"), """return eddy.tool {
  name = "broken", description = "always fails",
  params = { x = { type = "integer", required = true } },
  run = function(args, ctx)
    local order = nil
    return order.id
  end,
}
""")
    script = {"rules": [
        {"when": {"last_user_contains": "RATE"}, "times": 1,
         "fault": {"status": 429, "retry_after_ms": 30}},
        {"when": {"last_role": "tool"}, "reply": "tool said: ${tool}"},
        {"when": {"last_user_contains": "BREAK"},
         "tool_calls": [{"name": "broken", "arguments": {"x": 1}}]},
        {"when": {"last_user_contains": "BADARGS"},
         "tool_calls": [{"name": "broken", "arguments": {"x": "not a number"}}]},
        {"reply": "fine: ${user}"}]}
    with Mock(tmp, script) as mock:
        job = custom_job(d, mock.base_url, tools=("tools/broken.lua",))
        write(os.path.join(d, "in.jsonl"),
              '{"id":"a","customer_id":"C1","text":"BREAK it"}\n'
              '{"id":"b","customer_id":"C2","text":"RATE limited"}\n'
              '{"id":"c","customer_id":"C3","text":"BADARGS"}\n')
        p = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "out.jsonl"), "--summary-json", os.path.join(tmp, "s.json"),
                 "--log-level", "debug", env={}, check=0)
        stats = mock.stats()
    outs = {o["event_id"]: o for o in read_jsonl(os.path.join(tmp, "out.jsonl"))}
    assert "tool 'broken' failed" in outs["a"]["output"], outs["a"]
    assert "broken.lua:6: attempt to index a nil value (local 'order')" in outs["a"]["output"], outs["a"]
    assert outs["b"]["output"] == "fine: RATE limited", outs["b"]
    assert "expected integer, got string" in outs["c"]["output"], outs["c"]
    s = json.load(open(os.path.join(tmp, "s.json")))
    assert s["llm_retries"] == 1 and s["runs_ok"] == 3 and s["tool_errors"] == 2, s
    assert stats["faults"] == 1
    db = sqlite3.connect(os.path.join(d, ".eddy", "t", "traces.db"))  # the job is named t
    attempts = [json.loads(a).get("eddy.llm.attempts") for (a,) in
                db.execute("SELECT attributes FROM spans WHERE name LIKE 'chat %'")]
    assert attempts.count(2) == 1, attempts
    # the API key never appears in logs or traces
    assert "SECRET" not in p.stderr
    dump = "\n".join(str(r) for r in db.execute("SELECT * FROM spans"))
    assert "SECRET" not in dump


def test_tool_call_budget_fails_the_run(tmp):
    """A model that asks for more tool calls than budget.tool_calls fails the run (dead
    letter with the reason), as every budget does; within the budget it runs."""
    d = copy_example(tmp)
    script = {"rules": [
        {"when": {"last_role": "tool"}, "reply": "done"},
        {"when": {"last_user_contains": "MANY"},
         "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1001"}},
                        {"name": "lookup_order", "arguments": {"order_id": "A1002"}},
                        {"name": "lookup_order", "arguments": {"order_id": "A1003"}}]},
        {"when": {"last_user_contains": "ONE"},
         "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1001"}}]},
        {"reply": "fine"}]}
    with Mock(tmp, script) as mock:
        job = custom_job(d, mock.base_url, budget="{ turns: 6, tool_calls: 2 }")
        write(os.path.join(d, "in.jsonl"),
              '{"id":"many","customer_id":"C1","text":"MANY please"}\n'
              '{"id":"one","customer_id":"C2","text":"ONE please"}\n')
        dead = os.path.join(tmp, "dead.jsonl")
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), "--dead-letter", dead, env={}, check=0)
    outs = {o["event_id"]: o for o in read_jsonl(os.path.join(tmp, "out.jsonl"))}
    deads = {x.get("event_id"): x for x in read_jsonl(dead)}
    assert "one" in outs and outs["one"]["tool_calls"] == 1, outs
    assert "many" not in outs and "many" in deads, (outs, deads)
    assert "budget exceeded: the model asked for 3 tool calls, budget is 2" in \
        deads["many"]["reason"], deads["many"]


def test_llm_failures_dead_letter(tmp):
    """5xx every time, a timeout, a malformed body: retried, then dead-lettered."""
    d = copy_example(tmp)
    script = {"rules": [
        {"when": {"last_user_contains": "FIVE"}, "fault": {"status": 500}},
        {"when": {"last_user_contains": "SLOW"}, "fault": {"status": 200, "delay_ms": 3000}},
        {"when": {"last_user_contains": "GARBLED"}, "fault": {"malformed": True}},
        {"when": {"last_user_contains": "CUT"}, "times": 1, "fault": {"truncate": True}},
        {"when": {"last_user_contains": "QUOTA"},
         "fault": {"status": 429, "error_code": "insufficient_quota"}},
        {"when": {"last_user_contains": "LOOP"},
         "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1001"}}]},
        {"reply": "ok"}]}
    with Mock(tmp, script) as mock:
        job = custom_job(d, mock.base_url, budget="{ turns: 3 }").replace("timeout: 5s", "timeout: 1s")
        write(job, open(job).read().replace("timeout: 5s", "timeout: 1s"))
        write(os.path.join(d, "in.jsonl"), "".join(
            json.dumps({"id": t, "customer_id": "K" + t, "text": t}) + "\n"
            for t in ["FIVE", "SLOW", "GARBLED", "CUT", "QUOTA", "LOOP", "fine"]))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), "--dead-letter", os.path.join(tmp, "dead.jsonl"),
             check=0)
        reqs = mock.requests()
    outs = {o["event_id"]: o for o in read_jsonl(os.path.join(tmp, "out.jsonl"))}
    dead = {o["event_id"]: o for o in read_jsonl(os.path.join(tmp, "dead.jsonl"))}
    assert sorted(outs) == ["CUT", "fine"], (outs, dead)
    assert sorted(dead) == ["FIVE", "GARBLED", "LOOP", "QUOTA", "SLOW"], dead
    assert "HTTP 500" in dead["FIVE"]["reason"] and "3 attempts" in dead["FIVE"]["reason"]
    assert "imed out" in dead["SLOW"]["reason"], dead["SLOW"]
    assert "not valid JSON" in dead["GARBLED"]["reason"], dead["GARBLED"]
    assert "1 attempt:" in dead["QUOTA"]["reason"], dead["QUOTA"]
    assert "budget exceeded: 3 turns" in dead["LOOP"]["reason"], dead["LOOP"]
    assert dead["LOOP"]["event"]["text"] == "LOOP" and dead["LOOP"]["trace_id"]
    count = lambda t: sum(1 for r in reqs if r["messages"][1]["content"] == t)
    assert count("FIVE") == 3 and count("QUOTA") == 1 and count("CUT") == 2 and count("LOOP") == 3


def test_concurrency(tmp):
    """200 events over 200 keys with 200 ms latency: >= 150 requests in flight at once."""
    d = copy_example(tmp)
    script = {"rules": [{"reply": "ok ${user}"}]}
    with Mock(tmp, script, latency_ms=200) as mock:
        job = custom_job(d, mock.base_url, extra_model="    limits: { concurrency: 256 }")
        write(os.path.join(d, "in.jsonl"), "".join(
            json.dumps({"id": "e%d" % i, "customer_id": "key%d" % i, "text": "q%d" % i}) + "\n"
            for i in range(200)))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), check=0)
        stats = mock.stats()
    outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
    assert len(outs) == 200 and all(o["output"] == "ok q" + o["event_id"][1:] for o in outs)
    assert stats["requests"] == 200, stats
    assert stats["peak_in_flight"] >= 150, stats


def test_same_key_runs_in_order(tmp):
    """Runs of one key never overlap: with latency, one key's requests are sequential."""
    d = copy_example(tmp)
    script = {"rules": [{"reply": "n=${n_user}"}]}
    with Mock(tmp, script, latency_ms=50) as mock:
        job = custom_job(d, mock.base_url)
        write(os.path.join(d, "in.jsonl"), "".join(
            json.dumps({"id": "e%d" % i, "customer_id": "same", "text": "q%d" % i}) + "\n"
            for i in range(8)))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), check=0)
        stats = mock.stats()
    outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
    assert [o["event_id"] for o in outs] == ["e%d" % i for i in range(8)]
    # each run saw all earlier runs of the key (history default 20)
    assert [o["output"] for o in outs] == ["n=%d" % (i + 1) for i in range(8)]
    assert stats["peak_in_flight"] == 1, stats


def start_on_stdin(job, out, mock, events):
    """Start `eddy run JOB` reading EVENTS from a pipe that stays open, and wait
    until the mock has all of them in flight."""
    proc = subprocess.Popen([os.path.join(ARGS.build, "eddy"), "run", job, "--input", "-",
                             "--output", out], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    for ev in events:
        proc.stdin.write(json.dumps(ev) + "\n")
    proc.stdin.flush()
    deadline = time.time() + 5
    while mock.stats()["in_flight"] < len(events) and time.time() < deadline:
        time.sleep(0.02)
    return proc


def test_sigterm_drains(tmp):
    """SIGTERM stops reading, lets in-flight runs finish, and exits 0."""
    d = copy_example(tmp)
    script = {"rules": [{"reply": "done ${user}"}]}
    with Mock(tmp, script, latency_ms=400) as mock:
        job = custom_job(d, mock.base_url)
        out = os.path.join(tmp, "out.jsonl")
        proc = start_on_stdin(job, out, mock, [{"id": "s%d" % i, "customer_id": "k%d" % i,
                                                "text": "x%d" % i} for i in range(5)])
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        err = proc.stderr.read()
    assert rc == 0, (rc, err)
    outs = read_jsonl(out)
    assert sorted(o["event_id"] for o in outs) == ["s%d" % i for i in range(5)], (outs, err)
    assert "SIGTERM" in err


def test_sigterm_abandons_after_grace(tmp):
    """Runs still waiting when shutdown_grace ends are abandoned: exit 3, in time."""
    d = copy_example(tmp)
    script = {"rules": [{"reply": "late ${user}"}]}
    with Mock(tmp, script, latency_ms=5000) as mock:
        job = custom_job(d, mock.base_url)
        write(job, open(job).read().replace("models:", "shutdown_grace: 300ms\nmodels:"))
        out = os.path.join(tmp, "out.jsonl")
        proc = start_on_stdin(job, out, mock, [{"id": "a%d" % i, "customer_id": "k%d" % i,
                                                "text": "x"} for i in range(3)])
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=15)
        took = time.time() - t0
        err = proc.stderr.read()
    assert rc == 3, (rc, err)
    assert took < 4, took  # not the 5 s the model would have taken
    assert read_jsonl(out) == []
    for i in range(3):
        assert "event a%d (key k%d) abandoned at shutdown" % (i, i) in err, err


def test_check_errors(tmp):
    """`eddy check` names every problem with file:line:col and exits 2."""
    d = os.path.join(tmp, "bad")
    write(os.path.join(d, "tools", "syntax.lua"), "return eddy.tool {\n  name = \"x\",\n  run = function(a) return a end end,\n}\n")
    write(os.path.join(d, "tools", "schema.lua"), """return eddy.tool {
  name = "s",
  description = "bad schema",
  params = {
    id = { type = "strng", required = true },
  },
  run = function(args) return args end,
}
""")
    write(os.path.join(d, "job.yaml"), """job: bad
key: customer_id
models:
  default:
    base_url: http://127.0.0.1:1/v1
    modle: gpt
agents:
  a:
    prompt:
      system_file: prompts/missing.md
      user: "{{evnt.text}}"
    tools: [ tools/syntax.lua, tools/schema.lua ]
    budget: { turns: many }
""")
    p = eddy("check", os.path.join(d, "job.yaml"), check=2)
    j = os.path.join(d, "job.yaml")
    expect = [
        j + ":6:5: unknown key 'modle' (did you mean 'model'?)",
        j + ":4:3: missing required key 'model'",
        j + ":10:20: prompt file 'prompts/missing.md' cannot be read",
        j + ":11:13: unknown template variable 'evnt.text'",
        os.path.join(d, "tools", "syntax.lua") + ":3:30: '}' expected (to close '{' at line 1) near 'end'",
        os.path.join(d, "tools", "schema.lua") + ":5:5: parameter 'id': unknown type 'strng'",
        j + ":13:22: 'turns' must be an integer",
    ]
    for e in expect:
        assert e in p.stderr, "missing %r in:\n%s" % (e, p.stderr)
    assert "7 problems found" in p.stderr, p.stderr
    write(os.path.join(d, "yaml.yaml"), "job: x\nkey: [unclosed\n")
    p = eddy("check", os.path.join(d, "yaml.yaml"), check=2)
    assert os.path.join(d, "yaml.yaml") + ":3:1: invalid YAML" in p.stderr, p.stderr
    p = eddy("check", os.path.join(EXAMPLE, "job.yaml"), check=0)
    assert "ok" in p.stdout


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def run_tests(tests, only, prefix, width, what):
    """Run each test (those whose name contains ONLY) in a fresh temp folder, kept when
    it fails; print PASS/FAIL lines and a total. Returns the number that failed."""
    failed = ran = 0
    for t in tests:
        if only and only not in t.__name__:
            continue
        ran += 1
        tmp = tempfile.mkdtemp(prefix=prefix)
        t0 = time.time()
        try:
            t(tmp)
            print("PASS %-*s %.2fs" % (width, t.__name__, time.time() - t0), flush=True)
            shutil.rmtree(tmp, ignore_errors=True)
        except Exception:
            failed += 1
            print("FAIL %-*s (files kept in %s)" % (width, t.__name__, tmp), flush=True)
            traceback.print_exc()
    if not ran:
        print("no %s test matches --only %r" % (what, only))
        return 1
    print("%d %s test(s) failed" % (failed, what) if failed else "all %d %s tests passed" % (ran, what))
    return failed


def suite_main(tests, prefix, width, what):
    """The main of a suite that takes only the common options (--build DIR, --only NAME, -v):
    parse them into ARGS (the build folder made absolute), run TESTS; the exit code."""
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--only")
    ap.add_argument("-v", action="store_true")
    ARGS = ap.parse_args()
    ARGS.build = os.path.abspath(ARGS.build)
    return 1 if run_tests(tests, ARGS.only, prefix, width, what) else 0


def main():
    return suite_main(TESTS, "eddy-it-", 32, "integration")


if __name__ == "__main__":
    sys.exit(main())
