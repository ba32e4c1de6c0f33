/*
 * mcp/port.c - where a caller loop's MCP calls start and their answers
 * arrive.
 *
 * A port lives on one caller loop and owns a uv_async_t there. The manager
 * thread puts finished calls on the port's DONE list under MU and sends the
 * async; the port delivers them from its loop. A port is freed when its
 * handle has closed and no call still points at it (REFS: one for the
 * handle, one per call the manager holds). When the port closes, the calls
 * still at the manager are marked ABANDONED (under MU): the manager frees
 * them itself, and their callbacks run from the close with EDDY_ECANCELED.
 */
#include "mcp_int.h"

#include "eddy/log.h"

#include <string.h>

int eddy__mcp_submit(eddy_mcp *m, mcall *c);
long eddy__mcp_server_index(const eddy_mcp *m, const char *name);
int64_t eddy__mcp_server_timeout(const eddy_mcp *m, size_t i);
void eddy__mcp_port_deliver(mcall *c);

typedef struct abandoned {
    eddy_mcp_cb cb;
    void *ud;
    uint64_t start_ms;
} abandoned;

struct eddy_mcp_port {
    eddy_mcp *m;
    uv_loop_t *loop;
    uv_async_t async;
    pthread_mutex_t mu;
    atomic_int refs;
    mcall *done, *done_tail; /* MU */
    int closed;              /* MU: no more async sends */
    mcall *outstanding;      /* loop thread: started, not delivered */
    int active;
    abandoned *ab; /* what the close owes callbacks for */
    size_t nab;
    void (*close_cb)(void *ud);
    void *close_ud;
};

static void port_unref(eddy_mcp_port *p)
{
    if (atomic_fetch_sub(&p->refs, 1) == 1) {
        pthread_mutex_destroy(&p->mu);
        eddy_free(p->ab);
        eddy_free(p);
    }
}

static void call_free(mcall *c)
{
    eddy_free(c->tool);
    json_decref(c->args);
    json_decref(c->result);
    eddy_free(c);
}

/* Manager thread (or eddy_mcp_stop): C is finished. */
void eddy__mcp_port_deliver(mcall *c)
{
    eddy_mcp_port *p = c->port;
    pthread_mutex_lock(&p->mu);
    if (c->abandoned) {
        pthread_mutex_unlock(&p->mu);
        call_free(c);
        port_unref(p);
        return;
    }
    c->next = NULL;
    if (p->done_tail)
        p->done_tail->next = c;
    else
        p->done = c;
    p->done_tail = c;
    if (!p->closed)
        uv_async_send(&p->async);
    pthread_mutex_unlock(&p->mu);
}

static void unlink_outstanding(eddy_mcp_port *p, mcall *c)
{
    if (c->pprev)
        c->pprev->pnext = c->pnext;
    else
        p->outstanding = c->pnext;
    if (c->pnext)
        c->pnext->pprev = c->pprev;
    c->pprev = c->pnext = NULL;
    p->active--;
}

static void deliver_done(eddy_mcp_port *p)
{
    mcall *list, *c;
    pthread_mutex_lock(&p->mu);
    list = p->done;
    p->done = p->done_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    /* out of the outstanding list before any callback: one may close P,
     * which must not count these as abandoned */
    for (c = list; c; c = c->next)
        unlink_outstanding(p, c);
    while ((c = list)) {
        eddy_mcp_result r;
        list = c->next;
        memset(&r, 0, sizeof(r));
        r.status = c->status;
        r.result = c->result;
        r.err = c->err;
        r.duration_ms = eddy_now_ms() - c->start_ms;
        c->cb(&r, c->ud);
        call_free(c);
        port_unref(p);
    }
}

static void async_cb(uv_async_t *a)
{
    deliver_done(container_of(a, eddy_mcp_port, async));
}

int eddy_mcp_port_new(eddy_mcp *m, uv_loop_t *loop, eddy_mcp_port **out, eddy_err *err)
{
    eddy_mcp_port *p = eddy_calloc(1, sizeof(*p));
    int rc;
    *out = NULL;
    if (!p)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    p->m = m;
    p->loop = loop;
    if ((rc = uv_async_init(loop, &p->async, async_cb))) {
        eddy_free(p);
        return eddy_err_setc(err, EDDY_EUV, rc, "mcp: uv_async_init: %s", uv_strerror(rc));
    }
    pthread_mutex_init(&p->mu, NULL);
    atomic_init(&p->refs, 1);
    *out = p;
    return 0;
}

