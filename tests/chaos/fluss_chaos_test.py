#!/usr/bin/env python3
"""Chaos against a real Fluss cluster: `eddy run` reading a Fluss log table and
upserting into a Fluss primary-key table, killed with SIGKILL at random moments
and restarted each time (the harness and the checks of tests/chaos/chaos_test.py,
with a Fluss source and sink).

The input rows {id, k, n} are written beforehand (`eddy fluss produce`) into a log
table of 4 buckets with bucket key k, so each key's events are in one bucket, in
input order (checked with a scan: the premise of comparing per-key memory). The
job (2 workers, max_in_flight 200, a checkpoint every 300 ms, the mock model
answering after 20 ms) runs the `count` tool of chaos_test.py for every event
(ctx.memory and ctx.state counters) and upserts each output into a PK table keyed
by event_id. The same input runs once uninterrupted into a store and a PK table
of its own (the reference). Progress for the kill moments is read from the mock's
request log (the events whose last LLM call was sent), as the sink is not a file.
Before each restart a copy of the store is read: runs finished, steps journaled
(DONE or PENDING), and per bucket the records below the stored offset. Then:

  - the PK table: its changelog (eddy fluss scan --meta) has keys only of input
    events, each first inserted (+I) and then only updated (-U/+U, a delivery
    again after a kill) with the same row every time; folded, it holds exactly
    one row per input event, equal to the reference table's row (output_id,
    key, agent, output, turns, tool_calls, model); pyfluss reads the same
    changelog, and looking up 40 of the events it gets those rows;
  - the model's request log (chaos_test.check_requests): exactly the reference's
    steps; none sent twice by one process; none that the store a process started
    with had journaled, or of a run it had finished, or of a record below the
    bucket's checkpointed offset (the source resumes there); steps journaled in
    time;
  - memory documents, histories and the ctx.state counters equal the reference's;
  - no dead letters; no errors or sanitizer reports on stderr; each process is
    killed or exits 0; the last one reads exactly the records at and after the
    offsets its store held; afterwards the store holds no runs or steps, each
    bucket's stored offset is its end, and one more run reads, sends and writes
    nothing.

Scenarios:
  fluss_pk_sink       3000 events over 300 keys, at_least_once, the 20 kill
                      moments of chaos_test.kill_plans
  fluss_side_effects  1000 events over 100 keys, exactly_once; the model calls a
                      `side_effects = true` tool `send` (it logs "SEND <id>",
                      marks the send in ctx.state, then waits 0-60 ms) before
                      `count`; its `reconcile` logs "RECONCILE <id> happened|not"
                      (the mark is there or not). 14 kills, the last
                      with some 200 runs in flight. Checked from each
                      process's stderr and the snapshots: a process reconciles
                      only calls its store held PENDING, each at most once, and
                      the last process exactly those; a process sends an event
                      its store held PENDING only after reconcile said "not",
                      never after "happened"; every event is sent, and sent
                      again only after a "not"; the last run's tools_reconciled
                      is its count of RECONCILE lines.

    python3 tests/chaos/fluss_chaos_test.py --build build [--seed N] [--only NAME] [--keep]
        [--keep-cluster]

The cluster is tests/fluss/cluster.sh (started here and stopped at the end),
pyfluss comes from tests/fluss/pyfluss.sh; without Java, Maven or pip the test
fails saying what is missing. A failure prints the seed and keeps the files (see
chaos_test.py for what they hold).
"""
import argparse
import json
import os
import random
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import chaos_test as ch  # noqa: E402  (the harness: epochs, kills, snapshots, checks)
import fluss_test as ft  # noqa: E402  (tests/integration: eddy fluss, tables, pyfluss)

it = ch.it
ARGS = None
BUCKETS = 4

