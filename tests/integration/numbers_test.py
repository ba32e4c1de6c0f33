#!/usr/bin/env python3
"""Regression test: numbers keep the text they were written with, end to end.

An event carries 71.1, 1e300, 2**53+1, 1.0 and -0.0. It goes through a job whose
prompt renders them, a model (the mock) that passes them to a tool through
captures from the prompt, and a Lua tool that echoes its arguments and stores
them in the key's memory. Every place the numbers become text again must show
the shortest form that reads back as the same double (71.1, not
71.099999999999994): the prompt and tool result the mock received, the request
body's own numbers (temperature 0.2), the sink output, the memory and trace
SQLite files and `eddy trace show`.

Python's json module reads 71.099999999999994 back as 71.1, so the checks look
at raw text, never at parsed values. Uses the runner and helpers of run.py.

    python3 tests/integration/numbers_test.py --build build [--only NAME]
"""
import os
import re
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Mock, eddy, read_jsonl, write  # noqa: E402

EVENT = ('{"id":"r1","customer_id":"K1","temp":71.1,"big":1e300,"n":9007199254740993,'
         '"one":1.0,"negz":-0.0,"tiny":5e-324,"third":0.3333333333333333}\n')
# What the prompt must render for the event's fields, in the job's user template.
PROMPT = ("temp=71.1 big=1e+300 n=9007199254740993 one=1.0 negz=-0.0 tiny=5e-324 "
          "third=0.3333333333333333 end")

ECHO_TOOL = """return eddy.tool {
  name = "echo", description = "returns its arguments and remembers them",
  params = { temp = "number", big = "number", n = "integer", tiny = "number" },
  run = function(args, ctx)
    ctx.memory.reading = { temp = args.temp, big = args.big, n = args.n, tiny = args.tiny }
    return { temp = args.temp, big = args.big, n = args.n, tiny = args.tiny }
  end,
}
"""

SCRIPT = {"rules": [
    {"when": {"last_role": "tool"},
     "reply": "temp ${tool.temp} big ${tool.big} n ${tool.n} tiny ${tool.tiny}"},
    {"when": {"last_role": "user", "tool_offered": "echo",
              "last_user_regex": "temp=([^ ]+) big=([^ ]+) n=([^ ]+) .* tiny=([^ ]+) "},
     "tool_calls": [{"name": "echo",
                     "raw_arguments": '{"temp": $1, "big": $2, "n": $3, "tiny": $4}'}]},
]}

JOB = """job: numbers
key: customer_id
models:
  default:
    base_url: %s
    api_key: sk-test
    model: mock-model
    temperature: 0.2
    retry: { attempts: 2, backoff: 20ms..100ms }
    timeout: 5s
agents:
  support:
    prompt:
      system: "You help {{key}}."
      user: "temp={{event.temp}} big={{event.big}} n={{event.n}} one={{event.one}} negz={{event.negz}} tiny={{event.tiny}} third={{event.third}} end"
    tools: [ tools/echo.lua ]
    budget: { turns: 4 }
"""

FIELDS = (("temp", "71.1"), ("big", "1e+300"), ("n", "9007199254740993"), ("tiny", "5e-324"))
WRONG = ("71.09999", "71.10000", "1.0000000000000001e", "9007199254740992", "4.94065645841",
         "0.20000000000000001")


def has_number(text, num, key=None):
    """TEXT holds NUM as a whole number (71.1 is not found in 71.10000000000001),
    as the value of "KEY": when KEY is given."""
    pre = '"%s":' % re.escape(key) if key else r'(?<![0-9.eE+-])'
    return re.search(pre + re.escape(num) + r'(?![0-9.eE+-])', text) is not None


def assert_faithful(where, text, want=("71.1",)):
    for w in want:
        assert has_number(text, w), "%s: %r missing in:\n%s" % (where, w, text[-3000:])
    for bad in WRONG:
        assert bad not in text, "%s: %r found in:\n%s" % (where, bad, text[-3000:])


def test_numbers_round_trip(tmp):
    """71.1 stays 71.1 (and 1e+300, 2**53+1, 5e-324, 0.2) everywhere it becomes text."""
    d = os.path.join(tmp, "job")
    write(os.path.join(d, "tools", "echo.lua"), ECHO_TOOL)
    write(os.path.join(d, "in.jsonl"), EVENT)
    out = os.path.join(tmp, "out.jsonl")
    with Mock(tmp, SCRIPT) as mock:
        write(os.path.join(d, "job.yaml"), JOB % mock.base_url)
        eddy("run", os.path.join(d, "job.yaml"), "--input", os.path.join(d, "in.jsonl"),
             "--output", out, "--dead-letter", os.path.join(tmp, "dead.jsonl"), check=0)
        reqs = mock.requests()
        raw_log = open(mock.log).read()
    assert not read_jsonl(os.path.join(tmp, "dead.jsonl")), open(os.path.join(tmp, "dead.jsonl")).read()
    assert len(reqs) == 2, reqs

    # the prompt as the mock received it
    user = [m for m in reqs[0]["messages"] if m["role"] == "user"][-1]["content"]
    assert user == PROMPT, user

    # the tool's result message, as eddy sent it to the model
    tool_msgs = [m for m in reqs[1]["messages"] if m["role"] == "tool"]
    assert len(tool_msgs) == 1, reqs[1]["messages"]
    result = tool_msgs[0]["content"]
    for k, num in FIELDS:
        assert has_number(result, num, k), (k, num, result)
    assert_faithful("tool result", result)

    # numbers of the request bodies themselves (the mock logs them as it parsed them)
    assert has_number(raw_log, "0.2", "temperature"), raw_log[:2000]
    assert_faithful("mock log", raw_log)

    # the sink output (the model's answer is built from the tool result it got)
    outs = read_jsonl(out)
    assert len(outs) == 1, outs
    assert outs[0]["output"] == "temp 71.1 big 1e+300 n 9007199254740993 tiny 5e-324", outs[0]
    assert_faithful("sink", open(out).read())

    # memory: the key's document and the stored conversation
    db = sqlite3.connect(os.path.join(d, ".eddy", "numbers", "state.db"))
    doc = db.execute("SELECT doc FROM key_memory WHERE key = 'K1'").fetchone()[0]
    for k, num in FIELDS:
        assert has_number(doc, num, k), (k, num, doc)
    assert_faithful("memory doc", doc)
    history = "\n".join(m for (m,) in db.execute("SELECT messages FROM history"))
    assert PROMPT in history, history
    assert_faithful("memory history", history)
    db.close()

    # traces: span attributes and summaries, and the CLI's view of them
    db = sqlite3.connect(os.path.join(d, ".eddy", "numbers", "traces.db"))
    spans = "\n".join(a for (a,) in db.execute("SELECT attributes FROM spans"))
    assert_faithful("trace spans", spans)
    summaries = "\n".join(s or "" for (s,) in db.execute("SELECT summary FROM traces"))
    assert_faithful("trace summaries", spans + summaries)
    tid = db.execute("SELECT trace_id FROM traces").fetchone()[0]
    db.close()
    p = eddy("trace", "show", tid, os.path.join(d, "job.yaml"), check=0)
    assert_faithful("eddy trace show", p.stdout)


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return run.suite_main(TESTS, "eddy-num-", 24, "numbers")


if __name__ == "__main__":
    sys.exit(main())
