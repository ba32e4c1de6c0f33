/*
 * llm/provider.c - the list of providers, and what they share: finish
 * reasons, usage estimates, cost, retry rules, rate-limit reset parsing.
 */
#include "eddy/llm.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "llm_int.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

static const eddy_llm_provider *const kProviders[] = {
    &eddy__llm_openai,
    &eddy__llm_anthropic,
    &eddy__llm_ollama,
};

const eddy_llm_provider *eddy_llm_provider_find(const char *name)
{
    for (size_t i = 0; name && i < sizeof(kProviders) / sizeof(kProviders[0]); i++)
        if (!strcmp(kProviders[i]->name, name))
            return kProviders[i];
    return NULL;
}

const char *eddy_llm_provider_names(void)
{
    return "openai, anthropic, ollama";
}

static const eddy_llm_provider *prov_of(const eddy_llm_model *m)
{
    return m->prov ? m->prov : eddy_llm_provider_find(m->provider ? m->provider : "openai");
}

json_t *eddy_llm_build(const eddy_llm_model *m, const eddy_llm_request *rq, int stream)
{
    const eddy_llm_provider *p = prov_of(m);
    if (!p)
        return NULL;
    if (p->build)
        return p->build(m, rq, stream);
    eddy_buf b;
    eddy_buf_init(&b);
    json_t *v = p->write(m, rq, stream, &b) ? NULL : json_loadb(b.data, b.len, 0, NULL);
    eddy_buf_free(&b);
    return v;
}

int eddy_llm_parse(const eddy_llm_model *m, const eddy_llm_request *rq, const char *body,
                   size_t len, eddy_llm_response *out, eddy_err *err)
{
    const eddy_llm_provider *p = prov_of(m);
    json_error_t je;
    memset(out, 0, sizeof(*out));
    out->message.role = EDDY_ROLE_ASSISTANT;
    if (!p)
        return eddy_err_set(err, EDDY_EINVAL, "unknown provider '%s'", m->provider);
    json_t *root = eddy_json_loadb(body, len, 0, &je);
    if (!root)
        return eddy_err_set(err, EDDY_EPARSE, "response is not valid JSON (%s at %d:%d)", je.text,
                            je.line, je.column);
    int rc = p->parse(rq, root, out, err);
    json_decref(root);
    if (rc)
        eddy_llm_response_clear(out);
    return rc;
}

static void add_line(void *ud, const char *line)
{
    json_array_append_new(ud, json_string(line));
}

json_t *eddy_llm_headers_json(const eddy_llm_model *m)
{
    const eddy_llm_provider *p = prov_of(m);
    json_t *a = json_array();
    if (p && a)
        p->headers(m, add_line, a);
    return a;
}

void eddy_llm_response_clear(eddy_llm_response *r)
{
    eddy_llm_msg_clear(&r->message);
    eddy_free(r->finish_raw);
    eddy_free(r->id);
    eddy_free(r->model);
    memset(r, 0, sizeof(*r));
}

static const char *const kFinish[] = {"stop", "tool_calls", "length", "content_filter", "error"};

const char *eddy_llm_finish_name(eddy_llm_finish f)
{
    return (unsigned)f < 5 ? kFinish[f] : "error";
}

eddy_llm_finish eddy_llm_finish_from(const char *s)
{
    static const struct {
        const char *s;
        eddy_llm_finish f;
    } map[] = {
        {"stop", EDDY_FINISH_STOP},
        {"end_turn", EDDY_FINISH_STOP},
        {"stop_sequence", EDDY_FINISH_STOP},
        {"pause_turn", EDDY_FINISH_STOP},
        {"tool_calls", EDDY_FINISH_TOOL_CALLS},
        {"function_call", EDDY_FINISH_TOOL_CALLS},
        {"tool_use", EDDY_FINISH_TOOL_CALLS},
        {"length", EDDY_FINISH_LENGTH},
        {"max_tokens", EDDY_FINISH_LENGTH},
        {"model_context_window_exceeded", EDDY_FINISH_LENGTH},
        {"content_filter", EDDY_FINISH_CONTENT_FILTER},
        {"refusal", EDDY_FINISH_CONTENT_FILTER},
        {"error", EDDY_FINISH_ERROR},
    };
    for (size_t i = 0; s && i < sizeof(map) / sizeof(map[0]); i++)
        if (!strcmp(map[i].s, s))
            return map[i].f;
    return EDDY_FINISH_STOP;
}

