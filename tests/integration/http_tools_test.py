#!/usr/bin/env python3
"""eddy.http and the http_request / current_time tools: the real `eddy` binary, the
scripted mock model, and HTTP servers on loopback written with the standard library.

Each server counts the connections it accepted and the requests in flight at once, so a
test can prove that a refused request never reached the network (its server saw no
connection at all) and that 1,000 tool calls really waited on it together.

  * wave: 1,000 keys, each a tool call that waits 2.5 s on a slow endpoint, on ONE worker:
    the server sees >= 900 in flight at once, and all of them are served in one wave;
  * refusals: a host off the allow list, a port off it, a redirect to an unlisted host or
    port, a listed name that resolves to 127.0.0.1 (foo.localhost: curl resolves
    *.localhost to loopback without DNS, so this is deterministic offline), an entry
    without http: -- each a clear error, and the "victim" server accepted nothing;
  * features: JSON decoding, response headers, POST json, a response past max_response,
    a timeout, a redirect that is followed, 303 to another origin (GET, no body, no
    Authorization) and 307 on the same origin (method, body and credentials kept), https to a
    plain server failing clearly;
  * http_request with a URL template (percent-encoding), a query parameter and a secret
    header from the environment, which reaches the server but no output and no trace;
    current_time;
  * spans: each request a CLIENT span under the tool's execute_tool span, with the
    OpenTelemetry HTTP attributes.

    python3 tests/integration/http_tools_test.py --build build [--only NAME]
"""
import json
import os
import re
import resource
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as itrun  # noqa: E402

SECRET_VAR, SECRET = "EDDY_HTTP_TEST_SECRET", "tok-9c1e5f-SECRET"


class Server(ThreadingHTTPServer):
    """A threaded loopback server that counts accepts and concurrent requests."""
    daemon_threads = True
    request_queue_size = 4096
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.connections = 0
        self.in_flight = 0
        self.peak = 0
        self.requests = []
        self.arrivals = []
        self.slow_first = self.slow_last = None
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def port(self):
        return self.server_address[1]

    def handle_error(self, request, client_address):
        pass  # a client that gave up (the timeout test) is no failure of the server

    def get_request(self):
        conn = super().get_request()
        with self.lock:
            self.connections += 1
        return conn

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, code, body, ctype="text/plain", headers=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def handle_one(self, method):
        s = self.server
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query))
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        with s.lock:
            s.arrivals.append(time.time())
            s.in_flight += 1
            s.peak = max(s.peak, s.in_flight)
            s.requests.append({"method": method, "path": self.path, "body": body.decode(),
                               "headers": dict(self.headers.items())})
        try:
            self.route(method, u.path, q, body)
        finally:
            with s.lock:
                s.in_flight -= 1

    def route(self, method, path, q, body):
        s = self.server
        if path == "/slow":
            with s.lock:
                s.slow_first = s.slow_first or time.time()
            time.sleep(float(q.get("ms", "1000")) / 1000)
            with s.lock:
                s.slow_last = time.time()
            self.reply(200, json.dumps({"k": q.get("k")}), "application/json")
        elif path == "/json":
            self.reply(200, json.dumps({"a": 1, "list": [1, 2]}), "application/json; charset=utf-8",
                       [("X-Test", "yes")])
        elif path == "/text":
            self.reply(200, "hello")
        elif path == "/big":
            self.reply(200, "x" * int(q.get("n", "100")))
        elif path == "/hang":
            time.sleep(3)
            self.reply(200, "late")
        elif path == "/echo":
            self.reply(200, json.dumps({"method": method, "body": body.decode(),
                                        "ctype": self.headers.get("Content-Type"),
                                        "x": self.headers.get("X-Custom"),
                                        "auth": self.headers.get("Authorization")}),
                       "application/json")
        elif path == "/redirect":
            self.reply(int(q.get("code", "302")), "", headers=[("Location", q["to"])])
        elif path.startswith("/orders/"):
            auth = self.headers.get("Authorization") == "Bearer " + SECRET
            self.reply(200 if auth else 401, json.dumps(
                {"id": urllib.parse.unquote(path[len("/orders/"):]), "raw": path,
                 "verbose": q.get("verbose"), "auth": auth}), "application/json")
        else:
            self.reply(404, "no such path")

    def do_GET(self):
        self.handle_one("GET")

    def do_POST(self):
        self.handle_one("POST")

    def do_PUT(self):
        self.handle_one("PUT")


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 16384) if hard != resource.RLIM_INFINITY else 16384
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def job_yaml(base_url, tools, extra=""):
    return """job: http-tools
key: k
workers: 1
%smodels:
  default:
    base_url: %s
    api_key: sk-test-not-a-secret
    model: mock-model
    timeout: 30s
    retry: { attempts: 2, backoff: 50ms..100ms }
    limits: { concurrency: 2048 }
agents:
  a:
    prompt: { system: "You help {{key}}.", user: "{{event.text}}" }
    tools:
%s    budget: { turns: 4, tool_calls: 4, wall: 60s }
""" % (extra, base_url, tools)


