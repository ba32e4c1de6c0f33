/*
 * net/http1.c - a plain-HTTP/1.1 client on libuv (see include/eddy/http1.h).
 *
 * Objects: the client (one per loop) holds its origins (host and port: the
 * resolved addresses and the idle connections), every connection and every
 * live request. A connection carries at most one request; the request holds
 * the head it sends and a timer (its deadline, and the turn of the loop on
 * which a failure found inside eddy_http1_start is reported). Memory goes
 * only from close callbacks: a connection's from its TCP handle's, a
 * request's from its timer's; the client's once it has no handle left.
 *
 * Reading: every connection reads all the time, into the client's one
 * buffer (a read callback consumes it before the next read), so an idle
 * connection costs no buffer and its end (the server closed it) is seen at
 * once. The answer is parsed as it comes: the head line by line (lines cut
 * across reads are gathered in the connection's line buffer), then the body
 * by Content-Length, by chunks, or until the end of the connection.
 *
 * Invariants: conn->req and req->conn point at each other or are both
 * NULL; a connection with a request is never in an idle list; a request
 * freed by its owner is detached from everything at once, so no callback
 * can reach it, and its memory waits only for callbacks in progress.
 */
#include "eddy/http1.h"
#include "eddy/buf.h"
#include "eddy/json.h"

#include <arpa/inet.h>
#include <assert.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_IDLE 1024        /* idle connections kept per origin */
#define IDLE_MS 60000        /* and for at most this long */
#define DNS_TTL_MS 60000     /* a name's addresses are kept this long */
#define MAX_HEAD (64u << 10) /* an answer's head (status line and headers) */
#define MAX_ADDRS 16         /* addresses tried per name */
#define READ_BUF (64u << 10) /* the client's one read buffer */
#define MSG_MAX 256

typedef struct origin origin;
typedef struct conn conn;

struct origin {
    eddy_http1 *c;
    char *host; /* without brackets */
    int port;
    struct sockaddr_storage addrs[MAX_ADDRS];
    int naddrs;
    uint64_t resolved_ms; /* 0: resolve before the next connection */
    int numeric;          /* the host is an address: never resolved */
    uv_getaddrinfo_t gai;
    int resolving;
    eddy_http1_req *wait_head, *wait_tail; /* requests waiting for the name */
    eddy_http1_req *serving;               /* those the lookup ending now answers */
    conn *idle, *idle_tail;                /* most recently used first */
    int nidle;
    origin *next;
};

/* What the parser expects next. */
enum { P_HEAD, P_LEN, P_CHUNK_SIZE, P_CHUNK_DATA, P_CHUNK_END, P_TRAILER, P_EOF, P_DONE };

struct conn {
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t wr;
    eddy_http1 *c;
    origin *o;
    eddy_http1_req *req;
    int connected, closing, writing, uses, addr_i;
    int send_err; /* the request's write failed (a uv error): the read side reports it */
    uint64_t idle_since;
    conn *inext, *iprev; /* in o's idle list */
    conn *next, *prev;   /* in the client's list */
    /* the answer being read */
    int ps, chunked, has_len, keep, said_close, got, bodyless;
    size_t head_bytes; /* of the head (and trailers) so far */
    long status;
    uint64_t remaining;
    eddy_buf line;
};

enum { T_NONE, T_CONNECT, T_DEADLINE, T_FAIL };

struct eddy_http1_req {
    eddy_http1 *c;
    origin *o;
    conn *conn;
    eddy_http1_cbs cb;
    void *ud;
    char *head;
    size_t head_len;
    const char *body;
    size_t body_len;
    uv_timer_t timer;
    int tk; /* what the timer waits for */
    int64_t timeout_ms, connect_timeout_ms;
    uint64_t start_ms, connect_ms; /* the request's start, its connection's */
    long status;
    int bodyless, retried, ended, freed, in_cb, waiting;
    eddy_http1_result fail; /* T_FAIL: reported by the timer */
    char msg[MSG_MAX];
    eddy_http1_req *wnext;       /* waiting for o's name */
    eddy_http1_req *next, *prev; /* the client's live requests */
};

struct eddy_http1 {
    uv_loop_t *loop;
    origin *origins;
    conn *conns;
    eddy_http1_req *reqs;
    long handles; /* connections, request timers and lookups not yet closed or called back */
    int closing;
    uint64_t idle_ms; /* how long an idle connection is kept */
    uv_timer_t sweep; /* closes idle connections whose time is up (once there is one) */
    int sweep_init;
    char rbuf[READ_BUF];
};

static void conn_close(conn *k);
static void connect_next(eddy_http1_req *r, int from);
static void send_req(eddy_http1_req *r);
static void on_req_timer(uv_timer_t *t);

/* -- the client -------------------------------------------------------------- */

int eddy_http1_new(uv_loop_t *loop, eddy_http1 **out, eddy_err *err)
{
    eddy_http1 *c = eddy_calloc(1, sizeof(*c));
    *out = NULL;
    if (!c)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    c->loop = loop;
    c->idle_ms = IDLE_MS;
    *out = c;
    return 0;
}

void eddy_http1_set_idle_ms(eddy_http1 *c, int64_t ms)
{
    if (ms > 0)
        c->idle_ms = (uint64_t)ms;
}

static void maybe_free_client(eddy_http1 *c)
{
    if (!c->closing || c->handles > 0)
        return;
    assert(!c->conns && !c->reqs);
    while (c->origins) {
        origin *o = c->origins;
        c->origins = o->next;
        eddy_free(o->host);
        eddy_free(o);
    }
    eddy_free(c);
}

