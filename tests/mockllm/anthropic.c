/*
 * tests/mockllm/anthropic.c - the Anthropic Messages format of the mock:
 * POST .../messages, a message with content blocks, or SSE events
 * (message_start, ping, content_block_start/delta/stop, message_delta,
 * message_stop; error mid-stream).
 *
 * The neutral view: the top-level system prompt is a system message; a
 * user message's tool_result blocks become "tool" messages (so last_role is
 * "tool" after a tool round, as for OpenAI) and its text blocks a user
 * message after them; an assistant message keeps its text blocks' text.
 */
#include "mockllm_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <string.h>

static const char *const kHeaders[] = {"anthropic-ratelimit-requests-remaining",
                                       "anthropic-ratelimit-tokens-remaining",
                                       "anthropic-ratelimit-requests-reset",
                                       "anthropic-ratelimit-tokens-reset",
                                       "anthropic-ratelimit-requests-limit",
                                       "anthropic-ratelimit-tokens-limit",
                                       NULL};

/* A user message of blocks: each tool_result a tool message, then the text
 * (a user message when there is text, or when there was no tool_result). */
static void user_blocks(json_t *msgs, json_t *content)
{
    size_t i, ntool = 0;
    json_t *blk;
    eddy_buf text;
    eddy_buf_init(&text);
    json_array_foreach(content, i, blk)
    {
        const char *type = eddy_json_str(blk, "type", "");
        if (!strcmp(type, "tool_result")) {
            char *t = mock_content_text(json_object_get(blk, "content"));
            mock_msg_add(msgs, "tool", t ? t : "");
            eddy_free(t);
            ntool++;
        } else if (!strcmp(type, "text")) {
            if (text.len)
                eddy_buf_putc(&text, '\n');
            eddy_buf_puts(&text, eddy_json_str(blk, "text", ""));
        }
    }
    if (text.len || ntool == 0)
        mock_msg_add(msgs, "user", text.len ? text.data : "");
    eddy_buf_free(&text);
}

static int check_headers(mock_req *r, mock_error *e)
{
    if (!r->anthropic_version)
        return mock_error_set(e, 400, "invalid_request_error",
                              "mock: anthropic-version: header is required");
    if (g_opts.require_api_key && (!r->x_api_key || !*r->x_api_key))
        return mock_error_set(e, 401, "authentication_error", "mock: x-api-key header is required");
    if (g_opts.require_api_key && g_opts.api_key && strcmp(r->x_api_key, g_opts.api_key))
        return mock_error_set(e, 401, "authentication_error", "mock: invalid x-api-key");
    return 0;
}

static int parse(mock_req *r, mock_error *e)
{
    json_t *b = r->body, *m, *t, *sys = json_object_get(b, "system");
    size_t i;
    r->model = eddy_json_str(b, "model", "mock");
    r->stream = json_is_true(json_object_get(b, "stream"));
    r->include_usage = 1;
    if (check_headers(r, e))
        return -1;
    if (!json_is_string(json_object_get(b, "model")))
        return mock_error_set(e, 400, "invalid_request_error", "mock: model: Field required");
    if (!json_is_integer(json_object_get(b, "max_tokens")))
        return mock_error_set(e, 400, "invalid_request_error", "mock: max_tokens: Field required");
    if (!json_is_array(json_object_get(b, "messages")))
        return mock_error_set(e, 400, "invalid_request_error", "mock: messages: Field required");
    if (sys) {
        char *s = mock_content_text(sys);
        mock_msg_add(r->msgs, "system", s ? s : "");
        eddy_free(s);
    }
    json_array_foreach(json_object_get(b, "messages"), i, m)
    {
        const char *role = eddy_json_str(m, "role", "");
        json_t *c = json_object_get(m, "content");
        if (!strcmp(role, "user") && json_is_array(c)) {
            user_blocks(r->msgs, c);
        } else {
            char *text = mock_content_text(c);
            mock_msg_add(r->msgs, role, text ? text : "");
            eddy_free(text);
        }
    }
    json_array_foreach(json_object_get(b, "tools"), i, t)
    {
        const char *name = eddy_json_str(t, "name", NULL);
        if (name)
            json_array_append_new(r->tools, json_string(name));
    }
    r->prompt_chars = mock_json_chars(json_object_get(b, "messages")) + mock_json_chars(sys);
    return 0;
}

static json_t *usage(const mock_answer *a, json_int_t out)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)a->in,
                     "cache_creation_input_tokens", (json_int_t)a->cache_creation,
                     "cache_read_input_tokens", (json_int_t)a->cached, "output_tokens", out);
}

static const char *stop_reason(const mock_answer *a)
{
    return mock_finish_word(a->finish, "end_turn", "tool_use", "max_tokens");
}

/* The input of a tool_use block: the arguments' object, or (a model that wrote
 * broken arguments) their text. */
static json_t *input_of(const mock_call *c)
{
    return c->input ? json_incref(c->input) : json_string(c->args ? c->args : "");
}

