/*
 * fluss/rpc.c - connections to Fluss servers and request/response matching.
 *
 * One connection per server node, opened on first use (a host name is looked
 * up on libuv's thread pool, never on the loop). A frame is an int32
 * big-endian length, then (requests) api key, api version and request id, or
 * (responses) a type byte and the request id; the payload is a protobuf
 * message. On connect the client sends ApiVersions, then SASL PLAIN
 * Authenticate when configured; requests queued meanwhile go out once the
 * handshake is done. Answers are matched by request id (servers may answer
 * out of order). A connection that breaks fails everything in flight with
 * EDDY_ENET and reconnects on the next request, no sooner than its backoff.
 * A timer fails requests past their deadline with EDDY_ETIMEDOUT and gives
 * up connection attempts (connect and handshake) that take longer than the
 * request timeout. When the metadata moves a server, the connection to the
 * old address ends (what was in flight fails) and queued requests go to the
 * new one.
 *
 * Invariants: a request is on exactly one list (queued or in flight) until
 * its callback has been called; callbacks never run inside eddy__rpc_send.
 */
#include "eddy/fluss.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/log.h"
#include "eddy/version.h"
#include "fluss_int.h"

/*
 * States of a connection. IDLE: no socket. CONNECTING: connect under way.
 * HANDSHAKE: connected, ApiVersions (and SASL) under way. READY: requests
 * go out as they come. RESETTING: the socket is closing (uv_close called);
 * on_close turns the connection IDLE and reconnects when requests wait.
 * CLOSING: the client is closing; on_close frees the connection.
 * CONNECTING covers the host name lookup too: then c->resolving is set and
 * there is no socket yet (tcp_open is 0); whatever ends the attempt first
 * lets go of the lookup (drop_resolve), whose callback then only frees it.
 * A connection is torn down only through conn_reset(), which does nothing
 * unless the connection is live: libuv reports the end of a socket more
 * than once (the connect callback's UV_ECANCELED after uv_close, a write
 * error after a read error), and uv_close must run once per socket.
 */
enum { C_IDLE, C_CONNECTING, C_HANDSHAKE, C_READY, C_RESETTING, C_CLOSING };

typedef struct rpc_req {
    struct rpc_req *prev, *next;
    int32_t id;
    int api_key;
    uint64_t deadline_ms;
    eddy__rpc_cb cb;
    void *ud;
    char *frame; /* owned until written */
    size_t frame_len;
    const struct conn *peer; /* failed list: the server it was for, if known */
    int node;                /* failed list: its node id */
} rpc_req;

typedef struct req_list {
    rpc_req *head, *tail;
    size_t n;
} req_list;

typedef struct conn {
    eddy_fluss_client *client;
    int node;
    char host[256];
    int port;
    int state;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    struct resolve *resolving; /* CONNECTING: the host name lookup under way */
    int tcp_open;              /* uv_tcp_init done, close callback not yet run */
    req_list queued, inflight;
    eddy_buf in;
    uint64_t connect_deadline_ms; /* CONNECTING/HANDSHAKE past this: give up */
    uint64_t retry_at_ms;         /* no reconnect before this (backoff) */
    int failures;
    char why[96]; /* why the last connection failed */
} conn;

/* A host name lookup on libuv's thread pool. It outlives its connection
 * when that gives up on it (a reset, a timeout, the client's close): C is
 * then NULL and the callback only frees. */
typedef struct resolve {
    uv_getaddrinfo_t req;
    struct conn *c;
} resolve;

typedef struct deferred {
    struct deferred *next;
    void (*fn)(int status, void *ud);
    void *ud;
} deferred;

typedef struct write_req {
    uv_write_t w;
    uv_buf_t buf;
} write_req;

struct eddy_fluss_client {
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_idle_t idle; /* delivers failures of requests that could not be sent */
    conn **conns;
    int nconns;
    int32_t next_id;
    int timeout_ms;
    char *sasl_user, *sasl_password;
    int closing;
    int open_handles;
    req_list failed; /* requests to fail on the next idle tick */
    struct deferred *deferred, *deferred_tail;
    eddy__fluss_child *children; /* writers, scanners, metadata operations */
    void *meta;                  /* fluss/meta.c state */
    void *lookups;               /* fluss/lookup.c state */
};

/* Unpacking allocates more than the payload (a 2-byte empty sub-message
 * becomes a struct of some 50 bytes and a pointer): what one unpack may
 * allocate in all is bounded by its payload size, so that a hostile answer
 * cannot turn a frame into gigabytes. */
typedef struct pb_budget {
    size_t left;
} pb_budget;

static void *pb_malloc(void *ud, size_t n)
{
    pb_budget *b = ud;
    if (b) {
        if (n > b->left)
            return NULL; /* protobuf-c fails the unpack cleanly */
        b->left -= n;
    }
    return eddy_malloc(n);
}

static void pb_free(void *ud, void *p)
{
    (void)ud;
    eddy_free(p);
}

static ProtobufCAllocator pb_release = {pb_malloc, pb_free, NULL};

