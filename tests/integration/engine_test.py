#!/usr/bin/env python3
"""The engine: workers, key groups, shared state, side effects after a crash, the store's
lock. Runs the real binary against the scripted mock on loopback.

    python3 tests/integration/engine_test.py --build build [--only NAME]
"""
import collections
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Mock, copy_example, eddy, read_jsonl, write  # noqa: E402

COUNT_TOOL = """return eddy.tool {
  name = "count", description = "count the event",
  params = { id = { type = "string", required = true } },
  run = function(args, ctx)
    local n = ctx.state.incr("events")
    ctx.state.incr("events:" .. ctx.key)
    ctx.memory.count = (ctx.memory.count or 0) + 1
    if ctx.state.compare_and_set("first", nil, args.id) then ctx.memory.first = true end
    ctx.state.set("last:" .. ctx.key, args.id)
    if (ctx.event.slow or 0) > 0 then eddy.sleep(ctx.event.slow) end
    return { n = n, seen = ctx.state.get("last:" .. ctx.key) }
  end,
}
"""

# a side effect: it "sends" once (a shared-state mark per id), then waits; reconcile asks
# the mark whether the send happened
SEND_TOOL = """return eddy.tool {
  name = "send", description = "send a notification",
  params = { id = { type = "string", required = true } },
  side_effects = true,
  run = function(args, ctx)
    ctx.state.incr("sent")
    ctx.state.set("sent:" .. args.id, true)
    eddy.sleep(ctx.event.slow or 0)
    return { sent = args.id }
  end,
  reconcile = function(args, ctx)
    ctx.state.incr("reconciled")
    if ctx.state.get("sent:" .. args.id) then return { sent = args.id, reconciled = true } end
    return nil
  end,
}
"""

SCRIPT = {"rules": [
    {"when": {"last_role": "tool"}, "reply": "done ${tool.n}"},
    {"when": {"last_user_regex": "event (e[0-9]+)"},
     "tool_calls": [{"name": "count", "arguments": {"id": "$1"}}]}]}
SCRIPT["rules"][1]["when"]["last_user_regex"] = "event ([ef][0-9]+)"


def job_text(base_url, tool="tools/count.lua", extra=""):
    return """job: eng
key: customer_id
checkpoint: { interval: 100ms }
%s
models:
  default:
    base_url: %s
    model: mock-model
    retry: { attempts: 3, backoff: 20ms..100ms }
    timeout: 10s
agents:
  support:
    prompt: { user: "event {{event.id}}: {{event.text}}" }
    tools: [ %s ]
    budget: { turns: 4 }
""" % (extra, base_url, tool)


def setup(tmp, tool_src=COUNT_TOOL, name="count.lua"):
    d = copy_example(tmp)
    write(os.path.join(d, "tools", name), tool_src)
    return d


def events(n, keys, slow=0, every=1):
    return "".join(json.dumps({"id": "e%d" % i, "customer_id": "K%03d" % (i % keys),
                               "text": "hello", "slow": slow if i % every == 0 else 0}) + "\n"
                   for i in range(n))


def store_of(d):
    return sqlite3.connect(os.path.join(d, ".eddy", "eng", "state.db"))


def shared(db):
    return {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM shared_state")}


def test_shared_state_across_workers(tmp):
    """ctx.state is one set of keys for all workers: 400 events over 40 keys on 4 workers
    count to exactly 400 (and 10 per key); compare_and_set lets exactly one event be first;
    the values survive into the next run."""
    d = setup(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        write(os.path.join(d, "in.jsonl"), events(400, 40))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), "--workers", "4", check=0)
        outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
        assert len(outs) == 400, len(outs)
        # every event got a distinct counter value: the increments never raced
        ns = sorted(int(o["output"].split()[-1]) for o in outs)
        assert ns == list(range(1, 401)), ns[:10]
        db = store_of(d)
        st = shared(db)
        assert st["events"] == 400, st["events"]
        assert all(st["events:K%03d" % k] == 10 for k in range(40)), st
        firsts = [k for k, doc in db.execute("SELECT key, doc FROM key_memory")
                  if json.loads(doc).get("first")]
        assert len(firsts) == 1, firsts
        db.close()
        write(os.path.join(d, "in2.jsonl"), events(10, 5).replace('"e', '"f'))
        eddy("run", job, "--input", os.path.join(d, "in2.jsonl"), "--output",
             os.path.join(tmp, "out2.jsonl"), check=0)
    st = shared(store_of(d))
    assert st["events"] == 410, st["events"]


