/*
 * llm/anthropic.c - Anthropic's Messages API.
 *
 * Requests: `x-api-key` and `anthropic-version` headers; system prompts go
 * to the top-level `system`; assistant turns are text and `tool_use` blocks
 * (input as an object); tool results are `tool_result` blocks of a user
 * turn; `max_tokens` is required (4096 when the job sets none). Prompt
 * caching marks the stable prefix: the last tool definition and the last
 * system block get `cache_control` (tools come before system in the
 * prefix). Structured output is a tool whose input schema is the output
 * schema, forced when the agent has no other tools (else the model must
 * call some tool: one of the agent's, or the output tool to answer); its
 * input comes back as the answer's text.
 *
 * Streams: SSE events message_start, content_block_start/delta/stop (text
 * deltas, input_json_delta fragments), message_delta (stop reason, output
 * usage), message_stop; ping is ignored; an error event ends the stream.
 * Usage: Anthropic's input_tokens leave out cache reads and writes; the
 * neutral count includes them.
 */
#include "eddy/buf.h"
#include "eddy/json.h"
#include "llm_int.h"

#include <string.h>

#define DEFAULT_MAX_TOKENS 4096

static char *an_url(const eddy_llm_model *m)
{
    return eddy__llm_join_url(m->base_url, "/messages");
}

static void an_headers(const eddy_llm_model *m, void (*add)(void *ud, const char *line), void *ud)
{
    char *h = eddy_aprintf("anthropic-version: %s", m->api_version ? m->api_version : "2023-06-01");
    if (h)
        add(ud, h);
    eddy_free(h);
    eddy__llm_secret_header(add, ud, "x-api-key: ", m->api_key);
}

/* Whether the output schema must be wrapped (the tool input is an object). */
static int needs_wrap(json_t *schema)
{
    return !json_is_string(json_object_get(schema, "type")) ||
           strcmp(json_string_value(json_object_get(schema, "type")), "object");
}

static json_t *tools_json(const eddy_llm_model *m, const eddy_llm_request *rq)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < rq->ntools; i++) {
        const eddy_llm_tool_def *t = &rq->tools[i];
        json_array_append_new(a, json_pack("{s:s, s:s, s:O}", "name", t->name, "description",
                                           t->description ? t->description : "", "input_schema",
                                           t->parameters));
    }
    if (a && rq->output_schema) {
        json_t *schema = needs_wrap(rq->output_schema)
                             ? json_pack("{s:s, s:{s:O}, s:[s]}", "type", "object", "properties",
                                         "value", rq->output_schema, "required", "value")
                             : json_incref(rq->output_schema);
        json_array_append_new(a, json_pack("{s:s, s:s, s:o}", "name", EDDY_LLM_OUTPUT_TOOL,
                                           "description",
                                           "Give the final answer: call this tool with the "
                                           "answer as its input, in the required structure.",
                                           "input_schema", schema));
    }
    if (a && m->prompt_cache && json_array_size(a))
        json_object_set_new(json_array_get(a, json_array_size(a) - 1), "cache_control",
                            json_pack("{s:s}", "type", "ephemeral"));
    return a;
}

static json_t *text_block(const char *text)
{
    return json_pack("{s:s, s:s}", "type", "text", "text", text);
}

/* Append block B to the last message if it has ROLE, else to a new one. */
static int push(json_t *msgs, const char *role, json_t *b)
{
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    if (!b)
        return -1;
    if (last && !strcmp(eddy_json_str(last, "role", ""), role))
        return json_array_append_new(json_object_get(last, "content"), b);
    return json_array_append_new(msgs, json_pack("{s:s, s:[o]}", "role", role, "content", b));
}

