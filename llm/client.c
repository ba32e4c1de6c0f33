/*
 * llm/client.c - chat requests over libcurl's multi-socket API on libuv.
 *
 * One CURLM per client, one client per loop. curl tells us which sockets to
 * watch (sock_cb -> uv_poll_t) and when to wake (timer_cb -> uv_timer_t);
 * libuv tells curl what happened (curl_multi_socket_action). Finished
 * transfers are collected in check_done.
 *
 * A request moves QUEUED (waiting for a concurrency slot of its model) ->
 * RUNNING -> BACKOFF (waiting to retry) -> RUNNING ... -> DONE. It holds its
 * slot from its first send to its end, so `concurrency` bounds the requests
 * a model has open, retries included. Each request owns a uv_timer_t (for
 * backoff and deferred completion); it is freed from that timer's close
 * callback, never inside its own callback.
 */
#include "eddy/llm.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"

#include <curl/curl.h>
#include <string.h>

#define MAX_RESPONSE (64u << 20)

enum req_state { QUEUED, RUNNING, BACKOFF, DONE };

typedef struct limiter {
    const eddy_llm_model *model;
    int active;
    eddy_llm_req *head, *tail; /* waiting requests */
    struct limiter *next;
} limiter;

struct eddy_llm_req {
    eddy_llm_client *client;
    const eddy_llm_model *model;
    limiter *lim;
    CURL *easy;
    struct curl_slist *headers;
    char *url, *body;
    eddy_buf resp;
    char retry_after[64], retry_after_ms[64];
    enum req_state state;
    int canceled;
    uint64_t start_ms;
    uv_timer_t timer;
    eddy_llm_cb cb;
    void *ud;
    eddy_llm_result res;
    eddy_llm_req *qnext;       /* in the limiter's queue */
    eddy_llm_req *prev, *next; /* in the client's list */
};

typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    eddy_llm_client *client;
} sock_ctx;

struct eddy_llm_client {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;
    limiter *limiters;
    eddy_llm_req *reqs;
    long in_flight;
    int closing;
};

static void check_done(eddy_llm_client *c);
static void start_attempt(eddy_llm_req *r);

/* -- curl <-> libuv --------------------------------------------------------- */

static void poll_cb(uv_poll_t *h, int status, int events)
{
    sock_ctx *s = h->data;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(s->client->multi, s->fd, flags, &running);
    check_done(s->client);
}

static void sock_closed(uv_handle_t *h)
{
    eddy_free(h->data);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    eddy_llm_client *c = userp;
    sock_ctx *s = socketp;
    int events = 0;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            uv_poll_stop(&s->poll);
            curl_multi_assign(c->multi, fd, NULL);
            uv_close((uv_handle_t *)&s->poll, sock_closed);
        }
        return 0;
    }
    if (!s) {
        s = eddy_calloc(1, sizeof(*s));
        if (!s || uv_poll_init_socket(c->loop, &s->poll, fd)) {
            eddy_free(s);
            return -1;
        }
        s->fd = fd;
        s->client = c;
        s->poll.data = s;
        curl_multi_assign(c->multi, fd, s);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, poll_cb);
    return 0;
}

static void on_curl_timer(uv_timer_t *t)
{
    eddy_llm_client *c = t->data;
    int running;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(c);
}

