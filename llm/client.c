/*
 * llm/client.c - chat requests over libcurl's multi-socket API on libuv.
 *
 * One CURLM per client, one client per loop. curl tells us which sockets to
 * watch (sock_cb -> uv_poll_t) and when to wake (timer_cb -> uv_timer_t);
 * libuv tells curl what happened (curl_multi_socket_action). Finished
 * transfers are collected in check_done.
 *
 * A request moves QUEUED (waiting in its limiter's FIFO) -> RUNNING ->
 * BACKOFF (waiting to retry) -> QUEUED/RUNNING ... -> DONE.
 *
 * Limiters are process-global: every client (one per worker loop) whose
 * models name the same provider, endpoint, model and key shares one
 * shared_lim: `concurrency` slots, a requests-per-minute and a
 * tokens-per-minute bucket (a second's worth of burst; tokens charged up
 * front with an estimate and corrected from usage), resynchronized from
 * rate-limit headers; the strictest settings of the models naming it hold.
 * A 429 pauses the shared limiter until its retry time (every client
 * waits); the request goes back to the head of its queue. The registry and
 * each shared_lim have their own mutex, held only to read and change
 * counters, never across curl or a callback.
 *
 * Each client has a local limiter per key: its FIFO of waiting requests,
 * the url, and one timer on which only the head waits (for a bucket or a
 * pause): nothing spins, nothing has a timer per waiter. A local whose head
 * wants a slot takes a turn in the shared waiting list; a slot freed with
 * turns waiting is left to the first of them (clients take turns, a turn
 * used up by the slot it gets), and another client's local is woken by
 * the client's one uv_async_t, sent under the shared mutex. A local leaves
 * the list, under the mutex, when its queue empties and when its client
 * closes, before that async handle is closed; so nothing is sent to a
 * client being freed. Apart from that, a client is touched only on its
 * own loop.
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
#include "eddy/http1.h"
#include "eddy/json.h"
#include "eddy/log.h"

#include <assert.h>
#include <curl/curl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_RESPONSE (64u << 20)
#define MAX_ERROR_BODY (64u << 10)
/* curl's receive buffer, one per easy handle, held from the connect to the
 * end of the request: the default 16 KB is mostly idle while an answer is
 * awaited (a parked conversation kept about 4.5 KB of it resident). 1 KB is
 * curl's minimum; a larger answer is only read in more pieces. */
#define RECV_BUFFER 1024L

enum req_state { QUEUED, RUNNING, BACKOFF, DONE };

/* A request's eddy_llm_result as it builds up, without the failure's detail
 * (1 KB) and the fallback reason: those are allocated when an attempt fails
 * (eddy_llm_req.err, .fallback_reason), so a request awaiting its answer
 * holds neither. finish() hands the callback the whole eddy_llm_result. */
typedef struct req_res {
    int status;
    long http_status;
    int attempts, fallbacks;
    uint64_t first_token_ms, queued_ms, first_wait_ms;
    eddy_llm_response resp;
} req_res;

/* One set of limits, shared by every client of the process that names its
 * key (see "Limiters" above). REFS and NEXT are the registry's (under
 * registry_mu); the rest is under MU. */
typedef struct shared_lim {
    char *key; /* provider \n base_url \n model \n hash of the api key; immutable */
    int refs;  /* locals (one per client) using it */
    pthread_mutex_t mu;
    int concurrency, active;
    double rpm, tpm;
    double req_level, tok_level; /* tokens in the buckets (may go below 0: debt) */
    uint64_t refilled_ms;
    uint64_t paused_until_ms; /* a 429 or an exhausted header: nobody goes before */
    struct limiter *waiting;  /* locals whose head waits for a slot, in turn order */
    struct shared_lim *next;
} shared_lim;

/* A client's side of a shared limiter: its waiting requests and its timer.
 * Owner loop only, except WOKEN and WNEXT (under sh->mu). */
typedef struct limiter {
    shared_lim *sh;
    char *url;  /* the endpoint (the models sharing a limiter share it) */
    int native; /* URL goes through eddy's own HTTP/1.1 client (eddy_http1_takes) */
    eddy_llm_client *client;
    eddy_llm_req *head, *tail; /* waiting requests, FIFO */
    uv_timer_t timer;          /* wakes the head for a bucket or a pause */
    int in_waiting;            /* in sh->waiting (written under sh->mu by the owner) */
    int woken;                 /* sh->mu: a slot may be ours; admit on the next wake-up */
    struct limiter *wnext;     /* sh->mu: in sh->waiting */
    struct limiter *next;      /* in the client's list */
} limiter;

struct eddy_llm_req {
    eddy_llm_client *client;
    const eddy_llm_model *first; /* as asked */
    const eddy_llm_model *model; /* being tried */
    const eddy_llm_request *rq;
    size_t chain; /* index in first's fallback chain: 0 = first itself */
    int model_attempts;
    limiter *lim;
    CURL *easy;                 /* curl's transfer, or */
    eddy_http1_req *h1;         /* eddy's own (lim->native): one per attempt */
    long h1_status;             /* the status of the last native attempt's answer */
    struct curl_slist *headers; /* curl's header list, or */
    char *h1_headers;           /* the native attempt's header lines */
    size_t h1_headers_len;
    char *url, *body;
    size_t body_len;
    long charged_tokens; /* estimate taken from the token bucket */
    eddy_buf resp;       /* a plain answer, or the start of an error body */
    eddy_llm_stream *stream;
    int streaming, stream_failed;
    int stream_err; /* err holds why this attempt's stream failed */
    char retry_after[64], retry_after_ms[64];
    char rl_req_remaining[32], rl_tok_remaining[32], rl_req_reset[64], rl_tok_reset[64];
    enum req_state state;
    int canceled, holds_slot;
    uint64_t start_ms, attempt_ms, queued_at_ms, unavailable_since_ms;
    uv_timer_t timer;
    int timer_kind; /* what the timer is doing: T_RETRY, T_STREAM */
    eddy_llm_cb cb;
    void *ud;
    req_res res;
    eddy_err *err;             /* the last failure, or NULL (none yet, or out of memory) */
    char *fallback_reason;     /* why the previous model was left, or NULL */
    eddy_llm_req *qnext;       /* in the limiter's queue */
    eddy_llm_req *prev, *next; /* in the client's list */
};

