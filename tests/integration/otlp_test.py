#!/usr/bin/env python3
"""OTLP/HTTP JSON export of eddy's spans.

- test_collector_*: `eddy run` exports to a real OpenTelemetry Collector (built
  by tests/otlp/collector.sh from the Go module proxy: OTLP receiver plus the
  OTLP/HTTP exporter). The collector decodes eddy's JSON into its own span
  model and re-exports it, as OTLP/JSON, to a capture server of this test, which
  reads the spans back: every span of the trace store is there with its trace
  id, parent, name, kind and GenAI attributes, typed as the collector read them.
- The failure paths, against small HTTP servers of this test (no collector):
  503 then 200 (retried, nothing lost), 400 (not retried, counted), a receiver
  that is down and one that never answers (the runs are not held up, the close
  waits at most 5 s, the losses are counted in the log), a full queue, and
  header values that are sent but never logged, even at debug level.

A missing collector fails the suite with what to run; it never skips.

    tests/otlp/collector.sh install
    python3 tests/integration/otlp_test.py --build build [--only NAME]
"""
import http.server
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Mock, copy_example, custom_job, eddy, example_script, read_jsonl, write  # noqa

ROOT = run.ROOT
SECRET = "sekrit-4b1d 9x"  # a header value: sent, never logged


class Receiver:
    """An HTTP server on loopback that records each POST (path, headers, body) and
    answers from ANSWERS in turn (status, extra headers), then 200."""

    def __init__(self, answers=()):
        self.answers = list(answers)
        self.posts = []
        self.lock = threading.Lock()
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(n)
                with outer.lock:
                    outer.posts.append({"path": self.path, "headers": dict(self.headers),
                                        "body": body, "status": None,
                                        "t": time.time()})
                    status, extra = outer.answers.pop(0) if outer.answers else (200, {})
                    outer.posts[-1]["status"] = status
                extra = dict(extra)
                text = extra.pop("_body", b"{}" if status == 200 else b'{"message":"no"}')
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(text)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(text)

            def log_message(self, *a):
                pass

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.port = self.srv.server_address[1]
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()

    @property
    def url(self):
        return "http://127.0.0.1:%d/v1/traces" % self.port

    def spans(self, ok_only=True):
        """Every span of the POSTs answered 200, as OTLP/JSON objects."""
        out = []
        with self.lock:
            posts = list(self.posts)
        for p in posts:
            if ok_only and p["status"] != 200:
                continue
            doc = json.loads(p["body"])
            for rs in doc.get("resourceSpans", []):
                for ss in rs.get("scopeSpans", []):
                    for s in ss.get("spans", []):
                        s["_resource"] = rs.get("resource", {})
                        s["_scope"] = ss.get("scope", {})
                        out.append(s)
        return out


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def attrs(span):
    """OTLP attributes as {key: (type, value)}."""
    out = {}
    for kv in span.get("attributes", []):
        (t, v), = kv["value"].items()
        out[kv["key"]] = (t, v)
    return out


def store_spans(d):
    db = sqlite3.connect(os.path.join(d, ".eddy", "t", "traces.db"))  # the job is named t
    rows = db.execute("SELECT trace_id, span_id, coalesce(parent_id, ''), name, kind, start_ns,"
                      " end_ns, status, attributes FROM spans").fetchall()
    db.close()
    return rows


EVENTS = ('{"id":"e1","customer_id":"C004","text":"where is my order A1001?"}\n'
          '{"id":"e2","customer_id":"C006","text":"Where is order A1002"}\n'
          '{"id":"e3","customer_id":"C008","text":"do you ship to Canada?"}\n'
          '{"id":"e4","customer_id":"C009","text":"order Z9999 please"}\n')