def script(rules):
    return {"rules": rules + [{"when": {"last_role": "tool"}, "reply": "RESULT ${tool}"}]}


def run_job(d, job, events, timeout=120, env=None):
    itrun.write(os.path.join(d, "events.jsonl"), "".join(json.dumps(e) + "\n" for e in events))
    out = os.path.join(d, "out.jsonl")
    t0 = time.time()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = itrun.eddy("run", job, "--input", os.path.join(d, "events.jsonl"), "--output", out,
                   "--dead-letter", os.path.join(d, "dead.jsonl"), timeout=timeout, env=env)
    took = time.time() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    p.cpu = (ru1.ru_utime - ru0.ru_utime, ru1.ru_stime - ru0.ru_stime)
    assert p.returncode == 0, "eddy exited %d:\n%s" % (p.returncode, p.stderr[-3000:])
    outs = {o["event_id"]: o for o in itrun.read_jsonl(out)}
    dead = itrun.read_jsonl(os.path.join(d, "dead.jsonl"))
    assert not dead, dead[:3]
    return outs, took, p


def spans_of(job, trace_id):
    p = itrun.eddy("trace", "show", trace_id, job, "--json", timeout=30, check=0)
    return json.loads(p.stdout).get("spans", [])


# -- the Lua tool of the feature tests ------------------------------------------------