static int timer_cb(CURLM *m, long timeout_ms, void *userp)
{
    eddy_llm_client *c = userp;
    (void)m;
    if (timeout_ms < 0)
        uv_timer_stop(&c->timer);
    else
        uv_timer_start(&c->timer, on_curl_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* -- requests ------------------------------------------------------------- */

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    eddy_llm_req *r = ud;
    if (r->resp.len + size * n > MAX_RESPONSE || eddy_buf_append(&r->resp, p, size * n))
        return 0;
    return size * n;
}

static void header_value(const char *line, size_t n, const char *name, char *out, size_t outn)
{
    size_t ln = strlen(name), v;
    if (n <= ln + 1 || strncasecmp(line, name, ln) || line[ln] != ':')
        return;
    for (v = ln + 1; v < n && (line[v] == ' ' || line[v] == '\t'); v++)
        ;
    while (n > v && (line[n - 1] == '\r' || line[n - 1] == '\n' || line[n - 1] == ' '))
        n--;
    if (n - v < outn) {
        memcpy(out, line + v, n - v);
        out[n - v] = '\0';
    }
}

static size_t header_cb(char *p, size_t size, size_t n, void *ud)
{
    eddy_llm_req *r = ud;
    header_value(p, size * n, "retry-after", r->retry_after, sizeof(r->retry_after));
    header_value(p, size * n, "retry-after-ms", r->retry_after_ms, sizeof(r->retry_after_ms));
    return size * n;
}

static void req_closed(uv_handle_t *h)
{
    eddy_llm_req *r = h->data;
    eddy_free(r);
}

static void finish(eddy_llm_req *r)
{
    eddy_llm_client *c = r->client;
    limiter *l = r->lim;
    r->state = DONE;
    r->res.latency_ms = eddy_now_ms() - r->start_ms;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    c->in_flight--;
    l->active--;
    if (r->cb)
        r->cb(&r->res, r->ud);
    eddy_llm_response_clear(&r->res.resp);
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    eddy_free(r->url);
    eddy_free(r->body);
    eddy_buf_free(&r->resp);
    uv_close((uv_handle_t *)&r->timer, req_closed);
    /* a slot is free: start the next waiting request of this model */
    while (!c->closing && l->head &&
           l->active < (l->model->concurrency > 0 ? l->model->concurrency : 64)) {
        eddy_llm_req *n = l->head;
        l->head = n->qnext;
        if (!l->head)
            l->tail = NULL;
        l->active++;
        start_attempt(n);
    }
}

static void on_req_timer(uv_timer_t *t)
{
    eddy_llm_req *r = t->data;
    if (r->canceled || r->client->closing) {
        if (!r->res.status)
            r->res.status = eddy_err_set(&r->res.err, EDDY_ECANCELED, "request canceled");
        finish(r);
        return;
    }
    start_attempt(r);
}

static void start_attempt(eddy_llm_req *r)
{
    CURLMcode mc;
    r->state = RUNNING;
    r->res.attempts++;
    eddy_buf_reset(&r->resp);
    r->retry_after[0] = r->retry_after_ms[0] = '\0';
    mc = curl_multi_add_handle(r->client->multi, r->easy);
    if (mc != CURLM_OK) {
        r->res.status = eddy_err_setc(&r->res.err, EDDY_ELLM, mc, "cannot start request: %s",
                                      curl_multi_strerror(mc));
        uv_timer_start(&r->timer, on_req_timer, 0, 0);
        r->canceled = 1;
    }
}

static const char *body_error_code(eddy_llm_req *r, char *buf, size_t n)
{
    json_t *root = json_loadb(r->resp.data ? r->resp.data : "", r->resp.len, 0, NULL);
    json_t *code = json_object_get(json_object_get(root, "error"), "code");
    const char *ret = NULL;
    if (json_is_string(code)) {
        snprintf(buf, n, "%s", json_string_value(code));
        ret = buf;
    }
    json_decref(root);
    return ret;
}

static void attempt_done(eddy_llm_req *r, CURLcode cc)
{
    long http = 0;
    int transport = cc != CURLE_OK, parsed = 0;
    char code[64];
    const char *ecode = NULL;
    int64_t delay;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
    r->res.http_status = http;
    eddy_llm_response_clear(&r->res.resp);
    if (!transport && http >= 200 && http < 300) {
        if (eddy_llm_parse_openai(r->resp.data ? r->resp.data : "", r->resp.len, &r->res.resp,
                                  &r->res.err) == 0) {
            r->res.status = 0;
            finish(r);
            return;
        }
        parsed = 1; /* a broken 2xx body: worth another attempt */
    }
    if (transport && cc == CURLE_OPERATION_TIMEDOUT)
        eddy_err_setc(&r->res.err, EDDY_ETIMEDOUT, cc, "%s: timed out after %lld ms", r->url,
                      (long long)r->model->timeout_ms);
    else if (transport)
        eddy_err_setc(&r->res.err, EDDY_ENET, cc, "%s: %s", r->url, curl_easy_strerror(cc));
    else if (!parsed) {
        ecode = body_error_code(r, code, sizeof(code));
        eddy_err_setc(&r->res.err, EDDY_EHTTP, http, "%s: HTTP %ld%s%s", r->url, http,
                      ecode ? " " : "", ecode ? ecode : "");
    }
    r->res.status = r->res.err.code;
    delay = eddy_llm_retry_delay(r->model, r->res.attempts, parsed ? 500 : http, transport,
                                 r->retry_after_ms, r->retry_after, ecode, eddy_random_unit());
    if (delay < 0 || r->canceled) {
        finish(r);
        return;
    }
    EDDY_DEBUG("llm", "attempt %d to %s failed (%s); retrying in %lld ms", r->res.attempts,
               r->model->name, r->res.err.msg, (long long)delay);
    r->state = BACKOFF;
    uv_timer_start(&r->timer, on_req_timer, (uint64_t)delay, 0);
}

static void check_done(eddy_llm_client *c)
{
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left))) {
        eddy_llm_req *r;
        if (m->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(c->multi, m->easy_handle);
        attempt_done(r, m->data.result);
    }
}

static limiter *limiter_for(eddy_llm_client *c, const eddy_llm_model *m)
{
    limiter *l;
    for (l = c->limiters; l; l = l->next)
        if (l->model == m)
            return l;
    l = eddy_calloc(1, sizeof(*l));
    if (!l)
        return NULL;
    l->model = m;
    l->next = c->limiters;
    c->limiters = l;
    return l;
}

