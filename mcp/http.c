/*
 * mcp/http.c - the streamable HTTP transport on the manager's curl multi.
 *
 * Each message is one POST to the server's url (Accept: application/json,
 * text/event-stream). The answer is a JSON body or an SSE stream whose
 * events carry messages (the response, and maybe requests and notifications
 * before it); both go to eddy__mcp_on_message as they arrive. The session id
 * the initialize answer gives (Mcp-Session-Id) and the protocol version are
 * sent on every later request. After the server is up a GET opens an SSE
 * stream for what the server sends unasked (list_changed); a 405 means it
 * has none. A 404 on a session means it expired: the server is started
 * again. At stop each session is ended with a DELETE.
 *
 * hreq records are owned by the multi: freed after curl_multi_remove_handle,
 * never inside a curl callback. A hreq whose server restarted (GEN differs)
 * is finished without effect. Manager thread only.
 */
#include "mcp_int.h"

#include "eddy/log.h"

#include <curl/curl.h>
#include <string.h>
#include <strings.h>

#define MAX_BODY EDDY_MCP_MAX_MESSAGE
#define CONNECT_TIMEOUT_MS 5000L

enum { H_POST, H_GET, H_DELETE };

struct hreq {
    eddy_mcp *m;
    srv *s;
    unsigned gen;
    int kind;
    int64_t id; /* the JSON-RPC request carried, or 0 */
    CURL *easy;
    struct curl_slist *headers;
    char *body;
    eddy_buf resp;
    eddy__mcp_sse sse;
    int is_sse, answered;
    int dead;          /* aborted: removed from the multi outside curl's callbacks */
    int pending;       /* made inside a curl callback: not yet added to the multi */
    hreq *prev, *next; /* m->hreqs */
    char errbuf[CURL_ERROR_SIZE];
};

typedef struct hsock {
    uv_poll_t poll;
    curl_socket_t fd;
    eddy_mcp *m;
} hsock;

/* -- curl <-> libuv ---------------------------------------------------------- */

static void check_done(eddy_mcp *m);
static void reap(eddy_mcp *m);

static void poll_cb(uv_poll_t *h, int status, int events)
{
    hsock *k = h->data;
    int flags = 0, running;
    if (status < 0)
        flags = CURL_CSELECT_ERR;
    else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    eddy_mcp *m = k->m;
    m->in_curl++;
    curl_multi_socket_action(m->multi, k->fd, flags, &running);
    m->in_curl--;
    check_done(m);
}

static void sock_closed(uv_handle_t *h)
{
    eddy_free(h->data);
}

static int sock_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *sockp)
{
    eddy_mcp *m = userp;
    hsock *k = sockp;
    (void)e;
    if (what == CURL_POLL_REMOVE) {
        if (k) {
            curl_multi_assign(m->multi, fd, NULL);
            uv_poll_stop(&k->poll);
            uv_close((uv_handle_t *)&k->poll, sock_closed);
        }
        return 0;
    }
    if (!k) {
        k = eddy_calloc(1, sizeof(*k));
        if (!k)
            return -1;
        k->fd = fd;
        k->m = m;
        if (uv_poll_init_socket(&m->loop, &k->poll, fd)) {
            eddy_free(k);
            return -1;
        }
        k->poll.data = k;
        curl_multi_assign(m->multi, fd, k);
    }
    uv_poll_start(&k->poll,
                  (what & CURL_POLL_IN ? UV_READABLE : 0) |
                      (what & CURL_POLL_OUT ? UV_WRITABLE : 0),
                  poll_cb);
    return 0;
}

static void curl_timer_cb(uv_timer_t *t)
{
    eddy_mcp *m = container_of(t, eddy_mcp, curl_timer);
    int running;
    m->in_curl++;
    curl_multi_socket_action(m->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    m->in_curl--;
    check_done(m);
}

static int timer_fn(CURLM *multi, long ms, void *userp)
{
    eddy_mcp *m = userp;
    (void)multi;
    if (ms < 0)
        uv_timer_stop(&m->curl_timer);
    else
        uv_timer_start(&m->curl_timer, curl_timer_cb, (uint64_t)ms, 0);
    return 0;
}

int eddy__mcp_http_init(eddy_mcp *m)
{
    m->multi = curl_multi_init();
    if (!m->multi)
        return EDDY_ENOMEM;
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
    curl_multi_setopt(m->multi, CURLMOPT_SOCKETDATA, m);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERFUNCTION, timer_fn);
    curl_multi_setopt(m->multi, CURLMOPT_TIMERDATA, m);
    uv_timer_init(&m->loop, &m->curl_timer);
    return 0;
}

