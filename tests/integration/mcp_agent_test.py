#!/usr/bin/env python3
"""Agents that use MCP servers' tools (`mcp: SERVER`, `mcp: SERVER/TOOL`), with the real
`eddy run`, the scripted mock model, and real servers from package registries: the `mcp`
package's server (tests/fixtures/mcp/server.py) and @modelcontextprotocol/server-everything,
both over stdio, and the former over streamable HTTP (tests/tools/mcp.sh installs them).

  * the model is offered the servers' tools (schemas from the servers), calls them, and the
    answers come back; an isError result is a tool error the model sees; each call is an
    `execute_tool NAME` span with eddy.mcp.server;
  * killing the stdio server during a call gives that call a tool error, and the next run
    is served by the restarted server (another pid);
  * an HTTP server that is down when the job starts: the job runs; once the server is up,
    the next runs see and call its tools;
  * a reload with a changed mcp: section starts the new version's servers;
  * `eddy check` names an `mcp:` entry that points at no server, with its file:line:col.

    python3 tests/integration/mcp_agent_test.py --build build [--only NAME]
"""
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Mock, write, read_jsonl  # noqa: E402

# the servers' paths and a free port, as the MCP client's own suite has them
from mcp_test import EVERYTHING, FIXTURE, PY, ROOT, free_port  # noqa: E402

SCRIPT = {"rules": [
    {"when": {"last_role": "tool"}, "reply": "got ${tool}"},
    {"when": {"last_user_contains": "add"},
     "tool_calls": [{"name": "add", "arguments": {"a": 2, "b": 40}}]},
    {"when": {"last_user_contains": "echo"},
     "tool_calls": [{"name": "echo", "arguments": {"text": "hi there"}}]},
    {"when": {"last_user_contains": "sum"},
     "tool_calls": [{"name": "get-sum", "arguments": {"a": 2, "b": 3}}]},
    {"when": {"last_user_contains": "fail"},
     "tool_calls": [{"name": "fail", "arguments": {"why": "nope"}}]},
    {"when": {"last_user_contains": "pid"}, "tool_calls": [{"name": "pid", "arguments": {}}]},
    {"when": {"last_user_contains": "slow"},
     "tool_calls": [{"name": "slow", "arguments": {"seconds": 30}}]},
    {"reply": "no tool"}]}

JOB = """job: m
key: k
models:
  default: { base_url: %s, api_key: sk-x, model: m, timeout: 5s }
mcp:
%s
agents:
  a:
    prompt: { system: "You use tools.", user: "{{event.text}}" }
    tools: [ %s ]
    budget: { wall: 60s }
"""


class Job(run.StdinRun):
    """A job with MCP SERVERS and an agent with TOOLS under `eddy run` on stdin."""

    def __init__(self, tmp, mock, servers, tools):
        self.d = os.path.join(tmp, "job")
        self.job = os.path.join(self.d, "job.yaml")
        write(self.job, JOB % (mock.base_url, servers, tools))
        super().__init__(self.job, os.path.join(tmp, "out.jsonl"),
                         ready=r"job 'm': reading stdin", ready_timeout=60)


def test_agent_calls_mcp_tools(tmp):
    servers = ('  py: { command: [%s, %s], env: { PYTHONUNBUFFERED: "1" } }\n'
               '  every: { command: [node, %s, stdio] }' % (PY, FIXTURE, EVERYTHING))
    with Mock(tmp, SCRIPT) as mock:
        # every/echo has the name of py's echo: it is left out (with a warning)
        j = Job(tmp, mock, servers, "{ mcp: py }, { mcp: every/get-sum }, { mcp: every/echo }")
        j.send({"k": "a", "id": "e1", "text": "add please"},
               {"k": "b", "id": "e2", "text": "echo please"},
               {"k": "c", "id": "e3", "text": "fail please"},
               {"k": "d", "id": "e4", "text": "sum please"})
        outs = j.outputs(4)
        assert j.finish() == 0, j.log()
    assert outs["e1"]["output"] == 'got {"result":42}', outs["e1"]
    assert outs["e2"]["output"] == 'got {"result":"hi there"}', outs["e2"]
    assert "5" in outs["e4"]["output"] and "error" not in outs["e4"]["output"], outs["e4"]
    assert re.search(r"tool 'echo' of MCP server 'every' is left out: the agent has a tool "
                     r"named 'echo' already", j.log()), j.log()
    assert outs["e3"]["output"].startswith("got error: tool 'fail' failed: mcp tool 'py/fail':"), \
        outs["e3"]
    # what the model was offered: the py server's tools and every's echo only
    offered = set()
    for r in read_jsonl(mock.log):
        for t in r["body"].get("tools", []):
            offered.add(t["function"]["name"])
            if t["function"]["name"] == "add":
                props = t["function"]["parameters"]["properties"]
                assert set(props) == {"a", "b"}, t
    assert {"add", "echo", "fail", "slow", "pid", "grow", "get-sum"} <= offered, offered
    assert "get-env" not in offered, offered
    con = sqlite3.connect(os.path.join(j.d, ".eddy", "m", "traces.db"))
    spans = [json.loads(a) for (a,) in con.execute(
        "SELECT attributes FROM spans WHERE name LIKE 'execute_tool %'")]
    con.close()
    servers_seen = {(s.get("eddy.mcp.server"), s.get("eddy.mcp.tool")) for s in spans}
    assert {("py", "add"), ("py", "echo"), ("every", "get-sum"), ("py", "fail")} <= \
        servers_seen, servers_seen