static int setup_easy(eddy_llm_req *r, eddy_err *err)
{
    const eddy_llm_model *m = r->model;
    size_t n = strlen(m->base_url);
    char *auth = NULL;
    while (n > 0 && m->base_url[n - 1] == '/')
        n--;
    r->url = eddy_aprintf("%.*s/chat/completions", (int)n, m->base_url);
    r->easy = curl_easy_init();
    if (!r->url || !r->easy)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    r->headers = curl_slist_append(NULL, "Content-Type: application/json");
    r->headers = curl_slist_append(r->headers, "Expect:");
    if (m->api_key && *m->api_key) {
        auth = eddy_aprintf("Authorization: Bearer %s", m->api_key);
        r->headers = curl_slist_append(r->headers, auth);
        if (auth)
            memset(auth, 0, strlen(auth)); /* the key does not linger in freed memory */
        eddy_free(auth);
    }
    curl_easy_setopt(r->easy, CURLOPT_URL, r->url);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(r->body));
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)m->timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(m->timeout_ms < 10000 ? m->timeout_ms : 10000));
    curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "eddy/0.1");
    curl_easy_setopt(r->easy, CURLOPT_ACCEPT_ENCODING, "");
    return 0;
}

int eddy_llm_chat(eddy_llm_client *c, const eddy_llm_model *m, json_t *messages, json_t *tools,
                  eddy_llm_cb cb, void *ud, eddy_llm_req **out, eddy_err *err)
{
    eddy_llm_req *r;
    json_t *body;
    int rc;
    if (out)
        *out = NULL;
    if (c->closing)
        return eddy_err_set(err, EDDY_ECLOSING, "LLM client is closing");
    r = eddy_calloc(1, sizeof(*r));
    if (!r)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    r->client = c;
    r->model = m;
    r->cb = cb;
    r->ud = ud;
    eddy_buf_init(&r->resp);
    body = eddy_llm_build_openai(m, messages, tools);
    r->body = body ? eddy_json_dumps_flags(body, JSON_COMPACT) : NULL;
    json_decref(body);
    r->lim = limiter_for(c, m);
    if (!r->body || !r->lim) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = setup_easy(r, err)))
        goto fail;
    if (uv_timer_init(c->loop, &r->timer)) {
        rc = eddy_err_set(err, EDDY_EUV, "cannot create a timer");
        goto fail;
    }
    r->timer.data = r;
    r->start_ms = eddy_now_ms();
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    c->in_flight++;
    if (r->lim->active < (m->concurrency > 0 ? m->concurrency : 64)) {
        r->lim->active++;
        start_attempt(r);
    } else {
        r->state = QUEUED;
        if (r->lim->tail)
            r->lim->tail->qnext = r;
        else
            r->lim->head = r;
        r->lim->tail = r;
    }
    if (out)
        *out = r;
    return 0;
fail:
    if (r->easy)
        curl_easy_cleanup(r->easy);
    curl_slist_free_all(r->headers);
    eddy_free(r->url);
    eddy_free(r->body);
    eddy_free(r);
    return rc;
}

static void unqueue(eddy_llm_req *r)
{
    limiter *l = r->lim;
    eddy_llm_req **pp = &l->head, *prev = NULL;
    while (*pp && *pp != r) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    if (*pp) {
        *pp = r->qnext;
        if (l->tail == r)
            l->tail = prev;
        l->active++; /* finish() releases it */
    }
}

void eddy_llm_cancel(eddy_llm_req *r)
{
    if (!r || r->state == DONE || r->canceled)
        return;
    r->canceled = 1;
    r->res.status = eddy_err_set(&r->res.err, EDDY_ECANCELED, "request canceled");
    if (r->state == RUNNING)
        curl_multi_remove_handle(r->client->multi, r->easy);
    else if (r->state == QUEUED)
        unqueue(r);
    r->state = BACKOFF;
    uv_timer_start(&r->timer, on_req_timer, 0, 0);
}

long eddy_llm_client_in_flight(const eddy_llm_client *c)
{
    return c->in_flight;
}

int eddy_llm_client_new(uv_loop_t *loop, eddy_llm_client **out, eddy_err *err)
{
    eddy_llm_client *c = eddy_calloc(1, sizeof(*c));
    *out = NULL;
    if (!c || !(c->multi = curl_multi_init())) {
        eddy_free(c);
        return eddy_err_set(err, EDDY_ENOMEM, "cannot create the LLM client");
    }
    c->loop = loop;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 1024L);
    *out = c;
    return 0;
}

static void client_closed(uv_handle_t *h)
{
    eddy_llm_client *c = h->data;
    while (c->limiters) {
        limiter *l = c->limiters;
        c->limiters = l->next;
        eddy_free(l);
    }
    eddy_free(c);
}

void eddy_llm_client_close(eddy_llm_client *c)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    while (c->reqs) {
        eddy_llm_req *r = c->reqs;
        if (r->state == RUNNING)
            curl_multi_remove_handle(c->multi, r->easy);
        r->res.status = eddy_err_set(&r->res.err, EDDY_ECANCELED, "request canceled");
        uv_timer_stop(&r->timer);
        finish(r);
    }
    curl_multi_cleanup(c->multi);
    uv_close((uv_handle_t *)&c->timer, client_closed);
}
