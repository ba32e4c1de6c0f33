#!/usr/bin/env python3
"""Integration tests: `eddy trace list` finds runs by agent, key, event, status, model,
tool, time and words of their input or output; `eddy trace show --event`; bad option
values refused; a job read without its environment variables; columns cut by characters.

One job (two agents, two models, a Lua tool, runs that fail on a mock fault) runs once
against the mock; every test reads its trace store. Reuses the runner, the mock LLM and
the helpers of tests/integration/run.py.

    python3 tests/integration/trace_test.py --build build [--only NAME]
"""
import json
import os
import sqlite3
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as itrun  # noqa: E402
from run import Mock, copy_example, eddy, example_script, read_jsonl, write  # noqa: E402

LONG_KEY = "Клиент-東京都渋谷区-🦊🎉-длинный-ключ"

# support: the example's agent (model default, tool lookup_order); triage: model small, no
# tools. The API key is in a variable that only the run sets.
JOB = """job: tracejob
key: customer_id
source: { jsonl: events.jsonl }
sink: { jsonl: out.jsonl }
models:
  default: { base_url: '%(url)s', model: mock-big, api_key: '${EDDY_T_TRACE_KEY}',
             retry: { attempts: 1 } }
  small: { base_url: '%(url)s', model: mock-small, api_key: '${EDDY_T_TRACE_KEY}',
           retry: { attempts: 1 } }
agents:
  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
  triage:
    model: small
    prompt: { user: "triage: {{event.text}}" }
"""

EVENTS = [
    ("e0", "K1", "where is order A1001"),
    ("e1", "K2", "do you ship to France?"),
    ("e2", "K1", "boom goes the server"),
    ("e3", LONG_KEY, "what about a return"),
    ("e4", "K2", "hello there"),
]

STATE = {}


def setup():
    """Run the job once (for the first test that asks); STATE gets the job file, the store
    and its rows."""
    if STATE:
        return
    tmp = STATE["tmp"] = itrun.tempfile.mkdtemp(prefix="eddy-trace-job-")
    d = copy_example(tmp)
    script = example_script()
    # a 400 is not retried: the run fails, for both agents
    script["rules"].insert(0, {"when": {"last_user_contains": "boom"},
                               "fault": {"status": 400, "message": "mock says no"}})
    with Mock(tmp, script) as mock:
        write(os.path.join(d, "trace.yaml"), JOB % {"url": mock.base_url})
        write(os.path.join(d, "events.jsonl"), "".join(
            json.dumps({"id": i, "customer_id": k, "text": t}) + "\n" for i, k, t in EVENTS))
        p = eddy("--quiet", "run", os.path.join(d, "trace.yaml"),
                 env={"EDDY_T_TRACE_KEY": "sk-test"})
    assert p.returncode in (0, 1), (p.returncode, p.stderr)
    STATE["job"] = os.path.join(d, "trace.yaml")
    STATE["db"] = os.path.join(d, ".eddy", "tracejob", "traces.db")
    db = sqlite3.connect(STATE["db"])
    STATE["rows"] = db.execute("SELECT agent, key, event_id, status, models, tools, output,"
                               " trace_id FROM traces").fetchall()
    assert len(STATE["rows"]) == 2 * len(EVENTS), STATE["rows"]
    assert {r[3] for r in STATE["rows"] if r[2] == "e2"} == {"error"}, STATE["rows"]
    assert {r[3] for r in STATE["rows"] if r[2] != "e2"} == {"ok"}, STATE["rows"]


def tlist(*args, check=0):
    """`eddy trace list JOB --json ARGS` (the API key variable unset) as a list of rows."""
    p = eddy("trace", "list", STATE["job"], "--json", "--limit", "100", *args, check=check)
    return json.loads(p.stdout)


def want(pred):
    """(agent, event) of the runs PRED selects, from the store itself."""
    return sorted((r[0], r[2]) for r in STATE["rows"] if pred(r))


def got(rows):
    return sorted((r["agent"], r["event_id"]) for r in rows)


# -- tests ----------------------------------------------------------------------

