/*
 * mcp/manager.c - the MCP manager: its thread and loop, each server's
 * life (start, initialize, list tools, up, down, backoff), calls and their
 * deadlines, and the catalog other threads read.
 *
 * Threads: everything about a server lives on the manager's loop. Other
 * threads touch only what MU guards (the inbox of new calls, the stop
 * request, the settled count, the current catalog pointer) and VERSION
 * (atomic). A call goes inbox -> a server's parked or sent list -> its
 * port's done list (see port.c); it is in exactly one list at a time.
 *
 * A server moves IDLE -> STARTING (transport up, initialize and tools/list
 * in flight, a startup deadline) -> UP -> (exit, transport failure,
 * deadline) BACKOFF -> STARTING ... and STOPPED at the end. GEN grows at
 * each start so that late events of an earlier transport are ignored.
 */
#include "mcp_int.h"

#include "eddy/json.h"
#include "eddy/log.h"

#include <assert.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#define BACKOFF_FIRST_MS 250
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 10000 /* up this long: the next failure starts the backoff over */
#define MAX_PAGES 100
#define MAX_TOOLS 4096
#define GRACE_MS 2000

enum { RETRY_START = 1, RETRY_GET, RETRY_EOF };
#define EOF_GRACE_MS 500 /* stdout closed: this long for the exit to be seen first */

void eddy__mcp_port_deliver(mcall *c); /* port.c */

static void publish(eddy_mcp *m, int changed);
static void rearm(eddy_mcp *m);
static void srv_start(srv *s);

/* -- sending ----------------------------------------------------------------- */

/* Send MSG (borrowed) to S over its transport. ID: the request's id (0 for a
 * notification or a response). Returns 0 or an error (the caller decides). */
static int srv_send(srv *s, json_t *msg, int64_t id, int64_t timeout_ms)
{
    size_t len;
    char *line = eddy__mcp_line(msg, &len);
    int rc;
    if (!line)
        return EDDY_ENOMEM;
    if (s->cfg->kind == MCP_STDIO)
        rc = eddy__mcp_stdio_send(s, line, len);
    else
        rc = eddy__mcp_http_send(s, line, len - 1, id, timeout_ms);
    eddy_free(line);
    return rc;
}

static int64_t send_request(srv *s, const char *method, json_t *params, int64_t timeout_ms)
{
    int64_t id = ++s->next_id;
    json_t *msg = json_pack("{s:s, s:I, s:s, s:o}", "jsonrpc", "2.0", "id", (json_int_t)id,
                            "method", method, "params", params ? params : json_object());
    int rc = msg ? srv_send(s, msg, id, timeout_ms) : EDDY_ENOMEM;
    json_decref(msg);
    return rc ? rc : id;
}

static void send_notification(srv *s, const char *method, json_t *params)
{
    json_t *msg = json_pack("{s:s, s:s}", "jsonrpc", "2.0", "method", method);
    if (msg && params)
        json_object_set_new(msg, "params", params);
    else
        json_decref(params);
    if (msg)
        srv_send(s, msg, 0, 0);
    json_decref(msg);
}

/* -- calls ------------------------------------------------------------------- */

static void unlink_call(mcall **list, mcall *c)
{
    for (mcall **pp = list; *pp; pp = &(*pp)->next)
        if (*pp == c) {
            *pp = c->next;
            c->next = NULL;
            return;
        }
}