static void on_sweep_closed(uv_handle_t *h)
{
    eddy_http1 *c = h->data;
    c->handles--;
    maybe_free_client(c);
}

void eddy_http1_close(eddy_http1 *c)
{
    if (!c || c->closing)
        return;
    c->closing = 1;
    if (c->sweep_init)
        uv_close((uv_handle_t *)&c->sweep, on_sweep_closed);
    while (c->reqs)
        eddy_http1_free(c->reqs);
    for (conn *k = c->conns; k; k = k->next) /* they leave the list from their callbacks */
        if (!k->closing)
            conn_close(k);
    for (origin *o = c->origins; o; o = o->next)
        if (o->resolving)
            uv_cancel((uv_req_t *)&o->gai); /* its callback still comes */
    maybe_free_client(c);
}

/* -- URLs and the environment ------------------------------------------------------ */

typedef struct url_parts {
    const char *host;
    size_t host_len;
    int port;
    const char *target; /* path and query; NULL: "/" */
    size_t target_len;
} url_parts;

static int parse_url(const char *url, url_parts *u)
{
    const char *p, *a;
    memset(u, 0, sizeof(*u));
    if (!url || strncasecmp(url, "http://", 7))
        return -1;
    a = url + 7;
    p = a + strcspn(a, "/?#");
    if (memchr(a, '@', (size_t)(p - a)))
        return -1; /* user information: curl's */
    u->port = 80;
    if (*a == '[') {
        const char *e = memchr(a, ']', (size_t)(p - a));
        if (!e || e == a + 1)
            return -1;
        u->host = a + 1;
        u->host_len = (size_t)(e - a - 1);
        /* it goes into the Host header as it is: an IPv6 address, nothing
         * else (no line break, no zone: those go to curl) */
        for (size_t i = 0; i < u->host_len; i++) {
            char ch = u->host[i];
            if (!((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') ||
                  (ch >= 'A' && ch <= 'F') || ch == ':' || ch == '.'))
                return -1;
        }
        a = e + 1;
    } else {
        u->host = a;
        u->host_len = strcspn(a, ":/?#");
        if (!u->host_len)
            return -1;
        for (size_t i = 0; i < u->host_len; i++) {
            char ch = a[i];
            if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_'))
                return -1;
        }
        a += u->host_len;
    }
    if (a < p && *a == ':') {
        long port = 0;
        if (++a == p)
            return -1;
        for (; a < p; a++) {
            if (*a < '0' || *a > '9' || (port = port * 10 + (*a - '0')) > 65535)
                return -1;
        }
        if (port < 1)
            return -1;
        u->port = (int)port;
    }
    if (a != p)
        return -1;
    size_t tl = strcspn(p, "#");
    for (size_t i = 0; i < tl; i++)
        if ((unsigned char)p[i] <= 0x20 || (unsigned char)p[i] == 0x7f)
            return -1;
    if (tl) {
        u->target = p;
        u->target_len = tl;
    }
    return 0;
}

/* 1 when no_proxy's value NP names HOST (a domain or a parent domain, or *). */
static int no_proxy_names(const char *np, const char *host, size_t hl)
{
    while (np && *np) {
        size_t n = strcspn(np, ", ");
        const char *e = np;
        size_t el = n;
        if (el && *e == '.') {
            e++;
            el--;
        }
        if (n == 1 && *np == '*')
            return 1;
        if (el && el <= hl && !strncasecmp(host + hl - el, e, el) &&
            (el == hl || host[hl - el - 1] == '.'))
            return 1;
        np += n;
        np += strspn(np, ", ");
    }
    return 0;
}

int eddy_http1_takes(const char *url)
{
    static const char *const proxies[] = {"http_proxy", "all_proxy", "ALL_PROXY", "HTTP_PROXY"};
    url_parts u;
    const char *off = getenv("EDDY_HTTP1");
    if ((off && !strcmp(off, "0")) || parse_url(url, &u))
        return 0;
    for (size_t i = 0; i < sizeof(proxies) / sizeof(proxies[0]); i++) {
        const char *v = getenv(proxies[i]);
        if (v && *v) {
            const char *np = getenv("no_proxy");
            if (!np || !*np)
                np = getenv("NO_PROXY");
            return no_proxy_names(np, u.host, u.host_len);
        }
    }
    return 1;
}

/* -- requests: the end --------------------------------------------------------- */

static void on_timer_closed(uv_handle_t *h)
{
    eddy_http1_req *r = h->data;
    eddy_http1 *c = r->c;
    memset(r->head, 0, r->head_len); /* it may hold an API key */
    eddy_free(r->head);
    eddy_free(r);
    c->handles--;
    maybe_free_client(c);
}

/* R's memory goes, now that no callback of R's is running. */
static void reap(eddy_http1_req *r)
{
    assert(r->freed && !r->in_cb);
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
}

/* Take R out of the list at *PP (its last: *TAIL, when TAIL); 1 when it was
 * there. */
static int unlink_waiter(eddy_http1_req **pp, eddy_http1_req **tail, eddy_http1_req *r)
{
    for (eddy_http1_req *prev = NULL; *pp; prev = *pp, pp = &(*pp)->wnext)
        if (*pp == r) {
            *pp = r->wnext;
            if (tail && *tail == r)
                *tail = prev;
            return 1;
        }
    return 0;
}

static void unwait(eddy_http1_req *r)
{
    origin *o = r->o;
    if (!r->waiting)
        return;
    r->waiting = 0;
    if (!unlink_waiter(&o->wait_head, &o->wait_tail, r))
        unlink_waiter(&o->serving, NULL, r);
    r->wnext = NULL;
}

/* Detach R from its connection (closed: it is in the middle of R), its
 * lookup and its timer. */
static void end_req(eddy_http1_req *r)
{
    r->ended = 1;
    unwait(r);
    if (r->conn)
        conn_close(r->conn);
    uv_timer_stop(&r->timer);
    r->tk = T_NONE;
}

void eddy_http1_free(eddy_http1_req *r)
{
    if (!r || r->freed)
        return;
    r->freed = 1;
    end_req(r);
    if (r->prev)
        r->prev->next = r->next;
    else
        r->c->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (!r->in_cb)
        reap(r);
}

/* After a callback of R's: 1 when R was freed in it (and is gone now). */
static int gone(eddy_http1_req *r)
{
    if (!r->freed)
        return 0;
    if (!r->in_cb)
        reap(r);
    return 1;
}

static void done(eddy_http1_req *r, int code, int stage, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The end of R: its done callback. A failure closes the connection. */
static void done(eddy_http1_req *r, int code, int stage, const char *fmt, ...)
{
    eddy_http1_result res = {code, code ? stage : 0, r->status, NULL};
    if (r->ended)
        return;
    end_req(r);
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(r->msg, sizeof(r->msg), fmt, ap);
        va_end(ap);
        res.msg = r->msg;
    }
    r->in_cb++;
    r->cb.done(r->ud, &res);
    r->in_cb--;
    gone(r);
}

/* A failure found where no callback may run (inside eddy_http1_start):
 * reported by R's timer on the next turn of the loop. */
static void fail_later(eddy_http1_req *r, int code, int stage, const char *msg)
{
    r->fail.code = code;
    r->fail.stage = stage;
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
    r->tk = T_FAIL;
    uv_timer_start(&r->timer, on_req_timer, 0, 0);
}

static const char *where(const eddy_http1_req *r, char *buf, size_t n)
{
    const origin *o = r->o;
    snprintf(buf, n, strchr(o->host, ':') ? "[%s]:%d" : "%s:%d", o->host, o->port);
    return buf;
}

static void on_req_timer(uv_timer_t *t)
{
    eddy_http1_req *r = t->data;
    char w[300];
    int tk = r->tk;
    r->tk = T_NONE;
    if (tk == T_FAIL) {
        char msg[MSG_MAX]; /* done formats into r->msg: not from r->msg itself */
        memcpy(msg, r->msg, sizeof(msg));
        done(r, r->fail.code, r->fail.stage, "%s", msg);
    } else if (tk == T_CONNECT) {
        done(r, EDDY_ETIMEDOUT, EDDY_HTTP1_CONNECT, "connection to %s timed out after %lld ms",
             where(r, w, sizeof(w)), (long long)r->connect_timeout_ms);
    } else if (tk == T_DEADLINE) {
        done(r, EDDY_ETIMEDOUT,
             r->conn && r->conn->connected ? EDDY_HTTP1_RECV : EDDY_HTTP1_CONNECT,
             "timed out after %lld ms", (long long)r->timeout_ms);
    }
}

/* Arm R's deadline: the connect timeout while not connected (when it comes
 * first), then the rest of the whole timeout. The connect timeout counts
 * from the start of the connection being made (a retry's own), the whole
 * one from the request's start. */
static void arm(eddy_http1_req *r, int connected)
{
    uint64_t now = uv_now(r->c->loop), left = 0;
    int tk = T_NONE;
    if (r->tk == T_FAIL)
        return;
    if (r->timeout_ms > 0) {
        uint64_t to = (uint64_t)r->timeout_ms, spent = now - r->start_ms;
        tk = T_DEADLINE;
        left = to > spent ? to - spent : 0;
    }
    if (!connected && r->connect_timeout_ms > 0) {
        uint64_t ct = (uint64_t)r->connect_timeout_ms, spent = now - r->connect_ms;
        if (tk == T_NONE || (ct > spent ? ct - spent : 0) < left) {
            tk = T_CONNECT;
            left = ct > spent ? ct - spent : 0;
        }
    }
    r->tk = tk;
    if (tk == T_NONE)
        uv_timer_stop(&r->timer);
    else
        uv_timer_start(&r->timer, on_req_timer, left, 0);
}

/* -- connections ------------------------------------------------------------------- */

static void on_conn_closed(uv_handle_t *h)
{
    conn *k = h->data;
    eddy_http1 *c = k->c;
    if (k->prev)
        k->prev->next = k->next;
    else
        c->conns = k->next;
    if (k->next)
        k->next->prev = k->prev;
    eddy_buf_free(&k->line);
    eddy_free(k);
    c->handles--;
    maybe_free_client(c);
}

static void idle_remove(conn *k)
{
    origin *o = k->o;
    if (k->iprev)
        k->iprev->inext = k->inext;
    else if (o->idle == k)
        o->idle = k->inext;
    else
        return; /* not idle */
    if (k->inext)
        k->inext->iprev = k->iprev;
    else
        o->idle_tail = k->iprev;
    k->inext = k->iprev = NULL;
    o->nidle--;
}

static void conn_close(conn *k)
{
    if (k->closing)
        return;
    k->closing = 1;
    idle_remove(k);
    if (k->req) {
        k->req->conn = NULL;
        k->req = NULL;
    }
    uv_close((uv_handle_t *)&k->tcp, on_conn_closed);
}

/* Close the idle connections of every origin whose time is up; then wait
 * for the next one's, while there is one. The timer holds no reference on
 * the loop: idle connections are no work. */
static void on_sweep(uv_timer_t *t)
{
    eddy_http1 *c = t->data;
    uint64_t now = uv_now(c->loop), next = UINT64_MAX;
    for (origin *o = c->origins; o; o = o->next) {
        while (o->idle_tail && now - o->idle_tail->idle_since >= c->idle_ms)
            conn_close(o->idle_tail);
        if (o->idle_tail && o->idle_tail->idle_since + c->idle_ms < next)
            next = o->idle_tail->idle_since + c->idle_ms;
    }
    if (next != UINT64_MAX)
        uv_timer_start(&c->sweep, on_sweep, next > now ? next - now : 1, 0);
}

static void idle_put(conn *k)
{
    origin *o = k->o;
    eddy_http1 *c = k->c;
    assert(!k->req && !k->closing);
    k->idle_since = uv_now(c->loop);
    k->iprev = NULL;
    k->inext = o->idle;
    if (o->idle)
        o->idle->iprev = k;
    else
        o->idle_tail = k;
    o->idle = k;
    if (++o->nidle > MAX_IDLE)
        conn_close(o->idle_tail);
    if (!c->sweep_init) {
        uv_timer_init(c->loop, &c->sweep);
        uv_unref((uv_handle_t *)&c->sweep);
        c->sweep.data = c;
        c->sweep_init = 1;
        c->handles++;
    }
    if (!uv_is_active((uv_handle_t *)&c->sweep))
        uv_timer_start(&c->sweep, on_sweep, c->idle_ms, 0);
}

/* The most recently used idle connection of O that is not too old. */
static conn *idle_take(origin *o)
{
    uint64_t now = uv_now(o->c->loop);
    while (o->idle_tail && now - o->idle_tail->idle_since >= o->c->idle_ms)
        conn_close(o->idle_tail);
    conn *k = o->idle;
    if (k)
        idle_remove(k);
    return k;
}

static void reset_answer(conn *k)
{
    k->ps = P_HEAD;
    k->status = 0;
    k->chunked = k->has_len = k->said_close = 0;
    k->keep = 1;
    k->remaining = 0;
    k->head_bytes = 0;
    eddy_buf_reset(&k->line);
}

static void attach(eddy_http1_req *r, conn *k)
{
    assert(!r->conn && !k->req);
    r->conn = k;
    k->req = r;
    k->bodyless = r->bodyless;
    k->got = 0; /* not in reset_answer: an interim answer shows the request arrived */
    k->send_err = 0;
    r->status = 0;
    reset_answer(k);
}

/* -- reading the answer ------------------------------------------------------------ */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn *k = h->data;
    (void)suggested;
    *buf = uv_buf_init(k->c->rbuf, sizeof(k->c->rbuf));
}

