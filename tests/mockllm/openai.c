/*
 * tests/mockllm/openai.c - the OpenAI chat-completions format of the mock:
 * POST .../chat/completions, plain JSON or SSE chunks ending in data: [DONE].
 *
 * The plain answer and the error bodies are byte for byte what the mock sent
 * before it spoke other formats (tests compare them); what is new (usage
 * details, streams, the llama-cpp-python emulations) appears only when a
 * script or request asks for it.
 */
#include "mockllm_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <string.h>
#include <time.h>

static const char *const kHeaders[] = {"x-ratelimit-remaining-requests",
                                       "x-ratelimit-remaining-tokens",
                                       "x-ratelimit-reset-requests",
                                       "x-ratelimit-reset-tokens",
                                       "x-ratelimit-limit-requests",
                                       "x-ratelimit-limit-tokens",
                                       NULL};

/* strict_content: llama-cpp-python validates every message with pydantic and
 * answers 500 for an assistant message whose content is null (what a client
 * sends beside tool_calls). */
int mock_openai_strict(const mock_req *r, mock_error *e)
{
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(r->body, "messages"), i, m)
    {
        if (!strcmp(eddy_json_str(m, "role", ""), "assistant") &&
            json_is_null(json_object_get(m, "content")))
            return mock_error_set(e, 500, "internal_server_error",
                                  "mock: strict_content: messages[%zu].content: Input should be "
                                  "a valid string",
                                  i);
    }
    return 0;
}

static int parse(mock_req *r, mock_error *e)
{
    json_t *b = r->body, *m, *t;
    size_t i;
    r->model = eddy_json_str(b, "model", "mock");
    r->stream = json_is_true(json_object_get(b, "stream"));
    r->include_usage =
        json_is_true(json_object_get(json_object_get(b, "stream_options"), "include_usage"));
    if (g_opts.require_api_key) {
        const char *a = r->authorization;
        if (!a || strncmp(a, "Bearer ", 7) || !a[7])
            return mock_error_set(e, 401, "invalid_request_error",
                                  "mock: no API key: the Authorization header must be "
                                  "'Bearer KEY'");
        if (g_opts.api_key && strcmp(a + 7, g_opts.api_key))
            return mock_error_set(e, 401, "invalid_request_error", "mock: incorrect API key");
    }
    if (g_opts.strict_content && mock_openai_strict(r, e))
        return -1;
    json_array_foreach(json_object_get(b, "messages"), i, m)
    {
        char *text = mock_content_text(json_object_get(m, "content"));
        mock_msg_add(r->msgs, eddy_json_str(m, "role", ""), text ? text : "");
        eddy_free(text);
    }
    r->tools_ignored = g_opts.require_tool_choice && !json_object_get(b, "tool_choice");
    if (!r->tools_ignored) {
        json_array_foreach(json_object_get(b, "tools"), i, t)
        {
            const char *name = eddy_json_str(json_object_get(t, "function"), "name", NULL);
            if (name)
                json_array_append_new(r->tools, json_string(name));
        }
    }
    r->prompt_chars = mock_json_chars(json_object_get(b, "messages"));
    return 0;
}

static json_t *usage(const mock_answer *a)
{
    json_t *u =
        json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)a->in, "completion_tokens",
                  (json_int_t)a->out, "total_tokens", (json_int_t)(a->in + a->out));
    if (a->usage_details) {
        json_object_set_new(u, "prompt_tokens_details",
                            json_pack("{s:I}", "cached_tokens", (json_int_t)a->cached));
        json_object_set_new(u, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens", (json_int_t)a->reasoning));
    }
    return u;
}

static const char *finish(const mock_answer *a)
{
    return mock_finish_word(a->finish, "stop", "tool_calls", "length");
}

static char *body(const mock_req *r, const mock_answer *a)
{
    json_t *msg, *tcs = NULL, *out;
    (void)r;
    if (a->ncalls) {
        tcs = json_array();
        for (size_t i = 0; i < a->ncalls; i++)
            json_array_append_new(tcs, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", a->calls[i].id,
                                                 "type", "function", "function", "name",
                                                 a->calls[i].name, "arguments",
                                                 a->calls[i].args ? a->calls[i].args : "{}"));
    }
    msg = json_pack("{s:s, s:s?}", "role", "assistant", "content", a->text);
    if (!a->text)
        json_object_set_new(msg, "content", json_null());
    if (tcs)
        json_object_set_new(msg, "tool_calls", tcs);
    out = json_pack("{s:s+, s:s, s:I, s:s, s:[{s:i, s:o, s:s}]}", "id", "chatcmpl-mock-",
                    a->text ? "r" : "t", "object", "chat.completion", "created",
                    (json_int_t)time(NULL), "model", a->model, "choices", "index", 0, "message",
                    msg, "finish_reason", finish(a));
    if (!a->omit_usage)
        json_object_set_new(out, "usage", usage(a));
    return mock_dump(out);
}

