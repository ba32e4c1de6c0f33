#!/usr/bin/env python3
"""Integration tests: `eddy check` agrees with `eddy run`, and never hangs; how the
process behaves (a reader of stdout that goes away, --quiet, per-job stores).

Reuses the runner, the mock LLM and the helpers of tests/integration/run.py.

    python3 tests/integration/check_test.py --build build [--only NAME]
"""
import base64
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as itrun  # noqa: E402
from run import Mock, copy_example, eddy, example_script, read_jsonl, write  # noqa: E402

ROOT = itrun.ROOT


def job_text(base_url, name="t", head="", agents=None, model_extra=""):
    """A job with one model at BASE_URL and AGENTS (name -> YAML body lines)."""
    agents = agents or {"support": "    prompt: { user: \"{{event.text}}\" }\n"
                                   "    tools: [ tools/lookup_order.lua ]\n"}
    body = "".join("  %s:\n%s" % (n, a) for n, a in agents.items())
    return ("job: %s\nkey: customer_id\n%s"
            "models:\n  default:\n    base_url: %s\n    model: mock-model\n%s"
            "agents:\n%s") % (name, head, base_url, model_extra, body)


def events(path, n, keys=5):
    write(path, "".join(json.dumps({"id": "e%d" % i, "customer_id": "K%d" % (i % keys),
                                    "text": "hello %d" % i}) + "\n" for i in range(n)))


def first_error(p):
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    return lines[0] if lines else ""


# -- check and run agree --------------------------------------------------------

def test_shared_tool_file_check_agrees_with_run(tmp):
    """Two agents listing one tool file: `check` loads them into one host, as `run` does,
    so both accept the job or both refuse it with the same message (it passed check and
    failed run)."""
    d = copy_example(tmp)
    agents = {a: "    prompt: { user: \"{{event.text}}\" }\n"
                 "    tools: [ tools/lookup_order.lua ]\n" for a in ("first", "second")}
    with Mock(tmp, example_script()) as mock:
        job = os.path.join(d, "two.yaml")
        write(job, job_text(mock.base_url, agents=agents))
        events(os.path.join(d, "in.jsonl"), 4)
        c = eddy("check", job)
        r = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "out.jsonl"))
    # the same file in two agents is the same tool, loaded once: both accept the job
    assert c.returncode == 0 and r.returncode == 0, (c.returncode, c.stderr, r.returncode,
                                                     r.stderr)
    outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
    assert sorted(o["agent"] for o in outs) == ["first"] * 4 + ["second"] * 4, outs


def test_two_tools_one_name_in_one_agent(tmp):
    """Two different tool files giving one name in one agent's list: an error naming both
    places, from check and from run."""
    d = copy_example(tmp)
    src = open(os.path.join(d, "tools", "lookup_order.lua")).read()
    write(os.path.join(d, "tools", "copy.lua"), src)
    job = os.path.join(d, "dup.yaml")
    write(job, job_text("http://127.0.0.1:9/v1", agents={
        "support": "    prompt: { user: hi }\n"
                   "    tools:\n"
                   "      - tools/lookup_order.lua\n"
                   "      - tools/copy.lua\n"}))
    c = eddy("check", job, check=2)
    want = ("%s:12:9: agent 'support' lists two tools named 'lookup_order': %s here and %s at "
            "%s:11:9" % (job, os.path.join(d, "tools", "copy.lua"),
                         os.path.join(d, "tools", "lookup_order.lua"), job))
    assert want in c.stderr, c.stderr
    r = eddy("run", job, "--input", "-", stdin="", check=2)
    assert want in r.stderr, r.stderr