# The effect (the log line, written at once) comes before its mark: a kill between the two
# makes reconcile say "not" and the send happen again, never a mark without a send.
SEND_TOOL = """-- send: a side effect; its mark in ctx.state is what reconcile asks
return eddy.tool {
  name = "send",
  description = "Send a notification for this event",
  params = { id = { type = "string", required = true } },
  side_effects = true,
  run = function(args, ctx)
    eddy.log("SEND " .. args.id)
    ctx.state.incr("sent")
    ctx.state.set("sent:" .. args.id, true)
    eddy.sleep((ctx.event.n % 7) * 10)
    return { sent = args.id }
  end,
  reconcile = function(args, ctx)
    local happened = ctx.state.get("sent:" .. args.id) ~= nil
    eddy.log("RECONCILE " .. args.id .. (happened and " happened" or " not"))
    if happened then return { sent = args.id } end
    return nil
  end,
}
"""

# send first: the answer's ${tool.*} are the last tool result's, count's
SEND_SCRIPT = {"rules": [
    ch.SCRIPT["rules"][0],
    {"when": {"last_role": "user", "last_user_regex": "^event (E[0-9]+) "},
     "tool_calls": [{"name": "send", "arguments": {"id": "$1"}},
                    {"name": "count", "arguments": {"id": "$1"}}]},
]}

def fluss_job():
    """chaos_test's job, reading a Fluss log table and upserting into a Fluss table, with
    the tools of the scenario."""
    job = ch.JOB
    for old, new in (("job: chaos\n", "job: fchaos\n"),
                     ("source: { jsonl: in.jsonl }\nsink: { jsonl: out.jsonl }\n",
                      'fluss: { bootstrap: "%(boot)s" }\n'
                      "source: { fluss: { table: %(source)s, start: earliest, follow: false } }\n"
                      "sink: { fluss: { table: %(sink)s } }\n"),
                     ("tools: [ tools/count.lua ]", "tools: [ %(tools)s ]")):
        assert old in job, "chaos_test.JOB changed: %r is not in it" % old
        job = job.replace(old, new, 1)
    return job


JOB = fluss_job()

INPUT_COLS = [("id", "STRING NOT NULL"), ("k", "STRING NOT NULL"), ("n", "INT NOT NULL")]
SINK_COLS = [("event_id", "STRING NOT NULL"), ("output_id", "STRING"), ("key", "STRING"),
             ("agent", "STRING"), ("output", "STRING"), ("turns", "INT"),
             ("tool_calls", "INT"), ("model", "STRING")]
ROW = [c for c, _ in SINK_COLS]

# pyfluss reads the PK table: its whole changelog (until two polls come back empty; every
# row was acknowledged before), then looks up the keys in argv[2] (about 100 ms each).
PY_READ_PK = r'''
async def main():
    conn = await fluss.FlussConnection.create(fluss.Config({"bootstrap.servers": BOOT}))
    db, name = sys.argv[1].split(".")
    path = fluss.TablePath(db, name)
    t = await conn.get_table(path)
    info = await conn.get_admin().get_table_info(path)
    s = await t.new_scan().create_log_scanner()
    s.subscribe_buckets({i: fluss.EARLIEST_OFFSET for i in range(info.num_buckets)})
    empty = 0
    while empty < 2:
        recs = list(await s.poll(1000))
        empty = 0 if recs else empty + 1
        for r in recs:
            print(json.dumps({"change": str(r.change_type), "row": r.row}))
    lk = t.new_lookup().create_lookuper()
    for k in json.loads(open(sys.argv[2]).read()):
        print(json.dumps({"looked_up": k, "row": await lk.lookup({"event_id": k})}))
    await conn.close()
asyncio.run(main())
'''
LOOKUPS = 40


def part_hash(source, part):
    """eddy_store_part_hash: FNV-1a 64 of "SOURCE\\x1fPART", the top bit cleared."""
    h = 14695981039346656037
    for b in ("%s\x1f%s" % (source, part)).encode():
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