def test_server_tool_named_like_a_later_lua_tool(tmp):
    """A server that lists a tool named like a Lua tool listed after its mcp: entry does not
    stop the job: the job's own tool keeps the name, the server's is left out (warned)."""
    servers = '  py: { command: [%s, %s], env: { PYTHONUNBUFFERED: "1" } }' % (PY, FIXTURE)
    with Mock(tmp, SCRIPT) as mock:
        write(os.path.join(tmp, "job", "tools", "echo.lua"), """return eddy.tool {
  name = "echo", description = "the job's echo",
  params = { text = { type = "string", required = true } },
  run = function(args) return { mine = args.text } end }
""")
        j = Job(tmp, mock, servers, "{ mcp: py }, tools/echo.lua")
        j.send({"k": "b", "id": "e2", "text": "echo please"})
        outs = j.outputs(1)
        assert j.finish() == 0, j.log()
    assert outs["e2"]["output"] == 'got {"mine":"hi there"}', outs["e2"]
    assert re.search(r"tool 'echo' of MCP server 'py' is left out", j.log()), j.log()


def test_list_change_keeps_the_checked_tool_sources(tmp):
    """The server's list changes while a tool file was edited on disk and not reloaded:
    the workers' new tool lists take the server's new tool, and the Lua tool stays the
    text the running version checked (an edit goes live only with a reload), broken or
    not."""
    servers = '  py: { command: [%s, %s], env: { PYTHONUNBUFFERED: "1" } }' % (PY, FIXTURE)
    script = {"rules": [
        {"when": {"last_role": "tool"}, "reply": "got ${tool}"},
        {"when": {"last_user_contains": "grow"},
         "tool_calls": [{"name": "grow", "arguments": {}}]},
        {"when": {"last_user_contains": "late"},
         "tool_calls": [{"name": "late", "arguments": {"x": 21}}]},
        {"when": {"last_user_contains": "ver"}, "tool_calls": [{"name": "ver", "arguments": {}}]},
        {"reply": "no tool"}]}
    tool = ('return eddy.tool { name = "ver", description = "v", params = {},\n'
            '  run = function() return { v = %d } end }\n')
    for edit in (tool % 2, "return eddy.tool { broken"):
        sub = os.path.join(tmp, "run%d" % len(edit))
        os.makedirs(sub)
        with Mock(sub, script) as mock:
            write(os.path.join(sub, "job", "tools", "ver.lua"), tool % 1)
            j = Job(sub, mock, servers, "{ mcp: py }, tools/ver.lua")
            write(os.path.join(sub, "job", "tools", "ver.lua"), edit)
            j.send({"k": "a", "id": "e1", "text": "grow"})
            j.outputs(1)
            deadline, i = time.time() + 20, 2
            while True:  # until the new list reached the workers
                j.send({"k": "a", "id": "e%d" % i, "text": "late"})
                got = j.outputs(i)["e%d" % i]["output"]
                if "unknown tool" not in got or time.time() > deadline:
                    break
                i += 1
                time.sleep(0.2)
            assert got == 'got {"result":42}', (got, j.log())
            j.send(*[{"k": "a", "id": "v%d" % k, "text": "ver"} for k in range(4)])
            outs = j.outputs(i + 4)
            assert j.finish() == 0, j.log()
        assert all(outs["v%d" % k]["output"] == 'got {"v":1}' for k in range(4)), outs
        assert "not taken" not in j.log(), j.log()


