/*
 * llm/client.c - chat requests over libcurl's multi-socket API on libuv.
 *
 * One CURLM per client, one client per loop. curl tells us which sockets to
 * watch (sock_cb -> uv_poll_t) and when to wake (timer_cb -> uv_timer_t);
 * libuv tells curl what happened (curl_multi_socket_action). Finished
 * transfers are collected in check_done.
 *
 * A request moves QUEUED (waiting in its limiter's FIFO) -> RUNNING ->
 * BACKOFF (waiting to retry) -> QUEUED/RUNNING ... -> DONE. Limiters are
 * shared by the models of the client that name the same endpoint, model and
 * key: `concurrency` slots, a requests-per-minute and a tokens-per-minute
 * bucket (a second's worth of burst; tokens charged up front with an
 * estimate and corrected from usage), resynchronized from rate-limit
 * headers. A 429 pauses the whole limiter until its retry time; the request
 * goes back to the head of the queue. Only the head of a queue waits on the
 * limiter's one timer: nothing spins, nothing has a timer per waiter.
 *
 * Streaming answers are fed to the provider's stream as they arrive; the
 * request's timer watches the first chunk and the gaps between chunks. The
 * run sees nothing until the whole answer is assembled, so a stream cut off
 * mid-way is retried like any failed attempt.
 *
 * When a model's attempts are spent, or it timed out or answered 5xx /
 * overloaded, the request moves to the next model of `fallback` (its body
 * rebuilt by that model's provider). Each request owns a uv_timer_t; it is
 * freed from that timer's close callback, never inside its own callback.
 */
#include "eddy/llm.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"

#include <curl/curl.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#define MAX_RESPONSE (64u << 20)
#define MAX_ERROR_BODY (64u << 10)

enum req_state { QUEUED, RUNNING, BACKOFF, DONE };

typedef struct limiter {
    char *key; /* base_url \n model \n hash of the api key */
    char *url; /* the endpoint (the models sharing a limiter share it) */
    eddy_llm_client *client;
    int concurrency, active;
    double rpm, tpm;
    double req_level, tok_level; /* tokens in the buckets (may go below 0: debt) */
    uint64_t refilled_ms;
    uint64_t paused_until_ms; /* a 429 or an exhausted header: nobody goes before */
    eddy_llm_req *head, *tail; /* waiting requests, FIFO */
    uv_timer_t timer;          /* wakes the head */
    struct limiter *next;
} limiter;

struct eddy_llm_req {
    eddy_llm_client *client;
    const eddy_llm_model *first; /* as asked */
    const eddy_llm_model *model; /* being tried */
    const eddy_llm_request *rq;
    size_t chain; /* index in first's fallback chain: 0 = first itself */
    int model_attempts;
    limiter *lim;
    CURL *easy;
    struct curl_slist *headers;
    char *url, *body;
    size_t body_len;
    long charged_tokens; /* estimate taken from the token bucket */
    eddy_buf resp;       /* a plain answer, or the start of an error body */
    eddy_llm_stream *stream;
    int streaming, stream_failed;
    eddy_err stream_err;
    char retry_after[64], retry_after_ms[64];
    char rl_req_remaining[32], rl_tok_remaining[32], rl_req_reset[64], rl_tok_reset[64];
    enum req_state state;
    int canceled, holds_slot;
    uint64_t start_ms, attempt_ms, queued_at_ms, unavailable_since_ms;
    uv_timer_t timer;
    int timer_kind; /* what the timer is doing: T_RETRY, T_STREAM */
    eddy_llm_cb cb;
    void *ud;
    eddy_llm_result res;
    eddy_llm_req *qnext;       /* in the limiter's queue */
    eddy_llm_req *prev, *next; /* in the client's list */
};

enum { T_NONE, T_RETRY, T_STREAM };

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
    struct model_lim {
        const eddy_llm_model *m;
        limiter *l;
    } *by_model; /* a model's limiter, found once */
    size_t nby_model;
    eddy_llm_req *reqs;
    long in_flight;
    int closing, open_limiter_timers;
    int dispatching;   /* inside check_done: curl's multi must stay */
    int close_pending; /* closed from a callback inside check_done */
};

static void check_done(eddy_llm_client *c);
static void start_attempt(eddy_llm_req *r);
static void admit(limiter *l);
static void finish(eddy_llm_req *r);
static void attempt_done(eddy_llm_req *r, CURLcode cc);

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