/* A whole answer: the connection goes back to the pool when it may, then
 * the done callback. LEFTOVER: bytes after the answer (the connection is
 * not reused: nothing was asked for them). */
static void complete(conn *k, size_t leftover)
{
    eddy_http1_req *r = k->req;
    int keep =
        k->keep && k->ps == P_DONE && !k->writing && !k->send_err && !leftover && !k->c->closing;
    k->req = NULL;
    r->conn = NULL;
    k->uses++;
    if (keep)
        idle_put(k);
    else
        conn_close(k);
    done(r, 0, 0, NULL);
}

/* Stop R for a reason found in its answer (the connection is closed). */
static int proto(eddy_http1_req *r, const char *what)
{
    done(r, EDDY_EPARSE, EDDY_HTTP1_RECV, "%s", what);
    return 1;
}

/* After a header or data callback of R's that returned RC: 1 when R ended
 * (freed in it, or stopped by it: EDDY_ECANCELED). */
static int after_cb(eddy_http1_req *r, int rc)
{
    r->in_cb--;
    if (gone(r))
        return 1;
    if (rc)
        done(r, EDDY_ECANCELED, EDDY_HTTP1_RECV, "stopped by its caller");
    return rc != 0;
}

static int call_header(eddy_http1_req *r, const char *line, size_t n)
{
    if (!r->cb.header)
        return 0;
    r->in_cb++;
    return after_cb(r, r->cb.header(r->ud, line, n));
}

