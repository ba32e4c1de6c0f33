/*
 * tests/mockllm/mockllm.c - a scripted stand-in for an OpenAI-compatible
 * model, for tests, the demo and benchmarks.
 *
 * libmicrohttpd with its own epoll thread serves POST .../chat/completions.
 * Answers come from a script (JSON): an ordered list of rules whose `when`
 * conditions look at the conversation (last role, last user text, a regex
 * with captures, the tools offered); the first matching rule answers with
 * tool calls (arguments as JSON, or as `raw_arguments` text, both templated),
 * a templated reply, or a fault (status + retry-after, a delay
 * past the client's timeout, a truncated or malformed body). A rule with
 * `times` matches only that many requests.
 *
 * Latency never blocks other connections: the connection is suspended and a
 * timer thread resumes it when its answer is due. GET /stats reports the
 * requests seen and the peak number in flight (received, not yet answered).
 *
 *   mockllm --script FILE [--port N] [--port-file F] [--latency-ms N] [--log F]
 */
#include "eddy/buf.h"
#include "eddy/json.h"

#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <regex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

typedef struct rule {
    json_t *def;
    regex_t re;
    int has_re;
    long times; /* -1: unlimited */
    long hits;
} rule;

typedef struct conn {
    eddy_buf body;
    struct MHD_Response *resp;
    unsigned status;
    int suspended, answered;
} conn;

typedef struct timer_ent {
    uint64_t due;
    struct MHD_Connection *c;
} timer_ent;

static rule *g_rules;
static size_t g_nrules;
static long g_latency_ms;
static FILE *g_log;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static timer_ent *g_heap;
static size_t g_nheap, g_capheap;
static atomic_long g_requests, g_in_flight, g_peak, g_faults, g_ids;
static volatile sig_atomic_t g_stop;
static struct MHD_Daemon *g_daemon;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* -- timer heap: resume suspended connections when due -------------------- */

static void heap_push(uint64_t due, struct MHD_Connection *c)
{
    size_t i;
    pthread_mutex_lock(&g_mu);
    if (g_nheap == g_capheap) {
        g_capheap = g_capheap ? g_capheap * 2 : 1024;
        g_heap = realloc(g_heap, g_capheap * sizeof(*g_heap));
    }
    i = g_nheap++;
    while (i > 0 && g_heap[(i - 1) / 2].due > due) {
        g_heap[i] = g_heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    g_heap[i].due = due;
    g_heap[i].c = c;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static timer_ent heap_pop(void)
{
    timer_ent top = g_heap[0], last = g_heap[--g_nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < g_nheap && g_heap[l].due < last.due)
            m = l;
        if (l + 1 < g_nheap && g_heap[l + 1].due < (m == i ? last.due : g_heap[l].due))
            m = l + 1;
        if (m == i)
            break;
        g_heap[i] = g_heap[m];
        i = m;
    }
    if (g_nheap)
        g_heap[i] = last;
    return top;
}

static void *timer_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&g_mu);
    while (!g_stop) {
        uint64_t t = now_ms();
        if (g_nheap && g_heap[0].due <= t) {
            timer_ent e = heap_pop();
            pthread_mutex_unlock(&g_mu);
            MHD_resume_connection(e.c);
            pthread_mutex_lock(&g_mu);
            continue;
        }
        if (g_nheap) {
            struct timespec ts;
            uint64_t wait = g_heap[0].due - t;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += (time_t)(wait / 1000);
            ts.tv_nsec += (long)(wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&g_cv, &g_mu, &ts);
        } else {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&g_cv, &g_mu, &ts);
        }
    }
    pthread_mutex_unlock(&g_mu);
    return NULL;
}

/* -- conversation helpers ---------------------------------------------------- */

static json_t *last_with_role(json_t *msgs, const char *role)
{
    for (size_t i = json_array_size(msgs); i > 0; i--) {
        json_t *m = json_array_get(msgs, i - 1);
        if (!strcmp(eddy_json_str(m, "role", ""), role))
            return m;
    }
    return NULL;
}