/* End C (in no list any more) with STATUS / RESULT (taken) and hand it back. */
static void finish_call(mcall *c, int status, json_t *result, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void finish_call(mcall *c, int status, json_t *result, const char *fmt, ...)
{
    c->status = status;
    c->result = result;
    if (status && fmt) {
        va_list ap;
        va_start(ap, fmt);
        c->err.code = status;
        vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
        va_end(ap);
    }
    eddy__mcp_port_deliver(c);
}

static void dispatch_call(srv *s, mcall *c)
{
    json_t *params = json_pack("{s:s, s:O}", "name", c->tool, "arguments", c->args);
    int64_t id;
    if (!params) {
        finish_call(c, EDDY_ENOMEM, NULL, "out of memory");
        return;
    }
    id = send_request(s, "tools/call", params, c->deadline_ms - eddy_now_ms());
    if (id < 0) {
        finish_call(c, EDDY_ENET, NULL, "mcp server '%s': could not send the call (%s)",
                    s->cfg->name, eddy_strerror((int)id));
        return;
    }
    c->rpc_id = id;
    c->next = s->calls;
    s->calls = c;
}

static void fail_unreachable(srv *s, mcall *c)
{
    finish_call(c, EDDY_ENET, NULL, "mcp server '%s' is not reachable: %s", s->cfg->name,
                s->error ? s->error : "it has not started yet");
}

/* Whether S is within its restart window: startup_timeout from when it went
 * down (or from its first start). Calls wait for it meanwhile; after it, they
 * fail at once until the server is back. */
static int restarting(const srv *s)
{
    return s->down_since && eddy_now_ms() - s->down_since < (uint64_t)s->cfg->startup_timeout_ms;
}

/* A call arrived from the inbox. */
static void take_call(eddy_mcp *m, mcall *c)
{
    srv *s = &m->srv[c->srv];
    if (m->stopping) {
        finish_call(c, EDDY_ECANCELED, NULL, "mcp: the manager is stopping");
        return;
    }
    if (s->state == S_UP)
        dispatch_call(s, c);
    else if (s->state == S_STARTING || (s->state == S_BACKOFF && restarting(s))) {
        c->next = s->parked;
        s->parked = c;
    } else
        fail_unreachable(s, c);
}

static void answer_call(srv *s, mcall *c, json_t *msg)
{
    char label[200];
    json_t *error = json_object_get(msg, "error"), *out = NULL;
    eddy_err err = {0};
    int rc;
    snprintf(label, sizeof(label), "%s/%s", s->cfg->name, c->tool);
    if (error) {
        const char *text = json_string_value(json_object_get(error, "message"));
        finish_call(c, EDDY_ETOOL, NULL, "mcp tool '%s': %s (error %lld)", label,
                    text ? text : "the server answered an error",
                    (long long)json_integer_value(json_object_get(error, "code")));
        return;
    }
    rc = eddy__mcp_result_json(json_object_get(msg, "result"), label, &out, &err);
    if (rc)
        finish_call(c, rc, NULL, "%s", err.msg);
    else
        finish_call(c, 0, out, NULL);
}

/* Fail every call sent to S (the transport went away). */
static void fail_sent(srv *s, int code, const char *fmt, const char *why)
{
    mcall *c;
    while ((c = s->calls)) {
        s->calls = c->next;
        c->next = NULL;
        finish_call(c, code, NULL, fmt, s->cfg->name, why);
    }
}

/* The earliest deadline of every call and starting server. */
static void deadline_cb(uv_timer_t *t)
{
    eddy_mcp *m = container_of(t, eddy_mcp, deadline);
    uint64_t now = eddy_now_ms();
    for (size_t i = 0; i < m->nsrv; i++) {
        srv *s = &m->srv[i];
        mcall **pp = &s->calls, *c;
        while ((c = *pp)) {
            if (c->deadline_ms > now) {
                pp = &c->next;
                continue;
            }
            *pp = c->next;
            c->next = NULL;
            send_notification(
                s, "notifications/cancelled",
                json_pack("{s:I, s:s}", "requestId", (json_int_t)c->rpc_id, "reason", "timed out"));
            if (s->cfg->kind == MCP_HTTP)
                eddy__mcp_http_abort(s, c->rpc_id);
            finish_call(c, EDDY_ETIMEDOUT, NULL, "mcp tool '%s/%s' timed out after %gs",
                        s->cfg->name, c->tool, (double)c->timeout_ms / 1000.0);
        }
        pp = &s->parked;
        while ((c = *pp)) {
            if (c->deadline_ms > now) {
                pp = &c->next;
                continue;
            }
            *pp = c->next;
            c->next = NULL;
            finish_call(c, EDDY_ETIMEDOUT, NULL,
                        "mcp tool '%s/%s' timed out after %gs waiting for the server to start "
                        "(%s)",
                        s->cfg->name, c->tool, (double)c->timeout_ms / 1000.0,
                        s->error ? s->error : "still starting");
        }
        if (s->state == S_STARTING && s->startup_deadline && s->startup_deadline <= now)
            eddy__mcp_srv_down(s, 0, "no answer to initialize and tools/list within %gs",
                               (double)s->cfg->startup_timeout_ms / 1000.0);
    }
    rearm(m);
}

static void rearm(eddy_mcp *m)
{
    uint64_t next = UINT64_MAX, now = eddy_now_ms();
    if (m->closing)
        return;
    for (size_t i = 0; i < m->nsrv; i++) {
        srv *s = &m->srv[i];
        for (mcall *c = s->calls; c; c = c->next)
            next = c->deadline_ms < next ? c->deadline_ms : next;
        for (mcall *c = s->parked; c; c = c->next)
            next = c->deadline_ms < next ? c->deadline_ms : next;
        if (s->state == S_STARTING && s->startup_deadline && s->startup_deadline < next)
            next = s->startup_deadline;
    }
    if (next == UINT64_MAX)
        uv_timer_stop(&m->deadline);
    else
        uv_timer_start(&m->deadline, deadline_cb, next > now ? next - now : 0, 0);
}

/* -- server life ------------------------------------------------------------- */

static void settle(srv *s)
{
    eddy_mcp *m = s->m;
    if (s->settled)
        return;
    s->settled = 1;
    pthread_mutex_lock(&m->mu);
    m->settled++;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->mu);
}