void *eddy__rpc_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *p, size_t n)
{
    pb_budget b = {EDDY__FLUSS_UNPACK_SLACK};
    b.left += n < (EDDY__FLUSS_MAX_UNPACK - EDDY__FLUSS_UNPACK_SLACK) / 8
                  ? 8 * n
                  : EDDY__FLUSS_MAX_UNPACK - EDDY__FLUSS_UNPACK_SLACK;
    ProtobufCAllocator a = {pb_malloc, pb_free, &b};
    return protobuf_c_message_unpack(desc, &a, n, p);
}

void eddy__rpc_free_unpacked(void *msg)
{
    if (msg)
        protobuf_c_message_free_unpacked(msg, &pb_release);
}

/* -- request lists ---------------------------------------------------------- */

static void list_push(req_list *l, rpc_req *r)
{
    r->next = NULL;
    r->prev = l->tail;
    if (l->tail)
        l->tail->next = r;
    else
        l->head = r;
    l->tail = r;
    l->n++;
}

static void list_remove(req_list *l, rpc_req *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        l->head = r->next;
    if (r->next)
        r->next->prev = r->prev;
    else
        l->tail = r->prev;
    r->prev = r->next = NULL;
    l->n--;
}

/* Move every request of FROM to the end of TO. */
static void list_move_all(req_list *from, req_list *to)
{
    while (from->head) {
        rpc_req *r = from->head;
        list_remove(from, r);
        list_push(to, r);
    }
}

static void req_finish(rpc_req *r, int status, const uint8_t *p, size_t n, const eddy_err *err)
{
    eddy__rpc_cb cb = r->cb;
    void *ud = r->ud;
    eddy_free(r->frame);
    eddy_free(r);
    cb(status, p, n, err, ud);
}

/* Fail every request on L with CODE and a message naming the connection.
 * The list is taken first: requests that callbacks start meanwhile go on
 * L again and wait for their own turn. */
static void fail_all(req_list *l, int code, const char *why, const conn *c)
{
    eddy_err e;
    req_list todo = {0};
    list_move_all(l, &todo);
    while (todo.head) {
        rpc_req *r = todo.head;
        list_remove(&todo, r);
        const conn *p = c ? c : r->peer;
        if (p && !c && p->why[0]) /* in backoff after a failure: say which */
            eddy_err_set(&e, code, "Fluss %s:%d: %s (%s)", p->host, p->port, why, p->why);
        else if (p)
            eddy_err_set(&e, code, "Fluss %s:%d: %s", p->host, p->port, why);
        else
            eddy_err_set(&e, code, "Fluss: %s to server %d (not in the metadata)", why, r->node);
        req_finish(r, code, NULL, 0, &e);
    }
}

/* -- connections ------------------------------------------------------------ */

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);
static void alloc_read(uv_handle_t *h, size_t suggested, uv_buf_t *buf);
static void start_connect(conn *c);
static void client_free(eddy_fluss_client *cl);

static void on_close(uv_handle_t *h)
{
    conn *c = h->data;
    eddy_fluss_client *cl = c->client;
    c->tcp_open = 0;
    if (c->state == C_CLOSING) {
        eddy_buf_free(&c->in);
        eddy_free(c);
        if (--cl->open_handles == 0)
            client_free(cl);
        return;
    }
    cl->open_handles--;
    c->state = C_IDLE;
    if (c->queued.n)
        start_connect(c); /* requests arrived while closing, or the server moved */
}

/* Let go of C's host name lookup, if one is under way: it cannot be
 * stopped once a thread runs it, so it is canceled when still queued and
 * otherwise left to finish on its own; on_resolved frees it either way. */
static void drop_resolve(conn *c)
{
    resolve *rs = c->resolving;
    if (!rs)
        return;
    c->resolving = NULL;
    rs->c = NULL;
    uv_cancel((uv_req_t *)&rs->req);
}

/* No reconnect to C for a while after a failure (50 ms doubling to 2 s). */
static void start_backoff(conn *c, const char *why)
{
    c->failures++;
    snprintf(c->why, sizeof(c->why), "%s", why);
    uint64_t backoff = 50u << (c->failures < 6 ? c->failures : 6);
    c->retry_at_ms = eddy_now_ms() + (backoff > 2000 ? 2000 : backoff);
}

/* Whether C has a connection (or an attempt) that conn_reset may end. */
static int conn_live(const conn *c)
{
    return c->state == C_CONNECTING || c->state == C_HANDSHAKE || c->state == C_READY;
}

/* End C's connection (idempotent: nothing happens unless it is live).
 * In-flight requests fail with EDDY_ENET: their answers are lost. When
 * FAILED, the queued requests fail too (their retry policy belongs to the
 * caller) and a backoff starts; otherwise (the server moved) they stay
 * queued and go out on the next connection, which on_close opens. The
 * state changes before any callback runs, so requests that callbacks start
 * see the connection going down (and, in backoff, fail on the next tick). */