static const char *content_of(json_t *m)
{
    return eddy_json_str(m, "content", "");
}

static int count_role(json_t *msgs, const char *role)
{
    size_t i;
    json_t *m;
    int n = 0;
    json_array_foreach(msgs, i, m) n += !strcmp(eddy_json_str(m, "role", ""), role);
    return n;
}

typedef struct match {
    regmatch_t caps[10];
    const char *subject;
    int ncaps;
} match;

static int tool_offered(json_t *req, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(json_object_get(req, "tools"), i, t)
    {
        if (!strcmp(eddy_json_str(json_object_get(t, "function"), "name", ""), name))
            return 1;
    }
    return 0;
}

static int rule_matches(rule *r, json_t *req, match *mt)
{
    json_t *w = json_object_get(r->def, "when"), *msgs = json_object_get(req, "messages");
    json_t *last = json_array_get(msgs, json_array_size(msgs) - 1);
    const char *user = content_of(last_with_role(msgs, "user"));
    const char *v;
    if (r->times >= 0 && r->hits >= r->times)
        return 0;
    if ((v = eddy_json_str(w, "last_role", NULL)) && strcmp(v, eddy_json_str(last, "role", "")))
        return 0;
    if ((v = eddy_json_str(w, "last_user_contains", NULL)) && !strstr(user, v))
        return 0;
    if ((v = eddy_json_str(w, "system_contains", NULL)) &&
        !strstr(content_of(last_with_role(msgs, "system")), v))
        return 0;
    if ((v = eddy_json_str(w, "tool_offered", NULL)) && !tool_offered(req, v))
        return 0;
    if ((v = eddy_json_str(w, "last_tool_contains", NULL)) &&
        !strstr(content_of(last_with_role(msgs, "tool")), v))
        return 0;
    if (json_is_integer(json_object_get(w, "min_user_messages")) &&
        count_role(msgs, "user") < json_integer_value(json_object_get(w, "min_user_messages")))
        return 0;
    mt->ncaps = 0;
    mt->subject = user;
    if (r->has_re) {
        if (regexec(&r->re, user, 10, mt->caps, 0))
            return 0;
        mt->ncaps = 10;
    }
    return 1;
}

/* Expand $1..$9, ${user}, ${n_user}, ${tool}, ${tool.FIELD} in T. */
static char *expand(const char *t, json_t *req, match *mt)
{
    json_t *msgs = json_object_get(req, "messages");
    const char *tool = content_of(last_with_role(msgs, "tool"));
    json_t *tooljs = json_loads(tool, 0, NULL);
    eddy_buf b;
    eddy_buf_init(&b);
    while (*t) {
        if (t[0] == '$' && t[1] >= '1' && t[1] <= '9') {
            int k = t[1] - '0';
            if (k < mt->ncaps && mt->caps[k].rm_so >= 0)
                eddy_buf_append(&b, mt->subject + mt->caps[k].rm_so,
                                (size_t)(mt->caps[k].rm_eo - mt->caps[k].rm_so));
            t += 2;
        } else if (t[0] == '$' && t[1] == '{' && strchr(t, '}')) {
            const char *end = strchr(t, '}');
            char name[128];
            size_t n = (size_t)(end - t - 2);
            if (n >= sizeof(name))
                n = sizeof(name) - 1;
            memcpy(name, t + 2, n);
            name[n] = '\0';
            if (!strcmp(name, "user"))
                eddy_buf_puts(&b, mt->subject ? mt->subject : "");
            else if (!strcmp(name, "n_user"))
                eddy_buf_printf(&b, "%d", count_role(msgs, "user"));
            else if (!strcmp(name, "tool"))
                eddy_buf_puts(&b, tool);
            else if (!strncmp(name, "tool.", 5)) {
                json_t *v = eddy_json_path(tooljs, name + 5);
                char *s =
                    json_is_string(v) ? eddy_strdup(json_string_value(v)) : eddy_json_dumps(v);
                eddy_buf_puts(&b, s ? s : "");
                eddy_free(s);
            }
            t = end + 1;
        } else {
            eddy_buf_putc(&b, *t++);
        }
    }
    json_decref(tooljs);
    return eddy_buf_take(&b);
}

