#!/usr/bin/env python3
"""The LLM layer end to end: eddy against the mock model (tests/mockllm) in each of
its three formats (OpenAI, Anthropic, Ollama), plain and streaming; history moving
between providers; faults, rate limits, fallbacks, structured output, budgets,
truncation, secrets.

    python3 tests/integration/llm_test.py --build build [--only NAME]
"""
import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as itrun  # noqa: E402  (the mock, eddy() and the test runner)

ARGS = None
Mock, eddy, write, read_jsonl = itrun.Mock, itrun.eddy, itrun.write, itrun.read_jsonl
EXAMPLE = itrun.EXAMPLE
SECRET = "sk-test-SECRET-4b3c2d1e"


def base_url(mock, fmt):
    return "http://127.0.0.1:%d%s" % (mock.port, "" if fmt == "ollama" else "/v1")


def model_block(mock, fmt, stream=False, name="default", extra=""):
    return """  %s:
    provider: %s
    base_url: %s
    api_key: %s
    model: mock-%s
    stream: %s
    timeout: 5s
    retry: { attempts: 4, backoff: 20ms..200ms }
%s""" % (name, fmt, base_url(mock, fmt), SECRET, fmt, "true" if stream else "false", extra)


def job_text(models, agents=None, top=""):
    return """job: llm
key: customer_id
%s
models:
%s
agents:
%s
""" % (top, models, agents or """  support:
    prompt: { system_file: prompts/support.md, user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
    memory: { history: 10 }
    budget: { turns: 6 }
""")


def setup(tmp, name="job"):
    d = os.path.join(tmp, name)
    shutil.copytree(EXAMPLE, d, ignore=shutil.ignore_patterns(".eddy"))
    return d


def run_job(d, text, events, check=0, extra_args=(), env=None):
    job = os.path.join(d, "job.yaml")
    write(job, text)
    inp = os.path.join(d, "in.jsonl")
    write(inp, "".join(json.dumps(e) + "\n" for e in events))
    out, dead, summ = (os.path.join(d, n) for n in ("out.jsonl", "dead.jsonl", "summary.json"))
    for f in (out, dead):
        if os.path.exists(f):
            os.unlink(f)
    p = eddy("run", job, "--input", inp, "--output", out, "--dead-letter", dead,
             "--summary-json", summ, "--from-start", *extra_args, check=check, env=env)
    outs = {o["event_id"]: o for o in read_jsonl(out)} if os.path.exists(out) else {}
    deads = {o["event_id"]: o for o in read_jsonl(dead)} if os.path.exists(dead) else {}
    return p, outs, deads, json.load(open(summ)) if os.path.exists(summ) else None


def example_events(n=40):
    return [json.loads(l) for l in open(os.path.join(EXAMPLE, "events.jsonl"))][:n]


def fresh_mock(tmp, script, **kw):
    """A mock with its own folder (port file, script, request log)."""
    import tempfile
    return Mock(tempfile.mkdtemp(prefix="mock-", dir=tmp), script, **kw)


def test_example_in_every_format(tmp):
    """The example job, unchanged but for its model block, gives the same outputs against
    the mock in each format, plain and streaming."""
    script = itrun.example_script()
    results = {}
    for fmt in ("openai", "anthropic", "ollama"):
        for stream in (False, True):
            d = setup(tmp, "%s-%d" % (fmt, stream))
            with fresh_mock(tmp, script) as mock:
                p, outs, deads, summ = run_job(d, job_text(model_block(mock, fmt, stream)),
                                               example_events())
                reqs = mock.requests()
            assert not deads, (fmt, stream, list(deads.values())[:2])
            assert len(outs) == 40, (fmt, stream, len(outs), p.stderr[-2000:])
            assert {r["format"] for r in reqs} == {fmt}, (fmt, {r["format"] for r in reqs})
            assert all(r["stream"] == stream for r in reqs), (fmt, stream)
            assert summ["tool_calls"] > 10, summ
            results[(fmt, stream)] = {k: o["output"] for k, o in outs.items()}
    base = results[("openai", False)]
    for k, v in results.items():
        assert v == base, (k, [(e, v[e], base[e]) for e in base if v.get(e) != base[e]][:3])


