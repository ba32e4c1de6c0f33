#!/usr/bin/env python3
"""Integration tests: `eddy state` on a job's store.

The example job runs against the mock to fill a store; then every command is
checked against what SQLite holds, byte for byte where the command promises
the store's own text: keys, get, history, positions, journal (after a crash
left runs in flight), export -> rm -> import, vacuum. Writing commands are
refused while something holds the store's lock (a fake holder, and a real
`eddy run`), reading commands work while a writer holds an open transaction.
Hostile input: keys with newlines, quotes, tabs and non-ASCII, a key two agents
share, files that are not stores, stores of an older schema, import lines that
are wrong (each named by its line number, and nothing changes).

Reuses the runner, the mock LLM and the helpers of tests/integration/run.py.

    python3 tests/integration/state_test.py --build build [--only NAME]
"""
import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as itrun  # noqa: E402
from run import Mock, copy_example, custom_job, eddy, example_script, write  # noqa: E402



def mock(tmp, script, latency_ms=0):
    """A Mock in TMP, also when one ran there before (its port file would be stale)."""
    if os.path.exists(os.path.join(tmp, "mock.port")):
        os.unlink(os.path.join(tmp, "mock.port"))
    return Mock(tmp, script, latency_ms=latency_ms)


def filled_store(tmp):
    """Run the example job on the mock; return (job dir, job file, store path)."""
    d = copy_example(tmp)
    job = os.path.join(d, "job.yaml")
    with mock(tmp, example_script()) as m:
        eddy("run", job, "--output", os.path.join(tmp, "out.jsonl"), "--quiet",
             env={"OPENAI_BASE_URL": m.base_url}, check=0)
    return d, job, os.path.join(d, ".eddy", "order-support", "state.db")


def rows(db_path):
    """Every memory and history row, as the store holds them (bytes)."""
    db = sqlite3.connect(db_path)
    db.text_factory = bytes
    mem = db.execute("SELECT agent, key, doc FROM key_memory ORDER BY agent, key").fetchall()
    hist = db.execute("SELECT agent, key, seq, messages FROM history "
                      "ORDER BY agent, key, seq").fetchall()
    db.close()
    return mem, hist


def esc(s):
    """A name as the table outputs write it."""
    out = []
    for c in s:
        if c == "\\":
            out.append("\\\\")
        elif c == "\t":
            out.append("\\t")
        elif c == "\n":
            out.append("\\n")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7f:
            out.append("\\x%02x" % ord(c))
        else:
            out.append(c)
    return "".join(out)


def expected_keys(db_path, agent=None):
    db = sqlite3.connect(db_path)
    ks = set()
    for t in ("key_memory", "history", "journal", "runs"):
        ks |= set(db.execute("SELECT agent, key FROM %s" % t).fetchall())
    out = []
    for a, k in sorted(ks, key=lambda x: (x[0].encode(), x[1].encode())):
        if agent and a != agent:
            continue
        doc = db.execute("SELECT length(CAST(doc AS BLOB)) FROM key_memory WHERE agent=? AND key=?",
                         (a, k)).fetchone()
        n = db.execute("SELECT count(*) FROM history WHERE agent=? AND key=?", (a, k)).fetchone()[0]
        out.append("%s\t%s\t%d\t%d" % (esc(a), esc(k), doc[0] if doc else 0, n))
    db.close()
    return out


def history_lines(db_path, agent, key):
    db = sqlite3.connect(db_path)
    lines = ['{"seq":%d,"messages":%s}' % (s, m) for s, m in db.execute(
        "SELECT seq, messages FROM history WHERE agent=? AND key=? ORDER BY seq", (agent, key))]
    db.close()
    return lines