WEB_TOOL = r"""
return eddy.tool {
  name = "web",
  description = "calls the test servers",
  params = { mode = { type = "string", required = true } },
  run = function(args, ctx)
    local A, B, m = ctx.config.a, ctx.config.b, args.mode
    local function try(f, ...)
      local ok, r = pcall(f, ...)
      if ok then return "OK " .. tostring(r.status) end
      return "ERR " .. r
    end
    if m == "json" then
      local r = eddy.http.get(A .. "/json")
      return string.format("status=%d a=%d n=%d xt=%s ct=%s body=%s", r.status, r.json.a,
        #r.json.list, r.headers["x-test"], r.headers["content-type"], r.body)
    elseif m == "text" then
      local r = eddy.http.request { url = A .. "/text" }
      return string.format("status=%d body=%s json=%s", r.status, r.body, tostring(r.json))
    elseif m == "post" then
      local r = eddy.http.post(A .. "/echo", { x = 1, s = "h\195\169" },
                               { headers = { ["X-Custom"] = "c1" } })
      return string.format("method=%s ctype=%s body=%s x=%s", r.json.method, r.json.ctype,
                           r.json.body, r.json.x)
    elseif m == "put" then
      local r = eddy.http.request { method = "PUT", url = A .. "/echo", body = "raw text" }
      return string.format("method=%s body=%s ctype=%s", r.json.method, r.json.body,
                           r.json.ctype == eddy.null and "none" or tostring(r.json.ctype))
    elseif m == "notfound" then
      local r = eddy.http.get(A .. "/nothing")
      return string.format("status=%d body=%s", r.status, r.body)
    elseif m == "big" then
      return try(eddy.http.get, A .. "/big?n=5000")
    elseif m == "small" then
      return try(eddy.http.get, A .. "/big?n=900")
    elseif m == "timeout" then
      return try(eddy.http.get, A .. "/hang", { timeout = 300 })
    elseif m == "follow" then
      local r = eddy.http.get(A .. "/redirect?to=" .. A .. "/json")
      return string.format("status=%d a=%d", r.status, r.json.a)
    elseif m == "offlist" then
      return try(eddy.http.get, "http://evil.example/x?token=QSECRET")
    elseif m == "offport" then
      return try(eddy.http.get, "http://127.0.0.1:" .. ctx.config.bport .. "/x")
    elseif m == "localhost" then
      return try(eddy.http.get, "http://localhost:" .. ctx.config.bport .. "/x")
    elseif m == "resolves" then
      return try(eddy.http.get, "http://foo.localhost:" .. ctx.config.bport .. "/x")
    elseif m == "redir_off" then
      return try(eddy.http.get, A .. "/redirect?to=http://evil.example/")
    elseif m == "redir_port" then
      return try(eddy.http.get, A .. "/redirect?to=" .. B .. "/x")
    elseif m == "scheme" then
      return try(eddy.http.get, "file:///etc/passwd")
    elseif m == "r303" then -- to another allowed origin: GET, no body, no credentials
      local r = eddy.http.request { method = "POST", body = "b1",
        url = A .. "/redirect?code=303&to=" .. ctx.config.c .. "/echo",
        headers = { Authorization = "Bearer t0k", ["X-Custom"] = "c1" } }
      return string.format("method=%s body=[%s] auth=%s x=%s", r.json.method, r.json.body,
                           r.json.auth == eddy.null and "none" or r.json.auth, r.json.x)
    elseif m == "r307" then -- same origin: method, body and credentials kept
      local r = eddy.http.request { method = "POST", body = "b2",
        url = A .. "/redirect?code=307&to=" .. A .. "/echo",
        headers = { Authorization = "Bearer t0k" } }
      return string.format("method=%s body=[%s] auth=%s", r.json.method, r.json.body, r.json.auth)
    elseif m == "tls" then
      return try(eddy.http.get, "https://127.0.0.1:" .. A:match(":(%d+)$") .. "/json")
    elseif m == "crlf" then
      return try(eddy.http.get, A .. "/json", { headers = { ["X-A"] = "a\r\nX-Injected: 1" } })
    end
    return "unknown mode"
  end,
}
"""

NOHTTP_TOOL = r"""
return eddy.tool {
  name = "nohttp", description = "has no http: in its entry",
  params = { url = "string" },
  run = function(args)
    local ok, e = pcall(eddy.http.get, args.url)
    return ok and "OK" or ("ERR " .. e)
  end,
}
"""

SLOW_TOOL = r"""
return eddy.tool {
  name = "slow", description = "waits on the slow endpoint",
  params = { key = { type = "string", required = true } },
  run = function(args, ctx)
    local r = eddy.http.get(ctx.config.a .. "/slow?ms=2500&k=" .. args.key)
    return "got " .. r.json.k
  end,
}
"""