def test_history_moves_between_providers(tmp):
    """A key's conversation written under OpenAI continues under Anthropic, then Ollama."""
    script = itrun.example_script()
    d = setup(tmp)
    ev = lambda i, text: {"id": "e%d" % i, "customer_id": "K1", "text": text}
    with fresh_mock(tmp, script) as mock:
        run_job(d, job_text(model_block(mock, "openai")), [ev(1, "Where is order A1001?")])
        run_job(d, job_text(model_block(mock, "anthropic")), [ev(2, "And order A1002?")])
        p, outs, deads, _ = run_job(d, job_text(model_block(mock, "ollama", stream=True)),
                                    [ev(3, "Thanks!")])
        reqs = mock.requests()
    assert "e3" in outs, (deads, p.stderr[-2000:])
    # the Anthropic request carried the OpenAI run as tool_use / tool_result blocks
    an = [r for r in reqs if r["format"] == "anthropic"][0]["body"]
    blocks = [b["type"] for m in an["messages"] for b in m["content"]]
    assert blocks[:4] == ["text", "tool_use", "tool_result", "text"], blocks
    assert an["system"][0]["text"].startswith("You are")
    # the Ollama request: both earlier runs, tool results named by their tool
    ol = [r for r in reqs if r["format"] == "ollama"][0]["body"]
    roles = [m["role"] for m in ol["messages"]]
    assert roles == ["system"] + ["user", "assistant", "tool", "assistant"] * 2 + ["user"], roles
    assert ol["messages"][3]["tool_name"] == "lookup_order"
    assert ol["messages"][2]["tool_calls"][0]["function"]["arguments"] == {"order_id": "A1001"}
    # the third answer counts three user messages in the conversation
    assert "message 3" in outs["e3"]["output"], outs["e3"]


def test_fault_matrix(tmp):
    """30 % of answers faulty, in every format: each event ends as an output or a dead letter
    naming the cause, and no retry comes before the retry-after it was given."""
    faults = [
        {"status": 429, "retry_after": 1},
        {"status": 500},
        {"status": 529},
        {"status": 200, "delay_ms": 1500},
        {"truncate": True},
        {"malformed": True},
        {"disconnect_after_chunks": 2},
        {"stream_error": "overloaded mid-stream"},
    ]
    for fmt in ("openai", "anthropic", "ollama"):
        rules = []
        for i, f in enumerate(faults):
            # each kind of faulty event fails its first answers, then the retries succeed;
            # FATAL events fail every time
            rules.append({"when": {"last_user_contains": "F%d-" % i}, "times": 3, "fault": f})
        rules.append({"when": {"last_user_contains": "FATAL"}, "fault": {"status": 500,
                                                                         "message": "boom"}})
        rules.append({"reply": "ok"})
        events = []
        for i in range(100):
            kind = i % 10
            if kind < 8 and i < 24:
                text = "F%d-%d please" % (kind, i)
            elif i in (24, 25, 26, 27, 28, 29):
                text = "FATAL %d" % i
            else:
                text = "fine %d" % i
            events.append({"id": "e%d" % i, "customer_id": "K%d" % i, "text": text})
        d = setup(tmp, fmt)
        with fresh_mock(tmp, {"rules": rules}) as mock:
            extra = "    first_token_timeout: 1s\n    idle_timeout: 1s\n"
            m = model_block(mock, fmt, stream=True, extra=extra).replace("timeout: 5s",
                                                                         "timeout: 1s")
            p, outs, deads, _ = run_job(d, job_text(m), events)
            reqs = mock.requests()
        assert len(outs) + len(deads) == 100, (fmt, len(outs), len(deads), p.stderr[-2000:])
        assert sorted(deads) == sorted("e%d" % i for i in range(24, 30)), \
            (fmt, {k: v["reason"] for k, v in deads.items()})
        for k, v in deads.items():
            assert "HTTP 500" in v["reason"] and "boom" in v["reason"], v["reason"]
        # retries never earlier than retry-after (1 s) after a 429
        by_text = {}
        for r in reqs:
            by_text.setdefault(json.dumps(r["body"].get("messages", [])[-1:]), []).append(r)
        for seq in by_text.values():
            seq.sort(key=lambda r: r["t_ms"])
            for a, b in zip(seq, seq[1:]):
                if a["status"] == 429:
                    assert b["t_ms"] - a["t_ms"] >= 990, (fmt, a["t_ms"], b["t_ms"])


