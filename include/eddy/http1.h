/*
 * include/eddy/http1.h - a plain-HTTP/1.1 client of eddy's own, on a libuv loop.
 *
 * What it is for: the LLM client's requests to `http://` endpoints (a local
 * model server, a gateway on the same host, the mock), where libcurl's
 * per-transfer work was about a fifth of a worker's CPU and its easy handle
 * and connection cache about 12 KB per request in flight. It does one thing:
 * a request with a body, an answer read as it arrives, on kept-alive
 * connections pooled per host and port. No TLS, no proxies, no redirects, no
 * compression, no pipelining: whatever needs them goes through curl
 * (eddy_http1_takes says which).
 *
 * One client per loop; everything is called on that loop's thread. A request
 * is the caller's object from eddy_http1_start to eddy_http1_free: its
 * callbacks run until the done callback (exactly once per started request,
 * unless the caller frees it first: then no callback runs afterwards, which
 * is how a caller cancels). Freeing inside one's own callback is allowed (the
 * memory goes after the callback returns).
 *
 * Connections: one request at a time on each (no pipelining). After a whole
 * answer that the server let stay open, the connection goes back to its
 * origin's idle list (at most 1,024 kept, none older than 60 s); an idle
 * connection the server closes is dropped when its end arrives. A request
 * sent on a reused connection that the server had closed meanwhile (nothing
 * of an answer came) is sent once more on a new connection, as browsers and
 * curl do. Names are resolved with uv_getaddrinfo (numeric addresses
 * without it) and kept for 60 s; each address is tried in order.
 */
#ifndef EDDY_HTTP1_H
#define EDDY_HTTP1_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "eddy/error.h"

typedef struct eddy_http1 eddy_http1;
typedef struct eddy_http1_req eddy_http1_req;

/* Where a failed request stopped (eddy_http1_result.stage). */
enum {
    EDDY_HTTP1_RESOLVE = 1, /* the host name did not resolve */
    EDDY_HTTP1_CONNECT,     /* no address took the connection (refused, unreachable, timed out) */
    EDDY_HTTP1_SEND,        /* the request could not be written */
    EDDY_HTTP1_RECV, /* the answer did not come whole (closed, reset, malformed, timed out) */
};

typedef struct eddy_http1_result {
    int code;        /* 0: a whole answer; EDDY_ENET, EDDY_ETIMEDOUT, EDDY_EPARSE (not HTTP/1.x
                        as read), EDDY_ECANCELED (a callback returned nonzero), EDDY_ENOMEM */
    int stage;       /* for a failure: EDDY_HTTP1_* */
    long status;     /* the answer's status code, 0 before its status line */
    const char *msg; /* for a failure: what happened, for a person; borrowed for the call */
} eddy_http1_result;

typedef struct eddy_http1_cbs {
    /* A line of the answer's head without its CRLF: first the status line
     * ("HTTP/1.1 200 OK"), then each header; again for each interim (1xx)
     * answer. Nonzero stops the request (EDDY_ECANCELED). May be NULL. */
    int (*header)(void *ud, const char *line, size_t n);
    /* N bytes of the body (chunked coding removed), STATUS the answer's.
     * Nonzero stops the request (EDDY_ECANCELED). May be NULL. */
    int (*data)(void *ud, long status, const char *p, size_t n);
    /* The end: exactly once, unless the request was freed before. */
    void (*done)(void *ud, const eddy_http1_result *res);
} eddy_http1_cbs;

typedef struct eddy_http1_spec {
    const char *method; /* "POST", "GET" */
    const char *url;    /* http://host[:port]/path?query (eddy_http1_takes) */
    /* Header lines "Name: value\r\n", each ending in CRLF (Host and
     * Content-Length are added: lines of their own for them, or for
     * Transfer-Encoding, are refused); borrowed for the call. NULL: none. */
    const char *headers;
    size_t headers_len;
    /* The body, borrowed until the done callback or eddy_http1_free; sent
     * with a Content-Length (none for a GET, HEAD, DELETE, OPTIONS or
     * TRACE without a body). */
    const char *body;
    size_t body_len;
    int64_t timeout_ms;         /* the whole request; <= 0: none */
    int64_t connect_timeout_ms; /* resolving and connecting; <= 0: none beyond timeout_ms */
} eddy_http1_spec;

/* A client on LOOP (its thread only). Returns 0 or EDDY_ENOMEM. */
int eddy_http1_new(uv_loop_t *loop, eddy_http1 **out, eddy_err *err);
/* Close every connection and free the client once its handles have closed
 * (the loop must run on). Requests not yet freed are freed without a
 * callback. NULL-safe. */
void eddy_http1_close(eddy_http1 *c);

/* How long C keeps an idle connection (default 60 s); MS > 0. For a server
 * known to end them sooner, and for tests. */
void eddy_http1_set_idle_ms(eddy_http1 *c, int64_t ms);

/* 1 when this client would take URL: http:// (any case), a host, no user
 * information, no proxy variable in the environment that would apply
 * (http_proxy, all_proxy and their upper-case forms, unless no_proxy names
 * the host or is "*"), and EDDY_HTTP1 not "0". Anything else: 0 (use curl). */
int eddy_http1_takes(const char *url);

/* Start a request. On 0 *OUT is the caller's until eddy_http1_free and the
 * done callback will run (on a later turn of the loop, never inside this
 * call). On failure (EDDY_EINVAL: a URL, method or header this client does
 * not take, a body over 4 GB; EDDY_ENOMEM) no callback runs and *OUT is
 * NULL. CBS is copied; UD is passed to each callback. */
int eddy_http1_start(eddy_http1 *c, const eddy_http1_spec *spec, const eddy_http1_cbs *cbs,
                     void *ud, eddy_http1_req **out, eddy_err *err);
/* The status code of R's answer so far (0 before its status line). */
long eddy_http1_status(const eddy_http1_req *r);
/* End R (if it has not ended) and free it: no callback runs after this. A
 * connection in the middle of R is closed. NULL-safe; allowed inside R's
 * callbacks. */
void eddy_http1_free(eddy_http1_req *r);

#endif