/* -- limiters -------------------------------------------------------------------- */

static char *limiter_key(const eddy_llm_model *m)
{
    uint64_t h = m->api_key ? eddy_hash64(m->api_key, strlen(m->api_key)) : 0;
    return eddy_aprintf("%s\n%s\n%s\n%016llx", m->provider ? m->provider : "",
                        m->base_url ? m->base_url : "", m->model ? m->model : "",
                        (unsigned long long)h);
}

static limiter *limiter_lookup(eddy_llm_client *c, const eddy_llm_model *m);

static limiter *limiter_for(eddy_llm_client *c, const eddy_llm_model *m)
{
    for (size_t i = 0; i < c->nby_model; i++)
        if (c->by_model[i].m == m)
            return c->by_model[i].l;
    limiter *l = limiter_lookup(c, m);
    struct model_lim *g =
        l ? eddy_realloc(c->by_model, (c->nby_model + 1) * sizeof(*g)) : NULL;
    if (g) {
        c->by_model = g;
        g[c->nby_model].m = m;
        g[c->nby_model++].l = l;
    }
    return l;
}

static limiter *limiter_lookup(eddy_llm_client *c, const eddy_llm_model *m)
{
    char *key = limiter_key(m);
    limiter *l;
    if (!key)
        return NULL;
    for (l = c->limiters; l; l = l->next)
        if (!strcmp(l->key, key)) {
            eddy_free(key);
            /* models sharing an endpoint: the strictest settings hold */
            if (m->concurrency > 0 && m->concurrency < l->concurrency)
                l->concurrency = m->concurrency;
            if (m->requests_per_minute > 0 && (!l->rpm || m->requests_per_minute < l->rpm))
                l->rpm = m->requests_per_minute;
            if (m->tokens_per_minute > 0 && (!l->tpm || m->tokens_per_minute < l->tpm))
                l->tpm = m->tokens_per_minute;
            return l;
        }
    const eddy_llm_provider *prov = m->prov ? m->prov : eddy_llm_provider_find(m->provider);
    char *url = prov ? prov->url(m) : NULL;
    l = url ? eddy_calloc(1, sizeof(*l)) : NULL;
    if (!l || uv_timer_init(c->loop, &l->timer)) {
        eddy_free(l);
        eddy_free(url);
        eddy_free(key);
        return NULL;
    }
    l->url = url;
    l->key = key;
    l->client = c;
    l->timer.data = l;
    l->concurrency = m->concurrency > 0 ? m->concurrency : 64;
    l->rpm = m->requests_per_minute;
    l->tpm = m->tokens_per_minute;
    l->refilled_ms = eddy_now_ms();
    l->req_level = l->rpm > 0 ? fmax(1, l->rpm / 60) : 0;
    l->tok_level = l->tpm > 0 ? fmax(1, l->tpm / 60) : 0;
    l->next = c->limiters;
    c->limiters = l;
    c->open_limiter_timers++;
    return l;
}

/* Burst: a second's worth, at least one request. */
static double req_cap(const limiter *l)
{
    return fmax(1, l->rpm / 60);
}

static double tok_cap(const limiter *l)
{
    return fmax(1, l->tpm / 60);
}

static void refill(limiter *l, uint64_t now)
{
    double dt = (double)(now - l->refilled_ms);
    l->refilled_ms = now;
    if (l->rpm > 0)
        l->req_level = fmin(req_cap(l), l->req_level + dt * l->rpm / 60000.0);
    if (l->tpm > 0)
        l->tok_level = fmin(tok_cap(l), l->tok_level + dt * l->tpm / 60000.0);
}

/* Milliseconds until R may go (0: now). */
static uint64_t wait_for(limiter *l, const eddy_llm_req *r, uint64_t now)
{
    double w = 0;
    if (l->paused_until_ms > now)
        return l->paused_until_ms - now;
    if (l->rpm > 0 && l->req_level < 1)
        w = fmax(w, (1 - l->req_level) * 60000.0 / l->rpm);
    if (l->tpm > 0) {
        double need = fmin((double)r->charged_tokens, tok_cap(l));
        if (l->tok_level < need)
            w = fmax(w, (need - l->tok_level) * 60000.0 / l->tpm);
    }
    return w > 0 ? (uint64_t)ceil(w) : 0;
}