def test_retry_after_longer_than_max_wait_ends_the_call(tmp):
    """retry-after: 3600 is neither capped nor retried at once: the call ends saying so."""
    d = setup(tmp)
    script = {"rules": [{"fault": {"status": 429, "retry_after": 3600}}]}
    with fresh_mock(tmp, script) as mock:
        t0 = time.time()
        p, outs, deads, _ = run_job(d, job_text(model_block(mock, "openai")),
                                    [{"id": "a", "customer_id": "K", "text": "hi"}])
        reqs = mock.requests()
    assert len(reqs) == 1, len(reqs)
    assert "retry after 3600.0 s, longer than retry.max_wait (60.0 s)" in deads["a"]["reason"], \
        deads["a"]["reason"]
    assert time.time() - t0 < 10


def test_rate_limits_are_shared(tmp):
    """requests_per_minute 600 (with tokens_per_minute 60000 set, not binding here) over four
    agents sharing one model: at most 10.5 requests/s over the window; a burst of 429s does
    not multiply requests."""
    agents = "".join("""  a%d:
    prompt: { user: "{{event.text}}" }
    memory: { history: 0 }
""" % i for i in range(4))
    d = setup(tmp)
    with fresh_mock(tmp, {"rules": [{"reply": "ok"}]}) as mock:
        m = model_block(mock, "openai", extra="    limits: { concurrency: 64, requests_per_minute: "
                        "600, tokens_per_minute: 60000 }\n")
        events = [{"id": "e%d" % i, "customer_id": "K%d" % i, "text": "hello %d" % i}
                  for i in range(80)]  # 320 requests: a window of about 31 s
        p, outs, deads, _ = run_job(d, job_text(m, agents), events)
        reqs = mock.requests()
    assert len(outs) == 320 or (len(outs) == 80 and not deads), (len(outs), len(deads))
    ts = sorted(r["t_ms"] for r in reqs)
    assert len(ts) == 320, len(ts)
    assert ts[-1] - ts[0] >= 30000, ts[-1] - ts[0]
    span = (ts[-1] - ts[0]) / 1000.0
    rate = (len(ts) - 10) / span  # beyond the first second's burst of 10
    assert rate <= 10.5, (rate, span)
    for i in range(len(ts)):  # no one-second window holds more than the burst + refill
        j = i
        while j < len(ts) and ts[j] - ts[i] < 1000:
            j += 1
        assert j - i <= 21, (j - i, ts[i])
    # (a 429 burst) the whole queue waits for retry-after
    d = setup(tmp, "burst")
    script = {"rules": [{"times": 8, "fault": {"status": 429, "retry_after": 2}},
                        {"reply": "ok"}]}
    with fresh_mock(tmp, script) as mock:
        m = model_block(mock, "openai", extra="    limits: { concurrency: 8 }\n")
        events = [{"id": "e%d" % i, "customer_id": "K%d" % i, "text": "x %d" % i}
                  for i in range(40)]
        p, outs, deads, _ = run_job(d, job_text(m, agents.split("  a1:")[0]), events)
        reqs = sorted(mock.requests(), key=lambda r: r["t_ms"])
    assert len(outs) == 40, (len(outs), deads)
    first429 = min(r["t_ms"] for r in reqs if r["status"] == 429)
    last429 = max(r["t_ms"] for r in reqs if r["status"] == 429)
    during = [r for r in reqs if last429 < r["t_ms"] < first429 + 1990]
    assert not during, [(r["t_ms"] - first429, r["status"]) for r in during]
    assert len(reqs) == 48, len(reqs)  # 40 answers + the 8 refused: nothing multiplied


