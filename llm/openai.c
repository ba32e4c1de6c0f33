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

/* The function-tool definitions as a JSON tree (what Ollama takes), each built
 * once and kept with its definition. */
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

/* The request body is written as JSON text straight from the neutral types,
 * without a jansson tree: each message's text (one object, or one per tool
 * result, comma-separated) is written once and kept with the message as a
 * JSON string, so a turn only copies the conversation it resends; so is each
 * tool definition's. */
static const char kMsgText[] = "openai message text", kToolText[] = "openai tool text";

#define PUTS(b, s) eddy_buf_append((b), (s), sizeof(s) - 1)

static int put_str(eddy_buf *b, const char *s)
{
    return eddy_json_put_string(b, s ? s : "", s ? strlen(s) : 0);
}

static int write_msg(eddy_buf *b, const eddy_llm_msg *m)
{
    int rc = 0, first = 1;
    if (m->role == EDDY_ROLE_TOOL) {
        for (size_t k = 0; !rc && k < m->nparts; k++) {
            const eddy_llm_part *p = &m->parts[k];
            if (p->kind != EDDY_PART_TOOL_RESULT)
                continue;
            if (!first)
                eddy_buf_putc(b, ',');
            first = 0;
            PUTS(b, "{\"role\":\"tool\",\"tool_call_id\":");
            rc = put_str(b, p->id);
            PUTS(b, ",\"content\":");
            rc = rc ? rc : put_str(b, p->text);
            eddy_buf_putc(b, '}');
        }
        return rc ? rc : b->oom ? EDDY_ENOMEM : 0;
    }
    PUTS(b, "{\"role\":");
    rc = put_str(b, eddy_llm_role_name(m->role));
    PUTS(b, ",\"content\":");
    if (m->nparts == 1 && m->parts[0].kind == EDDY_PART_TEXT) {
        rc = rc ? rc : put_str(b, m->parts[0].text);
    } else {
        char *text = eddy_llm_msg_join_text(m); /* never null: "" (llama-cpp-python) */
        rc = rc ? rc : text ? put_str(b, text) : EDDY_ENOMEM;
        eddy_free(text);
    }
    if (m->role == EDDY_ROLE_ASSISTANT && eddy_llm_msg_count(m, EDDY_PART_TOOL_CALL)) {
        PUTS(b, ",\"tool_calls\":[");
        for (size_t k = 0; !rc && k < m->nparts; k++) {
            const eddy_llm_part *p = &m->parts[k];
            if (p->kind != EDDY_PART_TOOL_CALL)
                continue;
            if (!first)
                eddy_buf_putc(b, ',');
            first = 0;
            PUTS(b, "{\"id\":");
            rc = put_str(b, p->id);
            PUTS(b, ",\"type\":\"function\",\"function\":{\"name\":");
            rc = rc ? rc : put_str(b, p->name);
            PUTS(b, ",\"arguments\":");
            rc = rc ? rc : put_str(b, p->args ? p->args : "{}");
            PUTS(b, "}}");
        }
        eddy_buf_putc(b, ']');
    }
    eddy_buf_putc(b, '}');
    return rc ? rc : b->oom ? EDDY_ENOMEM : 0;
}

/* Append M's JSON text (cached with M) to B, after a comma unless *FIRST. */
static int put_msg(eddy_buf *b, const eddy_llm_msg *m, int *first)
{
    json_t *w = eddy_llm_msg_wire(m, kMsgText);
    if (!w) {
        eddy_buf t;
        eddy_buf_init(&t);
        int rc = write_msg(&t, m);
        if (!rc && !(w = eddy_llm_msg_set_wire(m, kMsgText,
                                               json_stringn_nocheck(t.data ? t.data : "", t.len))))
            rc = EDDY_ENOMEM;
        eddy_buf_free(&t);
        if (rc)
            return rc;
    }
    if (!json_string_length(w)) /* a tool message without results */
        return 0;
    if (!*first)
        eddy_buf_putc(b, ',');
    *first = 0;
    return eddy_buf_append(b, json_string_value(w), json_string_length(w));
}

static int put_tool(eddy_buf *b, const eddy_llm_tool_def *td)
{
    eddy_llm_tool_def *t = (eddy_llm_tool_def *)td; /* the cache only */
    if (!t->wire || t->wire_for != kToolText) {
        eddy_buf x;
        eddy_buf_init(&x);
        PUTS(&x, "{\"type\":\"function\",\"function\":{\"name\":");
        int rc = put_str(&x, t->name);
        PUTS(&x, ",\"description\":");
        rc = rc ? rc : put_str(&x, t->description);
        PUTS(&x, ",\"parameters\":");
        rc = rc ? rc : eddy_json_dump_buf(&x, t->parameters, JSON_COMPACT);
        PUTS(&x, "}}");
        json_decref(t->wire);
        t->wire = rc || x.oom ? NULL : json_stringn_nocheck(x.data, x.len);
        t->wire_for = t->wire ? kToolText : NULL;
        eddy_buf_free(&x);
        if (!t->wire)
            return rc ? rc : EDDY_ENOMEM;
    }
    return eddy_buf_append(b, json_string_value(t->wire), json_string_length(t->wire));
}