def test_each_filter_and_combinations(tmp):
    """Each filter selects exactly the runs the store holds for it; several combine with
    AND; the JSON rows carry the run's row."""
    setup()
    rows = tlist()
    assert got(rows) == want(lambda r: True)
    r0 = [r for r in rows if r["event_id"] == "e0" and r["agent"] == "support"][0]
    assert r0["tools"] == ["lookup_order"] and r0["models"] == ["default"], r0
    assert r0["status"] == "ok" and r0["error"] is None and r0["tool_calls"] == 1, r0
    assert r0["input_tokens"] > 0 and r0["end_ns"] >= r0["start_ns"], r0
    starts = [r["start_ns"] for r in rows]
    assert starts == sorted(starts, reverse=True), "newest first"
    cases = [
        (["--agent", "triage"], lambda r: r[0] == "triage"),
        (["--key", "K2"], lambda r: r[1] == "K2"),
        (["--key", LONG_KEY], lambda r: r[1] == LONG_KEY),
        (["--event", "e1"], lambda r: r[2] == "e1"),
        (["--status", "error"], lambda r: r[3] == "error"),
        (["--status", "ok"], lambda r: r[3] == "ok"),
        (["--model", "small"], lambda r: r[0] == "triage"),
        (["--tool", "lookup_order"], lambda r: "lookup_order" in r[5].split(",")),
        (["--agent", "support", "--status", "error"], lambda r: r[0] == "support" and r[3] == "error"),
        (["--key", "K1", "--model", "default", "--status", "ok"],
         lambda r: r[1] == "K1" and r[4] == "default" and r[3] == "ok"),
        (["--agent", "triage", "--tool", "lookup_order"], lambda r: False),
        (["--since", "1h"], lambda r: True),
        (["--until", "1h"], lambda r: False),
        (["--since", "2000-01-01"], lambda r: True),
        (["--since", time.strftime("%Y-%m-%d %H:%M", time.localtime(time.time() + 120))],
         lambda r: False),
        (["--until", time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() + 120))],
         lambda r: True),
        (["--agent", "nobody"], lambda r: False),
    ]
    for args, pred in cases:
        assert got(tlist(*args)) == want(pred), (args, got(tlist(*args)), want(pred))
    assert want(lambda r: r[0] == "support" and r[3] == "error") == [("support", "e2")]
    assert len(tlist("--limit", "3")) == 3


def test_search(tmp):
    """--search finds the runs whose input or output hold every word; text with FTS5
    operators and quotes is searched as words, never an error."""
    setup()
    canada = want(lambda r: "Canada" in r[6])
    assert canada and len(canada) < len(STATE["rows"]), canada
    assert got(tlist("--search", "canada")) == canada
    assert got(tlist("--search", "CANADA europe")) == canada
    assert got(tlist("--search", "canada", "--agent", "support")) == \
        [c for c in canada if c[0] == "support"]
    assert got(tlist("--search", "canada nowhere-else")) == []
    assert got(tlist("--search", "boom")) == want(lambda r: r[2] == "e2")  # in the input
    for text in ('"AND OR NEAR( *', 'canada"', '"', "*", "NOT canada", "canada OR boom",
                 "input:canada", "^canada", "NEAR(canada boom)", "(", "{a b}:x"):
        p = eddy("trace", "list", STATE["job"], "--search", text, check=None)
        assert p.returncode == 0 and "error" not in p.stderr.lower(), (text, p.stderr)
        assert p.stdout.startswith("started "), (text, p.stdout)
    assert got(tlist("--search", "NOT canada")) == []  # NOT is a word here, not an operator
    assert got(tlist("--search", 'canada"')) == canada
    assert got(tlist("--search", "canada OR boom")) == []  # OR too: all three words
    assert got(tlist("--search", '"AND OR NEAR( *')) == []


def test_show_by_event(tmp):
    """show --event finds the newest run of an event and says how many it has; an
    unknown event is an error that names it."""
    setup()
    ids = [r for r in STATE["rows"] if r[2] == "e1"]
    newest = tlist("--event", "e1")[0]
    p = eddy("trace", "show", "--event", "e1", STATE["job"], check=0)
    assert "event e1 has 2 runs; the newest:" in p.stdout, p.stdout
    assert "trace " + newest["trace_id"] in p.stdout and "event=e1" in p.stdout, p.stdout
    p = eddy("trace", "show", "--event", "e1", STATE["job"], "--json", check=0)
    t = json.loads(p.stdout)
    assert t["trace_id"] == newest["trace_id"] and t["event_runs"] == len(ids) == 2, t
    assert t["spans"] and t["event_id"] == "e1", t
    p = eddy("trace", "show", "--event", "nope", STATE["job"], check=1)
    assert "no run of event 'nope'" in p.stderr, p.stderr
    # by the store itself, as by the job
    p = eddy("trace", "show", "--event", "e3", STATE["db"], check=0)
    assert "event=e3" in p.stdout, p.stdout