def test_per_key_order_with_random_latencies(tmp):
    """4 workers, answers that take 0 to 90 ms by event: every key's outputs come in the
    order of its events, and each event's answer is its own."""
    d = setup(tmp)
    rules = [{"when": {"last_role": "tool"}, "reply": "done ${tool.n}"}]
    for digit in range(10):  # the event id's last digit picks the latency
        rules.append({"when": {"last_user_regex": "event ([ef][0-9]*%d):" % digit},
                      "tool_calls": [{"name": "count", "arguments": {"id": "$1"}}],
                      "latency_ms": (digit * 37) % 91})
    with Mock(tmp, {"rules": rules}) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        write(os.path.join(d, "in.jsonl"), events(400, 25))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), "--workers", "4", check=0)
    outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
    assert len(outs) == 400, len(outs)
    seen = collections.defaultdict(list)
    for o in outs:
        seen[o["key"]].append(int(o["event_id"][1:]))
    for k, ids in seen.items():
        assert ids == sorted(ids), (k, ids)
        assert len(ids) == 16, (k, len(ids))


def test_key_groups_stay_on_one_worker(tmp):
    """All runs of a key, and of its key group, run on the worker of that group."""
    d = setup(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url, extra="max_keygroups: 16"))
        write(os.path.join(d, "in.jsonl"), events(300, 60))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), "--workers", "3", check=0)
    db = sqlite3.connect(os.path.join(d, ".eddy", "eng", "traces.db"))
    where = collections.defaultdict(set)
    for (attrs,) in db.execute("SELECT attributes FROM spans WHERE name LIKE 'invoke_agent%'"):
        a = json.loads(attrs)
        where[a["eddy.key"]].add(a["eddy.worker"])
    assert len(where) == 60, len(where)
    assert all(len(w) == 1 for w in where.values()), {k: w for k, w in where.items() if len(w) > 1}
    assert len(set().union(*where.values())) == 3, where  # every worker had keys


def test_max_keygroups_change_is_refused(tmp):
    """A store knows its key groups: another max_keygroups is refused while it holds
    memory, with a message that says what to do."""
    d = setup(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        write(os.path.join(d, "in.jsonl"), events(5, 5))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), check=0)
        write(job, job_text(mock.base_url, extra="max_keygroups: 64"))
        p = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "out.jsonl"), check=1)
    assert "holds memory for 128 key groups and the job asks for 64" in p.stderr, p.stderr
    assert "max_keygroups: 128" in p.stderr, p.stderr


def test_one_store_one_process(tmp):
    """A second eddy on a store a running one holds is refused, naming the first's pid."""
    d = setup(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        write(os.path.join(d, "in.jsonl"), events(20, 5, slow=3000, every=1))
        first = subprocess.Popen([os.path.join(run.ARGS.build, "eddy"), "run", job, "--input",
                                  os.path.join(d, "in.jsonl"), "--output",
                                  os.path.join(tmp, "out.jsonl")],
                                 stderr=subprocess.PIPE, text=True)
        try:
            lock = os.path.join(d, ".eddy", "eng", "state.db.lock")
            for _ in range(200):
                if os.path.exists(lock) and open(lock).read().strip():
                    break
                time.sleep(0.02)
            p = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                     os.path.join(tmp, "out2.jsonl"), check=1)
            assert "another eddy run (pid %d) is using" % first.pid in p.stderr, p.stderr
        finally:
            first.send_signal(signal.SIGINT)
            first.send_signal(signal.SIGINT)
            first.wait(timeout=30)


