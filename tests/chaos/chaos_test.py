#!/usr/bin/env python3
"""Chaos tests: `eddy run` killed with SIGKILL at random moments and restarted.

Each scenario runs a job whose every event is one run of three steps: an LLM
call (the model asks for the Lua tool `count`), the tool call (it increments
ctx.memory.count, appends the event id to ctx.memory.seen and counts the event
in ctx.state, in all and per key), and a second LLM call (the model answers
"done <event> tool=<tool's id> #<count> <tag>"). The mock model (build/mockllm)
answers after 20 ms and logs every request; the job has 2 workers,
max_in_flight 200, a checkpoint every 300 ms. It is killed
(SIGKILL) at moments drawn from a seeded RNG and restarted each time; after the
last kill the last run finishes. The same input is run once uninterrupted into
a store of its own (the reference). Before each restart a copy of the store is
read (snapshots/before-NN.json: what that process found). Then, exactly:

  - the sink: every line is JSON; each input has its output exactly once
    (exactly_once) or at least once with every copy the same, output_id
    included (at_least_once); each output is the reference's (its count is
    the event's place among its key's events); per key, outputs are in input
    order (at_least_once: the first copy of each);
  - the model's request log, each request placed by (event id from the last
    user message, number of messages) and so by step (1: the first LLM call,
    3: the second, after the tool call's step 2): the job asked for exactly
    the steps the reference asked for; no process asked for a step twice; no
    process asked for a step that the store it started with had journaled,
    or of a run it had finished, or of a record below its checkpointed
    position; and a step whose run had
    already sent its next request more than COMMIT_SLACK_MS before a kill
    was journaled at that kill (the journal keeps up). Repeats after kills
    are counted and printed, and so are runs that had two steps repeated
    after one kill (legitimate: a run goes on without waiting for its step's
    commit, so a kill a few ms after the next request can lose both);
  - memory: each key's memory document equals the reference's, and its
    history (runs kept, and per run the user text and the answer) too, and
    the shared state (ctx.state counters);
  - no dead letters, no error lines or sanitizer reports on stderr; every
    process is killed or exits 0, the last one within EPOCH_TIMEOUT_S (else a
    hang); afterwards the store holds no runs or steps, its position is the
    end of the input, one more run sends nothing and writes nothing, and
    `eddy trace list` reads the trace store.

Scenarios (measured on this busy 2-core machine: 66-97 s in all with -O2, 122-162 s
under ASan+UBSan):
  replayed_steps_then_a_new_call  one event, deterministic: killed while its
                    second LLM call waits (5 s) after the first call and the
                    tool call were journaled; the restart must send it once
  exactly_once      5000 events over 500 keys, 20 kills
  at_least_once     5000 events over 500 keys, 20 kills
  kill_in_restore   1000 events over 100 keys (exactly_once): run to 40 % and
                    kill, then killed 20-50 ms after each restart six times;
                    to 70 %, six more

Kill moments of the 20-kill scenarios: the first within 100 ms of the first
start (nothing stored yet); 3 more within 100 ms of a restart and 4 at 100-300
ms (before or around the process's first checkpoint), shuffled among 8 that
come once the process has written 0.5-4 % of the outputs anew (plus 0-100 ms);
then 4 around the end: as the input ends (max_in_flight +-50 outputs before
the last), while the last runs drain (1-30 before), with the last outputs
(0-3 before), and once every output is in the sink (the last checkpoint and
shutdown). A moment that does not come (the process ended first) is printed
as missed; the job is done then and the remaining kills are not made.

    python3 tests/chaos/chaos_test.py --build build [--seed N] [--only NAME] [--keep]

A failure prints the seed; `--seed N --only NAME` runs that scenario again with
the same input and the same kill plan (where a process is at a moment still
varies from run to run). Files of a failed scenario are kept (path printed):
epochs.json (start, plan, kill time, exit of each process), epoch-NN.stderr,
mock-requests.jsonl, snapshots/before-NN.json (what the store held when process
NN started: finished runs, journaled steps, records below the position),
out.jsonl, state/; --keep keeps them always.
"""
import argparse
import bisect
import collections
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import run as it  # noqa: E402  (Mock, read_jsonl, write: the integration harness)

ARGS = None
LATENCY_MS = 20
COMMIT_SLACK_MS = 200   # an answer older than latency + this at a kill was journaled
EPOCH_TIMEOUT_S = 120   # a process that neither ends nor is killed by then hangs
MAX_IN_FLIGHT = 200
CHECKPOINT_INTERVAL = "300ms"