def test_read_commands(tmp):
    """keys, get, history, positions, journal after a run: exactly what SQLite holds."""
    d, job, state = filled_store(tmp)
    keys = expected_keys(state)
    assert len(keys) == 36, keys
    p = eddy("state", "keys", job, check=0)
    assert p.stdout.splitlines() == ["agent\tkey\tmemory_bytes\thistory_runs"] + keys, p.stdout
    assert p.stderr == "", p.stderr
    # the store named by its path, and found by itself under .eddy/ here
    assert eddy("state", "keys", state, check=0).stdout == p.stdout
    q = subprocess.run([os.path.join(itrun.ARGS.build, "eddy"), "state", "keys"], cwd=d,
                       capture_output=True, text=True, timeout=60)
    assert q.returncode == 0 and q.stdout == p.stdout, (q.returncode, q.stderr)
    p = eddy("state", "keys", job, "--limit", "5", check=0)
    assert p.stdout.splitlines()[1:] == keys[:5], p.stdout
    assert "more keys than --limit 5" in p.stderr, p.stderr
    p = eddy("state", "keys", job, "--agent", "support", "--limit", "1000", check=0)
    assert p.stdout.splitlines()[1:] == keys and p.stderr == "", p
    p = eddy("state", "keys", job, "--agent", "nobody", check=0)
    assert p.stdout.splitlines() == ["agent\tkey\tmemory_bytes\thistory_runs"], p.stdout

    db = sqlite3.connect(state)
    for key, doc in db.execute("SELECT key, doc FROM key_memory ORDER BY key"):
        p = eddy("state", "get", key, job, check=0)
        assert p.stdout == doc + "\n", (key, p.stdout, doc)
    p = eddy("state", "get", "C001", job, "--agent", "support", check=0)
    assert json.loads(p.stdout)["lookups"] >= 1, p.stdout
    db.close()

    hist = history_lines(state, "support", "C003")
    assert len(hist) == 10, hist  # memory: { history: 10 }
    p = eddy("state", "history", "C003", job, check=0)
    assert p.stdout.splitlines() == hist, p.stdout
    p = eddy("state", "history", "C003", job, "--limit", "2", check=0)
    assert p.stdout.splitlines() == hist[-2:], p.stdout
    for line in hist:
        e = json.loads(line)
        assert e["messages"][0]["role"] == "user", e

    # positions: the input file read to its end (bytes and lines)
    events = os.path.join(d, "events.jsonl")
    size = os.path.getsize(events)
    nlines = sum(1 for _ in open(events))
    p = eddy("state", "positions", job, check=0)
    lines = p.stdout.splitlines()
    assert lines[0] == "source\tpart\tposition\tline", lines
    src = "jsonl:" + events
    assert lines[1] in ("%s\tfile\t%d\t%d" % (src, size, nlines),
                        "jsonl:%s\tfile\t%d\t%d" % (os.path.realpath(events), size, nlines)), lines
    assert lines[2:] == ["", "sink\tlength\tcount"], lines  # the run's --output is no sink of its own

    # nothing in flight after a clean end
    p = eddy("state", "journal", "C001", job, check=0)
    assert p.stdout == "", p.stdout

    # errors name the store and the key
    p = eddy("state", "get", "C9", job, check=1)
    assert p.stderr == "eddy: %s: no key 'C9' (agent support)\n" % state, p.stderr
    p = eddy("state", "history", "C001", job, "--agent", "billing", check=1)
    assert p.stderr == ("eddy: %s: no key 'C001' (agent billing); agent with it: support\n"
                        % state), p.stderr


