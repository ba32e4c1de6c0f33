/*
 * tools/http.c - eddy.http for Lua tools, on curl multi on the host's loop.
 *
 * The module's state on one host is one CURLM driven by libuv (sockets on
 * uv_poll_t, curl's timer on a uv_timer_t, as llm/client.c does), opened at
 * the first request and closed by eddy_tools_close. A request (an op) owns
 * one easy handle for all its hops: redirects are followed here, not by
 * curl, so that each new URL is checked against the tool's allow list
 * before it is requested; the method changes as browsers do (303, and 301/302
 * after a POST, become GET without body) and credentials (Authorization,
 * Cookie) are dropped when a redirect leaves the first scheme, host or port.
 *
 * Addresses are checked where curl connects: CURLOPT_OPENSOCKETFUNCTION sees
 * every address before a socket exists (a refused one never gets a socket),
 * CURLOPT_PREREQFUNCTION sees the address of the connection a request is
 * about to use, a reused one too (another tool may have opened it). So a
 * name that resolves somewhere it should not, by DNS or after a redirect,
 * is refused before any byte leaves.
 *
 * Invariants: an op is in the state's list from its start until its wait is
 * answered, then freed; it is in the multi (in_multi) only while a hop runs.
 * Answers are given from check_done (curl's callbacks only record what
 * happened); eddy_tool_wait_done never calls back into this file, so the
 * list can be walked while answering. The state is freed when its timer and
 * every poll handle have closed.
 */
#include "http_int.h"

#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/trace.h"

#include <ctype.h>
#include <curl/curl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* Easy handles kept for reuse: curl_easy_init and cleanup cost more than
 * curl_easy_reset (bench/tools). */
#define EASY_POOL 64

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    eddy_http_state *s;
    int closing;
} sock_ctx;

typedef struct http_op {
    eddy_http_state *s;
    struct http_op *prev, *next;
    eddy_tool_wait *w;
    CURL *easy;
    struct curl_slist *hdrs;
    char tool[128], where[200];
    json_t *allow;      /* the policy's list (kept) */
    json_t *headers;    /* the request's headers (kept), or NULL */
    const char *method; /* canonical, static */
    char *body;
    size_t body_len;
    int json_body, has_body;
    char *url;                 /* this hop's URL as curl normalized it */
    char host[256], scheme[8]; /* this hop's */
    long port;
    char host0[256], scheme0[8]; /* the first hop's: credentials stay with it */
    long port0;
    int redirects, max_redirects;
    int64_t max_response, timeout_ms;
    uint64_t deadline_ms;
    eddy_buf resp;
    json_t *rhdrs; /* lowercased name -> value (repeats joined with ", ") */
    size_t rh_bytes;
    char refused[400]; /* why a connection was refused, or "" */
    int too_big;       /* 1: body past max_response, 2: headers past the cap, 3: out of memory */
    eddy_span *span;
    int tool_result;
    int in_multi;
} http_op;

struct eddy_http_state {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    sock_ctx **socks; /* by fd */
    size_t nsocks;
    http_op *ops;
    CURL *pool[EASY_POOL]; /* easy handles of finished ops, for the next ones */
    int npool;
    int open_handles; /* the timer and poll handles not yet closed */
    int closing;
};

static void check_done(eddy_http_state *s);

/* -- curl <-> libuv ------------------------------------------------------------ */

static void maybe_free_state(eddy_http_state *s)
{
    if (!s->closing || s->open_handles > 0)
        return;
    eddy_free(s->socks);
    eddy_free(s);
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    sock_ctx *k = h->data;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE)
        flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE)
        flags |= CURL_CSELECT_OUT;
    curl_multi_socket_action(k->s->multi, k->fd, flags, &running);
    check_done(k->s);
}

static void sock_closed(uv_handle_t *h)
{
    sock_ctx *k = h->data;
    eddy_http_state *s = k->s;
    eddy_free(k);
    s->open_handles--;
    maybe_free_state(s);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    eddy_http_state *s = userp;
    sock_ctx *k = socketp;
    int events = 0;
    (void)e;
    if (what == CURL_POLL_REMOVE) { /* the socket may stay open (kept alive): so does K */
        if (k && !k->closing)
            uv_poll_stop(&k->poll);
        curl_multi_assign(s->multi, fd, NULL);
        return 0;
    }
    if (!k && fd >= 0 && (size_t)fd < s->nsocks)
        k = s->socks[fd];
    if (!k) {
        if (fd < 0)
            return -1;
        if ((size_t)fd >= s->nsocks) {
            size_t n = s->nsocks ? s->nsocks : 256;
            sock_ctx **v;
            while (n <= (size_t)fd)
                n *= 2;
            if (!(v = eddy_realloc(s->socks, n * sizeof(*v))))
                return -1;
            memset(v + s->nsocks, 0, (n - s->nsocks) * sizeof(*v));
            s->socks = v;
            s->nsocks = n;
        }
        k = eddy_calloc(1, sizeof(*k));
        if (!k || uv_poll_init_socket(s->loop, &k->poll, fd)) {
            eddy_free(k);
            return -1;
        }
        s->open_handles++;
        k->fd = fd;
        k->s = s;
        k->poll.data = k;
        s->socks[fd] = k;
    }
    curl_multi_assign(s->multi, fd, k);
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&k->poll, events, poll_cb);
    return 0;
}