static void on_limiter_timer(uv_timer_t *t)
{
    admit(t->data);
}

static void unqueue_head(limiter *l)
{
    eddy_llm_req *r = l->head;
    l->head = r->qnext;
    if (!l->head)
        l->tail = NULL;
    r->qnext = NULL;
}

/* Start the waiting requests that may go, in order; arm the timer for the
 * head when it must wait. */
static void admit(limiter *l)
{
    uint64_t now = eddy_now_ms();
    refill(l, now);
    while (l->head && !l->client->closing && l->active < l->concurrency) {
        eddy_llm_req *r = l->head;
        uint64_t w = wait_for(l, r, now);
        if (w) {
            uv_timer_start(&l->timer, on_limiter_timer, w, 0);
            return;
        }
        unqueue_head(l);
        if (l->rpm > 0)
            l->req_level -= 1;
        if (l->tpm > 0)
            l->tok_level -= (double)r->charged_tokens;
        l->active++;
        r->holds_slot = 1;
        r->res.queued_ms += now - r->queued_at_ms;
        start_attempt(r);
    }
    uv_timer_stop(&l->timer);
}

static void enqueue(eddy_llm_req *r, int at_head)
{
    limiter *l = r->lim;
    r->state = QUEUED;
    r->queued_at_ms = eddy_now_ms();
    r->qnext = NULL;
    if (at_head) {
        r->qnext = l->head;
        l->head = r;
        if (!l->tail)
            l->tail = r;
    } else {
        if (l->tail)
            l->tail->qnext = r;
        else
            l->head = r;
        l->tail = r;
    }
    admit(l);
}

static void release_slot(eddy_llm_req *r)
{
    if (r->holds_slot) {
        r->holds_slot = 0;
        r->lim->active--;
    }
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
        r->qnext = NULL;
    }
}

/* A bucket at *LEVEL told by the server REMAINING (and when it refills,
 * RESET): lowered when the server counts fewer, and at none left the
 * limiter pauses until the reset, no longer than MAX_WAIT_MS. */
static void resync_bucket(limiter *l, double *level, const char *remaining, const char *reset_s,
                          int64_t max_wait_ms, uint64_t now)
{
    char *end;
    double v = strtod(remaining, &end);
    if (end == remaining || !(v >= 0)) /* unreadable: nothing changes */
        return;
    if (v < *level)
        *level = v;
    int64_t reset = eddy_llm_parse_reset(reset_s);
    reset = reset < max_wait_ms ? reset : max_wait_ms;
    if (v < 1 && reset > 0 && now + (uint64_t)reset > l->paused_until_ms)
        l->paused_until_ms = now + (uint64_t)reset;
}

/* What the server said about its limits, after an answer. */
static void resync(eddy_llm_req *r)
{
    limiter *l = r->lim;
    uint64_t now = eddy_now_ms();
    if (r->rl_req_remaining[0] && l->rpm > 0)
        resync_bucket(l, &l->req_level, r->rl_req_remaining, r->rl_req_reset,
                      r->model->max_wait_ms, now);
    if (r->rl_tok_remaining[0] && l->tpm > 0)
        resync_bucket(l, &l->tok_level, r->rl_tok_remaining, r->rl_tok_reset,
                      r->model->max_wait_ms, now);
}

/* -- requests ------------------------------------------------------------- */