static void retry_cb(uv_timer_t *t)
{
    srv *s = container_of(t, srv, retry);
    if (s->m->stopping)
        return;
    if (s->retry_kind == RETRY_START && s->state == S_BACKOFF)
        srv_start(s);
    else if (s->retry_kind == RETRY_GET && s->state == S_UP)
        eddy__mcp_http_open_get(s);
    else if (s->retry_kind == RETRY_EOF && (s->state == S_UP || s->state == S_STARTING) &&
             s->eof_gen == s->gen)
        eddy__mcp_srv_down(s, 0, "it closed its stdout and kept running");
}

void eddy__mcp_stdout_closed(srv *s)
{
    if (s->m->stopping || (s->state != S_UP && s->state != S_STARTING))
        return;
    s->eof_gen = s->gen;
    s->retry_kind = RETRY_EOF;
    uv_timer_start(&s->retry, retry_cb, EOF_GRACE_MS, 0);
}

void eddy__mcp_retry_get(srv *s, uint64_t ms)
{
    if (s->m->stopping)
        return;
    s->retry_kind = RETRY_GET;
    uv_timer_start(&s->retry, retry_cb, ms, 0);
}

void eddy__mcp_srv_down(srv *s, int exited, const char *fmt, ...)
{
    eddy_mcp *m = s->m;
    char why[512];
    va_list ap;
    mcall *c;
    int was_up = s->state == S_UP;

    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    if (s->state == S_STOPPED || s->state == S_BACKOFF)
        return;
    s->gen++;
    eddy_free(s->error);
    s->error = eddy_strdup(why);
    if (exited)
        fail_sent(s, EDDY_EIO, "mcp server '%s' exited during the call (%s)", why);
    else
        fail_sent(s, EDDY_ENET, "mcp server '%s' went away during the call (%s)", why);
    s->init_id = s->list_id = 0;
    json_decref(s->building);
    s->building = NULL;
    s->relist = 0;
    eddy_free(s->session);
    s->session = NULL;
    if (s->cfg->kind == MCP_STDIO)
        eddy__mcp_stdio_kill(s, SIGKILL, 1);
    else
        eddy__mcp_http_abort(s, 0);
    if (was_up && eddy_now_ms() - s->up_since >= STABLE_MS)
        s->backoff_ms = BACKOFF_FIRST_MS, s->fails = 0;
    s->fails++;
    s->state = S_BACKOFF;
    EDDY_LOG(m->quiet ? EDDY_LOG_DEBUG : EDDY_LOG_WARN, "mcp",
             "server '%s' %s: %s; retrying in %gs", s->cfg->name,
             was_up ? "went down" : "could not start", why, (double)s->backoff_ms / 1000.0);
    if (was_up || !s->down_since)
        s->down_since = eddy_now_ms();
    if (!restarting(s))
        while ((c = s->parked)) {
            s->parked = c->next;
            c->next = NULL;
            fail_unreachable(s, c);
        }
    s->retry_kind = RETRY_START;
    uv_timer_start(&s->retry, retry_cb, (uint64_t)s->backoff_ms, 0);
    s->backoff_ms = s->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : s->backoff_ms * 2;
    publish(m, 0); /* before settle: a waiter reads the catalog next */
    settle(s);
    rearm(m);
}