int eddy_mcp_port_active(const eddy_mcp_port *p)
{
    return p->active;
}

int eddy_mcp_call(eddy_mcp_port *p, const char *server, const char *tool, const json_t *args,
                  int64_t timeout_ms, eddy_mcp_cb cb, void *ud, eddy_err *err)
{
    long idx = eddy__mcp_server_index(p->m, server);
    mcall *c;
    int rc;
    if (p->close_cb || p->closed)
        return eddy_err_set(err, EDDY_ECLOSING, "mcp: the port is closing");
    if (idx < 0)
        return eddy_err_set(err, EDDY_ENOENT, "no mcp server '%s' in the job's mcp: section",
                            server);
    if (args && !json_is_object(args))
        return eddy_err_set(err, EDDY_EINVAL, "mcp tool '%s/%s': arguments must be an object",
                            server, tool);
    c = eddy_calloc(1, sizeof(*c));
    if (!c)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    c->port = p;
    c->cb = cb;
    c->ud = ud;
    c->srv = (size_t)idx;
    c->tool = eddy_strdup(tool);
    c->args = args ? json_deep_copy(args) : json_object();
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : eddy__mcp_server_timeout(p->m, (size_t)idx);
    c->start_ms = eddy_now_ms();
    c->deadline_ms = c->start_ms + (uint64_t)c->timeout_ms;
    if (!c->tool || !c->args) {
        call_free(c);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    c->pnext = p->outstanding;
    if (p->outstanding)
        p->outstanding->pprev = c;
    p->outstanding = c;
    p->active++;
    atomic_fetch_add(&p->refs, 1);
    if ((rc = eddy__mcp_submit(p->m, c))) {
        unlink_outstanding(p, c);
        atomic_fetch_sub(&p->refs, 1);
        call_free(c);
        return eddy_err_set(err, rc, "mcp: the manager is stopped");
    }
    return 0;
}

static void close_cb(uv_handle_t *h)
{
    eddy_mcp_port *p = container_of((uv_async_t *)h, eddy_mcp_port, async);
    deliver_done(p);
    for (size_t i = 0; i < p->nab; i++) {
        eddy_mcp_result r;
        memset(&r, 0, sizeof(r));
        r.status = EDDY_ECANCELED;
        eddy_err_set(&r.err, EDDY_ECANCELED, "mcp: the call was cancelled (its port closed)");
        r.duration_ms = eddy_now_ms() - p->ab[i].start_ms;
        p->ab[i].cb(&r, p->ab[i].ud);
    }
    if (p->close_cb)
        p->close_cb(p->close_ud);
    port_unref(p);
}

static void noop_close(void *ud)
{
    (void)ud;
}

void eddy_mcp_port_close(eddy_mcp_port *p, void (*cb)(void *ud), void *ud)
{
    mcall *c, *next;
    size_t n = 0;
    if (!p || p->close_cb)
        return;
    p->close_cb = cb ? cb : noop_close;
    p->close_ud = ud;
    for (c = p->outstanding; c; c = c->pnext)
        n++;
    p->ab = eddy_calloc(n ? n : 1, sizeof(*p->ab));
    pthread_mutex_lock(&p->mu);
    p->closed = 1;
    /* what is already done is delivered normally; the rest is abandoned */
    for (c = p->done; c; c = c->next)
        c->abandoned = -1; /* mark: on the done list */
    for (c = p->outstanding; c; c = next) {
        next = c->pnext;
        if (c->abandoned == -1) {
            c->abandoned = 0;
            continue;
        }
        if (p->ab) {
            p->ab[p->nab].cb = c->cb;
            p->ab[p->nab].ud = c->ud;
            p->ab[p->nab].start_ms = c->start_ms;
            p->nab++;
        } else
            EDDY_ERROR("mcp", "out of memory: a cancelled call's callback is lost");
        unlink_outstanding(p, c);
        c->abandoned = 1;
    }
    pthread_mutex_unlock(&p->mu);
    uv_close((uv_handle_t *)&p->async, close_cb);
}