def test_journal_after_crash(tmp):
    """A job stopped mid-run (fault injection) leaves journaled steps and finished runs
    not yet checkpointed; `state journal` shows them, each named by its source and part.
    The job names its store with checkpoint: { path } (no checkpoint until the end)."""
    d = copy_example(tmp)
    job = os.path.join(d, "job.yaml")
    text = open(job).read().replace("sink: {", "checkpoint: { path: store/custom.db, "
                                    "interval: 1h }\nsink: {")
    write(job, text)
    state = os.path.join(d, "store", "custom.db")
    events = os.path.join(d, "events.jsonl")
    with mock(tmp, example_script()) as m:
        eddy("run", job, "--output", os.path.join(tmp, "out.jsonl"), "--quiet",
             env={"OPENAI_BASE_URL": m.base_url}, check=0)
    with open(events, "a") as f:  # more events, some for new keys
        for i in range(40):
            key = "N%02d" % i if i % 2 else "C%03d" % (i % 30 + 1)
            f.write(json.dumps({"id": "n%d" % i, "customer_id": key,
                                "text": "Where is my order A10%02d?" % i}) + "\n")
    # with latency, groups commit one by one: the crash at the 300th write statement
    # leaves runs finished (about 15) and runs in flight (about 40 steps)
    with mock(tmp, example_script(), latency_ms=100) as m:
        eddy("run", job, "--output", os.path.join(tmp, "out.jsonl"), "--quiet",
             env={"OPENAI_BASE_URL": m.base_url, "EDDY_STORE_CRASH_AT": "300"}, check=86)
    db = sqlite3.connect(state)
    steps = db.execute("SELECT key, part, pos, step, state, kind, data FROM journal").fetchall()
    runs = db.execute("SELECT key, part, pos, ok, delivered, outcome FROM runs").fetchall()
    positions = db.execute("SELECT source, part FROM positions").fetchall()
    fresh = [k for (k,) in db.execute("SELECT DISTINCT key FROM journal WHERE key NOT IN "
                                      "(SELECT key FROM key_memory) ORDER BY key")]
    db.close()
    assert steps and runs and positions == [("jsonl:" + events, "file")], (steps, runs, positions)
    # the runtime names a part by the FNV-1a hash of "SOURCE\x1fPART"
    names = {}
    for source, part in positions:
        h = 14695981039346656037
        for b in (source + "\x1f" + part).encode():
            h = ((h ^ b) * 1099511628211) & (2 ** 64 - 1)
        names[h & 0x7fffffffffffffff] = (source, part)
    for key in sorted({r[0] for r in steps} | {r[0] for r in runs}):
        want = []
        for k, part, pos, ok, delivered, outcome in runs:
            if k == key:
                want.append((part, pos, 0, 0, {"row": "run", "ok": bool(ok),
                                               "delivered": bool(delivered),
                                               "outcome": json.loads(outcome)}))
        for k, part, pos, step, st, kind, data in steps:
            if k == key:
                want.append((part, pos, 1, step, {"row": "step", "step": step, "kind": kind,
                                                  "state": "pending" if st == 1 else "done",
                                                  "data": json.loads(data)}))
        want.sort(key=lambda w: w[:4])
        p = eddy("state", "journal", key, job, check=0)
        got = [json.loads(line) for line in p.stdout.splitlines()]
        assert len(got) == len(want), (key, p.stdout, want)
        for g, (part, pos, _, _, w) in zip(got, want):
            for f, v in w.items():
                assert g[f] == v, (key, f, g, w)
            assert (g["part_hash"], g["pos"]) == (part, pos), g
            assert (g["source"], g["part"]) == names[part], (g, names)
    # a key whose first run was in flight: no memory yet; get gives what a run starts from
    assert fresh, "no new key in flight"
    assert eddy("state", "get", fresh[0], job, check=0).stdout == "{}\n"
    assert eddy("state", "history", fresh[0], job, check=0).stdout == ""
    # rm takes the journal rows too
    p = eddy("state", "rm", fresh[0], job, check=0)
    assert " 0 history entries, " in p.stdout and "journal step" in p.stdout, p.stdout
    db = sqlite3.connect(state)
    assert not db.execute("SELECT 1 FROM journal WHERE key=?", (fresh[0],)).fetchone()
    db.close()


