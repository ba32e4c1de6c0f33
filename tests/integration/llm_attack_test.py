#!/usr/bin/env python3
"""Attacks on the provider-neutral LLM layer, by people who did not write it: broken job
files (each must be a clear `eddy check` error at file:line:col, never a crash or a hang,
and `eddy check` must accept exactly what `eddy run` starts) and hostile model servers
(every event must end as an output or a dead letter with a clear reason; no crash, no
hang, no leaked key, bounded memory).

Besides build/mockllm, a raw socket server here (Hostile) answers with arbitrary bytes.

    python3 tests/integration/llm_attack_test.py --build build [--only NAME]
"""
import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as itrun  # noqa: E402

ARGS = None
Mock, write, read_jsonl = itrun.Mock, itrun.write, itrun.read_jsonl
EXAMPLE = itrun.EXAMPLE
# no common prefix: any 10-byte piece of it in an output is a leak
SECRET = "Zq9Kx7Wm3Vb5Np1Lt8Hs4Rf6Jd2Gc0Ye"


def eddy(*args, env=None, timeout=120, stdin=None, check=None):
    return itrun.eddy(*args, env=env, timeout=timeout, stdin=stdin, check=check)


def leaks(text, key=SECRET, n=10):
    return [key[i:i + n] for i in range(len(key) - n + 1) if key[i:i + n] in text]


# -- a hostile server ------------------------------------------------------------------

class Hostile:
    """A loopback HTTP server whose HANDLER(req, conn) writes whatever bytes it likes.
    req: {method, path, headers (lower-case), body (parsed JSON or None), raw}."""

    def __init__(self, handler):
        self.handler = handler
        self.requests = []
        self.lock = threading.Lock()

    def __enter__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.stop = False
        self.t = threading.Thread(target=self._accept, daemon=True)
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        try:
            self.sock.close()
        except OSError:
            pass

    def _accept(self):
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, rest = data.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {}
                for l in lines[1:]:
                    k, _, v = l.partition(":")
                    headers[k.strip().lower()] = v.strip()
                n = int(headers.get("content-length", "0"))
                while len(rest) < n:
                    chunk = c.recv(65536)
                    if not chunk:
                        return
                    rest += chunk
                try:
                    body = json.loads(rest[:n])
                except ValueError:
                    body = None
                req = {"method": method, "path": path, "headers": headers, "body": body,
                       "raw": head + b"\r\n\r\n" + rest[:n], "t": time.time()}
                with self.lock:
                    self.requests.append(req)
                keep = self.handler(req, c)
                if not keep:
                    return
        except (OSError, BrokenPipeError, ConnectionResetError):
            pass
        finally:
            try:
                c.close()
            except OSError:
                pass


def http(status, body, headers=(), ctype="application/json"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    h = "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %d\r\n" % (status, ctype, len(body))
    for k, v in headers:
        h += "%s: %s\r\n" % (k, v)
    return h.encode() + b"\r\n" + body


def sse_head():
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")


def oa_answer(text="ok", calls=None, usage=None, finish="stop", model="m"):
    msg = {"role": "assistant", "content": text}
    if calls:
        msg["tool_calls"] = calls
    r = {"id": "x", "object": "chat.completion", "model": model,
         "choices": [{"index": 0, "message": msg, "finish_reason": finish}]}
    if usage is not None:
        r["usage"] = usage
    return r


# -- jobs ------------------------------------------------------------------------------

def setup(tmp, name="job"):
    d = os.path.join(tmp, name)
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns(".eddy"))
    return d


def model_block(port, fmt="openai", stream=False, name="default", extra="", key=True):
    base = "http://127.0.0.1:%d%s" % (port, "" if fmt == "ollama" else "/v1")
    return """  %s:
    provider: %s
    base_url: %s
%s    model: mock-%s
    stream: %s
    timeout: 5s
    retry: { attempts: 2, backoff: 20ms..100ms }
%s""" % (name, fmt, base, ("    api_key: %s\n" % SECRET) if key else "", fmt,
         "true" if stream else "false", extra)


PLAIN_AGENT = """  support:
    prompt: { user: "{{event.text}}" }
    memory: { history: 0 }
"""


def job_text(models, agents=None, top=""):
    return "job: atk\nkey: customer_id\n%s\nmodels:\n%s\nagents:\n%s\n" % (
        top, models, agents or PLAIN_AGENT)


def run_job(d, text, events, check=None, extra_args=(), env=None, timeout=120, rss=False):
    job = os.path.join(d, "job.yaml")
    write(job, text)
    inp = os.path.join(d, "in.jsonl")
    write(inp, "".join(json.dumps(e) + "\n" for e in events))
    out, dead, summ = (os.path.join(d, n) for n in ("out.jsonl", "dead.jsonl", "summary.json"))
    for f in (out, dead, summ):
        if os.path.exists(f):
            os.unlink(f)
    args = ["run", job, "--input", inp, "--output", out, "--dead-letter", dead,
            "--summary-json", summ, "--from-start"] + list(extra_args)
    if rss:
        cmd = ["/usr/bin/time", "-v", os.path.join(ARGS.build, "eddy")] + args
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=timeout)
        m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
        p.rss_kb = int(m.group(1)) if m else -1
    else:
        p = eddy(*args, check=check, env=env, timeout=timeout)
    outs = {o["event_id"]: o for o in read_jsonl(out)}
    deads = {o["event_id"]: o for o in read_jsonl(dead)}
    s = None
    if os.path.exists(summ) and os.path.getsize(summ):
        s = json.load(open(summ))
    return p, outs, deads, s


def no_crash(p):
    assert p.returncode in (0, 3), (p.returncode, p.stderr[-3000:])
    assert "AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr, \
        p.stderr[-3000:]


def ev(n=1, text="hi"):
    return [{"id": "e%d" % i, "customer_id": "K%d" % i, "text": "%s %d" % (text, i)}
            for i in range(n)]


def every_event_ends(outs, deads, n):
    assert len(outs) + len(deads) == n and not (set(outs) & set(deads)), \
        (len(outs), len(deads))


# -- job files: eddy check ---------------------------------------------------------------