static void conn_reset(conn *c, const char *why, int failed)
{
    eddy_fluss_client *cl = c->client;
    if (!conn_live(c))
        return;
    drop_resolve(c);
    if (c->tcp_open) {
        c->state = C_RESETTING; /* until on_close turns it IDLE */
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_close((uv_handle_t *)&c->tcp, on_close);
    } else {
        c->state = C_IDLE;
    }
    if (failed)
        start_backoff(c, why);
    EDDY_DEBUG("fluss", "connection to %s:%d ends: %s", c->host, c->port, why);
    fail_all(&c->inflight, EDDY_ENET, why, c);
    if (failed && !cl->closing) /* else the close has failed them */
        fail_all(&c->queued, EDDY_ENET, why, c);
}

static void on_write(uv_write_t *w, int status)
{
    write_req *wr = (write_req *)w;
    conn *c = w->data;
    eddy_free(wr->buf.base);
    eddy_free(wr);
    if (status < 0 && status != UV_ECANCELED)
        conn_reset(c, uv_strerror(status), 1);
}

static int write_frame(conn *c, char *frame, size_t len)
{
    write_req *wr = eddy_malloc(sizeof(*wr));
    if (!wr) {
        eddy_free(frame);
        return EDDY_ENOMEM;
    }
    wr->buf = uv_buf_init(frame, (unsigned)len);
    wr->w.data = c;
    int rc = uv_write(&wr->w, (uv_stream_t *)&c->tcp, &wr->buf, 1, on_write);
    if (rc) {
        eddy_free(frame);
        eddy_free(wr);
        return EDDY_ENET;
    }
    return 0;
}

/* Move R to in flight and write its frame. */
static void send_now(conn *c, rpc_req *r)
{
    char *frame = r->frame;
    EDDY_LOG(EDDY_LOG_TRACE, "fluss", "send api %d id %d to %s:%d", r->api_key, r->id, c->host,
             c->port);
    r->frame = NULL;
    list_push(&c->inflight, r);
    if (write_frame(c, frame, r->frame_len))
        conn_reset(c, "write failed", 1);
}

static void flush_queue(conn *c)
{
    while (c->state == C_READY && c->queued.head) {
        rpc_req *r = c->queued.head;
        list_remove(&c->queued, r);
        send_now(c, r);
    }
}

static rpc_req *new_req(eddy_fluss_client *cl, int api_key, int version,
                        const ProtobufCMessage *msg, eddy__rpc_cb cb, void *ud)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    rpc_req *r = eddy_calloc(1, sizeof(*r));
    char *frame = eddy_malloc(12 + n);
    if (!r || !frame) {
        eddy_free(r);
        eddy_free(frame);
        return NULL;
    }
    cl->next_id = (cl->next_id + 1) & 0x7fffffff;
    r->id = cl->next_id;
    r->api_key = api_key;
    r->cb = cb;
    r->ud = ud;
    r->deadline_ms = eddy_now_ms() + (uint64_t)cl->timeout_ms;
    wr_u32be((uint8_t *)frame, (uint32_t)(8 + n));
    wr_u16be((uint8_t *)frame + 4, (uint16_t)api_key);
    wr_u16be((uint8_t *)frame + 6, (uint16_t)version);
    wr_u32be((uint8_t *)frame + 8, (uint32_t)r->id);
    protobuf_c_message_pack(msg, (uint8_t *)frame + 12);
    r->frame = frame;
    r->frame_len = 12 + n;
    return r;
}

static void handshake_done(conn *c)
{
    c->state = C_READY;
    c->failures = 0;
    c->why[0] = 0;
    flush_queue(c);
}

static void on_auth(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud);

static void send_auth(conn *c)
{
    eddy_fluss_client *cl = c->client;
    size_t ul = strlen(cl->sasl_user), pl = strlen(cl->sasl_password);
    uint8_t *tok = eddy_malloc(ul + pl + 2);
    if (!tok) {
        conn_reset(c, "out of memory", 1);
        return;
    }
    tok[0] = 0;
    memcpy(tok + 1, cl->sasl_user, ul);
    tok[1 + ul] = 0;
    memcpy(tok + 2 + ul, cl->sasl_password, pl);
    EddyFluss__AuthenticateRequest req = EDDY_FLUSS__AUTHENTICATE_REQUEST__INIT;
    req.protocol = "PLAIN";
    req.token.data = tok;
    req.token.len = ul + pl + 2;
    rpc_req *r = new_req(cl, API_AUTHENTICATE, 0, &req.base, on_auth, c);
    eddy_free(tok);
    if (!r) {
        conn_reset(c, "out of memory", 1);
        return;
    }
    send_now(c, r);
}

/* Handshake answers. A failure while C is still in its handshake (a
 * timeout, wrong credentials) ends the connection; in any other state the
 * connection is already going down and this is its echo. */
static void on_auth(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    conn *c = ud;
    (void)p, (void)n;
    if (c->state != C_HANDSHAKE)
        return;
    if (status == 0) {
        handshake_done(c);
        return;
    }
    if (status == EDDY_EFLUSS && err && err->cause == FE_RETRIABLE_AUTHENTICATE) {
        send_auth(c);
        return;
    }
    if (status == EDDY_EFLUSS) { /* wrong credentials: tell everyone waiting */
        fail_all(&c->queued, EDDY_EFLUSS, err ? err->msg : "authentication failed", c);
        conn_reset(c, "authentication failed", 1);
        return;
    }
    conn_reset(c, err ? err->msg : "no answer to Authenticate", 1);
}