def test_export_rm_import_round_trip(tmp):
    """export -> rm -> import gives back byte-identical memory and history; rm of a
    key that is gone errors; vacuum keeps everything."""
    d, job, state = filled_store(tmp)
    before = rows(state)
    exp = os.path.join(tmp, "backup.jsonl")
    p = eddy("state", "export", job, "--output", exp, check=0)
    assert "36 keys exported to " + exp in p.stderr, p.stderr
    lines = open(exp, encoding="utf-8").read().splitlines()
    assert len(lines) == 36
    p = eddy("state", "export", state, check=0)
    assert p.stdout.splitlines() == lines, "export to stdout differs from --output"
    db = sqlite3.connect(state)
    for line in lines:
        o = json.loads(line)
        assert sorted(o) == ["agent", "history", "key", "memory"], o
        doc = db.execute("SELECT doc FROM key_memory WHERE agent=? AND key=?",
                         (o["agent"], o["key"])).fetchone()[0]
        assert json.loads(doc) == o["memory"]
        hist = history_lines(state, o["agent"], o["key"])
        # the store's own text, byte for byte, inside the line
        assert line == '{"agent":"%s","key":"%s","memory":%s,"history":[%s]}' % (
            o["agent"], o["key"], doc, ",".join(hist)), line[:200]
    db.close()

    for key in ("C001", "C002", "C017"):
        p = eddy("state", "rm", key, job, check=0)
        assert p.stdout.startswith(state + ": removed memory (") and "history entr" in p.stdout, \
            p.stdout
    p = eddy("state", "rm", "C001", job, check=1)
    assert p.stderr == "eddy: %s: no key 'C001' (agent support)\n" % state, p.stderr
    p = eddy("state", "get", "C002", job, check=1)
    mem, hist = rows(state)
    assert len(mem) == 33 and not any(r[1] in (b"C001", b"C002", b"C017") for r in hist)
    assert eddy("state", "keys", job, check=0).stdout.count("\n") == 1 + 33

    p = eddy("state", "import", exp, job, check=0)
    assert p.stdout == "%s: 36 keys imported\n" % state, p.stdout
    assert rows(state) == before, "memory or history changed in the round trip"
    # importing over keys that exist replaces them (still the same rows)
    eddy("state", "import", exp, state, check=0)
    assert rows(state) == before
    # from stdin too
    eddy("state", "rm", "C003", state, check=0)
    p = eddy("state", "import", "-", state, stdin=open(exp).read(), check=0)
    assert rows(state) == before

    p = eddy("state", "vacuum", job, check=0)
    assert p.stdout.startswith(state + ": ") and " bytes before, " in p.stdout, p.stdout
    assert rows(state) == before
    assert not os.path.exists(state + "-wal") or os.path.getsize(state + "-wal") == 0
    # the job goes on with the restored store
    with mock(tmp, example_script()) as m:
        write(os.path.join(d, "more.jsonl"),
              '{"id":"m1","customer_id":"C001","text":"hello again"}\n')
        eddy("run", job, "--input", os.path.join(d, "more.jsonl"), "--output",
             os.path.join(tmp, "more.out"), "--quiet", env={"OPENAI_BASE_URL": m.base_url},
             check=0)
    assert len(open(os.path.join(tmp, "more.out")).read().splitlines()) == 1
    assert len(history_lines(state, "support", "C001")) == 6


def test_writing_refused_while_locked(tmp):
    """import, rm, vacuum refuse while the store's flock is held (the holder's pid in
    the message); nothing changes; reading commands still work."""
    d, job, state = filled_store(tmp)
    exp = os.path.join(tmp, "backup.jsonl")
    eddy("state", "export", job, "--output", exp, check=0)
    before = rows(state)
    fd = os.open(state + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % os.getpid())
        want = "eddy: %s is in use by a running eddy (pid %d): stop it first\n" % (state,
                                                                                 os.getpid())
        for args in (["import", exp], ["rm", "C001"], ["vacuum"]):
            p = eddy("state", *args, job, check=1)
            assert p.stderr == want, (args, p.stderr)
            assert p.stdout == ""
        assert rows(state) == before
        assert eddy("state", "keys", job, check=0).stdout.count("\n") == 37
        eddy("state", "get", "C001", job, check=0)
    finally:
        os.close(fd)
    eddy("state", "rm", "C001", job, check=0)  # free again