def check_job(d, text, timeout=20):
    job = os.path.join(d, "job.yaml")
    write(job, text)
    try:
        return eddy("check", job, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("eddy check hung (> %d s)" % timeout)


def assert_check_error(d, text, want, line=None):
    """eddy check exits 2, names job.yaml:LINE:COL and says WANT; eddy run agrees."""
    p = check_job(d, text)
    out = p.stdout + p.stderr
    assert p.returncode == 2, (p.returncode, out[-2000:], text)
    assert "runtime error" not in out and "Sanitizer" not in out, out
    if isinstance(line, str):
        line = [i + 1 for i, l in enumerate(text.split("\n")) if line in l][0]
    pat = r"job\.yaml:%s:\d+" % (line if line else r"\d+")
    assert re.search(pat, out), ("no job.yaml:%s:col in" % line, out[-2000:])
    assert re.search(want, out, re.I), (want, out[-2000:])
    assert not leaks(out), out
    # eddy run refuses it the same way, before it starts
    r = eddy("run", os.path.join(d, "job.yaml"), "--input", "/dev/null", timeout=20)
    assert r.returncode == 2, ("eddy run exit", r.returncode, r.stderr[-1500:])


def model_job(extra, fallback_models="", agent=None):
    """A job whose one model 'default' gets EXTRA lines (indented 4)."""
    return job_text(model_block(1, extra=extra) + fallback_models, agent)


def test_check_api_key_file_fifo_does_not_hang(tmp):
    """README: eddy check opens nothing that could block. A FIFO as api_key_file."""
    d = setup(tmp)
    os.mkfifo(os.path.join(d, "key.fifo"))
    text = model_job("").replace("    api_key: %s\n" % SECRET, "    api_key_file: key.fifo\n")
    assert_check_error(d, text, "not a regular file|cannot read", line="api_key_file")


def test_check_api_key_file_directory(tmp):
    d = setup(tmp)
    os.mkdir(os.path.join(d, "keydir"))
    text = model_job("").replace("    api_key: %s\n" % SECRET, "    api_key_file: keydir\n")
    assert_check_error(d, text, "directory|not a regular file", line="api_key_file")


def test_check_api_key_file_missing_empty_binary(tmp):
    d = setup(tmp)
    base = model_job("").replace("    api_key: %s\n" % SECRET, "    api_key_file: k.key\n")
    assert_check_error(d, base, "cannot read the key file 'k.key'", line="api_key")
    write(os.path.join(d, "k.key"), "\n\n")
    assert_check_error(d, base, "empty", line="api_key")
    # a NUL byte inside the key: the key is not what the file says; refuse, do not cut
    with open(os.path.join(d, "k.key"), "wb") as f:
        f.write(SECRET[:8].encode() + b"\0" + SECRET[8:].encode() + b"\n")
    assert_check_error(d, base, "NUL|binary|not text|invalid", line="api_key")


def test_check_api_key_file_first_line_longer_than_4k(tmp):
    """A 10 KB first line is silently cut at 4095 bytes (a wrong key sent) - refuse it."""
    d = setup(tmp)
    with open(os.path.join(d, "k.key"), "w") as f:
        f.write("A" * 10000 + "\n")
    base = model_job("").replace("    api_key: %s\n" % SECRET, "    api_key_file: k.key\n")
    assert_check_error(d, base, "long|too", line="api_key")


def test_check_api_key_with_newline_is_refused(tmp):
    """A key with CR/LF (YAML escapes) would inject HTTP headers."""
    d = setup(tmp)
    text = model_job("").replace("    api_key: %s\n" % SECRET,
                                 '    api_key: "abc\\r\\nX-Injected: yes"\n')
    assert_check_error(d, text, "api_key", line="api_key")


def test_check_api_key_with_newline_not_sent_as_header(tmp):
    """...and if eddy run does start with it, no header gets injected."""
    seen = []

    def h(req, c):
        seen.append(req["raw"])
        c.sendall(http(200, oa_answer("ok", usage={"prompt_tokens": 1, "completion_tokens": 1})))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        text = job_text(model_block(srv.port).replace(
            "    api_key: %s\n" % SECRET, '    api_key: "abc\\r\\nX-Injected: yes"\n'))
        p, outs, deads, _ = run_job(d, text, ev(1))
    for raw in seen:
        assert b"\r\nX-Injected:" not in raw, raw[:600]


def test_api_version_and_model_with_newline_not_sent_as_header(tmp):
    """api_version (anthropic-version header) with CR/LF: refused by check, or at least
    never an injected header."""
    seen = []

    def h(req, c):
        seen.append(req["raw"])
        c.sendall(http(200, {"id": "m", "type": "message", "role": "assistant", "model": "x",
                             "content": [{"type": "text", "text": "ok"}],
                             "stop_reason": "end_turn",
                             "usage": {"input_tokens": 1, "output_tokens": 1}}))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        text = job_text(model_block(srv.port, "anthropic",
                                    extra='    api_version: "2023-06-01\\r\\nX-Injected: yes"\n'))
        c = check_job(d, text)
        p, outs, deads, _ = run_job(d, text, ev(1))
    for raw in seen:
        assert b"\r\nX-Injected:" not in raw, raw[:600]
    assert c.returncode == 2, c.stdout + c.stderr


def test_api_key_from_env_with_trailing_newline(tmp):
    """api_key: ${KEY} where KEY ends in a newline (KEY="$(cat f; echo)" or a CRLF file):
    refused by check, or trimmed - never a request whose header block ends early."""
    seen = []

    def h(req, c):
        seen.append(req["raw"])
        c.sendall(http(200, oa_answer("ok", usage={"prompt_tokens": 1, "completion_tokens": 1})))
        return True
    d = setup(tmp)
    bad = []
    with Hostile(h) as srv:
        text = job_text(model_block(srv.port).replace("api_key: %s" % SECRET,
                                                      "api_key: ${ATK_KEY}"))
        for val in (SECRET + "\n", SECRET + "\r\n", SECRET + "\r"):
            del seen[:]
            write(os.path.join(d, "job.yaml"), text)
            c = eddy("check", os.path.join(d, "job.yaml"), env={"ATK_KEY": val})
            p, outs, deads, _ = run_job(d, text, ev(1), env={"ATK_KEY": val})
            auth = [l for r in seen for l in r.split(b"\r\n") if l.lower().startswith(b"authorization")]
            if c.returncode == 0 and auth != [b"Authorization: Bearer " + SECRET.encode()]:
                bad.append((repr(val[-2:]), c.returncode, auth, [r[:400] for r in seen][:1],
                            list(deads.values())[:1]))
    assert not bad, bad


def test_check_numbers_out_of_range(tmp):
    d = setup(tmp)
    cases = [
        ("    limits: { requests_per_minute: 0 }\n", "requests_per_minute"),
        ("    limits: { requests_per_minute: -5 }\n", "requests_per_minute"),
        ("    limits: { tokens_per_minute: \"lots\" }\n", "tokens_per_minute"),
        ("    limits: { tokens_per_minute: 1e300 }\n", "tokens_per_minute"),
        ("    limits: { tokens_per_minute: .nan }\n", "tokens_per_minute"),
        ("    limits: { requests_per_minute: .inf }\n", "requests_per_minute"),
        ("    price: { input: -1, output: 1 }\n", "input"),
        ("    price: { input: cheap }\n", "input"),
        ("    price: { input: .nan }\n", "input"),
        ("    price: 5\n", "price"),
        ("    first_token_timeout: -1s\n", "first_token_timeout"),
        ("    first_token_timeout: forever\n", "first_token_timeout"),
        ("    idle_timeout: 0\n", "idle_timeout"),
        ("    idle_timeout: 1e20\n", "idle_timeout"),
        ("    stream: maybe\n", "stream"),
        ("    provider: openia\n", "openia"),
        ("    provider: \"\"\n", "provider"),
    ]
    for extra, want in cases:
        text = model_job(extra.replace("stream: maybe", "stream: maybe"))
        if "stream:" in extra:
            text = text.replace("    stream: false\n", "")
        if "provider:" in extra:
            text = text.replace("    provider: openai\n", "")
        assert_check_error(d, text, want)
    # retry keys are inside a flow mapping already: replace it
    for retry, want in [("{ attempts: 2, max_wait: -1s }", "max_wait"),
                        ("{ attempts: 2, max_wait: soon }", "max_wait"),
                        ("{ attempts: 2, unavailable: 2d }", "unavailable"),
                        ("{ attempts: 2, unavailable: \"\" }", "unavailable"),
                        ("{ attempts: 0 }", "attempts"),
                        ("{ backoff: 8s..1s }", "backoff"),
                        ("{ backoff: ..1s }", "backoff")]:
        text = model_job("").replace("{ attempts: 2, backoff: 20ms..100ms }", retry)
        assert_check_error(d, text, want, line="retry:")


def test_check_fallback_shapes(tmp):
    d = setup(tmp)
    other = model_block(1, name="backup")
    cases = [
        ("    fallback: [nosuch]\n", other, "nosuch"),
        ("    fallback: [default]\n", other, "itself"),
        ("    fallback: [[backup]]\n", other, "model name"),
        ("    fallback: { a: backup }\n", other, "list"),
        ("    fallback: 5\n", other, "list"),
        ("    fallback: [\"\"]\n", other, "model name|not a model|empty"),
    ]
    for extra, more, want in cases:
        assert_check_error(d, model_job(extra, more), want, line="fallback")
    # a string is a one-model list; A->B->A is accepted (fallbacks are not transitive)
    for extra in ("    fallback: backup\n", "    fallback: [backup]\n"):
        more = other + "    fallback: [default]\n"
        p = check_job(d, model_job(extra, more))
        assert p.returncode == 0, (extra, p.stdout + p.stderr)


def test_check_fallback_error_in_a_model_with_odd_name_has_a_place(tmp):
    """A model named with '/' or '~' (JSON pointer characters): its fallback error must
    still name job.yaml:line:col."""
    d = setup(tmp)
    for name in ("a/b", "x~1y", "m~0"):
        text = job_text(model_block(1, name='"%s"' % name, extra="    fallback: [nosuch]\n"),
                        PLAIN_AGENT.replace("  support:\n", "  support:\n    model: \"%s\"\n"
                                            % name))
        assert_check_error(d, text, "nosuch", line="fallback")


def test_check_duplicate_fallback(tmp):
    """fallback: [backup, backup] tries the same model twice: refuse."""
    d = setup(tmp)
    assert_check_error(d, model_job("    fallback: [backup, backup]\n",
                                    model_block(1, name="backup")), "backup.*(twice|more than once|duplicate|already)", line="fallback")


def test_check_tool_choice(tmp):
    d = setup(tmp)
    agent = """  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
    tool_choice: %s
"""
    for v, want in [("no_such_tool", "no_such_tool"), ("5", "tool_choice"),
                    ("[auto]", "tool_choice"), ("{ type: function }", "tool_choice"),
                    ("\"\"", "tool_choice")]:
        assert_check_error(d, model_job("", agent=agent % v), want, line="tool_choice")
    # tool_choice naming a tool on an agent with no tools
    assert_check_error(d, model_job("", agent="""  support:
    prompt: { user: "{{event.text}}" }
    tool_choice: required
"""), "tool_choice", line="tool_choice")


def test_check_budget_cost_without_price(tmp):
    """budget.cost on an agent whose model has no price can never be enforced."""
    d = setup(tmp)
    assert_check_error(d, model_job("", agent="""  support:
    prompt: { user: "{{event.text}}" }
    budget: { cost: 0.05 }
"""), "price", line="budget")
    assert_check_error(d, model_job("    price: { input: 1, output: 1 }\n", agent="""  support:
    prompt: { user: "{{event.text}}" }
    budget: { cost: -1 }
"""), "cost", line="budget")


SCHEMA_AGENT = """  support:
    prompt: { user: "{{event.text}}" }
    actions: [ { on: input, do: react, output_schema: %s } ]
"""


def test_check_output_schema(tmp):
    d = setup(tmp)
    files = {
        "bad.json": "{\"type\": \"object\",",
        "ref.json": json.dumps({"type": "object", "properties": {"a": {"$ref": "#/x"}}}),
        "oneof.json": json.dumps({"oneOf": [{"type": "string"}, {"type": "number"}]}),
        "notobj.json": "[1, 2]",
        "str.json": "\"hello\"",
        "badpat.json": json.dumps({"type": "string", "pattern": "(["}),
        "badtype.json": json.dumps({"type": "strnig"}),
        "neg.json": json.dumps({"type": "string", "minLength": -1}),
        "req.json": json.dumps({"type": "object", "required": "a"}),
        "bad.yaml": "type: object\nproperties: [\n",
        "deep.json": "{\"items\": " * 20000 + "{}" + "}" * 20000,
        "schema.txt": "{}",
    }
    for n, t in files.items():
        write(os.path.join(d, n), t)
    cases = [("missing.json", "missing.json"), ("bad.json", "bad.json"),
             ("ref.json", r"\$ref"), ("oneof.json", "oneOf"), ("notobj.json", "must be an object"),
             ("str.json", "str.json"), ("badpat.json", "pattern"), ("badtype.json", "strnig"),
             ("neg.json", "minLength"), ("req.json", "required"), ("bad.yaml", "bad.yaml"),
             ("deep.json", "deep.json"), ("\"{ type: object, format: email }\"", "."),
             ("5", "output_schema"), ("{ type: object, patternProperties: { a: {} } }",
                                       "patternProperties"),
             ("{ type: strnig }", "strnig"), ("{ $ref: \"#/a\" }", r"\$ref")]
    bad = []
    for v, want in cases:
        try:
            assert_check_error(d, model_job("", agent=SCHEMA_AGENT % v), want,
                               line="output_schema")
        except AssertionError as e:
            bad.append((v, str(e)[:400]))
    assert not bad, bad


def test_check_output_schema_pattern_backslash(tmp):
    """POSIX regex has no \\d: a pattern that JSON Schema (ECMA 262) users write everywhere
    must either be refused by check or enforced as meant - not silently mean 'd'."""
    d = setup(tmp)
    write(os.path.join(d, "s.json"), json.dumps(
        {"type": "object", "required": ["id"],
         "properties": {"id": {"type": "string", "pattern": "^\\d{3}$"}}}))
    text_ok = {"id": "123"}
    srv_answers = []

    def h(req, c):
        srv_answers.append(req["body"])
        c.sendall(http(200, oa_answer(json.dumps(text_ok),
                                      usage={"prompt_tokens": 1, "completion_tokens": 1})))
        return True
    with Hostile(h) as srv:
        text = job_text(model_block(srv.port), SCHEMA_AGENT % "s.json")
        p = check_job(d, text)
        if p.returncode == 2:
            assert "pattern" in (p.stdout + p.stderr), p.stdout + p.stderr
            return
        p, outs, deads, _ = run_job(d, text, ev(1))
    # accepted by check: then "123" must match ^\d{3}$
    assert "e0" in outs and outs["e0"]["output"] == text_ok, (outs, deads)


def test_check_output_schema_pattern_bomb(tmp):
    """A 30-byte pattern, ^((a{1,100}){1,100}){1,100}$, takes 1.2 GB and 2 s to compile
    (one more level: all the memory there is): refuse patterns whose compiled size is
    unreasonable instead."""
    d = setup(tmp)
    write(os.path.join(d, "s.json"), json.dumps(
        {"type": "object", "properties": {"id": {"type": "string",
                                                 "pattern": "^((a{1,100}){1,100}){1,100}$"}}}))
    write(os.path.join(d, "job.yaml"), model_job("", agent=SCHEMA_AGENT % "s.json"))
    p = subprocess.run(["/usr/bin/time", "-v", os.path.join(ARGS.build, "eddy"), "check",
                        os.path.join(d, "job.yaml")], capture_output=True, text=True, timeout=120)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr).group(1))
    assert rss < 256 * 1024, ("eddy check used %d MB for one pattern" % (rss // 1024),
                              p.stdout + p.stderr[-300:])


def test_fallback_across_providers_keeps_structured_output(tmp):
    """openai (fails) -> anthropic fallback with an output_schema: the fallback's answer
    comes through its output tool and is validated as the schema says."""
    script = {"rules": [{"when": {"format": "openai"}, "fault": {"status": 500}},
                        {"when": {"format": "anthropic", "tool_offered": "eddy_structured_output"},
                         "tool_calls": [{"name": "eddy_structured_output",
                                         "arguments": {"status": "open"}}]},
                        {"reply": "no output tool offered"}]}
    d = setup(tmp)
    write(os.path.join(d, "s.json"), json.dumps({"type": "object", "required": ["status"],
                                                 "properties": {"status": {"type": "string"}}}))
    with itrun.Mock(__import__("tempfile").mkdtemp(dir=tmp), script) as mock:
        models = (model_block(mock.port, "openai", extra="    fallback: [backup]\n").replace(
            "backoff: 20ms..100ms", "backoff: 20ms..100ms, unavailable: 0s")
            + model_block(mock.port, "anthropic", name="backup"))
        agent = """  support:
    model: default
    prompt: { user: "{{event.text}}" }
    actions: [ { on: input, do: react, output_schema: s.json } ]
"""
        p, outs, deads, _ = run_job(d, job_text(models, agent), ev(1))
    no_crash(p)
    assert "e0" in outs and outs["e0"]["output"] == {"status": "open"}, (outs, deads)


def test_check_accepts_what_run_starts_env_numbers(tmp):
    """A value that is wholly ${VAR}: check and run agree on it."""
    d = setup(tmp)
    text = model_job("    limits: { requests_per_minute: ${RPM}, tokens_per_minute: ${TPM} }\n"
                     "    price: { input: ${PIN}, output: 1 }\n")
    for env in ({"RPM": "60", "TPM": "1000", "PIN": "0.5"},
                {"RPM": "0", "TPM": "1000", "PIN": "0.5"},
                {"RPM": "abc", "TPM": "1000", "PIN": "0.5"},
                {"RPM": "60", "TPM": "1000", "PIN": "-1"}):
        write(os.path.join(d, "job.yaml"), text)
        c = eddy("check", os.path.join(d, "job.yaml"), env=env, timeout=20)
        r = eddy("run", os.path.join(d, "job.yaml"), "--input", "/dev/null", env=env, timeout=20)
        assert (c.returncode == 0) == (r.returncode == 0), (env, c.returncode, r.returncode,
                                                            c.stderr, r.stderr)
        assert c.returncode in (0, 2), (env, c.stderr)


# -- hostile servers ---------------------------------------------------------------------

def test_usage_int64_max_does_not_overflow(tmp):
    """usage at INT64_MAX: no signed overflow (UBSan), no negative totals in the output."""
    big = 9223372036854775807

    def h(req, c):
        c.sendall(http(200, oa_answer("ok", usage={"prompt_tokens": big, "completion_tokens": big,
                                                   "total_tokens": big})))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        p, outs, deads, summ = run_job(d, job_text(model_block(srv.port)), ev(3))
    no_crash(p)
    every_event_ends(outs, deads, 3)
    for o in outs.values():
        for k, v in o["usage"].items():
            assert v >= 0, o["usage"]
    if summ:
        assert summ.get("input_tokens", 0) >= 0 and summ.get("output_tokens", 0) >= 0, summ


def test_negative_usage_does_not_defeat_token_budget(tmp):
    """A server that reports negative usage must not give a run an unlimited budget."""
    n = {"i": 0}

    def h(req, c):
        n["i"] += 1
        calls = [{"id": "c%d" % n["i"], "type": "function",
                  "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"A1001\"}"}}]
        c.sendall(http(200, oa_answer("", calls=calls, finish="tool_calls",
                                      usage={"prompt_tokens": -100000, "completion_tokens": 5000})))
        return True
    d = setup(tmp)
    agent = """  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
    budget: { turns: 6, tokens: 9000 }
"""
    with Hostile(h) as srv:
        p, outs, deads, _ = run_job(d, job_text(model_block(srv.port), agent), ev(1))
    no_crash(p)
    assert "e0" in deads, (outs, deads)
    for o in list(outs.values()) + list(deads.values()):
        for k, v in (o.get("usage") or {}).items():
            assert v >= 0, o
    assert "tokens used, budget is 9000" in deads["e0"]["reason"], deads["e0"]["reason"]