static json_t *expand_json(json_t *v, json_t *req, match *mt)
{
    if (json_is_string(v)) {
        char *s = expand(json_string_value(v), req, mt);
        json_t *r = json_string(s ? s : "");
        eddy_free(s);
        return r;
    }
    if (json_is_object(v)) {
        json_t *o = json_object(), *x;
        const char *k;
        json_object_foreach(v, k, x) json_object_set_new(o, k, expand_json(x, req, mt));
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array(), *x;
        size_t i;
        json_array_foreach(v, i, x) json_array_append_new(a, expand_json(x, req, mt));
        return a;
    }
    return json_deep_copy(v);
}

/* -- responses --------------------------------------------------------------- */

static long request_chars(json_t *req)
{
    char *s = eddy_json_dumps_flags(json_object_get(req, "messages"), JSON_COMPACT);
    long n = s ? (long)strlen(s) : 0;
    eddy_free(s);
    return n;
}

static ssize_t truncated_reader(void *cls, uint64_t pos, char *buf, size_t max)
{
    const char *body = cls;
    size_t len = strlen(body), half = len / 2;
    if (pos >= half)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if (max > half - pos)
        max = half - (size_t)pos;
    memcpy(buf, body + pos, max);
    return (ssize_t)max;
}

static struct MHD_Response *text_response(const char *s)
{
    return MHD_create_response_from_buffer(strlen(s), (void *)s, MHD_RESPMEM_MUST_COPY);
}

static struct MHD_Response *fault_response(json_t *f, unsigned *status)
{
    struct MHD_Response *resp;
    char num[32];
    atomic_fetch_add(&g_faults, 1);
    if (json_is_true(json_object_get(f, "malformed"))) {
        *status = 200;
        return text_response("{\"id\": \"chatcmpl-broken\", \"choices\": [ {\"message\": ");
    }
    if (json_is_true(json_object_get(f, "truncate"))) {
        static const char body[] =
            "{\"id\":\"chatcmpl-trunc\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,"
            "\"message\":{\"role\":\"assistant\",\"content\":\"this answer is cut short\"},"
            "\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}}";
        *status = 200;
        resp = MHD_create_response_from_callback(strlen(body), 1024, truncated_reader, (void *)body,
                                                 NULL);
        MHD_add_response_header(resp, "Content-Type", "application/json");
        return resp;
    }
    *status = (unsigned)eddy_json_int(f, "status", 500);
    {
        json_t *err = json_pack("{s:{s:s, s:s, s:s}}", "error", "message", "mock fault", "type",
                                "mock_error", "code", eddy_json_str(f, "error_code", "mock_fault"));
        char *s = eddy_json_dumps_flags(err, JSON_COMPACT);
        resp = text_response(s ? s : "{}");
        eddy_free(s);
        json_decref(err);
    }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (json_is_integer(json_object_get(f, "retry_after_ms"))) {
        snprintf(num, sizeof(num), "%lld", eddy_json_int(f, "retry_after_ms", 0));
        MHD_add_response_header(resp, "retry-after-ms", num);
    }
    if (json_is_integer(json_object_get(f, "retry_after"))) {
        snprintf(num, sizeof(num), "%lld", eddy_json_int(f, "retry_after", 0));
        MHD_add_response_header(resp, "retry-after", num);
    }
    return resp;
}