def test_reading_while_a_writer_holds_a_transaction(tmp):
    """With a write transaction open on the store (BEGIN IMMEDIATE, uncommitted rows),
    every reading command answers at once from the last commit; a writing command
    waits no longer than the busy timeout and says so."""
    d, job, state = filled_store(tmp)
    expected = eddy("state", "export", job, check=0).stdout
    w = sqlite3.connect(state, isolation_level=None)
    w.execute("BEGIN IMMEDIATE")
    w.execute("INSERT INTO key_memory VALUES('support', 'ZZZ', '{\"uncommitted\":1}', 0)")
    w.execute("UPDATE key_memory SET doc='{\"changed\":1}' WHERE key='C001'")
    w.execute("DELETE FROM history WHERE key='C002'")
    try:
        # a reader that waited on the writer would fail after the busy timeout (exit 1)
        p = eddy("state", "keys", job, check=0)
        assert "ZZZ" not in p.stdout and p.stdout.count("\n") == 37, p.stdout
        assert eddy("state", "get", "C001", job, check=0).stdout != '{"changed":1}\n'
        assert len(eddy("state", "history", "C002", job, check=0).stdout.splitlines()) == 6
        eddy("state", "positions", job, check=0)
        eddy("state", "journal", "C001", job, check=0)
        assert eddy("state", "export", job, check=0).stdout == expected
        t0 = time.time()
        p = eddy("state", "rm", "C003", job, check=1)
        assert "stayed locked for more than 5000 ms" in p.stderr, p.stderr
        assert 4.5 < time.time() - t0 < 60  # the busy timeout, not forever
    finally:
        w.execute("ROLLBACK")
        w.close()


def test_while_a_job_runs(tmp):
    """During a real `eddy run` on the store: reading works, writing is refused with
    the run's pid."""
    d, job, state = filled_store(tmp)
    script = {"rules": [{"reply": "slow ${user}"}]}
    with mock(tmp, script, latency_ms=3000) as m:
        job2 = custom_job(d, m.base_url)
        state2 = os.path.join(d, ".eddy", "t", "state.db")
        write(os.path.join(d, "warm.jsonl"), '{"id":"w","customer_id":"K0","text":"hi"}\n')
        eddy("run", job2, "--input", os.path.join(d, "warm.jsonl"), "--output",
             os.path.join(tmp, "warm.out"), "--quiet", check=0)
        proc = itrun.start_on_stdin(job2, os.path.join(tmp, "run.out"), m,
                                    [{"id": "e%d" % i, "customer_id": "K%d" % i, "text": "x"}
                                     for i in range(3)])
        try:
            p = eddy("state", "keys", job2, check=0)
            assert "support\tK0\t" in p.stdout, p.stdout
            eddy("state", "get", "K0", job2, check=0)
            p = eddy("state", "rm", "K0", job2, check=1)
            assert p.stderr == ("eddy: %s is in use by a running eddy (pid %d): stop it first\n"
                                % (state2, proc.pid)), p.stderr
        finally:
            proc.stdin.close()
            proc.wait(timeout=30)
    assert proc.returncode == 0, proc.stderr.read()
    eddy("state", "get", "K0", job2, check=0)