/* curl closes a socket: its poll handle goes first (out of epoll while the fd
 * is still this socket), then the fd. */
static int close_sock_cb(void *clientp, curl_socket_t fd)
{
    eddy_http_state *s = clientp;
    if (fd >= 0 && (size_t)fd < s->nsocks && s->socks[fd]) {
        sock_ctx *k = s->socks[fd];
        s->socks[fd] = NULL;
        k->closing = 1;
        uv_close((uv_handle_t *)&k->poll, sock_closed);
    }
    return close(fd);
}

static void on_curl_timer(uv_timer_t *t)
{
    eddy_http_state *s = t->data;
    int running;
    curl_multi_socket_action(s->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(s);
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    eddy_http_state *s = userp;
    (void)m;
    if (timeout_ms < 0)
        uv_timer_stop(&s->timer);
    else
        uv_timer_start(&s->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* -- address checks (inside curl's connect) --------------------------------------- */

static curl_socket_t open_sock(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    http_op *o = clientp;
    char why[160];
    if (purpose != CURLSOCKTYPE_IPCXN)
        return CURL_SOCKET_BAD;
    if (!eddy__http_addr_allowed(o->allow, o->host, &a->addr, (int)o->port, why, sizeof(why))) {
        snprintf(o->refused, sizeof(o->refused), "host '%s' resolves to %s, which %s does not list",
                 o->host, why, o->where);
        return CURL_SOCKET_BAD;
    }
    return socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
}

static int prereq_cb(void *clientp, char *ip, char *local_ip, int port, int local_port)
{
    http_op *o = clientp;
    char why[160];
    (void)local_ip;
    (void)local_port;
    if (eddy__http_addr_text_allowed(o->allow, o->host, ip, port, why, sizeof(why)))
        return CURL_PREREQFUNC_OK;
    snprintf(o->refused, sizeof(o->refused), "host '%s' resolves to %s, which %s does not list",
             o->host, why, o->where);
    return CURL_PREREQFUNC_ABORT;
}

/* -- response ---------------------------------------------------------------------- */

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    http_op *o = ud;
    size_t len = size * n;
    if ((int64_t)(o->resp.len + len) > o->max_response) {
        o->too_big = 1;
        return 0; /* ends the transfer: CURLE_WRITE_ERROR */
    }
    if (eddy_buf_append(&o->resp, p, len)) {
        o->too_big = 3;
        return 0;
    }
    return len;
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    http_op *o = ud;
    size_t len = size * n, nl, vl;
    char name[128];
    const char *colon, *v;
    json_t *old, *nv;
    if (len >= 5 && !memcmp(p, "HTTP/", 5)) { /* a new response (after 100 Continue, say) */
        json_object_clear(o->rhdrs);
        o->rh_bytes = 0;
        return len;
    }
    if ((o->rh_bytes += len) > EDDY_HTTP_MAX_HEADER_BYTES) {
        o->too_big = 2;
        return 0;
    }
    if (!(colon = memchr(p, ':', len)) || (nl = (size_t)(colon - p)) == 0 || nl >= sizeof(name))
        return len; /* the blank line, or a malformed one curl let through */
    for (size_t i = 0; i < nl; i++)
        name[i] = (char)tolower((unsigned char)p[i]);
    name[nl] = '\0';
    v = colon + 1;
    vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    if ((old = json_object_get(o->rhdrs, name))) {
        char *j = eddy_aprintf("%s, %.*s", json_string_value(old), (int)vl, v);
        nv = j ? json_stringn_nocheck(j, strlen(j)) : NULL;
        eddy_free(j);
    } else {
        nv = json_stringn_nocheck(v, vl);
    }
    if (!nv || json_object_set_new_nocheck(o->rhdrs, name, nv)) { /* (bytes as sent) */
        o->too_big = 3;
        return 0;
    }
    return len;
}

/* -- ops ------------------------------------------------------------------------------ */

static void op_free(http_op *o)
{
    eddy_http_state *s = o->s;
    if (o->prev)
        o->prev->next = o->next;
    else if (s->ops == o)
        s->ops = o->next;
    if (o->next)
        o->next->prev = o->prev;
    if (o->easy) {
        if (o->in_multi)
            curl_multi_remove_handle(s->multi, o->easy);
        if (!s->closing && s->npool < EASY_POOL)
            s->pool[s->npool++] = o->easy; /* reset when it is used again */
        else
            curl_easy_cleanup(o->easy);
    }
    curl_slist_free_all(o->hdrs);
    json_decref(o->allow);
    json_decref(o->headers);
    json_decref(o->rhdrs);
    eddy_free(o->body);
    eddy_free(o->url);
    eddy_buf_free(&o->resp);
    eddy_free(o);
}

static void span_finish(http_op *o, long status, const char *etype, const char *msg)
{
    char safe[600];
    if (!o->span)
        return;
    if (o->url)
        eddy_span_set_str(o->span, "url.full", eddy__http_safe_url(o->url, safe, sizeof(safe)));
    if (status > 0)
        eddy_span_set_int(o->span, "http.response.status_code", status);
    if (o->redirects)
        eddy_span_set_int(o->span, "http.request.resend_count", o->redirects);
    if (etype)
        eddy_span_error(o->span, etype, msg);
    eddy_span_end(o->span, NULL);
    o->span = NULL;
}

/* End O with an error: STATUS for the wait, ETYPE for the span. */
static void op_fail(http_op *o, int status, const char *etype, const char *msg)
{
    long http = 0;
    if (o->easy)
        curl_easy_getinfo(o->easy, CURLINFO_RESPONSE_CODE, &http);
    span_finish(o, http, etype, msg);
    if (o->w) /* it copies MSG at once: MSG may live in O */
        eddy_tool_wait_done(o->w, status, NULL, msg);
    o->w = NULL;
    op_free(o);
}

static int is_json_type(const char *ct)
{
    size_t n;
    if (!ct)
        return 0;
    n = strcspn(ct, ";");
    while (n && ct[n - 1] == ' ')
        n--;
    return (n == 16 && !strncasecmp(ct, "application/json", 16)) ||
           (n > 5 && !strncasecmp(ct + n - 5, "+json", 5));
}

static json_t *response_json(http_op *o, long status)
{
    json_t *r = json_object(), *parsed = NULL;
    const char *ct = json_string_value(json_object_get(o->rhdrs, "content-type"));
    if (!r)
        return NULL;
    if (is_json_type(ct) && o->resp.len)
        parsed = eddy_json_loadb(o->resp.data, o->resp.len, JSON_DECODE_ANY, NULL);
    json_object_set_new(r, "status", json_integer(status));
    if (o->tool_result) {
        if (parsed)
            json_object_set_new(r, "json", parsed);
        else if (eddy_utf8_invalid(o->resp.data ? o->resp.data : "", o->resp.len) == o->resp.len)
            json_object_set_new(r, "body",
                                json_stringn(o->resp.data ? o->resp.data : "", o->resp.len));
        else
            json_object_set_new(r, "body",
                                json_sprintf("[%zu bytes of binary data (%s)]", o->resp.len,
                                             ct ? ct : "no content type"));
        return r;
    }
    json_object_set(r, "headers", o->rhdrs);
    json_object_set_new(r, "body",
                        json_stringn_nocheck(o->resp.data ? o->resp.data : "", o->resp.len));
    if (parsed)
        json_object_set_new(r, "json", parsed);
    return r;
}

static int start_hop(http_op *o, eddy_err *err);
static int set_target(http_op *o, const char *url, eddy_err *err);

static int is_redirect(long status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* A 3xx with Location: check the next URL and go on, or fail. */
static void redirect(http_op *o, long status, const char *loc)
{
    char from[600], to[600], msg[EDDY_ERR_MSG_MAX];
    eddy_err e;
    eddy__http_safe_url(o->url, from, sizeof(from));
    eddy__http_safe_url(loc, to, sizeof(to));
    if (o->redirects >= o->max_redirects) {
        snprintf(msg, sizeof(msg), "%s %s: stopped after %d redirect(s) (max_redirects %d)",
                 o->method, from, o->redirects, o->max_redirects);
        op_fail(o, EDDY_EHTTP, "too_many_redirects", msg);
        return;
    }
    o->redirects++;
    if ((status == 303 && strcmp(o->method, "HEAD")) ||
        ((status == 301 || status == 302) && !strcmp(o->method, "POST"))) {
        o->method = "GET";
        o->has_body = 0;
    }
    if (set_target(o, loc, &e) || start_hop(o, &e)) {
        snprintf(msg, sizeof(msg), "%s redirected (%ld) to %s: %s", from, status, to, e.msg);
        op_fail(o, e.code == EDDY_ENOMEM ? EDDY_ENOMEM : EDDY_ETOOL,
                e.code == EDDY_ETOOL ? "refused" : "redirect", msg);
    }
}

static void hop_done(http_op *o, CURLcode cc)
{
    long status = 0;
    char safe[600], msg[EDDY_ERR_MSG_MAX];
    char *loc = NULL;
    json_t *r;
    o->in_multi = 0;
    curl_easy_getinfo(o->easy, CURLINFO_RESPONSE_CODE, &status);
    eddy__http_safe_url(o->url, safe, sizeof(safe));
    if (cc != CURLE_OK && o->refused[0]) { /* (a refused address with another that worked
                                            * is no failure) */
        op_fail(o, EDDY_ETOOL, "refused", o->refused);
    } else if (o->too_big == 1) {
        snprintf(msg, sizeof(msg), "%s %s: the response is larger than max_response (%lld bytes)",
                 o->method, safe, (long long)o->max_response);
        op_fail(o, EDDY_ERANGE, "response_too_large", msg);
    } else if (o->too_big) {
        snprintf(msg, sizeof(msg), "%s %s: %s", o->method, safe,
                 o->too_big == 2 ? "the response headers are larger than 64 KiB" : "out of memory");
        op_fail(o, o->too_big == 2 ? EDDY_ERANGE : EDDY_ENOMEM, "response_too_large", msg);
    } else if (cc == CURLE_OPERATION_TIMEDOUT) {
        snprintf(msg, sizeof(msg), "%s %s timed out after %lld ms", o->method, safe,
                 (long long)o->timeout_ms);
        op_fail(o, EDDY_ETIMEDOUT, "timeout", msg);
    } else if (cc != CURLE_OK) {
        snprintf(msg, sizeof(msg), "%s %s: %s", o->method, safe, curl_easy_strerror(cc));
        op_fail(o, EDDY_ENET, curl_easy_strerror(cc), msg);
    } else if (is_redirect(status) && o->max_redirects > 0 &&
               curl_easy_getinfo(o->easy, CURLINFO_REDIRECT_URL, &loc) == CURLE_OK && loc) {
        char *copy = eddy_strdup(loc);
        if (!copy) {
            op_fail(o, EDDY_ENOMEM, "redirect", "out of memory");
            return;
        }
        redirect(o, status, copy);
        eddy_free(copy);
    } else if (!(r = response_json(o, status))) {
        op_fail(o, EDDY_ENOMEM, "response", "out of memory");
    } else {
        char code[16];
        snprintf(code, sizeof(code), "%ld", status);
        span_finish(o, status, status >= 400 ? code : NULL, status >= 400 ? code : NULL);
        eddy_tool_wait_done(o->w, 0, r, NULL);
        o->w = NULL;
        op_free(o);
    }
}

static void check_done(eddy_http_state *s)
{
    CURLMsg *m;
    int left;
    while (s->multi && (m = curl_multi_info_read(s->multi, &left))) {
        http_op *o = NULL;
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode cc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&o);
        curl_multi_remove_handle(s->multi, m->easy_handle);
        hop_done(o, cc);
    }
}

/* Parse URL, check its scheme and host against the allow list, and make it
 * the op's next target. Errors: EDDY_EINVAL (not a URL we request),
 * EDDY_ETOOL (refused by the allow list), EDDY_ENOMEM. */
static int set_target(http_op *o, const char *url, eddy_err *err)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *user = NULL, *full = NULL, safe[600];
    CURLUcode uc;
    int rc = 0, ok;
    size_t hl;
    eddy__http_safe_url(url, safe, sizeof(safe));
    if (!u)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if ((uc = curl_url_set(u, CURLUPART_URL, url, 0))) {
        rc = eddy_err_set(err, EDDY_EINVAL, "'%s' is not a URL (%s)", safe, curl_url_strerror(uc));
        goto out;
    }
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    if (!scheme || (strcasecmp(scheme, "http") && strcasecmp(scheme, "https"))) {
        rc = eddy_err_set(err, EDDY_EINVAL, "'%s': only http:// and https:// URLs are requested",
                          safe);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK && user) {
        rc = eddy_err_set(err, EDDY_EINVAL,
                          "'%s': a URL with user:password@ is refused (send credentials in a "
                          "header)",
                          safe);
        goto out;
    }
    if (curl_url_get(u, CURLUPART_HOST, &host, 0) || !host || !*host ||
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) || !port ||
        curl_url_get(u, CURLUPART_URL, &full, 0)) {
        rc = eddy_err_set(err, EDDY_EINVAL, "'%s' has no host", safe);
        goto out;
    }
    hl = strlen(host);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [::1] */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    for (char *c = host; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    if (strlen(host) >= sizeof(o->host)) {
        rc = eddy_err_set(err, EDDY_EINVAL, "'%s': the host name is too long", safe);
        goto out;
    }
    if (!o->allow) {
        rc = eddy_err_set(err, EDDY_ETOOL,
                          "tool '%s' has no http.allow in the job; add http: {allow: [host:port]} "
                          "to its entry",
                          o->tool);
        goto out;
    }
    ok = eddy__http_host_allowed(o->allow, host, (int)strtol(port, NULL, 10));
    if (ok <= 0) {
        rc = ok == 0 ? eddy_err_set(err, EDDY_ETOOL, "host '%s' is not in %s", host, o->where)
                     : eddy_err_set(err, EDDY_ETOOL, "port %s of host '%s' is not in %s", port,
                                    host, o->where);
        goto out;
    }
    eddy_free(o->url);
    o->url = eddy_strdup(full);
    if (!o->url) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    snprintf(o->host, sizeof(o->host), "%s", host);
    snprintf(o->scheme, sizeof(o->scheme), "%s", scheme);
    for (char *c = o->scheme; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    o->port = strtol(port, NULL, 10);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(user);
    curl_free(full);
    curl_url_cleanup(u);
    return rc;
}

static int credential_header(const char *name)
{
    return !strcasecmp(name, "authorization") || !strcasecmp(name, "cookie") ||
           !strcasecmp(name, "proxy-authorization");
}

static int build_headers(http_op *o)
{
    int same_origin =
        !strcmp(o->host, o->host0) && o->port == o->port0 && !strcmp(o->scheme, o->scheme0);
    int have_ct = 0;
    const char *k;
    json_t *v;
    char *line;
    struct curl_slist *n;
    curl_slist_free_all(o->hdrs);
    o->hdrs = NULL;
    json_object_foreach(o->headers, k, v)
    {
        if (!same_origin && credential_header(k))
            continue;
        have_ct |= !strcasecmp(k, "content-type");
        if (!(line = eddy_aprintf("%s: %s", k, json_string_value(v))))
            return EDDY_ENOMEM;
        n = curl_slist_append(o->hdrs, line);
        eddy_free(line);
        if (!n)
            return EDDY_ENOMEM;
        o->hdrs = n;
    }
    if (o->has_body && !have_ct) { /* JSON, or none (not curl's form encoding) */
        if (!(n = curl_slist_append(o->hdrs, o->json_body ? "Content-Type: application/json"
                                                          : "Content-Type:")))
            return EDDY_ENOMEM;
        o->hdrs = n;
    }
    if (o->has_body) { /* no 100-continue round trip */
        if (!(n = curl_slist_append(o->hdrs, "Expect:")))
            return EDDY_ENOMEM;
        o->hdrs = n;
    }
    return 0;
}

/* Set the easy handle up for the op's current target and add it to the multi. */
static int start_hop(http_op *o, eddy_err *err)
{
    CURL *e = o->easy;
    uint64_t now = eddy_now_ms();
    long left = o->deadline_ms > now ? (long)(o->deadline_ms - now) : 1;
    CURLMcode mc;
    curl_easy_reset(e);
    o->refused[0] = '\0';
    o->too_big = 0;
    o->rh_bytes = 0;
    eddy_buf_reset(&o->resp);
    json_object_clear(o->rhdrs);
    if (build_headers(o))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_PROXY, "");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, left);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, left);
    curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(e, CURLOPT_USERAGENT, "eddy/0.1");
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, o->hdrs);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, o);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, o);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, open_sock);
    curl_easy_setopt(e, CURLOPT_OPENSOCKETDATA, o);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, close_sock_cb);
    curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, o->s);
    curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, prereq_cb);
    curl_easy_setopt(e, CURLOPT_PREREQDATA, o);
    curl_easy_setopt(e, CURLOPT_PRIVATE, o);
    if (!strcmp(o->method, "HEAD")) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
    } else if (o->has_body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, o->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        if (strcmp(o->method, "POST"))
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    } else if (strcmp(o->method, "GET")) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, o->method);
    }
    if ((mc = curl_multi_add_handle(o->s->multi, e)) != CURLM_OK)
        return eddy_err_set(err, EDDY_ENOMEM, "cannot start the request: %s",
                            curl_multi_strerror(mc));
    o->in_multi = 1;
    return 0;
}