static void on_api_versions(int status, const uint8_t *p, size_t n, const eddy_err *err, void *ud)
{
    conn *c = ud;
    (void)p, (void)n;
    if (c->state != C_HANDSHAKE)
        return;
    if (status)
        conn_reset(c, err ? err->msg : "no answer to ApiVersions", 1);
    else if (c->client->sasl_user && c->client->sasl_password)
        send_auth(c);
    else
        handshake_done(c);
}

static void on_connect(uv_connect_t *req, int status)
{
    conn *c = req->data;
    /* UV_ECANCELED: the socket was closed while connecting (conn_reset or
     * the client's close), which has already dealt with the requests. */
    if (status == UV_ECANCELED || c->state != C_CONNECTING)
        return;
    if (status < 0) {
        conn_reset(c, uv_strerror(status), 1);
        return;
    }
    c->state = C_HANDSHAKE;
    eddy_buf_reset(&c->in);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_read, on_read);
    EddyFluss__ApiVersionsRequest av = EDDY_FLUSS__API_VERSIONS_REQUEST__INIT;
    av.client_software_name = "eddy";
    av.client_software_version = EDDY_VERSION;
    rpc_req *r = new_req(c->client, API_VERSIONS, 0, &av.base, on_api_versions, c);
    if (!r) {
        conn_reset(c, "out of memory", 1);
        return;
    }
    send_now(c, r);
}

static void on_idle(uv_idle_t *h);

/* A connection attempt failed before it reached the loop, or its host name
 * lookup failed: its queued requests fail on the next tick (start_connect
 * runs inside eddy__rpc_send, which never calls callbacks itself; from
 * on_resolved the same path keeps one way of failing them). */
static void connect_failed(conn *c, const char *why)
{
    eddy_fluss_client *cl = c->client;
    conn_reset(c, why, 0);
    start_backoff(c, why);
    for (rpc_req *r = c->queued.head; r; r = r->next)
        r->peer = c;
    list_move_all(&c->queued, &cl->failed);
    uv_idle_start(&cl->idle, on_idle);
}

/* Open the socket and connect to SA (C is CONNECTING). */
static void connect_to(conn *c, const struct sockaddr *sa)
{
    eddy_fluss_client *cl = c->client;
    uv_tcp_init(cl->loop, &c->tcp);
    c->tcp.data = c;
    c->tcp_open = 1;
    cl->open_handles++;
    uv_tcp_nodelay(&c->tcp, 1);
    c->connect_req.data = c;
    int rc = uv_tcp_connect(&c->connect_req, &c->tcp, sa, on_connect);
    if (rc)
        connect_failed(c, uv_strerror(rc));
}

/* The lookup of a connection's host name ended. Runs on the loop, never
 * inside eddy__rpc_send. When the connection let go of it meanwhile, its
 * requests have been dealt with and the client may be gone: only free. */
static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve *rs = req->data;
    conn *c = rs->c;
    struct sockaddr_storage ss;
    char why[96];
    if (!c) {
        eddy_free(rs);
        uv_freeaddrinfo(res);
        return;
    }
    assert(c->resolving == rs && c->state == C_CONNECTING && !c->tcp_open);
    c->resolving = NULL;
    eddy_free(rs);
    if (status || !res) {
        uv_freeaddrinfo(res);
        snprintf(why, sizeof(why), "cannot resolve the host name: %s",
                 status ? uv_strerror(status) : "no address");
        connect_failed(c, why);
        return;
    }
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    uv_freeaddrinfo(res);
    connect_to(c, (struct sockaddr *)&ss);
}

/* Resolve and connect. IP literals (what Fluss advertises in tests and most
 * deployments) need no lookup; a host name is looked up on libuv's thread
 * pool (getaddrinfo blocks: /etc/hosts, or a resolver that may take
 * seconds), and the connect goes on from on_resolved. */
static void start_connect(conn *c)
{
    eddy_fluss_client *cl = c->client;
    struct sockaddr_storage ss;
    struct addrinfo hints = {0};
    char port[16];
    c->state = C_CONNECTING;
    c->connect_deadline_ms = eddy_now_ms() + (uint64_t)cl->timeout_ms;
    if (!uv_ip4_addr(c->host, c->port, (struct sockaddr_in *)&ss) ||
        !uv_ip6_addr(c->host, c->port, (struct sockaddr_in6 *)&ss)) {
        connect_to(c, (struct sockaddr *)&ss);
        return;
    }
    resolve *rs = eddy_calloc(1, sizeof(*rs));
    if (!rs) {
        connect_failed(c, "out of memory");
        return;
    }
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(port, sizeof(port), "%d", c->port);
    rs->c = c;
    rs->req.data = rs;
    int rc = uv_getaddrinfo(cl->loop, &rs->req, on_resolved, c->host, port, &hints);
    if (rc) {
        char why[96];
        eddy_free(rs);
        snprintf(why, sizeof(why), "cannot resolve the host name: %s", uv_strerror(rc));
        connect_failed(c, why);
        return;
    }
    c->resolving = rs;
}