static void srv_start(srv *s)
{
    eddy_err err = {0};
    json_t *params;
    int64_t id;
    s->gen++;
    s->state = S_STARTING;
    s->next_id = 0;
    if (!s->ever_up && !s->down_since)
        s->down_since = eddy_now_ms(); /* the restart window opens at the first start */
    eddy_free(s->proto);               /* the new session's, once initialize answers */
    s->proto = NULL;
    s->startup_deadline = eddy_now_ms() + (uint64_t)s->cfg->startup_timeout_ms;
    if (s->cfg->kind == MCP_STDIO && eddy__mcp_stdio_start(s, &err)) {
        eddy__mcp_srv_down(s, 0, "%s", err.msg);
        return;
    }
    params = json_pack("{s:s, s:{}, s:{s:s, s:s}}", "protocolVersion", EDDY_MCP_PROTOCOL_VERSION,
                       "capabilities", "clientInfo", "name", "eddy", "version", "0.1");
    id = send_request(s, "initialize", params, s->cfg->startup_timeout_ms);
    if (id < 0) {
        eddy__mcp_srv_down(s, 0, "could not send initialize (%s)", eddy_strerror((int)id));
        return;
    }
    s->init_id = id;
    rearm(s->m);
}

static void request_list(srv *s, const char *cursor)
{
    json_t *params = cursor ? json_pack("{s:s}", "cursor", cursor) : json_object();
    int64_t id = send_request(s, "tools/list", params, s->cfg->startup_timeout_ms);
    if (id < 0) {
        eddy__mcp_srv_down(s, 0, "could not send tools/list (%s)", eddy_strerror((int)id));
        return;
    }
    s->list_id = id;
}

static void got_init(srv *s, json_t *msg)
{
    json_t *res = json_object_get(msg, "result");
    const char *pv = json_string_value(json_object_get(res, "protocolVersion"));
    if (!json_is_object(res)) {
        const char *t =
            json_string_value(json_object_get(json_object_get(msg, "error"), "message"));
        eddy__mcp_srv_down(s, 0, "initialize failed: %s", t ? t : "no result");
        return;
    }
    eddy_free(s->proto);
    s->proto = eddy_strdup(pv ? pv : EDDY_MCP_PROTOCOL_VERSION);
    send_notification(s, "notifications/initialized", NULL);
    if (s->state != S_STARTING)
        return; /* sending failed and took the server down */
    json_decref(s->building);
    s->building = json_array();
    s->pages = 0;
    request_list(s, NULL);
}

/* Keep the well-formed tools of one page. */
static void add_page(srv *s, json_t *tools)
{
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        json_t *schema = json_object_get(t, "inputSchema");
        const char *name = json_string_value(json_object_get(t, "name"));
        const char *desc = json_string_value(json_object_get(t, "description"));
        if (!name || !*name || json_array_size(s->building) >= MAX_TOOLS) {
            EDDY_WARN("mcp", "server '%s': a tool without a name, or past %d tools, is ignored",
                      s->cfg->name, MAX_TOOLS);
            continue;
        }
        json_array_append_new(
            s->building,
            json_pack("{s:s, s:s, s:O}", "name", name, "description", desc ? desc : "",
                      "inputSchema",
                      json_is_object(schema) ? schema : json_pack("{s:s}", "type", "object")));
    }
}

static void got_list(srv *s, json_t *msg)
{
    json_t *res = json_object_get(msg, "result"), *tools = json_object_get(res, "tools");
    const char *cursor = json_string_value(json_object_get(res, "nextCursor"));
    mcall *c;
    int changed;
    if (!json_is_array(tools)) {
        const char *t =
            json_string_value(json_object_get(json_object_get(msg, "error"), "message"));
        eddy__mcp_srv_down(s, 0, "tools/list failed: %s", t ? t : "no tools in the answer");
        return;
    }
    add_page(s, tools);
    if (cursor && *cursor && ++s->pages < MAX_PAGES) {
        request_list(s, cursor);
        return;
    }
    changed = !s->tools || !json_equal(s->tools, s->building);
    json_decref(s->tools);
    s->tools = s->building;
    s->building = NULL;
    if (s->state == S_STARTING) {
        s->state = S_UP;
        s->up_since = eddy_now_ms();
        s->startup_deadline = 0;
        s->ever_up = 1;
        s->down_since = 0;
        s->fails = 0;
        eddy_free(s->error);
        s->error = NULL;
        EDDY_INFO("mcp", "server '%s' is up (%zu tools, protocol %s)", s->cfg->name,
                  json_array_size(s->tools), s->proto ? s->proto : "?");
        if (s->cfg->kind == MCP_HTTP && !s->get_unsupported)
            eddy__mcp_http_open_get(s);
    }
    publish(s->m, changed);
    settle(s);
    while ((c = s->parked)) {
        s->parked = c->next;
        c->next = NULL;
        dispatch_call(s, c);
    }
    if (s->relist) {
        s->relist = 0;
        s->building = json_array();
        s->pages = 0;
        request_list(s, NULL);
    }
    rearm(s->m);
}