long eddy_llm_estimate_tokens(size_t n)
{
    return n / 4 > 0 ? (long)(n / 4) : 1;
}

double eddy_llm_cost(const eddy_llm_model *m, const eddy_llm_usage *u)
{
    if (!m || !m->has_price || !u)
        return 0;
    long cached = u->cached_input_tokens > 0 ? u->cached_input_tokens : 0;
    long fresh = u->input_tokens - cached > 0 ? u->input_tokens - cached : 0;
    return ((double)fresh * m->price_input + (double)cached * m->price_cached_input +
            (double)u->output_tokens * m->price_output) /
           1e6;
}

/* -- shared helpers for providers ---------------------------------------------- */

int eddy__llm_usage_missing(eddy_llm_usage *u)
{
    return !u->input_tokens && !u->output_tokens;
}

void eddy__llm_error_info_json(const char *body, size_t len, eddy_llm_error_info *out)
{
    json_t *root = json_loadb(body ? body : "", len, 0, NULL), *e;
    memset(out, 0, sizeof(*out));
    e = json_object_get(root, "error");
    if (json_is_object(e)) {
        const char *code = eddy_json_str(e, "code", NULL);
        if (!code)
            code = eddy_json_str(e, "type", "");
        snprintf(out->code, sizeof(out->code), "%s", code);
        snprintf(out->message, sizeof(out->message), "%s", eddy_json_str(e, "message", ""));
        out->overloaded = !strcmp(out->code, "overloaded_error");
    } else if (json_is_string(e)) { /* Ollama, llama.cpp: {"error": "..."} */
        snprintf(out->message, sizeof(out->message), "%s", json_string_value(e));
    } else if (json_is_string(json_object_get(root, "detail"))) { /* FastAPI servers */
        snprintf(out->message, sizeof(out->message), "%s",
                 json_string_value(json_object_get(root, "detail")));
    } else if (json_is_array(json_object_get(root, "detail"))) { /* pydantic's list */
        json_t *d = json_array_get(json_object_get(root, "detail"), 0);
        snprintf(out->message, sizeof(out->message), "%s", eddy_json_str(d, "msg", ""));
    } else if (!root && len) { /* not JSON: the start of the text */
        size_t n = len < sizeof(out->message) - 1 ? len : sizeof(out->message) - 1;
        n = eddy_utf8_invalid(body, n);
        memcpy(out->message, body, n);
        out->message[n] = '\0';
        for (char *p = out->message; *p; p++)
            if (*p == '\n' || *p == '\r' || *p == '\t')
                *p = ' ';
    }
    json_decref(root);
    /* bounded and valid UTF-8 (snprintf may have cut a sequence) */
    out->message[eddy_utf8_invalid(out->message, strlen(out->message))] = '\0';
}

/* The error a 2xx body or a stream chunk carries as {"error": "..."} or
 * {"error": {"message": ...}}: EDDY_ELLM with the server's words; 0 when none. */
int eddy__llm_body_error(json_t *root, eddy_err *err)
{
    json_t *e = json_object_get(root, "error");
    if (!e || json_is_null(e))
        return 0;
    return eddy_err_set(err, EDDY_ELLM, "model error: %.400s",
                        json_is_string(e) ? json_string_value(e)
                                          : eddy_json_str(e, "message", "unknown error"));
}

void eddy__llm_secret_header(void (*add)(void *ud, const char *line), void *ud, const char *prefix,
                             const char *key)
{
    if (!key || !*key)
        return;
    char *h = eddy_aprintf("%s%s", prefix, key);
    if (h) {
        add(ud, h);
        memset(h, 0, strlen(h)); /* the key does not linger in freed memory */
        eddy_free(h);
    }
}

void eddy__llm_bearer_headers(const eddy_llm_model *m, void (*add)(void *ud, const char *line),
                              void *ud)
{
    eddy__llm_secret_header(add, ud, "Authorization: Bearer ", m->api_key);
}