static void stream_timer_arm(eddy_llm_req *r);

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    eddy_llm_req *r = ud;
    size_t len = size * n;
    long http = 0;
    if (r->streaming) {
        curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
        if (http >= 200 && http < 300) {
            if (!r->res.first_token_ms && len)
                r->res.first_token_ms = eddy_now_ms() - r->attempt_ms;
            if (r->stream_failed)
                return 0;
            if (eddy_llm_stream_feed(r->stream, p, len, &r->stream_err)) {
                r->stream_failed = 1;
                return 0; /* ends the transfer: CURLE_WRITE_ERROR */
            }
            stream_timer_arm(r);
            return len;
        }
        /* an error answer: keep its start for the message */
        if (r->resp.len < MAX_ERROR_BODY) {
            size_t room = MAX_ERROR_BODY - r->resp.len;
            eddy_buf_append(&r->resp, p, len < room ? len : room);
        }
        return len;
    }
    if (r->resp.len + len > MAX_RESPONSE || eddy_buf_append(&r->resp, p, len))
        return 0;
    return len;
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
    size_t len = size * n;
    if (len > 5 && !strncmp(p, "HTTP/", 5)) { /* a new response (after 100, redirects) */
        r->retry_after[0] = r->retry_after_ms[0] = '\0';
        r->rl_req_remaining[0] = r->rl_tok_remaining[0] = '\0';
        r->rl_req_reset[0] = r->rl_tok_reset[0] = '\0';
        return len;
    }
    /* only retry-after*, x-ratelimit-* and anthropic-ratelimit-* matter */
    char c0 = len ? (char)(p[0] | 0x20) : 0;
    if (c0 != 'r' && c0 != 'x' && c0 != 'a')
        return len;
    header_value(p, len, "retry-after", r->retry_after, sizeof(r->retry_after));
    header_value(p, len, "retry-after-ms", r->retry_after_ms, sizeof(r->retry_after_ms));
    header_value(p, len, "x-ratelimit-remaining-requests", r->rl_req_remaining,
                 sizeof(r->rl_req_remaining));
    header_value(p, len, "x-ratelimit-remaining-tokens", r->rl_tok_remaining,
                 sizeof(r->rl_tok_remaining));
    header_value(p, len, "x-ratelimit-reset-requests", r->rl_req_reset, sizeof(r->rl_req_reset));
    header_value(p, len, "x-ratelimit-reset-tokens", r->rl_tok_reset, sizeof(r->rl_tok_reset));
    header_value(p, len, "anthropic-ratelimit-requests-remaining", r->rl_req_remaining,
                 sizeof(r->rl_req_remaining));
    header_value(p, len, "anthropic-ratelimit-tokens-remaining", r->rl_tok_remaining,
                 sizeof(r->rl_tok_remaining));
    header_value(p, len, "anthropic-ratelimit-requests-reset", r->rl_req_reset,
                 sizeof(r->rl_req_reset));
    header_value(p, len, "anthropic-ratelimit-tokens-reset", r->rl_tok_reset,
                 sizeof(r->rl_tok_reset));
    return len;
}

static void req_closed(uv_handle_t *h)
{
    eddy_llm_req *r = h->data;
    eddy_free(r);
}

static void free_attempt(eddy_llm_req *r)
{
    if (r->easy)
        curl_easy_cleanup(r->easy);
    r->easy = NULL;
    curl_slist_free_all(r->headers);
    r->headers = NULL;
    eddy_free(r->url);
    r->url = NULL;
    eddy_free(r->body);
    r->body = NULL;
    eddy_llm_stream_free(r->stream);
    r->stream = NULL;
}

static void finish(eddy_llm_req *r)
{
    eddy_llm_client *c = r->client;
    limiter *l = r->lim;
    if (r->state == QUEUED)
        unqueue(r);
    r->state = DONE;
    r->res.latency_ms = eddy_now_ms() - r->start_ms;
    r->res.model = r->model;
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    c->in_flight--;
    release_slot(r);
    if (r->cb)
        r->cb(&r->res, r->ud);
    eddy_llm_response_clear(&r->res.resp);
    free_attempt(r);
    eddy_buf_free(&r->resp);
    uv_close((uv_handle_t *)&r->timer, req_closed);
    if (!c->closing)
        admit(l); /* a slot is free */
}

static void on_req_timer(uv_timer_t *t);

/* Streaming watchdog: the first chunk within first_token_timeout, then no
 * gap longer than idle_timeout. */
static void stream_timer_arm(eddy_llm_req *r)
{
    const eddy_llm_model *m = r->model;
    int64_t ms = r->res.first_token_ms ? m->idle_timeout_ms : m->first_token_timeout_ms;
    if (!r->streaming || ms <= 0)
        return;
    r->timer_kind = T_STREAM;
    uv_timer_start(&r->timer, on_req_timer, (uint64_t)ms, 0);
}

/* Redact the key from the N bytes at MSG in place (servers echo keys in
 * their errors): every whole occurrence becomes "***". */
static size_t redact_n(char *msg, size_t n, const char *key)
{
    size_t kl = key ? strlen(key) : 0;
    if (kl < 4)
        return n;
    for (char *p = msg; (p = memmem(p, n - (size_t)(p - msg), key, kl));) {
        memcpy(p, "***", 3);
        memmove(p + 3, p + kl, n - (size_t)(p - msg) - kl);
        n -= kl - 3;
        p += 3;
    }
    return n;
}