def test_absurd_usage_does_not_wedge_the_rate_limiter(tmp):
    """One answer claiming 10^15 tokens with tokens_per_minute set: later events of the
    job must not all wait (the bucket would need 10^9 minutes)."""
    n = {"i": 0}

    def h(req, c):
        n["i"] += 1
        u = {"prompt_tokens": 10 ** 15, "completion_tokens": 1} if n["i"] == 1 else \
            {"prompt_tokens": 10, "completion_tokens": 1}
        c.sendall(http(200, oa_answer("ok", usage=u)))
        return True
    d = setup(tmp)
    agent = PLAIN_AGENT + "    budget: { wall: 8s }\n"
    with Hostile(h) as srv:
        m = model_block(srv.port, extra="    limits: { concurrency: 1, tokens_per_minute: 600000 }\n")
        t0 = time.time()
        p, outs, deads, _ = run_job(d, job_text(m, agent), ev(4))
    no_crash(p)
    every_event_ends(outs, deads, 4)
    assert len(outs) == 4, ({k: v["reason"] for k, v in deads.items()}, time.time() - t0)


def test_usage_strings_and_reals(tmp):
    def h(req, c):
        c.sendall(http(200, oa_answer("ok", usage={"prompt_tokens": "12", "completion_tokens": 1e30,
                                                   "prompt_tokens_details": "x"})))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        p, outs, deads, _ = run_job(d, job_text(model_block(srv.port)), ev(2))
    no_crash(p)
    assert len(outs) == 2, deads
    for o in outs.values():
        assert all(isinstance(v, int) and 0 <= v < 2 ** 53 for v in o["usage"].values()), o