static json_t *answer(rule *r, json_t *req, match *mt)
{
    json_t *calls = json_object_get(r->def, "tool_calls"), *msg, *tcs = NULL, *body;
    const char *reply = eddy_json_str(r->def, "reply", NULL);
    char *text = reply ? expand(reply, req, mt) : NULL;
    long id = atomic_fetch_add(&g_ids, 1);
    long prompt = request_chars(req) / 4 + 1, completion = 1;
    if (json_array_size(calls) > 0) {
        size_t i;
        json_t *c;
        tcs = json_array();
        json_array_foreach(calls, i, c)
        {
            json_t *args = expand_json(json_object_get(c, "arguments"), req, mt);
            json_t *raw = json_object_get(c, "raw_arguments");
            char *as = json_is_string(raw) ? expand(json_string_value(raw), req, mt)
                       : args              ? eddy_json_dumps(args)
                                           : eddy_strdup("{}");
            char cid[48];
            snprintf(cid, sizeof(cid), "call_%ld_%zu", id, i);
            json_array_append_new(tcs, json_pack("{s:s, s:s, s:{s:s, s:s}}", "id", cid, "type",
                                                 "function", "function", "name",
                                                 eddy_json_str(c, "name", "?"), "arguments", as));
            completion += as ? (long)strlen(as) / 4 + 1 : 1;
            eddy_free(as);
            json_decref(args);
        }
    }
    if (text)
        completion += (long)strlen(text) / 4;
    msg = json_pack("{s:s, s:s?}", "role", "assistant", "content", text);
    if (!text)
        json_object_set_new(msg, "content", json_null());
    if (tcs)
        json_object_set_new(msg, "tool_calls", tcs);
    body =
        json_pack("{s:s+, s:s, s:I, s:s, s:[{s:i, s:o, s:s}], s:{s:I, s:I, s:I}}", "id",
                  "chatcmpl-mock-", text ? "r" : "t", "object", "chat.completion", "created",
                  (json_int_t)time(NULL), "model", eddy_json_str(req, "model", "mock"), "choices",
                  "index", 0, "message", msg, "finish_reason", tcs ? "tool_calls" : "stop", "usage",
                  "prompt_tokens", (json_int_t)prompt, "completion_tokens", (json_int_t)completion,
                  "total_tokens", (json_int_t)(prompt + completion));
    eddy_free(text);
    return body;
}

/* Decide the answer for REQ; returns the response and sets *STATUS and *DELAY. */
static struct MHD_Response *respond(json_t *req, unsigned *status, long *delay)
{
    rule *r = NULL;
    match mt;
    json_t *body;
    char *s;
    struct MHD_Response *resp;
    memset(&mt, 0, sizeof(mt));
    pthread_mutex_lock(&g_mu);
    for (size_t i = 0; i < g_nrules; i++) {
        if (rule_matches(&g_rules[i], req, &mt)) {
            r = &g_rules[i];
            r->hits++;
            break;
        }
    }
    pthread_mutex_unlock(&g_mu);
    *delay = g_latency_ms;
    if (!r) {
        *status = 500;
        return text_response("{\"error\":{\"message\":\"mockllm: no rule matched\","
                             "\"code\":\"no_rule\"}}");
    }
    if (json_is_integer(json_object_get(r->def, "latency_ms")))
        *delay = (long)eddy_json_int(r->def, "latency_ms", 0);
    if (json_object_get(r->def, "fault")) {
        json_t *f = json_object_get(r->def, "fault");
        if (json_is_integer(json_object_get(f, "delay_ms")))
            *delay = (long)eddy_json_int(f, "delay_ms", 0);
        return fault_response(f, status);
    }
    body = answer(r, req, &mt);
    s = eddy_json_dumps_flags(body, JSON_COMPACT);
    json_decref(body);
    resp = text_response(s ? s : "{}");
    eddy_free(s);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    *status = 200;
    return resp;
}

