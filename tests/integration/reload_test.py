#!/usr/bin/env python3
"""Live reload: SIGHUP and `eddy run --watch` load the job's tools and prompts again while
the job runs (stdin kept open, the scripted mock model).

  * a tool changed under a running job takes effect for runs started after the reload; a
    run in progress at the reload (its tool sleeping) finishes with the version it began
    with;
  * a prompt changed: new runs send the new system prompt;
  * a broken edit (a Lua syntax error) keeps the running version, and the log names the
    place (file:line:col); fixing it takes effect;
  * --watch reloads without a signal when a file changes;
  * a version that adds an agent is refused with a message saying a restart is needed;
  * ten reloads under load lose and fail no event;
  * config: and secrets: a tool's ctx.config value taken from the environment never
    appears in a trace or an error, although the tool's error message contained it.

    python3 tests/integration/reload_test.py --build build [--only NAME]
"""
import os
import re
import signal
import sqlite3
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Mock, write, read_jsonl  # noqa: E402

SCRIPT = {"rules": [
    {"when": {"last_role": "tool"}, "reply": "got ${tool}"},
    {"when": {"last_user_contains": "slow"},
     "tool_calls": [{"name": "ver", "arguments": {"ms": 1500}}]},
    {"when": {"last_user_contains": "go"},
     "tool_calls": [{"name": "ver", "arguments": {"ms": 0}}]},
    {"reply": "plain"}]}

TOOL = """return eddy.tool {
  name = "ver", description = "says its version",
  params = { ms = { type = "integer", required = true } },
  run = function(args, ctx)
    if args.ms > 0 then eddy.sleep(args.ms) end
    if ctx.config.fail == "print" then
      print("printed", ctx.config.token)
      return { version = 0, token_len = 0 }
    elseif ctx.config.fail == "long" then
      error(string.rep("x", 995) .. ctx.config.token, 0)
    elseif ctx.config.fail then
      eddy.log("token is " .. ctx.config.token)
      error("cannot reach " .. ctx.config.token)
    end
    return { version = %d, token_len = #(ctx.config.token or "") }
  end }
"""

JOB = """job: r
key: k
models:
  default: { base_url: %s, api_key: sk-x, model: m, timeout: 5s }
workers: 2
agents:
  a:
    prompt: { system_file: prompts/sys.md, user: "{{event.text}}" }
    tools:
      - lua: tools/ver.lua
        config: { token: "${EDDY_RELOAD_TOKEN}", fail: %s }
        timeout: 10s
%s"""

SECRET = "tok-reload-77aa55"


class Job(run.StdinRun):
    """The suite's job (tools/ver.lua v1, prompts/sys.md) under `eddy run` on stdin."""

    def __init__(self, tmp, mock, extra_args=(), fail="false"):
        self.d = os.path.join(tmp, "job")
        write(os.path.join(self.d, "tools", "ver.lua"), TOOL % 1)
        write(os.path.join(self.d, "prompts", "sys.md"), "You are version one.")
        self.job = os.path.join(self.d, "job.yaml")
        self.base = mock.base_url
        self.fail = fail
        self.write_job("")
        super().__init__(self.job, os.path.join(tmp, "out.jsonl"), extra_args,
                         env=dict(os.environ, EDDY_RELOAD_TOKEN=SECRET),
                         ready=r"job 'r': reading stdin")

    def write_job(self, extra):
        write(self.job, JOB % (self.base, self.fail, extra))

    def wait_outputs(self, n, timeout=20):
        return self.outputs(n, timeout)


def version_of(out):
    m = re.search(r'"version":\s*(\d+)', out["output"])
    assert m, out
    return int(m.group(1))


CURRENT = r"is current on every worker"


def test_sighup_reloads_tools_and_prompts(tmp):
    """v1 for a run in progress, v2 for runs after the reload; the prompt too; the mock's
    log shows the system prompts sent."""
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock)
        j.send({"k": "a", "id": "e1", "text": "go"})
        outs = j.wait_outputs(1)
        assert version_of(outs["e1"]) == 1, outs
        j.send({"k": "b", "id": "e2", "text": "slow"})  # its tool sleeps 1.5 s
        time.sleep(0.5)
        write(os.path.join(j.d, "tools", "ver.lua"), TOOL % 2)
        write(os.path.join(j.d, "prompts", "sys.md"), "You are version two.")
        j.p.send_signal(signal.SIGHUP)
        j.wait_log(CURRENT)
        j.send({"k": "c", "id": "e3", "text": "go"})
        outs = j.wait_outputs(3)
        assert j.finish() == 0, j.log()
    assert version_of(outs["e2"]) == 1, outs   # began before the reload
    assert version_of(outs["e3"]) == 2, outs
    systems = [m["content"] for r in read_jsonl(mock.log) for m in r["body"]["messages"]
               if m["role"] == "system"]
    assert "You are version one." in systems and "You are version two." in systems, systems
    assert "SIGHUP: loading" in j.log(), j.log()


