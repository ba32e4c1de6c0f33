/*
 * trace/http.c - the read-only HTTP server of `eddy run --dashboard` and
 * `eddy dashboard`: /metrics (Prometheus), /api/traces and /api/traces/ID
 * (the trace store as JSON), /healthz, and the dashboard (its page's assets
 * and /api/tail, in trace/dash.c).
 *
 * libmicrohttpd runs it on a thread of its own; a request reads the trace
 * store through its own SQLite connection (eddy_trace_query) and the
 * metrics through their atomics, so no load on it can stall a worker.
 *
 * Security: loopback unless told otherwise; any other address needs a
 * bearer token (refused at start without one), checked on every path in
 * constant time, from "Authorization: Bearer T" or the eddy_token cookie
 * that GET /?token=T sets. Only GET and HEAD. Every answer carries a strict
 * Content-Security-Policy, nosniff, no-referrer, and no caching of data.
 */
#include "eddy/trace.h"
#include "dash_int.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/state.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

struct eddy_http {
    struct MHD_Daemon *d;
    char *token;
    char *trace_path, *state_path;
    eddy_metrics *metrics;
    const eddy_trace_store *traces;
    eddy__dash_tail *tail; /* /api/tail's streams (with a trace store) */
    char url[96];
};

static const char kCsp[] = "default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'";

static const char kTokenChars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                  "0123456789-._~+/=";
static const char kNotAllowed[] = "read-only: GET and HEAD only\n";
static const char kUnauthorized[] = "unauthorized: a token is needed\n";

/* -- answers ------------------------------------------------------------------ */

/* Queue R with the headers every answer carries (TYPE, when not NULL, as
 * its Content-Type), and let it go. */
static enum MHD_Result queue(struct MHD_Connection *c, unsigned status, struct MHD_Response *r,
                             const char *type)
{
    if (type)
        MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Content-Security-Policy", kCsp);
    MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
    MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result answer(struct MHD_Connection *c, unsigned status, const char *type,
                              const char *body, size_t len, int copy, const char *extra_name,
                              const char *extra_value)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(
        len, (void *)body, copy ? MHD_RESPMEM_MUST_COPY : MHD_RESPMEM_PERSISTENT);
    if (!r)
        return MHD_NO;
    if (extra_name)
        MHD_add_response_header(r, extra_name, extra_value);
    return queue(c, status, r, type);
}

static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *msg)
{
    return answer(c, status, "text/plain; charset=utf-8", msg, strlen(msg), 1, NULL, NULL);
}

static enum MHD_Result json_answer(struct MHD_Connection *c, unsigned status, json_t *v)
{
    char *s = eddy_json_dumps_flags(v, JSON_COMPACT);
    if (!s)
        return text(c, 500, "out of memory\n");
    enum MHD_Result ok =
        answer(c, status, "application/json; charset=utf-8", s, strlen(s), 1, NULL, NULL);
    eddy_free(s);
    return ok;
}

static enum MHD_Result error_json(struct MHD_Connection *c, unsigned status, const char *msg)
{
    json_t *v = json_pack("{s:s}", "error", msg);
    enum MHD_Result ok = json_answer(c, status, v);
    json_decref(v);
    return ok;
}

/* -- authorization ---------------------------------------------------------------- */

/* Whether A (LEN bytes) is the token, in time that depends on its length only. */
static int token_is(const eddy_http *h, const char *a, size_t len)
{
    size_t n = strlen(h->token);
    unsigned char diff = (unsigned char)(len != n);
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(h->token[i] ^ (i < len ? a[i] : 0));
    return diff == 0;
}

static int authorized(const eddy_http *h, struct MHD_Connection *c)
{
    if (!h->token)
        return 1;
    const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    if (auth && !strncmp(auth, "Bearer ", 7) && token_is(h, auth + 7, strlen(auth + 7)))
        return 1;
    const char *cookie = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, "eddy_token");
    return cookie && token_is(h, cookie, strlen(cookie));
}

/* Without a token (a loopback server), whether the request names this
 * machine as localhost or by an IP address. A page of another site whose
 * name it rebinds to 127.0.0.1 (DNS rebinding) is same-origin with this
 * server in the browser, but its requests carry that name in Host. No Host
 * (HTTP/1.0): no browser sends that. */