def test_hostile_keys(tmp):
    """Keys with newlines, quotes, backslashes, tabs and non-ASCII: the JSON outputs carry
    them exactly, the tables escape them, every command finds them by their bytes; a key
    two agents have needs --agent."""
    d = copy_example(tmp)
    keys = ['a\nb"c\\d', "ключ-🙂", "tab\there", "-dash", "'quoted'"]
    with mock(tmp, {"rules": [{"reply": "ok ${user}"}]}) as m:
        job = custom_job(d, m.base_url)
        write(os.path.join(d, "in.jsonl"), "".join(
            json.dumps({"id": "e%d" % i, "customer_id": k, "text": "hello %d" % i}) + "\n"
            for i, k in enumerate(keys)))
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), "--quiet", check=0)
    state = os.path.join(d, ".eddy", "t", "state.db")
    p = eddy("state", "keys", job, check=0)
    assert p.stdout.splitlines()[1:] == expected_keys(state), p.stdout
    assert "support\ta\\nb\"c\\\\d\t" in p.stdout and "support\ttab\\there\t" in p.stdout
    db = sqlite3.connect(state)
    for i, k in enumerate(keys):
        doc = db.execute("SELECT doc FROM key_memory WHERE key=?", (k,)).fetchone()[0]
        assert eddy("state", "get", "--", k, job, check=0).stdout == doc + "\n"
        p = eddy("state", "history", "--", k, job, check=0)
        assert p.stdout.splitlines() == history_lines(state, "support", k), p.stdout
        assert json.loads(p.stdout)["messages"][0]["parts"][0]["text"] == "hello %d" % i
    db.close()
    out = eddy("state", "export", job, check=0).stdout
    assert sorted(json.loads(l)["key"] for l in out.splitlines()) == sorted(keys)
    # an error names the key, escaped to one line
    p = eddy("state", "get", "x\ny", job, check=1)
    assert p.stderr == "eddy: %s: no key 'x\\ny' (agent support)\n" % state, p.stderr
    before = rows(state)
    exp = os.path.join(tmp, "exp.jsonl")
    write(exp, out)
    for k in keys:
        eddy("state", "rm", "--", k, job, check=0)
    assert rows(state) == ([], [])
    eddy("state", "import", exp, job, check=0)
    assert rows(state) == before

    # the same key for two agents: --agent chooses
    db = sqlite3.connect(state)
    db.execute("INSERT INTO key_memory SELECT 'billing', key, '{\"plan\":\"pro\"}', 0 "
               "FROM key_memory WHERE key='-dash'")
    db.commit()
    db.close()
    p = eddy("state", "get", "--", "-dash", job, check=1)
    assert p.stderr == ("eddy: %s: key '-dash' is there for 2 agents (billing, support): name "
                        "one with --agent\n" % state), p.stderr
    assert eddy("state", "get", "--agent", "billing", "--", "-dash", job,
                check=0).stdout == '{"plan":"pro"}\n'
    p = eddy("state", "rm", "--", "-dash", job, check=1)
    assert "2 agents (billing, support)" in p.stderr, p.stderr
    eddy("state", "rm", "--agent", "billing", "--", "-dash", job, check=0)
    eddy("state", "get", "--", "-dash", job, check=0)


def test_not_a_store(tmp):
    """A missing file, a text file, an SQLite database of something else, an older
    store, a folder: each refused with a message naming it; nothing is created."""
    missing = os.path.join(tmp, "nope", "state.db")
    for cmd in (["keys"], ["rm", "K"], ["vacuum"]):
        p = eddy("state", *cmd, missing, check=1)
        assert p.stderr == "eddy: %s: no such store\n" % missing, p.stderr
    assert not os.path.exists(os.path.dirname(missing))

    text = os.path.join(tmp, "text.db")
    write(text, "this is not a database, it is a text file of some length " * 20)
    for cmd in (["keys"], ["get", "K"], ["export"], ["rm", "K"], ["import", text]):
        p = eddy("state", *cmd, text, check=1)
        assert p.stderr == "eddy: %s: not an eddy store (not an SQLite database)\n" % text, \
            (cmd, p.stderr)
    assert not os.path.exists(text + ".lock")

    other = os.path.join(tmp, "other.db")
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t(x)")
    db.commit()
    db.close()
    p = eddy("state", "keys", other, check=1)
    assert p.stderr == ("eddy: %s: not an eddy store (an SQLite database without eddy's "
                        "tables)\n" % other), p.stderr
    empty = os.path.join(tmp, "empty.db")
    open(empty, "w").close()
    p = eddy("state", "positions", empty, check=1)
    assert "not an eddy store (an empty SQLite database)" in p.stderr, p.stderr

    old = os.path.join(tmp, "v1.db")
    shutil.copy(os.path.join(itrun.ROOT, "tests", "fixtures", "history-v1", "state.db"), old)
    for cmd in (["keys"], ["import", text], ["vacuum"]):
        p = eddy("state", *cmd, old, check=1)
        assert p.stderr == ("eddy: %s: store schema version 1 is older than this eddy's (4): "
                            "run a job on it once to migrate it\n" % old), p.stderr
    p = eddy("state", "keys", tmp, check=1)
    assert "not an eddy store (not a regular file)" in p.stderr, p.stderr

    # usage errors exit 2
    eddy("state", "get", check=2)
    eddy("state", "frobnicate", check=2)
    p = eddy("state", "keys", other, "--output", "x", check=2)
    assert "--output is not one of its options" in p.stderr, p.stderr
    eddy("state", "keys", other, "--limit", "0", check=2)
    eddy("state", "get", "a", "b", "c", check=2)
    assert "keys" in eddy("state", check=2).stderr