/* -- requests ---------------------------------------------------------------- */

static void hreq_free(hreq *r)
{
    curl_slist_free_all(r->headers);
    eddy_free(r->body);
    eddy_buf_free(&r->resp);
    eddy__mcp_sse_free(&r->sse);
    eddy_free(r);
}

static int live(hreq *r)
{
    return r->s && r->gen == r->s->gen && !r->m->stopping;
}

static void deliver_text(hreq *r, const char *data, size_t len)
{
    json_error_t je;
    json_t *msg;
    if (!len)
        return;
    msg = json_loadb(data, len, JSON_DECODE_ANY, &je);
    if (!msg) {
        EDDY_WARN("mcp", "server '%s': a message is not JSON (%s)", r->s->cfg->name, je.text);
        return;
    }
    if (r->id && json_is_object(msg) && json_integer_value(json_object_get(msg, "id")) == r->id &&
        !json_object_get(msg, "method")) {
        r->answered = 1;
        /* a stream that stays open after its response is closed by us
         * (reaped once curl's callback returns) */
        if (r->is_sse && r->kind == H_POST)
            r->dead = 1;
    }
    eddy__mcp_on_message(r->s, msg);
    json_decref(msg);
}

static void on_event(void *ud, const char *event, const char *data, size_t len, const char *id)
{
    hreq *r = ud;
    (void)id;
    if (!live(r))
        return;
    if (!data) {
        EDDY_WARN("mcp", "server '%s': an event of more than %u bytes was dropped", r->s->cfg->name,
                  EDDY_MCP_MAX_MESSAGE);
        return;
    }
    if (strcmp(event, "message"))
        return;
    deliver_text(r, data, len);
}

static size_t write_cb(char *p, size_t sz, size_t n, void *ud)
{
    hreq *r = ud;
    size_t len = sz * n;
    if (!live(r))
        return len;
    if (r->is_sse) {
        if (eddy__mcp_sse_feed(&r->sse, p, len, on_event, r))
            return 0;
        return len;
    }
    if (r->resp.len + len > MAX_BODY)
        return 0; /* aborts the transfer */
    return eddy_buf_append(&r->resp, p, len) ? 0 : len;
}

static size_t header_cb(char *p, size_t sz, size_t n, void *ud)
{
    hreq *r = ud;
    size_t len = sz * n, vl;
    const char *v;
    if (len > 13 && !strncasecmp(p, "content-type:", 13)) {
        v = p + 13;
        while (*v == ' ' || *v == '\t')
            v++;
        r->is_sse = !strncasecmp(v, "text/event-stream", 17);
    } else if (len > 15 && !strncasecmp(p, "mcp-session-id:", 15) && live(r)) {
        v = p + 15;
        while (*v == ' ' || *v == '\t')
            v++;
        vl = len - (size_t)(v - p);
        while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
            vl--;
        if (vl && vl < 256 && !r->s->session)
            r->s->session = eddy_strndup(v, vl);
    }
    return len;
}