def test_files_run_refuses_are_check_errors(tmp):
    """A sink in a missing folder, a state store under a file, a missing source: errors of
    `check` with file:line:col, and `run` refuses with the same words before it starts."""
    d = copy_example(tmp)
    write(os.path.join(d, "plain-file"), "x")
    job = os.path.join(d, "files.yaml")
    write(job, job_text("http://127.0.0.1:9/v1", head=(
        "source: { jsonl: no-such-events.jsonl }\n"
        "sink: { jsonl: no-such-folder/answers.jsonl }\n"
        "checkpoint: { path: plain-file/state.db }\n")))
    c = eddy("check", job, check=2)
    expect = [
        job + ":5:21: state store '%s/plain-file/state.db': '%s/plain-file' is not a folder" % (d, d),
        job + ":4:16: sink '%s/no-such-folder/answers.jsonl': folder '%s/no-such-folder' does "
              "not exist" % (d, d),
        job + ":3:18: source '%s/no-such-events.jsonl': cannot be read: No such file or "
              "directory" % d,
    ]
    for e in expect:
        assert e in c.stderr, "missing %r in:\n%s" % (e, c.stderr)
    assert "3 problems found" in c.stderr, c.stderr
    r = eddy("run", job, check=2)
    for e in expect:
        assert e in r.stderr, "missing %r in:\n%s" % (e, r.stderr)
    # what the command line overrides is not held against the job
    with Mock(tmp, example_script()) as mock:
        write(job, open(job).read().replace("http://127.0.0.1:9/v1", mock.base_url))
        events(os.path.join(d, "in.jsonl"), 3)
        with open(os.path.join(d, "in.jsonl"), "a") as f:
            f.write("not json\n")
        dead = os.path.join(tmp, "dl", "sub", "dead.jsonl")  # its folders are made at run
        r = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "out.jsonl"), "--state", os.path.join(tmp, "s", "state.db"),
                 "--dead-letter", dead, check=0)
        assert len(read_jsonl(os.path.join(tmp, "out.jsonl"))) == 3
        assert [x["line"] for x in read_jsonl(dead)] == [4], r.stderr
        r = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "nope", "out.jsonl"), "--state",
                 os.path.join(tmp, "s", "state.db"), check=2)
        assert "--output: sink '%s/nope/out.jsonl': folder" % tmp in r.stderr, r.stderr
    # a fresh copy of the example checks: its sink goes into .eddy/, which the stores make
    fresh = os.path.join(tmp, "fresh")
    shutil.copytree(itrun.EXAMPLE, fresh, ignore=shutil.ignore_patterns(".eddy"))
    p = eddy("check", os.path.join(fresh, "job.yaml"), check=0)
    assert "ok" in p.stdout and not os.path.exists(os.path.join(fresh, ".eddy")), p.stdout


def test_run_reports_every_problem(tmp):
    """`run` printed a subset of check's problems with its count ("1 problem found; see
    `eddy check`" where check lists 2), and sent problems with its own flags to `eddy
    check`, which then says ok."""
    d = copy_example(tmp)
    job = os.path.join(d, "many.yaml")
    write(job, job_text("http://127.0.0.1:9/v1", head="kye: x\nsource: { jsonl: nope.jsonl }\n"))
    c = eddy("check", job, check=2)
    problems = [l for l in c.stderr.splitlines() if l.startswith(job + ":") and
                not l.startswith(job + ": ")]
    assert len(problems) == 2 and "2 problems found" in c.stderr, c.stderr
    r = eddy("run", job, check=2)
    for l in problems:
        assert l in r.stderr, (l, r.stderr)
    assert "%s: 2 problems found; see `eddy check`" % job in r.stderr, r.stderr
    good = os.path.join(d, "job.yaml")
    nodir = os.path.join(tmp, "nodir", "x.jsonl")
    r = eddy("run", good, "--output", nodir, check=2)
    assert "--output: sink '%s'" % nodir in r.stderr, r.stderr
    assert "1 problem found with the command line" in r.stderr and "eddy check" not in r.stderr, \
        r.stderr
    eddy("check", good, check=0)
    r = eddy("run", job, "--output", nodir, check=2)
    assert "3 problems found (1 with the command line; `eddy check` shows the job's own)" in \
        r.stderr, r.stderr


def test_output_onto_a_file_the_job_reads(tmp):
    """`eddy run job.yaml --output job.yaml` appended outputs to the job file (and a sink or
    dead-letter file could be the source, a prompt or a tool): refused at start, and by
    check for the job's own paths."""
    d = copy_example(tmp)
    job = os.path.join(d, "job.yaml")
    before = open(job).read()
    r = eddy("run", job, "--output", job, check=2)
    assert "--output: sink '%s': it is also the job file" % job in r.stderr, r.stderr
    r = eddy("run", job, "--dead-letter", os.path.join(d, "tools", "lookup_order.lua"), check=2)
    assert "--dead-letter: dead-letter file '%s/tools/lookup_order.lua': it is also the tool " \
        "file of agent 'support' listed at %s:27:14" % (d, job) in r.stderr, r.stderr
    assert open(job).read() == before
    write(job, before.replace('"${EDDY_OUT:-.eddy/answers.jsonl}"', "prompts/support.md"))
    c = eddy("check", job, check=2)
    assert "%s:8:16: sink '%s/prompts/support.md': it is also the system_file of agent " \
        "'support' (%s:25:20)" % (job, d, job) in c.stderr, c.stderr