/* MSG (a NUL-terminated message, perhaps cut) without the key: whole
 * occurrences, any run of its first 8 or more bytes (a cut in the middle of
 * a formatted message), and a shorter start of it where MSG ends (a cut at
 * the end). */
static void redact(char *msg, const char *key)
{
    size_t kl = key ? strlen(key) : 0, n = strlen(msg);
    if (kl < 4)
        return;
    n = redact_n(msg, n, key);
    msg[n] = '\0';
    size_t pre = kl < 8 ? kl : 8;
    for (char *p = msg; (p = memmem(p, n - (size_t)(p - msg), key, pre));) {
        size_t m = pre;
        while (m < kl && p[m] && p[m] == key[m])
            m++;
        memset(p, '*', m);
        p += m;
    }
    for (size_t m = pre < n ? pre : n; m >= 4; m--) /* the end of MSG starts the key */
        if (!memcmp(msg + n - m, key, m)) {
            memset(msg + n - m, '*', m);
            break;
        }
}

static void add_header(void *ud, const char *line)
{
    struct curl_slist **h = ud;
    struct curl_slist *n = curl_slist_append(*h, line);
    if (n)
        *h = n;
}

/* Build the attempt's body and curl handle for r->model. */
static int setup(eddy_llm_req *r, eddy_err *err)
{
    const eddy_llm_model *m = r->model;
    const eddy_llm_provider *p = m->prov ? m->prov : eddy_llm_provider_find(m->provider);
    json_t *body;
    free_attempt(r);
    if (!p)
        return eddy_err_set(err, EDDY_EINVAL, "model '%s': unknown provider '%s'", m->name,
                            m->provider ? m->provider : "");
    r->streaming = m->stream;
    if (p->write) {
        eddy_buf b;
        eddy_buf_init(&b);
        r->body = p->write(m, r->rq, m->stream, &b) ? NULL : eddy_buf_take(&b);
        eddy_buf_free(&b);
    } else {
        body = p->build(m, r->rq, m->stream);
        r->body = body ? eddy_json_dumps_flags(body, JSON_COMPACT) : NULL;
        json_decref(body);
    }
    r->url = eddy_strdup(r->lim->url); /* the request's own: messages name it */
    r->easy = curl_easy_init();
    if (!r->body || !r->url || !r->easy)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    r->body_len = strlen(r->body);
    r->charged_tokens = eddy_llm_estimate_tokens(r->body_len) + (m->max_tokens > 0 ? m->max_tokens : 256);
    r->headers = curl_slist_append(NULL, "Content-Type: application/json");
    add_header(&r->headers, "Expect:");
    if (m->stream)
        add_header(&r->headers, "Accept: text/event-stream, application/x-ndjson");
    p->headers(m, add_header, &r->headers);
    curl_easy_setopt(r->easy, CURLOPT_URL, r->url);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)r->body_len);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)m->timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(m->connect_timeout_ms > 0 ? m->connect_timeout_ms
                            : m->timeout_ms < 10000  ? m->timeout_ms
                                                     : 10000));
    curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "eddy/0.1");
    if (!m->stream)
        curl_easy_setopt(r->easy, CURLOPT_ACCEPT_ENCODING, "");
    return 0;
}

static void start_attempt(eddy_llm_req *r)
{
    CURLMcode mc;
    r->state = RUNNING;
    r->res.attempts++;
    r->model_attempts++;
    r->attempt_ms = eddy_now_ms();
    r->res.first_token_ms = 0;
    eddy_buf_reset(&r->resp);
    r->stream_failed = 0;
    eddy_llm_stream_free(r->stream);
    r->stream = NULL;
    if (r->streaming) {
        const eddy_llm_provider *p =
            r->model->prov ? r->model->prov : eddy_llm_provider_find(r->model->provider);
        r->stream = eddy_llm_stream_new(p, r->rq);
    }
    r->retry_after[0] = r->retry_after_ms[0] = '\0';
    mc = r->streaming && !r->stream ? CURLM_OUT_OF_MEMORY
                                    : curl_multi_add_handle(r->client->multi, r->easy);
    if (mc != CURLM_OK) {
        r->res.status = eddy_err_setc(&r->res.err, EDDY_ELLM, mc, "cannot start request: %s",
                                      curl_multi_strerror(mc));
        r->canceled = 1;
        r->state = BACKOFF;
        r->timer_kind = T_RETRY;
        uv_timer_start(&r->timer, on_req_timer, 0, 0);
        return;
    }
    stream_timer_arm(r);
}