def test_broken_edit_keeps_the_running_version(tmp):
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock)
        write(os.path.join(j.d, "tools", "ver.lua"), "return eddy.tool {\n  name = 'ver',\n"
              "  run = function(args ctx) end }\n")
        j.p.send_signal(signal.SIGHUP)
        j.wait_log(r"keeping the running one")
        log = j.log()
        assert re.search(r"tools/ver\.lua:3:\d+: ", log), log
        j.send({"k": "a", "id": "e1", "text": "go"})
        outs = j.wait_outputs(1)
        assert version_of(outs["e1"]) == 1, outs
        write(os.path.join(j.d, "tools", "ver.lua"), TOOL % 3)
        j.p.send_signal(signal.SIGHUP)
        j.wait_log(CURRENT)
        j.send({"k": "a", "id": "e2", "text": "go"})
        outs = j.wait_outputs(2)
        assert j.finish() == 0, j.log()
    assert version_of(outs["e2"]) == 3, outs


def test_watch_reloads_on_change(tmp):
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock, extra_args=["--watch"])
        j.send({"k": "a", "id": "e1", "text": "go"})
        assert version_of(j.wait_outputs(1)["e1"]) == 1
        time.sleep(1.1)  # a new mtime second for file systems that keep seconds
        write(os.path.join(j.d, "tools", "ver.lua"), TOOL % 4)
        j.wait_log(CURRENT, timeout=10)
        assert "a file of the job changed" in j.log(), j.log()
        j.send({"k": "a", "id": "e2", "text": "go"})
        outs = j.wait_outputs(2)
        assert j.finish() == 0, j.log()
    assert version_of(outs["e2"]) == 4, outs


def test_new_agent_is_refused(tmp):
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock)
        j.write_job("  b:\n    prompt: { user: hi }\n")
        j.p.send_signal(signal.SIGHUP)
        j.wait_log(r"agents are not reloaded; restart eddy")
        j.send({"k": "a", "id": "e1", "text": "go"})
        assert version_of(j.wait_outputs(1)["e1"]) == 1
        assert j.finish() == 0, j.log()


def test_config_secret_is_redacted(tmp):
    """The tool raises an error holding ctx.config.token (from the environment): the
    model, the trace store and the outputs see [REDACTED], never the token."""
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock, fail="true")
        j.send({"k": "a", "id": "e1", "text": "go"})
        outs = j.wait_outputs(1)
        assert j.finish() == 0, j.log()
    assert "[REDACTED]" in outs["e1"]["output"], outs
    db = os.path.join(j.d, ".eddy", "r", "traces.db")
    con = sqlite3.connect(db)
    rows = con.execute("SELECT attributes || coalesce(error, '') FROM spans").fetchall()
    con.close()
    blob = "".join(r[0] for r in rows)
    assert "cannot reach [REDACTED]" in blob, blob[:2000]
    assert "token is [REDACTED]" in j.log(), j.log()
    for where, text in (("traces", blob), ("outputs", open(j.out).read()),
                        ("mock requests", open(mock.log).read()), ("log", j.log())):
        assert SECRET not in text, where


def test_config_secret_not_printed(tmp):
    """print() from a tool goes to eddy.log as eddy.log() does: without the secret."""
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock, fail='"print"')
        j.send({"k": "a", "id": "e1", "text": "go"})
        j.wait_outputs(1)
        assert j.finish() == 0, j.log()
    assert "printed" in j.log(), j.log()
    assert "userdata: 0x" not in j.log(), j.log()  # print shows its arguments only
    assert SECRET not in j.log(), j.log()


def test_config_secret_not_cut(tmp):
    """An error message cut at its bound in the middle of the secret keeps no prefix of it."""
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock, fail='"long"')
        j.send({"k": "a", "id": "e1", "text": "go"})
        outs = j.wait_outputs(1)
        assert j.finish() == 0, j.log()
    db = os.path.join(j.d, ".eddy", "r", "traces.db")
    con = sqlite3.connect(db)
    rows = con.execute("SELECT attributes || coalesce(error, '') FROM spans").fetchall()
    con.close()
    blob = "".join(r[0] for r in rows)
    for where, text in (("traces", blob), ("outputs", open(j.out).read()),
                        ("mock requests", open(mock.log).read()), ("log", j.log())):
        assert SECRET[:8] not in text, where


