/*
 * tests/mockllm/ollama.c - Ollama's native chat format of the mock:
 * POST .../api/chat, one JSON object, or NDJSON lines with "done": false and
 * a last line with "done": true and the counts.
 *
 * As Ollama does, the answer is streamed unless the request says
 * "stream": false; tool calls carry their arguments as an object and arrive
 * whole in one line; usage is prompt_eval_count / eval_count.
 */
#include "mockllm_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"

#include <string.h>
#include <sys/time.h>
#include <time.h>

/* Ollama sends no rate-limit headers; a proxy in front of it would send OpenAI's. */
static const char *const kHeaders[] = {"x-ratelimit-remaining-requests",
                                       "x-ratelimit-remaining-tokens",
                                       "x-ratelimit-reset-requests",
                                       "x-ratelimit-reset-tokens",
                                       "x-ratelimit-limit-requests",
                                       "x-ratelimit-limit-tokens",
                                       NULL};

static int parse(mock_req *r, mock_error *e)
{
    json_t *b = r->body, *m, *t, *s = json_object_get(b, "stream");
    size_t i;
    r->model = eddy_json_str(b, "model", "mock");
    r->stream = !json_is_false(s);
    r->include_usage = 1;
    if (!json_is_string(json_object_get(b, "model")))
        return mock_error_set(e, 400, NULL, "mock: model is required");
    json_array_foreach(json_object_get(b, "messages"), i, m)
    {
        char *text = mock_content_text(json_object_get(m, "content"));
        mock_msg_add(r->msgs, eddy_json_str(m, "role", ""), text ? text : "");
        eddy_free(text);
    }
    json_array_foreach(json_object_get(b, "tools"), i, t)
    {
        const char *name = eddy_json_str(json_object_get(t, "function"), "name", NULL);
        if (name)
            json_array_append_new(r->tools, json_string(name));
    }
    r->prompt_chars = mock_json_chars(json_object_get(b, "messages"));
    return 0;
}

/* RFC 3339 UTC with microseconds, as Ollama's created_at. */
static json_t *created_at(void)
{
    struct timeval tv;
    struct tm tm;
    char s[64], out[80];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(s, sizeof(s), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, sizeof(out), "%s.%06ldZ", s, (long)tv.tv_usec);
    return json_string(out);
}

static json_t *tool_calls(const mock_answer *a)
{
    json_t *tcs = json_array();
    for (size_t i = 0; i < a->ncalls; i++) {
        const mock_call *c = &a->calls[i];
        json_t *args = c->input ? json_incref(c->input) : json_string(c->args ? c->args : "");
        json_array_append_new(tcs, json_pack("{s:s, s:{s:I, s:s, s:o}}", "id", c->id, "function",
                                             "index", (json_int_t)i, "name", c->name, "arguments",
                                             args));
    }
    return tcs;
}

/* A line (or the whole answer): model, created_at, message {role, content[, tool_calls]}, done. */
static json_t *line(const mock_answer *a, const char *content, json_t *tcs, int done)
{
    json_t *msg = json_pack("{s:s, s:s}", "role", "assistant", "content", content);
    if (tcs)
        json_object_set_new(msg, "tool_calls", tcs);
    return json_pack("{s:s, s:o, s:o, s:b}", "model", a->model, "created_at", created_at(),
                     "message", msg, "done", done);
}

/* What the last line adds: done_reason and (unless omitted) the counts and durations. */
static void finish(json_t *o, const mock_answer *a)
{
    json_object_set_new(o, "done_reason",
                        json_string(mock_finish_word(a->finish, "stop", "stop", "length")));
    if (a->omit_usage)
        return;
    json_object_set_new(o, "total_duration", json_integer(1000000 + (a->in + a->out) * 100000));
    json_object_set_new(o, "load_duration", json_integer(1000000));
    json_object_set_new(o, "prompt_eval_count", json_integer(a->in));
    json_object_set_new(o, "prompt_eval_duration", json_integer(a->in * 50000));
    json_object_set_new(o, "eval_count", json_integer(a->out));
    json_object_set_new(o, "eval_duration", json_integer(a->out * 50000));
}

static char *body(const mock_req *r, const mock_answer *a)
{
    json_t *o = line(a, a->text ? a->text : "", a->ncalls ? tool_calls(a) : NULL, 1);
    (void)r;
    finish(o, a);
    return mock_dump(o);
}

static void stream(const mock_req *r, const mock_answer *a, mock_chunks *out)
{
    json_t *last;
    (void)r;
    if (a->text) {
        size_t n = strlen(a->text), off = 0;
        while (off < n) {
            size_t k = mock_piece_len(a->text + off, n - off, a->piece);
            char *piece = eddy_strndup(a->text + off, k);
            mock_chunks_add(out, mock_line(line(a, piece, NULL, 0)));
            eddy_free(piece);
            off += k;
        }
    }
    if (a->ncalls)
        mock_chunks_add(out, mock_line(line(a, "", tool_calls(a), 0)));
    last = line(a, "", NULL, 1);
    finish(last, a);
    mock_chunks_add(out, mock_line(last));
}

static char *error(const mock_req *r, const mock_error *e)
{
    (void)r;
    return mock_dump(json_pack("{s:s}", "error", e->message));
}

static char *stream_error(const mock_req *r, const mock_error *e)
{
    (void)r;
    return mock_line(json_pack("{s:s}", "error", e->message));
}

const mock_wire mock_ollama = {
    .name = "ollama",
    .stream_type = "application/x-ndjson",
    .malformed = "{\"model\": \"mock\", \"message\": {\"role\": ",
    .truncated =
        "{\"model\":\"mock\",\"created_at\":\"2025-01-01T00:00:00.000000Z\",\"message\":"
        "{\"role\":\"assistant\",\"content\":\"this answer is cut short\"},\"done_reason\":"
        "\"stop\",\"done\":true,\"prompt_eval_count\":1,\"eval_count\":1}",
    .ratelimit_headers = kHeaders,
    .parse = parse,
    .body = body,
    .stream = stream,
    .error = error,
    .stream_error = stream_error,
};