/* A request of the server's: ping is answered, the rest refused. */
static void server_request(srv *s, json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *id = json_object_get(msg, "id"), *ans;
    if (method && !strcmp(method, "ping"))
        ans = json_pack("{s:s, s:O, s:{}}", "jsonrpc", "2.0", "id", id, "result");
    else
        ans = json_pack("{s:s, s:O, s:{s:i, s:s}}", "jsonrpc", "2.0", "id", id, "error", "code",
                        -32601, "message", "eddy does not offer this method");
    if (ans)
        srv_send(s, ans, 0, 0);
    json_decref(ans);
}

static void on_one(srv *s, json_t *msg)
{
    const char *method = json_string_value(json_object_get(msg, "method"));
    json_t *idv = json_object_get(msg, "id");
    int64_t id;
    if (!json_is_object(msg))
        return;
    if (method) {
        if (idv)
            server_request(s, msg);
        else if (!strcmp(method, "notifications/tools/list_changed") && s->state == S_UP) {
            if (s->list_id)
                s->relist = 1;
            else {
                s->building = json_array();
                s->pages = 0;
                request_list(s, NULL);
            }
        }
        return;
    }
    if (!json_is_integer(idv))
        return;
    id = json_integer_value(idv);
    if (id && id == s->init_id) {
        s->init_id = 0;
        got_init(s, msg);
        return;
    }
    if (id && id == s->list_id) {
        s->list_id = 0;
        got_list(s, msg);
        return;
    }
    for (mcall *c = s->calls; c; c = c->next)
        if (c->rpc_id == id) {
            unlink_call(&s->calls, c);
            answer_call(s, c, msg);
            rearm(s->m);
            return;
        }
    EDDY_DEBUG("mcp", "server '%s': answer to unknown id %lld ignored", s->cfg->name,
               (long long)id);
}

void eddy__mcp_on_message(srv *s, json_t *msg)
{
    size_t i;
    json_t *it;
    if (json_is_array(msg)) /* a batch (older revisions) */
        json_array_foreach(msg, i, it) on_one(s, it);
    else
        on_one(s, msg);
}

void eddy__mcp_rpc_failed(srv *s, int64_t id, int code, const char *msg)
{
    if (!id)
        return;
    if (id == s->init_id || id == s->list_id) {
        eddy__mcp_srv_down(s, 0, "%s", msg);
        return;
    }
    for (mcall *c = s->calls; c; c = c->next)
        if (c->rpc_id == id) {
            unlink_call(&s->calls, c);
            finish_call(c, code, NULL, "mcp tool '%s/%s': %s", s->cfg->name, c->tool, msg);
            rearm(s->m);
            return;
        }
}

/* -- catalog ----------------------------------------------------------------- */

typedef struct csrv {
    char *name, *error;
    const char *transport;
    int up, ever_up;
    size_t ntools;
} csrv;

struct eddy_mcp_catalog {
    atomic_long refs;
    uint64_t version;
    csrv *srv;
    size_t nsrv;
    eddy_mcp_tool *tools;
    size_t ntools;
    json_t *keep; /* deep copies the tools point into */
};

static void catalog_free(eddy_mcp_catalog *c)
{
    for (size_t i = 0; i < c->nsrv; i++) {
        eddy_free(c->srv[i].name);
        eddy_free(c->srv[i].error);
    }
    eddy_free(c->srv);
    eddy_free(c->tools);
    json_decref(c->keep);
    eddy_free(c);
}