def test_tokens_per_minute_holds(tmp):
    """tokens_per_minute 60000 with answers that use 400 tokens each (the estimate is lower:
    corrected from usage): the server sees at most about 1000 tokens a second."""
    d = setup(tmp)
    script = {"rules": [{"usage": {"input": 300, "output": 100}, "reply": "ok"}]}
    with fresh_mock(tmp, script) as mock:
        m = model_block(mock, "openai", extra="    limits: { concurrency: 64, tokens_per_minute: "
                        "60000 }\n")
        events = [{"id": "e%d" % i, "customer_id": "K%d" % i, "text": "t %d" % i}
                  for i in range(30)]
        p, outs, deads, _ = run_job(d, job_text(m, """  support:
    prompt: { user: "{{event.text}}" }
    memory: { history: 0 }
"""), events)
        ts = sorted(r["t_ms"] for r in mock.requests())
    assert len(outs) == 30 and len(ts) == 30, (len(outs), len(ts), deads)
    span = (ts[-1] - ts[0]) / 1000.0
    # beyond the first second's burst (1000 tokens, with the first answers' debt: 4 requests)
    rate = (len(ts) - 4) * 400 / span
    assert rate <= 1050, (rate, span)


def test_fallback_when_the_first_model_keeps_failing(tmp):
    d = setup(tmp)
    script = {"rules": [{"when": {"format": "openai"}, "fault": {"status": 503}},
                        {"reply": "from the fallback"}]}
    with fresh_mock(tmp, script) as mock:
        models = (model_block(mock, "openai", extra="    fallback: [backup]\n").replace(
            "backoff: 20ms..200ms", "backoff: 20ms..200ms, unavailable: 0s") +
            model_block(mock, "anthropic", name="backup"))
        p, outs, deads, summ = run_job(d, job_text(models, """  support:
    model: default
    prompt: { user: "{{event.text}}" }
"""), [{"id": "a", "customer_id": "K", "text": "hi"}])
        reqs = mock.requests()
    assert outs["a"]["output"] == "from the fallback" and outs["a"]["model"] == "backup", outs
    assert [r["format"] for r in reqs] == ["openai"] * 4 + ["anthropic"], [r["format"] for r in reqs]
    # the trace says which model answered and why the first was left
    t = json.loads(eddy("trace", "show", outs["a"]["trace_id"], os.path.join(d, "job.yaml"),
                        "--json", check=0).stdout)
    llm = [sp for sp in t["spans"] if sp["name"].startswith("chat ")]
    assert len(llm) == 1, llm
    a = llm[0]["attributes"]
    assert a["eddy.llm.model"] == "backup" and a["gen_ai.provider.name"] == "anthropic", a
    assert a["eddy.llm.fallbacks"] == 1 and "HTTP 503" in a["eddy.llm.fallback_reason"], a
    assert a["eddy.llm.fallback_reason"].startswith("default: "), a


def test_fallback_frees_the_slot_it_leaves(tmp):
    """Requests waiting for the first model's one slot start when a request falls back."""
    d = setup(tmp)
    script = {"rules": [{"when": {"format": "openai"}, "fault": {"status": 500}},
                        {"reply": "from the fallback"}]}
    with fresh_mock(tmp, script) as mock:
        models = (model_block(mock, "openai", extra="    fallback: [backup]\n"
                              "    limits: { concurrency: 1 }\n").replace(
            "attempts: 4", "attempts: 1") + model_block(mock, "ollama", name="backup"))
        p, outs, deads, _ = run_job(d, job_text(models, """  support:
    model: default
    prompt: { user: "{{event.text}}" }
    budget: { wall: 20s }
"""), [{"id": "e%d" % i, "customer_id": "K%d" % i, "text": "hi"} for i in range(3)])
    assert sorted(outs) == ["e0", "e1", "e2"], (outs, deads)