def run_job(tmp, mock, trace_yaml, env=None, log="debug", check=0):
    """The example's job (lookup_order tool) with TRACE_YAML appended, over EVENTS."""
    d = copy_example(tmp)
    job = custom_job(d, mock.base_url)
    with open(job, "a") as f:
        f.write(trace_yaml)
    write(os.path.join(d, "in.jsonl"), EVENTS)
    t0 = time.time()
    p = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
             os.path.join(tmp, "out.jsonl"), "--summary-json", os.path.join(tmp, "s.json"),
             "--log-level", log, env=env or {}, check=check, timeout=60)
    p.elapsed = time.time() - t0
    outs = {o["event_id"]: o for o in read_jsonl(os.path.join(tmp, "out.jsonl"))}
    assert sorted(outs) == ["e1", "e2", "e3", "e4"], (outs, p.stderr[-2000:])
    assert "carrier UPS" in outs["e1"]["output"], outs["e1"]
    return d, p


def check_spans(rows, got):
    """Every stored span was received, once, with its ids, links, name, kind and times."""
    by_id = {}
    for s in got:
        assert s["spanId"] not in by_id, "span %s exported twice" % s["spanId"]
        by_id[s["spanId"]] = s
    assert len(rows) >= 4 * 2, rows  # an agent span and at least one chat span per run
    for (tid, sid, pid, name, kind, start, end, status, _a) in rows:
        s = by_id.get(sid)
        assert s is not None, "span %s (%s) not exported" % (sid, name)
        assert s["traceId"] == tid, (s, tid)
        assert s.get("parentSpanId", "") == pid, (s, pid)
        assert s["name"] == name and s["kind"] == kind, (s, name, kind)
        assert s["startTimeUnixNano"] == str(start) and s["endTimeUnixNano"] == str(end), s
        assert (s.get("status", {}).get("code") == 2) == (status == "error"), (s, status)
    assert len(by_id) == len(rows), (len(by_id), len(rows))
    names = [s["name"] for s in got]
    assert sum(n.startswith("invoke_agent ") for n in names) == 4, names
    assert any(n.startswith("chat ") for n in names), names
    assert sum(n.startswith("execute_tool ") for n in names) == 3, names  # e1, e2, e4
    # parent/child: each chat and tool span hangs under its run's agent span
    for s in got:
        if s["name"].startswith(("chat ", "execute_tool ")):
            parent = by_id[s["parentSpanId"]]
            assert parent["name"].startswith("invoke_agent "), (s["name"], parent["name"])
            assert parent["traceId"] == s["traceId"]
    return by_id


def check_genai(got):
    chats = [attrs(s) for s in got if s["name"].startswith("chat ")]
    tools = [attrs(s) for s in got if s["name"].startswith("execute_tool ")]
    agents = [attrs(s) for s in got if s["name"].startswith("invoke_agent ")]
    for a in chats:
        assert a["gen_ai.operation.name"] == ("stringValue", "chat"), a
        t, v = a["gen_ai.usage.input_tokens"]
        assert t == "intValue" and int(v) > 0, a
        assert a["gen_ai.usage.output_tokens"][0] == "intValue", a
        assert a["gen_ai.request.model"] == ("stringValue", "mock-model"), a
    for a in tools:
        assert a["gen_ai.tool.name"] == ("stringValue", "lookup_order"), a
    for a in agents:
        assert a["gen_ai.agent.name"] == ("stringValue", "support"), a


def collector_bin():
    p = subprocess.run([os.path.join(ROOT, "tests", "otlp", "collector.sh"), "path"],
                       capture_output=True, text=True)
    if p.returncode:
        raise AssertionError("the OpenTelemetry Collector is not installed: run "
                             "`tests/otlp/collector.sh install` (Go and the Go module proxy; "
                             "`make otlp-deps` does it)\n" + p.stderr)
    return p.stdout.strip()


