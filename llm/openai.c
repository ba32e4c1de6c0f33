/*
 * llm/openai.c - the OpenAI chat-completions format: OpenAI itself and what
 * vLLM, llama.cpp's server, LM Studio and Ollama's /v1 speak.
 *
 * Requests: a system message first, then user / assistant (text, never a
 * null content: llama-cpp-python rejects it; tool_calls with arguments as a
 * JSON string) / one "tool" message per tool result. Streams: SSE `data:`
 * chunks with deltas, tool calls keyed by index (and id, for servers that
 * give every call index 0), usage in a last chunk (include_usage), ended by
 * `data: [DONE]`.
 */
#include "eddy/buf.h"
#include "eddy/json.h"
#include "llm_int.h"

#include <string.h>

static char *oa_url(const eddy_llm_model *m)
{
    return eddy__llm_join_url(m->base_url, "/chat/completions");
}

static void oa_headers(const eddy_llm_model *m, void (*add)(void *ud, const char *line), void *ud)
{
    if (m->api_key && *m->api_key) {
        char *h = eddy_aprintf("Authorization: Bearer %s", m->api_key);
        if (h) {
            add(ud, h);
            memset(h, 0, strlen(h));
            eddy_free(h);
        }
    }
}

/* The function-tool definitions (also what Ollama takes), each built once and
 * kept with its definition. */