static eddy_mcp_catalog *catalog_build(eddy_mcp *m, uint64_t version)
{
    eddy_mcp_catalog *c = eddy_calloc(1, sizeof(*c));
    size_t total = 0, k = 0;
    if (!c)
        return NULL;
    atomic_init(&c->refs, 1);
    c->version = version;
    for (size_t i = 0; i < m->nsrv; i++)
        total += json_array_size(m->srv[i].tools);
    c->srv = eddy_calloc(m->nsrv ? m->nsrv : 1, sizeof(*c->srv));
    c->tools = eddy_calloc(total ? total : 1, sizeof(*c->tools));
    c->keep = json_array();
    if (!c->srv || !c->tools || !c->keep)
        goto oom;
    c->nsrv = m->nsrv;
    for (size_t i = 0; i < m->nsrv; i++) {
        srv *s = &m->srv[i];
        csrv *o = &c->srv[i];
        json_t *copy = s->tools ? json_deep_copy(s->tools) : json_array(), *t;
        size_t j;
        o->name = eddy_strdup(s->cfg->name);
        o->error = s->error ? eddy_strdup(s->error) : NULL;
        o->transport = s->cfg->kind == MCP_STDIO ? "stdio" : "http";
        o->up = s->state == S_UP;
        o->ever_up = s->ever_up;
        if (!copy || !o->name || (s->error && !o->error) || json_array_append_new(c->keep, copy))
            goto oom;
        o->ntools = json_array_size(copy);
        json_array_foreach(copy, j, t)
        {
            eddy_mcp_tool *x = &c->tools[k++];
            x->server = o->name;
            x->name = json_string_value(json_object_get(t, "name"));
            x->description = json_string_value(json_object_get(t, "description"));
            x->input_schema = json_object_get(t, "inputSchema");
        }
    }
    c->ntools = k;
    return c;
oom:
    catalog_free(c);
    return NULL;
}

/* A new snapshot; CHANGED: a tool list changed (the version grows). */
static void publish(eddy_mcp *m, int changed)
{
    uint64_t v = atomic_load(&m->version) + (changed ? 1 : 0);
    eddy_mcp_catalog *c = catalog_build(m, v), *old;
    if (!c) {
        EDDY_ERROR("mcp", "out of memory building the tool catalog");
        return;
    }
    pthread_mutex_lock(&m->mu);
    old = m->cat;
    m->cat = c;
    atomic_store(&m->version, v);
    pthread_mutex_unlock(&m->mu);
    eddy_mcp_catalog_release(old);
}

eddy_mcp_catalog *eddy_mcp_catalog_get(eddy_mcp *m)
{
    eddy_mcp_catalog *c;
    pthread_mutex_lock(&m->mu);
    c = m->cat;
    if (c)
        atomic_fetch_add(&c->refs, 1);
    pthread_mutex_unlock(&m->mu);
    return c;
}

void eddy_mcp_catalog_release(eddy_mcp_catalog *c)
{
    if (c && atomic_fetch_sub(&c->refs, 1) == 1)
        catalog_free(c);
}

uint64_t eddy_mcp_catalog_version(const eddy_mcp_catalog *c)
{
    return c->version;
}

size_t eddy_mcp_catalog_count(const eddy_mcp_catalog *c)
{
    return c->ntools;
}

const eddy_mcp_tool *eddy_mcp_catalog_tool(const eddy_mcp_catalog *c, size_t i)
{
    return i < c->ntools ? &c->tools[i] : NULL;
}

const eddy_mcp_tool *eddy_mcp_catalog_find(const eddy_mcp_catalog *c, const char *server,
                                           const char *tool)
{
    for (size_t i = 0; i < c->ntools; i++)
        if (!strcmp(c->tools[i].server, server) && !strcmp(c->tools[i].name, tool))
            return &c->tools[i];
    return NULL;
}

size_t eddy_mcp_catalog_servers(const eddy_mcp_catalog *c)
{
    return c->nsrv;
}

int eddy_mcp_catalog_server(const eddy_mcp_catalog *c, size_t i, eddy_mcp_server_info *info)
{
    if (i >= c->nsrv)
        return EDDY_ERANGE;
    info->name = c->srv[i].name;
    info->transport = c->srv[i].transport;
    info->up = c->srv[i].up;
    info->ever_up = c->srv[i].ever_up;
    info->error = c->srv[i].error;
    info->ntools = c->srv[i].ntools;
    return 0;
}

uint64_t eddy_mcp_version(const eddy_mcp *m)
{
    return atomic_load(&((eddy_mcp *)m)->version);
}

/* -- the thread -------------------------------------------------------------- */

