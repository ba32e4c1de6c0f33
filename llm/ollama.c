/*
 * llm/ollama.c - Ollama's native /api/chat.
 *
 * Requests: OpenAI-like messages, but tool-call arguments are objects and a
 * tool result names its tool (`tool_name`); `stream` is always sent (Ollama
 * streams unless told not to); max_tokens and temperature go to `options`
 * (num_predict); structured output is `format: <schema>`. Ollama has no
 * tool_choice: `none` leaves the tools out, the rest send them. Streams are
 * NDJSON: message pieces with done:false, then a done:true line with the
 * counts (prompt_eval_count, eval_count) and done_reason. Calls have no ids:
 * eddy names them call_<n>.
 */
#include "eddy/buf.h"
#include "eddy/json.h"
#include "llm_int.h"

#include <string.h>

static char *ol_url(const eddy_llm_model *m)
{
    return eddy__llm_join_url(m->base_url, "/api/chat");
}

static json_t *ol_build(const eddy_llm_model *m, const eddy_llm_request *rq, int stream)
{
    const eddy_llm_conv *c = rq->conv;
    json_t *msgs = json_array();
    int rc = !msgs;
    for (size_t i = 0; !rc && i < c->n; i++) {
        const eddy_llm_msg *msg = &c->msgs[i];
        if (msg->role == EDDY_ROLE_TOOL) {
            for (size_t k = 0; !rc && k < msg->nparts; k++) {
                const eddy_llm_part *p = &msg->parts[k];
                if (p->kind == EDDY_PART_TOOL_RESULT)
                    rc = json_array_append_new(
                        msgs, json_pack("{s:s, s:s, s:s?}", "role", "tool", "content",
                                        p->text ? p->text : "", "tool_name", p->name));
            }
            continue;
        }
        char *text = eddy_llm_msg_join_text(msg);
        json_t *o = text ? json_pack("{s:s, s:s}", "role", eddy_llm_role_name(msg->role),
                                     "content", text)
                         : NULL;
        eddy_free(text);
        if (o && eddy_llm_msg_count(msg, EDDY_PART_TOOL_CALL)) {
            json_t *calls = json_array();
            for (size_t k = 0; calls && k < msg->nparts; k++) {
                const eddy_llm_part *p = &msg->parts[k];
                if (p->kind != EDDY_PART_TOOL_CALL)
                    continue;
                json_t *a = eddy__llm_args_object(p->args);
                json_array_append_new(calls, json_pack("{s:{s:s, s:o}}", "function", "name",
                                                       p->name ? p->name : "", "arguments",
                                                       a ? a : json_object()));
            }
            json_object_set_new(o, "tool_calls", calls);
        }
        rc = !o || json_array_append_new(msgs, o);
    }
    json_t *body = rc ? NULL
                      : json_pack("{s:s, s:O, s:b}", "model", m->model ? m->model : "",
                                  "messages", msgs, "stream", stream);
    json_decref(msgs);
    if (!body)
        return NULL;
    if (rq->ntools && rq->tool_choice != EDDY_TOOL_CHOICE_NONE) {
        json_object_set_new(body, "tools", eddy__llm_function_tools(rq));
    }
    if (rq->output_schema)
        json_object_set(body, "format", rq->output_schema);
    if (m->max_tokens > 0 || m->has_temperature) {
        json_t *opt = json_object();
        if (m->max_tokens > 0)
            json_object_set_new(opt, "num_predict", json_integer(m->max_tokens));
        if (m->has_temperature)
            json_object_set_new(opt, "temperature", json_real(m->temperature));
        json_object_set_new(body, "options", opt);
    }
    return body;
}

static void counts(json_t *root, eddy_llm_usage *u)
{
    if (json_object_get(root, "prompt_eval_count"))
        u->input_tokens = (long)eddy_json_int(root, "prompt_eval_count", 0);
    if (json_object_get(root, "eval_count"))
        u->output_tokens = (long)eddy_json_int(root, "eval_count", 0);
}