json_t *eddy__llm_function_tools(const eddy_llm_request *rq)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < rq->ntools; i++) {
        eddy_llm_tool_def *t = (eddy_llm_tool_def *)&rq->tools[i]; /* the cache only */
        if (!t->wire || t->wire_for != &eddy__llm_openai) {
            json_decref(t->wire);
            t->wire = json_pack("{s:s, s:{s:s, s:s, s:O}}", "type", "function", "function",
                                "name", t->name, "description",
                                t->description ? t->description : "", "parameters",
                                t->parameters);
            t->wire_for = t->wire ? &eddy__llm_openai : NULL;
        }
        if (!t->wire || json_array_append(a, t->wire)) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

/* The chat messages M becomes (one per tool result for a tool message). */
static json_t *wire_of(const eddy_llm_msg *m)
{
    json_t *out = json_array();
    if (!out)
        return NULL;
    if (m->role == EDDY_ROLE_TOOL) {
        for (size_t k = 0; k < m->nparts; k++) {
            const eddy_llm_part *p = &m->parts[k];
            json_t *o;
            if (p->kind != EDDY_PART_TOOL_RESULT)
                continue;
            if (!(o = json_object()) || json_array_append_new(out, o) ||
                eddy__llm_set_str(o, "role", "tool") ||
                eddy__llm_set_str(o, "tool_call_id", p->id ? p->id : "") ||
                eddy__llm_set_str(o, "content", p->text ? p->text : ""))
                goto fail;
        }
        return out;
    }
    char *text = m->nparts == 1 && m->parts[0].kind == EDDY_PART_TEXT
                     ? NULL /* the common case: no copy */
                     : eddy_llm_msg_join_text(m);
    const char *content = text ? text : m->nparts == 1 ? m->parts[0].text : "";
    json_t *o = json_object();
    int rc = !o || json_array_append_new(out, o) ||
             eddy__llm_set_str(o, "role", eddy_llm_role_name(m->role)) ||
             eddy__llm_set_str(o, "content", content ? content : "");
    eddy_free(text);
    if (rc)
        goto fail;
    if (m->role == EDDY_ROLE_ASSISTANT && eddy_llm_msg_count(m, EDDY_PART_TOOL_CALL)) {
        json_t *calls = json_array();
        if (!calls || json_object_set_new_nocheck(o, "tool_calls", calls))
            goto fail;
        for (size_t k = 0; k < m->nparts; k++) {
            const eddy_llm_part *p = &m->parts[k];
            json_t *c, *fn;
            if (p->kind != EDDY_PART_TOOL_CALL)
                continue;
            if (!(c = json_object()) || json_array_append_new(calls, c) ||
                eddy__llm_set_str(c, "id", p->id ? p->id : "") ||
                eddy__llm_set_str(c, "type", "function") || !(fn = json_object()) ||
                json_object_set_new_nocheck(c, "function", fn) ||
                eddy__llm_set_str(fn, "name", p->name ? p->name : "") ||
                eddy__llm_set_str(fn, "arguments", p->args ? p->args : "{}"))
                goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* Every message's wire form, built once per message and kept with it (a
 * conversation is resent whole at every turn). */
static int add_messages(json_t *out, const eddy_llm_conv *c)
{
    for (size_t i = 0; i < c->n; i++) {
        const eddy_llm_msg *m = &c->msgs[i];
        json_t *w = eddy_llm_msg_wire(m, &eddy__llm_openai);
        if (!w && !(w = wire_of(m)))
            return -1;
        if (!eddy_llm_msg_wire(m, &eddy__llm_openai))
            eddy_llm_msg_set_wire(m, &eddy__llm_openai, w);
        if (json_array_extend(out, w))
            return -1;
    }
    return 0;
}

static json_t *oa_build(const eddy_llm_model *m, const eddy_llm_request *rq, int stream)
{
    json_t *msgs = json_array();
    if (!msgs || add_messages(msgs, rq->conv)) {
        json_decref(msgs);
        return NULL;
    }
    json_t *body = json_pack("{s:s, s:o}", "model", m->model ? m->model : "", "messages", msgs);
    if (!body)
        return NULL;
    if (rq->ntools) {
        json_object_set_new(body, "tools", eddy__llm_function_tools(rq));
        switch (rq->tool_choice) {
        case EDDY_TOOL_CHOICE_AUTO:
            json_object_set_new(body, "tool_choice", json_string("auto"));
            break;
        case EDDY_TOOL_CHOICE_REQUIRED:
            json_object_set_new(body, "tool_choice", json_string("required"));
            break;
        case EDDY_TOOL_CHOICE_NONE:
            json_object_set_new(body, "tool_choice", json_string("none"));
            break;
        case EDDY_TOOL_CHOICE_TOOL:
            json_object_set_new(body, "tool_choice",
                                json_pack("{s:s, s:{s:s}}", "type", "function", "function", "name",
                                          rq->tool_choice_name ? rq->tool_choice_name : ""));
            break;
        default:
            break;
        }
    }
    if (rq->output_schema)
        json_object_set_new(body, "response_format",
                            json_pack("{s:s, s:{s:s, s:O}}", "type", "json_schema", "json_schema",
                                      "name", rq->output_name ? rq->output_name : "answer",
                                      "schema", rq->output_schema));
    if (m->max_tokens > 0)
        json_object_set_new(body, "max_tokens", json_integer(m->max_tokens));
    if (m->has_temperature)
        json_object_set_new(body, "temperature", json_real(m->temperature));
    if (stream) {
        json_object_set_new(body, "stream", json_true());
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
    }
    return body;
}

/* Text of a content: a string, or an array of {type: "text", text}. */
static void add_content(eddy_llm_msg *m, json_t *content, int *rc)
{
    size_t i;
    json_t *x;
    if (json_is_string(content) && json_string_length(content))
        *rc = *rc ? *rc : eddy_llm_msg_text(m, json_string_value(content));
    json_array_foreach(content, i, x)
    {
        const char *t = eddy_json_str(x, "text", NULL);
        if (t && *t && !*rc)
            *rc = eddy_llm_msg_text(m, t);
    }
}

static void usage_from(json_t *u, eddy_llm_usage *out)
{
    if (!json_is_object(u))
        return;
    out->input_tokens = (long)eddy_json_int(u, "prompt_tokens", 0);
    out->output_tokens = (long)eddy_json_int(u, "completion_tokens", 0);
    out->cached_input_tokens =
        (long)eddy_json_int(json_object_get(u, "prompt_tokens_details"), "cached_tokens", 0);
    out->reasoning_tokens = (long)eddy_json_int(json_object_get(u, "completion_tokens_details"),
                                                "reasoning_tokens", 0);
}

static int body_error(json_t *root, eddy_err *err)
{
    json_t *e = json_object_get(root, "error");
    if (!e || json_is_null(e))
        return 0;
    return eddy_err_set(err, EDDY_ELLM, "model error: %.400s",
                        json_is_string(e) ? json_string_value(e)
                                          : eddy_json_str(e, "message", "unknown error"));
}

static int oa_parse(const eddy_llm_request *rq, const char *body, size_t len,
                    eddy_llm_response *out, eddy_err *err)
{
    json_error_t je;
    json_t *root, *choice, *msg, *calls, *tc;
    size_t i;
    int rc = 0;
    (void)rq;
    memset(out, 0, sizeof(*out));
    out->message.role = EDDY_ROLE_ASSISTANT;
    root = json_loadb(body, len, 0, &je);
    if (!root)
        return eddy_err_set(err, EDDY_EPARSE, "response is not valid JSON (%s at %d:%d)", je.text,
                            je.line, je.column);
    if ((rc = body_error(root, err)))
        goto out;
    choice = json_array_get(json_object_get(root, "choices"), 0);
    msg = json_object_get(choice, "message");
    if (!json_is_object(msg)) {
        rc = eddy_err_set(err, EDDY_EPARSE, "response has no choices[0].message");
        goto out;
    }
    out->id = eddy_strdup(eddy_json_str(root, "id", NULL));
    out->model = eddy_strdup(eddy_json_str(root, "model", NULL));
    out->finish_raw = eddy_strdup(eddy_json_str(choice, "finish_reason", NULL));
    add_content(&out->message, json_object_get(msg, "content"), &rc);
    calls = json_object_get(msg, "tool_calls");
    json_array_foreach(calls, i, tc)
    {
        json_t *fn = json_object_get(tc, "function"), *a = json_object_get(fn, "arguments");
        const char *name = eddy_json_str(fn, "name", NULL);
        char idbuf[32], *args;
        const char *id = eddy_json_str(tc, "id", NULL);
        if (!name) {
            rc = eddy_err_set(err, EDDY_ELLM, "tool_calls[%zu] has no function name", i);
            goto out;
        }
        if (!id || !*id) {
            snprintf(idbuf, sizeof(idbuf), "call_%zu", i);
            id = idbuf;
        }
        /* a string, or (some servers) the object itself */
        args = json_is_string(a) ? eddy_strdup(json_string_value(a))
               : a && !json_is_null(a) ? eddy_json_dumps(a)
                                       : eddy_strdup("{}");
        rc = rc ? rc : args ? eddy_llm_msg_tool_call(&out->message, id, name, args) : EDDY_ENOMEM;
        eddy_free(args);
    }
    out->finish = eddy_llm_finish_from(out->finish_raw);
    if (out->finish == EDDY_FINISH_STOP && json_array_size(calls))
        out->finish = EDDY_FINISH_TOOL_CALLS;
    usage_from(json_object_get(root, "usage"), &out->usage);
    if (rc)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    json_decref(root);
    if (rc)
        eddy_llm_response_clear(out);
    return rc;
}

static int oa_event(eddy_llm_stream *st, const char *name, const char *data, size_t len,
                    eddy_err *err)
{
    eddy_llm_response *r = eddy_llm_stream_resp(st);
    json_error_t je;
    json_t *root, *choice, *delta, *calls, *tc;
    size_t i;
    int rc = 0;
    (void)name;
    if (len == 6 && !memcmp(data, "[DONE]", 6)) {
        eddy_llm_stream_end(st);
        return 0;
    }
    root = json_loadb(data, len, 0, &je);
    if (!root)
        return eddy_err_set(err, EDDY_EPARSE, "stream chunk is not valid JSON (%s at column %d)",
                            je.text, je.column);
    if ((rc = body_error(root, err)))
        goto out;
    if (!r->id && eddy_json_str(root, "id", NULL))
        r->id = eddy_strdup(eddy_json_str(root, "id", NULL));
    if (!r->model && eddy_json_str(root, "model", NULL))
        r->model = eddy_strdup(eddy_json_str(root, "model", NULL));
    if (json_is_object(json_object_get(root, "usage")))
        usage_from(json_object_get(root, "usage"), &r->usage);
    choice = json_array_get(json_object_get(root, "choices"), 0);
    delta = json_object_get(choice, "delta");
    json_t *content = json_object_get(delta, "content");
    if (json_is_string(content) && json_string_length(content))
        rc = eddy_llm_stream_text(st, json_string_value(content), json_string_length(content));
    calls = json_object_get(delta, "tool_calls");
    json_array_foreach(calls, i, tc)
    {
        json_t *fn = json_object_get(tc, "function"), *a = json_object_get(fn, "arguments");
        json_t *ix = json_object_get(tc, "index");
        long index = json_is_integer(ix) ? (long)json_integer_value(ix) : -1;
        const char *id = eddy_json_str(tc, "id", NULL);
        if (rc)
            break;
        if (json_is_object(a)) {
            char *s = eddy_json_dumps(a);
            rc = s ? eddy_llm_stream_tool(st, index, id, eddy_json_str(fn, "name", NULL), s,
                                          strlen(s))
                   : EDDY_ENOMEM;
            eddy_free(s);
        } else {
            rc = eddy_llm_stream_tool(st, index, id && *id ? id : NULL,
                                      eddy_json_str(fn, "name", NULL),
                                      json_is_string(a) ? json_string_value(a) : NULL,
                                      json_is_string(a) ? json_string_length(a) : 0);
        }
    }
    const char *fr = eddy_json_str(choice, "finish_reason", NULL);
    if (fr && !rc) {
        eddy_free(r->finish_raw);
        r->finish_raw = eddy_strdup(fr);
    }
    if (rc == EDDY_ENOMEM)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    json_decref(root);
    return rc;
}

static void oa_error_info(const char *body, size_t len, eddy_llm_error_info *out)
{
    eddy__llm_error_info_json(body, len, out);
}

const eddy_llm_provider eddy__llm_openai = {
    .name = "openai",
    .framing = EDDY_FRAMING_SSE,
    .url = oa_url,
    .headers = oa_headers,
    .build = oa_build,
    .parse = oa_parse,
    .event = oa_event,
    .error_info = oa_error_info,
};