def kill_during(cmd, env, out_rows, want, timeout=30):
    """Start CMD, kill -9 it once OUT_ROWS() reaches WANT."""
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while out_rows() < want:
        if p.poll() is not None or time.time() - t0 > timeout:
            raise AssertionError("eddy ended or hung before the kill: rc %s" % p.poll())
        time.sleep(0.01)
    p.kill()
    p.wait()


def journal_rows(d, state):
    db = store_of(d)
    try:
        return db.execute("SELECT count(*) FROM journal WHERE kind='tool' AND state=?",
                          (state,)).fetchone()[0]
    finally:
        db.close()


def test_side_effects_reconciled_after_kill(tmp):
    """kill -9 while side-effect calls are in flight: after the restart reconcile is asked
    exactly about the calls that had started (their PENDING entries), and every notification
    is sent exactly once."""
    d = setup(tmp, SEND_TOOL, "send.lua")
    script = {"rules": [
        {"when": {"last_role": "tool"}, "reply": "sent"},
        {"when": {"last_user_regex": "event (e[0-9]+)"},
         "tool_calls": [{"name": "send", "arguments": {"id": "$1"}}]}]}
    with Mock(tmp, script) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url, tool="tools/send.lua"))
        write(os.path.join(d, "in.jsonl"), events(60, 30, slow=1500, every=3))
        cmd = [os.path.join(run.ARGS.build, "eddy"), "run", job, "--input",
               os.path.join(d, "in.jsonl"), "--output", os.path.join(tmp, "out.jsonl"),
               "--workers", "2", "--quiet"]

        def sent():
            db = store_of(d) if os.path.exists(os.path.join(d, ".eddy", "eng", "state.db")) \
                else None
            try:
                return shared(db).get("sent", 0) if db else 0
            except sqlite3.OperationalError:
                return 0
            finally:
                if db:
                    db.close()
        kill_during(cmd, None, sent, 15)
        pending = journal_rows(d, 1)
        assert pending > 0, "no side effect was in flight at the kill"
        summ = os.path.join(tmp, "summary.json")
        p = eddy(*cmd[1:], "--summary-json", summ, check=0)
        s = json.load(open(summ))
    assert s["tools_reconciled"] == pending, (s["tools_reconciled"], pending, p.stderr)
    st = shared(store_of(d))
    assert st["sent"] == 60, st["sent"]
    assert st.get("reconciled", 0) == pending, (st.get("reconciled"), pending)
    outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
    assert sorted(set(o["event_id"] for o in outs)) == sorted("e%d" % i for i in range(60))
    assert journal_rows(d, 1) == 0 and journal_rows(d, 0) == 0


