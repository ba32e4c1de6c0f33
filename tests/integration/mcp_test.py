#!/usr/bin/env python3
"""The MCP client against real servers installed from package registries (no mocks):
@modelcontextprotocol/server-everything from npm over stdio and over streamable HTTP, and
tests/fixtures/mcp/server.py written with the `mcp` package from PyPI (stdio and HTTP).
tests/tools/mcp.sh installs them into .cache/mcp; when it cannot, this suite fails.

The manager is driven through $(BUILD)/mcp_driver (tests/mcp/driver.c): one JSON command
a line on its stdin, JSON lines back, calls made from a uv loop through a port as a worker
makes them. `eddy check` on a job with an `mcp:` section is checked too.
MCP_DRIVER_WRAP="valgrind -q --error-exitcode=99 --leak-check=full" runs the driver under
that command (a non-zero exit of the driver fails the test).

    python3 tests/integration/mcp_test.py --build build [--only NAME] [-v]
"""
import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.path.join(ROOT, ".cache", "mcp")
EVERYTHING = os.path.join(CACHE, "node_modules", "@modelcontextprotocol", "server-everything",
                          "dist", "index.js")
PY = os.path.join(CACHE, "venv", "bin", "python")
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "mcp", "server.py")
ARGS = None

ETOOL, ETIMEDOUT, EIO, ENET = -14, -7, -3, -19


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port, secs=20):
    end = time.time() + secs
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("nothing listens on port %d after %ds" % (port, secs))


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purpose
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Driver:
    """mcp_driver on a config; send() commands, expect() answers."""

    def __init__(self, tmp, servers):
        cfg = os.path.join(tmp, "mcp-%d.json" % time.monotonic_ns())
        with open(cfg, "w") as f:
            json.dump({"mcp": servers}, f)
        env = dict(os.environ, EDDY_LOG=os.environ.get("EDDY_LOG", "info"))
        self.err = open(os.path.join(tmp, "driver-%d.log" % time.monotonic_ns()), "w+")
        wrap = os.environ.get("MCP_DRIVER_WRAP", "").split()  # e.g. valgrind -q ...
        self.p = subprocess.Popen(wrap + [os.path.join(ARGS.build, "mcp_driver"), cfg],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                                  text=True, bufsize=1, env=env)
        self.q = queue.Queue()
        self.results = {}
        self.next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.q.put(json.loads(line))
        self.q.put(None)

    def send(self, **cmd):
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()

    def expect(self, op, timeout=30):
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                raise AssertionError("no '%s' from mcp_driver within %ds; log:\n%s"
                                     % (op, timeout, self.log()))
            try:
                m = self.q.get(timeout=left)
            except queue.Empty:
                continue
            if m is None:
                raise AssertionError("mcp_driver ended waiting for '%s'; log:\n%s"
                                     % (op, self.log()))
            if m["op"] == "result" and op != "result":
                self.results[m["id"]] = m
                continue
            if m["op"] == op:
                return m

    def log(self):
        self.err.flush()
        self.err.seek(0)
        return self.err.read()[-4000:]

    def start_call(self, server, tool, args=None, timeout=0):
        self.next_id += 1
        self.send(op="call", id=self.next_id, server=server, tool=tool, args=args or {},
                  timeout=timeout)
        return self.next_id

    def result(self, cid, timeout=30):
        end = time.time() + timeout
        while cid not in self.results:
            m = self.expect("result", max(0.1, end - time.time()))
            self.results[m["id"]] = m
        return self.results.pop(cid)

    def call(self, server, tool, args=None, timeout=0, wait=30):
        return self.result(self.start_call(server, tool, args, timeout), wait)

    def catalog(self):
        self.send(op="catalog")
        return self.expect("catalog")

    def wait_ready(self, ms=30000):
        self.send(op="wait", timeout=ms)
        return self.expect("wait", ms / 1000 + 5)["ready"]

    def until(self, pred, secs=30, what="condition"):
        end = time.time() + secs
        while time.time() < end:
            c = self.catalog()
            if pred(c):
                return c
            time.sleep(0.2)
        raise AssertionError("%s not reached within %ds: %s\nlog:\n%s"
                             % (what, secs, json.dumps(c)[:1500], self.log()))

    def stop(self):
        if self.p.poll() is None:
            try:
                self.send(op="stop")
            except BrokenPipeError:
                pass
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill()
                raise AssertionError("mcp_driver did not stop within 15 s")
        return self.p.returncode