/* One chat.completion.chunk with DELTA (stolen) and FINISH (NULL: null). */
static char *chunk(const mock_req *r, const mock_answer *a, json_t *delta, const char *fin)
{
    char id[48];
    json_t *c;
    snprintf(id, sizeof(id), "chatcmpl-mock-%ld", a->id);
    c = json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:o, s:s?}]}", "id", id, "object",
                  "chat.completion.chunk", "created", (json_int_t)time(NULL), "model", a->model,
                  "choices", "index", 0, "delta", delta, "finish_reason", fin);
    if (r->include_usage && !a->omit_usage)
        json_object_set_new(c, "usage", json_null());
    return mock_sse(NULL, c);
}

/* The pieces of tool call I: id, type and name first, then the arguments. */
static void stream_call(const mock_req *r, const mock_answer *a, size_t i, mock_chunks *out)
{
    const mock_call *mc = &a->calls[i];
    const char *args = mc->args ? mc->args : "{}";
    size_t n = strlen(args), off = 0;
    json_int_t idx = a->index_zero ? 0 : (json_int_t)i;
    mock_chunks_add(out, chunk(r, a,
                               json_pack("{s:[{s:I, s:s, s:s, s:{s:s, s:s}}]}", "tool_calls",
                                         "index", idx, "id", mc->id, "type", "function", "function",
                                         "name", mc->name, "arguments", ""),
                               NULL));
    while (off < n) {
        size_t k = mock_piece_len(args + off, n - off, a->piece);
        char *piece = eddy_strndup(args + off, k);
        mock_chunks_add(out, chunk(r, a,
                                   json_pack("{s:[{s:I, s:{s:s}}]}", "tool_calls", "index", idx,
                                             "function", "arguments", piece),
                                   NULL));
        eddy_free(piece);
        off += k;
    }
}

static void stream(const mock_req *r, const mock_answer *a, mock_chunks *out)
{
    json_t *first = json_pack("{s:s}", "role", "assistant");
    json_object_set_new(first, "content", a->text ? json_string("") : json_null());
    mock_chunks_add(out, chunk(r, a, first, NULL));
    if (a->text) {
        size_t n = strlen(a->text), off = 0;
        while (off < n) {
            size_t k = mock_piece_len(a->text + off, n - off, a->piece);
            json_t *d = json_object();
            json_object_set_new(d, "content", json_stringn(a->text + off, k));
            mock_chunks_add(out, chunk(r, a, d, NULL));
            off += k;
        }
    }
    for (size_t i = 0; i < a->ncalls; i++)
        stream_call(r, a, i, out);
    mock_chunks_add(out, chunk(r, a, json_object(), finish(a)));
    if (r->include_usage && !a->omit_usage) {
        char id[48];
        snprintf(id, sizeof(id), "chatcmpl-mock-%ld", a->id);
        mock_chunks_add(out, mock_sse(NULL, json_pack("{s:s, s:s, s:I, s:s, s:[], s:o}", "id", id,
                                                      "object", "chat.completion.chunk", "created",
                                                      (json_int_t)time(NULL), "model", a->model,
                                                      "choices", "usage", usage(a))));
    }
    mock_chunks_add(out, eddy_strdup("data: [DONE]\n\n"));
}

/* {"error": {message, type, code}}, type and code left out when NULL (the
 * mock's "no rule matched" body has no type). */
static json_t *error_obj(const mock_error *e)
{
    json_t *o = json_pack("{s:s}", "message", e->message);
    if (e->type)
        json_object_set_new(o, "type", json_string(e->type));
    if (e->code)
        json_object_set_new(o, "code", json_string(e->code));
    return json_pack("{s:o}", "error", o);
}

static char *error(const mock_req *r, const mock_error *e)
{
    (void)r;
    return mock_dump(error_obj(e));
}

static char *stream_error(const mock_req *r, const mock_error *e)
{
    mock_error se = *e;
    (void)r;
    if (!se.type)
        se.type = "server_error";
    return mock_sse(NULL, error_obj(&se));
}

const mock_wire mock_openai = {
    .name = "openai",
    .stream_type = "text/event-stream",
    .malformed = "{\"id\": \"chatcmpl-broken\", \"choices\": [ {\"message\": ",
    .truncated =
        "{\"id\":\"chatcmpl-trunc\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
        "\"message\":{\"role\":\"assistant\",\"content\":\"this answer is cut short\"},"
        "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}",
    .ratelimit_headers = kHeaders,
    .parse = parse,
    .body = body,
    .stream = stream,
    .error = error,
    .stream_error = stream_error,
};