static json_t *an_build(const eddy_llm_model *m, const eddy_llm_request *rq, int stream)
{
    const eddy_llm_conv *c = rq->conv;
    json_t *msgs = json_array(), *system = json_array();
    int rc = !msgs || !system;
    for (size_t i = 0; !rc && i < c->n; i++) {
        const eddy_llm_msg *msg = &c->msgs[i];
        for (size_t k = 0; !rc && k < msg->nparts; k++) {
            const eddy_llm_part *p = &msg->parts[k];
            if (msg->role == EDDY_ROLE_SYSTEM) {
                if (p->kind == EDDY_PART_TEXT && p->text && *p->text)
                    rc = json_array_append_new(system, text_block(p->text));
            } else if (p->kind == EDDY_PART_TEXT) {
                if (p->text && *p->text) /* empty text blocks are refused */
                    rc = push(msgs, msg->role == EDDY_ROLE_ASSISTANT ? "assistant" : "user",
                              text_block(p->text));
            } else if (p->kind == EDDY_PART_TOOL_CALL) {
                json_t *in = eddy__llm_args_object(p->args);
                rc = push(msgs, "assistant",
                          json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id",
                                    p->id ? p->id : "", "name", p->name ? p->name : "", "input",
                                    in ? in : json_object()));
            } else {
                json_t *b = json_pack("{s:s, s:s, s:s}", "type", "tool_result", "tool_use_id",
                                      p->id ? p->id : "", "content", p->text ? p->text : "");
                if (b && p->is_error)
                    json_object_set_new(b, "is_error", json_true());
                rc = push(msgs, "user", b);
            }
        }
    }
    json_t *body = rc ? NULL
                      : json_pack("{s:s, s:i, s:O}", "model", m->model ? m->model : "",
                                  "max_tokens", m->max_tokens > 0 ? (json_int_t)m->max_tokens
                                                                  : DEFAULT_MAX_TOKENS,
                                  "messages", msgs);
    if (body && json_array_size(system)) {
        if (m->prompt_cache)
            json_object_set_new(json_array_get(system, json_array_size(system) - 1),
                                "cache_control", json_pack("{s:s}", "type", "ephemeral"));
        json_object_set(body, "system", system);
    }
    if (body && (rq->ntools || rq->output_schema) && rq->tool_choice != EDDY_TOOL_CHOICE_NONE)
        json_object_set_new(body, "tools", tools_json(m, rq));
    if (body && rq->output_schema)
        json_object_set_new(body, "tool_choice",
                            rq->ntools ? json_pack("{s:s}", "type", "any")
                                       : json_pack("{s:s, s:s}", "type", "tool", "name",
                                                   EDDY_LLM_OUTPUT_TOOL));
    else if (body && rq->ntools) {
        switch (rq->tool_choice) {
        case EDDY_TOOL_CHOICE_AUTO:
            json_object_set_new(body, "tool_choice", json_pack("{s:s}", "type", "auto"));
            break;
        case EDDY_TOOL_CHOICE_REQUIRED:
            json_object_set_new(body, "tool_choice", json_pack("{s:s}", "type", "any"));
            break;
        case EDDY_TOOL_CHOICE_TOOL:
            json_object_set_new(body, "tool_choice",
                                json_pack("{s:s, s:s}", "type", "tool", "name",
                                          rq->tool_choice_name ? rq->tool_choice_name : ""));
            break;
        default: /* NONE: the tools are not sent at all */
            break;
        }
    }
    if (body && m->has_temperature)
        json_object_set_new(body, "temperature", json_real(m->temperature));
    if (body && stream)
        json_object_set_new(body, "stream", json_true());
    json_decref(msgs);
    json_decref(system);
    return body;
}

/* The output tool's call becomes the answer's text. */
static int fix_output(const eddy_llm_request *rq, eddy_llm_response *r)
{
    eddy_llm_msg *m = &r->message;
    if (!rq || !rq->output_schema)
        return 0;
    for (size_t i = 0; i < m->nparts; i++) {
        eddy_llm_part *p = &m->parts[i];
        if (p->kind != EDDY_PART_TOOL_CALL || !p->name || strcmp(p->name, EDDY_LLM_OUTPUT_TOOL))
            continue;
        char *text = NULL;
        json_t *in = eddy__llm_args_object(p->args);
        if (in && needs_wrap(rq->output_schema)) {
            json_t *v = json_object_get(in, "value");
            text = v ? eddy_json_dumps(v) : eddy_strdup(p->args);
        } else {
            text = eddy_strdup(p->args ? p->args : "{}");
        }
        json_decref(in);
        if (!text)
            return EDDY_ENOMEM;
        /* the answer is this text alone: other parts go */
        eddy_llm_msg_clear(m);
        m->role = EDDY_ROLE_ASSISTANT;
        int rc = eddy_llm_msg_text(m, text);
        eddy_free(text);
        eddy__llm_set_finish(r, "end_turn");
        return rc;
    }
    return 0;
}

static void usage_from(json_t *u, eddy_llm_usage *out)
{
    if (!json_is_object(u))
        return;
    long in = (long)eddy_json_int(u, "input_tokens", 0);
    long rd = (long)eddy_json_int(u, "cache_read_input_tokens", 0);
    long wr = (long)eddy_json_int(u, "cache_creation_input_tokens", 0);
    if (json_object_get(u, "input_tokens")) {
        out->input_tokens = in + rd + wr;
        out->cached_input_tokens = rd;
        out->cache_write_tokens = wr;
    }
    if (json_object_get(u, "output_tokens"))
        out->output_tokens = (long)eddy_json_int(u, "output_tokens", 0);
}

static int error_of(json_t *root, eddy_err *err)
{
    json_t *e = json_object_get(root, "error");
    if (!json_is_object(e) && strcmp(eddy_json_str(root, "type", ""), "error"))
        return 0;
    return eddy_err_set(err, EDDY_ELLM, "model error: %s: %.400s",
                        eddy_json_str(e, "type", "error"),
                        eddy_json_str(e, "message", "unknown error"));
}