static void close_all(eddy_mcp *m)
{
    if (m->closing)
        return;
    m->closing = 1;
    eddy__mcp_http_close(m);
    for (size_t i = 0; i < m->nsrv; i++)
        uv_close((uv_handle_t *)&m->srv[i].retry, NULL);
    uv_close((uv_handle_t *)&m->deadline, NULL);
    uv_close((uv_handle_t *)&m->grace, NULL);
    uv_close((uv_handle_t *)&m->wake, NULL);
}

void eddy__mcp_check_shutdown(eddy_mcp *m)
{
    if (m->stopping && !m->closing && m->live_procs == 0 && m->live_hreqs == 0)
        close_all(m);
}

static void grace_cb(uv_timer_t *t)
{
    eddy_mcp *m = container_of(t, eddy_mcp, grace);
    eddy__mcp_stdio_kill_all(m, SIGKILL);
    eddy__mcp_http_abort_all(m);
    eddy__mcp_check_shutdown(m);
}

static void begin_stop(eddy_mcp *m)
{
    mcall *c;
    m->stopping = 1;
    for (size_t i = 0; i < m->nsrv; i++) {
        srv *s = &m->srv[i];
        uv_timer_stop(&s->retry);
        while ((c = s->calls)) {
            s->calls = c->next;
            c->next = NULL;
            finish_call(c, EDDY_ECANCELED, NULL, "mcp: the manager stopped during the call");
        }
        while ((c = s->parked)) {
            s->parked = c->next;
            c->next = NULL;
            finish_call(c, EDDY_ECANCELED, NULL, "mcp: the manager stopped");
        }
        s->state = S_STOPPED;
    }
    uv_timer_stop(&m->deadline);
    eddy__mcp_stdio_kill_all(m, SIGTERM);
    eddy__mcp_http_shutdown(m);
    uv_timer_start(&m->grace, grace_cb, GRACE_MS, 0);
    eddy__mcp_check_shutdown(m);
}

static void wake_cb(uv_async_t *a)
{
    eddy_mcp *m = container_of(a, eddy_mcp, wake);
    mcall *list, *c;
    int stop;
    pthread_mutex_lock(&m->mu);
    list = m->inbox;
    m->inbox = m->inbox_tail = NULL;
    stop = m->stop_asked;
    pthread_mutex_unlock(&m->mu);
    while ((c = list)) {
        list = c->next;
        c->next = NULL;
        take_call(m, c);
    }
    if (stop && !m->stopping)
        begin_stop(m);
    else
        rearm(m);
}

static void thread_main(void *arg)
{
    eddy_mcp *m = arg;
    sigset_t set;
    /* a write to a server that just died is an EPIPE to notice, not a signal
     * that ends eddy (whatever the process does with SIGPIPE elsewhere) */
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    for (size_t i = 0; i < m->nsrv; i++)
        srv_start(&m->srv[i]);
    uv_run(&m->loop, UV_RUN_DEFAULT);
}