enum { T_NONE, T_RETRY, T_STREAM };

/* A socket of curl's and its poll handle. The handle lives as long as the
 * socket, not as long as a transfer: between two requests on a kept-alive
 * connection curl removes the socket (CURL_POLL_REMOVE) and hands it back;
 * closing and opening a uv_poll each time cost an ioctl and two or three
 * epoll_ctl per request. It is closed when curl closes the socket
 * (CURLOPT_CLOSESOCKETFUNCTION), before the fd is. */
typedef struct sock_ctx {
    uv_poll_t poll;
    curl_socket_t fd;
    eddy_llm_client *client;
    int closing;
} sock_ctx;

struct eddy_llm_client {
    uv_loop_t *loop;
    CURLM *multi;
    eddy_http1 *h1; /* plain http:// endpoints */
    uv_timer_t timer;
    uv_async_t wake; /* another client freed a slot our locals wait for */
    limiter *limiters;
    struct model_lim {
        const eddy_llm_model *m;
        limiter *l;
    } * by_model; /* a model's limiter, found once */
    size_t nby_model;
    eddy_llm_req *reqs;
    long in_flight;
    int nwaiting;              /* locals in a shared waiting list: WAKE keeps the loop alive */
    int closing, open_handles; /* limiter timers, then the timer and WAKE, not yet closed */
    int dispatching;           /* inside check_done: curl's multi must stay */
    int close_pending;         /* closed from a callback inside check_done */
    sock_ctx **socks;          /* by fd: the poll handles of curl's open sockets */
    size_t nsocks;
};

static void check_done(eddy_llm_client *c);
static void start_attempt(eddy_llm_req *r);
static void admit(limiter *l);
static void finish(eddy_llm_req *r);
static void attempt_done(eddy_llm_req *r, CURLcode cc, const char *detail);

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
        if (s) { /* the socket stays open (a kept-alive connection): so does S */
            if (!s->closing)
                uv_poll_stop(&s->poll);
            curl_multi_assign(c->multi, fd, NULL);
        }
        return 0;
    }
    if (!s && fd >= 0 && (size_t)fd < c->nsocks)
        s = c->socks[fd];
    if (!s) {
        if (fd < 0)
            return -1;
        if ((size_t)fd >= c->nsocks) {
            size_t n = c->nsocks ? c->nsocks : 64;
            while (n <= (size_t)fd)
                n *= 2;
            sock_ctx **v = eddy_realloc(c->socks, n * sizeof(*v));
            if (!v)
                return -1;
            memset(v + c->nsocks, 0, (n - c->nsocks) * sizeof(*v));
            c->socks = v;
            c->nsocks = n;
        }
        s = eddy_calloc(1, sizeof(*s));
        if (!s || uv_poll_init_socket(c->loop, &s->poll, fd)) {
            eddy_free(s);
            return -1;
        }
        s->fd = fd;
        s->client = c;
        s->poll.data = s;
        c->socks[fd] = s;
    }
    curl_multi_assign(c->multi, fd, s);
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&s->poll, events, poll_cb);
    return 0;
}

/* curl closes one of its sockets: its poll handle goes first (libuv takes
 * the fd out of epoll while it is still this socket), then the fd. */