def test_check_never_blocks_on_fifos(tmp):
    """A FIFO as a source is fine (nothing is opened); a FIFO as a prompt or tool file is an
    error, not a read that waits forever for a writer."""
    d = copy_example(tmp)
    os.mkfifo(os.path.join(d, "events.fifo"))
    os.mkfifo(os.path.join(d, "prompt.fifo"))
    os.mkfifo(os.path.join(d, "tools", "fifo.lua"))
    job = os.path.join(d, "fifo.yaml")
    write(job, job_text("http://127.0.0.1:9/v1", head="source: { jsonl: events.fifo }\n"))
    p = eddy("check", job, timeout=20, check=0)
    write(job, job_text("http://127.0.0.1:9/v1", agents={
        "support": "    prompt: { system_file: prompt.fifo, user: hi }\n"
                   "    tools: [ tools/fifo.lua ]\n"}))
    t0 = time.time()
    p = eddy("check", job, timeout=20, check=2)
    assert time.time() - t0 < 10
    assert job + ":9:28: prompt file 'prompt.fifo' cannot be read: it is not a regular file" \
        in p.stderr, p.stderr
    assert job + ":10:14: tool file '%s/tools/fifo.lua' is not a regular file" % d in p.stderr, \
        p.stderr


def test_values_and_text_errors_name_the_place(tmp):
    """Out-of-range values (they meant "no limit" or overflowed), empty names, a NUL byte,
    invalid UTF-8 and a tab in indentation are each reported at their line:col."""
    d = os.path.join(tmp, "j")
    job = os.path.join(d, "job.yaml")
    write(job, "job: \"\"\nkey: k\nshutdown_grace: -5\n"
               "models:\n  m:\n    base_url: http://127.0.0.1:9/v1\n    model: m\n"
               "    timeout: 9223372036854775807\n"
               "    retry: { attempts: 0 }\n"
               "agents:\n  a:\n    prompt: { user: hi }\n    budget: { wall: 1e300d }\n")
    p = eddy("check", job, check=2)
    for e in [":1:6: 'job' must not be empty",
              ":3:17: 'shutdown_grace' must be between 0ms and 1d",
              ":8:14: 'timeout' must be between 1ms and 1d",
              ":9:24: 'attempts' must be between 1 and 100",
              ":13:21: 'wall' must be between 1ms and 30d"]:
        assert job + e in p.stderr, "missing %r in:\n%s" % (e, p.stderr)
    for text, want in [(b"job: j\nkey: k\x00\n", ":2:7: NUL byte in the job file"),
                       (b"job: j\nkey: \"\xc3\xa9\xe9\"\n", ":2:8: invalid UTF-8 (byte 0xE9)"),
                       (b"job: j\nmodels:\n\tm: {}\n",
                        ":3:1: invalid YAML: tab character used for indentation")]:
        with open(job, "wb") as f:
            f.write(text)
        p = eddy("check", job, check=2)
        assert job + want in p.stderr, "missing %r in:\n%s" % (want, p.stderr)


def test_number_from_environment(tmp):
    """`${CONC:-64}` unquoted inside { } and `"${ATT}"` quoted take the type their setting
    wants; the concurrency that comes from the environment is the one applied."""
    d = copy_example(tmp)
    with Mock(tmp, {"rules": [{"reply": "ok ${user}"}]}, latency_ms=150) as mock:
        job = os.path.join(d, "env.yaml")
        write(job, job_text(mock.base_url, model_extra=(
            "    limits: { concurrency: ${EDDY_IT_CONC:-64} }\n"
            "    retry: { attempts: \"${EDDY_IT_ATT}\", backoff: ${EDDY_IT_B:-10ms..20ms} }\n"
            "    timeout: \"${EDDY_IT_TIMEOUT:-5s}\"\n")))
        env = {"EDDY_IT_CONC": "3", "EDDY_IT_ATT": "2"}
        eddy("check", job, env=env, check=0)
        events(os.path.join(d, "in.jsonl"), 12, keys=12)
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), env=env, check=0)
        stats = mock.stats()
    assert len(read_jsonl(os.path.join(tmp, "out.jsonl"))) == 12
    assert stats["peak_in_flight"] == 3, stats
    p = eddy("check", job, env={"EDDY_IT_CONC": "lots", "EDDY_IT_ATT": "2"}, check=2)
    assert job + ":7:28: 'concurrency' must be an integer, not a string" in p.stderr, p.stderr


