/*
 * llm/openai.c - the OpenAI chat-completions wire format, and retry rules.
 *
 * Pure functions: build a request body, parse a response body, decide on a
 * retry. The client (client.c) wires them to the network. Tool-call
 * arguments arrive as a JSON string; invalid JSON there is not a failure of
 * the request: the call keeps arguments_raw and an error the run hands back
 * to the model as the tool's result.
 */
#include "eddy/llm.h"
#include "eddy/buf.h"
#include "eddy/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

json_t *eddy_llm_build_openai(const eddy_llm_model *m, json_t *messages, json_t *tools)
{
    json_t *body = json_pack("{s:s, s:O}", "model", m->model ? m->model : "", "messages", messages);
    if (!body)
        return NULL;
    if (tools && json_array_size(tools) > 0)
        json_object_set(body, "tools", tools);
    if (m->max_tokens > 0)
        json_object_set_new(body, "max_tokens", json_integer(m->max_tokens));
    if (m->has_temperature)
        json_object_set_new(body, "temperature", json_real(m->temperature));
    return body;
}

void eddy_llm_response_clear(eddy_llm_response *r)
{
    json_decref(r->message);
    json_decref(r->tool_calls);
    eddy_free(r->content);
    eddy_free(r->finish_reason);
    eddy_free(r->id);
    eddy_free(r->model);
    memset(r, 0, sizeof(*r));
}

static json_t *parse_tool_calls(json_t *calls, eddy_err *err)
{
    json_t *out = json_array(), *tc;
    size_t i;
    json_array_foreach(calls, i, tc)
    {
        json_t *fn = json_object_get(tc, "function"), *args = NULL, *item;
        const char *name = eddy_json_str(fn, "name", NULL);
        const char *raw = eddy_json_str(fn, "arguments", NULL);
        const char *id = eddy_json_str(tc, "id", NULL);
        char idbuf[32];
        if (!name) {
            json_decref(out);
            eddy_err_set(err, EDDY_ELLM, "tool_calls[%zu] has no function name", i);
            return NULL;
        }
        if (!id) {
            snprintf(idbuf, sizeof(idbuf), "call_%zu", i);
            id = idbuf;
        }
        item =
            json_pack("{s:s, s:s, s:s}", "id", id, "name", name, "arguments_raw", raw ? raw : "");
        if (json_is_object(json_object_get(fn, "arguments"))) {
            /* some servers send an object rather than a string */
            json_object_set(item, "arguments", json_object_get(fn, "arguments"));
        } else if (!raw || !*raw) {
            json_object_set_new(item, "arguments", json_object());
        } else {
            json_error_t je;
            args = json_loads(raw, JSON_DECODE_ANY, &je);
            if (!args) {
                json_object_set_new(item, "arguments", json_null());
                json_object_set_new(item, "error",
                                    json_sprintf("arguments are not valid JSON (%s at "
                                                 "column %d)",
                                                 je.text, je.column));
            } else {
                json_object_set_new(item, "arguments", args);
            }
        }
        json_array_append_new(out, item);
    }
    return out;
}

int eddy_llm_parse_openai(const char *body, size_t len, eddy_llm_response *out, eddy_err *err)
{
    json_error_t je;
    json_t *root, *choice, *msg, *usage, *calls;
    int rc = 0;
    memset(out, 0, sizeof(*out));
    root = json_loadb(body, len, 0, &je);
    if (!root)
        return eddy_err_set(err, EDDY_EPARSE, "response is not valid JSON (%s at %d:%d)", je.text,
                            je.line, je.column);
    if (json_is_object(json_object_get(root, "error"))) {
        json_t *e = json_object_get(root, "error");
        rc = eddy_err_set(err, EDDY_ELLM, "model error: %s",
                          eddy_json_str(e, "message", "unknown error"));
        goto out;
    }
    choice = json_array_get(json_object_get(root, "choices"), 0);
    msg = json_object_get(choice, "message");
    if (!json_is_object(msg)) {
        rc = eddy_err_set(err, EDDY_EPARSE, "response has no choices[0].message");
        goto out;
    }
    out->id = eddy_strdup(eddy_json_str(root, "id", NULL));
    out->model = eddy_strdup(eddy_json_str(root, "model", NULL));
    out->finish_reason = eddy_strdup(eddy_json_str(choice, "finish_reason", "stop"));
    if (json_is_string(json_object_get(msg, "content")))
        out->content = eddy_strdup(json_string_value(json_object_get(msg, "content")));
    calls = json_object_get(msg, "tool_calls");
    out->tool_calls = json_is_array(calls) ? parse_tool_calls(calls, err) : json_array();
    if (!out->tool_calls) {
        rc = EDDY_ELLM;
        goto out;
    }
    out->message = json_pack("{s:s, s:s?}", "role", "assistant", "content", out->content);
    if (out->message && !out->content)
        json_object_set_new(out->message, "content", json_null());
    if (out->message && json_array_size(calls) > 0)
        json_object_set(out->message, "tool_calls", calls);
    usage = json_object_get(root, "usage");
    out->usage.input_tokens = (long)eddy_json_int(usage, "prompt_tokens", 0);
    out->usage.output_tokens = (long)eddy_json_int(usage, "completion_tokens", 0);
    out->usage.total_tokens = (long)eddy_json_int(
        usage, "total_tokens", out->usage.input_tokens + out->usage.output_tokens);
    out->usage.cached_tokens =
        (long)eddy_json_int(json_object_get(usage, "prompt_tokens_details"), "cached_tokens", 0);
    if (!out->message)
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    json_decref(root);
    if (rc)
        eddy_llm_response_clear(out);
    return rc;
}

/* retry-after: seconds, or an HTTP date. -1 when unparseable. */
static int64_t parse_retry_after(const char *v)
{
    struct tm tm;
    char *end;
    double secs = strtod(v, &end);
    if (end != v && (*end == '\0' || *end == ' ' || *end == '\r'))
        return secs < 0 ? -1 : (int64_t)(secs * 1000);
    memset(&tm, 0, sizeof(tm));
    if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
        time_t t = timegm(&tm), now = time(NULL);
        return t > now ? (int64_t)(t - now) * 1000 : 0;
    }
    return -1;
}

int64_t eddy_llm_retry_delay(const eddy_llm_model *m, int attempt, long http, int transport_failed,
                             const char *retry_after_ms, const char *retry_after,
                             const char *error_code, double jitter)
{
    int64_t d = -1, base = m->backoff_base_ms > 0 ? m->backoff_base_ms : 500,
            cap = m->backoff_cap_ms > 0 ? m->backoff_cap_ms : 8000;
    int retryable;
    if (attempt >= m->max_attempts)
        return -1;
    retryable = transport_failed || http == 408 || http == 409 || http == 429 || http >= 500;
    if (!retryable)
        return -1;
    if (http == 429 && error_code && !strcmp(error_code, "insufficient_quota"))
        return -1;
    if (retry_after_ms && *retry_after_ms) {
        char *end;
        double v = strtod(retry_after_ms, &end);
        if (end != retry_after_ms && v >= 0)
            d = (int64_t)v;
    }
    if (d < 0 && retry_after && *retry_after)
        d = parse_retry_after(retry_after);
    if (d >= 0 && d <= 60000) /* a server's own hint, when it is sane */
        return d;
    d = base;
    for (int i = 1; i < attempt && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    return d - (int64_t)(d * 0.25 * jitter);
}