static int body(conn *k, const char *p, size_t n)
{
    eddy_http1_req *r = k->req;
    if (!n || !r->cb.data)
        return 0;
    r->in_cb++;
    return after_cb(r, r->cb.data(r->ud, r->status, p, n));
}

/* 1 when the comma-separated list V (N bytes) holds TOKEN. */
static int has_token(const char *v, size_t n, const char *token)
{
    size_t tl = strlen(token);
    for (size_t i = 0; i < n;) {
        while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t s = i;
        while (i < n && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (i - s == tl && !strncasecmp(v + s, token, tl))
            return 1;
    }
    return 0;
}

/* The last coding of a Transfer-Encoding list V is chunked. */
static int last_is_chunked(const char *v, size_t n)
{
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        n--;
    return n >= 7 && !strncasecmp(v + n - 7, "chunked", 7) &&
           (n == 7 || v[n - 8] == ',' || v[n - 8] == ' ' || v[n - 8] == '\t');
}

static int status_line(conn *k, const char *l, size_t n)
{
    eddy_http1_req *r = k->req;
    if (n < 12 || strncmp(l, "HTTP/1.", 7) || (l[7] != '0' && l[7] != '1') || l[8] != ' ' ||
        l[9] < '1' || l[9] > '5' || l[10] < '0' || l[10] > '9' || l[11] < '0' || l[11] > '9' ||
        (n > 12 && l[12] != ' '))
        return proto(r, "the answer does not start with an HTTP/1.x status line");
    k->status = r->status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
    k->keep = l[7] == '1';
    return call_header(r, l, n);
}

static int header_line(conn *k, const char *l, size_t n)
{
    eddy_http1_req *r = k->req;
    const char *colon = memchr(l, ':', n);
    if (!colon || colon == l || l[0] == ' ' || l[0] == '\t')
        return proto(r, "a malformed header line in the answer");
    size_t nl = (size_t)(colon - l), vs = nl + 1;
    while (vs < n && (l[vs] == ' ' || l[vs] == '\t'))
        vs++;
    const char *v = l + vs;
    size_t vn = n - vs;
    for (size_t i = 0; i < nl; i++)
        if (l[i] == ' ' || l[i] == '\t')
            return proto(r, "a malformed header name in the answer");
    if (nl == 14 && !strncasecmp(l, "content-length", 14)) {
        uint64_t len = 0;
        size_t i = 0;
        while (vn && (v[vn - 1] == ' ' || v[vn - 1] == '\t'))
            vn--;
        if (!vn || vn > 18)
            return proto(r, "a bad Content-Length in the answer");
        for (; i < vn; i++) {
            if (v[i] < '0' || v[i] > '9')
                return proto(r, "a bad Content-Length in the answer");
            len = len * 10 + (uint64_t)(v[i] - '0');
        }
        if (k->has_len && len != k->remaining)
            return proto(r, "two different Content-Length headers in the answer");
        k->has_len = 1;
        k->remaining = len;
    } else if (nl == 17 && !strncasecmp(l, "transfer-encoding", 17)) {
        if (!last_is_chunked(v, vn))
            return proto(r, "a transfer coding other than chunked in the answer");
        k->chunked = 1;
    } else if (nl == 10 && !strncasecmp(l, "connection", 10)) {
        /* "close" anywhere wins over a keep-alive in another header line */
        if (has_token(v, vn, "close"))
            k->keep = 0, k->said_close = 1;
        else if (has_token(v, vn, "keep-alive") && !k->said_close)
            k->keep = 1;
    }
    return call_header(r, l, n);
}

/* The empty line after a head: what the body is. */
static int head_end(conn *k)
{
    eddy_http1_req *r = k->req;
    if (k->status == 101)
        return proto(r, "the server switched protocols (101), which was not asked for");
    if (k->status < 200) { /* an interim answer: the real one follows */
        reset_answer(k);
        return 0;
    }
    if (k->chunked && k->has_len) /* RFC 9112 6.3: the coding wins; the connection ends */
        k->has_len = 0, k->keep = 0;
    /* a 204 may not say it has a body (RFC 9110 8.6): one that does may send
     * it, later than this read, where the next request would take it for
     * its answer; the connection is not reused */
    if (k->status == 204 && (k->chunked || (k->has_len && k->remaining)))
        k->keep = 0;
    if (k->bodyless || k->status == 204 || k->status == 304)
        k->ps = P_DONE;
    else if (k->chunked)
        k->ps = P_CHUNK_SIZE;
    else if (k->has_len)
        k->ps = k->remaining ? P_LEN : P_DONE;
    else {
        k->ps = P_EOF;
        k->keep = 0;
    }
    return 0;
}

static int chunk_size(conn *k, const char *l, size_t n)
{
    uint64_t size = 0;
    size_t i = 0;
    for (; i < n; i++) {
        int d = l[i] >= '0' && l[i] <= '9'   ? l[i] - '0'
                : l[i] >= 'a' && l[i] <= 'f' ? l[i] - 'a' + 10
                : l[i] >= 'A' && l[i] <= 'F' ? l[i] - 'A' + 10
                                             : -1;
        if (d < 0)
            break;
        if (i >= 15)
            return proto(k->req, "a chunk size too large in the answer");
        size = size * 16 + (uint64_t)d;
    }
    if (!i || (i < n && l[i] != ';' && l[i] != ' ' && l[i] != '\t'))
        return proto(k->req, "a bad chunk size in the answer");
    k->remaining = size;
    k->ps = size ? P_CHUNK_DATA : P_TRAILER;
    return 0;
}

/* One whole line L (N bytes, without its line end) in state k->ps; 1 when
 * the request ended (the caller stops). */
static int line(conn *k, const char *l, size_t n)
{
    switch (k->ps) {
    case P_HEAD:
        if (!k->status)
            return status_line(k, l, n);
        return n ? header_line(k, l, n) : head_end(k);
    case P_CHUNK_SIZE:
        return chunk_size(k, l, n);
    case P_CHUNK_END:
        if (n)
            return proto(k->req, "a chunk of the answer is longer than its size");
        k->ps = P_CHUNK_SIZE;
        return 0;
    case P_TRAILER:
        if (!n)
            k->ps = P_DONE;
        return 0;
    }
    assert(0);
    return 1;
}

/* Parse N bytes at P of K's answer. */
static void parse(conn *k, const char *p, size_t n)
{
    while (k->req && k->ps != P_DONE && n) {
        size_t m;
        switch (k->ps) {
        case P_LEN:
        case P_CHUNK_DATA:
            m = n < k->remaining ? n : (size_t)k->remaining;
            if (body(k, p, m))
                return;
            p += m, n -= m;
            if (!(k->remaining -= m))
                k->ps = k->ps == P_LEN ? P_DONE : P_CHUNK_END;
            break;
        case P_EOF:
            body(k, p, n);
            return;
        default: { /* a line */
            const char *nl = memchr(p, '\n', n);
            const char *l = p;
            size_t take = nl ? (size_t)(nl - p) + 1 : n, ll;
            if ((k->ps == P_HEAD || k->ps == P_TRAILER) && (k->head_bytes += take) > MAX_HEAD) {
                proto(k->req, "the answer's head is over 64 KB");
                return;
            }
            if (k->line.len + take > MAX_HEAD) {
                proto(k->req, "a line of the answer is over 64 KB");
                return;
            }
            if (!nl || k->line.len) {
                if (eddy_buf_append(&k->line, p, take)) {
                    done(k->req, EDDY_ENOMEM, EDDY_HTTP1_RECV, "out of memory");
                    return;
                }
                p += take, n -= take;
                if (!nl)
                    return;
                l = k->line.data;
                ll = k->line.len;
            } else {
                ll = take;
                p += take, n -= take;
            }
            ll--; /* the \n */
            if (ll && l[ll - 1] == '\r')
                ll--;
            int stop = line(k, l, ll);
            eddy_buf_reset(&k->line);
            if (stop)
                return;
        }
        }
    }
    if (k->req && k->ps == P_DONE)
        complete(k, n);
}

static void retry(eddy_http1_req *r);

/* K's connection ended (EOF, or ERR) while R's answer was due. */
static void conn_ended(conn *k, ssize_t err)
{
    eddy_http1_req *r = k->req;
    if (k->ps == P_EOF && err == UV_EOF) {
        k->ps = P_DONE;
        complete(k, 0);
        return;
    }
    if (!k->got && k->uses > 0 && !r->retried) { /* the server closed it while we reused it */
        retry(r);
        return;
    }
    if (k->send_err)
        done(r, EDDY_ENET, EDDY_HTTP1_SEND, "cannot send the request: %s",
             uv_strerror(k->send_err));
    else if (err == UV_EOF)
        done(r, EDDY_ENET, EDDY_HTTP1_RECV,
             k->got ? "the server closed the connection before the answer ended"
                    : "the server closed the connection without an answer");
    else
        done(r, EDDY_ENET, EDDY_HTTP1_RECV, "%s", uv_strerror((int)err));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *k = s->data;
    if (nread == 0 || k->closing)
        return;
    if (!k->req) { /* idle: its end, or bytes nobody asked for */
        conn_close(k);
        return;
    }
    if (nread < 0) {
        conn_ended(k, nread);
        return;
    }
    k->got = 1;
    parse(k, buf->base, (size_t)nread);
}

/* -- connecting and sending ----------------------------------------------------------- */

static void on_write(uv_write_t *w, int status)
{
    conn *k = w->data;
    eddy_http1_req *r = k->req;
    k->writing = 0;
    if (status == UV_ECANCELED || k->closing || !r)
        return;
    if (status < 0) {
        if (!k->got && k->uses > 0 && !r->retried) {
            retry(r);
            return;
        }
        /* A server that answers early (413 to a body it will not read) and
         * closes makes the write fail while its answer waits to be read: the
         * read side decides, and names this failure if no answer comes. */
        k->send_err = status;
    }
}

static void send_req(eddy_http1_req *r)
{
    conn *k = r->conn;
    uv_buf_t bufs[2] = {uv_buf_init(r->head, (unsigned)r->head_len),
                        uv_buf_init((char *)r->body, (unsigned)r->body_len)};
    unsigned nb = r->body_len ? 2 : 1;
    int rc, n;
    arm(r, 1);
    /* Written at once when the socket takes it all (a request fits its buffer):
     * no write request, and none of the epoll_ctl that libuv makes when one
     * completes (one per request). Else the rest goes through uv_write; an
     * error is left to it, so a dead reused connection is found in on_write. */
    n = uv_try_write((uv_stream_t *)&k->tcp, bufs, nb);
    if (n > 0 && (size_t)n == r->head_len + r->body_len) {
        k->writing = 0;
        return;
    }
    if (n > 0 && (size_t)n < r->head_len) {
        bufs[0].base += n;
        bufs[0].len -= (unsigned)n;
    } else if (n > 0) {
        bufs[0] = uv_buf_init((char *)r->body + (n - (int)r->head_len),
                              (unsigned)(r->body_len - ((size_t)n - r->head_len)));
        nb = 1;
    }
    k->writing = 1;
    k->wr.data = k;
    rc = uv_write(&k->wr, (uv_stream_t *)&k->tcp, bufs, nb, on_write);
    if (rc) { /* perhaps inside eddy_http1_start: reported on the next turn */
        char msg[MSG_MAX];
        k->writing = 0;
        snprintf(msg, sizeof(msg), "cannot send the request: %s", uv_strerror(rc));
        fail_later(r, EDDY_ENET, EDDY_HTTP1_SEND, msg);
    }
}

static void on_connect(uv_connect_t *cr, int status)
{
    conn *k = cr->data;
    eddy_http1_req *r = k->req;
    char w[300];
    if (status == UV_ECANCELED || k->closing || !r)
        return;
    if (status < 0) {
        int next = k->addr_i + 1;
        conn_close(k);
        if (next < r->o->naddrs) {
            connect_next(r, next);
            return;
        }
        if (!r->o->numeric)
            r->o->resolved_ms = 0; /* look the name up again next time */
        done(r, EDDY_ENET, EDDY_HTTP1_CONNECT, "cannot connect to %s: %s", where(r, w, sizeof(w)),
             uv_strerror(status));
        return;
    }
    k->connected = 1;
    uv_tcp_nodelay(&k->tcp, 1);
    if ((status = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read))) {
        done(r, EDDY_ENET, EDDY_HTTP1_CONNECT, "cannot read from %s: %s", where(r, w, sizeof(w)),
             uv_strerror(status));
        return;
    }
    send_req(r);
}