static int an_parse(const eddy_llm_request *rq, json_t *root,
                    eddy_llm_response *out, eddy_err *err)
{
    json_t *content, *b;
    size_t i;
    int rc = 0;
    if ((rc = error_of(root, err)))
        goto out;
    content = json_object_get(root, "content");
    if (!json_is_array(content)) {
        rc = eddy_err_set(err, EDDY_EPARSE, "response has no content array");
        goto out;
    }
    out->id = eddy_strdup(eddy_json_str(root, "id", NULL));
    out->model = eddy_strdup(eddy_json_str(root, "model", NULL));
    out->finish_raw = eddy_strdup(eddy_json_str(root, "stop_reason", NULL));
    json_array_foreach(content, i, b)
    {
        const char *type = eddy_json_str(b, "type", "");
        if (rc)
            break;
        if (!strcmp(type, "text")) {
            const char *t = eddy_json_str(b, "text", "");
            if (*t)
                rc = eddy_llm_msg_text(&out->message, t);
        } else if (!strcmp(type, "tool_use")) {
            char *args = eddy_json_dumps(json_object_get(b, "input"));
            const char *name = eddy_json_str(b, "name", NULL);
            if (!name) {
                eddy_free(args);
                rc = eddy_err_set(err, EDDY_ELLM, "content[%zu] tool_use has no name", i);
                goto out;
            }
            rc = args ? eddy_llm_msg_tool_call(&out->message, eddy_json_str(b, "id", NULL), name,
                                               args)
                      : EDDY_ENOMEM;
            eddy_free(args);
        } /* thinking and other blocks are not part of the answer */
    }
    usage_from(json_object_get(root, "usage"), &out->usage);
    if (!rc)
        rc = fix_output(rq, out);
    out->finish = eddy_llm_finish_from(out->finish_raw);
    if (rc)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    return rc;
}

static int an_event(eddy_llm_stream *st, const char *name, const char *data, size_t len,
                    eddy_err *err)
{
    eddy_llm_response *r = eddy_llm_stream_resp(st);
    json_error_t je;
    json_t *root = eddy_json_loadb(data, len, 0, &je);
    int rc = 0;
    if (!root)
        return eddy_err_set(err, EDDY_EPARSE, "stream event is not valid JSON (%s at column %d)",
                            je.text, je.column);
    const char *type = eddy_json_str(root, "type", name ? name : "");
    if (!strcmp(type, "error")) {
        rc = error_of(root, err);
    } else if (!strcmp(type, "message_start")) {
        json_t *msg = json_object_get(root, "message");
        if (!r->id)
            r->id = eddy_strdup(eddy_json_str(msg, "id", NULL));
        if (!r->model)
            r->model = eddy_strdup(eddy_json_str(msg, "model", NULL));
        usage_from(json_object_get(msg, "usage"), &r->usage);
    } else if (!strcmp(type, "content_block_start")) {
        json_t *b = json_object_get(root, "content_block");
        long index = (long)eddy_json_int(root, "index", 0);
        const char *bt = eddy_json_str(b, "type", "");
        if (!strcmp(bt, "tool_use")) {
            json_t *in = json_object_get(b, "input");
            rc = eddy_llm_stream_tool(st, index, eddy_json_str(b, "id", NULL),
                                      eddy_json_str(b, "name", NULL), NULL, 0);
            if (!rc && json_object_size(in)) { /* a whole input up front */
                char *s = eddy_json_dumps(in);
                rc = s ? eddy_llm_stream_tool_args_set(st, index, NULL, s) : EDDY_ENOMEM;
                eddy_free(s);
            }
        } else if (!strcmp(bt, "text")) {
            const char *t = eddy_json_str(b, "text", "");
            rc = eddy_llm_stream_text(st, t, strlen(t));
        }
    } else if (!strcmp(type, "content_block_delta")) {
        json_t *d = json_object_get(root, "delta");
        const char *dt = eddy_json_str(d, "type", "");
        if (!strcmp(dt, "text_delta")) {
            const char *t = eddy_json_str(d, "text", "");
            rc = eddy_llm_stream_text(st, t, strlen(t));
        } else if (!strcmp(dt, "input_json_delta")) {
            const char *t = eddy_json_str(d, "partial_json", "");
            rc = eddy_llm_stream_tool(st, (long)eddy_json_int(root, "index", 0), NULL, NULL, t,
                                      strlen(t));
        }
    } else if (!strcmp(type, "message_delta")) {
        const char *sr = eddy_json_str(json_object_get(root, "delta"), "stop_reason", NULL);
        if (sr)
            eddy__llm_set_finish(r, sr);
        usage_from(json_object_get(root, "usage"), &r->usage);
    } else if (!strcmp(type, "message_stop")) {
        rc = fix_output(eddy_llm_stream_request(st), r);
        eddy_llm_stream_end(st);
    } /* ping, content_block_stop and new event types: nothing to do */
    if (rc == EDDY_ENOMEM)
        eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    json_decref(root);
    return rc;
}

const eddy_llm_provider eddy__llm_anthropic = {
    .name = "anthropic",
    .framing = EDDY_FRAMING_SSE,
    .url = an_url,
    .headers = an_headers,
    .build = an_build,
    .parse = an_parse,
    .event = an_event,
    .error_info = eddy__llm_error_info_json,
};