def tools_of(cat, server):
    return {t["name"]: t for t in cat["tools"] if t["server"] == server}


def server_of(cat, name):
    return next(s for s in cat["servers"] if s["name"] == name)


def ok(r):
    assert r["status"] == 0, "call failed: %s" % json.dumps(r)
    return r["result"]


# -- tests ------------------------------------------------------------------------

def test_everything_stdio(tmp):
    """server-everything over stdio: its tools with their schemas, echo and get-sum."""
    d = Driver(tmp, {"everything": {"command": ["node", EVERYTHING, "stdio"]}})
    try:
        assert d.wait_ready(), d.log()
        cat = d.catalog()
        tools = tools_of(cat, "everything")
        assert {"echo", "get-sum"} <= set(tools), sorted(tools)
        assert tools["echo"]["schema"]["properties"]["message"]["type"] == "string"
        assert cat["version"] >= 1 and server_of(cat, "everything")["up"]
        assert ok(d.call("everything", "echo", {"message": "hello"})) == "Echo: hello"
        assert "5" in ok(d.call("everything", "get-sum", {"a": 2, "b": 3}))
        r = d.call("everything", "no-such-tool")
        assert r["status"] == ETOOL and "everything/no-such-tool" in r["error"], r
    finally:
        assert d.stop() == 0


def test_stdio_environment(tmp):
    """A stdio server gets PATH, HOME and the like, and its own `env`, but not the rest of
    eddy's environment (the models' API keys live there)."""
    os.environ["EDDY_MCP_TEST_SECRET"] = "s3cr3t-key"
    try:
        d = Driver(tmp, {"e": {"command": ["node", EVERYTHING, "stdio"],
                               "env": {"GIVEN": "yes", "HOME": "/tmp"}}})
    finally:
        del os.environ["EDDY_MCP_TEST_SECRET"]
    try:
        assert d.wait_ready(), d.log()
        env = json.loads(ok(d.call("e", "get-env")))
        assert env.get("GIVEN") == "yes" and env.get("HOME") == "/tmp", env
        assert "PATH" in env and "EDDY_MCP_TEST_SECRET" not in env, env
        assert "s3cr3t-key" not in json.dumps(env)
    finally:
        assert d.stop() == 0