class Collector:
    """The collector: OTLP/HTTP in on a free port, OTLP/HTTP JSON out to SINK."""

    def __init__(self, tmp, sink):
        self.port = free_port()
        self.cfg = os.path.join(tmp, "otelcol.yaml")
        self.log = os.path.join(tmp, "otelcol.log")
        write(self.cfg, """receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:%d
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:%d
    encoding: json
    compression: none
    retry_on_failure: { enabled: false }
service:
  telemetry:
    metrics: { level: none }
  pipelines:
    traces: { receivers: [otlp], exporters: [otlphttp] }
""" % (self.port, sink.port))

    def __enter__(self):
        self.proc = subprocess.Popen([collector_bin(), "--config", self.cfg],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("the collector exited %d:\n%s" % (
                    self.proc.returncode, open(self.log).read()[-3000:]))
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the collector did not listen in 30 s:\n" + open(self.log).read())

    def __exit__(self, *exc):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    @property
    def url(self):
        return "http://127.0.0.1:%d/v1/traces" % self.port


def wait_for(fn, seconds=15):
    deadline = time.time() + seconds
    while True:
        v = fn()
        if v or time.time() > deadline:
            return v
        time.sleep(0.1)


# -- tests ----------------------------------------------------------------------

def test_collector_roundtrip(tmp):
    """eddy -> collector -> capture: every stored span, as the collector decoded it."""
    with Receiver() as sink, Collector(tmp, sink) as col, Mock(tmp, example_script()) as mock:
        trace = """trace:
  otlp:
    endpoint: %s
    headers: { x-tenant: acme }
    timeout: 5s
""" % col.url
        d, p = run_job(tmp, mock, trace, env={"OTEL_SERVICE_NAME": "support-bot"})
        rows = store_spans(d)
        wait_for(lambda: len(sink.spans()) >= len(rows))
        got = sink.spans()
    assert "otlp: %d spans exported" % len(rows) in p.stderr, p.stderr[-2000:]
    assert " 0 dropped, 0 batches failed" in p.stderr, p.stderr[-2000:]
    by_id = check_spans(rows, got)
    check_genai(got)
    for s in got:
        res = {kv["key"]: kv["value"] for kv in s["_resource"].get("attributes", [])}
        assert res["service.name"] == {"stringValue": "support-bot"}, res
        assert s["_scope"]["name"] == "eddy", s["_scope"]
    # a run whose tool failed (e4: no order Z9999): its tool span is an error, as stored
    bad = [s for s in by_id.values() if s["name"].startswith("execute_tool ")
           and s.get("status", {}).get("code") == 2]
    assert len(bad) == 1 and "Z9999" in bad[0]["status"].get("message", ""), bad


def test_env_endpoint_and_headers(tmp):
    """OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces) and _HEADERS (URL-decoded) are used; the
    header's value never appears in eddy's log at debug level."""
    with Receiver() as rx, Mock(tmp, example_script()) as mock:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:%d" % rx.port,
               "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20" + SECRET.replace(" ", "%20")
               + ",x-tenant=acme"}
        d, p = run_job(tmp, mock, "", env=env)
        rows = store_spans(d)
        posts = list(rx.posts)
    assert posts and all(x["path"] == "/v1/traces" for x in posts), posts
    for x in posts:
        h = {k.lower(): v for k, v in x["headers"].items()}
        assert h["authorization"] == "Bearer " + SECRET, h
        assert h["x-tenant"] == "acme" and h["content-type"] == "application/json", h
    check_spans(rows, rx.spans())
    assert "[trace] otlp: exporting spans to" in p.stderr, p.stderr[-2000:]  # debug is on
    assert SECRET not in p.stderr and "sekrit" not in p.stderr, "a header value was logged"
    assert SECRET not in p.stdout


def test_job_settings_win_over_env(tmp):
    """trace.otlp in the job (its header from ${OTLP_TOK}) beats
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT and the env's header of the same name."""
    with Receiver() as job_rx, Receiver() as env_rx, Mock(tmp, example_script()) as mock:
        trace = ("trace:\n  otlp:\n    endpoint: %s\n"
                 "    headers: { authorization: \"job-${OTLP_TOK}\" }\n" % job_rx.url)
        env = {"OTLP_TOK": "tok", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": env_rx.url,
               "OTEL_EXPORTER_OTLP_HEADERS": "authorization=env-tok,x-env=1"}
        d, p = run_job(tmp, mock, trace, env=env)
        rows = store_spans(d)
    assert not env_rx.posts, env_rx.posts
    h = {k.lower(): v for k, v in job_rx.posts[0]["headers"].items()}
    assert h["authorization"] == "job-tok" and h["x-env"] == "1", h
    check_spans(rows, job_rx.spans())
    assert "job-tok" not in p.stderr and "env-tok" not in p.stderr