def test_structured_output_repair_then_fail(tmp):
    schema = {"type": "object", "required": ["status"], "additionalProperties": False,
              "properties": {"status": {"enum": ["open", "closed"]}}}
    script = {"rules": [
        {"when": {"last_user_contains": "does not match"}, "times": 1,
         "reply": "{\"status\": \"closed\"}"},
        {"when": {"last_user_contains": "does not match"}, "reply": "{\"status\": \"maybe\"}"},
        {"reply": "{\"status\": \"maybe\"}"}]}
    agents = """  support:
    prompt: { user: "{{event.text}}" }
    actions: [ { on: input, do: react, output_schema: schema.json } ]
"""
    for fmt in ("openai", "ollama"):
        with fresh_mock(tmp, script) as mock:
            d = setup(tmp, "so-" + fmt)
            write(os.path.join(d, "schema.json"), json.dumps(schema))
            p, outs, deads, _ = run_job(d, job_text(model_block(mock, fmt), agents),
                                        [{"id": "a", "customer_id": "K1", "text": "one"},
                                         {"id": "b", "customer_id": "K2", "text": "two"}])
            reqs = mock.requests()
        # the first repaired answer is an object in the output; the second fails
        assert sorted(outs) + sorted(deads) in (["a", "b"], ["b", "a"]), (outs, deads)
        ok = list(outs.values())[0]
        assert ok["output"] == {"status": "closed"}, ok
        bad = list(deads.values())[0]
        assert "structured output invalid after a repair turn" in bad["reason"], bad
        assert "maybe" in bad["reason"] and "/status" in bad["reason"], bad
        body = reqs[0]["body"]
        if fmt == "openai":
            assert body["response_format"]["json_schema"]["schema"] == schema
        else:
            assert body["format"] == schema


def test_budgets_each_end_with_their_own_reason(tmp):
    d = setup(tmp)
    script = {"rules": [
        {"when": {"last_user_contains": "SLEEP"}, "latency_ms": 1500, "reply": "late"},
        {"when": {"last_role": "user"}, "usage": {"input": 4000, "output": 1000},
         "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1001"}},
                        {"name": "lookup_order", "arguments": {"order_id": "A1002"}}]},
        {"usage": {"input": 4000, "output": 1000},
         "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1003"}}]}]}
    cases = {"turns": "{ turns: 2 }", "tokens": "{ tokens: 9000 }", "wall": "{ wall: 500ms }",
             "tool_calls": "{ tool_calls: 1 }", "cost": "{ cost: 0.01 }"}
    want = {"turns": "2 turns", "tokens": "tokens used, budget is 9000", "wall": "wall time",
            "tool_calls": "tool calls, budget is 1", "cost": "cost 0.015, budget is 0.01"}
    for name, budget in cases.items():
        with fresh_mock(tmp, script) as mock:
            m = model_block(mock, "openai", extra="    price: { input: 1, output: 11 }\n")
            agents = """  support:
    prompt: { user: "{{event.text}}" }
    tools: [ tools/lookup_order.lua ]
    budget: %s
""" % budget
            text = "SLEEP" if name == "wall" else "go"
            p, outs, deads, _ = run_job(setup(tmp, "b-" + name), job_text(m, agents),
                                        [{"id": "a", "customer_id": "K", "text": text}])
        assert "a" in deads, (name, outs, p.stderr[-1500:])
        assert "budget exceeded" in deads["a"]["reason"] and want[name] in deads["a"]["reason"], \
            (name, deads["a"]["reason"])