def test_everything_http(tmp):
    """server-everything's streamableHttp mode: tools, calls, a session (ended by DELETE)."""
    port = free_port()
    srv = subprocess.Popen(["node", EVERYTHING, "streamableHttp"], env=dict(os.environ,
                           PORT=str(port)), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
    try:
        wait_port(port)
        d = Driver(tmp, {"web": {"url": "http://127.0.0.1:%d/mcp" % port,
                                 "headers": {"X-Test": "1"}}})
        try:
            assert d.wait_ready(), d.log()
            cat = d.catalog()
            assert {"echo", "get-sum"} <= set(tools_of(cat, "web")), cat
            assert server_of(cat, "web")["transport"] == "http"
            assert ok(d.call("web", "echo", {"message": "over http"})) == "Echo: over http"
            r = d.call("web", "get-structured-content", {"location": "New York"})
            assert isinstance(ok(r), dict) and "temperature" in r["result"], r
        finally:
            assert d.stop() == 0
    finally:
        srv.terminate()
        out = srv.communicate(timeout=10)[0]
    assert "session termination" in out.lower() or "DELETE" in out, out[-2000:]


def py_stdio(timeout="30s"):
    return {"command": [PY, FIXTURE], "timeout": timeout, "env": {"PYTHONUNBUFFERED": "1"}}


def test_python_stdio_calls_errors_timeout_list_changed(tmp):
    """The `mcp` package's server: results, isError -> tool error, a per-call timeout,
    and list_changed -> a new catalog version with the new tool."""
    d = Driver(tmp, {"py": py_stdio()})
    try:
        assert d.wait_ready(), d.log()
        cat = d.catalog()
        assert {"echo", "add", "slow", "fail", "grow"} <= set(tools_of(cat, "py")), cat
        assert "late" not in tools_of(cat, "py")
        assert ok(d.call("py", "add", {"a": 20, "b": 22})) == {"result": 42}
        assert ok(d.call("py", "echo", {"text": "héllo"})) == {"result": "héllo"}
        r = d.call("py", "fail", {"why": "no"})
        assert r["status"] == ETOOL and r["error"].startswith("mcp tool 'py/fail': "), r
        t0 = time.time()
        r = d.call("py", "slow", {"seconds": 5}, timeout=800)
        took = time.time() - t0
        assert r["status"] == ETIMEDOUT and "timed out after 0.8s" in r["error"], r
        assert took < 3, "the timeout took %.1fs" % took
        # the server still works after a cancelled call
        assert ok(d.call("py", "add", {"a": 1, "b": 1})) == {"result": 2}
        v = cat["version"]
        assert ok(d.call("py", "grow")) == {"result": "grown"}
        cat = d.until(lambda c: "late" in tools_of(c, "py"), 10, "tool 'late' listed")
        assert cat["version"] > v, (cat["version"], v)
        assert ok(d.call("py", "late", {"x": 21})) == {"result": 42}
    finally:
        assert d.stop() == 0


def test_kill_stdio_server_mid_call(tmp):
    """kill -9 the server during a slow call: that call fails at once with 'exited during
    the call'; the next call is served by the restarted server (another pid)."""
    d = Driver(tmp, {"py": py_stdio()})
    try:
        assert d.wait_ready(), d.log()
        pid1 = ok(d.call("py", "pid"))["result"]
        cid = d.start_call("py", "slow", {"seconds": 20})
        time.sleep(0.7)
        t0 = time.time()
        os.kill(pid1, signal.SIGKILL)
        r = d.result(cid, 10)
        took = time.time() - t0
        assert r["status"] == EIO and "mcp server 'py' exited during the call" in r["error"], r
        assert took < 2, "the call in flight failed %.1fs after the kill" % took
        r = d.call("py", "pid", wait=40)
        pid2 = ok(r)["result"]
        assert pid2 != pid1
        cat = d.catalog()
        assert server_of(cat, "py")["up"] and "late" not in tools_of(cat, "py")
    finally:
        assert d.stop() == 0
    assert not alive(pid2), "the restarted server (pid %d) outlived the stop" % pid2


def test_http_server_started_later(tmp):
    """An HTTP server that is down when the manager starts: nothing fails, the catalog
    says why, and its tools appear once it is up (retried with backoff)."""
    port = free_port()
    d = Driver(tmp, {"late": {"url": "http://127.0.0.1:%d/mcp" % port}})
    srv = None
    try:
        assert d.wait_ready(), d.log()  # settled: the first attempt failed
        cat = d.catalog()
        s = server_of(cat, "late")
        assert not s["up"] and s["error"] and cat["tools"] == [], cat
        # a call meanwhile waits for the server (within its timeout), then says why
        r = d.call("late", "add", {"a": 1, "b": 2}, timeout=1000)
        assert r["status"] == ETIMEDOUT and "waiting for the server to start" in r["error"] \
            and "127.0.0.1:%d" % port in r["error"], r
        srv = subprocess.Popen([PY, FIXTURE, "--http", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        cat = d.until(lambda c: "add" in tools_of(c, "late"), 45, "tools of the late server")
        assert server_of(cat, "late")["up"]
        assert ok(d.call("late", "add", {"a": 1, "b": 2})) == {"result": 3}
        # list_changed over HTTP (the GET stream or the POST's own stream)
        assert ok(d.call("late", "grow")) == {"result": "grown"}
        d.until(lambda c: "late" in tools_of(c, "late"), 10, "tool 'late' over HTTP")
    finally:
        assert d.stop() == 0
        if srv:
            srv.terminate()
            srv.wait(10)


def test_hostile_server(tmp):
    """A server that writes garbage, a 17 MiB line, answers to unknown ids, requests of its
    own: skipped or answered (ping -> {}, others -> method not found); calls still work.
    One that closes its stdout and hangs on is killed and restarted."""
    d = Driver(tmp, {"bad": {"command": [sys.executable, os.path.join(
        ROOT, "tests", "fixtures", "mcp", "hostile.py")]}})
    try:
        assert d.wait_ready(), d.log()
        cat = d.catalog()
        assert list(tools_of(cat, "bad")) == ["answers", "close_stdout"], cat
        for _ in range(2):
            seen = json.loads(ok(d.call("bad", "answers")))
            assert seen["srv-1"]["result"] == {}, seen
            assert seen["srv-2"]["error"]["code"] == -32601, seen
        log = d.log()
        assert "not JSON" in log and "dropped" in log, log
        # a server that closes its stdout and hangs on: the call fails soon, the server is
        # killed and started again
        t0 = time.time()
        r = d.call("bad", "close_stdout", timeout=20000)
        assert r["status"] == ENET and "closed its stdout" in r["error"], r
        assert time.time() - t0 < 3, time.time() - t0
        assert "srv-1" in json.loads(ok(d.call("bad", "answers", wait=30)))
    finally:
        assert d.stop() == 0


def test_many_calls_in_flight(tmp):
    """200 calls at once through one port, over stdio and HTTP: each answered once, right."""
    port = free_port()
    srv = subprocess.Popen(["node", EVERYTHING, "streamableHttp"], env=dict(os.environ,
                           PORT=str(port)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        d = Driver(tmp, {"s": {"command": ["node", EVERYTHING, "stdio"]},
                         "h": {"url": "http://127.0.0.1:%d/mcp" % port}})
        try:
            assert d.wait_ready(), d.log()
            ids = {}
            for i in range(200):
                server = "s" if i % 2 else "h"
                ids[d.start_call(server, "echo", {"message": "m%d" % i})] = i
            for cid, i in ids.items():
                assert ok(d.result(cid, 60)) == "Echo: m%d" % i
            assert not d.results, d.results
        finally:
            assert d.stop() == 0
    finally:
        srv.terminate()
        srv.wait(10)


def test_http_server_killed_mid_call(tmp):
    """kill -9 an HTTP server during a slow call: the call fails at once (the connection
    went away); a server started again on the port serves the next call."""
    port = free_port()
    srv = subprocess.Popen([PY, FIXTURE, "--http", str(port)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    d = Driver(tmp, {"web": {"url": "http://127.0.0.1:%d/mcp" % port}})
    try:
        wait_port(port)
        d.until(lambda c: server_of(c, "web")["up"], 30, "the HTTP server up")
        cid = d.start_call("web", "slow", {"seconds": 20})
        time.sleep(0.7)
        t0 = time.time()
        srv.kill()
        srv.wait(10)
        r = d.result(cid, 10)
        assert r["status"] == ENET and "mcp server 'web' went away during the call" in \
            r["error"], r
        assert time.time() - t0 < 2, "the call failed %.1fs after the kill" % (time.time() - t0)
        srv = subprocess.Popen([PY, FIXTURE, "--http", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        assert ok(d.call("web", "add", {"a": 2, "b": 2}, wait=40)) == {"result": 4}
    finally:
        assert d.stop() == 0
        srv.terminate()
        srv.wait(10)


def test_stop_kills_children(tmp):
    """Stopping the manager ends its stdio servers (SIGTERM, then SIGKILL): no orphans."""
    d = Driver(tmp, {"a": py_stdio(), "b": {"command": ["node", EVERYTHING, "stdio"]}})
    try:
        assert d.wait_ready(), d.log()
        pid = ok(d.call("a", "pid"))["result"]
        kids = []  # the manager's thread spawns them: read every thread's children
        for t in os.listdir("/proc/%d/task" % d.p.pid):
            kids += [int(x) for x in open("/proc/%d/task/%s/children" % (d.p.pid, t))
                     .read().split()]
        assert pid in kids and len(kids) == 2, (pid, kids)
    finally:
        assert d.stop() == 0
    time.sleep(0.2)
    left = [k for k in kids if alive(k)]
    assert not left, "server processes left after stop: %s" % left


def test_servers_end_when_eddy_is_killed(tmp):
    """kill -9 of the process that owns the manager: nothing can signal the servers, but
    their stdin closes, and MCP servers end on that (both SDKs' do)."""
    d = Driver(tmp, {"a": py_stdio(), "b": {"command": ["node", EVERYTHING, "stdio"]}})
    assert d.wait_ready(), d.log()
    kids = []
    for t in os.listdir("/proc/%d/task" % d.p.pid):
        kids += [int(x) for x in open("/proc/%d/task/%s/children" % (d.p.pid, t)).read().split()]
    assert len(kids) == 2, kids
    d.p.kill()
    d.p.wait(10)
    end = time.time() + 10
    while time.time() < end and any(alive(k) for k in kids):
        time.sleep(0.1)
    assert not any(alive(k) for k in kids), [k for k in kids if alive(k)]


def test_probe_reports_reachable_and_not(tmp):
    """eddy_mcp_probe: the tools of a reachable server, the reason of one that is not."""
    dead = free_port()
    d = Driver(tmp, {"ok": {"command": ["node", EVERYTHING, "stdio"]},
                     "gone": {"url": "http://127.0.0.1:%d/mcp" % dead},
                     "nocmd": {"command": ["/nonexistent/mcp-server"]}})
    try:
        d.send(op="probe", timeout=20000)
        rep = d.expect("probe", 30)["report"]
        assert rep["ok"]["reachable"] and "echo" in rep["ok"]["tools"], rep
        assert not rep["gone"]["reachable"] and "127.0.0.1:%d" % dead in rep["gone"]["error"], rep
        assert not rep["nocmd"]["reachable"] and "cannot start" in rep["nocmd"]["error"], rep
    finally:
        assert d.stop() == 0


def test_eddy_check_lists_mcp_tools(tmp):
    """`eddy check` prints the tools of reachable MCP servers and says which could not be
    reached (the job is still fine: a server may come up later)."""
    dead = free_port()
    job = os.path.join(tmp, "mcp.yaml")
    with open(job, "w") as f:
        f.write("job: m\nkey: id\nmodels:\n  default: { base_url: http://127.0.0.1:9/v1, "
                "model: x }\nagents:\n  a:\n    prompt: { user: hi }\n"
                "mcp:\n  everything:\n    command: [node, %s, stdio]\n"
                "  gone:\n    url: http://127.0.0.1:%d/mcp\n" % (EVERYTHING, dead))
    p = subprocess.run([os.path.join(ARGS.build, "eddy"), "check", job], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "mcp everything (stdio): " in p.stdout and "echo" in p.stdout, p.stdout
    assert "mcp gone (http): not reachable" in p.stdout, p.stdout
    # a bad mcp section names the place
    with open(job, "w") as f:
        f.write("job: m\nkey: id\nmodels:\n  default: { base_url: http://127.0.0.1:9/v1, "
                "model: x }\nagents:\n  a:\n    prompt: { user: hi }\n"
                "mcp:\n  bad:\n    command: []\n    url: x\n")
    p = subprocess.run([os.path.join(ARGS.build, "eddy"), "check", job], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "mcp.yaml:" in p.stderr and "bad" in p.stderr, p.stderr


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--only", default="")
    ap.add_argument("-v", action="store_true")
    ARGS = ap.parse_args()
    r = subprocess.run(["sh", os.path.join(ROOT, "tests", "tools", "mcp.sh")])
    if r.returncode:
        print("mcp_test: FAILED: tests/tools/mcp.sh could not install the MCP servers "
              "(see above)", file=sys.stderr)
        return 1
    for exe in ("mcp_driver", "eddy"):
        if not os.path.exists(os.path.join(ARGS.build, exe)):
            print("mcp_test: FAILED: %s/%s is missing (make BUILD=%s all)"
                  % (ARGS.build, exe, ARGS.build), file=sys.stderr)
            return 1
    tests = [(n, f) for n, f in sorted(globals().items())
             if n.startswith("test_") and ARGS.only in n]
    failed = 0
    for name, fn in tests:
        t0 = time.time()
        with tempfile.TemporaryDirectory(prefix="eddy-mcp-") as tmp:
            try:
                fn(tmp)
                print("ok   %-55s %.1fs" % (name, time.time() - t0), flush=True)
            except Exception as e:  # noqa: BLE001
                failed += 1
                print("FAIL %-55s %.1fs\n     %s" % (name, time.time() - t0, e), flush=True)
    print("mcp_test: %d passed, %d failed" % (len(tests) - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