def test_import_rejects_bad_lines(tmp):
    """An import file with a wrong line: the error names the file and line, and nothing
    changes, also the lines before it."""
    d, job, state = filled_store(tmp)
    before = rows(state)
    good = eddy("state", "export", job, check=0).stdout.splitlines()
    o = json.loads(good[0])
    o["memory"] = {"replaced": True}
    first = json.dumps(o)
    msgs = [{"role": "user", "parts": [{"type": "text", "text": "hi"}]}]
    cases = [
        ("this is not json", "not JSON: "),
        ('{"agent":"support","key":"K1","memory":{},"history":[]} trailing', "not JSON: "),
        ("[1, 2]", "not a JSON object"),
        ('{"agent":"support","key":"K1","memory":{},"history":[],"extra":1}', "unknown member"),
        ('{"agent":"support","key":"K1","memory":{},"history":[],"key":"K2"}', "not JSON: "),
        ('{"agent":"","key":"K1","memory":{},"history":[]}', "'agent' must be a non-empty"),
        ('{"agent":"support","key":7,"memory":{},"history":[]}', "'key' must be a non-empty"),
        ('{"agent":"support","key":"K1","memory":[1],"history":[]}', "'memory' must be an object"),
        ('{"agent":"support","key":"K1","memory":{},"history":{}}', "'history' must be an array"),
        ('{"agent":"support","key":"K1","memory":{}}', "'history' must be an array"),
        (json.dumps({"agent": "support", "key": "K1", "memory": {},
                     "history": [{"seq": 2, "messages": msgs}, {"seq": 2, "messages": msgs}]}),
         "history[1].seq must be an integer above 2"),
        (json.dumps({"agent": "support", "key": "K1", "memory": {},
                     "history": [{"seq": 1, "messages": [{"role": "wizard", "parts": []}]}]}),
         "history[0].messages: "),
        (json.dumps({"agent": "support", "key": "K1", "memory": {},
                     "history": [{"seq": 1, "messages": "hi"}]}),
         "history[0].messages must be an array"),
        (good[5], "again (first on line 1)"),
        ('{"agent":"support","key":"K\\u0000","memory":{},"history":[]}', "not JSON: "),
    ]
    f = os.path.join(tmp, "bad.jsonl")
    for bad, why in cases:
        line1 = good[5] if why.startswith("again") else first
        write(f, line1 + "\n\n" + bad + "\n" + good[1] + "\n")
        p = eddy("state", "import", f, job, check=1)
        assert p.stderr.startswith("eddy: %s:3: " % f) and why in p.stderr and \
            p.stderr.endswith("; nothing was imported\n"), (bad, p.stderr)
        assert rows(state) == before, bad
    with open(f, "wb") as fh:
        fh.write(first.encode() + b"\n" + b'{"agent":"support","key":"\xff"}\n')
    p = eddy("state", "import", f, job, check=1)
    assert ("%s:2: not JSON" % f) in p.stderr, p.stderr
    assert rows(state) == before
    # a file that is not there
    p = eddy("state", "import", os.path.join(tmp, "none.jsonl"), job, check=1)
    assert "cannot read" in p.stderr and rows(state) == before
    # the good ones go in
    write(f, first + "\n")
    eddy("state", "import", f, job, check=0)
    assert eddy("state", "get", o["key"], job, check=0).stdout == '{"replaced":true}\n'


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return itrun.suite_main(TESTS, "eddy-state-", 44, "state")


if __name__ == "__main__":
    sys.exit(main())