def test_tool_entry_long_form(tmp):
    """`- { lua: FILE, limits: {...} }` loads with its limits in check and run; an unknown
    key in the entry is an error with a suggestion."""
    d = copy_example(tmp)
    with Mock(tmp, example_script()) as mock:
        job = os.path.join(d, "long.yaml")
        write(job, job_text(mock.base_url, agents={"support": (
            "    prompt: { user: \"{{event.text}}\" }\n"
            "    tools:\n"
            "      - { lua: tools/lookup_order.lua, limits: { instructions: 5000000, "
            "memory: 16MB, wall: 2s } }\n")}))
        eddy("check", job, check=0)
        write(os.path.join(d, "in.jsonl"),
              '{"id":"1","customer_id":"K1","text":"Where is my order A1001?"}\n')
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), check=0)
    outs = read_jsonl(os.path.join(tmp, "out.jsonl"))
    assert len(outs) == 1 and outs[0]["tool_calls"] == 1 and "A1001" in outs[0]["output"], outs
    write(job, open(job).read().replace("limits:", "limts:"))
    p = eddy("check", job, check=2)
    assert job + ":11:40: unknown key 'limts' (did you mean 'limits'?)" in p.stderr, p.stderr


# -- process behaviour ----------------------------------------------------------

def test_per_job_state_and_traces(tmp):
    """Two jobs in one folder keep their own memory and traces (.eddy/<job>/), and
    `eddy trace list JOB.yaml` finds each job's default store."""
    d = copy_example(tmp)
    with Mock(tmp, {"rules": [{"reply": "n=${n_user}"}]}) as mock:
        for name in ("alpha", "beta"):
            write(os.path.join(d, name + ".yaml"), job_text(mock.base_url, name=name))
        events(os.path.join(d, "in.jsonl"), 2, keys=1)
        for name in ("alpha", "beta"):
            eddy("run", os.path.join(d, name + ".yaml"), "--input", os.path.join(d, "in.jsonl"),
                 "--output", os.path.join(tmp, name + ".jsonl"), check=0)
    for name in ("alpha", "beta"):
        # each job's conversation with K0 starts at its own first message
        outs = read_jsonl(os.path.join(tmp, name + ".jsonl"))
        assert [o["output"] for o in outs] == ["n=1", "n=2"], (name, outs)
        db = sqlite3.connect(os.path.join(d, ".eddy", name, "traces.db"))
        assert db.execute("SELECT count(*) FROM traces").fetchone()[0] == 2
        assert os.path.exists(os.path.join(d, ".eddy", name, "state.db"))
        p = eddy("trace", "list", os.path.join(d, name + ".yaml"), check=0)
        assert len(p.stdout.strip().splitlines()) == 3, p.stdout
    assert not os.path.exists(os.path.join(d, ".eddy", "state.db"))
    # with no job named, one store is found; two are named, not guessed between
    p = subprocess.run([os.path.join(itrun.ARGS.build, "eddy"), "trace", "list"], cwd=d,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and ".eddy/alpha/traces.db" in p.stderr and \
        ".eddy/beta/traces.db" in p.stderr, (p.returncode, p.stderr)


def test_two_runs_of_one_job(tmp):
    """Two `eddy run`s on one state store at once overwrote each other's memory without a
    word: the second now fails at start (exit 1) naming the first's pid; `eddy check` and a
    run on another store are not held up, and once the first ends the store is free."""
    d = copy_example(tmp)
    with Mock(tmp, {"rules": [{"reply": "ok ${user}"}]}) as mock:
        job = os.path.join(d, "lock.yaml")
        write(job, job_text(mock.base_url, name="lock"))
        state = os.path.join(d, ".eddy", "lock", "state.db")
        first = subprocess.Popen([os.path.join(itrun.ARGS.build, "eddy"), "run", job, "--input",
                                  "-", "--output", os.path.join(tmp, "first.jsonl")],
                                 stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert "reading stdin" in first.stderr.readline()  # started: it holds the store
            events(os.path.join(d, "in.jsonl"), 2)
            run = ["run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                   os.path.join(tmp, "second.jsonl")]
            p = eddy(*run, check=1)
            assert "eddy: another eddy run (pid %d) is using %s" % (first.pid, state) in \
                p.stderr, p.stderr
            assert read_jsonl(os.path.join(tmp, "second.jsonl")) == []
            assert open(state + ".lock").read().strip() == str(first.pid)
            eddy("check", job, check=0)
            eddy(*run, "--state", os.path.join(tmp, "other.db"), check=0)
        finally:
            first.stdin.close()
            rc = first.wait(timeout=60)
        assert rc == 0, (rc, first.stderr.read())
        eddy(*run, check=0)
    assert len(read_jsonl(os.path.join(tmp, "second.jsonl"))) == 4


def test_stdout_closed_early(tmp):
    """`eddy run --output - | head -1`: the reader goes away; eddy stops reading, ends
    quietly with 0 (it died of SIGPIPE: 141) and prints no error per lost output."""
    d = copy_example(tmp)
    with Mock(tmp, {"rules": [{"reply": "ok ${user}"}]}, latency_ms=100) as mock:
        job = os.path.join(d, "pipe.yaml")
        write(job, job_text(mock.base_url))
        events(os.path.join(d, "in.jsonl"), 60, keys=4)
        p = subprocess.Popen([os.path.join(itrun.ARGS.build, "eddy"), "run", job, "--input",
                              os.path.join(d, "in.jsonl"), "--output", "-", "--summary-json",
                              os.path.join(tmp, "s.json")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = p.stdout.readline()
        p.stdout.close()  # as `head -1` does
        rc = p.wait(timeout=60)
        err = p.stderr.read()
    assert json.loads(first)["type"] == "output"
    assert rc == 0, (rc, err)
    assert "write failed" not in err and " error " not in err and "Broken pipe" not in err, err
    assert "SIGTERM" not in err, err  # no signal was sent: the sink said it was closed
    s = json.load(open(os.path.join(tmp, "s.json")))
    assert 1 <= s["outputs"] < 60, s


def test_stdout_closed_early_quiet_warns(tmp):
    """`eddy run --output - --quiet | head -1`: the count of outputs that had nowhere to go
    was an info line, which --quiet hid: it is a warning."""
    d = copy_example(tmp)
    with Mock(tmp, {"rules": [{"reply": "ok ${user}"}]}, latency_ms=100) as mock:
        job = os.path.join(d, "pipe.yaml")
        write(job, job_text(mock.base_url))
        events(os.path.join(d, "in.jsonl"), 60, keys=4)
        p = subprocess.Popen([os.path.join(itrun.ARGS.build, "eddy"), "run", job, "--input",
                              os.path.join(d, "in.jsonl"), "--output", "-", "--quiet"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = p.stdout.readline()
        p.stdout.close()
        rc = p.wait(timeout=60)
        err = p.stderr.read()
    assert json.loads(first)["type"] == "output" and rc == 0, (rc, err)
    lines = err.splitlines()
    assert len(lines) == 1 and " warn " in lines[0] and \
        "stdout was closed by its reader: " in lines[0] and \
        lines[0].endswith(" output(s) not written"), err


def test_byte_order_mark(tmp):
    """A UTF-8 byte order mark at the start of a JSONL source dead-lettered the first event
    ("'[' or '{' expected near '\\ufeff'")."""
    d = copy_example(tmp)
    with Mock(tmp, {"rules": [{"reply": "ok ${user}"}]}) as mock:
        job = os.path.join(d, "bom.yaml")
        write(job, job_text(mock.base_url, name="bom"))
        events(os.path.join(d, "in.jsonl"), 3)
        with open(os.path.join(d, "in.jsonl"), "rb") as f:
            data = f.read()
        with open(os.path.join(d, "in.jsonl"), "wb") as f:
            f.write(b"\xef\xbb\xbf" + data)
        eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), check=0)
    assert sorted(o["event_id"] for o in read_jsonl(os.path.join(tmp, "out.jsonl"))) == \
        ["e0", "e1", "e2"]
    assert read_jsonl(os.path.join(d, ".eddy", "bom", "dead-letter.jsonl")) == []


def test_dead_letter_raw_bytes(tmp):
    """A line with invalid UTF-8 (or one cut at 64 KiB inside a character) went to the dead
    letters without its source and raw text: they are there, the text with U+FFFD for each
    bad byte and the exact bytes in raw_base64."""
    d = copy_example(tmp)
    bad = b'{"customer_id":"K1","text":"caf\xe9"}'
    long_line = b"x" * 65535 + "\u00e9".encode() + b"tail"
    with Mock(tmp, {"rules": [{"reply": "ok ${user}"}]}) as mock:
        job = os.path.join(d, "raw.yaml")
        write(job, job_text(mock.base_url, name="raw"))
        src = os.path.join(d, "in.jsonl")
        with open(src, "wb") as f:
            f.write(bad + b"\nnot json\n\xff\xfe junk\n" + long_line + b"\n" +
                    b'{"customer_id":"K2","text":"ok"}\n')
        eddy("run", job, "--input", src, "--output", os.path.join(tmp, "out.jsonl"), check=0)
    assert len(read_jsonl(os.path.join(tmp, "out.jsonl"))) == 1
    dead = read_jsonl(os.path.join(d, ".eddy", "raw", "dead-letter.jsonl"))
    assert [x["line"] for x in dead] == [1, 2, 3, 4], dead
    for x in dead:
        assert x["source"] == src and x["reason"].startswith("%s:%d:" % (src, x["line"])), x
    assert dead[0]["raw"] == '{"customer_id":"K1","text":"caf\ufffd"}', dead[0]
    assert base64.b64decode(dead[0]["raw_base64"]) == bad
    assert dead[1]["raw"] == "not json" and "raw_base64" not in dead[1], dead[1]
    assert dead[2]["raw"] == "\ufffd\ufffd junk", dead[2]
    assert base64.b64decode(dead[2]["raw_base64"]) == b"\xff\xfe junk"
    assert dead[3]["raw"] == "x" * 65535 + "\u00e9" and dead[3]["raw_truncated"] is True


def test_quiet_prints_nothing(tmp):
    """--quiet: no info line and no summary on stderr."""
    d = copy_example(tmp)
    with Mock(tmp, example_script()) as mock:
        job = os.path.join(d, "q.yaml")
        write(job, job_text(mock.base_url))
        events(os.path.join(d, "in.jsonl"), 3)
        p = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "out.jsonl"), "--quiet", check=0)
    assert p.stderr == "", p.stderr
    assert len(read_jsonl(os.path.join(tmp, "out.jsonl"))) == 3


def test_global_options_before_the_command(tmp):
    """`eddy --log-level debug check J` and `eddy --quiet run J ...` were refused as
    "unknown command '--log-level'"; an EDDY_LOG that names no level was ignored in
    silence (and turned --quiet off)."""
    d = copy_example(tmp)
    job = os.path.join(d, "job.yaml")
    p = eddy("--log-level", "debug", "check", job, check=0)
    assert "ok" in p.stdout, p.stdout
    eddy("--log-level=warn", "check", job, check=0)
    p = eddy("--log-level", "loud", "check", job, check=2)
    assert "unknown log level 'loud'" in p.stderr, p.stderr
    p = eddy("--output", "x.jsonl", "run", job, check=2)
    assert "'--output' goes after the command" in p.stderr, p.stderr
    p = eddy("--bogus", "check", job, check=2)
    assert "unknown option '--bogus'" in p.stderr and "unknown command" not in p.stderr, p.stderr
    with Mock(tmp, example_script()) as mock:
        write(job, job_text(mock.base_url))
        events(os.path.join(d, "in.jsonl"), 3)
        run = ["run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
               os.path.join(tmp, "out.jsonl")]
        p = eddy("--quiet", *run, check=0)
        assert p.stderr == "", p.stderr
        p = eddy("--quiet", *run, env={"EDDY_LOG": "bogus"}, check=0)
    assert p.stderr.strip() == ("eddy: warning: EDDY_LOG='bogus' is not a log level, so it is "
                                "ignored (levels: error, warn, info, debug, trace)"), p.stderr
    # the second run resumed where the first one's checkpoint left the input: at its end
    assert len(read_jsonl(os.path.join(tmp, "out.jsonl"))) == 3
    p = eddy("check", job, env={"EDDY_LOG": "bogus"}, check=0)
    assert "EDDY_LOG='bogus' is not a log level" in p.stderr, p.stderr


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return itrun.suite_main(TESTS, "eddy-check-", 44, "check")


if __name__ == "__main__":
    sys.exit(main())