def test_shared_state_exactly_once_across_kills(tmp):
    """kill -9 three times while tools that change shared state wait (after their changes):
    the counters end where an uninterrupted run ends them."""
    d = setup(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        write(os.path.join(d, "in.jsonl"), events(90, 9, slow=800, every=4))
        cmd = [os.path.join(run.ARGS.build, "eddy"), "run", job, "--input",
               os.path.join(d, "in.jsonl"), "--output", os.path.join(tmp, "out.jsonl"),
               "--workers", "2", "--quiet"]
        out = os.path.join(tmp, "out.jsonl")
        for want in (10, 30, 55):
            kill_during(cmd, None, lambda: len(read_jsonl(out)) if os.path.exists(out) else 0,
                        want)
        eddy(*cmd[1:], check=0)
    db = store_of(d)
    st = shared(db)
    assert st["events"] == 90, st["events"]
    assert all(st["events:K%03d" % k] == 10 for k in range(9)), st
    counts = {k: json.loads(doc)["count"] for k, doc in db.execute(
        "SELECT key, doc FROM key_memory")}
    assert counts == {"K%03d" % k: 10 for k in range(9)}, counts
    outs = read_jsonl(out)
    assert set(o["event_id"] for o in outs) == set("e%d" % i for i in range(90))


def test_state_misuse_fails_the_call(tmp):
    """Bad ctx.state calls are tool errors naming the problem, the run goes on."""
    d = setup(tmp, """return eddy.tool {
  name = "count", description = "d", params = { id = { type = "string" } },
  run = function(args, ctx)
    if args.id == "e0" then ctx.state.set("k", "text"); return ctx.state.incr("k") end
    if args.id == "e1" then return ctx.state.set("", 1) end
    if args.id == "e2" then return ctx.state.set("k", nil) end
    if args.id == "e3" then return ctx.state.incr("n", "two") end
    if args.id == "e4" then return ctx.state.set(string.rep("x", 2000), 1) end
    return ctx.state.get("k")
  end }
""")
    script = {"rules": [
        {"when": {"last_role": "tool"}, "reply": "tool said: ${tool}"},
        {"when": {"last_user_regex": "event (e[0-9]+)"},
         "tool_calls": [{"name": "count", "arguments": {"id": "$1"}}]}]}
    with Mock(tmp, script) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        write(os.path.join(d, "in.jsonl"), events(6, 1))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), "--workers", "1", check=0)
    outs = {o["event_id"]: o["output"] for o in read_jsonl(os.path.join(tmp, "out.jsonl"))}
    assert "holds string, not a number" in outs["e0"], outs["e0"]
    assert "1 to 1024 bytes" in outs["e1"] and "1 to 1024 bytes" in outs["e4"], outs
    assert "a value is required" in outs["e2"], outs["e2"]
    assert "the amount must be a number" in outs["e3"], outs["e3"]
    assert outs["e5"] == 'tool said: text', outs["e5"]