/* Move to the next model of the chain; 0 when there is one. */
static int fall_back(eddy_llm_req *r, const char *why)
{
    const eddy_llm_model *next;
    eddy_err e;
    if (r->chain >= r->first->nfallback)
        return -1;
    next = r->first->fallback[r->chain++];
    snprintf(r->res.fallback_reason, sizeof(r->res.fallback_reason), "%s: %s", r->model->name,
             why);
    EDDY_INFO("llm", "model '%s' failed (%s); falling back to '%s'", r->model->name, why,
              next->name);
    r->res.fallbacks++;
    limiter *old = r->lim, *nl = limiter_for(r->client, next);
    release_slot(r);
    if (!nl) {
        r->res.status = eddy_err_set(&r->res.err, EDDY_ENOMEM, "out of memory");
        return -1; /* finish() admits the old limiter's waiters */
    }
    r->model = next;
    r->model_attempts = 0;
    r->unavailable_since_ms = 0;
    r->lim = nl;
    if (setup(r, &e)) {
        r->res.status = e.code;
        r->res.err = e;
        admit(old); /* the slot R left there */
        return -1;
    }
    enqueue(r, 0);
    if (old != nl)
        admit(old); /* the slot R left there */
    return 0;
}

static void on_req_timer(uv_timer_t *t)
{
    eddy_llm_req *r = t->data;
    int kind = r->timer_kind;
    r->timer_kind = T_NONE;
    if (r->canceled || r->client->closing) {
        if (r->state == RUNNING)
            curl_multi_remove_handle(r->client->multi, r->easy);
        if (!r->res.status)
            r->res.status = eddy_err_set(&r->res.err, EDDY_ECANCELED, "request canceled");
        finish(r);
        return;
    }
    if (kind == T_STREAM && r->state == RUNNING) {
        /* the stream went quiet: end this attempt like a timeout */
        curl_multi_remove_handle(r->client->multi, r->easy);
        r->stream_failed = 1;
        eddy_err_set(&r->stream_err, EDDY_ETIMEDOUT, "%s: no %s within %lld ms", r->url,
                     r->res.first_token_ms ? "stream data" : "first token",
                     (long long)(r->res.first_token_ms ? r->model->idle_timeout_ms
                                                       : r->model->first_token_timeout_ms));
        attempt_done(r, CURLE_OPERATION_TIMEDOUT);
        return;
    }
    if (r->state == BACKOFF)
        enqueue(r, 1); /* a retry keeps its place at the head */
}