/* Connect R to its origin's address FROM (or the next that can be tried).
 * Called from callbacks and from eddy_http1_start (failures: fail_later). */
static void connect_next(eddy_http1_req *r, int from)
{
    origin *o = r->o;
    eddy_http1 *c = r->c;
    char w[300];
    int rc = 0;
    for (int i = from; i < o->naddrs; i++) {
        conn *k = eddy_calloc(1, sizeof(*k));
        if (!k) {
            fail_later(r, EDDY_ENOMEM, EDDY_HTTP1_CONNECT, "out of memory");
            return;
        }
        if ((rc = uv_tcp_init(c->loop, &k->tcp))) {
            eddy_free(k);
            break;
        }
        k->c = c;
        k->o = o;
        k->addr_i = i;
        k->tcp.data = k->connect.data = k;
        eddy_buf_init(&k->line);
        k->next = c->conns;
        if (c->conns)
            c->conns->prev = k;
        c->conns = k;
        c->handles++;
        attach(r, k);
        rc =
            uv_tcp_connect(&k->connect, &k->tcp, (const struct sockaddr *)&o->addrs[i], on_connect);
        if (!rc)
            return;
        conn_close(k);
    }
    char msg[MSG_MAX];
    if (!o->numeric)
        o->resolved_ms = 0;
    snprintf(msg, sizeof(msg), "cannot connect to %s: %s", where(r, w, sizeof(w)),
             rc ? uv_strerror(rc) : "no address");
    fail_later(r, EDDY_ENET, EDDY_HTTP1_CONNECT, msg);
}