/* -- reading ---------------------------------------------------------------- */

static rpc_req *find_inflight(conn *c, int32_t id)
{
    for (rpc_req *r = c->inflight.head; r; r = r->next)
        if (r->id == id)
            return r;
    return NULL;
}

const char *eddy__fluss_brief(const char *msg, char *buf, size_t cap)
{
    const char *line = msg ? msg : "", *cause, *eol, *dot;
    size_t n;
    /* the last "Caused by: " is the root cause */
    while ((cause = strstr(line, "Caused by: ")))
        line = cause + 11;
    eol = strchr(line, '\n');
    n = eol ? (size_t)(eol - line) : strlen(line);
    /* "org.apache.fluss.exception.X: ..." -> "X: ..." */
    for (dot = line; dot < line + n && *dot != ':' && *dot != ' '; dot++)
        if (*dot == '.' && dot + 1 < line + n && dot[1] >= 'A' && dot[1] <= 'Z') {
            n -= (size_t)(dot + 1 - line);
            line = dot + 1;
            dot = line;
        }
    while (n > 0 && (line[n - 1] == '\r' || line[n - 1] == '\t' || line[n - 1] == ' '))
        n--;
    snprintf(buf, cap, "%.*s", (int)n, line);
    return buf;
}

/* What a request did, for messages. */
static const char *api_name(int key)
{
    switch (key) {
    case API_VERSIONS:
        return "ApiVersions";
    case API_CREATE_DATABASE:
        return "CreateDatabase";
    case API_DROP_DATABASE:
        return "DropDatabase";
    case API_LIST_DATABASES:
        return "ListDatabases";
    case API_CREATE_TABLE:
        return "CreateTable";
    case API_DROP_TABLE:
        return "DropTable";
    case API_GET_TABLE_INFO:
        return "GetTableInfo";
    case API_LIST_TABLES:
        return "ListTables";
    case API_METADATA:
        return "Metadata";
    case API_PRODUCE_LOG:
        return "ProduceLog";
    case API_FETCH_LOG:
        return "FetchLog";
    case API_PUT_KV:
        return "PutKv";
    case API_LOOKUP:
        return "Lookup";
    case API_LIST_OFFSETS:
        return "ListOffsets";
    case API_INIT_WRITER:
        return "InitWriter";
    case API_PREFIX_LOOKUP:
        return "PrefixLookup";
    case API_AUTHENTICATE:
        return "Authenticate";
    default:
        return "request";
    }
}

static void error_response(const uint8_t *p, size_t n, eddy_err *e, const char *api)
{
    char brief[512];
    EddyFluss__ErrorResponse *er = eddy__rpc_unpack(&eddy_fluss__error_response__descriptor, p, n);
    if (!er) {
        eddy_err_setc(e, EDDY_EFLUSS, -1, "%s: unreadable error response", api);
        return;
    }
    eddy_err_setc(e, EDDY_EFLUSS, er->error_code, "%s: Fluss error %d: %s", api, er->error_code,
                  er->error_message ? eddy__fluss_brief(er->error_message, brief, sizeof(brief))
                                    : "(no message)");
    eddy__rpc_free_unpacked(er);
}

int eddy__rpc_frame_next(const uint8_t *p, size_t n, size_t *len, char *why, size_t cap)
{
    if (n < 4)
        return 0;
    uint32_t claim = rd_u32be(p);
    /* checked before anything is buffered for it: the bytes of a frame are
     * kept only as they arrive, and never past the limit */
    if (claim < 1 || claim > EDDY__FLUSS_MAX_FRAME) {
        snprintf(why, cap, "response frame of %u bytes (the limit is %u)", claim,
                 EDDY__FLUSS_MAX_FRAME);
        return -1;
    }
    if (n - 4 < claim)
        return 0;
    *len = claim;
    return 1;
}

int eddy__rpc_frame_head(const uint8_t *p, size_t n, int *type, int32_t *id)
{
    if (n < 1 || p[0] > 2)
        return -1;
    *type = p[0];
    *id = -1;
    if (p[0] == 2) /* SERVER_FAILURE: no request id */
        return 0;
    if (n < 5)
        return -1;
    *id = (int32_t)rd_u32be(p + 1);
    return 0;
}

/* Handle one complete response frame P[0..N) (after the length). Returns -1
 * when the frame is malformed and the connection must go. */