class FlussScenario(ch.Scenario):
    """A chaos_test Scenario whose records are (bucket, offset) of a Fluss log table."""

    def __init__(self, name, tmp, seed, events, delivery, table):
        super().__init__(name, tmp, seed, events, delivery)
        self.table = table
        self.source_id = "fluss:" + table
        self.at = {}        # (bucket, offset) -> event id
        self.bucket_of = {}  # part hash -> bucket
        self.ends = {}      # bucket -> its end offset

    def read_placement(self):
        """Where each event is in the table; checks each key is in one bucket, in order."""
        rows = ft.parse_jsonl(ft.eddy("scan", self.table, "--meta").stdout)
        self.at = {(r["_bucket"], r["_offset"]): r["id"] for r in rows}
        if sorted(self.at.values()) != sorted(e["id"] for e in self.events):
            self.fail("the input table holds %d rows, not the %d events written"
                      % (len(rows), len(self.events)))
        order = {e["id"]: i for i, e in enumerate(self.events)}
        key_of = {e["id"]: e["k"] for e in self.events}
        per_key = {}
        for b in range(BUCKETS):
            offs = sorted(o for (bb, o) in self.at if bb == b)
            if offs != list(range(len(offs))):
                self.fail("bucket %d of %s: offsets are not 0..%d" % (b, self.table, len(offs) - 1))
            self.ends[b] = len(offs)
            self.bucket_of[part_hash(self.source_id, "bucket %d" % b)] = b
            for o in offs:
                per_key.setdefault(key_of[self.at[(b, o)]], []).append((b, order[self.at[(b, o)]]))
        bad = [k for k, v in per_key.items() if len({b for b, _ in v}) != 1 or
               [i for _, i in v] != sorted(i for _, i in v)]
        if bad or sum(1 for n in self.ends.values() if n) < 2:
            self.fail("the test's premise: each key's events in one bucket, in input order, "
                      "over several buckets (per bucket: %s)" % self.ends, bad)

    def place(self, part, pos):
        b = self.bucket_of.get(part)
        return self.at.get((b, pos)) or self.fail(
            "the store names a run at part %d (bucket %s) offset %d: no such record"
            % (part, b, pos))

    def below(self, positions):
        below = set()
        for name, off in positions:
            m = re.match(r"bucket (\d+)$", name)
            if not m:
                self.fail("a stored position of part %r" % name)
            b = int(m.group(1))
            below |= {ev for (bb, o), ev in self.at.items() if bb == b and o < off}
        return below


class RequestWatch:
    """The kill moments' progress: events whose last LLM call (the one after the tool
    results) reached the mock, all and those new since the current process started.
    Same interface as chaos_test.SinkWatch."""

    EV_RE = re.compile(r"event (E[0-9]+) ")

    def __init__(self, path):
        self.path, self.off, self.buf, self.ids, self.before = path, 0, b"", set(), set()

    def new_epoch(self):
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
        if size > self.off:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                data = f.read(size - self.off)
            self.off += len(data)
            data = self.buf + data
            cut = data.rfind(b"\n") + 1
            self.buf = data[cut:]
            for line in data[:cut].splitlines():
                msgs = json.loads(line)["body"]["messages"]
                if msgs and msgs[-1]["role"] == "tool":
                    users = [m["content"] for m in msgs if m["role"] == "user"]
                    m = self.EV_RE.match(users[-1] if users else "")
                    if m:
                        self.ids.add(m.group(1))
        return len(self.ids)


def make_job_dir(d, sc, sink, base_url, side_effects):
    os.makedirs(os.path.join(d, "tools"), exist_ok=True)
    it.write(os.path.join(d, "tools", "count.lua"), ch.TOOL)
    tools = "tools/count.lua"
    if side_effects:
        it.write(os.path.join(d, "tools", "send.lua"), SEND_TOOL)
        tools = "tools/send.lua, tools/count.lua"
    it.write(os.path.join(d, "job.yaml"), JOB % {
        "boot": ft.BOOT, "source": sc.table, "sink": sink, "delivery": sc.delivery,
        "max_in_flight": ch.MAX_IN_FLIGHT, "interval": ch.CHECKPOINT_INTERVAL,
        "base_url": base_url, "tools": tools})
    return os.path.join(d, "job.yaml")