void eddy__llm_set_finish(eddy_llm_response *r, const char *s)
{
    eddy_free(r->finish_raw);
    r->finish_raw = eddy_strdup(s);
}

json_t *eddy__llm_args_object(const char *args)
{
    json_t *v = args && *args ? eddy_json_loads(args, JSON_DECODE_ANY, NULL) : json_object();
    if (v && !json_is_object(v)) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

/* -- retries ----------------------------------------------------------------------- */

int64_t eddy_llm_parse_retry_after(const char *v)
{
    struct tm tm;
    char *end;
    double secs;
    if (!v || !*v)
        return -1;
    secs = strtod(v, &end);
    if (end != v && (*end == '\0' || *end == ' ' || *end == '\r'))
        return !(secs >= 0) ? -1 : secs > 1e9 ? (int64_t)1e12 : (int64_t)ceil(secs * 1000);
    memset(&tm, 0, sizeof(tm));
    if (strptime(v, "%a, %d %b %Y %H:%M:%S GMT", &tm)) {
        time_t t = timegm(&tm), now = time(NULL);
        return t > now ? (int64_t)(t - now) * 1000 : 0;
    }
    return -1;
}

int64_t eddy_llm_parse_retry_ms(const char *v)
{
    char *end;
    if (!v || !*v)
        return -1;
    double x = strtod(v, &end);
    if (end == v || !(x >= 0)) /* NaN and negatives too */
        return -1;
    return x > 1e12 ? (int64_t)1e12 : (int64_t)ceil(x);
}

int64_t eddy_llm_parse_reset(const char *v)
{
    char *end;
    double total = 0;
    int any = 0;
    struct tm tm;
    if (!v || !*v)
        return -1;
    /* RFC 3339 (Anthropic) */
    memset(&tm, 0, sizeof(tm));
    const char *rest = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
    if (rest) {
        time_t t = timegm(&tm), now = time(NULL);
        return t > now ? (int64_t)(t - now) * 1000 : 0;
    }
    /* Go durations (OpenAI): 1h2m3.5s, 20ms */
    const char *p = v;
    while (*p) {
        double x = strtod(p, &end);
        if (end == p || x < 0)
            return -1;
        p = end;
        if (!strncmp(p, "ms", 2))
            total += x, p += 2;
        else if (*p == 's')
            total += x * 1000, p++;
        else if (*p == 'm')
            total += x * 60000, p++;
        else if (*p == 'h')
            total += x * 3600000, p++;
        else if (!*p && !any)
            total += x * 1000; /* a bare number: seconds */
        else
            return -1;
        any = 1;
    }
    return any ? (int64_t)ceil(total) : -1;
}

int64_t eddy_llm_retry_delay(const eddy_llm_model *m, int attempt, long http, int transport_failed,
                             const char *retry_after_ms, const char *retry_after,
                             const char *error_code, double jitter)
{
    int64_t d = -1, base = m->backoff_base_ms > 0 ? m->backoff_base_ms : 500,
            cap = m->backoff_cap_ms > 0 ? m->backoff_cap_ms : 8000,
            max_wait = m->max_wait_ms > 0 ? m->max_wait_ms : 0;
    int retryable = transport_failed || http == 408 || http == 409 || http == 429 || http >= 500;
    if (!retryable || attempt >= m->max_attempts)
        return -1;
    if (http == 429 && error_code && !strcmp(error_code, "insufficient_quota"))
        return -1;
    d = eddy_llm_parse_retry_ms(retry_after_ms);
    if (d < 0 && retry_after && *retry_after)
        d = eddy_llm_parse_retry_after(retry_after);
    if (d >= 0) /* the server's own hint: never earlier, and not past max_wait */
        return d > max_wait ? -2 : d;
    d = base;
    for (int i = 1; i < attempt && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    return d - (int64_t)(d * 0.25 * jitter);
}

char *eddy__llm_join_url(const char *base_url, const char *path)
{
    size_t n = base_url ? strlen(base_url) : 0;
    while (n > 0 && base_url[n - 1] == '/')
        n--;
    return eddy_aprintf("%.*s%s", (int)n, base_url ? base_url : "", path);
}