static int host_ok(struct MHD_Connection *c)
{
    const char *host = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Host");
    char name[256];
    size_t n;
    struct in6_addr a6;
    struct in_addr a4;
    if (!host)
        return 1;
    if (host[0] == '[') {
        const char *close = strchr(host, ']');
        if (!close || (close[1] && close[1] != ':'))
            return 0;
        n = (size_t)(close - host - 1);
        if (n >= sizeof(name))
            return 0;
        memcpy(name, host + 1, n);
        name[n] = '\0';
        return inet_pton(AF_INET6, name, &a6) == 1;
    }
    n = strcspn(host, ":");
    if (n >= sizeof(name))
        return 0;
    memcpy(name, host, n);
    name[n] = '\0';
    return !strcasecmp(name, "localhost") || inet_pton(AF_INET, name, &a4) == 1;
}

/* -- the API --------------------------------------------------------------------------- */

static int parse_int(const char *s, long long *out)
{
    char *end;
    if (!s || !*s)
        return -1;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (*end || errno == ERANGE)
        return -1;
    *out = v;
    return 0;
}

static enum MHD_Result api_traces(eddy_http *h, struct MHD_Connection *c)
{
    eddy_trace_filter f = {0};
    long long n;
    const char *v;
    json_t *rows;
    eddy_err e;
#define ARG(name) MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name)
    f.agent = ARG("agent");
    f.key = ARG("key");
    f.event_id = ARG("event");
    f.status = ARG("status");
    f.model = ARG("model");
    f.tool = ARG("tool");
    f.search = ARG("search");
    static const struct {
        const char *name;
        size_t off;
    } nums[] = {{"since_ns", offsetof(eddy_trace_filter, since_ns)},
                {"until_ns", offsetof(eddy_trace_filter, until_ns)},
                {"min_ms", offsetof(eddy_trace_filter, min_duration_ns)},
                {"max_ms", offsetof(eddy_trace_filter, max_duration_ns)},
                {"min_tokens", offsetof(eddy_trace_filter, min_tokens)},
                {"after_start_ns", offsetof(eddy_trace_filter, after_start_ns)},
                {"after_id", offsetof(eddy_trace_filter, after_id)}};
    for (size_t i = 0; i < sizeof(nums) / sizeof(nums[0]); i++) {
        if (!(v = ARG(nums[i].name)))
            continue;
        int ms = !strcmp(nums[i].name, "min_ms") || !strcmp(nums[i].name, "max_ms");
        if (parse_int(v, &n) || n < 0 || (ms && n > INT64_MAX / 1000000)) {
            char msg[160];
            snprintf(msg, sizeof(msg), "%s must be a whole number >= 0 (and in range)",
                     nums[i].name);
            return error_json(c, 400, msg);
        }
        if (ms)
            n *= 1000000;
        *(int64_t *)((char *)&f + nums[i].off) = n;
    }
    if ((v = ARG("limit"))) {
        if (parse_int(v, &n) || n < 1 || n > 10000)
            return error_json(c, 400, "limit must be a number from 1 to 10000");
        f.limit = (int)n;
    }
    if ((v = ARG("order")) && strcmp(v, "newest") && strcmp(v, "oldest"))
        return error_json(c, 400, "order must be newest or oldest");
    f.oldest_first = v && !strcmp(v, "oldest");
#undef ARG
    int rc = eddy_trace_query(h->trace_path, &f, &rows, &e);
    if (rc)
        return error_json(c, rc == EDDY_EINVAL ? 400 : rc == EDDY_ENOENT ? 404 : 500, e.msg);
    enum MHD_Result ok = json_answer(c, 200, rows);
    json_decref(rows);
    return ok;
}

/* What an eddy_state call writes to a FILE, as text (new string; NULL on failure). */
typedef int (*state_read_fn)(eddy_state *st, const char *agent, const char *key, long limit,
                             FILE *out, eddy_err *err);

static int read_get(eddy_state *st, const char *agent, const char *key, long limit, FILE *out,
                    eddy_err *err)
{
    (void)limit;
    return eddy_state_get(st, agent, key, out, err);
}

static char *state_text(eddy_state *st, state_read_fn fn, const char *agent, const char *key,
                        long limit, int *rc, eddy_err *err)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        *rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        return NULL;
    }
    *rc = fn(st, agent, key, limit, f, err);
    fclose(f);
    if (*rc) {
        free(buf);
        return NULL;
    }
    return buf;
}