def test_cost_in_output_span_and_summary(tmp):
    d = setup(tmp)
    script = {"rules": [{"usage": {"input": 1000, "output": 500, "cached": 200}, "reply": "ok"}]}
    with fresh_mock(tmp, script) as mock:
        m = model_block(mock, "openai",
                        extra="    price: { input: 2, output: 8, cached_input: 0.5 }\n")
        p, outs, deads, summ = run_job(d, job_text(m, """  support:
    prompt: { user: "{{event.text}}" }
"""), [{"id": "a", "customer_id": "K1", "text": "x"}, {"id": "b", "customer_id": "K2",
                                                         "text": "y"}])
    # 800 fresh * 2 + 200 cached * 0.5 + 500 out * 8 per million = 0.0057
    assert abs(outs["a"]["cost"] - 0.0057) < 1e-9, outs["a"]
    assert abs(summ["cost"] - 0.0114) < 1e-9, summ
    assert summ["models"]["default"]["calls"] == 2 and summ["keys"]["K1"]["runs"] == 1, summ
    assert abs(summ["keys"]["K2"]["cost"] - 0.0057) < 1e-9, summ


def test_truncation_and_text_tool_calls_are_not_answers(tmp):
    d = setup(tmp)
    script = {"rules": [
        {"when": {"last_user_contains": "CUTCALL"}, "finish_reason": "length",
         "tool_calls": [{"name": "lookup_order", "raw_arguments": "{\"order"}]},
        {"when": {"last_user_contains": "CUTTEXT"}, "finish_reason": "length",
         "reply": "The order is on its way and it wi"},
        {"when": {"last_user_contains": "TAGS"},
         "reply": "<tool_call>{\"name\": \"lookup_order\", \"arguments\": {\"order_id\": \"A1\"}}"
                  "</tool_call>"},
        {"when": {"last_user_contains": "BARE"},
         "reply": "{\"name\": \"lookup_order\", \"arguments\": {\"order_id\": \"A1\"}}"},
        {"reply": "fine"}]}
    with fresh_mock(tmp, script) as mock:
        p, outs, deads, _ = run_job(d, job_text(model_block(mock, "openai")), [
            {"id": t, "customer_id": t, "text": t} for t in ("CUTCALL", "CUTTEXT", "TAGS", "BARE",
                                                             "ok")])
        reqs = mock.requests()
    assert sorted(outs) == ["ok"], (outs, deads)
    assert "cut off by max_tokens" in deads["CUTCALL"]["reason"] and \
        "in the middle of a tool call" in deads["CUTCALL"]["reason"], deads["CUTCALL"]
    assert "cut off by max_tokens" in deads["CUTTEXT"]["reason"], deads["CUTTEXT"]
    for k in ("TAGS", "BARE"):
        assert "wrote the call as text" in deads[k]["reason"], deads[k]
    # the cut-off call was neither run nor sent back
    assert sum(1 for r in reqs if "CUTCALL" in json.dumps(r["body"])) == 1


def test_server_errors_keep_their_message_and_unavailable_window(tmp):
    d = setup(tmp)
    script = {"strict_content": True, "rules": [
        {"when": {"last_role": "user", "last_user_contains": "A1001"},
         "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1001"}}]},
        {"when": {"last_user_contains": "LOADING"}, "times": 3,
         "fault": {"status": 503, "message": "Loading model"}},
        {"when": {"last_user_contains": "BAD"}, "fault": {"status": 400,
                                                           "message": "context too long"}},
        {"reply": "done"}]}
    with fresh_mock(tmp, script) as mock:
        m = model_block(mock, "openai").replace("attempts: 4", "attempts: 2")
        p, outs, deads, _ = run_job(d, job_text(m), [
            {"id": "tool", "customer_id": "A", "text": "order A1001"},
            {"id": "load", "customer_id": "B", "text": "LOADING"},
            {"id": "bad", "customer_id": "C", "text": "BAD"}])
    # content "" (not null) beside tool calls: the strict server accepts the echo
    assert outs["tool"]["output"] == "done", (outs, deads)
    # 503 while loading: retried past the 2 attempts, within retry.unavailable
    assert outs["load"]["output"] == "done", deads
    assert "HTTP 400" in deads["bad"]["reason"] and "context too long" in deads["bad"]["reason"], \
        deads["bad"]