/* Send R on a new connection after a reused one turned out closed. */
static void retry(eddy_http1_req *r)
{
    if (r->conn)
        conn_close(r->conn);
    r->retried = 1;
    r->status = 0;
    r->connect_ms = uv_now(r->c->loop);
    arm(r, 0);
    connect_next(r, 0);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *ai)
{
    origin *o = g->data;
    eddy_http1 *c = o->c;
    char w[300];
    o->resolving = 0;
    c->handles--;
    o->naddrs = 0;
    for (struct addrinfo *a = ai; status == 0 && a && o->naddrs < MAX_ADDRS; a = a->ai_next)
        if ((a->ai_family == AF_INET || a->ai_family == AF_INET6) &&
            a->ai_addrlen <= sizeof(o->addrs[0]))
            memcpy(&o->addrs[o->naddrs++], a->ai_addr, a->ai_addrlen);
    uv_freeaddrinfo(ai);
    o->resolved_ms = o->naddrs ? uv_now(c->loop) : 0; /* 0: the next request asks again */
    /* only the requests that waited for this lookup: one started from a
     * done callback below waits for a lookup of its own */
    o->serving = o->wait_head;
    o->wait_head = o->wait_tail = NULL;
    while (o->serving) {
        eddy_http1_req *r = o->serving;
        unwait(r);
        if (!o->naddrs)
            done(r, EDDY_ENET, EDDY_HTTP1_RESOLVE, "cannot resolve %s: %s", where(r, w, sizeof(w)),
                 status ? uv_strerror(status) : "no address");
        else
            connect_next(r, 0);
    }
    maybe_free_client(c);
}