def test_503_then_200_is_retried(tmp):
    """Two 503s (one with Retry-After) then 200: the same batch is sent again, nothing lost."""
    answers = [(503, {"Retry-After": "1"}), (503, {})]
    with Receiver(answers) as rx, Mock(tmp, example_script()) as mock:
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rx.url,
               "OTEL_EXPORTER_OTLP_HEADERS": "authorization=" + SECRET.replace(" ", "%20"),
               "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10000"}
        d, p = run_job(tmp, mock, "", env=env)
        rows = store_spans(d)
        posts = list(rx.posts)
    assert [x["status"] for x in posts[:3]] == [503, 503, 200], [x["status"] for x in posts]
    assert posts[0]["body"] == posts[1]["body"] == posts[2]["body"], "the retry changed the batch"
    # Retry-After: 1 was honoured: the second try came at least a second after the first
    assert posts[1]["t"] - posts[0]["t"] >= 0.95, (posts[0]["t"], posts[1]["t"])
    check_spans(rows, rx.spans())
    assert "0 dropped, 0 batches failed" in p.stderr, p.stderr[-2000:]
    assert p.stderr.count("otlp: cannot export") == 1, p.stderr  # once per failure streak
    assert "HTTP 503" in p.stderr and "export to %s works again" % rx.url in p.stderr
    assert SECRET not in p.stderr


def test_400_is_not_retried(tmp):
    """A 400 gives the batch up at once: one POST, the batch and its spans counted. The
    log shows the receiver's reason, but neither the header value it echoes nor the
    credentials in the URL (user:password@, ?token=)."""
    body = ('{"message":"bad span; you sent authorization: %s"}' % SECRET).encode()
    with Receiver([(400, {"_body": body})] * 100) as rx, Mock(tmp, example_script()) as mock:
        url = "http://user:pw-hidden@127.0.0.1:%d/v1/traces?token=q-hidden" % rx.port
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": url,
               "OTEL_EXPORTER_OTLP_HEADERS": "authorization=" + SECRET.replace(" ", "%20"),
               "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "10000"}
        d, p = run_job(tmp, mock, "", env=env)
        rows = store_spans(d)
        posts = list(rx.posts)
    assert len(posts) == 1, [x["status"] for x in posts]
    assert posts[0]["path"] == "/v1/traces?token=q-hidden", posts[0]["path"]
    shown = "http://***@127.0.0.1:%d/v1/traces?..." % rx.port
    assert "otlp: 0 spans exported to %s, %d dropped, 1 batches failed" % (shown, len(rows)) \
        in p.stderr, p.stderr[-2000:]
    assert p.stderr.count("otlp: cannot export") == 1, p.stderr
    assert "HTTP 400: {\"message\":\"bad span; you sent authorization: ***" in p.stderr, p.stderr
    for secret in (SECRET, "sekrit", "pw-hidden", "q-hidden"):
        assert secret not in p.stderr, (secret, p.stderr[-2000:])


def test_receiver_down(tmp):
    """Nobody listens: the run succeeds and exits 0 within the close deadline; the spans
    are in the store, their loss is counted in one warning at the end."""
    port = free_port()
    with Mock(tmp, example_script()) as mock:
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:%d/v1/traces" % port}
        d, p = run_job(tmp, mock, "", env=env, log="info")
    rows = store_spans(d)
    assert len(rows) >= 8
    assert p.elapsed < 20, p.elapsed  # close waits at most 5 s for the export
    assert p.stderr.count("otlp: cannot export") == 1, p.stderr  # once per streak
    assert "Couldn't connect" in p.stderr or "connect" in p.stderr.lower(), p.stderr
    assert "otlp: 0 spans exported to http://127.0.0.1:%d/v1/traces, %d dropped" % (
        port, len(rows)) in p.stderr, p.stderr[-2000:]
    s = json.load(open(os.path.join(tmp, "s.json")))
    assert s["runs_ok"] == 4, s


