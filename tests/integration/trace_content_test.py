#!/usr/bin/env python3
"""What the traces keep of a run's content: the prompts and the model's messages in the
OpenTelemetry GenAI form (gen_ai.system_instructions, gen_ai.input.messages,
gen_ai.output.messages), tool arguments and results, and the run's event and output for the
search; `trace.content: false` keeps none of it; secrets (the models' API keys and
`trace.redact` patterns) never reach the store; `trace.max_payload` bounds each text at a
character boundary; the time an LLM call waits for a concurrency slot is kept apart from
the call's span. Uses the runner and helpers of run.py.

    python3 tests/integration/trace_content_test.py --build build [--only NAME]
"""
import json
import os
import sqlite3
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402
from run import Mock, custom_job, copy_example, eddy, read_jsonl, write  # noqa: E402

SECRET = "sk-test-SECRET-9f8e7d"  # custom_job's API key
CARD = "4111-2222-3333-4444"


def job_with(d, base_url, trace_yaml, tools=("tools/lookup_order.lua",), extra_model=""):
    job = custom_job(d, base_url, tools=tools, extra_model=extra_model)
    with open(job, "a") as f:
        f.write(trace_yaml)
    return job


def run_events(d, job, tmp, events):
    path = os.path.join(tmp, "in.jsonl")
    write(path, "".join(json.dumps(e) + "\n" for e in events))
    eddy("run", job, "--input", path, "--output", os.path.join(tmp, "out.jsonl"), check=0)
    return read_jsonl(os.path.join(tmp, "out.jsonl"))


def spans(d):
    db = sqlite3.connect(os.path.join(d, ".eddy", "t", "traces.db"))
    rows = [(n, json.loads(a), s, e) for n, a, s, e in
            db.execute("SELECT name, attributes, start_ns, end_ns FROM spans ORDER BY start_ns")]
    traces = db.execute("SELECT key, input, output FROM traces ORDER BY start_ns").fetchall()
    db.close()
    return rows, traces