def test_checkpoint_before_the_first_record_ends_keeps_the_place(tmp):
    """A checkpoint taken after a resume, before any record read since has finished, keeps
    the place it resumed at (with the right fingerprint): after a kill -9 the next start
    resumes there again, not from the top (which would run finished events again)."""
    d = setup(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        inp = os.path.join(d, "in.jsonl")
        write(inp, events(5, 5))
        args = ["run", job, "--input", inp, "--output", os.path.join(tmp, "out.jsonl")]
        eddy(*args, check=0)
        with open(inp, "a") as f:  # five more, each waiting 5 s in its tool
            f.write(events(10, 5, slow=5000).split("\n", 5)[5])
        p = subprocess.Popen([os.path.join(run.ARGS.build, "eddy")] + args,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # several checkpoints (every 100 ms), none of these records done
        p.kill()
        err1 = p.communicate()[1]
        p2 = eddy(*args, "--no-progress", check=0, timeout=60)
    assert "resuming at line 6" in err1, err1
    assert "resuming at line 6" in p2.stderr, p2.stderr
    assert "from the top" not in p2.stderr, p2.stderr
    outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
    assert sorted(o["event_id"] for o in outs) == ["e%d" % i for i in range(10)], outs
    st = shared(store_of(d))
    assert st["events"] == 10, st


def test_from_start_forgets_earlier_tries(tmp):
    """--from-start after a kill: the runs are new, and the journal of the earlier try is
    gone from the store at once (a later start, after another kill, must not find it and
    mix it with the new try's steps)."""
    d = setup(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        inp = os.path.join(d, "in.jsonl")
        write(inp, events(8, 4, slow=1500))  # two events per key, each tool waits 1.5 s
        out = os.path.join(tmp, "out.jsonl")
        cmd = [os.path.join(run.ARGS.build, "eddy"), "run", job, "--input", inp, "--output",
               out]
        p = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
        time.sleep(2.2)  # the first event of each key is done, the second one waits
        p.kill()
        p.wait()
        db = store_of(d)
        old = db.execute("SELECT count(*) FROM journal").fetchone()[0]
        db.close()
        assert old > 0, "nothing journaled at the first kill"
        t0_ns = time.time_ns()
        p = subprocess.Popen(cmd + ["--from-start"], stderr=subprocess.DEVNULL)
        time.sleep(0.8)  # the new try is in the first events' tools
        p.kill()
        p.wait()
        db = store_of(d)
        left = db.execute("SELECT count(*) FROM journal WHERE created_ns < ?",
                          (t0_ns,)).fetchone()[0]
        db.close()
        assert left == 0, "%d journal rows of the earlier try are still there" % left
        eddy(*cmd[1:], check=0)
    outs = read_jsonl(out)
    assert set(o["event_id"] for o in outs) >= set("e%d" % i for i in range(8)), outs


def test_stdin_pipe_left_open_ends_on_sigterm(tmp):
    """stdin a pipe that never ends (its writer keeps it open): eddy reads it on its loop,
    answers what came, and on SIGTERM ends at once, cleanly (no reader thread left blocked in
    read(2), no wake-up of a loop that is gone)."""
    d = setup(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url))
        out = os.path.join(tmp, "out.jsonl")
        p = subprocess.Popen([os.path.join(run.ARGS.build, "eddy"), "run", job, "--input", "-",
                              "--output", out, "--workers", "2"], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            p.stdin.write(events(5, 3))
            p.stdin.flush()  # and the pipe stays open
            t0 = time.time()
            while (not os.path.exists(out) or len(read_jsonl(out)) < 5) and time.time() - t0 < 20:
                time.sleep(0.02)
            assert len(read_jsonl(out)) == 5, read_jsonl(out) if os.path.exists(out) else None
            p.send_signal(signal.SIGTERM)
            t0 = time.time()
            rc = p.wait(timeout=10)
            took = time.time() - t0
        finally:
            if p.poll() is None:
                p.kill()
        err = p.stderr.read()
    assert rc == 0, (rc, err)
    assert took < 5, took
    assert "5 events, 5 runs ok" in err, err


BIG_TOOL = """return eddy.tool {
  name = "count", description = "hold more than its memory budget",
  params = { id = { type = "string", required = true } },
  run = function(args, ctx)
    local t = {}
    for i = 1, 1000 do t[i] = string.rep("x", (1 + i % 3) << 20) .. i end
    return { n = #t }
  end,
}
"""


def vm(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) // 1024
    return 0


def test_memory_of_a_big_tool_call_goes_back(tmp):
    """A tool call stopped at its memory budget (256 MB, in strings of 1-3 MiB): within
    seconds the process is about that much smaller again, while the job goes on (stdin left
    open). mimalloc keeps freed pages until its heap is collected; the workers collect every
    second."""
    d = setup(tmp, BIG_TOOL)
    with Mock(tmp, SCRIPT) as mock:
        job = os.path.join(d, "job.yaml")
        write(job, job_text(mock.base_url, tool="{ lua: tools/count.lua, limits: "
                            "{ memory: 256MB, instructions: 10000000000, wall: 60s } }"))
        out = os.path.join(tmp, "out.jsonl")
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=16").lstrip(":")
        p = subprocess.Popen([os.path.join(run.ARGS.build, "eddy"), "run", job, "--input", "-",
                              "--output", out, "--workers", "1"], stdin=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
        try:
            p.stdin.write(events(1, 1))
            p.stdin.flush()  # and the pipe stays open: the process lives on
            t0 = time.time()
            while (not os.path.exists(out) or not read_jsonl(out)) and time.time() - t0 < 30:
                time.sleep(0.02)
            rows = read_jsonl(out)
            assert rows and rows[0]["output"] == "done null", rows  # the tool failed: no n
            peak = vm(p.pid, "VmHWM")
            assert peak > 200, peak  # it did hold them
            rss = vm(p.pid, "VmRSS")
            while rss > peak - 150 and time.time() - t0 < 30:
                time.sleep(0.1)
                rss = vm(p.pid, "VmRSS")
            assert rss <= peak - 150, (peak, rss)
            p.send_signal(signal.SIGTERM)
            rc = p.wait(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
        err = p.stderr.read()
    assert rc == 0, (rc, err)


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return run.suite_main(TESTS, "eddy-eng-", 42, "engine")


if __name__ == "__main__":
    sys.exit(main())