/* The end of one attempt: parse, or decide on a retry, a fallback or the end. */
static void attempt_done(eddy_llm_req *r, CURLcode cc)
{
    const eddy_llm_model *m = r->model;
    const eddy_llm_provider *p = m->prov ? m->prov : eddy_llm_provider_find(m->provider);
    long http = 0;
    int transport = cc != CURLE_OK, parsed = 0, timed_out = 0;
    eddy_llm_error_info info;
    int64_t delay;
    char why[EDDY_ERR_MSG_MAX];
    if (r->timer_kind == T_STREAM) {
        uv_timer_stop(&r->timer);
        r->timer_kind = T_NONE;
    }
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
    r->res.http_status = http;
    eddy_llm_response_clear(&r->res.resp);
    memset(&info, 0, sizeof(info));
    resync(r);
    if (r->stream_failed && r->stream_err.code) {
        /* our own stop (bad event, idle timeout) or the server's error event */
        r->res.err = r->stream_err;
        memset(&r->stream_err, 0, sizeof(r->stream_err));
        redact(r->res.err.msg, m->api_key);
        timed_out = r->res.err.code == EDDY_ETIMEDOUT;
        transport = 1;
        parsed = r->res.err.code != EDDY_ETIMEDOUT;
    } else if (!transport && http >= 200 && http < 300) {
        int rc = r->streaming ? eddy_llm_stream_finish(r->stream, &r->res.resp, &r->res.err)
                              : eddy_llm_parse(m, r->rq, r->resp.data ? r->resp.data : "",
                                               r->resp.len, &r->res.resp, &r->res.err);
        if (rc == 0) {
            eddy_llm_usage *u = &r->res.resp.usage;
            /* a server's numbers, not ours: never negative, never absurd */
            long *counts[] = {&u->input_tokens, &u->output_tokens, &u->cached_input_tokens,
                              &u->cache_write_tokens, &u->reasoning_tokens};
            for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
                *counts[i] = *counts[i] < 0 ? 0 : *counts[i] > EDDY_LLM_MAX_USAGE ? EDDY_LLM_MAX_USAGE
                                                                                   : *counts[i];
            if (!u->input_tokens && !u->output_tokens) {
                char *text = eddy_llm_msg_join_text(&r->res.resp.message);
                u->input_tokens = eddy_llm_estimate_tokens(r->body_len);
                u->output_tokens = text && *text ? eddy_llm_estimate_tokens(strlen(text)) : 0;
                for (size_t i = 0; i < r->res.resp.message.nparts; i++)
                    if (r->res.resp.message.parts[i].args)
                        u->output_tokens +=
                            eddy_llm_estimate_tokens(strlen(r->res.resp.message.parts[i].args));
                u->estimated = 1;
                eddy_free(text);
            }
            if (r->lim->tpm > 0) { /* correct the estimate, by at most a bucket's worth */
                double d = (double)r->charged_tokens - (double)(u->input_tokens + u->output_tokens);
                double cap = tok_cap(r->lim);
                r->lim->tok_level += d < -cap ? -cap : d > cap ? cap : d;
            }
            r->res.status = 0;
            finish(r);
            return;
        }
        parsed = 1; /* a broken 2xx body or stream: worth another attempt */
        if (r->res.err.code == EDDY_ELLM) /* the server's error in a 2xx body */
            parsed = 2;
    }
    if (r->res.err.code && (parsed || r->stream_failed)) {
        /* the message is already in res.err */
    } else if (transport && cc == CURLE_OPERATION_TIMEDOUT) {
        timed_out = 1;
        eddy_err_setc(&r->res.err, EDDY_ETIMEDOUT, cc, "%s: timed out after %lld ms", r->url,
                      (long long)m->timeout_ms);
    } else if (transport) {
        eddy_err_setc(&r->res.err, EDDY_ENET, cc, "%s: %s", r->url, curl_easy_strerror(cc));
    } else {
        if (r->resp.data) /* before anything cuts it */
            r->resp.len = redact_n(r->resp.data, r->resp.len, m->api_key);
        p->error_info(r->resp.data ? r->resp.data : "", r->resp.len, &info);
        redact(info.message, m->api_key);
        redact(info.code, m->api_key);
        eddy_err_setc(&r->res.err, EDDY_EHTTP, http, "%s: HTTP %ld%s%s%s%s", r->url, http,
                      info.code[0] ? " " : "", info.code, info.message[0] ? ": " : "",
                      info.message);
    }
    redact(r->res.err.msg, m->api_key);
    r->res.status = r->res.err.code;
    if (r->canceled) {
        finish(r);
        return;
    }
    long as_http = parsed ? 500 : http;
    delay = eddy_llm_retry_delay(m, r->model_attempts, as_http, transport, r->retry_after_ms,
                                 r->retry_after, info.code[0] ? info.code : NULL,
                                 eddy_random_unit());
    /* connection refused and 503 (a server starting, a model loading): keep
     * trying for unavailable_ms, whatever the attempts say */
    int unavailable = (transport && cc == CURLE_COULDNT_CONNECT) || http == 503;
    if (unavailable && m->unavailable_ms > 0) {
        uint64_t now = eddy_now_ms();
        if (!r->unavailable_since_ms)
            r->unavailable_since_ms = now;
        if (delay == -1 && now - r->unavailable_since_ms < (uint64_t)m->unavailable_ms) {
            /* about once a second: soon after the server is back, without hammering it */
            delay = m->backoff_cap_ms > 0 ? m->backoff_cap_ms : 8000;
            delay = delay < 1000 ? 1000 : delay > 2000 ? 2000 : delay;
        }
    } else {
        r->unavailable_since_ms = 0;
    }
    if (delay == -2) {
        int64_t asked = eddy_llm_parse_retry_ms(r->retry_after_ms);
        if (asked < 0)
            asked = eddy_llm_parse_retry_after(r->retry_after);
        snprintf(why, sizeof(why), "%s; the server asked to retry after %.1f s, longer than "
                                   "retry.max_wait (%.1f s)",
                 r->res.err.msg, (double)asked / 1000,
                 (double)m->max_wait_ms / 1000);
        eddy_err_setc(&r->res.err, r->res.err.code, r->res.err.cause, "%s", why);
        if (http == 429) { /* everyone else waits too, no longer than max_wait */
            int64_t mw = m->max_wait_ms;
            uint64_t until = eddy_now_ms() + (uint64_t)(asked < mw ? asked : mw);
            if (until > r->lim->paused_until_ms)
                r->lim->paused_until_ms = until;
        }
    }
    if (delay < 0) {
        int fallback_ok = timed_out || transport || http >= 500 || info.overloaded ||
                          http == 429 || http == 408 || parsed;
        snprintf(why, sizeof(why), "%s", r->res.err.msg);
        if (fallback_ok && fall_back(r, why) == 0)
            return;
        finish(r);
        return;
    }
    EDDY_DEBUG("llm", "attempt %d to %s failed (%s); retrying in %lld ms", r->res.attempts,
               m->name, r->res.err.msg, (long long)delay);
    release_slot(r);
    if (http == 429 || info.overloaded) { /* the whole limiter waits */
        uint64_t until = eddy_now_ms() + (uint64_t)delay;
        if (until > r->lim->paused_until_ms)
            r->lim->paused_until_ms = until;
        enqueue(r, 1);
        return;
    }
    admit(r->lim); /* the slot we left */
    r->state = BACKOFF;
    r->timer_kind = T_RETRY;
    uv_timer_start(&r->timer, on_req_timer, (uint64_t)delay, 0);
}

