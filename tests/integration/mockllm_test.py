#!/usr/bin/env python3
"""Tests of the scripted mock model itself (build/mockllm), over loopback with
http.client: the three wire formats (OpenAI chat completions, Anthropic
Messages, Ollama /api/chat), plain and streamed; tool calls streamed (and the
index-zero mode); faults (529, error shapes, disconnect mid-stream, in-stream
errors); rate-limit headers; usage overrides; chunk delays; the request log;
the llama-cpp-python emulations (strict_content, require_tool_choice).

Other tests trust the mock to behave like a provider; these check that it does.
Reuses the runner and the Mock class of tests/integration/run.py.

    python3 tests/integration/mockllm_test.py --build build [--only NAME]
"""
import http.client
import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run as itrun  # noqa: E402
from run import Mock, write  # noqa: E402

ANTHROPIC_HEADERS = {"anthropic-version": "2023-06-01"}
OPENAI = "/v1/chat/completions"
ANTHROPIC = "/v1/messages"
OLLAMA = "/api/chat"


# -- helpers --------------------------------------------------------------------

def post(mock, path, body, headers=None, timeout=10):
    """POST BODY (an object, or text sent as it is) to the mock; returns the open
    (connection, response)."""
    c = http.client.HTTPConnection("127.0.0.1", mock.port, timeout=timeout)
    h = {"Content-Type": "application/json"}
    if path == ANTHROPIC:
        h.update(ANTHROPIC_HEADERS)
    h.update(headers or {})
    h = {k: v for k, v in h.items() if v is not None}  # None: leave the header out
    c.request("POST", path, body=body if isinstance(body, str) else json.dumps(body), headers=h)
    return c, c.getresponse()


def fresh(tmp, name):
    """A folder of its own for one of several mocks in a test (each writes its port file)."""
    d = os.path.join(tmp, name)
    os.makedirs(d)
    return d


def call(mock, path, body, headers=None):
    """A plain request: (status, headers with lower-case names, the body parsed)."""
    c, r = post(mock, path, body, headers)
    raw = r.read()
    c.close()
    hs = {k.lower(): v for k, v in r.getheaders()}
    try:
        return r.status, hs, json.loads(raw)
    except ValueError:
        raise AssertionError("%s answered %d with a body that is not JSON: %r"
                             % (path, r.status, raw))


def read_stream(r):
    """The lines of a streamed body with their arrival times, and whether the
    stream ended cleanly (False: the connection dropped in the middle). read1,
    not readline: HTTPResponse.readline takes a chunked body that stops short
    for a clean end."""
    lines, buf, t0, clean = [], b"", time.time(), True
    try:
        while True:
            data = r.read1(65536)
            if not data:
                break
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                lines.append((time.time() - t0, line.decode() + "\n"))
    except (http.client.IncompleteRead, ConnectionError):
        clean = False
    if buf:
        lines.append((time.time() - t0, buf.decode()))
    return lines, clean


def stream(mock, path, body, headers=None):
    """A streamed request: (status, headers, [(t, line)], ended cleanly)."""
    c, r = post(mock, path, body, headers)
    hs = {k.lower(): v for k, v in r.getheaders()}
    lines, clean = read_stream(r)
    c.close()
    return r.status, hs, lines, clean


def sse(lines):
    """SSE events of LINES as (event or None, data parsed or the text [DONE])."""
    out, ev, data = [], None, []
    for _, line in lines:
        line = line.rstrip("\n")
        if line == "":
            if data:
                d = "\n".join(data)
                out.append((ev, d if d == "[DONE]" else json.loads(d)))
            ev, data = None, []
        elif line.startswith("event: "):
            ev = line[len("event: "):]
        elif line.startswith("data: "):
            data.append(line[len("data: "):])
        else:
            raise AssertionError("not an SSE line: %r" % line)
    assert not data, "an SSE event without its blank line: %r" % data
    return out


def ndjson(lines):
    return [json.loads(l) for _, l in lines if l.strip()]


def openai_req(messages, **kw):
    return dict({"model": "gpt-test", "messages": messages}, **kw)


def anthropic_req(messages, **kw):
    return dict({"model": "claude-test", "max_tokens": 64, "messages": messages}, **kw)


def ollama_req(messages, **kw):
    return dict({"model": "llama-test", "messages": messages, "stream": False}, **kw)


def user(text):
    return {"role": "user", "content": text}


def openai_deltas(events):
    """The choices[0].delta of each chunk (the usage chunk has no choice)."""
    return [e["choices"][0]["delta"] for _, e in events if e != "[DONE]" and e["choices"]]


def openai_text(events):
    return "".join(d.get("content") or "" for d in openai_deltas(events))


# -- each format, plain ------------------------------------------------------------

TOOL_SCRIPT = {"rules": [
    {"when": {"last_role": "tool"}, "reply": "order ${tool.id} is ${tool.status}"},
    {"when": {"last_user_regex": "order ([A-Z][0-9]{4})", "tool_offered": "lookup_order"},
     "tool_calls": [{"name": "lookup_order", "arguments": {"order_id": "$1"}},
                    {"name": "audit", "arguments": {"what": "lookup $1", "n": 2}}]},
    {"when": {"system_contains": "PIRATE"}, "reply": "arr: ${user}"},
    {"reply": "you said: ${user} (${n_user})"}]}