def test_stdio_server_killed_during_a_call(tmp):
    servers = '  py: { command: [%s, %s], env: { PYTHONUNBUFFERED: "1" } }' % (PY, FIXTURE)
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock, servers, "{ mcp: py }")
        j.send({"k": "a", "id": "p1", "text": "pid"})
        pid1 = json.loads(j.outputs(1)["p1"]["output"][len("got "):])["result"]
        j.send({"k": "b", "id": "s1", "text": "slow"})
        time.sleep(1.0)
        t0 = time.time()
        os.kill(pid1, signal.SIGKILL)
        outs = j.outputs(2)
        took = time.time() - t0
        assert "exited during the call" in outs["s1"]["output"], outs["s1"]
        assert took < 5, took
        j.send({"k": "c", "id": "p2", "text": "pid"})
        outs = j.outputs(3, timeout=40)
        assert j.finish() == 0, j.log()
    pid2 = json.loads(outs["p2"]["output"][len("got "):])["result"]
    assert pid2 != pid1, (pid1, pid2)


def test_http_server_up_after_the_job_started(tmp):
    port = free_port()
    servers = '  late: { url: "http://127.0.0.1:%d/mcp", startup_timeout: 1s }' % port
    srv = None
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock, servers, "{ mcp: late }")
        try:
            j.send({"k": "a", "id": "e1", "text": "add"})
            outs = j.outputs(1)
            # no tool yet: the (scripted) model asks for one the agent does not have
            assert outs["e1"]["output"] == "got error: unknown tool 'add'", outs["e1"]
            srv = subprocess.Popen([PY, FIXTURE, "--http", str(port)], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
            deadline, got = time.time() + 60, None
            i = 2
            while time.time() < deadline:
                j.send({"k": "a", "id": "e%d" % i, "text": "add"})
                outs = j.outputs(i)
                got = outs["e%d" % i]["output"]
                if "unknown tool" not in got:
                    break
                i += 1
                time.sleep(0.5)
            assert got == 'got {"result":42}', (got, j.log())
            assert j.finish() == 0, j.log()
        finally:
            if srv:
                srv.terminate()
                srv.wait(10)


def test_reload_takes_a_changed_mcp_section(tmp):
    """SIGHUP after the mcp: section changed (the server gets another env): the runs after
    the reload are served by the new version's server (another process); the agent's tool
    entries are reloaded too (here: only pid is listed after the reload)."""
    servers = '  py: { command: [%s, %s], env: { PYTHONUNBUFFERED: "1" } }' % (PY, FIXTURE)
    with Mock(tmp, SCRIPT) as mock:
        j = Job(tmp, mock, servers, "{ mcp: py }")
        j.send({"k": "a", "id": "p1", "text": "pid"})
        pid1 = json.loads(j.outputs(1)["p1"]["output"][len("got "):])["result"]
        write(j.job, JOB % (mock.base_url, servers.replace('"1" }', '"1", V: "2" }'),
                            "{ mcp: py/pid }"))
        j.p.send_signal(signal.SIGHUP)
        j.wait_log(r"is current on every worker")
        assert "the mcp: section changed" in j.log(), j.log()
        deadline, got = time.time() + 40, None
        i = 2
        while time.time() < deadline:
            j.send({"k": "a", "id": "p%d" % i, "text": "pid"})
            got = j.outputs(i)["p%d" % i]["output"]
            if "unknown tool" not in got:
                break
            i += 1
            time.sleep(0.3)
        j.send({"k": "b", "id": "x1", "text": "add"})
        outs = j.outputs(i + 1)
        assert j.finish() == 0, j.log()
    pid2 = json.loads(got[len("got "):])["result"]
    assert pid2 != pid1, (pid1, pid2)
    assert outs["x1"]["output"] == "got error: unknown tool 'add'", outs["x1"]


def test_check_names_a_missing_server(tmp):
    d = os.path.join(tmp, "job")
    write(os.path.join(d, "job.yaml"), JOB % ("http://127.0.0.1:9/v1",
                                              "  py: { command: [%s, %s] }" % (PY, FIXTURE),
                                              "{ mcp: nosuch }, { mcp: 'py/' }"))
    p = subprocess.run([os.path.join(run.ARGS.build, "eddy"), "check",
                        os.path.join(d, "job.yaml")], capture_output=True, text=True)
    assert p.returncode == 2, p
    assert re.search(r"job\.yaml:10:\d+: no MCP server 'nosuch' in the job's mcp: section",
                     p.stderr), p.stderr
    assert re.search(r"job\.yaml:10:\d+: 'py/': a tool name must follow the '/'", p.stderr), \
        p.stderr


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    if subprocess.run(["sh", os.path.join(ROOT, "tests", "tools", "mcp.sh")]).returncode:
        print("mcp_agent_test: FAILED: tests/tools/mcp.sh could not install the MCP servers",
              file=sys.stderr)
        return 1
    return run.suite_main(TESTS, "eddy-mcpa-", 44, "MCP agent")


if __name__ == "__main__":
    sys.exit(main())