static hreq *hreq_new(srv *s, int kind, int64_t id)
{
    hreq *r = eddy_calloc(1, sizeof(*r));
    char line[600];
    if (!r)
        return NULL;
    r->m = s->m;
    r->s = s;
    r->gen = s->gen;
    r->kind = kind;
    r->id = id;
    eddy_buf_init(&r->resp);
    eddy__mcp_sse_init(&r->sse, EDDY_MCP_MAX_MESSAGE);
    r->easy = curl_easy_init();
    if (!r->easy) {
        hreq_free(r);
        return NULL;
    }
    curl_easy_setopt(r->easy, CURLOPT_URL, s->cfg->url);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    curl_easy_setopt(r->easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(r->easy, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, write_cb);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, header_cb);
    curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_ERRORBUFFER, r->errbuf);
    curl_easy_setopt(r->easy, CURLOPT_PROTOCOLS_STR, "http,https");
    r->headers = curl_slist_append(r->headers, kind == H_GET
                                                   ? "Accept: text/event-stream"
                                                   : "Accept: application/json, text/event-stream");
    if (kind == H_POST)
        r->headers = curl_slist_append(r->headers, "Content-Type: application/json");
    if (s->session) {
        snprintf(line, sizeof(line), "Mcp-Session-Id: %s", s->session);
        r->headers = curl_slist_append(r->headers, line);
    }
    if (s->proto && !s->init_id) {
        snprintf(line, sizeof(line), "MCP-Protocol-Version: %s", s->proto);
        r->headers = curl_slist_append(r->headers, line);
    }
    for (size_t i = 0; s->cfg->headers && s->cfg->headers[i]; i++)
        r->headers = curl_slist_append(r->headers, s->cfg->headers[i]);
    r->headers = curl_slist_append(r->headers, "Expect:");
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    return r;
}

/* Hand R to the multi; inside one of curl's callbacks (a message that made
 * us send another) curl refuses, so R waits for reap() to add it. */
static int hreq_go(hreq *r)
{
    if (r->m->in_curl)
        r->pending = 1;
    else if (curl_multi_add_handle(r->m->multi, r->easy) != CURLM_OK) {
        curl_easy_cleanup(r->easy);
        hreq_free(r);
        return EDDY_ENET;
    }
    r->prev = NULL;
    r->next = r->m->hreqs;
    if (r->next)
        r->next->prev = r;
    r->m->hreqs = r;
    r->m->live_hreqs++;
    return 0;
}

int eddy__mcp_http_send(srv *s, const char *body, size_t len, int64_t id, int64_t timeout_ms)
{
    hreq *r = hreq_new(s, H_POST, id);
    if (!r)
        return EDDY_ENOMEM;
    r->body = eddy_strndup(body, len);
    if (!r->body) {
        curl_easy_cleanup(r->easy);
        hreq_free(r);
        return EDDY_ENOMEM;
    }
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDS, r->body);
    curl_easy_setopt(r->easy, CURLOPT_POSTFIELDSIZE, (long)len);
    if (timeout_ms > 0)
        curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, (long)timeout_ms + 1000);
    return hreq_go(r);
}

void eddy__mcp_http_open_get(srv *s)
{
    hreq *r;
    if (s->get || s->get_unsupported || s->m->stopping)
        return;
    r = hreq_new(s, H_GET, 0);
    if (!r)
        return;
    curl_easy_setopt(r->easy, CURLOPT_HTTPGET, 1L);
    r->is_sse = 1;
    if (!hreq_go(r))
        s->get = r;
}

static void delete_session(srv *s)
{
    hreq *r;
    if (!s->session)
        return;
    r = hreq_new(s, H_DELETE, 0);
    if (!r)
        return;
    r->gen = s->gen;
    curl_easy_setopt(r->easy, CURLOPT_CUSTOMREQUEST, "DELETE");
    curl_easy_setopt(r->easy, CURLOPT_TIMEOUT_MS, 1000L);
    hreq_go(r);
}

/* -- finishing --------------------------------------------------------------- */