TOOL = """-- count: one per event; what the test compares with an uninterrupted run
return eddy.tool {
  name = "count",
  description = "Count this event for its key",
  params = { id = { type = "string", required = true } },
  run = function(args, ctx)
    ctx.state.incr("events")
    ctx.state.incr("events:" .. ctx.key)
    ctx.memory.count = (ctx.memory.count or 0) + 1
    ctx.memory.seen = ctx.memory.seen or eddy.array{}
    table.insert(ctx.memory.seen, args.id)
    return { id = args.id, count = ctx.memory.count, tag = string.lower(args.id) }
  end,
}
"""

SCRIPT = {"rules": [
    {"when": {"last_role": "tool", "last_user_regex": "^event (E[0-9]+) "},
     "reply": "done $1 tool=${tool.id} #${tool.count} ${tool.tag}"},
    {"when": {"last_role": "user", "last_user_regex": "^event (E[0-9]+) "},
     "tool_calls": [{"name": "count", "arguments": {"id": "$1"}}]},
]}

JOB = """job: chaos
key: k
source: { jsonl: in.jsonl }
sink: { jsonl: out.jsonl }
dead_letter: { jsonl: dead.jsonl }
delivery: %(delivery)s
workers: 2
max_in_flight: %(max_in_flight)d
checkpoint: { path: state/state.db, interval: %(interval)s }
trace: { path: state/traces.db }
shutdown_grace: 10s
models:
  default:
    base_url: %(base_url)s
    api_key: sk-test-chaos
    model: mock-model
    timeout: 30s
    retry: { attempts: 5, backoff: 20ms..100ms }
agents:
  a:
    prompt: { system: "You count for {{key}}.", user: "event {{event.id}} n={{event.n}}" }
    tools: [ tools/count.lua ]
    memory: { history: 4 }
    budget: { turns: 4, tool_calls: 2 }
"""

EVENT_RE = re.compile(r"^event (E[0-9]+) ")


class ChaosFailure(AssertionError):
    pass


def now_ms():
    return time.time() * 1000.0


def make_events(rng, n, nkeys):
    """N events over NKEYS keys: every key gets at least one, the rest at random."""
    keys = ["K%03d" % (i % nkeys) for i in range(nkeys)] + \
           ["K%03d" % rng.randrange(nkeys) for _ in range(n - nkeys)]
    rng.shuffle(keys)
    return [{"id": "E%05d" % i, "k": k, "n": i} for i, k in enumerate(keys)]


def expected_outputs(events):
    """What each event's output says: its count is its place among its key's events."""
    seen, exp = {}, {}
    for ev in events:
        c = seen[ev["k"]] = seen.get(ev["k"], 0) + 1
        exp[ev["id"]] = "done %s tool=%s #%d %s" % (ev["id"], ev["id"], c, ev["id"].lower())
    return exp


def make_job_dir(d, events, delivery, base_url, max_in_flight=MAX_IN_FLIGHT):
    os.makedirs(os.path.join(d, "tools"), exist_ok=True)
    it.write(os.path.join(d, "tools", "count.lua"), TOOL)
    it.write(os.path.join(d, "in.jsonl"), "".join(json.dumps(e) + "\n" for e in events))
    it.write(os.path.join(d, "job.yaml"), JOB % {"delivery": delivery, "base_url": base_url,
                                                  "max_in_flight": max_in_flight,
                                                  "interval": CHECKPOINT_INTERVAL})
    return os.path.join(d, "job.yaml")


class SinkWatch:
    """Follows the sink file and counts the distinct event ids in it, and those not in
    it when the current process started (for the kill moments only; the assertions
    read the file at the end)."""

    ID_RE = re.compile(rb'"event_id":"([^"]*)"')

    def __init__(self, path):
        self.path = path
        self.before = set()
        self.reset()

    def reset(self):
        self.off, self.buf, self.ids = 0, b"", set()

    def new_epoch(self):
        self.reset()
        self.poll()
        self.before = set(self.ids)

    def new(self):
        self.poll()
        return len(self.ids - self.before)

    def poll(self):
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            return 0
        if size < self.off:           # exactly_once cut the file back: read it again
            self.reset()
        if size > self.off:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read(size - self.off)
            self.off += len(data)
            data = self.buf + data
            cut = data.rfind(b"\n") + 1
            self.buf = data[cut:]
            self.ids.update(self.ID_RE.findall(data, 0, cut))
        return len(self.ids)


class Epoch:
    """One `eddy run` process of a scenario."""

    def __init__(self, n, start_ms, proc, err_path, summary_path):
        self.n, self.start_ms, self.proc = n, start_ms, proc
        self.err_path, self.summary_path = err_path, summary_path
        self.kill_ms = self.dead_ms = None
        self.plan = None          # what the kill was waiting for
        self.killed = False
        self.rc = None