static void close_handles(eddy_llm_client *c);

static void check_done(eddy_llm_client *c)
{
    CURLMsg *m;
    int left;
    c->dispatching++;
    while (!c->close_pending && (m = curl_multi_info_read(c->multi, &left))) {
        eddy_llm_req *r;
        if (m->msg != CURLMSG_DONE)
            continue;
        CURLcode cc = m->data.result;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        curl_multi_remove_handle(c->multi, m->easy_handle);
        attempt_done(r, cc);
    }
    if (--c->dispatching == 0 && c->close_pending)
        close_handles(c); /* a callback closed the client: now curl may go */
}

int eddy_llm_chat(eddy_llm_client *c, const eddy_llm_model *m, const eddy_llm_request *rq,
                  eddy_llm_cb cb, void *ud, eddy_llm_req **out, eddy_err *err)
{
    eddy_llm_req *r;
    int rc;
    if (out)
        *out = NULL;
    if (c->closing)
        return eddy_err_set(err, EDDY_ECLOSING, "LLM client is closing");
    r = eddy_calloc(1, sizeof(*r));
    if (!r)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    r->client = c;
    r->first = r->model = m;
    r->rq = rq;
    r->cb = cb;
    r->ud = ud;
    eddy_buf_init(&r->resp);
    r->lim = limiter_for(c, m);
    if (!r->lim) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = setup(r, err)))
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
    if (out)
        *out = r;
    enqueue(r, 0);
    return 0;
fail:
    free_attempt(r);
    eddy_free(r);
    return rc;
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
    r->timer_kind = T_RETRY;
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

static void maybe_free_client(eddy_llm_client *c)
{
    if (c->open_limiter_timers > 0)
        return;
    eddy_free(c->by_model);
    while (c->limiters) {
        limiter *l = c->limiters;
        c->limiters = l->next;
        eddy_free(l->key);
        eddy_free(l->url);
        eddy_free(l);
    }
    eddy_free(c);
}

static void limiter_timer_closed(uv_handle_t *h)
{
    limiter *l = h->data;
    eddy_llm_client *c = l->client;
    c->open_limiter_timers--;
    maybe_free_client(c);
}

static void client_closed(uv_handle_t *h)
{
    eddy_llm_client *c = h->data;
    c->open_limiter_timers--; /* this timer counted as one */
    maybe_free_client(c);
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
    if (c->dispatching) {
        c->close_pending = 1;
        return;
    }
    close_handles(c);
}

static void close_handles(eddy_llm_client *c)
{
    c->close_pending = 0;
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    c->open_limiter_timers++;
    for (limiter *l = c->limiters; l; l = l->next)
        uv_close((uv_handle_t *)&l->timer, limiter_timer_closed);
    uv_close((uv_handle_t *)&c->timer, client_closed);
}