static int handle_frame(conn *c, const uint8_t *p, size_t n)
{
    eddy_err e;
    char api[32];
    int type;
    int32_t id;
    if (eddy__rpc_frame_head(p, n, &type, &id))
        return -1;
    if (type == 2) { /* SERVER_FAILURE: connection-level */
        error_response(p + 1, n - 1, &e, "server failure");
        EDDY_WARN("fluss", "%s:%d: %s", c->host, c->port, e.msg);
        return -1;
    }
    EDDY_LOG(EDDY_LOG_TRACE, "fluss", "answer type %d id %d (%zu bytes) from %s:%d", p[0], id, n,
             c->host, c->port);
    rpc_req *r = find_inflight(c, id);
    if (!r)
        return 0; /* timed out earlier: drop the late answer */
    list_remove(&c->inflight, r);
    snprintf(api, sizeof(api), "%s", api_name(r->api_key));
    if (p[0] == 1) {
        error_response(p + 5, n - 5, &e, api);
        req_finish(r, EDDY_EFLUSS, NULL, 0, &e);
    } else {
        req_finish(r, 0, p + 5, n - 5, NULL);
    }
    return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn *c = s->data;
    if (nread < 0) {
        eddy_free(buf->base);
        conn_reset(c, nread == UV_EOF ? "closed by the server" : uv_strerror((int)nread), 1);
        return;
    }
    if (nread > 0 && eddy_buf_append(&c->in, buf->base, (size_t)nread)) {
        eddy_free(buf->base);
        conn_reset(c, "out of memory", 1);
        return;
    }
    eddy_free(buf->base);
    size_t at = 0;
    /* Callbacks run from handle_frame may end this connection or close the
     * client: stop as soon as it is no longer live. */
    while (conn_live(c)) {
        char why[96];
        size_t len;
        int k = eddy__rpc_frame_next((uint8_t *)c->in.data + at, c->in.len - at, &len, why,
                                     sizeof(why));
        if (k < 0) {
            conn_reset(c, why, 1);
            return;
        }
        if (k == 0)
            break; /* the rest of the frame has not arrived yet */
        if (handle_frame(c, (uint8_t *)c->in.data + at + 4, len)) {
            conn_reset(c, "malformed response frame", 1);
            return;
        }
        at += 4 + len;
    }
    if (at && at <= c->in.len) {
        memmove(c->in.data, c->in.data + at, c->in.len - at);
        c->in.len -= at;
    }
}

static void alloc_read(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    if (suggested < 256 * 1024)
        suggested = 256 * 1024;
    buf->base = eddy_malloc(suggested);
    buf->len = buf->base ? suggested : 0;
}

/* -- client ----------------------------------------------------------------- */

static conn *find_conn(eddy_fluss_client *cl, int node)
{
    for (int i = 0; i < cl->nconns; i++)
        if (cl->conns[i]->node == node)
            return cl->conns[i];
    return NULL;
}

static conn *add_conn(eddy_fluss_client *cl, int node, const char *host, int port)
{
    if (cl->nconns >= EDDY__FLUSS_MAX_NODES)
        return NULL;
    conn **grown = eddy_realloc(cl->conns, sizeof(*grown) * (size_t)(cl->nconns + 1));
    conn *c = eddy_calloc(1, sizeof(*c));
    if (grown)
        cl->conns = grown;
    if (!grown || !c) {
        eddy_free(c);
        return NULL;
    }
    c->client = cl;
    c->node = node;
    snprintf(c->host, sizeof(c->host), "%s", host);
    c->port = port;
    eddy_buf_init(&c->in);
    cl->conns[cl->nconns++] = c;
    return c;
}

int eddy__rpc_set_node(eddy_fluss_client *cl, int node, const char *host, int port)
{
    if (cl->closing)
        return EDDY_ECLOSING;
    if (!host || port <= 0 || port > 65535 || strlen(host) >= sizeof(((conn *)0)->host))
        return EDDY_EINVAL;
    conn *c = find_conn(cl, node);
    if (c) {
        if (c->port == port && !strcmp(c->host, host))
            return 0;
        /* Moved: what was sent to the old address is lost (the messages
         * name it), what is queued goes to the new one, which owes
         * nothing to the old one's backoff. */
        c->failures = 0;
        c->retry_at_ms = 0;
        c->why[0] = 0;
        conn_reset(c, "server address changed", 0);
        snprintf(c->host, sizeof(c->host), "%s", host);
        c->port = port;
        if (c->state == C_IDLE && c->queued.n) /* it was looking up the old name */
            start_connect(c);
        return 0;
    }
    if (cl->nconns >= EDDY__FLUSS_MAX_NODES) /* hostile metadata: no more connections */
        return EDDY_ERANGE;
    return add_conn(cl, node, host, port) ? 0 : EDDY_ENOMEM;
}

int eddy__rpc_has_node(eddy_fluss_client *cl, int node)
{
    return find_conn(cl, node) != NULL;
}

uv_loop_t *eddy__rpc_loop(eddy_fluss_client *cl)
{
    return cl->loop;
}

int eddy__rpc_timeout_ms(eddy_fluss_client *cl)
{
    return cl->timeout_ms;
}

int eddy__rpc_closing(const eddy_fluss_client *cl)
{
    return cl->closing;
}

/* Pop the first deferred call (NULL when none). */
static deferred *pop_deferred(eddy_fluss_client *cl)
{
    deferred *d = cl->deferred;
    if (d) {
        cl->deferred = d->next;
        if (!cl->deferred)
            cl->deferred_tail = NULL;
    }
    return d;
}