class Scenario:
    """A job dir, a mock and the processes run on it."""

    def __init__(self, name, tmp, seed, events, delivery):
        self.name, self.tmp, self.seed, self.events, self.delivery = name, tmp, seed, events, delivery
        self.epochs = []
        self.missed = []
        self.problems = []
        self.snapshots = {}   # epoch n -> what the store held when epoch n started (Snap)
        self.event_at = {}    # byte offset of a line of in.jsonl -> its event id

    # Where records are: a subclass with another source overrides these two.
    def place(self, part, pos):
        """The event id of the record at POS of part hash PART (a run's or a step's)."""
        if not self.event_at:
            off = 0
            with open(os.path.join(self.dir, "in.jsonl"), "rb") as f:
                for line in f:
                    self.event_at[off] = json.loads(line)["id"]
                    off += len(line)
        return self.event_at.get(pos) or self.fail(
            "the store names a run at byte %d, where no line of the input starts" % pos)

    def below(self, positions):
        """The event ids of the records before the stored POSITIONS [(part name, position)]."""
        end = max([v for _, v in positions] + [0])
        self.place(0, 0)
        return {ev for p, ev in self.event_at.items() if p < end}

    def problem(self, what, items=None):
        """Note what is wrong; verify() goes on, so one bug does not hide another."""
        msg = "[%s seed=%d] %s" % (self.name, self.seed, what)
        if items is not None:
            items = list(items)
            msg += " (%d): %s%s" % (len(items), ", ".join(str(x) for x in items[:8]),
                                    " ..." if len(items) > 8 else "")
        self.problems.append(msg)

    def fail(self, what, items=None):
        """Something that ends the scenario at once."""
        self.problem(what, items)
        self.raise_problems()

    def raise_problems(self):
        if self.problems:
            raise ChaosFailure("\n".join(self.problems) + "\n  files: " + self.tmp)


def eddy_cmd(job, summary):
    return [os.path.join(ARGS.build, "eddy"), "run", job, "--summary-json", summary]


def start_epoch(sc, job):
    n = len(sc.epochs)
    err = os.path.join(sc.dir, "epoch-%02d.stderr" % n)
    summary = os.path.join(sc.dir, "epoch-%02d.summary.json" % n)
    t = now_ms()
    with open(err, "w") as ef:
        p = subprocess.Popen(eddy_cmd(job, summary), stdout=subprocess.DEVNULL, stderr=ef,
                             cwd=sc.dir)
    e = Epoch(n, t, p, err, summary)
    sc.epochs.append(e)
    return e


def kill_epoch(sc, e):
    """SIGKILL E unless it ended already; returns whether it was killed."""
    if e.proc.poll() is not None:
        e.rc = e.proc.returncode
        return False
    e.proc.send_signal(signal.SIGKILL)
    e.kill_ms = now_ms()
    e.proc.wait(timeout=30)
    e.dead_ms = now_ms()
    e.rc = e.proc.returncode
    e.killed = True
    time.sleep(0.02)   # a request the dead process sent is logged before the next one starts
    return True


def wait_for(sc, e, watch, plan):
    """Wait until PLAN's moment, or until E ends. PLAN: ("after", ms) from the start,
    ("outputs", n, extra_ms): once N distinct outputs are in the sink, plus EXTRA, or
    ("new", n, extra_ms): once N outputs not in the sink at E's start are, plus EXTRA."""
    deadline = time.time() + EPOCH_TIMEOUT_S
    if plan[0] == "after":
        due = e.start_ms + plan[1]
        while now_ms() < due:
            if e.proc.poll() is not None:
                return False
            time.sleep(min(0.005, max(0.0, (due - now_ms()) / 1000.0)))
        return True
    kind, target, extra = plan
    count = watch.poll if kind == "outputs" else watch.new
    while count() < target:
        if e.proc.poll() is not None:
            return False
        if time.time() > deadline:
            sc.fail("epoch %d: %d outputs in the sink after %d s, waiting for %r; eddy hangs?"
                    % (e.n, watch.poll(), EPOCH_TIMEOUT_S, plan))
        time.sleep(0.003)
    due = now_ms() + extra
    while now_ms() < due:
        if e.proc.poll() is not None:
            return False
        time.sleep(0.002)
    return True


def snapshot(sc):
    """What the store holds before the next process starts (the last one is dead),
    read from a copy of state.db and its WAL, kept as snapshots/before-NN.json."""
    n = len(sc.epochs)
    src = os.path.join(sc.dir, "state", "state.db")
    if not os.path.exists(src):
        return
    d = os.path.join(sc.dir, "snapshots")
    os.makedirs(d, exist_ok=True)
    copy = os.path.join(d, "copy.db")
    for suffix in ("", "-wal"):
        if os.path.exists(src + suffix):
            shutil.copyfile(src + suffix, copy + suffix)
    snap = read_snapshot(sc, copy)
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(copy + suffix):
            os.remove(copy + suffix)
    sc.snapshots[n] = snap
    with open(os.path.join(d, "before-%02d.json" % n), "w") as f:
        json.dump({"finished": sorted(snap.finished), "journaled": sorted(snap.journaled),
                   "pending": sorted(snap.pending), "below_position": sorted(snap.below)}, f)