/* Numeric hosts need no lookup. */
static int numeric(origin *o)
{
    struct sockaddr_in *a4 = (struct sockaddr_in *)&o->addrs[0];
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&o->addrs[0];
    memset(&o->addrs[0], 0, sizeof(o->addrs[0]));
    if (inet_pton(AF_INET, o->host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)o->port);
    } else if (inet_pton(AF_INET6, o->host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)o->port);
    } else {
        return 0;
    }
    o->naddrs = 1;
    o->numeric = 1;
    return 1;
}

static origin *origin_for(eddy_http1 *c, const url_parts *u)
{
    origin *o;
    for (o = c->origins; o; o = o->next)
        if (o->port == u->port && strlen(o->host) == u->host_len &&
            !strncasecmp(o->host, u->host, u->host_len))
            return o;
    if (!(o = eddy_calloc(1, sizeof(*o))) || !(o->host = eddy_strndup(u->host, u->host_len))) {
        eddy_free(o);
        return NULL;
    }
    o->c = c;
    o->port = u->port;
    o->gai.data = o;
    numeric(o);
    o->next = c->origins;
    c->origins = o;
    return o;
}

/* Put R on its way: an idle connection, a new one, or a lookup first. */
static void dispatch(eddy_http1_req *r)
{
    origin *o = r->o;
    conn *k = idle_take(o);
    if (k) {
        attach(r, k);
        send_req(r);
        return;
    }
    arm(r, 0);
    /* a numeric host has its one address for good (it must not go through
     * the thread pool, where file work may keep it waiting) */
    if (o->numeric ||
        (o->naddrs && o->resolved_ms && uv_now(r->c->loop) - o->resolved_ms < DNS_TTL_MS)) {
        connect_next(r, 0);
        return;
    }
    r->waiting = 1;
    if (o->wait_tail)
        o->wait_tail->wnext = r;
    else
        o->wait_head = r;
    o->wait_tail = r;
    if (!o->resolving) {
        struct addrinfo hints;
        char port[8];
        int rc;
        memset(&hints, 0, sizeof(hints));
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        snprintf(port, sizeof(port), "%d", o->port);
        o->gai.data = o;
        if ((rc = uv_getaddrinfo(r->c->loop, &o->gai, on_resolved, o->host, port, &hints))) {
            unwait(r);
            fail_later(r, EDDY_ENET, EDDY_HTTP1_RESOLVE, uv_strerror(rc));
            return;
        }
        o->resolving = 1;
        r->c->handles++;
    }
}

/* -- the request ----------------------------------------------------------------------- */

/* 1 when M is an HTTP method (a token, RFC 9110 5.6.2): it goes into the
 * request line as it is. */