def changelog(sc, table):
    """The PK table's changes per event id, in order: [(change, row)]."""
    changes = {}
    for r in ft.parse_jsonl(ft.eddy("scan", table, "--meta", timeout=300).stdout):
        changes.setdefault(r["event_id"], []).append((r["_change"], {c: r.get(c) for c in ROW}))
    return changes


def fold(sc, table, what, changes=None):
    """The PK table's rows by event id, from its changelog (CHANGES, else read with eddy);
    checks its shape: per key +I first, then -U/+U pairs, every value the same. Returns
    (rows, updates)."""
    rows, updates, bad = {}, 0, []
    for k, ch_ in (changes if changes is not None else changelog(sc, table)).items():
        kinds = [c for c, _ in ch_]
        first = ch_[0][1]
        if (kinds[0] != "+I" or kinds[1:] != ["-U", "+U"] * ((len(kinds) - 1) // 2)
                or any(v != first for _, v in ch_)):
            bad.append("%s: %s" % (k, ch_[:4]))
        updates += (len(kinds) - 1) // 2
        rows[k] = first
    if bad:
        sc.problem("%s: keys whose changelog is not one insert and then the same row again" % what,
                   bad)
    return rows, updates


def run_reference(sc, ref_dir, ref_table, script, side_effects):
    os.makedirs(ref_dir)
    with it.Mock(ref_dir, script, latency_ms=ch.LATENCY_MS) as mock:
        job = make_job_dir(ref_dir, sc, ref_table, mock.base_url, side_effects)
        t0 = time.time()
        p = subprocess.run(ch.eddy_cmd(job, os.path.join(ref_dir, "summary.json")),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                           cwd=ref_dir, timeout=ch.EPOCH_TIMEOUT_S)
        took = time.time() - t0
    if p.returncode != 0:
        sc.fail("the uninterrupted run exited %d:\n%s" % (p.returncode, p.stderr[-3000:]))
    rows, updates = fold(sc, ref_table, "the uninterrupted run's table")
    exp = ch.expected_outputs(sc.events)
    got = {k: r["output"] for k, r in rows.items()}
    if updates or got != exp:
        sc.fail("the uninterrupted run's outputs are not the expected ones (the test's own "
                "premise; %d updates)" % updates, [i for i in exp if got.get(i) != exp[i]])
    return took, rows, ch.store_state(os.path.join(ref_dir, "state", "state.db")), \
        ch.request_steps(sc, os.path.join(ref_dir, "mock-requests.jsonl"))


def check_table(sc, table, ref_rows):
    rows, updates = fold(sc, table, table)
    missing = sorted(set(ref_rows) - set(rows))
    if missing:
        sc.problem("%s: events without a row" % table, missing)
    extra = sorted(set(rows) - set(ref_rows))
    if extra:
        sc.problem("%s: rows for events not in the input" % table, extra)
    wrong = ["%s: %s, expected %s" % (k, rows[k], ref_rows[k])
             for k in sorted(rows) if k in ref_rows and rows[k] != ref_rows[k]]
    if wrong:
        sc.problem("%s: rows that differ from the uninterrupted run's" % table, wrong)
    # pyfluss, another client: the same changelog, and lookups of a sample of the keys
    keys = sorted(random.Random(sc.seed).sample(sorted(ref_rows), LOOKUPS))
    path = os.path.join(sc.dir, "lookup-keys.json")
    with open(path, "w") as f:
        json.dump(keys, f)
    got = ft.pyfluss(PY_READ_PK, table, path)
    py_changes = {}
    for r in got:
        if "change" in r:
            py_changes.setdefault(r["row"]["event_id"], []).append(
                (r["change"], {c: r["row"].get(c) for c in ROW}))
    py_rows, py_updates = fold(sc, table, table + " read by pyfluss", py_changes)
    if (py_rows, py_updates) != (rows, updates):
        sc.problem("%s: pyfluss reads %d rows (%d updates), eddy %d (%d)"
                   % (table, len(py_rows), py_updates, len(rows), updates),
                   sorted(k for k in set(rows) | set(py_rows) if rows.get(k) != py_rows.get(k)))
    looked = {r["looked_up"]: r["row"] for r in got if "looked_up" in r}
    wrong = ["%s: %s, expected %s" % (k, looked.get(k), ref_rows[k]) for k in keys
             if not looked.get(k) or {c: looked[k].get(c) for c in ROW} != ref_rows[k]]
    if wrong:
        sc.problem("%s: rows pyfluss looks up that differ from the uninterrupted run's" % table,
                   wrong)
    return updates


def check_rerun(sc, job, mock, table):
    """The store holds no runs or steps and each bucket's offset is its end; one more run
    asks nothing and writes nothing."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(sc.dir, "state", "state.db"), uri=True)
    try:
        left = db.execute("SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM journal)"
                          ).fetchone()
        pos = {p: v for p, v in db.execute("SELECT part, position FROM positions "
                                           "WHERE source = ?", (sc.source_id,))}
    finally:
        db.close()
    want = {"bucket %d" % b: n for b, n in sc.ends.items() if n}
    if left != (0, 0) or pos != want:
        sc.problem("after the last run the store holds %d runs and %d steps, positions %r "
                   "(the buckets end at %r)" % (left[0], left[1], pos, want))
    before = sum(len(v) for v in changelog(sc, table).values())
    nreq = len(mock.requests())
    p = subprocess.run(ch.eddy_cmd(job, os.path.join(sc.dir, "rerun.summary.json")),
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=sc.dir,
                       timeout=ch.EPOCH_TIMEOUT_S)
    after = sum(len(v) for v in changelog(sc, table).values())
    read = json.load(open(os.path.join(sc.dir, "rerun.summary.json"))).get("events") \
        if p.returncode == 0 else None
    if p.returncode != 0 or after != before or len(mock.requests()) != nreq or read != 0:
        sc.problem("a run after the job had ended exited %d, read %s records, wrote %d "
                   "changes, sent %d requests:\n%s" % (p.returncode, read, after - before,
                                                       len(mock.requests()) - nreq,
                                                       p.stderr[-2000:]))


LOG_RE = re.compile(r"\[lua\] send: (SEND|RECONCILE) (E[0-9]+)(?: (happened|not))?$")


def check_side_effects(sc):
    """reconcile is asked exactly about the side effects a process's store held PENDING
    (the last process: all of them; a killed one: some), once each; a call is made again
    only after reconcile said it had not happened."""
    sends, bad = {}, []
    for e in sc.epochs:
        pending = {ev for ev, _ in sc.snapshots[e.n].pending} if e.n in sc.snapshots else set()
        said = {}
        for line in open(e.err_path, errors="replace"):
            m = LOG_RE.search(line.rstrip("\n"))
            if not m:
                continue
            what, ev, answer = m.groups()
            if what == "RECONCILE":
                if ev not in pending:
                    bad.append("epoch %d reconciled %s, not PENDING in its store" % (e.n, ev))
                if ev in said:
                    bad.append("epoch %d reconciled %s twice" % (e.n, ev))
                said[ev] = answer
                continue
            if ev in pending and said.get(ev) != "not":
                bad.append("epoch %d sent %s (PENDING in its store) %s" % (
                    e.n, ev, "after reconcile said it had happened" if ev in said
                    else "without asking reconcile"))
            elif ev not in pending and ev in sends and said.get(ev) != "not":
                bad.append("epoch %d sent %s again (sent before by epoch %d), not PENDING"
                           % (e.n, ev, sends[ev][-1]))
            sends.setdefault(ev, []).append(e.n)
        e.reconciled = said
        e.pending = pending
    last = sc.epochs[-1]
    if not last.pending:
        bad.append("the test's premise: the last process starts with side effects PENDING "
                   "(the last kill came at %r)" % (sc.epochs[-2].plan,))
    if set(last.reconciled) != last.pending:
        bad.append("the last process reconciled %d calls, its store held %d PENDING: "
                   "not reconciled %s, reconciled and not PENDING %s"
                   % (len(last.reconciled), len(last.pending),
                      sorted(last.pending - set(last.reconciled))[:5],
                      sorted(set(last.reconciled) - last.pending)[:5]))
    summary = json.load(open(last.summary_path))
    if summary.get("tools_reconciled") != len(last.reconciled):
        bad.append("the last process's summary says tools_reconciled %s; its stderr has %d "
                   "RECONCILE lines" % (summary.get("tools_reconciled"), len(last.reconciled)))
    never = [ev["id"] for ev in sc.events if ev["id"] not in sends]
    if never:
        bad.append("events never sent: %s" % never[:8])
    if bad:
        sc.problem("side effects and reconcile", bad)
    asked = sum(len(e.reconciled) for e in sc.epochs)
    pend = sum(len(e.pending) for e in sc.epochs)
    again = sum(len(v) - 1 for v in sends.values())
    print("    side effects: %d PENDING at the starts, %d reconciled (%d happened), %d sent "
          "again after a 'not'; the last process reconciled %d"
          % (pend, asked, sum(1 for e in sc.epochs for a in e.reconciled.values()
                              if a == "happened"), again, len(last.reconciled)), flush=True)


def side_effect_plans(rng, n):
    """14 kills: chaos_test.kill_plans without 3 of its middle ones, and of its end ones
    only the first (as the input ends, some 200 runs in flight): the last process starts
    with sends PENDING, and must reconcile exactly those."""
    plans = ch.kill_plans(rng, n)
    middle = plans[1:-4]
    for _ in range(3):
        middle.pop(rng.randrange(len(middle)))
    return plans[:1] + middle + plans[-4:-3]


def scenario(name, delivery, n, nkeys, plans_fn, side_effects):
    def test(tmp, seed):
        rng = random.Random("%d/%s" % (seed, name))
        events = ch.make_events(rng, n, nkeys)
        table = "chaos.in_" + name
        sc = FlussScenario(name, tmp, seed, events, delivery, table)
        plans = plans_fn(rng, n)
        ref_table, out_table = "chaos.ref_" + name, "chaos.out_" + name
        ft.create(tmp, table, INPUT_COLS, buckets=BUCKETS, bucket_key=["k"])
        ft.create(tmp, ref_table, SINK_COLS, primary_key=["event_id"], buckets=3)
        ft.create(tmp, out_table, SINK_COLS, primary_key=["event_id"], buckets=3)
        ft.eddy("produce", table, stdin=ft.jsonl(events))
        sc.read_placement()
        script = SEND_SCRIPT if side_effects else ch.SCRIPT
        took_ref, ref_rows, ref_state, ref_steps = run_reference(
            sc, os.path.join(tmp, "reference"), ref_table, script, side_effects)
        sc.dir = os.path.join(tmp, "chaos")
        os.makedirs(sc.dir)
        with it.Mock(sc.dir, script, latency_ms=ch.LATENCY_MS) as mock:
            job = make_job_dir(sc.dir, sc, out_table, mock.base_url, side_effects)
            ch.run_plans(sc, job, plans, RequestWatch(os.path.join(sc.dir, "mock-requests.jsonl")))
            last = json.load(open(sc.epochs[-1].summary_path))
            snap = sc.snapshots.get(len(sc.epochs) - 1)
            read = len(sc.events) - len(snap.below if snap else ())
            if last.get("events") != read:
                sc.problem("the last process read %s records; %d are at or after the offsets "
                           "its store held" % (last.get("events"), read))
            check_rerun(sc, job, mock, out_table)
        ch.save_epochs(sc)
        updates = check_table(sc, out_table, ref_rows)
        dead = it.read_jsonl(os.path.join(sc.dir, "dead.jsonl"))
        if dead:
            sc.problem("dead letters", [d.get("event_id") or d.get("reason") for d in dead])
        ch.check_memory(sc, ref_state, ch.store_state(os.path.join(sc.dir, "state", "state.db")))
        repeats, two = ch.check_requests(
            sc, ch.request_steps(sc, os.path.join(sc.dir, "mock-requests.jsonl")), ref_steps)
        if side_effects:
            check_side_effects(sc)
        warns = ch.check_logs(sc)
        kills = sum(1 for e in sc.epochs if e.killed)
        print("    %s: %d events in %s, %d kills (%d missed), %d processes; %s: %d rows "
              "upserted again; %d LLM requests sent again after a kill (%d runs with 2 from "
              "one kill); %d warnings; last run: replayed_runs %d, llm_replayed %d, "
              "tools_replayed %d, redelivered %d; uninterrupted %.1f s"
              % (name, n, sorted(sc.ends.values()), kills, len(sc.missed), len(sc.epochs),
                 out_table, updates, repeats, two, warns, last.get("replayed_runs", -1),
                 last.get("llm_replayed", -1), last.get("tools_replayed", -1),
                 last.get("redelivered", -1), took_ref), flush=True)
        if sc.missed:
            print("    missed kill moments: %s" % sc.missed, flush=True)
        sc.raise_problems()
        for t in (table, ref_table, out_table):
            ft.eddy("drop-table", t, "--if-exists")
    test.__name__ = "test_" + name
    return test


TESTS = [
    scenario("fluss_pk_sink", "at_least_once", 3000, 300, ch.kill_plans, False),
    scenario("fluss_side_effects", "exactly_once", 1000, 100, side_effect_plans, True),
]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--seed", type=int, help="replay a run (printed at the start)")
    ap.add_argument("--only", help="run the scenarios whose name contains this")
    ap.add_argument("--keep", action="store_true", help="keep the files of passing scenarios")
    ap.add_argument("--keep-cluster", action="store_true", help="leave the cluster running")
    ARGS = ap.parse_args()
    ARGS.build = os.path.abspath(ARGS.build)
    ch.ARGS = it.ARGS = ft.ARGS = ARGS
    seed = ARGS.seed if ARGS.seed is not None else random.SystemRandom().randrange(1, 2**31)
    print("fluss chaos: seed %d (replay: --seed %d)" % (seed, seed), flush=True)
    subprocess.run([os.path.join(ch.ROOT, "tests", "fluss", "pyfluss.sh")], check=True)
    p = subprocess.run([ft.CLUSTER, "start"], capture_output=True, text=True)
    if p.returncode != 0:
        print("FAIL: the Fluss test cluster did not start:\n" + p.stderr, file=sys.stderr)
        return 1
    ft.BOOT = p.stdout.strip().splitlines()[-1]
    failed = ran = 0
    t_all = time.time()
    try:
        for t in TESTS:
            if ARGS.only and ARGS.only not in t.__name__:
                continue
            ran += 1
            tmp = tempfile.mkdtemp(prefix="eddy-fchaos-")
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
                print("FAIL %-28s seed %d (files kept in %s)" % (t.__name__, seed, tmp),
                      flush=True)
                traceback.print_exc()
    finally:
        if not ARGS.keep_cluster:
            subprocess.run([ft.CLUSTER, "stop"], stdout=subprocess.DEVNULL)
    if not ran:
        print("no Fluss chaos test matches --only %r" % ARGS.only)
        return 1
    print("%s (seed %d, %.1f s)" % ("%d Fluss chaos test(s) failed" % failed if failed
                                   else "all %d Fluss chaos tests passed" % ran, seed,
                                   time.time() - t_all))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