/* /api/key?key=K[&agent=A][&history=N]: the key's memory document, its last N
 * history entries (20) and its newest runs (50). */
static enum MHD_Result api_key(eddy_http *h, struct MHD_Connection *c)
{
    const char *key = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "key");
    const char *agent = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "agent");
    const char *hv = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "history");
    long long hist = 20;
    eddy_err e;
    int rc;
    if (!key || !*key)
        return error_json(c, 400, "key is required");
    if (hv && (parse_int(hv, &hist) || hist < 1 || hist > 1000))
        return error_json(c, 400, "history must be a number from 1 to 1000");
    json_t *out = json_pack("{s:s, s:o, s:o, s:o}", "key", key, "agent",
                            agent ? json_string(agent) : json_null(), "memory", json_null(),
                            "history", json_array());
    if (!out)
        return text(c, 500, "out of memory\n");
    eddy_state *st = NULL;
    if (!h->state_path) {
        json_object_set_new(out, "state", json_string("no state store is known to this server"));
    } else if ((rc = eddy_state_open(h->state_path, 0, &st, &e))) {
        json_object_set_new(out, "state", json_string(e.msg));
    } else {
        char *doc = state_text(st, read_get, agent, key, 0, &rc, &e);
        char *lines =
            rc ? NULL : state_text(st, eddy_state_history, agent, key, (long)hist, &rc, &e);
        eddy_state_close(st);
        if (rc && rc != EDDY_ENOENT) {
            free(doc);
            json_decref(out);
            return error_json(c, rc == EDDY_EINVAL ? 400 : 500, e.msg);
        }
        json_t *d = doc ? json_loads(doc, 0, NULL) : NULL;
        if (d)
            json_object_set_new(out, "memory", d);
        json_t *hs = json_object_get(out, "history");
        for (char *line = lines, *nl; line && *line; line = nl ? nl + 1 : NULL) {
            nl = strchr(line, '\n');
            if (nl)
                *nl = '\0';
            json_t *entry = json_loads(line, 0, NULL);
            if (entry)
                json_array_append_new(hs, entry);
            if (!nl)
                break;
        }
        free(doc);
        free(lines);
    }
    if (h->trace_path) {
        eddy_trace_filter f = {.key = key, .agent = agent, .limit = 50};
        json_t *runs;
        if (eddy_trace_query(h->trace_path, &f, &runs, &e) == 0)
            json_object_set_new(out, "runs", runs);
    }
    enum MHD_Result ok = json_answer(c, 200, out);
    json_decref(out);
    return ok;
}

static enum MHD_Result api_trace(eddy_http *h, struct MHD_Connection *c, const char *id)
{
    json_t *t;
    eddy_err e;
    int rc = eddy_trace_get_json(h->trace_path, id, &t, &e);
    if (rc)
        return error_json(c, rc == EDDY_EINVAL ? 400 : rc == EDDY_ENOENT ? 404 : 500, e.msg);
    enum MHD_Result ok = json_answer(c, 200, t);
    json_decref(t);
    return ok;
}

/* The live tail: server-sent events (trace/dash.c), headers as answer's. */
static enum MHD_Result api_tail(eddy_http *h, struct MHD_Connection *c)
{
    unsigned status;
    const char *last = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID");
    if (!last)
        last = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "after");
    eddy_trace_filter f = {
        .agent = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "agent"),
        .key = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "key"),
        .event_id = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "event"),
        .status = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "status"),
        .model = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "model"),
        .tool = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "tool"),
        .search = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "search")};
    if (f.status && strcmp(f.status, "ok") && strcmp(f.status, "error"))
        return error_json(c, 400, "status must be ok or error");
    struct MHD_Response *r = eddy__dash_tail_response(h->tail, last, &f, &status);
    if (!r)
        return text(c, status, status == 503 ? "too many live tails open\n" : "out of memory\n");
    return queue(c, 200, r, "text/event-stream; charset=utf-8");
}