def test_openai_plain(tmp):
    """A reply, tool calls with ids and arguments as a JSON string, usage, and a
    tool round answered from the tool's result."""
    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {}}}]
    with Mock(tmp, TOOL_SCRIPT) as mock:
        st, _, b = call(mock, OPENAI, openai_req([user("hello")]))
        assert st == 200 and b["object"] == "chat.completion", b
        assert b["choices"][0]["message"] == {"role": "assistant", "content": "you said: hello (1)"}
        assert b["choices"][0]["finish_reason"] == "stop" and b["model"] == "gpt-test", b
        u = b["usage"]
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"] > 0, u
        st, _, b = call(mock, OPENAI, openai_req([user("where is order A1001?")], tools=tools))
        msg = b["choices"][0]["message"]
        assert b["choices"][0]["finish_reason"] == "tool_calls" and msg["content"] is None, b
        calls = msg["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["lookup_order", "audit"], calls
        assert len({c["id"] for c in calls}) == 2 and all(c["type"] == "function" for c in calls)
        assert json.loads(calls[0]["function"]["arguments"]) == {"order_id": "A1001"}, calls
        assert json.loads(calls[1]["function"]["arguments"]) == {"what": "lookup A1001", "n": 2}
        convo = [user("where is order A1001?"),
                 {"role": "assistant", "content": None, "tool_calls": calls[:1]},
                 {"role": "tool", "tool_call_id": calls[0]["id"],
                  "content": json.dumps({"id": "A1001", "status": "shipped"})}]
        st, _, b = call(mock, OPENAI, openai_req(convo, tools=tools))
        assert b["choices"][0]["message"]["content"] == "order A1001 is shipped", b


def test_anthropic_plain(tmp):
    """System prompt as a string and as blocks, content as blocks, tool_use blocks
    with input objects and stop_reason tool_use, a tool_result round, usage."""
    tools = [{"name": "lookup_order", "description": "find an order", "input_schema": {}}]
    with Mock(tmp, TOOL_SCRIPT) as mock:
        st, hs, b = call(mock, ANTHROPIC, anthropic_req([user("hello")]))
        assert st == 200 and b["type"] == "message" and b["role"] == "assistant", b
        assert b["content"] == [{"type": "text", "text": "you said: hello (1)"}], b
        assert b["stop_reason"] == "end_turn" and b["model"] == "claude-test", b
        assert set(b["usage"]) >= {"input_tokens", "output_tokens", "cache_read_input_tokens",
                                   "cache_creation_input_tokens"}, b["usage"]
        assert hs.get("request-id", "").startswith("req_"), hs
        st, _, b = call(mock, ANTHROPIC, anthropic_req([user("ahoy")], system="be a PIRATE"))
        assert b["content"][0]["text"] == "arr: ahoy", b
        st, _, b = call(mock, ANTHROPIC, anthropic_req(
            [{"role": "user", "content": [{"type": "text", "text": "ahoy"}]}],
            system=[{"type": "text", "text": "you are a PIRATE"}]))
        assert b["content"][0]["text"] == "arr: ahoy", b
        ask = [{"role": "user", "content": [{"type": "text", "text": "where is order A1001?"}]}]
        st, _, b = call(mock, ANTHROPIC, anthropic_req(ask, tools=tools))
        assert b["stop_reason"] == "tool_use", b
        uses = [c for c in b["content"] if c["type"] == "tool_use"]
        assert [u["name"] for u in uses] == ["lookup_order", "audit"], b
        assert uses[0]["input"] == {"order_id": "A1001"} and uses[0]["id"] != uses[1]["id"], uses
        convo = ask + [{"role": "assistant", "content": b["content"]},
                       {"role": "user", "content": [
                           {"type": "tool_result", "tool_use_id": uses[0]["id"],
                            "content": json.dumps({"id": "A1001", "status": "late"})},
                           {"type": "tool_result", "tool_use_id": uses[1]["id"],
                            "content": [{"type": "text", "text": "{\"ok\": true}"}]}]}]
        st, _, b = call(mock, ANTHROPIC, anthropic_req(convo, tools=tools))
        # the last tool_result is the "last tool" the templates see (no such fields: null)
        assert b["content"][0]["text"] == "order null is null", b
        convo[-1]["content"] = convo[-1]["content"][:1]
        st, _, b = call(mock, ANTHROPIC, anthropic_req(convo, tools=tools))
        assert b["content"][0]["text"] == "order A1001 is late", b


def test_ollama_plain(tmp):
    """"stream": false gives one object with done, done_reason, counts; tool calls
    carry their arguments as objects; role tool messages."""
    tools = [{"type": "function", "function": {"name": "lookup_order", "parameters": {}}}]
    with Mock(tmp, TOOL_SCRIPT) as mock:
        st, hs, b = call(mock, OLLAMA, ollama_req([user("hello")]))
        assert st == 200 and hs["content-type"] == "application/json", (st, hs)
        assert b["message"] == {"role": "assistant", "content": "you said: hello (1)"}, b
        assert b["done"] is True and b["done_reason"] == "stop" and b["model"] == "llama-test", b
        assert b["prompt_eval_count"] > 0 and b["eval_count"] > 0, b
        assert b["created_at"].endswith("Z"), b
        st, _, b = call(mock, OLLAMA, ollama_req([user("order A1001 please")], tools=tools))
        calls = b["message"]["tool_calls"]
        assert [c["function"]["name"] for c in calls] == ["lookup_order", "audit"], b
        assert calls[0]["function"]["arguments"] == {"order_id": "A1001"}, calls
        convo = [user("order A1001 please"),
                 {"role": "assistant", "content": "", "tool_calls": calls[:1]},
                 {"role": "tool", "content": json.dumps({"id": "A1001", "status": "lost"})}]
        st, _, b = call(mock, OLLAMA, ollama_req(convo, tools=tools))
        assert b["message"]["content"] == "order A1001 is lost", b


def test_same_rules_for_every_format(tmp):
    """One script, one conversation written in each format: the same rule answers
    with the same text (the rules see one neutral view)."""
    script = {"rules": [
        {"when": {"last_role": "tool", "last_tool_contains": "42"}, "reply": "tool gave ${tool.n}"},
        {"when": {"min_user_messages": 2, "last_user_regex": "again (.+)"}, "reply": "again: $1"},
        {"when": {"tool_offered": "calc"}, "reply": "calc offered"},
        {"when": {"format": "ollama", "stream": False}, "reply": "plain ollama"},
        {"reply": "default"}]}
    with Mock(tmp, script) as mock:
        def answers(path, body):
            st, _, b = call(mock, path, body)
            assert st == 200, b
            if path == ANTHROPIC:
                return b["content"][0]["text"]
            if path == OLLAMA:
                return b["message"]["content"]
            return b["choices"][0]["message"]["content"]
        two = [user("hi"), {"role": "assistant", "content": "hello"}, user("again and again")]
        assert answers(OPENAI, openai_req(two)) == "again: and again"
        assert answers(ANTHROPIC, anthropic_req(two)) == "again: and again"
        assert answers(OLLAMA, ollama_req(two)) == "again: and again"
        assert answers(OPENAI, openai_req([user("x")], tools=[
            {"type": "function", "function": {"name": "calc"}}])) == "calc offered"
        assert answers(ANTHROPIC, anthropic_req([user("x")], tools=[
            {"name": "calc", "input_schema": {}}])) == "calc offered"
        assert answers(OLLAMA, ollama_req([user("x")], tools=[
            {"type": "function", "function": {"name": "calc"}}])) == "calc offered"
        result = json.dumps({"n": 42})
        assert answers(OPENAI, openai_req([user("x"), {"role": "tool", "tool_call_id": "c",
                                                        "content": result}])) == "tool gave 42"
        assert answers(ANTHROPIC, anthropic_req([user("x"), {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t", "content": result}]}])) == "tool gave 42"
        assert answers(OLLAMA, ollama_req([user("x"), {"role": "tool", "content": result}])) \
            == "tool gave 42"
        assert answers(OLLAMA, ollama_req([user("x")])) == "plain ollama"
        assert answers(OPENAI, openai_req([user("x")])) == "default"


# -- streams -------------------------------------------------------------------------

def test_openai_stream_text(tmp):
    """SSE chunks of chat.completion.chunk, text in several pieces, finish_reason,
    data: [DONE] last; usage in a final chunk only with include_usage."""
    script = {"rules": [{"reply": "The quick brown fox — jumps über the lazy dog.",
                         "chunk_chars": 5}]}
    with Mock(tmp, script) as mock:
        st, hs, lines, clean = stream(mock, OPENAI, openai_req([user("x")], stream=True))
        assert st == 200 and clean and hs["content-type"] == "text/event-stream", (st, hs)
        ev = sse(lines)
        assert ev[-1] == (None, "[DONE]"), ev[-1]
        chunks = [e for _, e in ev[:-1]]
        assert all(c["object"] == "chat.completion.chunk" for c in chunks)
        assert len({c["id"] for c in chunks}) == 1
        assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
        pieces = [d["content"] for d in openai_deltas(ev) if d.get("content")]
        assert len(pieces) >= 5, pieces
        assert "".join(pieces) == "The quick brown fox — jumps über the lazy dog.", pieces
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop", chunks[-1]
        assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
        assert not any("usage" in c for c in chunks), "usage without include_usage"
        st, _, lines, clean = stream(mock, OPENAI, openai_req(
            [user("x")], stream=True, stream_options={"include_usage": True}))
        chunks = [e for _, e in sse(lines)[:-1]]
        last = chunks[-1]
        assert last["choices"] == [] and last["usage"]["total_tokens"] > 0, last
        assert all(c["usage"] is None for c in chunks[:-1]), chunks[:-1]


def assemble_openai_calls(events, key):
    """Tool calls of a stream put back together by KEY: 'index' (the usual way)
    or 'id' (a delta without id continues the last call that had one)."""
    calls, order, last = {}, [], None
    for d in openai_deltas(events):
        for tc in d.get("tool_calls") or []:
            k = tc["index"] if key == "index" else tc.get("id") or last
            if k not in calls:
                calls[k] = {"id": None, "name": "", "arguments": ""}
                order.append(k)
            c = calls[k]
            if tc.get("id"):
                c["id"] = tc["id"]
                last = tc["id"] if key == "id" else last
            fn = tc.get("function") or {}
            c["name"] += fn.get("name") or ""
            c["arguments"] += fn.get("arguments") or ""
    return [calls[k] for k in order]


STREAM_TOOLS = {"rules": [
    {"when": {"last_user_contains": "ZERO"}, "stream_index_zero": True, "chunk_chars": 6,
     "tool_calls": [{"name": "lookup", "arguments": {"order_id": "A1001", "verbose": True}},
                    {"name": "lookup", "arguments": {"order_id": "B2002", "verbose": False}}]},
    {"chunk_chars": 6,
     "tool_calls": [{"name": "lookup", "arguments": {"order_id": "A1001", "verbose": True}},
                    {"name": "notify", "arguments": {"text": "naïve café"}}]}]}


def test_openai_stream_tool_calls(tmp):
    """Each tool call streams id + name first, then its arguments in pieces, keyed
    by index; finish_reason tool_calls."""
    with Mock(tmp, STREAM_TOOLS) as mock:
        st, _, lines, clean = stream(mock, OPENAI, openai_req([user("x")], stream=True))
        ev = sse(lines)
        assert clean and ev[-1] == (None, "[DONE]")
        deltas = [tc for d in openai_deltas(ev) for tc in d.get("tool_calls") or []]
        firsts = [tc for tc in deltas if tc.get("id")]
        assert [f["index"] for f in firsts] == [0, 1], firsts
        assert all(f["function"]["name"] and f["function"]["arguments"] == "" for f in firsts)
        pieces = [tc for tc in deltas if not tc.get("id")]
        assert sum(1 for p in pieces if p["index"] == 0) >= 3, pieces
        assert all("name" not in p["function"] for p in pieces)
        calls = assemble_openai_calls(ev, "index")
        assert [c["name"] for c in calls] == ["lookup", "notify"], calls
        assert json.loads(calls[0]["arguments"]) == {"order_id": "A1001", "verbose": True}
        assert json.loads(calls[1]["arguments"]) == {"text": "naïve café"}, calls
        final = [e for _, e in ev[:-1]][-1]
        assert final["choices"][0]["finish_reason"] == "tool_calls", final


def test_openai_stream_index_zero(tmp):
    """stream_index_zero: every tool call has index 0; distinct ids tell them apart
    (as some servers send). Script-wide, and turned off again by a rule."""
    with Mock(fresh(tmp, "rule"), STREAM_TOOLS) as mock:
        _, _, lines, _ = stream(mock, OPENAI, openai_req([user("ZERO")], stream=True))
        ev = sse(lines)
        deltas = [tc for d in openai_deltas(ev) for tc in d.get("tool_calls") or []]
        assert deltas and all(tc["index"] == 0 for tc in deltas), deltas
        by_index = assemble_openai_calls(ev, "index")
        assert len(by_index) == 1, "index-keyed assembly should merge them: %r" % by_index
        calls = assemble_openai_calls(ev, "id")
        assert len(calls) == 2 and calls[0]["id"] != calls[1]["id"], calls
        assert json.loads(calls[1]["arguments"]) == {"order_id": "B2002", "verbose": False}
    script = dict(STREAM_TOOLS, stream_index_zero=True)
    script["rules"] = [dict(r) for r in STREAM_TOOLS["rules"]]
    with Mock(fresh(tmp, "script"), script) as mock:
        _, _, lines, _ = stream(mock, OPENAI, openai_req([user("x")], stream=True))
        ev = sse(lines)
        assert {tc["index"] for d in openai_deltas(ev) for tc in d.get("tool_calls") or []} == {0}
    script["rules"][1]["stream_index_zero"] = False
    with Mock(fresh(tmp, "off"), script) as mock:
        _, _, lines, _ = stream(mock, OPENAI, openai_req([user("x")], stream=True))
        ev = sse(lines)
        assert {tc["index"] for d in openai_deltas(ev) for tc in d.get("tool_calls") or []} \
            == {0, 1}


def test_anthropic_stream(tmp):
    """The event sequence message_start, ping, content_block_start/delta/stop (text
    then tool_use with input_json_delta), message_delta (stop_reason, usage),
    message_stop; each event: line names its data's type."""
    script = {"rules": [{"reply": "Let me look that up for you.", "chunk_chars": 7,
                         "tool_calls": [{"name": "lookup", "arguments": {"order_id": "A1001"}},
                                        {"name": "audit", "arguments": {"n": [1, 2, 3]}}]}]}
    with Mock(tmp, script) as mock:
        st, hs, lines, clean = stream(mock, ANTHROPIC, anthropic_req([user("x")], stream=True))
        assert st == 200 and clean and hs["content-type"] == "text/event-stream", (st, hs)
        ev = sse(lines)
        assert all(name == data["type"] for name, data in ev), ev
        names = [n for n, _ in ev]
        assert names[:2] == ["message_start", "ping"], names
        assert names[-2:] == ["message_delta", "message_stop"], names
        start = ev[0][1]["message"]
        assert start["content"] == [] and start["stop_reason"] is None and start["usage"], start
        blocks = {}
        for n, d in ev:
            if n == "content_block_start":
                assert d["index"] not in blocks
                cb = d["content_block"]
                blocks[d["index"]] = dict(cb, text=cb.get("text", ""), json="", stopped=False)
            elif n == "content_block_delta":
                b = blocks[d["index"]]
                assert not b["stopped"]
                if d["delta"]["type"] == "text_delta":
                    b["text"] += d["delta"]["text"]
                else:
                    assert d["delta"]["type"] == "input_json_delta", d
                    b["json"] += d["delta"]["partial_json"]
            elif n == "content_block_stop":
                blocks[d["index"]]["stopped"] = True
        assert sorted(blocks) == [0, 1, 2] and all(b["stopped"] for b in blocks.values()), blocks
        assert blocks[0]["type"] == "text" and blocks[0]["text"] == "Let me look that up for you."
        assert names.count("content_block_delta") >= 6, names
        assert blocks[1]["type"] == "tool_use" and blocks[1]["name"] == "lookup", blocks[1]
        assert blocks[1]["input"] == {} and json.loads(blocks[1]["json"]) == {"order_id": "A1001"}
        assert json.loads(blocks[2]["json"]) == {"n": [1, 2, 3]}
        assert blocks[1]["id"] != blocks[2]["id"], blocks
        md = ev[-2][1]
        assert md["delta"]["stop_reason"] == "tool_use" and md["usage"]["output_tokens"] > 0, md


def test_ollama_stream(tmp):
    """Streaming is Ollama's default: NDJSON lines with done false, then a last line
    with done true, done_reason and the counts; tool calls arrive whole."""
    script = {"rules": [
        {"when": {"last_user_contains": "TOOL"},
         "tool_calls": [{"name": "lookup", "arguments": {"order_id": "A1001"}}]},
        {"reply": "streamed in pieces, naïvely", "chunk_chars": 4}]}
    with Mock(tmp, script) as mock:
        body = ollama_req([user("x")])
        del body["stream"]  # Ollama streams unless told not to
        st, hs, lines, clean = stream(mock, OLLAMA, body)
        assert st == 200 and clean and hs["content-type"] == "application/x-ndjson", (st, hs)
        objs = ndjson(lines)
        assert len(objs) >= 6 and all(not o["done"] for o in objs[:-1]), objs
        assert "".join(o["message"]["content"] for o in objs) == "streamed in pieces, naïvely"
        last = objs[-1]
        assert last["done"] is True and last["done_reason"] == "stop", last
        assert last["prompt_eval_count"] > 0 and last["eval_count"] > 0, last
        assert not any("eval_count" in o for o in objs[:-1])
        _, _, lines, clean = stream(mock, OLLAMA, ollama_req([user("TOOL")], stream=True))
        objs = ndjson(lines)
        with_calls = [o for o in objs if o["message"].get("tool_calls")]
        assert len(with_calls) == 1 and not with_calls[0]["done"], objs
        fn = with_calls[0]["message"]["tool_calls"][0]["function"]
        assert fn["name"] == "lookup" and fn["arguments"] == {"order_id": "A1001"}, fn
        assert objs[-1]["done"] is True


# -- faults ---------------------------------------------------------------------------

def test_error_shapes_and_529(tmp):
    """A status fault in each provider's error shape, the default and an overriding
    message; 529 is an Anthropic overloaded_error; retry headers; bad JSON and
    the truncate / malformed faults in each format."""
    script = {"rules": [
        {"when": {"last_user_contains": "OVER"}, "fault": {"status": 529}},
        {"when": {"last_user_contains": "SAY"},
         "fault": {"status": 429, "message": "mock: slow down", "retry_after_ms": 250,
                   "retry_after": 1}},
        {"when": {"last_user_contains": "CUT"}, "fault": {"truncate": True}},
        {"when": {"last_user_contains": "GARBLED"}, "fault": {"malformed": True}},
        {"reply": "ok"}]}
    with Mock(tmp, script) as mock:
        st, _, b = call(mock, ANTHROPIC, anthropic_req([user("OVER")]))
        assert st == 529 and b["type"] == "error", (st, b)
        assert b["error"] == {"type": "overloaded_error", "message": "mock fault"}, b
        st, hs, b = call(mock, ANTHROPIC, anthropic_req([user("SAY")]))
        assert st == 429, (st, b)
        assert b["error"] == {"type": "rate_limit_error", "message": "mock: slow down"}, b
        assert hs["retry-after-ms"] == "250" and hs["retry-after"] == "1", hs
        st, hs, b = call(mock, OPENAI, openai_req([user("SAY")]))
        assert st == 429 and b == {"error": {"message": "mock: slow down", "type": "mock_error",
                                             "code": "mock_fault"}}, b
        assert hs["retry-after-ms"] == "250", hs
        st, _, b = call(mock, OPENAI, openai_req([user("OVER")]))
        assert st == 529 and b["error"]["message"] == "mock fault", b
        st, _, b = call(mock, OLLAMA, ollama_req([user("SAY")]))
        assert st == 429 and b == {"error": "mock: slow down"}, b
        for path, req in ((OPENAI, openai_req), (ANTHROPIC, anthropic_req), (OLLAMA, ollama_req)):
            st, _, b = call(mock, path, "{not json")
            assert st == 400, (path, st, b)
            c, r = post(mock, path, req([user("CUT")]))
            try:
                r.read()
                raise AssertionError("%s: a truncated body read whole" % path)
            except http.client.IncompleteRead as e:
                assert r.status == 200 and len(e.partial) > 0 and e.expected > 0, (path, e)
            c.close()
            c, r = post(mock, path, req([user("GARBLED")]))
            raw = r.read()
            c.close()
            try:
                json.loads(raw)
                raise AssertionError("%s: the malformed fault is valid JSON: %r" % (path, raw))
            except ValueError:
                pass
        st, _, b = call(mock, ANTHROPIC, "{not json")
        assert b["type"] == "error" and b["error"]["type"] == "invalid_request_error", b
        assert mock.stats()["faults"] == 5 + 6, mock.stats()


def test_provider_requirements(tmp):
    """What each provider requires, answered 400/401 in its shape with a "mock: ..."
    message: Anthropic's anthropic-version header, max_tokens, model; Ollama's
    model; require_api_key (Anthropic x-api-key, OpenAI Authorization)."""
    with Mock(fresh(tmp, "plain"), {"rules": [{"reply": "ok"}]}) as mock:
        st, _, b = call(mock, ANTHROPIC, anthropic_req([user("x")]),
                        headers={"anthropic-version": None})
        assert st == 400 and b["error"]["type"] == "invalid_request_error", (st, b)
        assert b["error"]["message"].startswith("mock: anthropic-version"), b
        no_max = anthropic_req([user("x")])
        del no_max["max_tokens"]
        st, _, b = call(mock, ANTHROPIC, no_max)
        assert st == 400 and "max_tokens" in b["error"]["message"], b
        st, _, b = call(mock, ANTHROPIC, {"max_tokens": 5, "messages": [user("x")]})
        assert st == 400 and "model" in b["error"]["message"], b
        st, _, b = call(mock, OLLAMA, {"messages": [user("x")], "stream": False})
        assert st == 400 and b == {"error": "mock: model is required"}, b
        st, _, b = call(mock, ANTHROPIC, anthropic_req([user("x")]))
        assert st == 200, "no key needed unless the script asks: %r" % b
    with Mock(fresh(tmp, "key"), {"require_api_key": True, "rules": [{"reply": "ok"}]}) as mock:
        st, _, b = call(mock, ANTHROPIC, anthropic_req([user("x")]))
        assert st == 401 and b["error"]["type"] == "authentication_error", (st, b)
        assert "x-api-key" in b["error"]["message"], b
        st, _, b = call(mock, ANTHROPIC, anthropic_req([user("x")]), headers={"x-api-key": "k1"})
        assert st == 200, b
        st, _, b = call(mock, OPENAI, openai_req([user("x")]))
        assert st == 401 and b["error"]["message"].startswith("mock: "), b
        st, _, b = call(mock, OPENAI, openai_req([user("x")]),
                        headers={"Authorization": "Bearer k"})
        assert st == 200, b
    with Mock(fresh(tmp, "exact"), {"require_api_key": "sk-right",
                                    "rules": [{"reply": "ok"}]}) as mock:
        st, _, _ = call(mock, ANTHROPIC, anthropic_req([user("x")]), headers={"x-api-key": "sk-no"})
        assert st == 401
        st, _, _ = call(mock, ANTHROPIC, anthropic_req([user("x")]),
                        headers={"x-api-key": "sk-right"})
        assert st == 200


def test_ratelimit_headers(tmp):
    """ratelimit renders x-ratelimit-* for OpenAI (and Ollama) and anthropic-ratelimit-*
    for Anthropic; headers are added verbatim; both also on a fault."""
    rl = {"remaining_requests": 7, "remaining_tokens": 1234, "reset_requests": "6m0s",
          "reset_tokens": "2026-01-01T00:00:00Z", "limit_requests": 10, "limit_tokens": 5000}
    script = {"rules": [
        {"when": {"last_user_contains": "LIMIT"}, "ratelimit": {"remaining_requests": 0},
         "headers": {"x-mock-note": "limited"}, "fault": {"status": 429, "retry_after": 3}},
        {"ratelimit": rl, "headers": {"x-request-id": "req-1", "openai-processing-ms": 12},
         "reply": "ok"}]}
    with Mock(tmp, script) as mock:
        st, hs, _ = call(mock, OPENAI, openai_req([user("x")]))
        assert st == 200
        assert hs["x-ratelimit-remaining-requests"] == "7", hs
        assert hs["x-ratelimit-remaining-tokens"] == "1234"
        assert hs["x-ratelimit-reset-requests"] == "6m0s"
        assert hs["x-ratelimit-reset-tokens"] == "2026-01-01T00:00:00Z"
        assert hs["x-ratelimit-limit-requests"] == "10" and hs["x-ratelimit-limit-tokens"] == "5000"
        assert hs["x-request-id"] == "req-1" and hs["openai-processing-ms"] == "12", hs
        assert not any(k.startswith("anthropic-ratelimit") for k in hs), hs
        st, hs, _ = call(mock, ANTHROPIC, anthropic_req([user("x")]))
        assert hs["anthropic-ratelimit-requests-remaining"] == "7", hs
        assert hs["anthropic-ratelimit-tokens-remaining"] == "1234"
        assert hs["anthropic-ratelimit-requests-reset"] == "6m0s"
        assert hs["anthropic-ratelimit-tokens-reset"] == "2026-01-01T00:00:00Z"
        assert hs["anthropic-ratelimit-requests-limit"] == "10"
        assert not any(k.startswith("x-ratelimit") for k in hs), hs
        st, hs, _ = call(mock, OLLAMA, ollama_req([user("x")]))
        assert hs["x-ratelimit-remaining-requests"] == "7", hs
        st, hs, _ = call(mock, ANTHROPIC, anthropic_req([user("LIMIT")]))
        assert st == 429 and hs["anthropic-ratelimit-requests-remaining"] == "0", hs
        assert hs["x-mock-note"] == "limited" and hs["retry-after"] == "3", hs
        # streamed answers carry them too
        st, hs, _, _ = stream(mock, OPENAI, openai_req([user("x")], stream=True))
        assert hs["x-ratelimit-remaining-requests"] == "7", hs


def test_disconnect_mid_stream(tmp):
    """fault.disconnect_after_chunks: N chunks arrive, then the connection drops
    without the stream's end ([DONE], message_stop, done: true)."""
    script = {"rules": [{"reply": "this answer never finishes", "chunk_chars": 4,
                         "fault": {"disconnect_after_chunks": 3}}]}
    with Mock(tmp, script) as mock:
        st, _, lines, clean = stream(mock, OPENAI, openai_req([user("x")], stream=True))
        assert st == 200 and not clean, "the stream ended cleanly"
        ev = sse(lines)
        assert len(ev) == 3 and (None, "[DONE]") not in ev, ev
        st, _, lines, clean = stream(mock, ANTHROPIC, anthropic_req([user("x")], stream=True))
        ev = sse(lines)
        assert not clean and [n for n, _ in ev] == ["message_start", "ping",
                                                    "content_block_start"], ev
        st, _, lines, clean = stream(mock, OLLAMA, ollama_req([user("x")], stream=True))
        objs = ndjson(lines)
        assert not clean and len(objs) == 3 and not any(o["done"] for o in objs), objs
        # a plain request: the headers, then the connection goes
        c, r = post(mock, OPENAI, openai_req([user("x")]))
        assert r.status == 200
        try:
            r.read()
            raise AssertionError("a dropped plain answer read whole")
        except http.client.IncompleteRead as e:
            assert e.partial == b"", e
        c.close()
        assert mock.stats()["faults"] == 4


def test_stream_error(tmp):
    """fault.stream_error: after after_chunks chunks an error arrives in the stream
    (Anthropic event: error, OpenAI data: {"error": ...}, Ollama {"error": ...})
    and the stream ends there; a plain request gets it as a status fault."""
    script = {"rules": [
        {"when": {"last_user_contains": "LATE"}, "reply": "one two three four five",
         "chunk_chars": 4, "fault": {"stream_error": "mock: broke late", "after_chunks": 4}},
        {"reply": "one two three", "fault": {"stream_error": "mock: overloaded mid-stream",
                                             "status": 503}}]}
    with Mock(tmp, script) as mock:
        st, _, lines, clean = stream(mock, ANTHROPIC, anthropic_req([user("x")], stream=True))
        ev = sse(lines)
        assert st == 200 and clean, (st, clean)
        assert [n for n, _ in ev] == ["message_start", "ping", "error"], ev
        assert ev[-1][1] == {"type": "error", "error": {"type": "overloaded_error",
                                                        "message": "mock: overloaded mid-stream"}}
        st, _, lines, clean = stream(mock, OPENAI, openai_req([user("LATE")], stream=True))
        ev = sse(lines)
        assert len(ev) == 5 and ev[-1][1]["error"]["message"] == "mock: broke late", ev
        assert (None, "[DONE]") not in ev and "choices" in ev[3][1]
        st, _, lines, clean = stream(mock, OLLAMA, ollama_req([user("x")], stream=True))
        objs = ndjson(lines)
        assert objs[-1] == {"error": "mock: overloaded mid-stream"}, objs
        assert len(objs) == 3 and not any(o.get("done") for o in objs), objs
        st, _, b = call(mock, ANTHROPIC, anthropic_req([user("x")]))
        assert st == 503 and b["error"]["message"] == "mock: overloaded mid-stream", (st, b)


def test_usage_overrides(tmp):
    """usage {input, output, cached, reasoning} in each format's words, omit_usage,
    finish_reason length mapped per format, model."""
    script = {"rules": [
        {"when": {"last_user_contains": "OMIT"}, "reply": "no usage", "omit_usage": True},
        {"when": {"last_user_contains": "LONG"}, "reply": "cut off mid", "finish_reason": "length",
         "model": "other-model"},
        {"reply": "counted", "usage": {"input": 1200, "output": 34, "cached": 1000,
                                       "reasoning": 20, "cache_creation": 5}}]}
    with Mock(fresh(tmp, "overrides"), script) as mock:
        _, _, b = call(mock, OPENAI, openai_req([user("x")]))
        assert b["usage"] == {"prompt_tokens": 1200, "completion_tokens": 34, "total_tokens": 1234,
                              "prompt_tokens_details": {"cached_tokens": 1000},
                              "completion_tokens_details": {"reasoning_tokens": 20}}, b["usage"]
        _, _, b = call(mock, ANTHROPIC, anthropic_req([user("x")]))
        assert b["usage"] == {"input_tokens": 1200, "output_tokens": 34,
                              "cache_read_input_tokens": 1000,
                              "cache_creation_input_tokens": 5}, b["usage"]
        _, _, b = call(mock, OLLAMA, ollama_req([user("x")]))
        assert b["prompt_eval_count"] == 1200 and b["eval_count"] == 34, b
        _, _, lines, _ = stream(mock, OPENAI, openai_req([user("x")], stream=True,
                                                         stream_options={"include_usage": True}))
        assert sse(lines)[-2][1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 1000
        _, _, lines, _ = stream(mock, ANTHROPIC, anthropic_req([user("x")], stream=True))
        ev = dict(sse(lines))
        assert ev["message_start"]["message"]["usage"]["input_tokens"] == 1200, ev
        assert ev["message_start"]["message"]["usage"]["cache_read_input_tokens"] == 1000
        assert ev["message_delta"]["usage"] == {"output_tokens": 34}, ev["message_delta"]
        _, _, lines, _ = stream(mock, OLLAMA, ollama_req([user("x")], stream=True))
        assert ndjson(lines)[-1]["eval_count"] == 34

        _, _, b = call(mock, OPENAI, openai_req([user("OMIT")]))
        assert "usage" not in b and b["choices"][0]["message"]["content"] == "no usage", b
        _, _, b = call(mock, ANTHROPIC, anthropic_req([user("OMIT")]))
        assert "usage" not in b, b
        _, _, b = call(mock, OLLAMA, ollama_req([user("OMIT")]))
        assert "prompt_eval_count" not in b and "eval_count" not in b and b["done"], b
        _, _, lines, _ = stream(mock, OPENAI, openai_req([user("OMIT")], stream=True,
                                                         stream_options={"include_usage": True}))
        assert not any(isinstance(e, dict) and "usage" in e for _, e in sse(lines))

        _, _, b = call(mock, OPENAI, openai_req([user("LONG")]))
        assert b["choices"][0]["finish_reason"] == "length" and b["model"] == "other-model", b
        _, _, b = call(mock, ANTHROPIC, anthropic_req([user("LONG")]))
        assert b["stop_reason"] == "max_tokens" and b["model"] == "other-model", b
        _, _, b = call(mock, OLLAMA, ollama_req([user("LONG")]))
        assert b["done_reason"] == "length" and b["model"] == "other-model", b
        _, _, lines, _ = stream(mock, ANTHROPIC, anthropic_req([user("LONG")], stream=True))
        assert dict(sse(lines))["message_delta"]["delta"]["stop_reason"] == "max_tokens"

    # without overrides: the estimate, with no details objects (as before)
    with Mock(fresh(tmp, "estimate"), {"rules": [{"reply": "plain"}]}) as mock:
        _, _, b = call(mock, OPENAI, openai_req([user("x")]))
        assert set(b["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}, b


def test_chunk_delays(tmp):
    """chunk_delay_ms spaces the chunks, the headers go at once; first_chunk_delay_ms
    delays the first token only; a slow stream blocks no other request."""
    script = {"rules": [
        {"when": {"last_user_contains": "SLOW"}, "reply": "aaaa bbbb cccc", "chunk_chars": 5,
         "chunk_delay_ms": 150},
        {"when": {"last_user_contains": "TTFT"}, "reply": "aaaa bbbb cccc", "chunk_chars": 5,
         "first_chunk_delay_ms": 400},
        {"reply": "quick"}]}
    with Mock(tmp, script) as mock:
        slow = {}

        def run_slow():
            t0 = time.time()
            c, r = post(mock, OPENAI, openai_req([user("SLOW")], stream=True))
            slow["headers_s"] = time.time() - t0
            slow["lines"], slow["clean"] = read_stream(r)
            c.close()
        th = threading.Thread(target=run_slow)
        th.start()
        time.sleep(0.1)
        t0 = time.time()
        st, _, b = call(mock, OPENAI, openai_req([user("quick one")]))
        quick = time.time() - t0
        th.join(15)
        assert st == 200 and quick < 0.5, "a slow stream held up another request: %.2fs" % quick
        assert slow["clean"] and slow["headers_s"] < 0.3, slow
        times = [t for t, l in slow["lines"] if l.startswith("data: ")]
        # role chunk, 3 text pieces, finish chunk, [DONE]: 6 chunks, 150 ms apart
        assert len(times) == 6, slow["lines"]
        gaps = [b - a for a, b in zip(times, times[1:])]
        assert all(g >= 0.12 for g in gaps), gaps
        assert times[0] >= 0.12, times
        t0 = time.time()
        c, r = post(mock, ANTHROPIC, anthropic_req([user("TTFT")], stream=True))
        headers_s = time.time() - t0
        lines, clean = read_stream(r)
        c.close()
        times = [t for t, l in lines if l.startswith("event: ")]
        assert clean and headers_s < 0.3, headers_s
        assert times[0] >= 0.35 and times[-1] - times[0] < 0.2, times


def test_log_lines(tmp):
    """Each line: t_ms (wall clock ms), path, format, stream, headers (keys only as
    booleans: no key value in the file), status, rule, fault, delay_ms, body; the
    request's own keys repeated at the top level for older readers."""
    script = {"rules": [{"when": {"last_user_contains": "FAIL"}, "fault": {"status": 503}},
                        {"reply": "ok"}]}
    secret = "sk-ant-SECRET-do-not-log-42"
    with Mock(tmp, script) as mock:
        t_start = int(time.time() * 1000)
        call(mock, OPENAI, openai_req([user("hi")], temperature=0.2),
             headers={"Authorization": "Bearer " + secret})
        time.sleep(0.02)
        call(mock, ANTHROPIC, anthropic_req([user("FAIL")]), headers={"x-api-key": secret})
        stream(mock, OLLAMA, ollama_req([user("hi")], stream=True, format="json"))
        call(mock, OPENAI, "{bad")
        t_end = int(time.time() * 1000)
        lines = mock.requests()
        raw = open(mock.log).read()
    assert secret not in raw, "a key value reached the log"
    assert len(lines) == 4, lines
    for l in lines:
        for k in ("t_ms", "path", "format", "stream", "headers", "status", "rule", "fault",
                  "delay_ms", "body"):
            assert k in l, (k, l)
        assert isinstance(l["t_ms"], int) and t_start - 5 <= l["t_ms"] <= t_end + 5, (l, t_start)
    assert [l["t_ms"] for l in lines] == sorted(l["t_ms"] for l in lines)
    assert lines[1]["t_ms"] - lines[0]["t_ms"] >= 15, lines
    a, b, c, d = lines
    assert (a["path"], a["format"], a["stream"], a["status"], a["rule"], a["fault"]) == \
        (OPENAI, "openai", False, 200, 1, False), a
    assert a["headers"]["authorization"] is True and a["headers"]["x-api-key"] is False, a
    assert a["body"]["temperature"] == 0.2 and a["messages"] == a["body"]["messages"], a
    assert (b["format"], b["status"], b["rule"], b["fault"]) == ("anthropic", 503, 0, True), b
    assert b["headers"] == {"authorization": False, "x-api-key": True,
                            "anthropic-version": "2023-06-01",
                            "content-type": "application/json"}, b
    assert b["body"]["max_tokens"] == 64
    assert (c["format"], c["stream"], c["status"]) == ("ollama", True, 200), c
    assert c["format"] == "ollama" and c["body"]["format"] == "json", "clash: the body keeps it"
    assert d["status"] == 400 and d["body"] is None and d["rule"] is None, d


def test_strict_content(tmp):
    """strict_content (llama-cpp-python): an assistant message with content null is a
    500 "Input should be a valid string"; "" passes. Script-wide or per rule."""
    convo = [user("x"), {"role": "assistant", "content": None,
                         "tool_calls": [{"id": "c1", "type": "function",
                                         "function": {"name": "f", "arguments": "{}"}}]},
             {"role": "tool", "tool_call_id": "c1", "content": "done"}]
    with Mock(fresh(tmp, "script"), {"strict_content": True, "rules": [{"reply": "ok"}]}) as mock:
        st, _, b = call(mock, OPENAI, openai_req(convo))
        assert st == 500 and "Input should be a valid string" in b["error"]["message"], (st, b)
        assert b["error"]["message"].startswith("mock: "), b
        fixed = [dict(m, content="") if m["role"] == "assistant" else m for m in convo]
        st, _, b = call(mock, OPENAI, openai_req(fixed))
        assert st == 200, b
        st, _, b = call(mock, OLLAMA, ollama_req(convo))
        assert st == 200, "strict_content is an OpenAI-server emulation: %r" % b
    with Mock(fresh(tmp, "rule"), {"rules": [{"when": {"last_role": "tool"}, "strict_content": True,
                               "reply": "strict"}, {"reply": "lax"}]}) as mock:
        st, _, b = call(mock, OPENAI, openai_req(convo))
        assert st == 500 and "Input should be a valid string" in b["error"]["message"], b
        st, _, b = call(mock, OPENAI, openai_req(convo[:2]))
        assert st == 200 and b["choices"][0]["message"]["content"] == "lax", b


def test_require_tool_choice(tmp):
    """require_tool_choice (llama-cpp-python): tools without tool_choice are ignored,
    so tool_offered does not match and a rule's tool calls become text; with
    tool_choice they are calls."""
    tools = [{"type": "function", "function": {"name": "lookup"}}]
    script = {"require_tool_choice": True, "rules": [
        {"when": {"tool_offered": "lookup", "last_user_contains": "TEXT"}, "reply": "saw tools"},
        {"when": {"last_user_contains": "CALL"},
         "tool_calls": [{"name": "lookup", "arguments": {"q": 1}}]},
        {"reply": "no tools seen"}]}
    with Mock(tmp, script) as mock:
        _, _, b = call(mock, OPENAI, openai_req([user("TEXT")], tools=tools))
        assert b["choices"][0]["message"]["content"] == "no tools seen", b
        _, _, b = call(mock, OPENAI, openai_req([user("TEXT")], tools=tools, tool_choice="auto"))
        assert b["choices"][0]["message"]["content"] == "saw tools", b
        _, _, b = call(mock, OPENAI, openai_req([user("CALL")], tools=tools))
        msg = b["choices"][0]["message"]
        assert "tool_calls" not in msg and msg["content"].startswith("mock: the tools were ignored")
        assert b["choices"][0]["finish_reason"] == "stop", b
        _, _, b = call(mock, OPENAI, openai_req([user("CALL")], tools=tools, tool_choice="auto"))
        assert b["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup", b
        _, _, b = call(mock, ANTHROPIC, anthropic_req([user("CALL")], tools=[{"name": "lookup"}]))
        assert b["content"][0]["type"] == "tool_use", "an OpenAI-server emulation only: %r" % b


def test_stats_per_format(tmp):
    """GET /stats keeps its counts and adds streams and requests per format."""
    with Mock(tmp, {"rules": [{"reply": "ok"}]}) as mock:
        call(mock, OPENAI, openai_req([user("x")]))
        stream(mock, OPENAI, openai_req([user("x")], stream=True))
        call(mock, ANTHROPIC, anthropic_req([user("x")]))
        stream(mock, OLLAMA, ollama_req([user("x")], stream=True))
        call(mock, OLLAMA, ollama_req([user("x")]))
        call(mock, OLLAMA, ollama_req([user("x")]))
        s = mock.stats()
    assert s["requests"] == 6 and s["in_flight"] == 0 and s["faults"] == 0, s
    assert s["peak_in_flight"] >= 1 and s["streams"] == 2, s
    assert s["formats"] == {"openai": 2, "anthropic": 1, "ollama": 3}, s


def test_script_keys_checked(tmp):
    """A key the mock does not know, in any part of the script, stops it at start
    with the rule and the key named (a typo must not change what matches)."""
    cases = [
        ({"rules": [{"reply": "x", "usage": {"inptu": 3}}]}, "rule 0: unknown key 'usage.inptu'"),
        ({"rules": [{"reply": "x"}, {"ratelimit": {"remaining": 1}}]},
         "rule 1: unknown key 'ratelimit.remaining'"),
        ({"rules": [{"tool_calls": [{"name": "a"}, {"nmae": "b"}]}]},
         "rule 0: unknown key 'tool_calls[1].nmae'"),
        ({"rules": [{"fault": {"disconnect_after": 2}}]},
         "rule 0: unknown key 'fault.disconnect_after'"),
        ({"rules": [{"when": {"fromat": "openai"}}]}, "rule 0: unknown key 'when.fromat'"),
        ({"rules": [{"chunk_delay": 5}]}, "rule 0: unknown key 'chunk_delay'"),
        ({"strict": True, "rules": []}, "unknown key 'strict'"),
        ({"rules": [{"headers": {"x-a": {"no": 1}}}]}, "headers.x-a must be a string or a number"),
    ]
    for script, want in cases:
        path = os.path.join(tmp, "bad.json")
        write(path, json.dumps(script))
        p = subprocess.run([os.path.join(itrun.ARGS.build, "mockllm"), "--script", path,
                            "--port", "0"], capture_output=True, text=True, timeout=10)
        assert p.returncode == 2 and want in p.stderr, (script, p.returncode, p.stderr)


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    return itrun.suite_main(TESTS, "eddy-mock-", 36, "mockllm")


if __name__ == "__main__":
    sys.exit(main())