static void finished(hreq *r, CURLcode cc)
{
    srv *s = r->s;
    long status = 0;
    char msg[400];
    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    if (s && s->get == r)
        s->get = NULL;
    if (!live(r) || r->kind == H_DELETE)
        return;
    if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && r->answered)) {
        snprintf(msg, sizeof(msg), "%s: %s", s->cfg->url,
                 r->errbuf[0] ? r->errbuf : curl_easy_strerror(cc));
        if (r->kind == H_GET) {
            if (s->state == S_UP)
                eddy__mcp_retry_get(s, 1000);
            return;
        }
        if (r->id && !r->answered)
            eddy__mcp_srv_down(s, 0, "%s", msg);
        return;
    }
    if (r->kind == H_GET) {
        if (status == 405 || status == 404 || status == 400)
            s->get_unsupported = 1;
        else if (s->state == S_UP)
            eddy__mcp_retry_get(s, 1000);
        return;
    }
    if (status == 404 && s->session && !s->init_id) {
        eddy__mcp_srv_down(s, 0, "the server ended the session (HTTP 404)");
        return;
    }
    if (status >= 200 && status < 300) {
        if (!r->is_sse && r->resp.len)
            deliver_text(r, r->resp.data, r->resp.len);
        if (r->id && !r->answered && live(r))
            eddy__mcp_rpc_failed(s, r->id, EDDY_ENET,
                                 "the server answered without a response to the request");
        return;
    }
    if (r->id && !r->answered) {
        snprintf(msg, sizeof(msg), "%s answered HTTP %ld: %.200s", s->cfg->url, status,
                 r->resp.len ? r->resp.data : "");
        eddy__mcp_rpc_failed(s, r->id, status >= 500 ? EDDY_ENET : EDDY_ETOOL, msg);
    }
}

static void unlink_req(hreq *r)
{
    if (r->prev)
        r->prev->next = r->next;
    else
        r->m->hreqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void drop(hreq *r)
{
    eddy_mcp *m = r->m;
    unlink_req(r);
    if (r->s && r->s->get == r)
        r->s->get = NULL;
    if (!r->pending)
        curl_multi_remove_handle(m->multi, r->easy);
    curl_easy_cleanup(r->easy);
    hreq_free(r);
    m->live_hreqs--;
}

static void check_done(eddy_mcp *m)
{
    CURLMsg *msg;
    int left;
    while ((msg = curl_multi_info_read(m->multi, &left))) {
        hreq *r;
        CURLcode cc;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        cc = msg->data.result;
        unlink_req(r);
        curl_multi_remove_handle(m->multi, r->easy);
        if (!r->dead)
            finished(r, cc);
        if (r->s && r->s->get == r)
            r->s->get = NULL;
        curl_easy_cleanup(r->easy);
        hreq_free(r);
        m->live_hreqs--;
    }
    reap(m);
    eddy__mcp_check_shutdown(m);
}

static void reap(eddy_mcp *m)
{
    hreq *r, *next;
    if (m->in_curl || m->reaping)
        return;
    m->reaping = 1;
    for (r = m->hreqs; r; r = next) {
        next = r->next;
        if (r->dead)
            drop(r);
        else if (r->pending) {
            r->pending = 0;
            if (curl_multi_add_handle(m->multi, r->easy) != CURLM_OK) {
                if (r->id && live(r))
                    eddy__mcp_rpc_failed(r->s, r->id, EDDY_ENET, "curl refused the request");
                r->dead = 1;
            }
        }
    }
    for (r = m->hreqs; r; r = next) {
        next = r->next;
        if (r->dead)
            drop(r);
    }
    m->reaping = 0;
}

void eddy__mcp_http_abort(srv *s, int64_t id)
{
    eddy_mcp *m = s->m;
    for (hreq *r = m->hreqs; r; r = r->next)
        if (r->s == s && r->kind != H_DELETE && (id == 0 || r->id == id))
            r->dead = 1;
    if (id == 0)
        s->get = NULL;
    reap(m);
}

void eddy__mcp_http_shutdown(eddy_mcp *m)
{
    for (hreq *r = m->hreqs; r; r = r->next)
        r->dead = 1;
    for (size_t i = 0; i < m->nsrv; i++) {
        m->srv[i].get = NULL;
        if (m->srv[i].cfg->kind == MCP_HTTP)
            delete_session(&m->srv[i]);
    }
    reap(m);
}

void eddy__mcp_http_abort_all(eddy_mcp *m)
{
    for (hreq *r = m->hreqs; r; r = r->next)
        r->dead = 1;
    reap(m);
}

void eddy__mcp_http_close(eddy_mcp *m)
{
    eddy__mcp_http_abort_all(m);
    if (m->multi)
        curl_multi_cleanup(m->multi); /* may still call timer_fn: the timer closes after */
    m->multi = NULL;
    uv_close((uv_handle_t *)&m->curl_timer, NULL);
}