static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status, json_t *v)
{
    char *s = eddy_json_dumps_flags(v, JSON_COMPACT);
    struct MHD_Response *resp = text_response(s ? s : "{}");
    enum MHD_Result ret;
    eddy_free(s);
    MHD_add_response_header(resp, "Content-Type", "application/json");
    ret = MHD_queue_response(c, status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *data,
                               size_t *size, void **ctx)
{
    conn *cn = *ctx;
    (void)cls;
    (void)version;
    if (!cn) {
        cn = calloc(1, sizeof(*cn));
        eddy_buf_init(&cn->body);
        *ctx = cn;
        return MHD_YES;
    }
    if (*size) {
        eddy_buf_append(&cn->body, data, *size);
        *size = 0;
        return MHD_YES;
    }
    if (cn->suspended) { /* resumed: the answer is due */
        enum MHD_Result ret = MHD_queue_response(c, cn->status, cn->resp);
        MHD_destroy_response(cn->resp);
        cn->resp = NULL;
        cn->suspended = 0;
        atomic_fetch_sub(&g_in_flight, 1);
        return ret;
    }
    if (!strcmp(method, "GET") && !strcmp(url, "/stats")) {
        json_t *st = json_pack(
            "{s:I, s:I, s:I, s:I}", "requests", (json_int_t)atomic_load(&g_requests), "in_flight",
            (json_int_t)atomic_load(&g_in_flight), "peak_in_flight",
            (json_int_t)atomic_load(&g_peak), "faults", (json_int_t)atomic_load(&g_faults));
        enum MHD_Result ret = send_json(c, 200, st);
        json_decref(st);
        return ret;
    }
    if (!strcmp(method, "POST") && strstr(url, "chat/completions")) {
        json_t *req = json_loadb(cn->body.data ? cn->body.data : "", cn->body.len, 0, NULL);
        long delay, cur;
        if (!req) {
            json_t *e = json_pack("{s:{s:s}}", "error", "message", "request body is not JSON");
            enum MHD_Result ret = send_json(c, 400, e);
            json_decref(e);
            return ret;
        }
        atomic_fetch_add(&g_requests, 1);
        cur = atomic_fetch_add(&g_in_flight, 1) + 1;
        for (long p = atomic_load(&g_peak);
             cur > p && !atomic_compare_exchange_weak(&g_peak, &p, cur);)
            ;
        if (g_log) {
            pthread_mutex_lock(&g_mu);
            eddy_json_dumpf(req, g_log, JSON_COMPACT);
            fputc('\n', g_log);
            fflush(g_log);
            pthread_mutex_unlock(&g_mu);
        }
        cn->resp = respond(req, &cn->status, &delay);
        json_decref(req);
        if (delay > 0) {
            cn->suspended = 1;
            MHD_suspend_connection(c);
            heap_push(now_ms() + (uint64_t)delay, c);
            return MHD_YES;
        }
        {
            enum MHD_Result ret = MHD_queue_response(c, cn->status, cn->resp);
            MHD_destroy_response(cn->resp);
            cn->resp = NULL;
            atomic_fetch_sub(&g_in_flight, 1);
            return ret;
        }
    }
    {
        json_t *e = json_pack("{s:{s:s}}", "error", "message", "not found");
        enum MHD_Result ret = send_json(c, 404, e);
        json_decref(e);
        return ret;
    }
}

static void completed(void *cls, struct MHD_Connection *c, void **ctx,
                      enum MHD_RequestTerminationCode toe)
{
    conn *cn = *ctx;
    (void)cls;
    (void)c;
    (void)toe;
    if (!cn)
        return;
    if (cn->resp)
        MHD_destroy_response(cn->resp);
    eddy_buf_free(&cn->body);
    free(cn);
    *ctx = NULL;
}

/* A misspelt key would make a rule match everything or answer nothing:
 * refuse the script instead, naming the rule and the key. */
static const char *const kRuleKeys[] = {"when",  "times",      "tool_calls", "reply",
                                        "fault", "latency_ms", NULL};
static const char *const kWhenKeys[] = {
    "last_role",    "last_user_contains", "last_user_regex",   "system_contains",
    "tool_offered", "last_tool_contains", "min_user_messages", NULL};
static const char *const kFaultKeys[] = {"status",   "retry_after", "retry_after_ms", "delay_ms",
                                         "truncate", "malformed",   "error_code",     "message",
                                         "type",     NULL};

static int unknown_key(const char *path, size_t i, json_t *obj, const char *const *keys,
                       const char *prefix)
{
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        const char *const *p = keys;
        while (*p && strcmp(*p, k))
            p++;
        if (!*p) {
            fprintf(stderr, "mockllm: %s: rule %zu: unknown key '%s%s'\n", path, i, prefix, k);
            return -1;
        }
    }
    return 0;
}