TOOL_SCRIPT = {"rules": [
    {"when": {"last_role": "tool"}, "reply": "Your order: ${tool}"},
    {"when": {"last_user_contains": "A1042"},
     "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "A1042"}}]},
    {"reply": "fine: ${user}"}]}


def test_prompts_and_messages_kept(tmp):
    """Each chat span holds the system prompt, this run's messages (user text, then the tool
    call and its result on the second call) and the answer; the tool span its arguments and
    result; the trace row the event and the output."""
    d = copy_example(tmp)
    with Mock(tmp, TOOL_SCRIPT) as mock:
        job = job_with(d, mock.base_url, "")
        outs = run_events(d, job, tmp, [{"id": "e1", "customer_id": "C001",
                                         "text": "Where is A1042?"}])
    assert len(outs) == 1 and outs[0]["output"].startswith("Your order:"), outs
    rows, traces = spans(d)
    chats = [a for n, a, _, _ in rows if n.startswith("chat ")]
    tools = [a for n, a, _, _ in rows if n.startswith("execute_tool ")]
    assert len(chats) == 2 and len(tools) == 1, [n for n, _, _, _ in rows]
    first, second = chats
    assert first["gen_ai.system_instructions"] == [{"type": "text", "content": "You help C001."}]
    assert first["gen_ai.input.messages"] == [
        {"role": "user", "parts": [{"type": "text", "content": "Where is A1042?"}]}], first
    out1 = first["gen_ai.output.messages"]
    assert out1[0]["role"] == "assistant" and out1[0]["finish_reason"] == "tool_calls", out1
    call = out1[0]["parts"][0]
    assert call["type"] == "tool_call" and call["name"] == "lookup_order", call
    assert json.loads(call["arguments"]) == {"order_id": "A1042"}, call
    roles = [m["role"] for m in second["gen_ai.input.messages"]]
    assert roles == ["user", "assistant", "tool"], roles
    resp = second["gen_ai.input.messages"][2]["parts"][0]
    assert resp["type"] == "tool_call_response" and resp["id"] == call["id"], resp
    assert second["gen_ai.output.messages"][0]["parts"][0]["content"].startswith("Your order:")
    t = tools[0]
    assert json.loads(t["gen_ai.tool.call.arguments"]) == {"order_id": "A1042"}, t
    assert "A1042" in t["gen_ai.tool.call.result"], t
    key, inp, out = traces[0]
    assert key == "C001" and "Where is A1042?" in inp and out.startswith("Your order:"), traces


def test_content_off(tmp):
    """trace.content: false: no prompt, message, tool argument or result, event or output in
    the store (the search finds nothing), while names, tokens and timings stay."""
    d = copy_example(tmp)
    with Mock(tmp, TOOL_SCRIPT) as mock:
        job = job_with(d, mock.base_url, "trace: { content: false }\n")
        run_events(d, job, tmp, [{"id": "e1", "customer_id": "C001",
                                  "text": "Where is A1042? zebra"}])
    rows, traces = spans(d)
    names = [n for n, _, _, _ in rows]
    assert len([n for n in names if n.startswith("chat ")]) == 2, names
    for n, a, _, _ in rows:
        for k in ("gen_ai.system_instructions", "gen_ai.input.messages",
                  "gen_ai.output.messages", "gen_ai.tool.call.arguments",
                  "gen_ai.tool.call.result", "eddy.llm.content"):
            assert k not in a, (n, k, a)
        if n.startswith("chat "):
            assert a["gen_ai.usage.input_tokens"] > 0, a
    assert traces[0][1] == "" and traces[0][2] == "", traces
    db = sqlite3.connect(os.path.join(d, ".eddy", "t", "traces.db"))
    hits = db.execute("SELECT count(*) FROM trace_text WHERE trace_text MATCH 'zebra'").fetchone()
    db.close()
    assert hits[0] == 0, hits


def test_secrets_never_stored(tmp):
    """The model's API key (returned by a tool, so it reaches the model's messages and the
    output) and a trace.redact pattern (a card number in the event) appear nowhere in the
    trace store's file, its WAL or its search index: [REDACTED] stands in their place."""
    d = copy_example(tmp)
    write(os.path.join(d, "tools", "leak.lua"), """return eddy.tool {
  name = "leak", description = "returns a secret",
  params = { q = { type = "string", required = true } },
  run = function(args, ctx) return "the key is %s" end,
}
""" % SECRET)
    script = {"rules": [
        {"when": {"last_role": "tool"}, "reply": "I was told: ${tool}"},
        {"tool_calls": [{"name": "leak", "arguments": {"q": CARD}}]}]}
    with Mock(tmp, script) as mock:
        job = job_with(d, mock.base_url,
                       "trace: { redact: ['[0-9]{4}-[0-9]{4}-[0-9]{4}-[0-9]{4}'] }\n",
                       tools=("tools/leak.lua",))
        outs = run_events(d, job, tmp, [{"id": "e1", "customer_id": "C001",
                                         "text": "my card is %s" % CARD}])
    assert SECRET in outs[0]["output"], outs  # the output itself is the job's business
    store = os.path.join(d, ".eddy", "t")
    found = []
    for name in os.listdir(store):
        if name.startswith("traces.db"):
            data = open(os.path.join(store, name), "rb").read()
            for s in (SECRET, CARD):
                if s.encode() in data:
                    found.append((name, s))
    assert not found, found
    rows, traces = spans(d)
    dump = json.dumps([a for _, a, _, _ in rows]) + json.dumps(traces)
    assert dump.count("[REDACTED]") >= 4, dump[:2000]


def test_payload_cut_at_a_character(tmp):
    """trace.max_payload: 256: a 3,000-byte event text (two-byte characters) is kept as its
    first 256 bytes at most, never half a character, with a note of what was cut."""
    d = copy_example(tmp)
    text = "é" * 1500
    with Mock(tmp, {"rules": [{"reply": "ok"}]}) as mock:
        job = job_with(d, mock.base_url, "trace: { max_payload: 256 }\n")
        run_events(d, job, tmp, [{"id": "e1", "customer_id": "C001", "text": text}])
    rows, traces = spans(d)
    chat = [a for n, a, _, _ in rows if n.startswith("chat ")][0]
    content = chat["gen_ai.input.messages"][0]["parts"][0]["content"]
    kept, _, note = content.partition("\u2026")
    assert kept and set(kept) == {"é"} and len(kept.encode()) <= 256, len(kept.encode())
    assert len(kept.encode()) >= 250 and "more bytes not kept" in note, content[-60:]
    inp = traces[0][1]
    assert len(inp.encode("utf-8")) < 400 and "more bytes not kept" in inp, len(inp)


def test_wait_for_a_slot_kept_apart(tmp):
    """concurrency 1 and 4 runs at once, the mock answering in 150 ms: the runs wait for the
    slot in turn; each chat span covers its call only (about 150 ms, not the wait before it),
    the spans do not overlap, and the waits are in eddy.llm.wait_ms."""
    d = copy_example(tmp)
    with Mock(tmp, {"rules": [{"reply": "ok"}]}, latency_ms=150) as mock:
        job = job_with(d, mock.base_url, "", extra_model="    limits: { concurrency: 1 }\n")
        outs = run_events(d, job, tmp, [{"id": "e%d" % i, "customer_id": "C%d" % i,
                                         "text": "hi"} for i in range(4)])
    assert len(outs) == 4, outs
    rows, _ = spans(d)
    chats = sorted((s, e, a) for n, a, s, e in rows if n.startswith("chat "))
    assert len(chats) == 4, chats
    for s, e, a in chats:
        assert (e - s) / 1e6 < 140 + 120, ((e - s) / 1e6, a)
    for (s1, e1, _), (s2, e2, _) in zip(chats, chats[1:]):
        assert s2 >= e1 - 5e6, "chat spans overlap: %.1f ms" % ((e1 - s2) / 1e6)
    waits = sorted(a.get("eddy.llm.wait_ms", 0) for _, _, a in chats)
    assert waits[-1] >= 300 and sum(1 for w in waits if w >= 100) >= 3, waits


def test_memory_state_and_checkpoint_spans(tmp):
    """A run's end has an eddy.memory.write span under its root (the memory, history and run
    end made durable); each ctx.state operation of a tool an eddy.state <op> span under the
    tool's span, naming the key; each checkpoint a trace of its own (eddy.checkpoint), with
    the positions and deliveries it stored."""
    d = copy_example(tmp)
    write(os.path.join(d, "tools", "count.lua"), """return eddy.tool {
  name = "count", description = "counts",
  params = { q = { type = "string", required = true } },
  run = function(args, ctx) return tostring(ctx.state.incr("seen", 1)) end,
}
""")
    script = {"rules": [
        {"when": {"last_role": "tool"}, "reply": "seen ${tool}"},
        {"tool_calls": [{"name": "count", "arguments": {"q": "x"}}]}]}
    with Mock(tmp, script) as mock:
        job = job_with(d, mock.base_url, "checkpoint: { interval: 50ms }\n",
                       tools=("tools/count.lua",))
        outs = run_events(d, job, tmp, [{"id": "e%d" % i, "customer_id": "C%d" % i,
                                         "text": "hi"} for i in range(3)])
    assert sorted(o["output"] for o in outs) == ["seen 1", "seen 2", "seen 3"], outs
    db = sqlite3.connect(os.path.join(d, ".eddy", "t", "traces.db"))
    rows = db.execute("SELECT s.name, s.attributes, p.name FROM spans s LEFT JOIN spans p ON "
                      "p.span_id = s.parent_id AND p.trace_id = s.trace_id").fetchall()
    ckpt_rows = db.execute("SELECT count(*) FROM traces WHERE name = 'eddy.checkpoint'")
    ckpt_rows = ckpt_rows.fetchone()[0]
    db.close()
    mem = [(json.loads(a), p) for n, a, p in rows if n == "eddy.memory.write"]
    assert len(mem) == 3 and all(p == "invoke_agent support" for _, p in mem), mem
    assert all(a["eddy.history.messages"] >= 3 for a, _ in mem), mem
    state = [(json.loads(a), p) for n, a, p in rows if n == "eddy.state incr"]
    assert len(state) == 3 and all(p == "execute_tool count" for _, p in state), state
    assert all(a["eddy.state.key"] == "seen" for a, _ in state), state
    ckpts = [json.loads(a) for n, a, p in rows if n == "eddy.checkpoint"]
    assert ckpts and any(a.get("eddy.checkpoint.delivered", 0) >= 1 for a in ckpts), ckpts
    assert ckpt_rows == 0  # no run row: the list shows runs only


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return run.suite_main(TESTS, "eddy-tc-", 34, "trace content")


if __name__ == "__main__":
    sys.exit(main())