def test_wave_1000_on_one_worker(tmp):
    """1,000 tool calls each waiting 2.5 s on a slow server finish in one wave on one worker.

    The hold is 2.5 s, not 1 s: starting 1,000 runs (1,000 model calls first) took up to 1.4 s
    on a loaded 2-core machine, and with a 1 s hold the first calls ended before the last
    began, though nothing waited for anything."""
    raise_nofile()
    n = 1000
    d = os.path.join(tmp, "job")
    itrun.write(os.path.join(d, "tools", "slow.lua"), SLOW_TOOL)
    rules = [{"when": {"last_role": "user", "last_user_regex": "^slow (\\S+)"},
              "tool_calls": [{"name": "slow", "arguments": {"key": "$1"}}]}]
    with Server() as srv, itrun.Mock(tmp, script(rules)) as mock:
        tools = ("      - { lua: tools/slow.lua, config: { a: \"http://127.0.0.1:%d\" },\n"
                 "          http: { allow: [\"127.0.0.1:%d\"] } }\n" % (srv.port, srv.port))
        job = os.path.join(d, "job.yaml")
        itrun.write(job, job_yaml(mock.base_url, tools))
        evs = [{"id": "e%d" % i, "k": "key%d" % i, "text": "slow k%d" % i} for i in range(n)]
        outs, took, proc = run_job(d, job, evs)
        peak, first, last, conns = srv.peak, srv.slow_first, srv.slow_last, srv.connections
        arr = sorted(srv.arrivals)
        mstats = mock.stats()
    print("    arrivals: 10%% %.2f 50%% %.2f 90%% %.2f 100%% %.2f s after the first; mock %s" % (
        arr[len(arr) // 10] - arr[0], arr[len(arr) // 2] - arr[0], arr[len(arr) * 9 // 10] - arr[0],
        arr[-1] - arr[0], mstats))
    bad = [e["id"] for e in evs if outs.get(e["id"], {}).get("output") != "RESULT got k%s" % e["id"][1:]]
    assert not bad, "%d wrong outputs, e.g. %s: %r" % (len(bad), bad[0], outs.get(bad[0]))
    wave = last - first
    print("    wave: %d calls, server peak %d in flight, %d connections, first to last answer "
          "%.2f s, eddy ran %.2f s (CPU %.2f s user, %.2f s sys)" % (n, peak, conns, wave, took,
                                                             proc.cpu[0], proc.cpu[1]))
    assert peak >= 900, "server saw only %d requests in flight at once" % peak
    # one wave: the 2.5 s waits overlap (>= 900 together), and the last answer comes one hold
    # after the last arrival, not a round later (the ramp of starting 1,000 runs, which a
    # loaded machine stretches, is the arrivals' spread)
    spread = arr[-1] - arr[0]
    assert wave < spread + 2.5 + 1.0, (
        "the 2.5 s requests took %.2f s from first to last, arrivals over %.2f s: not one wave" %
        (wave, spread))


def feature_job(tmp, srv, victim, other):
    d = os.path.join(tmp, "job")
    itrun.write(os.path.join(d, "tools", "web.lua"), WEB_TOOL)
    itrun.write(os.path.join(d, "tools", "nohttp.lua"), NOHTTP_TOOL)
    tools = ("      - { lua: tools/web.lua,\n"
             "          config: { a: \"http://127.0.0.1:%d\", b: \"http://127.0.0.1:%d\", bport: \"%d\",\n"
             "                    c: \"http://127.0.0.1:%d\" },\n"
             "          http: { allow: [\"127.0.0.1:%d\", \"foo.localhost:%d\", \"127.0.0.1:%d\"],\n"
             "                  max_response: 1000, timeout: 10s, max_redirects: 3 } }\n"
             "      - tools/nohttp.lua\n" % (srv.port, victim.port, victim.port, other.port,
                                             srv.port, victim.port, other.port))
    return d, tools


MODES = {
    "json": r"^RESULT status=200 a=1 n=2 xt=yes ct=application/json; charset=utf-8 body=\{",
    "text": r"^RESULT status=200 body=hello json=nil$",
    "post": r'^RESULT method=POST ctype=application/json body=\{("x":1,"s":"hé"|"s":"hé","x":1)\} x=c1$',
    "put": r"^RESULT method=PUT body=raw text ctype=none$",
    "notfound": r"^RESULT status=404 body=no such path$",
    "big": r"^RESULT ERR .*web\.lua:\d+: eddy\.http\.get: GET http://127\.0\.0\.1:\d+/big\?\[query\]: "
           r"the response is larger than max_response \(1000 bytes\)",
    "small": r"^RESULT OK 200$",
    "timeout": r"^RESULT ERR .*eddy\.http\.get: GET http://127\.0\.0\.1:\d+/hang timed out after 300 ms",
    "follow": r"^RESULT status=200 a=1$",
    "offlist": r"^RESULT ERR .*eddy\.http\.get: host 'evil\.example' is not in tool 'web''s http\.allow",
    "offport": r"^RESULT ERR .*eddy\.http\.get: port \d+ of host '127\.0\.0\.1' is not in tool 'web''s http\.allow",
    "localhost": r"^RESULT ERR .*eddy\.http\.get: host 'localhost' is not in tool 'web''s http\.allow",
    "resolves": r"^RESULT ERR .*eddy\.http\.get: host 'foo\.localhost' resolves to (127\.0\.0\.1|::1), "
                r"a loopback address, which tool 'web''s http\.allow does not list",
    "redir_off": r"^RESULT ERR .*eddy\.http\.get: http://127\.0\.0\.1:\d+/redirect\?\[query\] redirected "
                 r"\(302\) to http://evil\.example/: host 'evil\.example' is not in tool 'web''s http\.allow",
    "redir_port": r"^RESULT ERR .*redirected \(302\) to http://127\.0\.0\.1:\d+/x: port \d+ of host "
                  r"'127\.0\.0\.1' is not in tool 'web''s http\.allow",
    "scheme": r"^RESULT ERR .*eddy\.http\.get: 'file:///etc/passwd': only http:// and https:// URLs",
    "r303": r"^RESULT method=GET body=\[\] auth=none x=c1$",
    "r307": r"^RESULT method=POST body=\[b2\] auth=Bearer t0k$",
    "tls": r"^RESULT ERR .*eddy\.http\.get: GET https://127\.0\.0\.1:\d+/json: SSL",
    "crlf": r"^RESULT ERR .*the value of header 'X-A' holds a line break",
}


def test_features_and_refusals(tmp):
    """Responses, caps and timeouts; every refusal is clear and reaches no server."""
    with Server() as srv, Server() as victim, Server() as other:
        rules = [{"when": {"last_role": "user", "last_user_regex": "^web (\\S+)"},
                  "tool_calls": [{"name": "web", "arguments": {"mode": "$1"}}]},
                 {"when": {"last_role": "user", "last_user_regex": "^nohttp (\\S+)"},
                  "tool_calls": [{"name": "nohttp", "arguments": {"url": "$1"}}]}]
        with itrun.Mock(tmp, script(rules)) as mock:
            d, tools = feature_job(tmp, srv, victim, other)
            job = os.path.join(d, "job.yaml")
            itrun.write(job, job_yaml(mock.base_url, tools))
            evs = [{"id": m, "k": m, "text": "web " + m} for m in MODES]
            evs.append({"id": "nohttp", "k": "nohttp",
                        "text": "nohttp http://127.0.0.1:%d/x" % victim.port})
            outs, took, _ = run_job(d, job, evs)
        problems = []
        for m, rx in MODES.items():
            text = outs.get(m, {}).get("output", "(no output)")
            if not re.search(rx, text):
                problems.append("%s: %r does not match /%s/" % (m, text, rx))
            if "QSECRET" in text:
                problems.append("%s: the query string leaked: %r" % (m, text))
        text = outs.get("nohttp", {}).get("output", "")
        if not re.search(r"tool 'nohttp' has no http\.allow in the job; add http: \{allow: "
                         r"\[host:port\]\} to its entry", text):
            problems.append("nohttp: %r" % text)
        assert not problems, "\n".join(problems)
        assert victim.connections == 0, "the victim server accepted %d connection(s): %s" % (
            victim.connections, victim.requests)


def test_spans_under_the_tool_span(tmp):
    """Each request is a CLIENT span, child of execute_tool, with the HTTP attributes."""
    with Server() as srv, Server() as victim, Server() as other:
        rules = [{"when": {"last_role": "user", "last_user_regex": "^web (\\S+)"},
                  "tool_calls": [{"name": "web", "arguments": {"mode": "$1"}}]}]
        with itrun.Mock(tmp, script(rules)) as mock:
            d, tools = feature_job(tmp, srv, victim, other)
            job = os.path.join(d, "job.yaml")
            itrun.write(job, job_yaml(mock.base_url, tools))
            evs = [{"id": m, "k": m, "text": "web " + m} for m in ("json", "notfound", "follow",
                                                                  "offlist")]
            outs, _, _ = run_job(d, job, evs)
    problems = []
    for m in ("json", "notfound", "follow", "offlist"):
        spans = spans_of(job, outs[m]["trace_id"])
        tool = [s for s in spans if s["name"] == "execute_tool web"]
        http = [s for s in spans if s["name"].startswith("GET")]
        if len(tool) != 1 or len(http) != 1:
            problems.append("%s: spans %s" % (m, [s["name"] for s in spans]))
            continue
        h, a = http[0], http[0]["attributes"]
        if h["parent_id"] != tool[0]["span_id"]:
            problems.append("%s: the request span's parent is not the tool span" % m)
        if a.get("http.request.method") != "GET":
            problems.append("%s: attributes %s" % (m, a))
        if m == "offlist":
            if h["status"] != "error" or "not in tool 'web''s http.allow" not in (h["error"] or ""):
                problems.append("offlist: span %s" % h)
            continue
        want = {"json": 200, "notfound": 404, "follow": 200}[m]
        if (h["name"] != "GET 127.0.0.1" or a.get("server.address") != "127.0.0.1" or
                a.get("server.port") != srv.port or a.get("http.response.status_code") != want or
                not str(a.get("url.full", "")).startswith("http://127.0.0.1:%d/" % srv.port)):
            problems.append("%s: span %s %s" % (m, h["name"], a))
        if m == "notfound" and h["status"] != "error":
            problems.append("notfound: a 404 span is not an error: %s" % h)
        if m == "follow" and (a.get("http.request.resend_count") != 1 or
                              "?" in a.get("url.full", "").replace("?[query]", "")):
            problems.append("follow: %s" % a)
    assert not problems, "\n".join(problems)


def test_http_request_and_current_time(tmp):
    """The http_request tool: template, encoding, query, secret header; current_time."""
    with Server() as srv:
        rules = [{"when": {"last_role": "user", "last_user_contains": "order"},
                  "tool_calls": [{"name": "get_order",
                                  "arguments": {"order_id": "A 1/2?x", "verbose": True}}]},
                 {"when": {"last_role": "user", "last_user_contains": "evil"},
                  "tool_calls": [{"name": "get_order", "arguments": {"order_id": "1", "bad": 1}}]},
                 {"when": {"last_role": "user", "last_user_contains": "time"},
                  "tool_calls": [{"name": "current_time", "arguments": {}}]}]
        with itrun.Mock(tmp, script(rules)) as mock:
            d = os.path.join(tmp, "job")
            tools = ("      - http_request:\n"
                     "          name: get_order\n"
                     "          description: Look an order up\n"
                     "          url: \"http://127.0.0.1:%d/orders/{order_id}\"\n"
                     "          params:\n"
                     "            order_id: { type: string, description: the id, required: true }\n"
                     "            verbose: boolean\n"
                     "          query: [verbose]\n"
                     "          headers: { Authorization: \"Bearer ${%s}\" }\n"
                     "      - current_time: {}\n" % (srv.port, SECRET_VAR))
            job = os.path.join(d, "job.yaml")
            itrun.write(job, job_yaml(mock.base_url, tools))
            env = {SECRET_VAR: SECRET}
            p = itrun.eddy("check", job, env=env)
            assert p.returncode == 0, p.stdout + p.stderr
            evs = [{"id": "order", "k": "k1", "text": "my order"},
                   {"id": "evil", "k": "k2", "text": "evil args"},
                   {"id": "time", "k": "k3", "text": "what time is it"}]
            t0 = int(time.time() * 1000)
            outs, _, _ = run_job(d, job, evs, env=env)
            t1 = int(time.time() * 1000)
            seen = [r for r in srv.requests if r["path"].startswith("/orders/")]
    o = outs["order"]["output"]
    assert o.startswith("RESULT "), o
    res = json.loads(o[len("RESULT "):])
    assert res["status"] == 200 and res["json"]["auth"] is True, res
    assert res["json"]["raw"] == "/orders/A%201%2F2%3Fx", res
    assert res["json"]["id"] == "A 1/2?x" and res["json"]["verbose"] == "true", res
    assert len(seen) == 1 and seen[0]["headers"].get("Authorization") == "Bearer " + SECRET
    assert "unknown argument 'bad'" in outs["evil"]["output"], outs["evil"]
    t = json.loads(outs["time"]["output"][len("RESULT "):])
    assert t0 - 1000 <= t["unix_ms"] <= t1 + 1000, (t, t0, t1)
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", t["utc"]), t
    # the secret: on the wire, nowhere else
    for k, v in outs.items():
        assert SECRET not in json.dumps(v), k
    for eid in ("order", "evil"):
        p = itrun.eddy("trace", "show", outs[eid]["trace_id"], job, "--json", timeout=30, check=0)
        assert SECRET not in p.stdout, "the secret is in the trace of %s" % eid
        names = [s["name"] for s in json.loads(p.stdout)["spans"]]
        if eid == "order":
            assert "GET 127.0.0.1" in names and "execute_tool get_order" in names, names
    for root, _, files in os.walk(d):
        for f in files:
            data = open(os.path.join(root, f), "rb").read()
            assert SECRET.encode() not in data, "the secret is in %s" % os.path.join(root, f)


def test_check_reports_bad_http_request(tmp):
    """eddy check knows the built-in kinds and reports a bad http_request entry."""
    d = os.path.join(tmp, "job")
    tools = ("      - http_request: { url: \"http://{host}/x\", params: { host: string } }\n"
             "      - nope_kind: {}\n")
    job = os.path.join(d, "job.yaml")
    itrun.write(job, job_yaml("http://127.0.0.1:9/v1", tools))
    p = itrun.eddy("check", job)
    assert p.returncode != 0, p.stdout
    out = p.stdout + p.stderr
    assert "fixed host" in out, out
    assert re.search(r"unknown tool kind 'nope_kind' \(this eddy has [^)]*http_request[^)]*"
                     r"current_time", out), out


def test_sigterm_with_requests_in_flight(tmp):
    """SIGTERM while 20 requests wait on a 10 s endpoint: eddy aborts them and exits in time."""
    import signal
    import subprocess
    d = os.path.join(tmp, "job")
    itrun.write(os.path.join(d, "tools", "slow.lua"), SLOW_TOOL.replace("ms=2500", "ms=10000"))
    rules = [{"when": {"last_role": "user", "last_user_regex": "^slow (\\S+)"},
              "tool_calls": [{"name": "slow", "arguments": {"key": "$1"}}]}]
    with Server() as srv, itrun.Mock(tmp, script(rules)) as mock:
        tools = ("      - { lua: tools/slow.lua, config: { a: \"http://127.0.0.1:%d\" },\n"
                 "          http: { allow: [\"127.0.0.1:%d\"] } }\n" % (srv.port, srv.port))
        job = os.path.join(d, "job.yaml")
        itrun.write(job, job_yaml(mock.base_url, tools, "shutdown_grace: 1s\n"))
        evs = [{"id": "e%d" % i, "k": "key%d" % i, "text": "slow k%d" % i} for i in range(20)]
        itrun.write(os.path.join(d, "events.jsonl"), "".join(json.dumps(e) + "\n" for e in evs))
        proc = subprocess.Popen([os.path.join(itrun.ARGS.build, "eddy"), "run", job, "--input",
                                 os.path.join(d, "events.jsonl"), "--output",
                                 os.path.join(d, "out.jsonl"), "--dead-letter",
                                 os.path.join(d, "dead.jsonl")],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 20
        while srv.in_flight < 20 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert srv.in_flight == 20, "only %d requests in flight" % srv.in_flight
        t0 = time.time()
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("eddy did not exit within 10 s of SIGTERM")
        took = time.time() - t0
    print("    SIGTERM with 20 requests in flight: exit %d after %.2f s" % (proc.returncode, took))
    assert proc.returncode in (0, 3), "exit %d: %s" % (proc.returncode, err[-2000:])
    assert took < 3.0, "eddy took %.1f s to exit after SIGTERM (grace 1 s)" % took


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]

if __name__ == "__main__":
    sys.exit(itrun.suite_main(TESTS, "eddy-http-", 36, "http tools"))