/* The call was abandoned (its wall-clock budget, shutdown): stop now. */
static void op_cancel(void *ud)
{
    http_op *o = ud;
    op_fail(o, EDDY_ECANCELED, "canceled", "canceled");
}

static int check_spec(const eddy_http_spec *sp, eddy_err *err)
{
    const char *k;
    json_t *v;
    if (!eddy__http_method(sp->method))
        return eddy_err_set(err, EDDY_EINVAL,
                            "method '%.32s' is not one of GET, HEAD, POST, PUT, PATCH, DELETE, "
                            "OPTIONS",
                            sp->method ? sp->method : "");
    if (!sp->url)
        return eddy_err_set(err, EDDY_EINVAL, "no url");
    if (sp->body && (!strcasecmp(sp->method, "GET") || !strcasecmp(sp->method, "HEAD")))
        return eddy_err_set(err, EDDY_EINVAL, "a %s request has no body", sp->method);
    if (sp->headers && !json_is_object(sp->headers))
        return eddy_err_set(err, EDDY_EINVAL, "headers must be a table of name = value");
    json_object_foreach(sp->headers, k, v)
    {
        int rc;
        if (!json_is_string(v))
            return eddy_err_set(err, EDDY_EINVAL, "header '%.64s' must be a string, not %s", k,
                                eddy_json_type_name(v));
        if ((rc = eddy__http_check_header(k, json_string_value(v), json_string_length(v), err)))
            return rc;
    }
    return 0;
}

