#!/usr/bin/env bash
# tests/realmodel/smoke.sh: prove with curl that the real model server does
# OpenAI-style tool calling the way eddy needs it.
#
#   1 tool call      get_order_status(order_id) for "order A-17", no tool_choice
#   2 final answer   the tool result {"status":"shipped","carrier":"DHL"} sent
#                    back (assistant message echoed with "content": null) gives
#                    an answer that says "shipped"
#   3 content ""     the same with "content": "" in the echoed assistant message
#   4 streaming      request 1 with "stream": true and
#                    stream_options.include_usage: SSE chunks, tool-call deltas
#                    rebuilt, the usage chunk
#   5 stream, no include_usage: is usage sent anyway?
#   6 stream final   request 2 streamed: content deltas, finish_reason "stop"
#   7 tool_choice    request 1 with "tool_choice": "required"
#
# Uses the server at $EDDY_REALMODEL_URL (http://127.0.0.1:PORT/v1), else the
# one serve.sh status reports, else starts one with serve.sh and stops it at
# the end. Responses are kept in $EDDY_REALMODEL_SMOKE_OUT (default a tmp dir).
# Ends with "N passed, N failed"; exit status 1 when any check failed.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/common.sh"
command -v curl >/dev/null || rm_die "curl is missing (apt-get install -y curl)"

OUT=${EDDY_REALMODEL_SMOKE_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/eddy-realmodel-smoke.XXXXXX")}
mkdir -p "$OUT"
started=0
URL=${EDDY_REALMODEL_URL:-}
if [ -z "$URL" ]; then
    if ! URL=$("$HERE/serve.sh" status 2>/dev/null); then
        URL=$("$HERE/serve.sh" start)
        started=1
    fi
fi
cleanup() { [ "$started" = 0 ] || "$HERE/serve.sh" stop || true; }
trap cleanup EXIT
rm_log "server $URL; responses in $OUT"

pass=0 fail=0
ok()  { pass=$((pass + 1)); printf 'ok   %s\n' "$*"; }
bad() { fail=$((fail + 1)); printf 'FAIL %s\n' "$*"; }

# post NAME BODYFILE: POST to /chat/completions, response in $OUT/NAME.out,
# prints the wall time in seconds.
post() {
    curl -sS --max-time 300 -o "$OUT/$1.out" -w '%{time_total}' \
        -H 'Content-Type: application/json' --data-binary @"$2" "$URL/chat/completions"
}

TOOLS='[{"type":"function","function":{"name":"get_order_status",
  "description":"Look up the current status of a customer order by its id.",
  "parameters":{"type":"object","properties":{"order_id":{"type":"string",
  "description":"The order id, for example A-17"}},"required":["order_id"]}}}]'
SYSTEM='You are a customer support agent. Use the tools to look up facts; do not guess.'
USER='What is the status of order A-17?'

# ---- 1: tool call, non-streamed, no tool_choice -----------------------------
cat >"$OUT/1.req" <<EOF
{"model":"qwen2.5-coder-1.5b-instruct","temperature":0,
 "messages":[{"role":"system","content":"$SYSTEM"},{"role":"user","content":"$USER"}],
 "tools":$TOOLS}
EOF
t=$(post 1 "$OUT/1.req")
if python3 - "$OUT/1.out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["choices"][0]["message"]
tc = m.get("tool_calls") or []
print(f"     finish_reason={r['choices'][0].get('finish_reason')!r} content={m.get('content')!r} tool_calls={json.dumps(tc)}")
assert tc, "no tool_calls"
f = tc[0]["function"]
assert f["name"] == "get_order_status", f["name"]
assert isinstance(f["arguments"], str), "arguments is not a string"
assert json.loads(f["arguments"]).get("order_id") == "A-17", f["arguments"]
PY
then ok "1 tool call get_order_status(A-17) without tool_choice (${t}s)"
else bad "1 tool call (${t}s): $(head -c 600 "$OUT/1.out")"; fi

# ---- 2/3: send the tool result back (content null, then "") ------------------
# Builds the follow-up from response 1 (its tool call id and arguments as
# returned); falls back to a made-up call when 1 failed.
mkreq2() {  # mkreq2 CONTENT_JSON STREAM_JSON > body
    python3 - "$OUT/1.out" "$1" "$2" "$SYSTEM" "$USER" "$TOOLS" <<'PY'
import json, sys
out, content, stream, system, user, tools = sys.argv[1:7]
try:
    tc = json.load(open(out))["choices"][0]["message"]["tool_calls"][:1]
    assert tc
except Exception:
    tc = [{"id": "call_1", "type": "function",
           "function": {"name": "get_order_status", "arguments": "{\"order_id\":\"A-17\"}"}}]
body = {"model": "qwen2.5-coder-1.5b-instruct", "temperature": 0,
        "messages": [{"role": "system", "content": system},
                     {"role": "user", "content": user},
                     {"role": "assistant", "content": json.loads(content), "tool_calls": tc},
                     {"role": "tool", "tool_call_id": tc[0].get("id", "call_1"),
                      "content": "{\"status\":\"shipped\",\"carrier\":\"DHL\"}"}],
        "tools": json.loads(tools)}
if json.loads(stream):
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
print(json.dumps(body))
PY
}
check_final() {  # check_final OUTFILE
    python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
if "error" in r:
    print(f"     error={json.dumps(r['error'])}")
    sys.exit(1)
m = r["choices"][0]["message"]
print(f"     finish_reason={r['choices'][0].get('finish_reason')!r} content={m.get('content')!r} tool_calls={m.get('tool_calls')!r}")
assert "shipped" in (m.get("content") or "").lower()
PY
}
mkreq2 null false >"$OUT/2.req"
t=$(post 2 "$OUT/2.req")
if check_final "$OUT/2.out"; then ok "2 final answer says shipped; echoed assistant message had content:null (${t}s)"
else bad "2 final answer with content:null (${t}s): $(head -c 600 "$OUT/2.out")"; fi