static int load_script(const char *path)
{
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je), *rules;
    if (!root) {
        fprintf(stderr, "mockllm: %s:%d:%d: %s\n", path, je.line, je.column, je.text);
        return -1;
    }
    if (json_is_integer(json_object_get(root, "latency_ms")) && !g_latency_ms)
        g_latency_ms = (long)eddy_json_int(root, "latency_ms", 0);
    rules = json_object_get(root, "rules");
    if (!json_is_array(rules)) {
        fprintf(stderr, "mockllm: %s: expected {\"rules\": [...]}\n", path);
        return -1;
    }
    g_nrules = json_array_size(rules);
    g_rules = calloc(g_nrules + 1, sizeof(rule));
    for (size_t i = 0; i < g_nrules; i++) {
        rule *r = &g_rules[i];
        const char *re;
        r->def = json_incref(json_array_get(rules, i));
        if (unknown_key(path, i, r->def, kRuleKeys, "") ||
            unknown_key(path, i, json_object_get(r->def, "when"), kWhenKeys, "when.") ||
            unknown_key(path, i, json_object_get(r->def, "fault"), kFaultKeys, "fault."))
            return -1;
        r->times = json_is_integer(json_object_get(r->def, "times"))
                       ? (long)eddy_json_int(r->def, "times", 0)
                       : -1;
        re = eddy_json_str(json_object_get(r->def, "when"), "last_user_regex", NULL);
        if (re) {
            if (regcomp(&r->re, re, REG_EXTENDED)) {
                fprintf(stderr, "mockllm: %s: rule %zu: bad regex '%s'\n", path, i, re);
                return -1;
            }
            r->has_re = 1;
        }
    }
    json_decref(root);
    return 0;
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

int main(int argc, char **argv)
{
    const char *script = NULL, *port_file = NULL;
    int port = 0;
    pthread_t timer;
    struct rlimit rl;
    const union MHD_DaemonInfo *info;
    struct sockaddr_in addr;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--script") && i + 1 < argc)
            script = argv[++i];
        else if (!strcmp(argv[i], "--port") && i + 1 < argc)
            port = (int)strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--port-file") && i + 1 < argc)
            port_file = argv[++i];
        else if (!strcmp(argv[i], "--latency-ms") && i + 1 < argc)
            g_latency_ms = strtol(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--log") && i + 1 < argc)
            g_log = fopen(argv[++i], "a");
        else {
            fprintf(stderr, "usage: mockllm --script FILE [--port N] [--port-file F] "
                            "[--latency-ms N] [--log FILE]\n");
            return 2;
        }
    }
    if (!script || load_script(script))
        return 2;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    signal(SIGPIPE, SIG_IGN);
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    g_daemon = MHD_start_daemon(
        MHD_USE_EPOLL_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        (uint16_t)port, NULL, NULL, handler, NULL, MHD_OPTION_NOTIFY_COMPLETED, completed, NULL,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)20000, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
        MHD_OPTION_LISTEN_BACKLOG_SIZE, (unsigned)4096, MHD_OPTION_END);
    if (!g_daemon) {
        fprintf(stderr, "mockllm: cannot listen on port %d\n", port);
        return 1;
    }
    info = MHD_get_daemon_info(g_daemon, MHD_DAEMON_INFO_BIND_PORT);
    port = info ? info->port : port;
    pthread_create(&timer, NULL, timer_main, NULL);
    printf("mockllm: scripted stand-in for an OpenAI-compatible model on http://127.0.0.1:%d/v1\n",
           port);
    fflush(stdout);
    if (port_file) {
        FILE *f = fopen(port_file, "w");
        if (f) {
            fprintf(f, "%d\n", port);
            fclose(f);
        }
    }
    while (!g_stop)
        pause();
    pthread_mutex_lock(&g_mu);
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
    pthread_join(timer, NULL);
    while (g_nheap) /* a daemon must not stop with suspended connections */
        MHD_resume_connection(heap_pop().c);
    MHD_stop_daemon(g_daemon);
    return 0;
}