int eddy__http_start(eddy_http_state *s, const eddy_http_policy *p, const eddy_http_spec *sp,
                     eddy_tool_wait *w, eddy_err *err)
{
    http_op *o;
    eddy_span *parent = w ? eddy_tool_wait_span(w) : NULL;
    char name[300];
    int rc;
    if (s->closing)
        return eddy_err_set(err, EDDY_ECLOSING, "eddy is shutting down");
    if ((rc = check_spec(sp, err)))
        return rc;
    if (!(o = eddy_calloc(1, sizeof(*o))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    o->s = s;
    eddy_buf_init(&o->resp);
    snprintf(o->tool, sizeof(o->tool), "%s", p->tool ? p->tool : "?");
    snprintf(o->where, sizeof(o->where), "%s", p->where ? p->where : "the allow list");
    o->allow = json_incref(p->allow);
    o->headers = json_incref(sp->headers);
    o->method = eddy__http_method(sp->method);
    o->max_redirects = p->max_redirects;
    o->max_response = p->max_response > 0 ? p->max_response : EDDY_HTTP_DEFAULT_MAX_RESPONSE;
    o->timeout_ms = p->timeout_ms > 0 ? p->timeout_ms : EDDY_HTTP_DEFAULT_TIMEOUT_MS;
    if (sp->timeout_ms > 0 && sp->timeout_ms < o->timeout_ms)
        o->timeout_ms = sp->timeout_ms;
    o->deadline_ms = eddy_now_ms() + (uint64_t)o->timeout_ms;
    o->tool_result = sp->tool_result;
    o->json_body = sp->json_body;
    o->has_body = sp->body != NULL;
    o->easy = s->npool ? s->pool[--s->npool] : curl_easy_init();
    if (!(o->rhdrs = json_object()) || !o->easy ||
        (sp->body && !(o->body = eddy_malloc(sp->body_len + 1)))) {
        op_free(o);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if (sp->body) {
        memcpy(o->body, sp->body, sp->body_len);
        o->body[sp->body_len] = '\0';
        o->body_len = sp->body_len;
    }
    if ((rc = set_target(o, sp->url, err))) {
        if (parent && (o->span = eddy_span_start(eddy_span_store(parent), parent, o->method,
                                                 EDDY_SPAN_CLIENT))) {
            eddy_span_set_str(o->span, "http.request.method", o->method);
            eddy_span_set_str(o->span, "url.full",
                              eddy__http_safe_url(sp->url, name, sizeof(name)));
            eddy_span_error(o->span, rc == EDDY_ETOOL ? "refused" : "invalid_url", err->msg);
            eddy_span_end(o->span, NULL);
            o->span = NULL;
        }
        op_free(o);
        return rc;
    }
    snprintf(o->host0, sizeof(o->host0), "%s", o->host);
    snprintf(o->scheme0, sizeof(o->scheme0), "%s", o->scheme);
    o->port0 = o->port;
    if (parent) {
        snprintf(name, sizeof(name), "%s %s", o->method, o->host);
        if ((o->span = eddy_span_start(eddy_span_store(parent), parent, name, EDDY_SPAN_CLIENT))) {
            eddy_span_set_str(o->span, "http.request.method", o->method);
            eddy_span_set_str(o->span, "server.address", o->host);
            eddy_span_set_int(o->span, "server.port", o->port);
        }
    }
    if ((rc = start_hop(o, err))) {
        span_finish(o, 0, "start", err->msg);
        op_free(o);
        return rc;
    }
    o->w = w;
    o->next = s->ops;
    if (s->ops)
        s->ops->prev = o;
    s->ops = o;
    if (w)
        eddy_tool_wait_on_cancel(w, op_cancel, o);
    return 0;
}

/* -- eddy.http.request / get / post ------------------------------------------------------- */

/* The policy of the tool W's call belongs to. WHERE: storage for its name. */
static void tool_policy(eddy_tool_wait *w, eddy_http_policy *p, char *where, size_t n)
{
    const eddy_tool *t = eddy_tool_wait_tool(w);
    json_t *http = eddy_tool_http(t);
    memset(p, 0, sizeof(*p));
    p->tool = eddy_tool_name(t);
    snprintf(where, n, "tool '%s''s http.allow", p->tool);
    p->where = where;
    p->allow = http ? json_object_get(http, "allow") : NULL;
    p->max_redirects = (int)json_integer_value(json_object_get(http, "max_redirects"));
    if (!json_object_get(http, "max_redirects"))
        p->max_redirects = EDDY_HTTP_DEFAULT_REDIRECTS;
    p->max_response = json_integer_value(json_object_get(http, "max_response"));
    p->timeout_ms = json_integer_value(json_object_get(http, "timeout_ms"));
}

/* Fill SP from the request table OPT (the fields other than the url and the
 * method); BODY holds an encoded json field (freed by the caller). */
static int spec_from(json_t *opt, eddy_http_spec *sp, char **body, eddy_err *err)
{
    static const char *const kKeys[] = {"method", "url",     "headers", "body",
                                        "json",   "timeout", NULL};
    const char *k;
    json_t *v, *t;
    json_object_foreach(opt, k, v)
    {
        int i;
        for (i = 0; kKeys[i] && strcmp(kKeys[i], k); i++)
            ;
        if (!kKeys[i])
            return eddy_err_set(err, EDDY_EINVAL,
                                "unknown field '%.64s' (known: method, url, headers, body, json, "
                                "timeout)",
                                k);
    }
    if ((v = json_object_get(opt, "method")) && !json_is_string(v))
        return eddy_err_set(err, EDDY_EINVAL, "method must be a string");
    if (v)
        sp->method = json_string_value(v);
    if ((v = json_object_get(opt, "url")) && !json_is_string(v))
        return eddy_err_set(err, EDDY_EINVAL, "url must be a string");
    if (v)
        sp->url = json_string_value(v);
    if ((v = json_object_get(opt, "headers")) && !json_is_null(v)) {
        if (json_is_array(v) && json_array_size(v) == 0)
            v = NULL; /* an empty Lua table */
        sp->headers = v;
    }
    if ((v = json_object_get(opt, "body")) && (t = json_object_get(opt, "json")))
        return eddy_err_set(err, EDDY_EINVAL, "give body or json, not both");
    if (v && !json_is_string(v))
        return eddy_err_set(err, EDDY_EINVAL, "body must be a string (or give json = a table)");
    if (v) {
        sp->body = json_string_value(v);
        sp->body_len = json_string_length(v);
    }
    if ((t = json_object_get(opt, "json"))) {
        if (!(*body = eddy_json_dumps_flags(t, JSON_COMPACT | JSON_ENCODE_ANY)))
            return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        sp->body = *body;
        sp->body_len = strlen(*body);
        sp->json_body = 1;
    }
    if ((v = json_object_get(opt, "timeout"))) {
        int64_t ms = 0;
        if (json_is_number(v))
            ms = (int64_t)json_number_value(v);
        else if (json_is_string(v) && eddy_parse_duration_ms(json_string_value(v), &ms))
            ms = 0;
        if (ms <= 0)
            return eddy_err_set(err, EDDY_EINVAL,
                                "timeout must be a positive number of milliseconds (or \"5s\")");
        sp->timeout_ms = ms;
    }
    return 0;
}

static int lua_request(eddy_http_state *s, json_t *args, int how, eddy_tool_wait *w, eddy_err *err)
{
    static const char *const kUsage[] = {"takes one table {method, url, headers, body|json, "
                                         "timeout}",
                                         "takes (url [, options])",
                                         "takes (url, body or table [, options])"};
    eddy_http_spec sp;
    eddy_http_policy p;
    char where[200], *body = NULL;
    json_t *opt = json_array_get(args, (size_t)how);
    size_t n = json_array_size(args);
    int rc;
    memset(&sp, 0, sizeof(sp));
    sp.method = how == 2 ? "POST" : "GET";
    if (how == 0
            ? (n != 1 || !json_is_object(json_array_get(args, 0)))
            : (n < (size_t)how || n > (size_t)how + 1 || !json_is_string(json_array_get(args, 0))))
        return eddy_err_set(err, EDDY_EINVAL, "%s", kUsage[how]);
    if (opt && json_is_array(opt) && json_array_size(opt) == 0)
        opt = NULL; /* {} */
    if (opt && !json_is_null(opt) && !json_is_object(opt))
        return eddy_err_set(err, EDDY_EINVAL, "%s: the options must be a table", kUsage[how]);
    if (how && opt && (json_object_get(opt, "url") || json_object_get(opt, "method")))
        return eddy_err_set(err, EDDY_EINVAL, "the options of get/post take no url or method");
    if (opt && (rc = spec_from(opt, &sp, &body, err)))
        goto out;
    if (how)
        sp.url = json_string_value(json_array_get(args, 0));
    if (how == 2) {
        json_t *b = json_array_get(args, 1);
        if (sp.body) {
            rc = eddy_err_set(err, EDDY_EINVAL, "post takes its body as the second argument");
            goto out;
        }
        if (json_is_string(b)) {
            sp.body = json_string_value(b);
            sp.body_len = json_string_length(b);
        } else {
            if (!(body = eddy_json_dumps_flags(b, JSON_COMPACT | JSON_ENCODE_ANY))) {
                rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
                goto out;
            }
            sp.body = body;
            sp.body_len = strlen(body);
            sp.json_body = 1;
        }
    }
    tool_policy(w, &p, where, sizeof(where));
    rc = eddy__http_start(s, &p, &sp, w, err);
out:
    eddy_free(body);
    return rc;
}

static int l_request(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    (void)data;
    return lua_request(state, args, 0, w, err);
}

static int l_get(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    (void)data;
    return lua_request(state, args, 1, w, err);
}

static int l_post(void *state, void *data, json_t *args, eddy_tool_wait *w, eddy_err *err)
{
    (void)data;
    return lua_request(state, args, 2, w, err);
}

/* -- the module --------------------------------------------------------------------------- */

static int mod_open(uv_loop_t *loop, const json_t *cfg, void **state, eddy_err *err)
{
    eddy_http_state *s = eddy_calloc(1, sizeof(*s));
    (void)cfg;
    if (!s || !(s->multi = curl_multi_init())) {
        eddy_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "cannot start eddy.http");
    }
    s->loop = loop;
    if (uv_timer_init(loop, &s->timer)) {
        curl_multi_cleanup(s->multi);
        eddy_free(s);
        return eddy_err_set(err, EDDY_EUV, "cannot start eddy.http's timer");
    }
    s->timer.data = s;
    s->open_handles = 1;
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(s->multi, CURLMOPT_SOCKETDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(s->multi, CURLMOPT_TIMERDATA, s);
    curl_multi_setopt(s->multi, CURLMOPT_MAXCONNECTS, 4096L);
    curl_multi_setopt(s->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, 0L);
    curl_multi_setopt(s->multi, CURLMOPT_MAX_HOST_CONNECTIONS, 0L);
    *state = s;
    return 0;
}

static void state_handle_closed(uv_handle_t *h)
{
    eddy_http_state *s = h->data;
    s->open_handles--;
    maybe_free_state(s);
}

static void mod_close(void *state)
{
    eddy_http_state *s = state;
    s->closing = 1;
    while (s->ops) /* each answered: the call ends with EDDY_ECANCELED */
        op_fail(s->ops, EDDY_ECANCELED, "canceled", "eddy is shutting down");
    while (s->npool)
        curl_easy_cleanup(s->pool[--s->npool]);
    curl_multi_cleanup(s->multi); /* closes its sockets: close_sock_cb */
    s->multi = NULL;
    for (size_t i = 0; i < s->nsocks; i++)
        if (s->socks[i]) {
            s->socks[i]->closing = 1;
            uv_close((uv_handle_t *)&s->socks[i]->poll, sock_closed);
            s->socks[i] = NULL;
        }
    uv_close((uv_handle_t *)&s->timer, state_handle_closed);
}

static const eddy_native_reg http_fns[] = {
    {"request", l_request}, {"get", l_get}, {"post", l_post}, {NULL, NULL}};

static const eddy_tools_module http_module = {"http",   mod_open,       mod_close,
                                              http_fns, "http_request", eddy__http_tool_new};

const eddy_tools_module *eddy__http_module(void)
{
    return &http_module;
}