static json_t *message(const mock_answer *a, int streaming)
{
    char id[48];
    json_t *content = json_array(), *m;
    snprintf(id, sizeof(id), "msg_mock_%ld", a->id);
    if (!streaming) {
        if (a->text)
            json_array_append_new(content,
                                  json_pack("{s:s, s:s}", "type", "text", "text", a->text));
        for (size_t i = 0; i < a->ncalls; i++)
            json_array_append_new(content, json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use",
                                                     "id", a->calls[i].id, "name", a->calls[i].name,
                                                     "input", input_of(&a->calls[i])));
    }
    m = json_pack("{s:s, s:s, s:s, s:s, s:o, s:s?, s:n}", "id", id, "type", "message", "role",
                  "assistant", "model", a->model, "content", content, "stop_reason",
                  streaming ? NULL : stop_reason(a), "stop_sequence");
    if (!a->omit_usage)
        json_object_set_new(m, "usage", usage(a, streaming ? 1 : (json_int_t)a->out));
    return m;
}

static char *body(const mock_req *r, const mock_answer *a)
{
    (void)r;
    return mock_dump(message(a, 0));
}

/* content_block_delta events for TEXT at block INDEX, KIND text_delta or input_json_delta. */
static void deltas(mock_chunks *out, size_t index, const char *text, const char *kind, size_t piece)
{
    const char *field = !strcmp(kind, "text_delta") ? "text" : "partial_json";
    size_t n = strlen(text), off = 0;
    while (off < n) {
        size_t k = mock_piece_len(text + off, n - off, piece);
        json_t *d = json_pack("{s:s}", "type", kind);
        json_object_set_new(d, field, json_stringn(text + off, k));
        mock_chunks_add(out, mock_sse("content_block_delta",
                                      json_pack("{s:s, s:I, s:o}", "type", "content_block_delta",
                                                "index", (json_int_t)index, "delta", d)));
        off += k;
    }
}

static void block_stop(mock_chunks *out, size_t index)
{
    mock_chunks_add(
        out, mock_sse("content_block_stop", json_pack("{s:s, s:I}", "type", "content_block_stop",
                                                      "index", (json_int_t)index)));
}

static void stream(const mock_req *r, const mock_answer *a, mock_chunks *out)
{
    size_t index = 0;
    json_t *md;
    (void)r;
    mock_chunks_add(out, mock_sse("message_start", json_pack("{s:s, s:o}", "type", "message_start",
                                                             "message", message(a, 1))));
    mock_chunks_add(out, mock_sse("ping", json_pack("{s:s}", "type", "ping")));
    if (a->text) {
        mock_chunks_add(out, mock_sse("content_block_start",
                                      json_pack("{s:s, s:I, s:{s:s, s:s}}", "type",
                                                "content_block_start", "index", (json_int_t)index,
                                                "content_block", "type", "text", "text", "")));
        deltas(out, index, a->text, "text_delta", a->piece);
        block_stop(out, index++);
    }
    for (size_t i = 0; i < a->ncalls; i++, index++) {
        const mock_call *c = &a->calls[i];
        mock_chunks_add(out, mock_sse("content_block_start",
                                      json_pack("{s:s, s:I, s:{s:s, s:s, s:s, s:{}}}", "type",
                                                "content_block_start", "index", (json_int_t)index,
                                                "content_block", "type", "tool_use", "id", c->id,
                                                "name", c->name, "input")));
        deltas(out, index, c->args ? c->args : "{}", "input_json_delta", a->piece);
        block_stop(out, index);
    }
    md = json_pack("{s:s, s:{s:s, s:n}}", "type", "message_delta", "delta", "stop_reason",
                   stop_reason(a), "stop_sequence");
    if (!a->omit_usage)
        json_object_set_new(md, "usage", json_pack("{s:I}", "output_tokens", (json_int_t)a->out));
    mock_chunks_add(out, mock_sse("message_delta", md));
    mock_chunks_add(out, mock_sse("message_stop", json_pack("{s:s}", "type", "message_stop")));
}

/* The error type Anthropic gives STATUS. */
static const char *error_type(unsigned status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 402:
        return "billing_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 504:
        return "timeout_error";
    case 529:
        return "overloaded_error";
    default:
        return status >= 500 ? "api_error" : "invalid_request_error";
    }
}

static char *error(const mock_req *r, const mock_error *e)
{
    char rid[48];
    snprintf(rid, sizeof(rid), "req_mock_%ld", r ? r->seq : 0L);
    return mock_dump(json_pack("{s:s, s:{s:s, s:s}, s:s}", "type", "error", "error", "type",
                               e->type ? e->type : error_type(e->status), "message", e->message,
                               "request_id", rid));
}

static char *stream_error(const mock_req *r, const mock_error *e)
{
    (void)r;
    return mock_sse("error",
                    json_pack("{s:s, s:{s:s, s:s}}", "type", "error", "error", "type",
                              e->type ? e->type : "overloaded_error", "message", e->message));
}

const mock_wire mock_anthropic = {
    .name = "anthropic",
    .stream_type = "text/event-stream",
    .malformed = "{\"id\": \"msg_broken\", \"type\": \"message\", \"content\": [ {\"type\": ",
    .truncated =
        "{\"id\":\"msg_trunc\",\"type\":\"message\",\"role\":\"assistant\",\"model\":"
        "\"mock\",\"content\":[{\"type\":\"text\",\"text\":\"this answer is cut short\"}],"
        "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":1,"
        "\"output_tokens\":1}}",
    .ratelimit_headers = kHeaders,
    .parse = parse,
    .body = body,
    .stream = stream,
    .error = error,
    .stream_error = stream_error,
};