/* The calls of MSG (a JSON message) into the stream or the message. */
static int add_calls(json_t *msg, eddy_llm_stream *st, eddy_llm_msg *m, size_t *n)
{
    json_t *tc;
    size_t i;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, tc)
    {
        json_t *fn = json_object_get(tc, "function"), *a = json_object_get(fn, "arguments");
        const char *name = eddy_json_str(fn, "name", NULL);
        char *args = json_is_string(a) ? eddy_strdup(json_string_value(a))
                     : a               ? eddy_json_dumps(a)
                                       : eddy_strdup("{}");
        char idbuf[32];
        const char *id = eddy_json_str(tc, "id", NULL);
        int rc;
        if (!id || !*id) {
            snprintf(idbuf, sizeof(idbuf), "call_%zu", (*n)++);
            id = idbuf;
        }
        if (!args)
            return EDDY_ENOMEM;
        if (!name) {
            eddy_free(args);
            return EDDY_ELLM;
        }
        /* Ollama sends a call's arguments whole: a call seen again replaces them */
        if (st) {
            rc = eddy_llm_stream_tool(st, -1, id, name, NULL, 0);
            if (!rc)
                rc = eddy_llm_stream_tool_args_set(st, -1, id, args);
        } else {
            rc = eddy_llm_msg_tool_call(m, id, name, args);
        }
        eddy_free(args);
        if (rc)
            return rc;
    }
    return 0;
}

static int ol_parse(const eddy_llm_request *rq, json_t *root,
                    eddy_llm_response *out, eddy_err *err)
{
    json_t *msg;
    int rc = 0;
    size_t ncalls = 0;
    (void)rq;
    if ((rc = eddy__llm_body_error(root, err)))
        goto out;
    msg = json_object_get(root, "message");
    if (!json_is_object(msg)) {
        rc = eddy_err_set(err, EDDY_EPARSE, "response has no message");
        goto out;
    }
    out->model = eddy_strdup(eddy_json_str(root, "model", NULL));
    out->finish_raw = eddy_strdup(eddy_json_str(root, "done_reason", NULL));
    const char *t = eddy_json_str(msg, "content", "");
    if (*t)
        rc = eddy_llm_msg_text(&out->message, t);
    if (!rc && (rc = add_calls(msg, NULL, &out->message, &ncalls)) == EDDY_ELLM) {
        eddy_err_set(err, EDDY_ELLM, "a tool call has no function name");
        goto out;
    }
    counts(root, &out->usage);
    out->finish = eddy_llm_finish_from(out->finish_raw);
    if (out->finish == EDDY_FINISH_STOP && eddy_llm_msg_count(&out->message, EDDY_PART_TOOL_CALL))
        out->finish = EDDY_FINISH_TOOL_CALLS;
    if (rc)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    return rc;
}

static int ol_event(eddy_llm_stream *st, const char *name, const char *data, size_t len,
                    eddy_err *err)
{
    eddy_llm_response *r = eddy_llm_stream_resp(st);
    json_error_t je;
    json_t *root = eddy_json_loadb(data, len, 0, &je), *msg;
    int rc = 0;
    (void)name;
    if (!root)
        return eddy_err_set(err, EDDY_EPARSE, "stream line is not valid JSON (%s at column %d)",
                            je.text, je.column);
    if ((rc = eddy__llm_body_error(root, err)))
        goto out;
    if (!r->model && eddy_json_str(root, "model", NULL))
        r->model = eddy_strdup(eddy_json_str(root, "model", NULL));
    msg = json_object_get(root, "message");
    const char *t = eddy_json_str(msg, "content", "");
    if (*t)
        rc = eddy_llm_stream_text(st, t, strlen(t));
    if (!rc) {
        size_t n = eddy_llm_msg_count(&r->message, EDDY_PART_TOOL_CALL);
        rc = add_calls(msg, st, NULL, &n);
        if (rc == EDDY_ELLM) {
            eddy_err_set(err, EDDY_ELLM, "a streamed tool call has no function name");
            goto out;
        }
    }
    if (json_is_true(json_object_get(root, "done"))) {
        counts(root, &r->usage);
        const char *dr = eddy_json_str(root, "done_reason", NULL);
        if (dr)
            eddy__llm_set_finish(r, dr);
        eddy_llm_stream_end(st);
    }
    if (rc)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    json_decref(root);
    return rc;
}

const eddy_llm_provider eddy__llm_ollama = {
    .name = "ollama",
    .framing = EDDY_FRAMING_NDJSON,
    .url = ol_url,
    .headers = eddy__llm_bearer_headers, /* a proxy in front may want a key */
    .build = ol_build,
    .parse = ol_parse,
    .event = ol_event,
    .error_info = eddy__llm_error_info_json,
};