# What a store held: finished runs (event ids), journaled steps ((event, step) DONE and
# PENDING: a side effect that had started) and the events below the stored position.
Snap = collections.namedtuple("Snap", "finished journaled pending below")


def read_snapshot(sc, path):
    db = sqlite3.connect(path)   # a copy: it may recover its WAL
    try:
        tables = {t for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"runs", "journal", "positions"} <= tables:
            return Snap(set(), set(), set(), set())   # killed before the store had its schema
        finished = {sc.place(part, p) for part, p in db.execute(
            "SELECT part, pos FROM runs WHERE agent = 'a'")}
        steps = [(sc.place(part, p), st, state) for part, p, st, state in db.execute(
            "SELECT part, pos, step, state FROM journal WHERE agent = 'a'")]
        below = sc.below(list(db.execute("SELECT part, position FROM positions")))
    finally:
        db.close()
    return Snap(finished, {(ev, st) for ev, st, state in steps if state == 0},
                {(ev, st) for ev, st, state in steps if state == 1}, below)


def run_plans(sc, job, plans, watch=None):
    """Start the job, kill it at each plan's moment, restart; then let the last run end.
    WATCH counts the outputs for the plans (default: a SinkWatch on out.jsonl)."""
    watch = watch or SinkWatch(os.path.join(sc.dir, "out.jsonl"))
    for plan in plans:
        watch.new_epoch()
        snapshot(sc)
        e = start_epoch(sc, job)
        e.plan = plan
        if wait_for(sc, e, watch, plan) and kill_epoch(sc, e):
            continue
        kill_epoch(sc, e)  # it ended by itself: nothing left to kill
        sc.missed.append(plan)
        if e.rc != 0:
            sc.fail("epoch %d (plan %r) exited %s by itself; stderr %s:\n%s"
                    % (e.n, plan, e.rc, e.err_path, tail(e.err_path)))
        break  # the job is done: later kills would find nothing to do
    snapshot(sc)
    e = start_epoch(sc, job)
    e.plan = ("finish",)
    try:
        e.rc = e.proc.wait(timeout=EPOCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        e.proc.send_signal(signal.SIGABRT)
        e.proc.wait(timeout=30)
        sc.fail("the last run (epoch %d) did not end within %d s (a hang; SIGABRT sent); "
                "stderr %s:\n%s" % (e.n, EPOCH_TIMEOUT_S, e.err_path, tail(e.err_path)))
    if e.rc != 0:
        sc.fail("the last run (epoch %d) exited %d; stderr %s:\n%s"
                % (e.n, e.rc, e.err_path, tail(e.err_path)))


def tail(path, n=40):
    try:
        return "".join(open(path, errors="replace").readlines()[-n:])
    except OSError:
        return ""


# -- what is compared ----------------------------------------------------------

def read_sink(sc, path):
    outs = []
    with open(path, "rb") as f:
        for i, line in enumerate(f, 1):
            try:
                outs.append(json.loads(line))
            except ValueError:
                sc.fail("%s:%d is not JSON: %r" % (path, i, line[:200]))
    return outs


def store_state(db_path):
    db = sqlite3.connect("file:%s?mode=ro" % db_path, uri=True)
    try:
        mem = {k: json.loads(d) for k, d in
               db.execute("SELECT key, doc FROM key_memory WHERE agent = 'a'")}
        hist = {}
        for k, seq, msgs in db.execute(
                "SELECT key, seq, messages FROM history WHERE agent = 'a' ORDER BY key, seq"):
            m = json.loads(msgs)
            texts = [p.get("text") for x in m if x["role"] in ("user", "assistant")
                     for p in x["parts"] if p.get("type") == "text"]
            hist.setdefault(k, []).append(texts)
        shared = {k: json.loads(v) for k, v in
                  db.execute("SELECT key, value FROM shared_state WHERE agent = 'a'")}
    finally:
        db.close()
    return mem, hist, shared


def request_steps(sc, log_path):
    """(event id, number of messages) -> [(t_ms, step), ...] of every request in the log."""
    steps = {}
    with open(log_path) as f:
        for line in f:
            if not line.strip():
                continue
            r = json.loads(line)
            msgs = r["body"]["messages"]
            users = [m["content"] for m in msgs if m["role"] == "user"]
            m = EVENT_RE.match(users[-1] if users else "")
            if not m or r.get("status") != 200:
                sc.fail("a request the test cannot place (status %s): %s"
                        % (r.get("status"), json.dumps(msgs[-1])[:300]))
            # step 1: the first LLM call, then one step per tool call of its answer
            # (the tool results since the last user message), then the second call
            last_user = max(i for i, x in enumerate(msgs) if x["role"] == "user")
            tools = sum(1 for x in msgs[last_user:] if x["role"] == "tool")
            steps.setdefault((m.group(1), len(msgs)), []).append(
                (r["t_ms"], 1 if msgs[-1]["role"] == "user" else 2 + tools))
    return steps


def check_sink(sc, outs, exp, order):
    ids = [o["event_id"] for o in outs]
    missing = [i for i in order if i not in set(ids)]
    if missing:
        sc.problem("outputs missing from the sink", missing)
    unknown = sorted(set(ids) - set(exp))
    if unknown:
        sc.problem("outputs for events not in the input", unknown)
    counts = {}
    for i in ids:
        counts[i] = counts.get(i, 0) + 1
    dups = sorted(i for i, c in counts.items() if c > 1)
    if sc.delivery == "exactly_once" and dups:
        sc.problem("exactly_once: events with more than one output (of %d lines)" % len(outs),
                ["%s x%d" % (i, counts[i]) for i in dups])
    first, differ = {}, []
    for o in outs:
        f = first.setdefault(o["event_id"], o)
        if f is not o and (f["output_id"] != o["output_id"] or f["output"] != o["output"]):
            differ.append("%r / %r" % ({k: f[k] for k in ("event_id", "output_id", "output")},
                                       {k: o[k] for k in ("event_id", "output_id", "output")}))
    if differ:
        sc.problem("events whose copies in the sink differ", differ)
    wrong = ["%s: %r, expected %r" % (i, first[i]["output"], exp[i])
             for i in order if i in first and first[i]["output"] != exp[i]]
    if wrong:
        sc.problem("outputs that differ from an uninterrupted run's", wrong)
    # per key, in input order (the first copy of each)
    place = {}
    for n, o in enumerate(outs):
        place.setdefault(o["event_id"], n)
    key_of = {ev["id"]: ev["k"] for ev in sc.events}
    by_key = {}
    for i in order:
        if i in place:
            by_key.setdefault(key_of[i], []).append(place[i])
    bad = [k for k, p in sorted(by_key.items()) if p != sorted(p)]
    if bad:
        sc.problem("keys whose outputs are not in input order", bad)
    return len(dups), len(outs)


def check_requests(sc, steps, ref_steps):
    """The requests of every process against what the store held when it started:
    a step journaled, a run finished or a record below the checkpointed position is
    never asked again (exact); within one process no step is asked twice; and a step
    whose run had asked its next step more than COMMIT_SLACK_MS before the kill was
    journaled by then (the journal keeps up)."""
    extra = sorted(set(steps) - set(ref_steps))
    if extra:
        sc.problem("requests (event, messages) an uninterrupted run never sends", extra)
    never = sorted(set(ref_steps) - set(steps))
    if never:
        sc.problem("requests (event, messages) of an uninterrupted run never sent", never)
    snaps = sc.snapshots
    starts = [e.start_ms for e in sc.epochs]
    epoch_of = lambda t: max(0, bisect.bisect_right(starts, t) - 1)  # noqa: E731
    # per epoch and event: the requests in time order
    runs = {}
    for (ev, nmsgs), ts in steps.items():
        for t, st in ts:
            runs.setdefault((epoch_of(t), ev), []).append((t, st, nmsgs))
    same, again, late = [], [], []
    for (n, ev), reqs in sorted(runs.items()):
        reqs.sort()
        sent = {}
        for t, st, nmsgs in reqs:
            if st in sent:
                same.append("%s step %d (%d msgs) at %d and %d (epoch %d)"
                            % (ev, st, nmsgs, sent[st], t, n))
            sent.setdefault(st, t)
        if n in snaps:
            finished, journaled, _, below = snaps[n]
            for t, st, nmsgs in reqs:
                why = ("its run had finished" if ev in finished else
                       "it is below the checkpointed position" if ev in below else
                       "step %d was journaled" % st if (ev, st) in journaled else None)
                if why:
                    again.append("%s step %d sent at %d by epoch %d: %s in the store it started "
                                 "with (snapshots/before-%02d.json)" % (ev, st, t, n, why, n))
        e = sc.epochs[n]
        if e.killed and n + 1 in snaps:
            finished, journaled, _, below = snaps[n + 1]
            for (t1, st1, _), (t2, st2, _) in zip(reqs, reqs[1:]):
                if (st1 < st2 and t2 + COMMIT_SLACK_MS < e.kill_ms and ev not in finished
                        and ev not in below and (ev, st1) not in journaled):
                    late.append("%s step %d (epoch %d): not journaled at the kill, %d ms after "
                                "step %d was sent" % (ev, st1, n, e.kill_ms - t2, st2))
    if same:
        sc.problem("requests sent twice by one process (no faults, no retries expected)", same)
    if again:
        sc.problem("journaled or finished steps sent again after a restart", again)
    if late:
        sc.problem("steps not journaled %d ms after the run went on past them"
                   % COMMIT_SLACK_MS, late)
    # repeats: a step sent by several processes, each repeat after a kill
    repeats, per_kill = 0, {}
    for (ev, nmsgs), ts in steps.items():
        eps = sorted({epoch_of(t) for t, _ in ts})
        for a in eps[:-1]:
            repeats += 1
            per_kill[(a, ev)] = per_kill.get((a, ev), 0) + 1
    two = sorted(k for k, c in per_kill.items() if c > 1)
    if two:
        print("    runs with two steps sent again after one kill (epoch, event): %s%s"
              % (two[:6], " ..." if len(two) > 6 else ""), flush=True)
    return repeats, len(two)


def check_memory(sc, ref_state, state):
    ref_mem, ref_hist, ref_shared = ref_state
    mem, hist, shared = state
    if set(mem) != set(ref_mem):
        sc.problem("keys with memory differ from an uninterrupted run's",
                sorted(set(mem) ^ set(ref_mem)))
    bad = ["%s: %s, expected %s" % (k, json.dumps(mem[k]), json.dumps(ref_mem[k]))
           for k in sorted(mem) if mem[k] != ref_mem[k]]
    if bad:
        sc.problem("memory documents that differ from an uninterrupted run's", bad)
    bad = ["%s: %d runs %s, expected %d %s" % (k, len(hist.get(k, [])), hist.get(k),
                                               len(ref_hist.get(k, [])), ref_hist.get(k))
           for k in sorted(set(hist) | set(ref_hist)) if hist.get(k) != ref_hist.get(k)]
    if bad:
        sc.problem("histories that differ from an uninterrupted run's", bad)
    bad = ["%s: %s, expected %s" % (k, json.dumps(shared.get(k)), json.dumps(ref_shared.get(k)))
           for k in sorted(set(shared) | set(ref_shared)) if shared.get(k) != ref_shared.get(k)]
    if bad:
        sc.problem("shared state (ctx.state) that differs from an uninterrupted run's", bad)


def check_logs(sc):
    bad = []
    warns = 0
    for e in sc.epochs:
        for line in open(e.err_path, errors="replace"):
            if ("AddressSanitizer" in line or "runtime error:" in line or "LeakSanitizer" in line
                    or " error " in line[:40] or "Assertion" in line):
                bad.append("epoch %d: %s" % (e.n, line.rstrip()[:300]))
            elif " warn " in line[:40]:
                warns += 1
    if bad:
        sc.problem("errors on stderr", bad)
    return warns


def reference(sc, ref_dir):
    """The same input, uninterrupted, into a store of its own."""
    os.makedirs(ref_dir)
    with it.Mock(ref_dir, SCRIPT, latency_ms=LATENCY_MS) as mock:
        job = make_job_dir(ref_dir, sc.events, sc.delivery, mock.base_url)
        t0 = time.time()
        p = subprocess.run(eddy_cmd(job, os.path.join(ref_dir, "summary.json")),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           cwd=ref_dir, timeout=EPOCH_TIMEOUT_S)
        took = time.time() - t0
    if p.returncode != 0:
        sc.fail("the uninterrupted run exited %d:\n%s" % (p.returncode, p.stderr[-3000:]))
    outs = read_sink(sc, os.path.join(ref_dir, "out.jsonl"))
    exp = expected_outputs(sc.events)
    got = {o["event_id"]: o["output"] for o in outs}
    if len(outs) != len(sc.events) or got != exp:
        sc.fail("the uninterrupted run's outputs are not the expected ones (the test's own "
                "premise)", [i for i in exp if got.get(i) != exp[i]])
    return took, store_state(os.path.join(ref_dir, "state", "state.db")), \
        request_steps(sc, os.path.join(ref_dir, "mock-requests.jsonl"))


def check_rerun(sc, job, mock):
    """After the last run ended, the store holds no runs or steps, its position is the
    input's end, and one more run asks nothing and writes nothing."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(sc.dir, "state", "state.db"), uri=True)
    try:
        left = db.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM journal)"
                          ).fetchone()
        pos = [v for (v,) in db.execute("SELECT position FROM positions")]
    finally:
        db.close()
    size = os.path.getsize(os.path.join(sc.dir, "in.jsonl"))
    if left != (0, 0) or pos != [size]:
        sc.problem("after the last run the store holds %d runs and %d steps, positions %r "
                   "(the input ends at %d)" % (left[0], left[1], pos, size))
    out = os.path.join(sc.dir, "out.jsonl")
    before, nreq = open(out, "rb").read(), len(mock.requests())
    p = subprocess.run(eddy_cmd(job, os.path.join(sc.dir, "rerun.summary.json")),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=sc.dir,
                       timeout=EPOCH_TIMEOUT_S)
    if p.returncode != 0 or open(out, "rb").read() != before or len(mock.requests()) != nreq:
        sc.problem("a run after the job had ended exited %d, %s the sink, sent %d requests:\n%s"
                   % (p.returncode, "changed" if open(out, "rb").read() != before else "kept",
                      len(mock.requests()) - nreq, p.stderr[-2000:]))
    p = subprocess.run([os.path.join(ARGS.build, "eddy"), "trace", "list", job, "--limit", "3"],
                       capture_output=True, text=True, cwd=sc.dir, timeout=60)
    if p.returncode != 0 or len(p.stdout.strip().splitlines()) != 4:
        sc.problem("`eddy trace list` on the trace store after the kills exited %d:\n%s%s"
                   % (p.returncode, p.stdout[-1000:], p.stderr[-1000:]))


def save_epochs(sc):
    """epochs.json beside the scenario's files: when each process started, what its kill
    waited for, when it was killed and how it ended (to read a failure with)."""
    with open(os.path.join(sc.dir, "epochs.json"), "w") as f:
        json.dump([{"epoch": e.n, "start_ms": e.start_ms, "plan": e.plan, "kill_ms": e.kill_ms,
                    "dead_ms": e.dead_ms, "killed": e.killed, "rc": e.rc} for e in sc.epochs],
                  f, indent=1)


def verify(sc, ref):
    took_ref, ref_state, ref_steps = ref
    save_epochs(sc)
    order = [ev["id"] for ev in sc.events]
    outs = read_sink(sc, os.path.join(sc.dir, "out.jsonl"))
    dups, lines = check_sink(sc, outs, expected_outputs(sc.events), order)
    dead = it.read_jsonl(os.path.join(sc.dir, "dead.jsonl"))
    if dead:
        sc.problem("dead letters", [d.get("event_id") or d.get("reason") for d in dead])
    check_memory(sc, ref_state, store_state(os.path.join(sc.dir, "state", "state.db")))
    repeats, two = check_requests(sc, request_steps(sc, os.path.join(sc.dir, "mock-requests.jsonl")),
                                  ref_steps)
    warns = check_logs(sc)
    last = json.load(open(sc.epochs[-1].summary_path))
    kills = sum(1 for e in sc.epochs if e.killed)
    print("    %s: %d events, %d kills (%d missed), %d processes; sink %d lines (%d events "
          "more than once); %d LLM requests sent again after a kill (%d runs with 2 from one "
          "kill); %d warnings; last run: replayed_runs %d, llm_replayed %d, tools_replayed %d, "
          "redelivered %d; uninterrupted %.1f s"
          % (sc.name, len(sc.events), kills, len(sc.missed), len(sc.epochs), lines, dups,
             repeats, two, warns, last.get("replayed_runs", -1), last.get("llm_replayed", -1),
             last.get("tools_replayed", -1), last.get("redelivered", -1), took_ref), flush=True)
    if sc.missed:
        print("    missed kill moments: %s" % sc.missed, flush=True)
    sc.raise_problems()


def kill_plans(rng, n):
    """The 20 kill moments of a scenario of N events (see the module's comment)."""
    early = [("after", rng.uniform(5, 100)) for _ in range(3)]
    starting = [("after", rng.uniform(100, 300)) for _ in range(4)]
    middle = [("new", max(1, int(rng.uniform(0.005, 0.04) * n)), rng.uniform(0, 100))
              for _ in range(8)]
    for p in early + starting:
        middle.insert(rng.randrange(len(middle) + 1), p)
    end = [("outputs", n - MAX_IN_FLIGHT + rng.randrange(-50, 50), rng.uniform(0, 50)),
           ("outputs", n - rng.randrange(1, 31), rng.uniform(0, 20)),
           ("outputs", n - rng.randrange(0, 4), 0.0),
           ("outputs", n, rng.uniform(0, 20))]
    return [("after", rng.uniform(5, 100))] + middle + end


def scenario(name, delivery, n, nkeys, plans_fn):
    def test(tmp, seed):
        rng = random.Random("%d/%s" % (seed, name))
        sc = Scenario(name, tmp, seed, make_events(rng, n, nkeys), delivery)
        plans = plans_fn(rng, n)
        ref = reference(sc, os.path.join(tmp, "reference"))
        sc.dir = os.path.join(tmp, "chaos")
        os.makedirs(sc.dir)
        with it.Mock(sc.dir, SCRIPT, latency_ms=LATENCY_MS) as mock:
            job = make_job_dir(sc.dir, sc.events, delivery, mock.base_url)
            run_plans(sc, job, plans)
            check_rerun(sc, job, mock)
        verify(sc, ref)
    test.__name__ = "test_" + name
    return test


def restore_plans(rng, n):
    """Run to 40 %, then six kills 20-50 ms after a restart; to 70 %, six more."""
    quick = lambda: [("after", rng.uniform(20, 50)) for _ in range(6)]  # noqa: E731
    return ([("outputs", int(0.4 * n), rng.uniform(0, 100))] + quick() +
            [("outputs", int(0.7 * n), rng.uniform(0, 100))] + quick())


def test_replayed_steps_then_a_new_call(tmp, seed):
    """Minimal, deterministic: a run killed while its second LLM call is in flight,
    after its first call and its tool call were journaled. The restart serves both
    from the journal and must send the second call once."""
    sc = Scenario("replayed_steps_then_a_new_call", tmp, seed,
                  [{"id": "E00000", "k": "K000", "n": 0}], "exactly_once")
    sc.dir = tmp
    slow = {"rules": [dict(SCRIPT["rules"][0], times=1, latency_ms=5000)] + SCRIPT["rules"]}
    with it.Mock(tmp, slow) as mock:
        job = make_job_dir(tmp, sc.events, "exactly_once", mock.base_url)
        e = start_epoch(sc, job)
        deadline = time.time() + 20
        while len(mock.requests()) < 2:   # the second call is at the mock (5 s to answer)
            if time.time() > deadline or e.proc.poll() is not None:
                sc.fail("the second LLM call never came; stderr:\n" + tail(e.err_path))
            time.sleep(0.01)
        time.sleep(0.5)                   # the first call and the tool call are journaled
        kill_epoch(sc, e)
        e = start_epoch(sc, job)
        e.rc = e.proc.wait(timeout=EPOCH_TIMEOUT_S)
        reqs = mock.requests()
    if e.rc != 0:
        sc.fail("the restart exited %d:\n%s" % (e.rc, tail(e.err_path)))
    last = [(r["t_ms"], len(r["body"]["messages"]), r["body"]["messages"][-1]["role"])
            for r in reqs]
    after = [x for x in last if x[0] >= e.start_ms]
    summary = json.load(open(e.summary_path))
    outs = read_sink(sc, os.path.join(tmp, "out.jsonl"))
    if [o["output"] for o in outs] != ["done E00000 tool=E00000 #1 e00000"]:
        sc.problem("outputs %r" % [o["output"] for o in outs])
    if len(after) != 1 or after[0][2] != "tool":
        sc.problem("after the restart the mock got %d requests (t_ms, messages, last role): %r; "
                   "expected one, the second call (last role tool); the restart's summary: "
                   "llm_calls %s, llm_replayed %s, tools_replayed %s"
                   % (len(after), after, summary.get("llm_calls"), summary.get("llm_replayed"),
                      summary.get("tools_replayed")))
    check_logs(sc)   # under UBSan: the restart of a store with steps and no finished run
    sc.raise_problems()


TESTS = [
    test_replayed_steps_then_a_new_call,
    scenario("exactly_once", "exactly_once", 5000, 500, kill_plans),
    scenario("at_least_once", "at_least_once", 5000, 500, kill_plans),
    scenario("kill_in_restore", "exactly_once", 1000, 100, restore_plans),
]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--seed", type=int, help="replay a run (printed at the start)")
    ap.add_argument("--only", help="run the scenarios whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the files of passing scenarios")
    ARGS = ap.parse_args()
    ARGS.build = os.path.abspath(ARGS.build)
    it.ARGS = ARGS  # the harness's Mock finds build/mockllm through it
    seed = ARGS.seed if ARGS.seed is not None else random.SystemRandom().randrange(1, 2**31)
    print("chaos: seed %d (replay: --seed %d)" % (seed, seed), flush=True)
    failed = ran = 0
    t_all = time.time()
    for t in TESTS:
        if ARGS.only and ARGS.only not in t.__name__:
            continue
        ran += 1
        tmp = tempfile.mkdtemp(prefix="eddy-chaos-")
        t0 = time.time()
        try:
            t(tmp, seed)
            print("PASS %-28s %.2fs" % (t.__name__, time.time() - t0), flush=True)
            if ARGS.keep:
                print("    files kept in %s" % tmp)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
        except Exception:
            failed += 1
            print("FAIL %-28s seed %d (files kept in %s)" % (t.__name__, seed, tmp), flush=True)
            traceback.print_exc()
    if not ran:
        print("no chaos test matches --only %r" % ARGS.only)
        return 1
    print("%s (seed %d, %.1f s)" % ("%d chaos test(s) failed" % failed if failed
                                   else "all %d chaos tests passed" % ran, seed,
                                   time.time() - t_all))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