static enum MHD_Result metrics(eddy_http *h, struct MHD_Connection *c)
{
    eddy_buf b;
    if (!h->metrics)
        return text(c, 404, "no metrics: this server shows a trace store only\n");
    eddy_buf_init(&b);
    if (h->traces) {
        eddy_otlp_stats st;
        eddy_trace_otlp_stats(h->traces, &st);
        static const char *const head =
            "# HELP eddy_otlp_spans_exported_total Spans an OTLP receiver accepted.\n"
            "# TYPE eddy_otlp_spans_exported_total counter\n"
            "eddy_otlp_spans_exported_total %llu\n"
            "# HELP eddy_otlp_spans_dropped_total Spans not exported (queue full, batch given "
            "up).\n"
            "# TYPE eddy_otlp_spans_dropped_total counter\n"
            "eddy_otlp_spans_dropped_total %llu\n"
            "# HELP eddy_otlp_batches_failed_total OTLP POSTs given up.\n"
            "# TYPE eddy_otlp_batches_failed_total counter\n"
            "eddy_otlp_batches_failed_total %llu\n"
            "# HELP eddy_otlp_retries_total OTLP POSTs sent again.\n"
            "# TYPE eddy_otlp_retries_total counter\n"
            "eddy_otlp_retries_total %llu\n"
            "# HELP eddy_otlp_spans_queued Spans waiting for export.\n"
            "# TYPE eddy_otlp_spans_queued gauge\n"
            "eddy_otlp_spans_queued %llu\n";
        eddy_buf_printf(&b, head, (unsigned long long)st.exported, (unsigned long long)st.dropped,
                        (unsigned long long)st.failed_batches, (unsigned long long)st.retries,
                        (unsigned long long)st.queued);
    }
    if (eddy_metrics_render(h->metrics, &b)) {
        eddy_buf_free(&b);
        return text(c, 500, "out of memory\n");
    }
    enum MHD_Result ok =
        answer(c, 200, "text/plain; version=0.0.4; charset=utf-8", b.data, b.len, 1, NULL, NULL);
    eddy_buf_free(&b);
    return ok;
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
                               const char *method, const char *version, const char *upload,
                               size_t *upload_size, void **state)
{
    eddy_http *h = cls;
    (void)version;
    (void)upload;
    if (!*state) { /* the first call is for the headers: answer at the next */
        *state = h;
        return MHD_YES;
    }
    if (*upload_size) /* a body: never read */
        *upload_size = 0;
    if (strcmp(method, "GET") && strcmp(method, "HEAD"))
        return answer(c, 405, "text/plain; charset=utf-8", kNotAllowed, sizeof(kNotAllowed) - 1, 0,
                      "Allow", "GET, HEAD");
    if (!h->token && !host_ok(c))
        return text(c, 403,
                    "forbidden: this dashboard answers requests for localhost or an IP "
                    "address only (give it a token to serve other names)\n");
    const char *given = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "token");
    if (h->token && given && !strcmp(url, "/") && token_is(h, given, strlen(given))) {
        char cookie[512];
        snprintf(cookie, sizeof(cookie), "eddy_token=%s; HttpOnly; SameSite=Strict; Path=/",
                 h->token);
        struct MHD_Response *r = MHD_create_response_from_buffer(0, "", MHD_RESPMEM_PERSISTENT);
        if (!r)
            return MHD_NO;
        MHD_add_response_header(r, "Set-Cookie", cookie);
        MHD_add_response_header(r, "Location", "/");
        return queue(c, 303, r, NULL);
    }
    if (!authorized(h, c))
        return answer(c, 401, "text/plain; charset=utf-8", kUnauthorized, sizeof(kUnauthorized) - 1,
                      0, "WWW-Authenticate", "Bearer realm=\"eddy\"");
    if (!strcmp(url, "/healthz"))
        return text(c, 200, "ok\n");
    if (!strcmp(url, "/metrics"))
        return metrics(h, c);
    const char *type;
    const eddy__dash_asset *a = eddy__dash_find(url, &type);
    if (a)
        return answer(c, 200, type, (const char *)a->data, a->len, 0, NULL, NULL);
    if (h->tail && !strcmp(url, "/api/tail"))
        return api_tail(h, c);
    if (h->trace_path && !strcmp(url, "/api/traces"))
        return api_traces(h, c);
    if (!strcmp(url, "/api/key"))
        return api_key(h, c);
    if (h->trace_path && !strncmp(url, "/api/traces/", 12) && url[12])
        return api_trace(h, c, url + 12);
    return text(c, 404, "not found\n");
}

/* -- start and stop ------------------------------------------------------------------ */