def test_bad_values_are_refused(tmp):
    """A bad option value exits 2 with a message naming the option and what it takes."""
    setup()
    cases = [
        (["--status", "bogus"], "--status wants ok or error, not 'bogus'"),
        (["--limit", "0"], "--limit wants a number from 1 to"),
        (["--limit", "-3"], "--limit wants a number from 1 to"),
        (["--limit", "abc"], "not 'abc'"),
        (["--since", "yesterday"], "--since wants a time ago (30m, 2h, 7d) or a local date"),
        (["--until", "2026-13-01"], "--until wants a time ago"),
        (["--until", "2026-02-30"], "not '2026-02-30'"),
        (["--since", "2026-12-01 25:00"], "--since wants"),
        (["--since", "2026-12-01 14:30:5"], "--since wants"),
        (["--since", "-5m"], "--since wants"),
        (["--agent", ""], "--agent wants an agent's name"),
        (["--search", ""], "--search wants words to find"),
        (["--bogus"], "unrecognized option"),
    ]
    for args, msg in cases:
        p = eddy("trace", "list", STATE["job"], *args, check=2)
        assert msg in p.stderr, (args, p.stderr)
        assert p.stdout == "", (args, p.stdout)
    p = eddy("trace", "list", STATE["job"], "--tool", "a,b", check=1)
    assert "no ',' in it" in p.stderr, p.stderr
    p = eddy("trace", "show", "--status", "ok", "--event", "e1", STATE["job"], check=2)
    assert "--status is an option of `eddy trace list`" in p.stderr, p.stderr


def test_job_without_its_environment(tmp):
    """The job uses ${EDDY_T_TRACE_KEY}, unset here: `eddy trace` and `eddy state` read
    its paths anyway; `eddy check` and `eddy run` still want the variable."""
    setup()
    assert "EDDY_T_TRACE_KEY" not in os.environ
    p = eddy("trace", "list", STATE["job"], check=0)
    assert "support" in p.stdout and "triage" in p.stdout, p.stdout
    p = eddy("state", "keys", STATE["job"], check=0)
    assert "K1" in p.stdout and "K2" in p.stdout, p.stdout
    p = eddy("check", STATE["job"], check=2)
    assert "EDDY_T_TRACE_KEY is not set" in p.stderr, p.stderr
    p = eddy("run", STATE["job"], check=2)
    assert "EDDY_T_TRACE_KEY is not set" in p.stderr, p.stderr
    # a variable unset where a path is read is still a problem, named with its place
    bad = os.path.join(os.path.dirname(STATE["job"]), "badpath.yaml")
    write(bad, "job: x\ntrace: { path: '${EDDY_T_TRACE_DIR}/t.db' }\n")
    p = eddy("trace", "list", bad, check=2)
    assert "badpath.yaml:2:16: environment variable EDDY_T_TRACE_DIR is not set" in p.stderr, \
        p.stderr


def test_columns_cut_by_characters(tmp):
    """A long key of Cyrillic, CJK and emoji is cut at a character with '…' and padded by
    characters: every line is strict UTF-8 and the columns after it line up."""
    setup()
    p = eddy("trace", "list", STATE["job"], "--key", LONG_KEY, check=None)
    assert p.returncode == 0, p.stderr
    raw = itrun.subprocess.run([os.path.join(itrun.ARGS.build, "eddy"), "trace", "list",
                                STATE["job"]], capture_output=True).stdout
    text = raw.decode("utf-8", errors="strict")
    lines = [l for l in text.splitlines() if LONG_KEY[:5] in l]
    assert len(lines) == 2, text
    head = text.splitlines()[0]
    for l in lines:
        cut = LONG_KEY[:11] + "…"
        assert cut in l and LONG_KEY[:12] not in l, l
        # the state column starts where the header's does, counted in characters
        assert l.index("  ok ") == head.index("  state"), (l, head)
    for l in text.splitlines()[1:]:
        if not l.startswith("    error:"):
            assert len(l) == len(head), (l, head)


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    os.environ.pop("EDDY_T_TRACE_KEY", None)  # only the run is given it
    rc = itrun.suite_main(TESTS, "eddy-trace-", 36, "trace")
    if STATE and rc == 0:
        itrun.shutil.rmtree(STATE["tmp"], ignore_errors=True)
    elif STATE:
        print("the job's files are kept in %s" % STATE["tmp"])
    return rc


if __name__ == "__main__":
    sys.exit(main())
