#!/usr/bin/env python3
"""The HTTP server of `eddy run --dashboard`: /metrics in the Prometheus text format (read
with prometheus-client's own parser, installed by tests/tools/promclient.sh) with counters
that match the run's summary; /api/traces and /api/traces/ID; read-only, with strict
security headers; and a token required on every path when it listens beyond loopback.
Uses the runner and helpers of run.py.

    python3 tests/integration/dashboard_test.py --build build [--only NAME]
"""
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Mock, custom_job, copy_example, write  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROM = os.path.join(ROOT, ".cache", "promclient", "bin", "python")
TOKEN = "s3cret-token-for-the-dashboard"


def prom_parse(text):
    """Samples of TEXT as prometheus-client parses them: [(name, labels, value)]."""
    code = ("import json, sys\n"
            "from prometheus_client.parser import text_string_to_metric_families\n"
            "out = []\n"
            "for fam in text_string_to_metric_families(sys.stdin.read()):\n"
            "    for s in fam.samples:\n"
            "        out.append([s.name, s.labels, s.value])\n"
            "print(json.dumps(out))\n")
    p = subprocess.run([PROM, "-c", code], input=text, capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, "prometheus-client could not parse /metrics:\n%s" % p.stderr[-2000:]
    return json.loads(p.stdout)


def value(samples, name, **labels):
    found = [v for n, l, v in samples if n == name and all(l.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def get(url, headers=None, method="GET"):
    """(status, headers, body) of a request; never raises for an HTTP status."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


class Running:
    """`eddy run --dashboard=ADDR` on stdin kept open; .url once it serves."""

    def __init__(self, job, out, addr, env=None, summary=None):
        cmd = [os.path.join(run.ARGS.build, "eddy"), "run", job, "--input", "-", "--output", out,
               "--dashboard=" + addr]
        if summary:
            cmd += ["--summary-json", summary]
        e = dict(os.environ)
        e.update(env or {})
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=e)
        self.err = []
        self.url = None
        got = threading.Event()

        def drain():
            for line in self.p.stderr:
                self.err.append(line)
                m = re.search(r"dashboard and metrics at (http://\S+)", line)
                if m:
                    self.url = m.group(1)
                    got.set()
            got.set()

        self.t = threading.Thread(target=drain, daemon=True)
        self.t.start()
        got.wait(20)

    def send(self, events):
        self.p.stdin.write("".join(json.dumps(e) + "\n" for e in events))
        self.p.stdin.flush()

    def finish(self):
        self.p.stdin.close()
        rc = self.p.wait(timeout=60)
        self.t.join(10)
        return rc


SCRIPT = {"rules": [
    {"when": {"last_user_contains": "FAIL"}, "fault": {"status": 400, "error_code": "bad"}},
    {"when": {"last_role": "tool"}, "reply": "order: ${tool}"},
    {"when": {"last_user_contains": "A1042"},
     "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1042"}}]},
    {"when": {"last_user_contains": "Z9999"},
     "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "Z9999"}}]},
    {"reply": "fine"}]}


def events(n):
    texts = ["Where is A1042?", "and Z9999?", "hello", "FAIL please"]
    return [{"id": "e%d" % i, "customer_id": "C%d" % (i % 7), "text": texts[i % 4]}
            for i in range(n)]


def wait_for(cond, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_metrics_match_the_summary(tmp):
    """While the job runs: /metrics parses, and once the 40 events are done its counters
    equal the summary's (runs ok and failed, LLM calls, tokens, tool calls and errors, dead
    letters); the histograms' counts agree with their counters."""
    if subprocess.run(["sh", os.path.join(ROOT, "tests", "tools", "promclient.sh")]).returncode:
        raise AssertionError("prometheus-client is needed: sh tests/tools/promclient.sh")
    d = copy_example(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = custom_job(d, mock.base_url)
        summary = os.path.join(tmp, "s.json")
        r = Running(job, os.path.join(tmp, "out.jsonl"), "127.0.0.1:0", summary=summary)
        assert r.url, "".join(r.err)
        r.send(events(40))

        def done():
            s = prom_parse(get(r.url + "metrics")[2])
            return value(s, "eddy_events_out_total") + value(s, "eddy_dead_letters_total") >= 40
        wait_for(done, "40 events through")
        status, headers, text = get(r.url + "metrics")
        assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
        s = prom_parse(text)
        assert r.finish() == 0, "".join(r.err)
    sm = json.load(open(summary))
    assert value(s, "eddy_events_in_total") == sm["events"] == 40, sm
    assert value(s, "eddy_otlp_spans_exported_total") == 0  # no export configured
    assert value(s, "eddy_otlp_spans_dropped_total") == 0
    assert value(s, "eddy_runs_total", agent="support", status="ok") == sm["runs_ok"], sm
    assert value(s, "eddy_runs_total", agent="support", status="error") == sm["runs_failed"], sm
    assert value(s, "eddy_dead_letters_total") == sm["dead_letters"] == 10, sm
    calls = value(s, "eddy_llm_calls_total", model="default", status="ok") + \
        value(s, "eddy_llm_calls_total", model="default", status="error")
    assert calls == sm["llm_calls"], (calls, sm)
    assert value(s, "eddy_llm_tokens_total", model="default", type="input") == sm["input_tokens"]
    assert value(s, "eddy_llm_tokens_total", model="default", type="output") == sm["output_tokens"]
    tools_ok = value(s, "eddy_tool_calls_total", tool="lookup_order", status="ok")
    tools_err = value(s, "eddy_tool_calls_total", tool="lookup_order", status="error")
    assert tools_ok + tools_err == sm["tool_calls"] == 20, (tools_ok, tools_err, sm)
    assert tools_err == sm["tool_errors"] == 10, (tools_err, sm)
    assert value(s, "eddy_llm_duration_seconds_count", model="default") == calls
    assert value(s, "eddy_tool_duration_seconds_count", tool="lookup_order") == 20
    assert value(s, "eddy_run_duration_seconds_count", agent="support") == 40
    assert value(s, "eddy_run_duration_seconds_bucket", agent="support", le="+Inf") == 40
    runs_by_worker = sum(v for n, l, v in s if n == "eddy_worker_runs_total")
    assert runs_by_worker == 40, runs_by_worker


def test_source_lag_and_emit_spans(tmp):
    """A file source behind the engine shows eddy_source_lag_bytes > 0 on /metrics while
    the job runs (the stdin source of the other tests has no lag to tell); every run's
    trace has an eddy.emit span naming what it handed on (an output and its output_id, or
    a dead letter and its reason)."""
    d = copy_example(tmp)
    evs = events(60)
    inp = os.path.join(tmp, "in.jsonl")
    write(inp, "".join(json.dumps(e) + "\n" for e in evs))
    with Mock(tmp, SCRIPT, latency_ms=60) as mock:
        job = custom_job(d, mock.base_url, agent_extra="max_in_flight: 2\n")
        # max_in_flight is a job setting: move it to the top level
        text = open(job).read().replace("max_in_flight: 2\n", "")
        write(job, "max_in_flight: 2\n" + text)
        cmd = [os.path.join(run.ARGS.build, "eddy"), "run", job, "--input", inp, "--output",
               os.path.join(tmp, "out.jsonl"), "--dashboard=127.0.0.1:0"]
        p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
        url, err = None, []
        for line in p.stderr:
            err.append(line)
            m = re.search(r"dashboard and metrics at (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url, "".join(err)
        threading.Thread(target=lambda: err.extend(p.stderr), daemon=True).start()
        lags = []
        deadline = time.time() + 30
        while time.time() < deadline and p.poll() is None and not lags:
            try:
                s = prom_parse(get(url + "metrics")[2])
            except Exception:  # the job may end between the two
                break
            lags = [v for n, l, v in s if n == "eddy_source_lag_bytes"]
            time.sleep(0.2)
        assert p.wait(timeout=60) == 0, "".join(err)
    assert lags and lags[0] > 0, (lags, "".join(err))
    # the emit spans
    db = os.path.join(d, ".eddy", "t", "traces.db")
    import sqlite3
    con = sqlite3.connect(db)
    emits = con.execute("SELECT attributes FROM spans WHERE name = 'eddy.emit'").fetchall()
    runs = con.execute("SELECT count(*) FROM spans WHERE parent_id IS NULL AND name LIKE "
                       "'invoke_agent%'").fetchone()[0]
    con.close()
    assert len(emits) == runs == 60, (len(emits), runs)
    kinds = [json.loads(a[0]) for a in emits]
    outs = [k for k in kinds if k.get("eddy.emit.type") == "output"]
    dls = [k for k in kinds if k.get("eddy.emit.type") == "dead_letter"]
    assert len(outs) == 45 and len(dls) == 15, (len(outs), len(dls))
    assert all(len(k.get("eddy.output_id", "")) == 32 for k in outs), outs[:2]
    assert all(k.get("eddy.dead_letter.reason") for k in dls), dls[:2]


def test_otlp_counters_in_metrics(tmp):
    """With OTLP export on (a receiver on loopback), /metrics carries the exporter's
    counters: every span the receiver got is counted exported, none dropped; without it
    they are there at 0 (see the test above's run)."""
    from otlp_test import Receiver
    d = copy_example(tmp)
    with Receiver() as rx, Mock(tmp, SCRIPT) as mock:
        job = custom_job(d, mock.base_url)
        r = Running(job, os.path.join(tmp, "out.jsonl"), "127.0.0.1:0",
                    env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rx.url,
                         "OTEL_BSP_SCHEDULE_DELAY": "100"})
        assert r.url, "".join(r.err)
        r.send(events(6))

        def exported():
            s = prom_parse(get(r.url + "metrics")[2])
            return (value(s, "eddy_events_out_total") + value(s, "eddy_dead_letters_total") >= 6
                    and value(s, "eddy_otlp_spans_exported_total") == len(rx.spans())
                    and value(s, "eddy_otlp_spans_queued") == 0 and len(rx.spans()) > 0)
        wait_for(exported, "the spans exported and counted")
        s = prom_parse(get(r.url + "metrics")[2])
        assert value(s, "eddy_otlp_spans_dropped_total") == 0
        assert value(s, "eddy_otlp_batches_failed_total") == 0
        assert r.finish() == 0, "".join(r.err)


def test_traces_api_and_headers(tmp):
    """/api/traces filters (status, key, search) and /api/traces/ID serve the store as JSON;
    bad parameters are 400, unknown paths 404, POST 405; every answer carries the CSP and
    nosniff headers; the page's script builds rows with textContent only."""
    d = copy_example(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = custom_job(d, mock.base_url)
        r = Running(job, os.path.join(tmp, "out.jsonl"), "127.0.0.1:0")
        assert r.url, "".join(r.err)
        r.send(events(8))
        wait_for(lambda: len(json.loads(get(r.url + "api/traces?limit=100")[2])) >= 8,
                 "8 traces")
        status, headers, body = get(r.url + "api/traces?status=error&limit=100")
        assert status == 200, body
        failed = json.loads(body)
        assert len(failed) == 2 and all(t["status"] == "error" for t in failed), failed
        one = json.loads(get(r.url + "api/traces?key=C1")[2])
        assert one and all(t["key"] == "C1" for t in one), one
        found = json.loads(get(r.url + "api/traces?search=order")[2])
        assert found and all("lookup_order" in t["tools"] for t in found), found
        st, _, body = get(r.url + "api/traces/" + failed[0]["trace_id"])
        t = json.loads(body)
        assert st == 200 and t["trace_id"] == failed[0]["trace_id"] and t["spans"], body[:500]
        for bad in ("status=bogus", "limit=0", "limit=abc", "since_ns=-1", "order=sideways"):
            st, _, body = get(r.url + "api/traces?" + bad)
            assert st == 400 and "error" in json.loads(body), (bad, st, body)
        assert get(r.url + "api/traces/zz-not-hex")[0] == 400
        st, _, body = get(r.url + "api/key?key=C1")
        k = json.loads(body)
        assert st == 200 and k["key"] == "C1" and isinstance(k["history"], list), body
        assert k["runs"] and all(t["key"] == "C1" for t in k["runs"]), body
        for bad in ("", "?key=", "?key=C1&history=0", "?key=C1&history=abc"):
            st, _, body = get(r.url + "api/key" + bad)
            assert st == 400 and "error" in json.loads(body), (bad, st, body)
        assert get(r.url + "nothing/here")[0] == 404
        st, h, _ = get(r.url + "metrics", method="POST")
        assert st == 405 and h.get("Allow") == "GET, HEAD", (st, h)
        for path in ("", "metrics", "api/traces", "app.js", "nothing"):
            st, h, _ = get(r.url + path)
            csp = h.get("Content-Security-Policy", "")
            assert "default-src 'none'" in csp and "script-src 'self'" in csp, (path, h)
            assert h.get("X-Content-Type-Options") == "nosniff", (path, h)
        js = get(r.url + "app.js")[2]
        assert "textContent" in js and "innerHTML" not in js, js
        assert r.finish() == 0, "".join(r.err)


def run_off_loopback(job, token):
    """`eddy run JOB --dashboard=0.0.0.0:0` on no input with EDDY_DASHBOARD_TOKEN=TOKEN."""
    return subprocess.run([os.path.join(run.ARGS.build, "eddy"), "run", job, "--input",
                           "/dev/null", "--dashboard=0.0.0.0:0"], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, EDDY_DASHBOARD_TOKEN=token))


def test_token_beyond_loopback(tmp):
    """Listening on every address needs a token: without one the run does not start; with
    EDDY_DASHBOARD_TOKEN every path answers 401 without it or with a wrong one, 200 with
    "Authorization: Bearer", and GET /?token= sets the cookie that then suffices."""
    d = copy_example(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = custom_job(d, mock.base_url)
        p = run_off_loopback(job, "")
        assert p.returncode != 0 and "needs a token" in p.stderr, (p.returncode, p.stderr)
        for bad in ("short", "a token; with spaces, and a comma", "x" * 300):
            p = run_off_loopback(job, bad)
            assert p.returncode != 0 and "16 to 256 characters" in p.stderr, (bad, p.stderr)
            assert bad not in p.stderr
        r = Running(job, os.path.join(tmp, "out.jsonl"), "0.0.0.0:0",
                    env={"EDDY_DASHBOARD_TOKEN": TOKEN})
        assert r.url, "".join(r.err)
        port = r.url.rstrip("/").rsplit(":", 1)[1]
        base = "http://127.0.0.1:%s/" % port
        for path in ("", "metrics", "api/traces", "healthz", "app.js", "no/such/path"):
            assert get(base + path)[0] == 401, path
            assert get(base + path, {"Authorization": "Bearer wrong-" + TOKEN})[0] == 401, path
            assert get(base + path, {"Authorization": "Bearer " + TOKEN[:-1]})[0] == 401, path
        assert get(base + "metrics", {"Authorization": "Bearer " + TOKEN})[0] == 200
        req = urllib.request.Request(base + "?token=" + TOKEN)
        opener = urllib.request.build_opener(NoRedirect)
        try:
            opener.open(req, timeout=10)
            raise AssertionError("no redirect")
        except urllib.error.HTTPError as e:
            assert e.code == 303, e.code
            cookie = e.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        jar = cookie.split(";")[0]
        assert get(base + "api/traces", {"Cookie": jar})[0] == 200
        assert get(base + "?token=wrong")[0] == 401
        assert r.finish() == 0, "".join(r.err)
        assert TOKEN not in "".join(r.err)


def serve_store(tmp, n):
    """Run the example's job on N events, then `eddy dashboard` on its store:
    (process, url, job). Its stderr after the first line is drained."""
    d = copy_example(tmp)
    with Mock(tmp, SCRIPT) as mock:
        job = custom_job(d, mock.base_url)
        write(os.path.join(tmp, "in.jsonl"), "".join(json.dumps(e) + "\n" for e in events(n)))
        run.eddy("run", job, "--input", os.path.join(tmp, "in.jsonl"), "--output",
                 os.path.join(tmp, "out.jsonl"), check=0)
    p = subprocess.Popen([os.path.join(run.ARGS.build, "eddy"), "dashboard", job, "--listen",
                          "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
    line = p.stderr.readline()
    m = re.search(r"at (http://\S+)", line)
    assert m, line
    threading.Thread(target=p.stderr.read, daemon=True).start()
    return p, m.group(1), job


def test_dashboard_command(tmp):
    """`eddy dashboard JOB.yaml` serves the job's trace store after the run (its API; no
    /metrics without a job running), and stops with exit 0 on SIGTERM; a bad --listen is
    an exit 2 with its reason."""
    p, url, job = serve_store(tmp, 4)
    rows = json.loads(get(url + "api/traces?limit=10")[2])
    assert len(rows) == 4, rows
    assert get(url + "metrics")[0] == 404
    p.send_signal(15)
    assert p.wait(timeout=20) == 0
    bad = run.eddy("dashboard", job, "--listen", "nowhere:99999")
    assert bad.returncode == 2 and "HOST:PORT" in bad.stderr, bad.stderr


def raw_get(port, path, host):
    """(status, body) of GET PATH with the Host header HOST, sent as is."""
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.putrequest("GET", path, skip_host=True)
    c.putheader("Host", host)
    c.endheaders()
    r = c.getresponse()
    body = r.read().decode()
    c.close()
    return r.status, body


def test_hostile_requests(tmp):
    """A loopback dashboard without a token answers only requests that name it by an address
    or as localhost: a site that rebinds its own name to 127.0.0.1 (DNS rebinding) gets 403,
    not the traces. A duration in ms too large for nanoseconds is a 400, not a wrapped-around
    filter; so is a number beyond 64 bits."""
    p, url, _ = serve_store(tmp, 4)
    try:
        port = int(url.rstrip("/").rsplit(":", 1)[1])
        for host in ("127.0.0.1:%d" % port, "localhost:%d" % port, "LOCALHOST", "127.0.0.1",
                     "[::1]:%d" % port):
            st, body = raw_get(port, "/api/traces", host)
            assert st == 200 and len(json.loads(body)) == 4, (host, st, body[:200])
        for host in ("evil.example:%d" % port, "evil.example", "localhost.evil.example",
                     "127.0.0.1.nip.io:%d" % port, "[::1"):
            for path in ("/api/traces", "/", "/metrics", "/healthz"):
                st, body = raw_get(port, path, host)
                assert st in (400, 403) and "A1042" not in body, (host, path, st, body[:200])
        for bad in ("min_ms=18446744073710", "max_ms=9223372036855",
                    "since_ns=99999999999999999999"):
            st, _, body = get(url + "api/traces?" + bad)
            assert st == 400 and "error" in json.loads(body), (bad, st, body)
        st, _, body = get(url + "api/traces?min_ms=0&max_ms=9223372036854")
        assert st == 200 and len(json.loads(body)) == 4, (st, body[:200])
    finally:
        p.send_signal(15)
        p.wait(timeout=20)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *a, **k):
        return None


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return run.suite_main(TESTS, "eddy-dash-", 34, "dashboard")


if __name__ == "__main__":
    sys.exit(main())