int eddy_mcp_new(const eddy_mcp_config *cfg, eddy_mcp **out, eddy_err *err)
{
    eddy_mcp *m = eddy_calloc(1, sizeof(*m));
    *out = NULL;
    if (!m)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (eddy__mcp_config_copy(cfg, &m->cfg)) {
        eddy_free(m);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    m->nsrv = m->cfg->n;
    m->srv = eddy_calloc(m->nsrv ? m->nsrv : 1, sizeof(*m->srv));
    if (!m->srv) {
        eddy_mcp_config_free(m->cfg);
        eddy_free(m);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < m->nsrv; i++) {
        m->srv[i].m = m;
        m->srv[i].idx = i;
        m->srv[i].cfg = &m->cfg->servers[i];
        m->srv[i].backoff_ms = BACKOFF_FIRST_MS;
    }
    pthread_mutex_init(&m->mu, NULL);
    {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&m->cond, &ca);
        pthread_condattr_destroy(&ca);
    }
    atomic_init(&m->version, 0);
    publish(m, 0);
    if (!m->cat) {
        eddy_mcp_free(m);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    *out = m;
    return 0;
}

int eddy_mcp_start(eddy_mcp *m, eddy_err *err)
{
    int rc;
    if (m->started)
        return 0;
    if ((rc = uv_loop_init(&m->loop)))
        return eddy_err_setc(err, EDDY_EUV, rc, "mcp: uv_loop_init: %s", uv_strerror(rc));
    m->loop_ready = 1;
    uv_async_init(&m->loop, &m->wake, wake_cb);
    uv_timer_init(&m->loop, &m->deadline);
    uv_timer_init(&m->loop, &m->grace);
    for (size_t i = 0; i < m->nsrv; i++)
        uv_timer_init(&m->loop, &m->srv[i].retry);
    if ((rc = eddy__mcp_http_init(m)))
        return eddy_err_set(err, EDDY_EUV, "mcp: could not set up curl");
    pthread_mutex_lock(&m->mu); /* eddy__mcp_submit reads STARTED under MU */
    rc = uv_thread_create(&m->thread, thread_main, m);
    if (rc == 0)
        m->started = 1;
    pthread_mutex_unlock(&m->mu);
    if (rc)
        return eddy_err_setc(err, EDDY_EUV, rc, "mcp: could not start its thread: %s",
                             uv_strerror(rc));
    return 0;
}

int eddy_mcp_wait_ready(eddy_mcp *m, int64_t timeout_ms)
{
    struct timespec ts;
    int rc = 0;
    eddy_deadline_in(&ts, (uint64_t)(timeout_ms > 0 ? timeout_ms : 0));
    pthread_mutex_lock(&m->mu);
    while (m->settled < m->nsrv && rc == 0)
        rc = pthread_cond_timedwait(&m->cond, &m->mu, &ts);
    rc = m->settled < m->nsrv ? EDDY_ETIMEDOUT : 0;
    pthread_mutex_unlock(&m->mu);
    return rc;
}

void eddy_mcp_stop(eddy_mcp *m)
{
    mcall *list, *c;
    if (!m || m->stopped)
        return;
    m->stopped = 1;
    if (m->started) {
        pthread_mutex_lock(&m->mu);
        m->stop_asked = 1;
        uv_async_send(&m->wake);
        pthread_mutex_unlock(&m->mu);
        uv_thread_join(&m->thread);
    } else {
        pthread_mutex_lock(&m->mu);
        m->stop_asked = 1;
        pthread_mutex_unlock(&m->mu);
    }
    /* calls that reached the inbox after the thread's last look */
    pthread_mutex_lock(&m->mu);
    list = m->inbox;
    m->inbox = m->inbox_tail = NULL;
    pthread_mutex_unlock(&m->mu);
    while ((c = list)) {
        list = c->next;
        c->next = NULL;
        finish_call(c, EDDY_ECANCELED, NULL, "mcp: the manager stopped");
    }
    if (m->loop_ready) {
        int rc = uv_loop_close(&m->loop);
        if (rc)
            EDDY_ERROR("mcp", "loop still has handles at stop (%s)", uv_err_name(rc));
        m->loop_ready = 0;
    }
}

void eddy_mcp_free(eddy_mcp *m)
{
    if (!m)
        return;
    eddy_mcp_stop(m);
    for (size_t i = 0; i < m->nsrv; i++) {
        srv *s = &m->srv[i];
        json_decref(s->tools);
        json_decref(s->building);
        eddy_free(s->error);
        eddy_free(s->proto);
        eddy_free(s->session);
    }
    eddy_free(m->srv);
    eddy_mcp_catalog_release(m->cat);
    eddy_mcp_config_free(m->cfg);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cond);
    eddy_free(m);
}

/* For port.c: queue C for the manager thread. Returns 0 or EDDY_ECLOSING. */
int eddy__mcp_submit(eddy_mcp *m, mcall *c);
int eddy__mcp_submit(eddy_mcp *m, mcall *c)
{
    pthread_mutex_lock(&m->mu);
    if (m->stop_asked || !m->started) {
        pthread_mutex_unlock(&m->mu);
        return EDDY_ECLOSING;
    }
    c->next = NULL;
    if (m->inbox_tail)
        m->inbox_tail->next = c;
    else
        m->inbox = c;
    m->inbox_tail = c;
    uv_async_send(&m->wake); /* under MU: the handle cannot close meanwhile */
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* For port.c: the index of server NAME, or -1. */
long eddy__mcp_server_index(const eddy_mcp *m, const char *name);
long eddy__mcp_server_index(const eddy_mcp *m, const char *name)
{
    for (size_t i = 0; i < m->nsrv; i++)
        if (!strcmp(m->cfg->servers[i].name, name))
            return (long)i;
    return -1;
}

int64_t eddy__mcp_server_timeout(const eddy_mcp *m, size_t i);
int64_t eddy__mcp_server_timeout(const eddy_mcp *m, size_t i)
{
    return m->cfg->servers[i].timeout_ms;
}