mkreq2 '""' false >"$OUT/3.req"
t=$(post 3 "$OUT/3.req")
if check_final "$OUT/3.out"; then ok "3 final answer says shipped; echoed assistant message had content:\"\" (${t}s)"
else bad "3 final answer with content:\"\" (${t}s): $(head -c 600 "$OUT/3.out")"; fi

# ---- 4/5/6: streaming ------------------------------------------------------------
# sse NAME: reads $OUT/NAME.out (raw SSE), checks the framing, rebuilds the
# message from the deltas and prints what the chunks looked like.
sse() {
    python3 - "$OUT/$1.out" "$2" <<'PY'
import json, sys
path, want = sys.argv[1], sys.argv[2]
lines = open(path).read().split("\n")
data = [l[6:] for l in lines if l.startswith("data: ")]
assert data, "no 'data: ' lines (not SSE?)"
assert data[-1] == "[DONE]", f"last data line is {data[-1][:80]!r}, not [DONE]"
chunks = [json.loads(d) for d in data[:-1]]
calls, content, finish, usage, shapes = {}, "", None, None, []
for c in chunks:
    if c.get("usage") is not None:
        usage = (c["usage"], len(c.get("choices") or []))
    for ch in c.get("choices") or []:
        d = ch.get("delta") or {}
        content += d.get("content") or ""
        finish = ch.get("finish_reason") or finish
        for tc in d.get("tool_calls") or []:
            shapes.append({k: v for k, v in tc.items() if k != "function"} |
                          {"function": {k: (v if k == "name" else f"<{len(v)} chars>") for k, v in (tc.get("function") or {}).items()}})
            e = calls.setdefault(tc["index"], {"id": None, "name": "", "arguments": ""})
            e["id"] = tc.get("id") or e["id"]
            f = tc.get("function") or {}
            e["name"] += f.get("name") or ""
            e["arguments"] += f.get("arguments") or ""
print(f"     {len(chunks)} chunks + [DONE]; finish_reason={finish!r}; content={content!r}")
for s in shapes[:3]:
    print(f"     tool_call delta: {json.dumps(s)}")
if len(shapes) > 3:
    print(f"     ... {len(shapes)} tool_call deltas in all")
print(f"     rebuilt tool_calls: {json.dumps(calls)}")
print(f"     usage chunk: {json.dumps(usage[0]) + f' (choices: {usage[1]})' if usage else 'none'}")
if want == "call":
    assert calls and calls[min(calls)]["name"] == "get_order_status", calls
    assert json.loads(calls[min(calls)]["arguments"]).get("order_id") == "A-17", calls
    assert finish == "tool_calls", finish
elif want == "final":
    assert "shipped" in content.lower(), content
    assert finish == "stop", finish
open(path + ".usage", "w").write("yes" if usage else "no")
PY
}

python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); b["stream"]=True; b["stream_options"]={"include_usage":True}; print(json.dumps(b))' \
    "$OUT/1.req" >"$OUT/4.req"
t=$(post 4 "$OUT/4.req")
if sse 4 call && [ "$(cat "$OUT/4.out.usage")" = yes ]; then ok "4 streamed tool call (SSE, tool_call deltas, usage chunk with include_usage) (${t}s)"
else bad "4 streamed tool call (${t}s): $(head -c 600 "$OUT/4.out")"; fi

python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); b["stream"]=True; print(json.dumps(b))' \
    "$OUT/1.req" >"$OUT/5.req"
t=$(post 5 "$OUT/5.req")
if sse 5 call; then ok "5 streamed tool call without stream_options: usage sent anyway: $(cat "$OUT/5.out.usage") (${t}s)"
else bad "5 streamed tool call without stream_options (${t}s): $(head -c 600 "$OUT/5.out")"; fi

mkreq2 null true >"$OUT/6.req"
t=$(post 6 "$OUT/6.req")
if sse 6 final; then ok "6 streamed final answer says shipped (${t}s)"
else bad "6 streamed final answer (${t}s): $(head -c 600 "$OUT/6.out")"; fi

# ---- 7: tool_choice "required" is accepted (not needed: see 1) ----------------
python3 -c 'import json,sys; b=json.load(open(sys.argv[1])); b["tool_choice"]="required"; print(json.dumps(b))' \
    "$OUT/1.req" >"$OUT/7.req"
t=$(post 7 "$OUT/7.req")
if python3 - "$OUT/7.out" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
m = r["choices"][0]["message"]
tc = m.get("tool_calls") or []
print(f"     finish_reason={r['choices'][0].get('finish_reason')!r} content={m.get('content')!r} tool_calls={json.dumps(tc)}")
assert tc and tc[0]["function"]["name"] == "get_order_status"
assert json.loads(tc[0]["function"]["arguments"]).get("order_id") == "A-17"
PY
then ok "7 tool_choice \"required\" gives the same call (${t}s)"
else bad "7 tool_choice required (${t}s): $(head -c 600 "$OUT/7.out")"; fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