def test_receiver_that_never_answers(tmp):
    """A receiver that accepts and never answers (timeout 30 s): the runs are not held up,
    and the close gives the POST in flight 5 s, then cuts it and counts its spans."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    held = []
    stop = threading.Event()

    def accept():
        ls.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(ls.accept()[0])  # read nothing, answer nothing
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    try:
        with Mock(tmp, example_script()) as mock:
            env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:%d/v1/traces"
                   % ls.getsockname()[1], "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT": "30000",
                   "OTEL_BSP_SCHEDULE_DELAY": "50"}
            d, p = run_job(tmp, mock, "", env=env, log="info")
    finally:
        stop.set()
        t.join()
        for c in held:
            c.close()
        ls.close()
    rows = store_spans(d)
    assert held, "eddy never connected"
    assert 4.5 < p.elapsed < 12, p.elapsed  # the 5 s close deadline, not the 30 s timeout
    assert "otlp: 0 spans exported" in p.stderr and "%d dropped" % len(rows) in p.stderr, \
        p.stderr[-2000:]
    s = json.load(open(os.path.join(tmp, "s.json")))
    assert s["runs_ok"] == 4 and s["wall_ms"] < 3000, s  # the runs did not wait


def test_batches_are_bounded(tmp):
    """400 runs, batches of at most 100 spans: several POSTs, every span once."""
    with Receiver() as rx, Mock(tmp, example_script()) as mock:
        d = copy_example(tmp)
        job = custom_job(d, mock.base_url)
        write(os.path.join(d, "in.jsonl"), "".join(
            '{"id":"e%d","customer_id":"C%d","text":"where is order A100%d"}\n' % (i, i % 50,
                                                                                  i % 5)
            for i in range(400)))
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rx.url,
               "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "100", "OTEL_BSP_SCHEDULE_DELAY": "20"}
        p = eddy("run", job, "--input", os.path.join(d, "in.jsonl"), "--output",
                 os.path.join(tmp, "out.jsonl"), env=env, check=0, timeout=120)
        rows = store_spans(d)
        posts = list(rx.posts)
    assert len(read_jsonl(os.path.join(tmp, "out.jsonl"))) == 400
    sizes = [sum(len(ss["spans"]) for rs in json.loads(x["body"])["resourceSpans"]
                 for ss in rs["scopeSpans"]) for x in posts]
    assert len(rows) >= 1200 and len(posts) >= len(rows) // 100, (len(rows), sizes)
    assert max(sizes) <= 100, sizes
    got = rx.spans()
    assert sorted(s["spanId"] for s in got) == sorted(r[1] for r in rows)
    assert "otlp: %d spans exported" % len(rows) in p.stderr, p.stderr[-2000:]


def test_queue_full_drops_without_blocking(tmp):
    """A queue of 2 spans and a receiver that is slow to answer: the rest are dropped and
    counted, the run is not held up, and the warning comes once."""
    port = free_port()
    with Mock(tmp, example_script()) as mock:
        env = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:%d/v1/traces" % port,
               "OTEL_BSP_MAX_QUEUE_SIZE": "2", "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2"}
        d, p = run_job(tmp, mock, "", env=env, log="info")
    rows = store_spans(d)
    assert p.stderr.count("export queue is full") == 1, p.stderr
    assert "%d dropped" % len(rows) in p.stderr, p.stderr[-2000:]


def test_check_reports_bad_settings(tmp):
    """`eddy check` names the place of each bad trace.otlp setting, never a header value."""
    d = os.path.join(tmp, "job")
    job = custom_job(d, "http://127.0.0.1:9/v1")
    with open(job, "a") as f:
        f.write("trace:\n  otlp:\n    endpoint: grpc://127.0.0.1:4317\n"
                "    headers: { \"bad name\": topsecret1, x-map: { a: 1 } }\n"
                "    timout: 3s\n")
    p = eddy("check", job, check=2)
    err = p.stderr + p.stdout
    lines = open(job).read().split("\n")
    ep = next(i for i, l in enumerate(lines) if "grpc://" in l) + 1
    assert "job.yaml:%d:" % ep in err and "'endpoint' must be an http:// or https:// URL" in err, err
    assert "'bad name' is not a valid HTTP header name" in err, err
    assert "header 'x-map' must be a string" in err, err
    assert "unknown key 'timout' (did you mean 'timeout'?)" in err, err
    assert "topsecret1" not in err, err


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]

if __name__ == "__main__":
    sys.exit(run.suite_main(TESTS, "eddy-otlp-", 38, "otlp"))