/* HOST:PORT ("127.0.0.1:8765", "[::1]:0", "localhost:8765", ":8765" for
 * every address) into *SS. Returns 0, or -1 with ERR. */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        int *loopback, eddy_err *err)
{
    char host[128];
    const char *colon = strrchr(listen, ':');
    long long port;
    memset(ss, 0, sizeof(*ss));
    if (!colon || parse_int(colon + 1, &port) || port < 0 || port > 65535 ||
        (size_t)(colon - listen) >= sizeof(host))
        return eddy_err_set(err, EDDY_EINVAL,
                            "dashboard listen '%s': expected HOST:PORT, such as 127.0.0.1:8765",
                            listen);
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    if (!strcmp(host, "localhost"))
        snprintf(host, sizeof(host), "127.0.0.1");
    struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
    if (!host[0] || inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)port);
        if (!host[0])
            a4->sin_addr.s_addr = htonl(INADDR_ANY);
        *loopback = (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
        *len = sizeof(*a4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)port);
        *loopback = IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr);
        *len = sizeof(*a6);
        return 0;
    }
    return eddy_err_set(err, EDDY_EINVAL,
                        "dashboard listen '%s': '%s' is not an IP address (or localhost)", listen,
                        host);
}

int eddy_http_start(const eddy_http_opts *o, eddy_http **out, eddy_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int loopback = 0, rc;
    *out = NULL;
    if ((rc = parse_listen(o->listen, &ss, &sl, &loopback, err)))
        return rc;
    if (!loopback && (!o->token || !*o->token))
        return eddy_err_set(err, EDDY_EINVAL,
                            "dashboard listen '%s' is not a loopback address: it needs a token "
                            "(dashboard.token or EDDY_DASHBOARD_TOKEN)",
                            o->listen);
    if (o->token && (strlen(o->token) < 16 || strlen(o->token) > 256 ||
                     strspn(o->token, kTokenChars) != strlen(o->token)))
        return eddy_err_set(err, EDDY_EINVAL,
                            "the dashboard token must have 16 to 256 characters, each a letter, "
                            "a digit or one of -._~+/= (it goes in a header and a cookie)");
    eddy_http *h = eddy_calloc(1, sizeof(*h));
    if (!h || (o->token && *o->token && !(h->token = eddy_strdup(o->token))) ||
        (o->trace_path && (!(h->trace_path = eddy_strdup(o->trace_path)) ||
                           !(h->tail = eddy__dash_tail_new(h->trace_path))))) {
        eddy_http_stop(h);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    h->metrics = o->metrics;
    h->traces = o->traces;
    if (o->state_path && !(h->state_path = eddy_strdup(o->state_path))) {
        eddy_http_stop(h);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    /* a thread per connection: /api/tail's streams wait between polls */
    unsigned flags =
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, handler, h, MHD_OPTION_SOCK_ADDR,
                            (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
                            MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_END);
    if (!h->d) {
        eddy_http_stop(h);
        return eddy_err_set(err, EDDY_EIO,
                            "dashboard: cannot listen on %s (in use, or not an "
                            "address of this machine)",
                            o->listen);
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    memset(&bound, 0, sizeof(bound));
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (info && getsockname(info->listen_fd, (struct sockaddr *)&bound, &bl) == 0) {
        if (bound.ss_family == AF_INET6) {
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&bound)->sin6_addr, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
        } else {
            inet_ntop(AF_INET, &((struct sockaddr_in *)&bound)->sin_addr, ip, sizeof(ip));
            port = ntohs(((struct sockaddr_in *)&bound)->sin_port);
        }
    }
    snprintf(h->url, sizeof(h->url),
             bound.ss_family == AF_INET6 ? "http://[%s]:%d/" : "http://%s:%d/", ip, port);
    *out = h;
    return 0;
}

const char *eddy_http_url(const eddy_http *h)
{
    return h ? h->url : "";
}

void eddy_http_stop(eddy_http *h)
{
    if (!h)
        return;
    eddy__dash_tail_stop(h->tail); /* open streams end, so the daemon can stop */
    if (h->d)
        MHD_stop_daemon(h->d);
    eddy__dash_tail_free(h->tail);
    eddy_free(h->token);
    eddy_free(h->trace_path);
    eddy_free(h->state_path);
    eddy_free(h);
}