/* Next tick: fail the requests that could not be sent, then run the calls
 * deferred so far (not those they defer in turn: they wait a tick). A
 * callback may close the client; the close then cancels what is left. */
static void on_idle(uv_idle_t *h)
{
    eddy_fluss_client *cl = h->data;
    uv_idle_stop(h);
    fail_all(&cl->failed, EDDY_ENET, "no connection", NULL);
    deferred *last = cl->deferred_tail, *d;
    while (!cl->closing && (d = pop_deferred(cl))) {
        void (*fn)(int, void *) = d->fn;
        void *ud = d->ud;
        int was_last = d == last;
        eddy_free(d);
        fn(0, ud);
        if (was_last)
            break;
    }
    if (!cl->closing && (cl->deferred || cl->failed.head))
        uv_idle_start(h, on_idle);
}

int eddy__rpc_defer(eddy_fluss_client *cl, void (*fn)(int status, void *ud), void *ud)
{
    if (cl->closing)
        return EDDY_ECLOSING;
    deferred *d = eddy_calloc(1, sizeof(*d));
    if (!d)
        return EDDY_ENOMEM;
    d->fn = fn;
    d->ud = ud;
    if (cl->deferred_tail)
        cl->deferred_tail->next = d;
    else
        cl->deferred = d;
    cl->deferred_tail = d;
    uv_idle_start(&cl->idle, on_idle);
    return 0;
}

void eddy__rpc_attach(eddy_fluss_client *cl, eddy__fluss_child *ch,
                      void (*closing)(eddy__fluss_child *ch))
{
    ch->closing = closing;
    ch->prev = NULL;
    ch->next = cl->children;
    if (cl->children)
        cl->children->prev = ch;
    cl->children = ch;
    ch->linked = 1;
}

void eddy__rpc_detach(eddy_fluss_client *cl, eddy__fluss_child *ch)
{
    if (!ch->linked)
        return;
    if (ch->prev)
        ch->prev->next = ch->next;
    else
        cl->children = ch->next;
    if (ch->next)
        ch->next->prev = ch->prev;
    ch->prev = ch->next = NULL;
    ch->linked = 0;
}

int eddy__rpc_send(eddy_fluss_client *cl, int node, int api_key, int version,
                   const ProtobufCMessage *msg, eddy__rpc_cb cb, void *ud)
{
    if (cl->closing)
        return EDDY_ECLOSING;
    conn *c = find_conn(cl, node);
    if (!c && node == NODE_COORDINATOR)
        c = find_conn(cl, NODE_BOOTSTRAP);
    rpc_req *r = new_req(cl, api_key, version, msg, cb, ud);
    if (!r)
        return EDDY_ENOMEM;
    r->node = node;
    r->peer = c;
    if (!c) { /* unknown node: fail on the next tick (never inside this call) */
        list_push(&cl->failed, r);
        uv_idle_start(&cl->idle, on_idle);
        return 0;
    }
    if (c->state == C_READY) {
        send_now(c, r);
        return 0;
    }
    if ((c->state == C_IDLE || c->state == C_RESETTING) && eddy_now_ms() < c->retry_at_ms) {
        list_push(&cl->failed, r); /* in backoff: the caller retries later */
        uv_idle_start(&cl->idle, on_idle);
        return 0;
    }
    list_push(&c->queued, r);
    if (c->state == C_IDLE)
        start_connect(c);
    return 0;
}

/* Fail the requests of L past their deadline. They are taken off L first,
 * so callbacks (which may start requests or close the client) never see
 * them, and each is answered exactly once. */
static void expire(req_list *l, uint64_t now, const conn *c)
{
    req_list due = {0};
    char host[sizeof(c->host)];
    int port = c->port;
    snprintf(host, sizeof(host), "%s", c->host);
    for (rpc_req *r = l->head, *next; r; r = next) {
        next = r->next;
        if (r->deadline_ms <= now) {
            list_remove(l, r);
            list_push(&due, r);
        }
    }
    while (due.head) {
        rpc_req *r = due.head;
        eddy_err e;
        list_remove(&due, r);
        eddy_err_set(&e, EDDY_ETIMEDOUT, "Fluss %s:%d: %s timed out", host, port,
                     api_name(r->api_key));
        req_finish(r, EDDY_ETIMEDOUT, NULL, 0, &e);
    }
}

static void on_timer(uv_timer_t *t)
{
    eddy_fluss_client *cl = t->data;
    uint64_t now = eddy_now_ms();
    for (int i = 0; i < cl->nconns && !cl->closing; i++) {
        conn *c = cl->conns[i];
        if ((c->state == C_CONNECTING || c->state == C_HANDSHAKE) &&
            now >= c->connect_deadline_ms) {
            char why[96];
            snprintf(why, sizeof(why), "no connection within %d ms", cl->timeout_ms);
            conn_reset(c, why, 1);
        }
        if (!cl->closing)
            expire(&c->inflight, now, c);
        if (!cl->closing)
            expire(&c->queued, now, c);
    }
}