def test_server_down_for_longer_than_the_attempts(tmp):
    """Connection refused for ~3 s (a server restarting): retried within retry.unavailable,
    far past what attempts and backoff alone allow (4 attempts, 20..200 ms)."""
    import socket
    import subprocess
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = setup(tmp)
    m = """  default:
    provider: openai
    base_url: http://127.0.0.1:%d/v1
    model: m
    timeout: 5s
    retry: { attempts: 4, backoff: 20ms..200ms, unavailable: 20s }
""" % port
    job = os.path.join(d, "job.yaml")
    write(job, job_text(m, """  support:
    prompt: { user: "{{event.text}}" }
"""))
    write(os.path.join(d, "in.jsonl"), json.dumps({"id": "a", "customer_id": "K", "text": "hi"})
          + "\n")
    write(os.path.join(d, "script.json"), json.dumps({"rules": [{"reply": "back"}]}))
    t0 = time.time()
    p = subprocess.Popen([os.path.join(ARGS.build, "eddy"), "run", job, "--input",
                          os.path.join(d, "in.jsonl"), "--output", os.path.join(d, "out.jsonl")],
                         stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    mock = subprocess.Popen([os.path.join(ARGS.build, "mockllm"), "--script",
                             os.path.join(d, "script.json"), "--port", str(port)],
                            stdout=subprocess.DEVNULL)
    try:
        _, err = p.communicate(timeout=60)
    finally:
        mock.terminate()
        mock.wait()
    outs = read_jsonl(os.path.join(d, "out.jsonl"))
    assert p.returncode == 0 and [o["output"] for o in outs] == ["back"], (outs, err[-2000:])
    assert time.time() - t0 >= 3


def test_secrets_never_written(tmp):
    """The key appears in nothing a run writes: logs at debug level, traces, dead letters,
    outputs, summary, eddy check; for every provider, from api_key and api_key_file."""
    for fmt in ("openai", "anthropic", "ollama"):
        d = setup(tmp, fmt)
        script = {"require_api_key": SECRET, "rules": [
            {"when": {"last_user_contains": "FAIL"},
             "fault": {"status": 401, "message": "bad key " + SECRET}},
            {"reply": "ok"}]}
        with fresh_mock(tmp, script) as mock:
            m = model_block(mock, fmt)
            if fmt == "anthropic":
                write(os.path.join(d, "key.txt"), SECRET + "\n")
                m = m.replace("api_key: " + SECRET, "api_key_file: key.txt")
            p, outs, deads, summ = run_job(d, job_text(m), [
                {"id": "a", "customer_id": "K", "text": "hello"},
                {"id": "b", "customer_id": "L", "text": "FAIL"}],
                env={"EDDY_LOG": "debug"})
            c = eddy("check", os.path.join(d, "job.yaml"), check=None)
        assert "a" in outs and "b" in deads, (fmt, outs, deads, p.stderr[-1500:])
        seen = p.stdout + p.stderr + c.stdout + c.stderr
        for root, _, files in os.walk(d):
            for f in files:
                if f == "key.txt" or f == "job.yaml":
                    continue
                seen += open(os.path.join(root, f), "rb").read().decode("latin-1")
        assert SECRET not in seen, fmt
        assert SECRET[4:] not in seen, fmt


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--only")
    ARGS = ap.parse_args()
    itrun.ARGS = ARGS
    return 1 if itrun.run_tests(TESTS, ARGS.only, "eddy-llm-", 48, "LLM") else 0


if __name__ == "__main__":
    sys.exit(main())