static int method_ok(const char *m)
{
    if (!*m)
        return 0;
    for (; *m; m++)
        if (!((*m >= 'a' && *m <= 'z') || (*m >= 'A' && *m <= 'Z') || (*m >= '0' && *m <= '9') ||
              strchr("!#$%&'*+-.^_`|~", *m)))
            return 0;
    return 1;
}

/* 1 when METHOD gives no meaning to a request body: without one, no
 * Content-Length is sent (RFC 9110 8.6); the others get "0". */
static int bodyless_method(const char *method)
{
    static const char *const m[] = {"GET", "HEAD", "DELETE", "OPTIONS", "TRACE"};
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++)
        if (!strcmp(method, m[i]))
            return 1;
    return 0;
}

/* 0 when H (N bytes) is a block of "Name: value\r\n" lines. */
static int headers_ok(const char *h, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t s = i, colon = 0;
        for (; i < n && h[i] != '\r' && h[i] != '\n'; i++) {
            if (!h[i])
                return -1;
            if (h[i] == ':' && !colon)
                colon = i;
        }
        if (i + 1 >= n || h[i] != '\r' || h[i + 1] != '\n' || !colon || colon == s)
            return -1;
        for (size_t j = s; j < colon; j++)
            if (h[j] == ' ' || h[j] == '\t')
                return -1;
        /* the client frames the body and names the host itself: a second
         * Content-Length, a Transfer-Encoding or a Host would make the
         * request mean something else to the server than to the client */
        size_t nl = colon - s;
        if ((nl == 4 && !strncasecmp(h + s, "host", 4)) ||
            (nl == 14 && !strncasecmp(h + s, "content-length", 14)) ||
            (nl == 17 && !strncasecmp(h + s, "transfer-encoding", 17)))
            return -1;
        i += 2;
    }
    return 0;
}

int eddy_http1_start(eddy_http1 *c, const eddy_http1_spec *spec, const eddy_http1_cbs *cbs,
                     void *ud, eddy_http1_req **out, eddy_err *err)
{
    url_parts u;
    eddy_http1_req *r;
    eddy_buf h;
    const char *method = spec->method ? spec->method : "GET";
    *out = NULL;
    assert(cbs && cbs->done);
    if (c->closing)
        return eddy_err_set(err, EDDY_ECLOSING, "the HTTP client is closing");
    if (parse_url(spec->url, &u))
        return eddy_err_set(err, EDDY_EINVAL, "not a URL this HTTP/1.1 client takes: %s",
                            spec->url ? spec->url : "(none)");
    if (!method_ok(method))
        return eddy_err_set(err, EDDY_EINVAL, "not an HTTP method");
    if (spec->body_len > UINT_MAX) /* uv_buf_t's length: the body would go out cut */
        return eddy_err_set(err, EDDY_EINVAL, "a request body over 4 GB");
    if (spec->headers_len && headers_ok(spec->headers, spec->headers_len))
        return eddy_err_set(err, EDDY_EINVAL, "a malformed request header line");
    if (!(r = eddy_calloc(1, sizeof(*r))))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    /* no printf: it was most of this function's cost */
    int v6 = memchr(u.host, ':', u.host_len) != NULL;
    char num[EDDY_JSON_NUMBER_MAX];
    eddy_buf_init(&h);
    eddy_buf_reserve(&h, 64 + u.target_len + u.host_len + spec->headers_len);
    eddy_buf_puts(&h, method);
    eddy_buf_putc(&h, ' ');
    if (!u.target || *u.target == '?') /* the origin form starts with "/" (RFC 9112 3.2.1) */
        eddy_buf_putc(&h, '/');
    if (u.target)
        eddy_buf_append(&h, u.target, u.target_len);
    eddy_buf_puts(&h, v6 ? " HTTP/1.1\r\nHost: [" : " HTTP/1.1\r\nHost: ");
    eddy_buf_append(&h, u.host, u.host_len);
    if (v6)
        eddy_buf_putc(&h, ']');
    if (u.port != 80) {
        eddy_buf_putc(&h, ':');
        eddy_buf_append(&h, num, eddy_json_integer_text(u.port, num));
    }
    eddy_buf_append(&h, "\r\n", 2);
    if (spec->headers_len)
        eddy_buf_append(&h, spec->headers, spec->headers_len);
    if (spec->body_len || !bodyless_method(method)) {
        eddy_buf_puts(&h, "Content-Length: ");
        eddy_buf_append(&h, num, eddy_json_integer_text((json_int_t)spec->body_len, num));
        eddy_buf_append(&h, "\r\n", 2);
    }
    eddy_buf_append(&h, "\r\n", 2);
    if (h.oom || !(r->o = origin_for(c, &u))) {
        eddy_buf_free(&h);
        eddy_free(r);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    r->head_len = h.len;
    r->head = eddy_buf_take(&h);
    r->c = c;
    r->cb = *cbs;
    r->ud = ud;
    r->body = spec->body;
    r->body_len = spec->body_len;
    r->bodyless = !strcmp(method, "HEAD");
    r->timeout_ms = spec->timeout_ms;
    r->connect_timeout_ms = spec->connect_timeout_ms;
    uv_timer_init(c->loop, &r->timer);
    r->timer.data = r;
    c->handles++;
    r->start_ms = r->connect_ms = uv_now(c->loop);
    r->next = c->reqs;
    if (c->reqs)
        c->reqs->prev = r;
    c->reqs = r;
    dispatch(r);
    *out = r;
    return 0;
}

long eddy_http1_status(const eddy_http1_req *r)
{
    return r ? r->status : 0;
}