static int parse_hostport(const char *s, char *host, size_t cap, int *port)
{
    const char *colon = strrchr(s, ':');
    char *end;
    if (!colon || colon == s || (size_t)(colon - s) >= cap)
        return -1;
    long p = strtol(colon + 1, &end, 10);
    if (*end || p <= 0 || p > 65535)
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = 0;
    if (host[0] == '[') { /* [v6]:port */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    *port = (int)p;
    return 0;
}

int eddy_fluss_client_new(uv_loop_t *loop, const eddy_fluss_client_opts *opts,
                          eddy_fluss_client **out, eddy_err *err)
{
    char host[256];
    int port;
    if (!opts->bootstrap || parse_hostport(opts->bootstrap, host, sizeof(host), &port))
        return eddy_err_set(err, EDDY_EINVAL, "Fluss bootstrap '%s' is not host:port",
                            opts->bootstrap ? opts->bootstrap : "");
    eddy_fluss_client *cl = eddy_calloc(1, sizeof(*cl));
    if (!cl)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    cl->loop = loop;
    cl->timeout_ms = opts->request_timeout_ms > 0 ? opts->request_timeout_ms : 30000;
    if (opts->sasl_user && opts->sasl_password) {
        cl->sasl_user = eddy_strdup(opts->sasl_user);
        cl->sasl_password = eddy_strdup(opts->sasl_password);
    }
    if (!add_conn(cl, NODE_BOOTSTRAP, host, port)) {
        eddy_free(cl->sasl_user);
        eddy_free(cl->sasl_password);
        eddy_free(cl);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    uv_timer_init(loop, &cl->timer);
    cl->timer.data = cl;
    uv_timer_start(&cl->timer, on_timer, 250, 250);
    uv_unref((uv_handle_t *)&cl->timer);
    uv_idle_init(loop, &cl->idle);
    cl->idle.data = cl;
    cl->open_handles = 2;
    *out = cl;
    return 0;
}

/* The last handle of a closing client is closed: free it, tables last
 * (callbacks may read the tables they were given until the close ends). */
static void client_free(eddy_fluss_client *cl)
{
    eddy__fluss_meta_free(cl);
    eddy_free(cl);
}

static void on_client_handle_closed(uv_handle_t *h)
{
    eddy_fluss_client *cl = h->data;
    if (--cl->open_handles == 0)
        client_free(cl);
}

/*
 * The order matters: first every socket starts closing and every request
 * on the wire or in a queue fails (their callbacks may start nothing new:
 * start functions refuse with EDDY_ECLOSING from here on); then deferred
 * calls, lookups, writers, scanners and metadata operations are canceled,
 * each callback once. The table cache lives until the last handle has
 * closed: a callback that closes the client may still be reading a table.
 */
void eddy_fluss_client_close(eddy_fluss_client *cl)
{
    deferred *d;
    if (!cl || cl->closing)
        return;
    cl->closing = 1;
    for (int i = 0; i < cl->nconns; i++) {
        conn *c = cl->conns[i];
        int was_resetting = c->state == C_RESETTING;
        drop_resolve(c);      /* the lookup may end after the client is freed */
        c->state = C_CLOSING; /* on_close frees it, also when a close is under way */
        if (c->tcp_open && !was_resetting) {
            uv_read_stop((uv_stream_t *)&c->tcp);
            uv_close((uv_handle_t *)&c->tcp, on_close);
        }
    }
    fail_all(&cl->failed, EDDY_ECANCELED, "client closed", NULL);
    for (int i = 0; i < cl->nconns; i++) {
        fail_all(&cl->conns[i]->inflight, EDDY_ECANCELED, "client closed", cl->conns[i]);
        fail_all(&cl->conns[i]->queued, EDDY_ECANCELED, "client closed", cl->conns[i]);
    }
    while ((d = pop_deferred(cl))) {
        void (*fn)(int, void *) = d->fn;
        void *ud = d->ud;
        eddy_free(d);
        fn(EDDY_ECANCELED, ud);
    }
    eddy__fluss_lookup_cancel(cl);
    while (cl->children) {
        eddy__fluss_child *ch = cl->children;
        eddy__rpc_detach(cl, ch);
        ch->closing(ch);
    }
    for (int i = 0; i < cl->nconns; i++) {
        conn *c = cl->conns[i];
        if (!c->tcp_open) {
            eddy_buf_free(&c->in);
            eddy_free(c);
        }
    }
    eddy_free(cl->conns);
    cl->conns = NULL;
    cl->nconns = 0;
    eddy_free(cl->sasl_user);
    eddy_free(cl->sasl_password);
    cl->sasl_user = cl->sasl_password = NULL;
    uv_close((uv_handle_t *)&cl->timer, on_client_handle_closed);
    uv_close((uv_handle_t *)&cl->idle, on_client_handle_closed);
}

void **eddy__fluss_meta_slot(eddy_fluss_client *c)
{
    return &c->meta;
}

void **eddy__fluss_lookup_slot(eddy_fluss_client *c)
{
    return &c->lookups;
}