static int oa_write(const eddy_llm_model *m, const eddy_llm_request *rq, int stream, eddy_buf *b)
{
    char num[EDDY_JSON_NUMBER_MAX];
    int rc, first = 1;
    PUTS(b, "{\"model\":");
    rc = put_str(b, m->model);
    PUTS(b, ",\"messages\":[");
    for (size_t i = 0; !rc && i < rq->conv->n; i++)
        rc = put_msg(b, &rq->conv->msgs[i], &first);
    eddy_buf_putc(b, ']');
    if (rq->ntools) {
        PUTS(b, ",\"tools\":[");
        for (size_t i = 0; !rc && i < rq->ntools; i++) {
            if (i)
                eddy_buf_putc(b, ',');
            rc = put_tool(b, &rq->tools[i]);
        }
        eddy_buf_putc(b, ']');
        switch (rq->tool_choice) {
        case EDDY_TOOL_CHOICE_AUTO:
            PUTS(b, ",\"tool_choice\":\"auto\"");
            break;
        case EDDY_TOOL_CHOICE_REQUIRED:
            PUTS(b, ",\"tool_choice\":\"required\"");
            break;
        case EDDY_TOOL_CHOICE_NONE:
            PUTS(b, ",\"tool_choice\":\"none\"");
            break;
        case EDDY_TOOL_CHOICE_TOOL:
            PUTS(b, ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":");
            rc = rc ? rc : put_str(b, rq->tool_choice_name);
            PUTS(b, "}}");
            break;
        default:
            break;
        }
    }
    if (rq->output_schema) {
        PUTS(b, ",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":");
        rc = rc ? rc : put_str(b, rq->output_name ? rq->output_name : "answer");
        PUTS(b, ",\"schema\":");
        rc = rc ? rc : eddy_json_dump_buf(b, rq->output_schema, JSON_COMPACT);
        PUTS(b, "}}");
    }
    if (m->max_tokens > 0) {
        eddy_json_integer_text(m->max_tokens, num);
        eddy_buf_printf(b, ",\"max_tokens\":%s", num);
    }
    if (m->has_temperature) {
        eddy_json_number_text(m->temperature, num);
        eddy_buf_printf(b, ",\"temperature\":%s", num);
    }
    if (stream)
        PUTS(b, ",\"stream\":true,\"stream_options\":{\"include_usage\":true}");
    eddy_buf_putc(b, '}');
    return rc ? rc : b->oom ? EDDY_ENOMEM : 0;
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

static int oa_parse(const eddy_llm_request *rq, json_t *root,
                    eddy_llm_response *out, eddy_err *err)
{
    json_t *choice, *msg, *calls, *tc;
    size_t i;
    int rc = 0;
    (void)rq;
    if ((rc = eddy__llm_body_error(root, err)))
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
    return rc;
}

/* The chunk that is most of every stream -- one choice whose delta is one
 * piece of text and nothing else that matters -- read without building a
 * tree (a JSON parse per few characters of answer was a third of a streamed
 * run's CPU). *TAKEN says whether it was that chunk; anything else (several
 * choices, other delta fields, a finish reason, usage, an error, a first
 * chunk that still brings the id and model, spaces between tokens) goes to
 * the full parse. */
static int fast_text(eddy_llm_stream *st, const char *data, size_t len, int *taken)
{
    static const char key[] = "\"delta\":{\"content\":\"";
    const eddy_llm_response *r = eddy_llm_stream_resp(st);
    const char *end = data + len, *k, *e;
    int esc = 0;
    *taken = 0;
    if (!data || !r->id || !r->model || len < 2 || data[0] != '{' || data[len - 1] != '}' ||
        !(k = memmem(data, len, key, sizeof(key) - 1)) ||
        memmem(data, (size_t)(k - data), "\"delta\"", 7) || /* another choice */
        memmem(k + 1, (size_t)(end - k - 1), "\"delta\"", 7) ||
        memmem(data, len, "\"finish_reason\":\"", 17) || memmem(data, len, "\"usage\":{", 9) ||
        memmem(data, len, "\"error\"", 7))
        return 0;
    const char *s = k + sizeof(key) - 2; /* the opening quote */
    for (e = s + 1; e < end && *e != '"'; e++)
        if (*e == '\\') {
            esc = 1;
            e++;
        } else if ((unsigned char)*e < 0x20) {
            return 0; /* not JSON: the full parse says so */
        }
    if (e + 1 >= end || e[1] != '}') /* the delta has more than its text */
        return 0;
    size_t n = (size_t)(e - s - 1);
    if (!esc) {
        if (eddy_utf8_invalid(s + 1, n) != n)
            return 0;
        *taken = 1;
        return eddy_llm_stream_text(st, s + 1, n);
    }
    json_t *v = eddy_json_loadb(s, n + 2, JSON_DECODE_ANY, NULL);
    int rc = 0;
    if (json_is_string(v)) {
        *taken = 1;
        rc = eddy_llm_stream_text(st, json_string_value(v), json_string_length(v));
    }
    json_decref(v);
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
    int taken;
    if ((rc = fast_text(st, data, len, &taken)) || taken) {
        if (rc)
            eddy_err_set(err, rc, "%s", rc == EDDY_ERANGE ? "answer too large" : "out of memory");
        return rc;
    }
    root = eddy_json_loadb(data, len, 0, &je);
    if (!root)
        return eddy_err_set(err, EDDY_EPARSE, "stream chunk is not valid JSON (%s at column %d)",
                            je.text, je.column);
    if ((rc = eddy__llm_body_error(root, err)))
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
    if (fr && !rc)
        eddy__llm_set_finish(r, fr);
    if (rc == EDDY_ENOMEM)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    json_decref(root);
    return rc;
}

const eddy_llm_provider eddy__llm_openai = {
    .name = "openai",
    .framing = EDDY_FRAMING_SSE,
    .url = oa_url,
    .headers = eddy__llm_bearer_headers,
    .write = oa_write,
    .parse = oa_parse,
    .event = oa_event,
    .error_info = eddy__llm_error_info_json,
};