def test_reload_with_a_new_secret(tmp):
    """A version whose tool config takes a value from another variable of the environment is
    refused (the trace store redacts only the values it was opened with): it never keeps
    that value."""
    other = "tok-other-99bb11"
    with Mock(tmp, SCRIPT) as mock:
        os.environ["EDDY_RELOAD_OTHER"] = other
        try:
            j = Job(tmp, mock)
        finally:
            del os.environ["EDDY_RELOAD_OTHER"]
        write(os.path.join(j.d, "tools", "ver.lua"),
              (TOOL % 2).replace("token_len = #(ctx.config.token or \"\")",
                                 "echo = ctx.config.other"))
        text = open(j.job).read().replace('config: { token: "${EDDY_RELOAD_TOKEN}"',
                                          'config: { other: "${EDDY_RELOAD_OTHER}"')
        write(j.job, text)
        j.p.send_signal(signal.SIGHUP)
        j.wait_log(CURRENT + "|takes a value from the environment")
        j.send({"k": "a", "id": "e1", "text": "go"})
        outs = j.wait_outputs(1)
        assert j.finish() == 0, j.log()
    assert "restart eddy to use it" in j.log() and version_of(outs["e1"]) == 1, j.log()
    con = sqlite3.connect(os.path.join(j.d, ".eddy", "r", "traces.db"))
    rows = con.execute("SELECT attributes || coalesce(error, '') FROM spans").fetchall()
    con.close()
    blob = "".join(r[0] for r in rows)
    assert other not in blob, blob[:3000]


def test_reloads_under_load(tmp):
    """Ten reloads, each with a new tool version, while 200 runs come and go: every event
    is answered (none lost, none failed), each by one version that existed, and eddy
    exits 0."""
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock)
        evs = [{"k": "k%d" % (i % 37), "id": "e%d" % i, "text": "slow" if i % 5 == 0 else "go"}
               for i in range(200)]
        for v in range(10):
            j.send(*evs[v * 20:(v + 1) * 20])
            write(os.path.join(j.d, "tools", "ver.lua"), TOOL % (10 + v))
            j.p.send_signal(signal.SIGHUP)
            time.sleep(0.15)
        outs = j.wait_outputs(200, timeout=60)
        assert j.finish() == 0, j.log()
    versions = {version_of(o) for o in outs.values()}
    assert versions <= {1} | set(range(10, 20)), versions
    assert len(versions) >= 3, versions
    assert not os.path.exists(os.path.join(j.d, ".eddy", "r", "dead-letter.jsonl")) or \
        not open(os.path.join(j.d, ".eddy", "r", "dead-letter.jsonl")).read().strip()


def test_sighup_storm_while_the_job_ends(tmp):
    """SIGHUP sent every millisecond while eddy ends (its input closed): it still exits 0,
    never killed by the signal (libuv puts the default action back when its handle closes;
    eddy keeps SIGHUP blocked over that moment)."""
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock)
        j.send(*[{"k": "k%d" % i, "id": "e%d" % i, "text": "go"} for i in range(30)])
        j.wait_outputs(30)
        stop = threading.Event()

        def storm():
            while not stop.is_set() and j.p.poll() is None:
                try:
                    j.p.send_signal(signal.SIGHUP)
                except ProcessLookupError:
                    break
                time.sleep(0.001)
        t = threading.Thread(target=storm, daemon=True)
        t.start()
        time.sleep(0.2)
        rc = j.finish()
        stop.set()
        t.join(5)
    assert rc == 0, (rc, j.log()[-3000:])


def test_broken_prompt_keeps_the_running_version(tmp):
    """A prompt file that no longer parses (an unclosed {{ ... }}): refused with the place
    of the problem, the running prompt stays; fixed, it is taken."""
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock)
        write(os.path.join(j.d, "prompts", "sys.md"), "line one\nYou are {{ event.text")
        j.p.send_signal(signal.SIGHUP)
        j.wait_log(r"keeping the running one")
        assert re.search(r"sys\.md:2:\d+", j.log()), j.log()
        j.send({"k": "a", "id": "e1", "text": "plain"})
        j.wait_outputs(1)
        write(os.path.join(j.d, "prompts", "sys.md"), "You are version three.")
        j.p.send_signal(signal.SIGHUP)
        j.wait_log(CURRENT)
        j.send({"k": "a", "id": "e2", "text": "plain"})
        j.wait_outputs(2)
        assert j.finish() == 0, j.log()
    systems = [m["content"] for r in read_jsonl(mock.log) for m in r["body"]["messages"]
               if m["role"] == "system"]
    assert systems == ["You are version one.", "You are version three."], systems


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return run.suite_main(TESTS, "eddy-reload-", 40, "reload")


if __name__ == "__main__":
    sys.exit(main())