def test_huge_plain_body_bounded(tmp):
    """A 200 MB answer: eddy stops reading (bounded memory), retries, dead-letters."""
    def h(req, c):
        n = 200 << 20
        c.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                   % n).encode())
        c.sendall(b'{"choices":[{"message":{"content":"')
        blk = b"a" * (1 << 20)
        for _ in range(200):
            c.sendall(blk)
        return False
    d = setup(tmp)
    with Hostile(h) as srv:
        p, outs, deads, _ = run_job(d, job_text(model_block(srv.port).replace("timeout: 5s",
                                                                              "timeout: 30s")),
                                    ev(1), rss=True, timeout=200)
    no_crash(p)
    every_event_ends(outs, deads, 1)
    assert "e0" in deads, outs
    assert p.rss_kb < 400 * 1024 * RSS_SLACK, p.rss_kb


def test_endless_stream_is_bounded(tmp):
    """A stream that sends text forever (never finishes) within the timeout: bounded memory
    (a plain answer is cut at 64 MiB; a stream must be too), the event dead-letters."""
    stop = threading.Event()

    def h(req, c):
        c.sendall(sse_head())
        chunk = ("data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 60000}}]})
                 + "\n\n").encode()
        t0 = time.time()
        while not stop.is_set() and time.time() - t0 < 30:
            c.sendall(chunk)
        return False
    d = setup(tmp)
    with Hostile(h) as srv:
        m = model_block(srv.port, stream=True).replace("timeout: 5s", "timeout: 20s").replace(
            "attempts: 2", "attempts: 1")
        t0 = time.time()
        p, outs, deads, _ = run_job(d, job_text(m), ev(1), rss=True, timeout=120)
        stop.set()
    no_crash(p)
    assert "e0" in deads, outs
    assert time.time() - t0 < 40, time.time() - t0
    assert p.rss_kb < 256 * 1024 * RSS_SLACK, ("RSS %d MB after 20 s of stream" % (p.rss_kb // 1024),
                                   deads["e0"]["reason"])


def test_stream_keepalives_forever_ends_by_timeout(tmp):
    """Only SSE comments (keepalives) for ever, no token: first_token_timeout must fire even
    though bytes arrive; else the per-attempt timeout."""
    def h(req, c):
        c.sendall(sse_head())
        t0 = time.time()
        while time.time() - t0 < 40:
            c.sendall(b": keepalive\n\n")
            time.sleep(0.05)
        return False
    d = setup(tmp)
    with Hostile(h) as srv:
        m = model_block(srv.port, stream=True, extra="    first_token_timeout: 1s\n").replace(
            "timeout: 5s", "timeout: 30s").replace("attempts: 2", "attempts: 1")
        t0 = time.time()
        p, outs, deads, _ = run_job(d, job_text(m), ev(1), timeout=120)
        el = time.time() - t0
    no_crash(p)
    assert "e0" in deads, outs
    assert el < 10, ("first_token_timeout 1s took", el, deads["e0"]["reason"])


def test_stream_without_end_marker(tmp):
    """A full answer (finish_reason stop, usage) but no [DONE], then the connection closes."""
    for fmt in ("openai", "anthropic", "ollama"):
        def h(req, c, fmt=fmt):
            c.sendall(sse_head() if fmt != "ollama" else
                      b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n")
            if fmt == "openai":
                c.sendall(b'data: {"choices":[{"index":0,"delta":{"content":"hello"}}]}\n\n')
                c.sendall(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n')
            elif fmt == "anthropic":
                c.sendall(b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","model":"x","usage":{"input_tokens":1,"output_tokens":0}}}\n\n')
                c.sendall(b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n')
                c.sendall(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello"}}\n\n')
            else:
                c.sendall(b'{"message":{"role":"assistant","content":"hello"},"done":false}\n')
            return False
        d = setup(tmp, fmt)
        with Hostile(h) as srv:
            p, outs, deads, _ = run_job(d, job_text(model_block(srv.port, fmt, stream=True)), ev(1))
            nreq = len(srv.requests)
        no_crash(p)
        assert "e0" in deads, (fmt, outs)
        assert nreq == 2, (fmt, nreq)  # retried
        assert re.search("end|cut|incomplete|closed", deads["e0"]["reason"], re.I), deads["e0"]


def test_stream_of_100k_tiny_chunks(tmp):
    """10^5 one-byte deltas: the whole answer, in reasonable time."""
    def h(req, c):
        c.sendall(sse_head())
        buf = []
        for i in range(100000):
            buf.append('data: {"choices":[{"index":0,"delta":{"content":"%s"}}]}\n\n' % "abcdefghij"[i % 10])
        buf.append('data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],'
                   '"usage":{"prompt_tokens":1,"completion_tokens":1}}\n\ndata: [DONE]\n\n')
        data = "".join(buf).encode()
        for i in range(0, len(data), 97):
            c.sendall(data[i:i + 97])
        return False
    d = setup(tmp)
    with Hostile(h) as srv:
        t0 = time.time()
        p, outs, deads, _ = run_job(d, job_text(model_block(srv.port, stream=True).replace(
            "timeout: 5s", "timeout: 60s")), ev(1), timeout=120)
    no_crash(p)
    assert "e0" in outs, deads
    assert outs["e0"]["output"] == "abcdefghij" * 10000
    assert time.time() - t0 < 30, time.time() - t0


def test_ten_thousand_tool_calls(tmp):
    for stream in (False, True):
        calls = [{"id": "c%d" % i, "type": "function", "index": i,
                  "function": {"name": "lookup_order", "arguments": "{\"order_id\":\"A1001\"}"}}
                 for i in range(10000)]

        def h(req, c, stream=stream):
            if not stream:
                c.sendall(http(200, oa_answer(None, calls=calls, finish="tool_calls")))
                return True
            c.sendall(sse_head())
            out = []
            for cl in calls:
                out.append("data: " + json.dumps({"choices": [{"index": 0, "delta": {"tool_calls": [cl]}}]}) + "\n\n")
            out.append('data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\ndata: [DONE]\n\n')
            c.sendall("".join(out).encode())
            return False
        d = setup(tmp, "s%d" % stream)
        agent = """  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
"""
        with Hostile(h) as srv:
            t0 = time.time()
            p, outs, deads, _ = run_job(d, job_text(model_block(srv.port, stream=stream), agent),
                                        ev(1), rss=True)
        no_crash(p)
        assert "e0" in deads and "tool call" in deads["e0"]["reason"], (outs, deads)
        slack = RSS_SLACK
        assert time.time() - t0 < 30 * slack and p.rss_kb < 500 * 1024 * slack, \
            (time.time() - t0, p.rss_kb)


def test_thirty_thousand_streamed_tool_calls_in_time(tmp):
    """3x10^4 tool-call deltas (3x10^4 distinct calls, 3 MB) in one stream: parsed in linear-ish
    time, then the tool_calls budget ends the run."""
    def h(req, c):
        c.sendall(sse_head())
        out = []
        for i in range(30000):
            out.append('data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":%d,"id":"c%d",'
                       '"type":"function","function":{"name":"lookup_order","arguments":"{}"}}]}}]}\n\n'
                       % (i, i))
        out.append('data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
                   'data: [DONE]\n\n')
        c.sendall("".join(out).encode())
        return False
    d = setup(tmp)
    agent = """  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
"""
    with Hostile(h) as srv:
        t0 = time.time()
        p, outs, deads, _ = run_job(d, job_text(model_block(srv.port, stream=True).replace(
            "timeout: 5s", "timeout: 120s"), agent), ev(1), rss=True, timeout=300)
        el = time.time() - t0
    no_crash(p)
    every_event_ends(outs, deads, 1)
    # the event loop is busy all that time: every other key waits too
    assert el < 5, ("3x10^4 streamed calls took %.1f s (quadratic call lookup)" % el)


def test_streamed_tool_call_without_name(tmp):
    """A streamed tool call whose name never comes: an error to the model or a dead letter
    naming it, no crash."""
    def h(req, c):
        if req["body"] and any(m.get("role") == "tool" for m in req["body"]["messages"]):
            c.sendall(http(200, oa_answer("recovered")))
            return True
        c.sendall(sse_head())
        c.sendall(b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1",'
                  b'"function":{"arguments":"{}"}}]}}]}\n\n'
                  b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n'
                  b'data: [DONE]\n\n')
        return False
    d = setup(tmp)
    agent = """  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
"""
    with Hostile(h) as srv:
        p, outs, deads, _ = run_job(d, job_text(model_block(srv.port, stream=True), agent), ev(1))
    no_crash(p)
    every_event_ends(outs, deads, 1)
    if "e0" in deads:
        assert "name" in deads["e0"]["reason"], deads["e0"]


def test_sigterm_during_endless_stream(tmp):
    """SIGTERM while a stream trickles keepalives with no timeouts that would fire: eddy
    abandons it after shutdown_grace (exit 3) instead of hanging."""
    def h(req, c):
        c.sendall(sse_head())
        t0 = time.time()
        while time.time() - t0 < 60:
            c.sendall(b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n')
            time.sleep(0.1)
        return False
    d = setup(tmp)
    with Hostile(h) as srv:
        m = model_block(srv.port, stream=True).replace("timeout: 5s", "timeout: 1d")
        job = os.path.join(d, "job.yaml")
        write(job, job_text(m, PLAIN_AGENT + "    budget: { wall: 1d }\n", top="shutdown_grace: 1s"))
        out = os.path.join(d, "out.jsonl")
        pr = subprocess.Popen([os.path.join(ARGS.build, "eddy"), "run", job, "--input", "-",
                               "--output", out], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        pr.stdin.write(b'{"id":"a","customer_id":"K","text":"x"}\n')
        pr.stdin.flush()
        time.sleep(1.5)
        pr.send_signal(15)
        t0 = time.time()
        try:
            pr.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            pr.kill()
            raise AssertionError("eddy did not stop within 15 s of SIGTERM")
    assert pr.returncode == 3, pr.returncode
    assert time.time() - t0 < 5, time.time() - t0


def test_unknown_finish_reason(tmp):
    """finish_reason 'banana' with text: an output (or a clear dead letter), no crash."""
    def h(req, c):
        c.sendall(http(200, oa_answer("fine", finish="banana")))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        p, outs, deads, _ = run_job(d, job_text(model_block(srv.port)), ev(1))
    no_crash(p)
    every_event_ends(outs, deads, 1)


def test_deeply_nested_structured_answer(tmp):
    """A structured answer 100000 arrays deep, then 1500 objects deep (under jansson's
    limit): no stack overflow in the validator; a dead letter or a repair."""
    sys.setrecursionlimit(20000)  # to read a 1500-deep output back
    for depth, opener, closer in ((100000, "[", "]"), (1500, "{\"a\":", "}")):
        ans = opener * depth + "1" + closer * depth

        body = json.dumps(oa_answer("@@", usage={"prompt_tokens": 1, "completion_tokens": 1}))
        body = body.replace('"@@"', '"' + ans.replace('"', '\\"') + '"')

        def h(req, c, body=body):
            c.sendall(http(200, body))
            return True
        d = setup(tmp, "d%d" % depth)
        schema = {"type": "object", "properties": {"a": {"type": "object",
                  "properties": {"a": {"type": "object"}}}}}
        write(os.path.join(d, "s.json"), json.dumps(schema))
        with Hostile(h) as srv:
            p, outs, deads, _ = run_job(d, job_text(model_block(srv.port), SCHEMA_AGENT % "s.json"),
                                        ev(1))
        no_crash(p)
        every_event_ends(outs, deads, 1)


def test_invalid_utf8_in_answers(tmp):
    """Raw invalid UTF-8 and lone surrogates in content, plain and streamed, every format:
    outputs and dead letters stay valid UTF-8 JSON."""
    bad = b"caf\xe9 \xff\xfe end"
    for stream in (False, True):
        def h(req, c, stream=stream):
            if not stream:
                body = b'{"choices":[{"index":0,"message":{"role":"assistant","content":"' + bad + \
                    b' \\udc00"},"finish_reason":"stop"}]}'
                c.sendall(http(200, body))
                return True
            c.sendall(sse_head())
            c.sendall(b'data: {"choices":[{"index":0,"delta":{"content":"' + bad + b'"}}]}\n\n')
            c.sendall(b'data: {"choices":[{"index":0,"delta":{"content":"\\ud800x"}}]}\n\n')
            c.sendall(b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
            return False
        d = setup(tmp, "u%d" % stream)
        with Hostile(h) as srv:
            p, outs, deads, _ = run_job(d, job_text(model_block(srv.port, stream=stream)), ev(1))
        no_crash(p)
        every_event_ends(outs, deads, 1)
        for f in ("out.jsonl", "dead.jsonl"):
            path = os.path.join(d, f)
            if os.path.exists(path):
                open(path, "rb").read().decode("utf-8")  # strict


def test_retry_after_absurd_values(tmp):
    """retry-after-ms inf / 1e30 / -5 / nan, retry-after a far date or garbage: no crash, the
    dead letter never claims a negative wait, and no instant retry storm."""
    cases = [("retry-after-ms", "inf"), ("retry-after-ms", "1e30"),
             ("retry-after-ms", "9223372036854775808"), ("retry-after-ms", "-5"),
             ("retry-after-ms", "nan"), ("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT"),
             ("retry-after", "-1"), ("retry-after", "soon"), ("retry-after", "1e400")]
    bad = []
    for name, val in cases:
        def h(req, c, name=name, val=val):
            c.sendall(http(429, {"error": {"message": "slow down", "type": "rate_limit"}},
                           headers=[(name, val)]))
            return True
        d = setup(tmp, re.sub(r"\W", "_", name + val))
        with Hostile(h) as srv:
            t0 = time.time()
            p, outs, deads, _ = run_job(d, job_text(model_block(srv.port).replace(
                "attempts: 2", "attempts: 3")), ev(1), timeout=60)
            el = time.time() - t0
        try:
            no_crash(p)
            assert "e0" in deads, (name, val, outs)
            r = deads["e0"]["reason"]
            assert not re.search(r"retry after -\d", r), (name, val, r)
            assert "nan" not in r.lower().split("slow down")[0] and "inf s" not in r, (name, val, r)
            assert el < 30, (name, val, el)
        except AssertionError as e:
            bad.append(str(e)[-300:])
    assert not bad, bad


def test_max_wait_zero_means_zero(tmp):
    """retry.max_wait: 0 is accepted (range 0..1d) but silently means 60 s: a retry-after of
    3 s is then waited for. 0 must mean 'never wait for a server's retry-after'."""
    def h(req, c):
        c.sendall(http(429, {"error": {"message": "later"}}, headers=[("retry-after", "3")]))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        m = model_block(srv.port).replace("{ attempts: 2, backoff: 20ms..100ms }",
                                          "{ attempts: 3, backoff: 20ms..100ms, max_wait: 0s }")
        t0 = time.time()
        p, outs, deads, _ = run_job(d, job_text(m), ev(1))
        el, n = time.time() - t0, len(srv.requests)
    no_crash(p)
    assert "e0" in deads, outs
    assert n == 1 and el < 2.5, (n, el, deads["e0"]["reason"])
    assert "max_wait" in deads["e0"]["reason"], deads["e0"]["reason"]


def test_ratelimit_headers_garbage(tmp):
    """x-ratelimit-* headers with garbage values: answers still go through, no hang."""
    hdrs = [("x-ratelimit-remaining-requests", "0"), ("x-ratelimit-reset-requests", "1e400s"),
            ("x-ratelimit-remaining-tokens", "-1"), ("x-ratelimit-reset-tokens", "99999999h"),
            ("x-ratelimit-limit-requests", "banana")]

    def h(req, c):
        c.sendall(http(200, oa_answer("ok", usage={"prompt_tokens": 1, "completion_tokens": 1}),
                       headers=hdrs))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        m = model_block(srv.port, extra="    limits: { requests_per_minute: 6000, "
                        "tokens_per_minute: 600000 }\n    retry: { max_wait: 2s }\n")
        m = m.replace("    retry: { attempts: 2, backoff: 20ms..100ms }\n", "")
        t0 = time.time()
        p, outs, deads, _ = run_job(d, job_text(m), ev(3))
    no_crash(p)
    assert len(outs) == 3, deads
    assert time.time() - t0 < 15, time.time() - t0


def test_429_storm_ends(tmp):
    """Every request 429 with retry-after 0, 50 events, concurrency 8: each ends as a dead
    letter after its attempts; the server sees no more than events x attempts requests."""
    def h(req, c):
        c.sendall(http(429, {"error": {"message": "storm"}}, headers=[("retry-after", "0")]))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        m = model_block(srv.port, extra="    limits: { concurrency: 8 }\n")
        p, outs, deads, _ = run_job(d, job_text(m), ev(50))
        n = len(srv.requests)
    no_crash(p)
    assert len(deads) == 50, (len(outs), len(deads))
    assert n <= 100, n
    assert all("429" in v["reason"] for v in deads.values()), list(deads.values())[0]


def test_fallback_to_other_provider_with_tools_and_history(tmp):
    """First model (openai) fails on the second turn, the anthropic fallback gets a
    conversation with an OpenAI tool call id in it: it must still answer."""
    script = {"rules": [
        {"when": {"format": "openai", "last_role": "user"},
         "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1001"}}]},
        {"when": {"format": "openai"}, "fault": {"status": 500}},
        {"when": {"format": "anthropic", "last_role": "tool"}, "reply": "done: ${tool}"},
        {"reply": "?"}]}
    d = setup(tmp)
    with Mock(tmp, script) as mock:
        models = (model_block(mock.port, "openai", extra="    fallback: [backup]\n")
                  + model_block(mock.port, "anthropic", name="backup"))
        agent = """  support:
    model: default
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
"""
        p, outs, deads, _ = run_job(d, job_text(models, agent), ev(1, "order A1001"))
    no_crash(p)
    assert "e0" in outs and outs["e0"]["output"].startswith("done:"), (outs, deads)
    assert outs["e0"]["model"] == "backup", outs["e0"]


def test_anthropic_output_tool_name_in_a_normal_run(tmp):
    """A model calling 'eddy_structured_output' in a run that has no output_schema: an
    unknown tool (error to the model), never taken as the answer or a crash."""
    script = {"rules": [
        {"when": {"last_role": "user"},
         "tool_calls": [{"name": "eddy_structured_output", "arguments": {"value": "pwned"}}]},
        {"when": {"last_role": "tool"}, "reply": "after: ${tool}"}]}
    for fmt in ("anthropic", "openai"):
        d = setup(tmp, fmt)
        with Mock(os.path.join(tmp, fmt), script) if False else itrun.Mock(
                __import__("tempfile").mkdtemp(dir=tmp), script) as mock:
            agent = """  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
"""
            p, outs, deads, _ = run_job(d, job_text(model_block(mock.port, fmt), agent), ev(1))
        no_crash(p)
        assert "e0" in outs, (fmt, deads)
        assert outs["e0"]["output"].startswith("after:"), (fmt, outs["e0"])
        assert "unknown tool" in outs["e0"]["output"] or "error" in outs["e0"]["output"], outs


def test_anthropic_output_tool_with_schema_and_tools_mixed(tmp):
    """With a schema and tools, the model calls a real tool AND the output tool in one
    answer: the real tool's call must not be silently dropped while its result is
    expected (no crash; output or dead letter)."""
    script = {"rules": [
        {"when": {"last_role": "user"},
         "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1001"}},
                        {"name": "eddy_structured_output", "arguments": {"status": "open"}}]},
        {"reply": "{\"status\": \"open\"}"}]}
    d = setup(tmp)
    write(os.path.join(d, "s.json"), json.dumps({"type": "object", "required": ["status"],
                                                 "properties": {"status": {"type": "string"}}}))
    with itrun.Mock(__import__("tempfile").mkdtemp(dir=tmp), script) as mock:
        agent = """  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
    actions: [ { on: input, do: react, output_schema: s.json } ]
"""
        p, outs, deads, _ = run_job(d, job_text(model_block(mock.port, "anthropic"), agent), ev(1))
    no_crash(p)
    every_event_ends(outs, deads, 1)


def key_echo_server(where):
    """Answers 401 echoing the key at a place chosen by WHERE."""
    def h(req, c):
        if where == "msg_boundary":       # the key across the 512-byte message bound
            body = {"error": {"message": "x" * 500 + " " + SECRET, "type": "auth"}}
        elif where == "code":             # in error.code (64 bytes, cut)
            body = {"error": {"message": "bad", "code": "k" * 40 + SECRET}}
        elif where == "type":
            body = {"error": {"message": "bad", "type": SECRET + "_invalid"}}
        elif where == "text_boundary":    # a plain-text body
            body = "y" * 495 + " key=" + SECRET
        elif where == "detail":
            body = {"detail": [{"msg": "invalid key " + SECRET, "loc": ["header"]}]}
        elif where == "escaped":          # JSON-escaped in the body
            body = '{"error":{"message":"key \\u005a' + SECRET[1:] + ' bad"}}'
        elif where == "stream_error":
            c.sendall(sse_head())
            c.sendall(('data: {"error": {"message": "' + "z" * 395 + SECRET + '"}}\n\n').encode())
            return False
        elif where == "body_200":
            body = {"error": "bad key " + SECRET}
            c.sendall(http(200, body))
            return True
        elif where == "header":
            c.sendall(http(401, {"error": {"message": "bad"}}, headers=[("x-key", SECRET)]))
            return True
        else:
            body = {"error": {"message": SECRET}}
        c.sendall(http(401, body, ctype="text/plain" if isinstance(body, str) else
                       "application/json"))
        return True
    return h


def test_key_echoed_in_errors_never_leaks(tmp):
    bad = []
    for where in ("msg_boundary", "code", "type", "text_boundary", "detail", "escaped",
                  "stream_error", "body_200", "header", "plain"):
        d = setup(tmp, where)
        with Hostile(key_echo_server(where)) as srv:
            p, outs, deads, summ = run_job(d, job_text(model_block(srv.port,
                                                                   stream=where == "stream_error")),
                                           ev(1), env={"EDDY_LOG": "debug"})
        no_crash(p)
        assert "e0" in deads, (where, outs)
        seen = p.stdout + p.stderr
        for root, _, files in os.walk(d):
            for f in files:
                if f not in ("job.yaml",):
                    seen += open(os.path.join(root, f), "rb").read().decode("latin-1")
        t = eddy("trace", "list", os.path.join(d, "job.yaml"), "--json")
        seen += t.stdout
        for o in deads.values():
            tid = o.get("trace_id")
            if tid:
                seen += eddy("trace", "show", tid, os.path.join(d, "job.yaml"), "--json").stdout
        if leaks(seen):
            bad.append((where, leaks(seen)[:2], deads["e0"]["reason"][-200:]))
    assert not bad, bad


def test_api_key_file_changes_are_not_mixed(tmp):
    """Two models with different keys on the same endpoint and model: the limiter key is
    per key, and each request carries its own model's key."""
    seen = []

    def h(req, c):
        seen.append((req["body"] or {}).get("model"), )
        seen.append(req["headers"].get("authorization"))
        c.sendall(http(200, oa_answer("ok", usage={"prompt_tokens": 1, "completion_tokens": 1})))
        return True
    d = setup(tmp)
    with Hostile(h) as srv:
        m1 = model_block(srv.port, name="a")
        m2 = model_block(srv.port, name="b").replace(SECRET, "other-key-123456")
        agents = """  x:
    model: a
    prompt: { user: "{{event.text}}" }
  y:
    model: b
    prompt: { user: "{{event.text}}" }
"""
        p, outs, deads, _ = run_job(d, job_text(m1 + m2, agents), ev(2))
    no_crash(p)
    auths = [s for s in seen if s and s.startswith("Bearer")]
    assert sorted(set(auths)) == sorted({"Bearer " + SECRET, "Bearer other-key-123456"}), auths


RSS_SLACK = 1  # bounds on RSS are 3x under AddressSanitizer (see main)

TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--only")
    ARGS = ap.parse_args()
    ARGS.build = os.path.abspath(ARGS.build)
    itrun.ARGS = ARGS
    global RSS_SLACK
    with open(os.path.join(ARGS.build, "eddy"), "rb") as f:
        if b"__asan_init" in f.read():  # ASan's shadow memory, redzones and quarantine
            RSS_SLACK = 3
    return 1 if itrun.run_tests(TESTS, ARGS.only, "eddy-atk-", 60, "LLM attack") else 0


if __name__ == "__main__":
    sys.exit(main())