static int close_sock_cb(void *clientp, curl_socket_t fd)
{
    eddy_llm_client *c = clientp;
    if (fd >= 0 && (size_t)fd < c->nsocks && c->socks[fd]) {
        sock_ctx *s = c->socks[fd];
        c->socks[fd] = NULL;
        s->closing = 1;
        uv_close((uv_handle_t *)&s->poll, sock_closed);
    }
    return close(fd);
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

/* The process's shared limiters. Lock order: registry_mu, then a shared_lim's
 * mu; nothing takes registry_mu while holding a shared_lim's. */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static shared_lim *registry;

/* Models sharing an endpoint: the strictest settings hold. S->mu held. */
static void tighten(shared_lim *s, const eddy_llm_model *m)
{
    if (m->concurrency > 0 && m->concurrency < s->concurrency)
        s->concurrency = m->concurrency;
    if (m->requests_per_minute > 0 && (!s->rpm || m->requests_per_minute < s->rpm))
        s->rpm = m->requests_per_minute;
    if (m->tokens_per_minute > 0 && (!s->tpm || m->tokens_per_minute < s->tpm))
        s->tpm = m->tokens_per_minute;
}

/* The shared limiter for KEY (borrowed), created with M's settings or
 * tightened by them; one more reference. NULL on out-of-memory. Any thread. */
static shared_lim *shared_get(const char *key, const eddy_llm_model *m)
{
    shared_lim *s;
    pthread_mutex_lock(&registry_mu);
    for (s = registry; s && strcmp(s->key, key); s = s->next)
        ;
    if (s) {
        s->refs++;
        pthread_mutex_lock(&s->mu);
        tighten(s, m);
        pthread_mutex_unlock(&s->mu);
        goto out;
    }
    s = eddy_calloc(1, sizeof(*s));
    if (!s || !(s->key = eddy_strdup(key)) || pthread_mutex_init(&s->mu, NULL)) {
        if (s)
            eddy_free(s->key);
        eddy_free(s);
        s = NULL;
        goto out;
    }
    s->refs = 1;
    s->concurrency = m->concurrency > 0 ? m->concurrency : 64;
    s->rpm = m->requests_per_minute;
    s->tpm = m->tokens_per_minute;
    s->refilled_ms = eddy_now_ms();
    s->req_level = s->rpm > 0 ? fmax(1, s->rpm / 60) : 0;
    s->tok_level = s->tpm > 0 ? fmax(1, s->tpm / 60) : 0;
    s->next = registry;
    registry = s;
out:
    pthread_mutex_unlock(&registry_mu);
    return s;
}

/* Drop a reference; the last one frees S (no local points at it then, so
 * nobody waits in it). Any thread. */
static void shared_put(shared_lim *s)
{
    int last;
    pthread_mutex_lock(&registry_mu);
    last = --s->refs == 0;
    if (last) {
        shared_lim **pp = &registry;
        while (*pp != s)
            pp = &(*pp)->next;
        *pp = s->next;
    }
    pthread_mutex_unlock(&registry_mu);
    if (!last)
        return;
    assert(!s->waiting && !s->active);
    pthread_mutex_destroy(&s->mu);
    eddy_free(s->key);
    eddy_free(s);
}

/* Turns ahead of L in S's waiting list (all of them when L is not in it).
 * S->mu held. */
static int wait_pos(const shared_lim *s, const limiter *l)
{
    int n = 0;
    for (const limiter *w = s->waiting; w && w != l; w = w->wnext)
        n++;
    return n;
}

/* Wake the locals of other clients that may now take a slot: the first
 * free ones of the waiting list (a local ahead keeps its turn, so a slot is
 * never taken from under it). SELF is the caller's own, which admits
 * itself. S->mu held: a local stays in the list, and its client's WAKE
 * open, until its owner removes it under S->mu. */
static void wake_waiters(shared_lim *s, const limiter *self)
{
    int free_slots = s->concurrency - s->active, i = 0;
    for (limiter *w = s->waiting; w && i < free_slots; w = w->wnext, i++)
        if (w != self && !w->woken) {
            w->woken = 1;
            uv_async_send(&w->client->wake);
        }
}

/* Put L at the end of its shared waiting list. S->mu held, owner loop. */
static void wait_add(limiter *l)
{
    limiter **pp = &l->sh->waiting;
    if (l->in_waiting)
        return;
    while (*pp)
        pp = &(*pp)->wnext;
    *pp = l;
    l->wnext = NULL;
    l->in_waiting = 1;
    if (l->client->nwaiting++ == 0)
        uv_ref((uv_handle_t *)&l->client->wake);
}

/* Take L out of its shared waiting list. S->mu held, owner loop. */
static void wait_remove(limiter *l)
{
    limiter **pp = &l->sh->waiting;
    if (!l->in_waiting)
        return;
    while (*pp != l)
        pp = &(*pp)->wnext;
    *pp = l->wnext;
    l->wnext = NULL;
    l->in_waiting = 0;
    if (--l->client->nwaiting == 0)
        uv_unref((uv_handle_t *)&l->client->wake);
}

/* L gives up its turn (its queue is empty, or its client closes): the
 * locals behind it move up, and those that now may go are woken. */
static void wait_leave(limiter *l)
{
    if (!l->in_waiting)
        return;
    pthread_mutex_lock(&l->sh->mu);
    wait_remove(l);
    wake_waiters(l->sh, l);
    pthread_mutex_unlock(&l->sh->mu);
}

static limiter *limiter_lookup(eddy_llm_client *c, const eddy_llm_model *m);

static limiter *limiter_for(eddy_llm_client *c, const eddy_llm_model *m)
{
    for (size_t i = 0; i < c->nby_model; i++)
        if (c->by_model[i].m == m)
            return c->by_model[i].l;
    limiter *l = limiter_lookup(c, m);
    struct model_lim *g = l ? eddy_realloc(c->by_model, (c->nby_model + 1) * sizeof(*g)) : NULL;
    if (g) {
        c->by_model = g;
        g[c->nby_model].m = m;
        g[c->nby_model++].l = l;
    }
    return l;
}

/* C's local for M's key, created with a reference to the shared limiter. */
static limiter *limiter_lookup(eddy_llm_client *c, const eddy_llm_model *m)
{
    char *key = limiter_key(m), *url = NULL;
    shared_lim *s = NULL;
    limiter *l = NULL;
    if (!key)
        return NULL;
    for (l = c->limiters; l; l = l->next)
        if (!strcmp(l->sh->key, key)) {
            pthread_mutex_lock(&l->sh->mu);
            tighten(l->sh, m);
            pthread_mutex_unlock(&l->sh->mu);
            goto out;
        }
    const eddy_llm_provider *prov = m->prov ? m->prov : eddy_llm_provider_find(m->provider);
    url = prov ? prov->url(m) : NULL;
    s = url ? shared_get(key, m) : NULL;
    l = s ? eddy_calloc(1, sizeof(*l)) : NULL;
    if (!l || uv_timer_init(c->loop, &l->timer)) {
        if (s)
            shared_put(s);
        eddy_free(l);
        eddy_free(url);
        l = NULL;
        goto out;
    }
    l->sh = s;
    l->url = url;
    l->native = eddy_http1_takes(url);
    l->client = c;
    l->timer.data = l;
    l->next = c->limiters;
    c->limiters = l;
    c->open_handles++;
out:
    eddy_free(key);
    return l;
}

/* Burst: a second's worth, at least one request. */
static double req_cap(const shared_lim *s)
{
    return fmax(1, s->rpm / 60);
}

static double tok_cap(const shared_lim *s)
{
    return fmax(1, s->tpm / 60);
}

static void refill(shared_lim *s, uint64_t now)
{
    double dt;
    if (now <= s->refilled_ms) /* another client refilled after NOW was read */
        return;
    dt = (double)(now - s->refilled_ms);
    s->refilled_ms = now;
    if (s->rpm > 0)
        s->req_level = fmin(req_cap(s), s->req_level + dt * s->rpm / 60000.0);
    if (s->tpm > 0)
        s->tok_level = fmin(tok_cap(s), s->tok_level + dt * s->tpm / 60000.0);
}

/* Milliseconds until R may go (0: now). S->mu held. */
static uint64_t wait_for(const shared_lim *s, const eddy_llm_req *r, uint64_t now)
{
    double w = 0;
    if (s->paused_until_ms > now)
        return s->paused_until_ms - now;
    if (s->rpm > 0 && s->req_level < 1)
        w = fmax(w, (1 - s->req_level) * 60000.0 / s->rpm);
    if (s->tpm > 0) {
        double need = fmin((double)r->charged_tokens, tok_cap(s));
        if (s->tok_level < need)
            w = fmax(w, (need - s->tok_level) * 60000.0 / s->tpm);
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

/* Whether the head of L may go now: it takes a slot and its tokens. When it
 * must wait for a slot L takes a turn in the waiting list; *WAIT_MS gets
 * the wait for a bucket or a pause. A turn is used up by the slot it gets
 * (L queues behind the others for the next), so clients take turns. */
static int take(limiter *l, uint64_t now, uint64_t *wait_ms)
{
    shared_lim *s = l->sh;
    eddy_llm_req *r = l->head;
    int ok = 0;
    *wait_ms = 0;
    pthread_mutex_lock(&s->mu);
    refill(s, now);
    if (s->active + wait_pos(s, l) >= s->concurrency)
        wait_add(l);
    else if (!(*wait_ms = wait_for(s, r, now))) {
        if (s->rpm > 0)
            s->req_level -= 1;
        if (s->tpm > 0)
            s->tok_level -= (double)r->charged_tokens;
        s->active++;
        wait_remove(l);
        ok = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return ok;
}

/* Start the waiting requests that may go, in order; arm the timer for the
 * head when it must wait for a bucket or a pause. Slots and tokens are taken
 * under the shared mutex, requests started after it is released. */
static void admit(limiter *l)
{
    while (l->head && !l->client->closing) {
        uint64_t now = eddy_now_ms(), w;
        if (!take(l, now, &w)) {
            if (w) {
                uv_timer_start(&l->timer, on_limiter_timer, w, 0);
                return;
            }
            break; /* a slot: wake_waiters or our own release brings us back */
        }
        eddy_llm_req *r = l->head;
        unqueue_head(l);
        r->holds_slot = 1;
        r->res.queued_ms += now - r->queued_at_ms;
        if (!r->res.attempts)
            r->res.first_wait_ms = r->res.queued_ms;
        start_attempt(r);
    }
    uv_timer_stop(&l->timer);
    if (!l->head)
        wait_leave(l);
}

/* WAKE: admit the locals another client woke. */
static void on_wake(uv_async_t *a)
{
    eddy_llm_client *c = a->data;
    for (limiter *l = c->limiters; l; l = l->next) {
        pthread_mutex_lock(&l->sh->mu);
        int woken = l->woken;
        l->woken = 0;
        pthread_mutex_unlock(&l->sh->mu);
        if (woken)
            admit(l);
    }
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

/* Give R's slot back; other clients waiting for one are woken (R's own
 * client admits its waiters itself). */
static void release_slot(eddy_llm_req *r)
{
    shared_lim *s = r->lim->sh;
    if (!r->holds_slot)
        return;
    r->holds_slot = 0;
    pthread_mutex_lock(&s->mu);
    s->active--;
    wake_waiters(s, r->lim);
    pthread_mutex_unlock(&s->mu);
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
    if (!l->head)
        wait_leave(l); /* nothing left to wait for: the turn passes on */
}

/* Pause S until UNTIL (never shortens a pause). */
static void pause_until(shared_lim *s, uint64_t until)
{
    pthread_mutex_lock(&s->mu);
    if (until > s->paused_until_ms)
        s->paused_until_ms = until;
    pthread_mutex_unlock(&s->mu);
}

/* A bucket at *LEVEL told by the server REMAINING (and when it refills,
 * RESET): lowered when the server counts fewer, and at none left the
 * limiter pauses until the reset, no longer than MAX_WAIT_MS. S->mu held. */
static void resync_bucket(shared_lim *s, double *level, const char *remaining, const char *reset_s,
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
    if (v < 1 && reset > 0 && now + (uint64_t)reset > s->paused_until_ms)
        s->paused_until_ms = now + (uint64_t)reset;
}

/* What the server said about its limits, after an answer. */
static void resync(eddy_llm_req *r)
{
    shared_lim *s = r->lim->sh;
    uint64_t now = eddy_now_ms();
    if (!r->rl_req_remaining[0] && !r->rl_tok_remaining[0])
        return;
    pthread_mutex_lock(&s->mu);
    if (r->rl_req_remaining[0] && s->rpm > 0)
        resync_bucket(s, &s->req_level, r->rl_req_remaining, r->rl_req_reset, r->model->max_wait_ms,
                      now);
    if (r->rl_tok_remaining[0] && s->tpm > 0)
        resync_bucket(s, &s->tok_level, r->rl_tok_remaining, r->rl_tok_reset, r->model->max_wait_ms,
                      now);
    pthread_mutex_unlock(&s->mu);
}

/* -- requests ------------------------------------------------------------- */

static void stream_timer_arm(eddy_llm_req *r);

/* Keep E as R's last failure (out of memory, only its code is reported, with
 * the code's description). */
static void keep_err(eddy_llm_req *r, const eddy_err *e)
{
    if (!r->err && !(r->err = eddy_malloc(sizeof(*r->err))))
        return;
    r->err->code = e->code;
    r->err->cause = e->cause;
    memcpy(r->err->msg, e->msg, strlen(e->msg) + 1);
}

/* Set R's last failure to CODE (CAUSE: curl's) and the formatted message;
 * returns CODE. */
static int set_err(eddy_llm_req *r, int code, long cause, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int set_err(eddy_llm_req *r, int code, long cause, const char *fmt, ...)
{
    eddy_err e;
    va_list ap;
    va_start(ap, fmt);
    e.code = code;
    e.cause = cause;
    vsnprintf(e.msg, sizeof(e.msg), fmt, ap);
    va_end(ap);
    keep_err(r, &e);
    return code;
}

/* The status code of the attempt's answer so far (0: none yet). */
static long transfer_status(eddy_llm_req *r)
{
    long http = 0;
    if (r->h1)
        return eddy_http1_status(r->h1);
    if (r->lim->native)
        return r->h1_status;
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &http);
    return http;
}

/* End the running attempt's transfer without its completion being reported. */
static void stop_transfer(eddy_llm_req *r)
{
    if (r->h1) {
        r->h1_status = eddy_http1_status(r->h1);
        eddy_http1_free(r->h1);
        r->h1 = NULL;
    } else if (r->easy && r->client->multi) {
        curl_multi_remove_handle(r->client->multi, r->easy);
    }
}

static size_t write_cb(char *p, size_t size, size_t n, void *ud)
{
    eddy_llm_req *r = ud;
    size_t len = size * n;
    long http = 0;
    if (r->streaming) {
        http = transfer_status(r);
        if (http >= 200 && http < 300) {
            if (!r->res.first_token_ms && len)
                r->res.first_token_ms = eddy_now_ms() - r->attempt_ms;
            if (r->stream_failed)
                return 0;
            eddy_err e;
            e.code = 0;
            if (eddy_llm_stream_feed(r->stream, p, len, &e)) {
                r->stream_failed = 1;
                if (e.code) { /* err is the last attempt's until this one ends */
                    keep_err(r, &e);
                    r->stream_err = 1;
                }
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
    eddy_http1_free(r->h1);
    r->h1 = NULL;
    if (r->h1_headers) /* it holds the key */
        memset(r->h1_headers, 0, r->h1_headers_len);
    eddy_free(r->h1_headers);
    r->h1_headers = NULL;
    r->h1_headers_len = 0;
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
    if (r->prev)
        r->prev->next = r->next;
    else
        c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    c->in_flight--;
    release_slot(r);
    if (r->cb) {
        eddy_llm_result res;
        memset(&res, 0, sizeof(res));
        res.status = r->res.status;
        if (r->err)
            res.err = *r->err;
        else if (res.status) /* its detail could not be kept */
            eddy_err_set(&res.err, res.status, "%s", eddy_strerror(res.status));
        res.http_status = r->res.http_status;
        res.attempts = r->res.attempts;
        res.latency_ms = eddy_now_ms() - r->start_ms;
        res.first_token_ms = r->res.first_token_ms;
        res.queued_ms = r->res.queued_ms;
        res.first_wait_ms = r->res.first_wait_ms;
        res.model = r->model;
        if (r->fallback_reason)
            snprintf(res.fallback_reason, sizeof(res.fallback_reason), "%s", r->fallback_reason);
        res.fallbacks = r->res.fallbacks;
        res.resp = r->res.resp;
        memset(&r->res.resp, 0, sizeof(r->res.resp));
        r->cb(&res, r->ud);
        eddy_llm_response_clear(&res.resp);
    }
    eddy_llm_response_clear(&r->res.resp);
    free_attempt(r);
    eddy_buf_free(&r->resp);
    eddy_free(r->err);
    r->err = NULL;
    eddy_free(r->fallback_reason);
    r->fallback_reason = NULL;
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

typedef struct lines {
    eddy_buf b;
    int bad; /* a line held a line break */
} lines;

static void add_line(void *ud, const char *line)
{
    lines *h = ud;
    size_t n = strlen(line);
    if (memchr(line, '\r', n) || memchr(line, '\n', n))
        h->bad = 1;
    else if (n && !eddy_buf_append(&h->b, line, n))
        eddy_buf_append(&h->b, "\r\n", 2);
}

/* The native attempt's header lines (what setup gives curl, less what
 * eddy_http1 adds itself and curl's "Expect:" suppression). */
static int setup_native(eddy_llm_req *r, const eddy_llm_provider *p, eddy_err *err)
{
    const eddy_llm_model *m = r->model;
    lines h = {.bad = 0};
    int rc = 0;
    eddy_buf_init(&h.b);
    eddy_buf_reserve(&h.b, 512); /* no regrowth that would leave a copy of the key behind */
    add_line(&h, "Content-Type: application/json");
    add_line(&h, "User-Agent: eddy/0.1");
    if (m->stream)
        add_line(&h, "Accept: text/event-stream, application/x-ndjson");
    p->headers(m, add_line, &h);
    if (h.bad)
        rc = eddy_err_set(err, EDDY_EINVAL, "model '%s': a header value holds a line break",
                          m->name);
    else if (h.b.oom)
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (rc) {
        if (h.b.data) /* the key does not linger in freed memory */
            memset(h.b.data, 0, h.b.len);
        eddy_buf_free(&h.b);
        return rc;
    }
    r->h1_headers_len = h.b.len;
    r->h1_headers = eddy_buf_take(&h.b);
    return 0;
}

/* M's connect timeout: its own, else its whole timeout up to 10 s (both transports). */
static int64_t connect_timeout_ms(const eddy_llm_model *m)
{
    return m->connect_timeout_ms > 0 ? m->connect_timeout_ms
           : m->timeout_ms < 10000   ? m->timeout_ms
                                     : 10000;
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
    if (!r->body || !r->url)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    r->body_len = strlen(r->body);
    r->charged_tokens =
        eddy_llm_estimate_tokens(r->body_len) + (m->max_tokens > 0 ? m->max_tokens : 256);
    if (r->lim->native)
        return setup_native(r, p, err);
    if (!(r->easy = curl_easy_init()))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
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
    curl_easy_setopt(r->easy, CURLOPT_CLOSESOCKETFUNCTION, close_sock_cb);
    curl_easy_setopt(r->easy, CURLOPT_CLOSESOCKETDATA, r->client);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)m->timeout_ms);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, (long)connect_timeout_ms(m));
    curl_easy_setopt(r->easy, CURLOPT_USERAGENT, "eddy/0.1");
    curl_easy_setopt(r->easy, CURLOPT_BUFFERSIZE, RECV_BUFFER);
    if (!m->stream)
        curl_easy_setopt(r->easy, CURLOPT_ACCEPT_ENCODING, "");
    return 0;
}

/* The attempt could not start (CAUSE, WHY): the request ends on the next
 * turn of the loop, through its timer (never inside the caller). */
static void start_failed(eddy_llm_req *r, long cause, const char *why)
{
    r->res.status = set_err(r, EDDY_ELLM, cause, "cannot start request: %s", why);
    r->canceled = 1;
    r->state = BACKOFF;
    r->timer_kind = T_RETRY;
    uv_timer_start(&r->timer, on_req_timer, 0, 0);
}

/* -- the native transport (eddy_http1) ----------------------------------------------- */

static int h1_header(void *ud, const char *line, size_t n)
{
    header_cb((char *)line, 1, n, ud);
    return 0;
}

static int h1_data(void *ud, long status, const char *p, size_t n)
{
    (void)status;
    return write_cb((char *)p, 1, n, ud) != n;
}

/* The attempt's end, in the words attempt_done knows (curl's codes). */
static void h1_done(void *ud, const eddy_http1_result *res)
{
    eddy_llm_req *r = ud;
    CURLcode cc = CURLE_OK;
    r->h1_status = res->status;
    switch (res->code) {
    case 0:
        break;
    case EDDY_ETIMEDOUT:
        cc = CURLE_OPERATION_TIMEDOUT;
        break;
    case EDDY_EPARSE:
        cc = CURLE_WEIRD_SERVER_REPLY;
        break;
    case EDDY_ECANCELED:
        cc = CURLE_WRITE_ERROR;
        break;
    case EDDY_ENOMEM:
        cc = CURLE_OUT_OF_MEMORY;
        break;
    default:
        cc = res->stage == EDDY_HTTP1_RESOLVE   ? CURLE_COULDNT_RESOLVE_HOST
             : res->stage == EDDY_HTTP1_CONNECT ? CURLE_COULDNT_CONNECT
             : res->stage == EDDY_HTTP1_SEND    ? CURLE_SEND_ERROR
                                                : CURLE_RECV_ERROR;
    }
    char detail[EDDY_ERR_MSG_MAX];
    snprintf(detail, sizeof(detail), "%s", res->msg ? res->msg : "");
    eddy_http1_free(r->h1); /* allowed in its own callback */
    r->h1 = NULL;
    attempt_done(r, cc, cc == CURLE_OK ? NULL : detail);
}

static void start_native(eddy_llm_req *r)
{
    static const eddy_http1_cbs cbs = {h1_header, h1_data, h1_done};
    const eddy_llm_model *m = r->model;
    eddy_http1_spec spec = {
        .method = "POST",
        .url = r->url,
        .headers = r->h1_headers,
        .headers_len = r->h1_headers_len,
        .body = r->body,
        .body_len = r->body_len,
        .timeout_ms = m->timeout_ms,
        .connect_timeout_ms = connect_timeout_ms(m),
    };
    eddy_err e;
    eddy_http1_free(r->h1); /* a retry's previous attempt */
    r->h1 = NULL;
    r->h1_status = 0;
    if (r->streaming && !r->stream)
        eddy_err_set(&e, EDDY_ENOMEM, "out of memory");
    else if (!eddy_http1_start(r->client->h1, &spec, &cbs, r, &r->h1, &e)) {
        stream_timer_arm(r);
        return;
    }
    start_failed(r, e.code, e.msg);
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
    r->stream_failed = r->stream_err = 0;
    eddy_llm_stream_free(r->stream);
    r->stream = NULL;
    if (r->streaming) {
        const eddy_llm_provider *p =
            r->model->prov ? r->model->prov : eddy_llm_provider_find(r->model->provider);
        r->stream = eddy_llm_stream_new(p, r->rq);
    }
    r->retry_after[0] = r->retry_after_ms[0] = '\0';
    if (r->lim->native) {
        start_native(r);
        return;
    }
    mc = r->streaming && !r->stream ? CURLM_OUT_OF_MEMORY
                                    : curl_multi_add_handle(r->client->multi, r->easy);
    if (mc != CURLM_OK) {
        start_failed(r, mc, curl_multi_strerror(mc));
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
    char reason[sizeof(((eddy_llm_result *)0)->fallback_reason)];
    snprintf(reason, sizeof(reason), "%s: %s", r->model->name, why);
    eddy_free(r->fallback_reason);
    r->fallback_reason = eddy_strdup(reason); /* out of memory: the reason is left out */
    EDDY_INFO("llm", "model '%s' failed (%s); falling back to '%s'", r->model->name, why,
              next->name);
    r->res.fallbacks++;
    limiter *old = r->lim, *nl = limiter_for(r->client, next);
    release_slot(r);
    if (!nl) {
        r->res.status = set_err(r, EDDY_ENOMEM, 0, "out of memory");
        return -1; /* finish() admits the old limiter's waiters */
    }
    r->model = next;
    r->model_attempts = 0;
    r->unavailable_since_ms = 0;
    r->lim = nl;
    if (setup(r, &e)) {
        r->res.status = e.code;
        keep_err(r, &e);
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
            stop_transfer(r);
        if (!r->res.status)
            r->res.status = set_err(r, EDDY_ECANCELED, 0, "request canceled");
        finish(r);
        return;
    }
    if (kind == T_STREAM && r->state == RUNNING) {
        /* the stream went quiet: end this attempt like a timeout */
        stop_transfer(r);
        r->stream_failed = r->stream_err = 1;
        set_err(r, EDDY_ETIMEDOUT, 0, "%s: no %s within %lld ms", r->url,
                r->res.first_token_ms ? "stream data" : "first token",
                (long long)(r->res.first_token_ms ? r->model->idle_timeout_ms
                                                  : r->model->first_token_timeout_ms));
        attempt_done(r, CURLE_OPERATION_TIMEDOUT, NULL);
        return;
    }
    if (r->state == BACKOFF)
        enqueue(r, 1); /* a retry keeps its place at the head */
}

/* The end of one attempt: parse, or decide on a retry, a fallback or the end. */
static void attempt_done(eddy_llm_req *r, CURLcode cc, const char *detail)
{
    const eddy_llm_model *m = r->model;
    const eddy_llm_provider *p = m->prov ? m->prov : eddy_llm_provider_find(m->provider);
    long http = 0;
    int transport = cc != CURLE_OK, parsed = 0, timed_out = 0;
    eddy_llm_error_info info;
    int64_t delay;
    char why[EDDY_ERR_MSG_MAX];
    eddy_err e; /* the failure, from the last attempt's; kept in r->err at the end */
    if (r->timer_kind == T_STREAM) {
        uv_timer_stop(&r->timer);
        r->timer_kind = T_NONE;
    }
    http = transfer_status(r);
    r->res.http_status = http;
    if (r->err) {
        e = *r->err;
    } else {
        e.code = 0;
        e.cause = 0;
        e.msg[0] = '\0';
    }
    eddy_llm_response_clear(&r->res.resp);
    memset(&info, 0, sizeof(info));
    resync(r);
    if (r->stream_failed && r->stream_err) {
        /* our own stop (bad event, idle timeout) or the server's error event */
        r->stream_err = 0;
        redact(e.msg, m->api_key);
        timed_out = e.code == EDDY_ETIMEDOUT;
        transport = 1;
        parsed = e.code != EDDY_ETIMEDOUT;
    } else if (!transport && http >= 200 && http < 300) {
        int rc = r->streaming ? eddy_llm_stream_finish(r->stream, &r->res.resp, &e)
                              : eddy_llm_parse(m, r->rq, r->resp.data ? r->resp.data : "",
                                               r->resp.len, &r->res.resp, &e);
        if (rc == 0) {
            eddy_llm_usage *u = &r->res.resp.usage;
            /* a server's numbers, not ours: never negative, never absurd */
            long *counts[] = {&u->input_tokens, &u->output_tokens, &u->cached_input_tokens,
                              &u->cache_write_tokens, &u->reasoning_tokens};
            for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++)
                *counts[i] = *counts[i] < 0                    ? 0
                             : *counts[i] > EDDY_LLM_MAX_USAGE ? EDDY_LLM_MAX_USAGE
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
            shared_lim *s = r->lim->sh;
            pthread_mutex_lock(&s->mu);
            if (s->tpm > 0) { /* correct the estimate, by at most a bucket's worth */
                double d = (double)r->charged_tokens - (double)(u->input_tokens + u->output_tokens);
                double cap = tok_cap(s);
                s->tok_level += d < -cap ? -cap : d > cap ? cap : d;
            }
            pthread_mutex_unlock(&s->mu);
            r->res.status = 0;
            finish(r);
            return;
        }
        parsed = 1;              /* a broken 2xx body or stream: worth another attempt */
        if (e.code == EDDY_ELLM) /* the server's error in a 2xx body */
            parsed = 2;
    }
    if (e.code && (parsed || r->stream_failed)) {
        /* the message is already in res.err */
    } else if (transport && cc == CURLE_OPERATION_TIMEDOUT) {
        timed_out = 1;
        eddy_err_setc(&e, EDDY_ETIMEDOUT, cc, "%s: timed out after %lld ms", r->url,
                      (long long)m->timeout_ms);
    } else if (transport) {
        eddy_err_setc(&e, EDDY_ENET, cc, "%s: %s", r->url,
                      detail ? detail : curl_easy_strerror(cc));
    } else {
        if (r->resp.data) /* before anything cuts it */
            r->resp.len = redact_n(r->resp.data, r->resp.len, m->api_key);
        p->error_info(r->resp.data ? r->resp.data : "", r->resp.len, &info);
        redact(info.message, m->api_key);
        redact(info.code, m->api_key);
        eddy_err_setc(&e, EDDY_EHTTP, http, "%s: HTTP %ld%s%s%s%s", r->url, http,
                      info.code[0] ? " " : "", info.code, info.message[0] ? ": " : "",
                      info.message);
    }
    redact(e.msg, m->api_key);
    r->res.status = e.code;
    keep_err(r, &e);
    if (r->canceled) {
        finish(r);
        return;
    }
    long as_http = parsed ? 500 : http;
    delay =
        eddy_llm_retry_delay(m, r->model_attempts, as_http, transport, r->retry_after_ms,
                             r->retry_after, info.code[0] ? info.code : NULL, eddy_random_unit());
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
        snprintf(why, sizeof(why),
                 "%s; the server asked to retry after %.1f s, longer than "
                 "retry.max_wait (%.1f s)",
                 e.msg, (double)asked / 1000, (double)m->max_wait_ms / 1000);
        eddy_err_setc(&e, e.code, e.cause, "%s", why);
        keep_err(r, &e);
        if (http == 429) { /* everyone else waits too, no longer than max_wait */
            int64_t mw = m->max_wait_ms;
            pause_until(r->lim->sh, eddy_now_ms() + (uint64_t)(asked < mw ? asked : mw));
        }
    }
    if (delay < 0) {
        int fallback_ok = timed_out || transport || http >= 500 || info.overloaded || http == 429 ||
                          http == 408 || parsed;
        snprintf(why, sizeof(why), "%s", e.msg);
        if (fallback_ok && fall_back(r, why) == 0)
            return;
        finish(r);
        return;
    }
    EDDY_DEBUG("llm", "attempt %d to %s failed (%s); retrying in %lld ms", r->res.attempts, m->name,
               e.msg, (long long)delay);
    if (http == 429 || info.overloaded) { /* the whole limiter waits, in every client */
        pause_until(r->lim->sh, eddy_now_ms() + (uint64_t)delay); /* before others wake */
        release_slot(r);
        enqueue(r, 1);
        return;
    }
    release_slot(r);
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
        attempt_done(r, cc, NULL);
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
    r->res.status = set_err(r, EDDY_ECANCELED, 0, "request canceled");
    if (r->state == RUNNING)
        stop_transfer(r);
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
    if (!c || !(c->multi = curl_multi_init()) || eddy_http1_new(loop, &c->h1, NULL)) {
        if (c && c->multi)
            curl_multi_cleanup(c->multi);
        eddy_free(c);
        return eddy_err_set(err, EDDY_ENOMEM, "cannot create the LLM client");
    }
    c->loop = loop;
    if (uv_async_init(loop, &c->wake, on_wake)) {
        curl_multi_cleanup(c->multi);
        eddy_http1_close(c->h1);
        eddy_free(c);
        return eddy_err_set(err, EDDY_EUV, "cannot create the LLM client's wake-up");
    }
    c->wake.data = c;
    uv_unref((uv_handle_t *)&c->wake); /* referenced only while a local waits for a slot */
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
    if (c->open_handles > 0)
        return;
    eddy_free(c->socks);
    eddy_free(c->by_model);
    while (c->limiters) {
        limiter *l = c->limiters;
        c->limiters = l->next;
        shared_put(l->sh);
        eddy_free(l->url);
        eddy_free(l);
    }
    eddy_free(c);
}

static void limiter_timer_closed(uv_handle_t *h)
{
    limiter *l = h->data;
    eddy_llm_client *c = l->client;
    c->open_handles--;
    maybe_free_client(c);
}

static void client_handle_closed(uv_handle_t *h) /* the client's timer and WAKE */
{
    eddy_llm_client *c = h->data;
    c->open_handles--;
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
            stop_transfer(r);
        r->res.status = set_err(r, EDDY_ECANCELED, 0, "request canceled");
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
    curl_multi_cleanup(c->multi); /* closes its sockets: close_sock_cb */
    c->multi = NULL;
    eddy_http1_close(c->h1); /* frees itself once its handles have closed */
    c->h1 = NULL;
    for (size_t i = 0; i < c->nsocks; i++) /* none should be left: curl closed them all */
        if (c->socks[i]) {
            c->socks[i]->closing = 1;
            uv_close((uv_handle_t *)&c->socks[i]->poll, sock_closed);
            c->socks[i] = NULL;
        }
    c->open_handles += 2;
    for (limiter *l = c->limiters; l; l = l->next) {
        assert(!l->head);
        wait_leave(l); /* before WAKE closes: nobody sends to it after this */
        uv_close((uv_handle_t *)&l->timer, limiter_timer_closed);
    }
    uv_close((uv_handle_t *)&c->wake, client_handle_closed);
    uv_close((uv_handle_t *)&c->timer, client_handle_closed);
}
