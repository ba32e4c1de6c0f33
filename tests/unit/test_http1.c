/* tests/unit/test_http1.c - eddy's own HTTP/1.1 client (net/http1.c) against
 * a scripted server on loopback: a thread with blocking sockets that answers
 * each request the way the test says (lengths, chunks one byte at a time,
 * interim answers, closes at bad moments, malformed heads, silence), counts
 * the connections it accepted and keeps what it was sent. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "eddy/buf.h"
#include "eddy/http1.h"

/* -- the scripted server ----------------------------------------------------------- */

/* How the server answers request number N (0-based, over all connections)
 * on connection request number ON_CONN; returns 1 to keep the connection. */
typedef int (*answer_fn)(int fd, int n, int on_conn);

typedef struct server {
    int lfd, port;
    pthread_t th;
    int stop;           /* atomics: the server thread reads what the test writes */
    int threaded, live; /* a thread per connection; how many run */
    answer_fn answer;
    int accepted, requests, closed; /* connections accepted, requests, connections ended */
    char last[8192];                /* the last request's head and body */
    pthread_mutex_t mu;
} server;

static server S;

static void put(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w, n -= (size_t)w;
    }
}

/* Send S a byte at a time (each its own segment). */
static void trickle(int fd, const char *s)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    for (; *s; s++) {
        if (send(fd, s, 1, MSG_NOSIGNAL) != 1)
            return;
        usleep(200);
    }
}

/* Read one request (head and Content-Length body); 0 at the end of FD. */
static int read_request(int fd)
{
    char buf[8192];
    size_t n = 0;
    char *end = NULL;
    long len = 0;
    while (!end) {
        if (n + 1 >= sizeof(buf))
            return 0;
        ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (r <= 0)
            return 0;
        n += (size_t)r;
        buf[n] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (cl && cl < end)
        len = atol(cl + 17);
    size_t want = (size_t)(end + 4 - buf) + (size_t)len;
    while (n < want && n + 1 < sizeof(buf)) {
        ssize_t r = recv(fd, buf + n, sizeof(buf) - 1 - n, 0);
        if (r <= 0)
            return 0;
        n += (size_t)r;
    }
    buf[n] = '\0';
    pthread_mutex_lock(&S.mu);
    memcpy(S.last, buf, n + 1);
    pthread_mutex_unlock(&S.mu);
    return 1;
}

static void serve_conn(int fd)
{
    for (int on_conn = 0; !__atomic_load_n(&S.stop, __ATOMIC_SEQ_CST); on_conn++) {
        struct pollfd q = {fd, POLLIN, 0};
        while (!__atomic_load_n(&S.stop, __ATOMIC_SEQ_CST) && poll(&q, 1, 50) == 0)
            ;
        if (__atomic_load_n(&S.stop, __ATOMIC_SEQ_CST) || !read_request(fd))
            break;
        int n = __atomic_fetch_add(&S.requests, 1, __ATOMIC_SEQ_CST);
        if (!S.answer(fd, n, on_conn))
            break;
    }
    close(fd);
    __atomic_add_fetch(&S.closed, 1, __ATOMIC_SEQ_CST);
}

static void *serve_thread(void *arg)
{
    serve_conn((int)(intptr_t)arg);
    __atomic_sub_fetch(&S.live, 1, __ATOMIC_SEQ_CST);
    return NULL;
}

static void *serve(void *arg)
{
    (void)arg;
    while (!__atomic_load_n(&S.stop, __ATOMIC_SEQ_CST)) {
        struct pollfd p = {S.lfd, POLLIN, 0};
        if (poll(&p, 1, 50) <= 0)
            continue;
        int fd = accept(S.lfd, NULL, NULL);
        if (fd < 0)
            continue;
        __atomic_add_fetch(&S.accepted, 1, __ATOMIC_SEQ_CST);
        if (S.threaded) {
            pthread_t th;
            __atomic_add_fetch(&S.live, 1, __ATOMIC_SEQ_CST);
            if (!pthread_create(&th, NULL, serve_thread, (void *)(intptr_t)fd)) {
                pthread_detach(th);
                continue;
            }
            __atomic_sub_fetch(&S.live, 1, __ATOMIC_SEQ_CST);
        }
        serve_conn(fd);
    }
    return NULL;
}

static void server_start(answer_fn answer)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int one = 1;
    memset(&S, 0, sizeof(S));
    pthread_mutex_init(&S.mu, NULL);
    S.answer = answer;
    S.lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(S.lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    assert_int_equal(bind(S.lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(S.lfd, 512), 0);
    getsockname(S.lfd, (struct sockaddr *)&a, &al);
    S.port = ntohs(a.sin_port);
    assert_int_equal(pthread_create(&S.th, NULL, serve, NULL), 0);
}

static void server_stop(void)
{
    __atomic_store_n(&S.stop, 1, __ATOMIC_SEQ_CST);
    pthread_join(S.th, NULL);
    while (__atomic_load_n(&S.live, __ATOMIC_SEQ_CST) > 0)
        usleep(1000);
    close(S.lfd);
    pthread_mutex_destroy(&S.mu);
}

/* -- the client side ------------------------------------------------------------------- */

typedef struct got {
    int done, code, stage;
    long status;
    char msg[256];
    eddy_buf body;
    int lines, stop_after; /* data callbacks; stop (nonzero) at this many (0: never) */
    int free_in_data;
    eddy_http1_req *req;
} got;

static int on_header(void *ud, const char *line, size_t n)
{
    got *g = ud;
    (void)line, (void)n;
    g->lines++;
    return 0;
}

static int on_data(void *ud, long status, const char *p, size_t n)
{
    got *g = ud;
    (void)status;
    eddy_buf_append(&g->body, p, n);
    if (g->free_in_data) {
        eddy_http1_free(g->req);
        g->req = NULL;
        g->done = -1; /* no done callback may follow */
        return 0;
    }
    return g->stop_after && (int)g->body.len >= g->stop_after;
}

static void on_done(void *ud, const eddy_http1_result *res)
{
    got *g = ud;
    assert_int_equal(g->done, 0); /* exactly once */
    g->done = 1;
    g->code = res->code;
    g->stage = res->stage;
    g->status = res->status;
    snprintf(g->msg, sizeof(g->msg), "%s", res->msg ? res->msg : "");
    eddy_http1_free(g->req);
    g->req = NULL;
}

static const eddy_http1_cbs CBS = {on_header, on_data, on_done};

static int64_t g_connect_ms; /* the connect timeout start() asks for (0: none) */

/* Start SPEC into *G (cleared first); the start never calls back. */
static void start_spec(eddy_http1 *c, got *g, const eddy_http1_spec *spec)
{
    eddy_err e;
    memset(g, 0, sizeof(*g));
    eddy_buf_init(&g->body);
    if (eddy_http1_start(c, spec, &CBS, g, &g->req, &e))
        fail_msg("start: %s", e.msg);
    assert_non_null(g->req);
    assert_int_equal(g->done, 0); /* never inside the start */
}

static void start(eddy_http1 *c, got *g, const char *path, const char *body, int64_t timeout_ms)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", S.port, path);
    eddy_http1_spec spec = {.method = body ? "POST" : "GET",
                            .url = url,
                            .headers = "X-Test: yes\r\n",
                            .headers_len = 13,
                            .body = body,
                            .body_len = body ? strlen(body) : 0,
                            .timeout_ms = timeout_ms,
                            .connect_timeout_ms = g_connect_ms};
    start_spec(c, g, &spec);
}

static void run_until(uv_loop_t *loop, got *g, int n)
{
    for (int spins = 0; spins < 100000; spins++) {
        int all = 1;
        for (int i = 0; i < n; i++)
            all &= g[i].done != 0;
        if (all)
            return;
        uv_run(loop, UV_RUN_ONCE);
    }
    fail_msg("requests did not end");
}

/* One request, all the way: the whole result in *G. */
static void one(uv_loop_t *loop, eddy_http1 *c, got *g, const char *path, const char *body)
{
    start(c, g, path, body, 5000);
    run_until(loop, g, 1);
}

static void close_client(uv_loop_t *loop, eddy_http1 *c)
{
    eddy_http1_close(c);
    uv_run(loop, UV_RUN_DEFAULT); /* every handle closes */
}

/* -- answers ------------------------------------------------------------------------- */

/* An answer that writes TEXT, then keeps the connection (KEEP 1) or closes it. */
#define CANNED(name, keep, text)                                                                   \
    static int name(int fd, int n, int on_conn)                                                    \
    {                                                                                              \
        (void)n, (void)on_conn;                                                                    \
        put(fd, text);                                                                             \
        return keep;                                                                               \
    }

CANNED(a_length, 1, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello")

static int a_chunked_trickle(int fd, int n, int on_conn)
{
    (void)n, (void)on_conn;
    trickle(fd, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                "5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n");
    return 1;
}

CANNED(a_until_close, 0, "HTTP/1.0 200 OK\r\n\r\nall of it until the end")

CANNED(a_interim, 1,
       "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n"
       "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")

/* Answers, then closes without saying so: the client's next request finds
 * it closed (or sends on it and gets nothing). */
CANNED(a_close_silently, 0, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

/* The first request on each connection is answered; a second one on the
 * same connection is read and dropped (the race a reused connection loses). */
static int a_drop_second(int fd, int n, int on_conn)
{
    (void)n;
    if (on_conn > 0)
        return 0;
    put(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    return 1;
}

/* Like a_drop_second, but the second request is dropped only after a while
 * (a server that worked on it, then went away). */
static int a_drop_second_late(int fd, int n, int on_conn)
{
    (void)n;
    if (on_conn > 0) {
        usleep(400 * 1000);
        return 0;
    }
    put(fd, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    return 1;
}

/* The second request on a connection gets only an interim answer, then
 * the connection ends: the server had it, so it is not sent again. */
static int a_interim_then_close(int fd, int n, int on_conn)
{
    (void)n;
    put(fd, on_conn ? "HTTP/1.1 100 Continue\r\n\r\n"
                    : "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    return !on_conn;
}

static int a_nothing_close(int fd, int n, int on_conn)
{
    (void)fd, (void)n, (void)on_conn;
    return 0;
}

static int a_silent(int fd, int n, int on_conn)
{
    (void)fd, (void)n, (void)on_conn;
    while (!__atomic_load_n(&S.stop, __ATOMIC_SEQ_CST))
        usleep(10000);
    return 0;
}

CANNED(a_cut_body, 0, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

CANNED(a_extra_bytes, 1, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE")

CANNED(a_no_content, 1, "HTTP/1.1 204 No Content\r\n\r\n")

static const char *g_bad; /* the malformed answer a_bad sends */

static int a_bad(int fd, int n, int on_conn)
{
    (void)n, (void)on_conn;
    put(fd, g_bad);
    return 0;
}

static int a_huge_head(int fd, int n, int on_conn)
{
    char line[1100];
    (void)n, (void)on_conn;
    put(fd, "HTTP/1.1 200 OK\r\n");
    memset(line, 'a', sizeof(line));
    memcpy(line, "X-Pad: ", 7);
    memcpy(line + sizeof(line) - 3, "\r\n", 3);
    for (int i = 0; i < 100 && !__atomic_load_n(&S.stop, __ATOMIC_SEQ_CST);
         i++) /* 110 KB of headers */
        put(fd, line);
    put(fd, "Content-Length: 0\r\n\r\n");
    return 0;
}

CANNED(a_close_each, 0, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye")

/* "close" in any Connection header ends the connection, whatever else is
 * said (RFC 9112 9.6); the server does not close it itself. */
CANNED(a_close_then_keep, 1,
       "HTTP/1.1 200 OK\r\nConnection: close\r\nConnection: keep-alive\r\n"
       "Content-Length: 2\r\n\r\nok")

/* An HTTP/1.0 server that keeps the connection when asked to. */
CANNED(a_http10_keep_alive, 1,
       "HTTP/1.0 200 OK\r\nconnection: Keep-Alive\r\ncontent-length: 2\r\n\r\nok")

/* Answers without reading the body (too large), then closes at once (so the
 * unread body makes it a reset) or after a while (the client's write waits). */
static int g_early_wait_ms;

static int a_early_answer(int fd, int n, int on_conn)
{
    (void)n, (void)on_conn;
    put(fd, "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\n"
            "big!");
    usleep((useconds_t)g_early_wait_ms * 1000);
    return 0;
}

/* Reads the head, then resets the connection without an answer while the
 * client is still writing the body. */
static int a_reset_unanswered(int fd, int n, int on_conn)
{
    struct linger l = {1, 0};
    (void)n, (void)on_conn;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    return 0;
}

/* What a HEAD is answered with: the GET's head, no body. */
static int a_head(int fd, int n, int on_conn)
{
    (void)on_conn;
    put(fd, n % 2 ? "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                  : "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    return 1;
}

/* Bare LF line ends, header names in any case; then a 1 MB body by
 * length, then by chunks of 300 KB (more than the client's 64 KB buffer). */
static int a_lf_and_large(int fd, int n, int on_conn)
{
    static char big[1 << 20];
    char size[32];
    (void)on_conn;
    memset(big, 'y', sizeof(big) - 1);
    if (n % 3 == 0) {
        put(fd, "HTTP/1.1 200 OK\nCONTENT-LENGTH: 2\ncontent-type: text/plain\n\nok");
    } else if (n % 3 == 1) {
        snprintf(size, sizeof(size), "%zu", sizeof(big) - 1);
        put(fd, "HTTP/1.1 200 OK\r\nContent-Length: ");
        put(fd, size);
        put(fd, "\r\n\r\n");
        put(fd, big);
    } else {
        put(fd, "HTTP/1.1 200 OK\r\ntransfer-encoding: CHUNKED\r\n\r\n");
        for (int i = 0; i < 3; i++) {
            put(fd, "493e0\r\n"); /* 300,000 */
            big[300000] = '\0';
            put(fd, big);
            big[300000] = 'y';
            put(fd, "\r\n");
        }
        put(fd, "0\r\n\r\n");
    }
    return 1;
}

/* A 204 that says it has a body (no server may, RFC 9110 8.6) and sends
 * it a moment later, as its own segment. */
static int a_204_with_body(int fd, int n, int on_conn)
{
    (void)n, (void)on_conn;
    put(fd, "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
    usleep(30 * 1000);
    put(fd, "hello");
    return 1;
}

/* -- tests ----------------------------------------------------------------------------- */

static void setup_loop(uv_loop_t *loop, eddy_http1 **c)
{
    assert_int_equal(uv_loop_init(loop), 0);
    assert_int_equal(eddy_http1_new(loop, c, NULL), 0);
}

static void end_loop(uv_loop_t *loop, eddy_http1 *c)
{
    close_client(loop, c);
    server_stop();
    assert_int_equal(uv_loop_close(loop), 0); /* nothing left open */
}

static void test_request_and_reuse(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    (void)state;
    server_start(a_length);
    setup_loop(&loop, &c);
    one(&loop, c, &g, "/v1/chat?x=1#frag", "{\"a\":1}");
    assert_int_equal(g.code, 0);
    assert_int_equal(g.status, 200);
    assert_int_equal(g.body.len, 5);
    assert_memory_equal(g.body.data, "hello", 5);
    assert_int_equal(g.lines, 3); /* the status line and two headers */
    pthread_mutex_lock(&S.mu);
    assert_non_null(strstr(S.last, "POST /v1/chat?x=1 HTTP/1.1\r\n"));
    char host[64];
    snprintf(host, sizeof(host), "\r\nHost: 127.0.0.1:%d\r\n", S.port);
    assert_non_null(strstr(S.last, host));
    assert_non_null(strstr(S.last, "\r\nX-Test: yes\r\n"));
    assert_non_null(strstr(S.last, "\r\nContent-Length: 7\r\n\r\n{\"a\":1}"));
    assert_null(strstr(S.last, "#frag"));
    pthread_mutex_unlock(&S.mu);
    eddy_buf_free(&g.body);
    /* a query without a path: the request target still starts with "/" */
    one(&loop, c, &g, "?q=1", NULL);
    assert_int_equal(g.code, 0);
    pthread_mutex_lock(&S.mu);
    if (strncmp(S.last, "GET /?q=1 HTTP/1.1\r\n", 20))
        fail_msg("request line: %.30s", S.last);
    pthread_mutex_unlock(&S.mu);
    eddy_buf_free(&g.body);
    for (int i = 0; i < 5; i++) { /* kept alive: one connection for all */
        one(&loop, c, &g, "/", NULL);
        assert_int_equal(g.code, 0);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 1);
    end_loop(&loop, c);
}

static void test_chunked_one_byte_at_a_time(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    (void)state;
    server_start(a_chunked_trickle);
    setup_loop(&loop, &c);
    for (int i = 0; i < 2; i++) {
        one(&loop, c, &g, "/", "x");
        assert_int_equal(g.code, 0);
        assert_int_equal(g.body.len, 16);
        assert_memory_equal(g.body.data, "hello 0123456789", 16);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST),
                     1); /* reused after the trailer */
    end_loop(&loop, c);
}

static void test_until_close_interim_and_bodyless(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    (void)state;
    server_start(a_until_close);
    setup_loop(&loop, &c);
    one(&loop, c, &g, "/", NULL);
    assert_int_equal(g.code, 0);
    assert_int_equal(g.status, 200);
    assert_int_equal(g.body.len, 23);
    assert_memory_equal(g.body.data, "all of it until the end", 23);
    eddy_buf_free(&g.body);
    end_loop(&loop, c);

    server_start(a_interim);
    setup_loop(&loop, &c);
    one(&loop, c, &g, "/", "b");
    assert_int_equal(g.code, 0);
    assert_int_equal(g.status, 201);
    assert_int_equal(g.body.len, 2);
    eddy_buf_free(&g.body);
    end_loop(&loop, c);

    server_start(a_no_content);
    setup_loop(&loop, &c);
    for (int i = 0; i < 3; i++) {
        one(&loop, c, &g, "/", "b");
        assert_int_equal(g.code, 0);
        assert_int_equal(g.status, 204);
        assert_int_equal(g.body.len, 0);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 1);
    end_loop(&loop, c);
}

static void test_server_closes_kept_connection(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    (void)state;
    /* closed after each answer without a word: every request still succeeds */
    server_start(a_close_silently);
    setup_loop(&loop, &c);
    for (int i = 0; i < 5; i++) {
        one(&loop, c, &g, "/", "x");
        assert_int_equal(g.code, 0);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 5);
    end_loop(&loop, c);

    /* the request sent on the reused connection is dropped: sent once more */
    server_start(a_drop_second);
    setup_loop(&loop, &c);
    for (int i = 0; i < 4; i++) {
        one(&loop, c, &g, "/", "x");
        assert_int_equal(g.code, 0);
        assert_int_equal(g.status, 200);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 4);
    assert_int_equal(__atomic_load_n(&S.requests, __ATOMIC_SEQ_CST),
                     7); /* 4 answered, 3 dropped and sent again */
    end_loop(&loop, c);

    /* dropped after longer than the connect timeout: the new connection
     * still has the whole connect timeout */
    server_start(a_drop_second_late);
    setup_loop(&loop, &c);
    g_connect_ms = 200;
    for (int i = 0; i < 2; i++) {
        one(&loop, c, &g, "/", "x");
        if (g.code)
            fail_msg("request %d: %s", i, g.msg);
        eddy_buf_free(&g.body);
    }
    g_connect_ms = 0;
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 2);
    end_loop(&loop, c);

    server_start(a_interim_then_close);
    setup_loop(&loop, &c);
    one(&loop, c, &g, "/", "x");
    assert_int_equal(g.code, 0);
    eddy_buf_free(&g.body);
    one(&loop, c, &g, "/", "x");
    assert_int_equal(g.code, EDDY_ENET);
    assert_int_equal(__atomic_load_n(&S.requests, __ATOMIC_SEQ_CST), 2);
    eddy_buf_free(&g.body);
    end_loop(&loop, c);

    /* a fresh connection closed without an answer: a failure, not a loop */
    server_start(a_nothing_close);
    setup_loop(&loop, &c);
    one(&loop, c, &g, "/", "x");
    assert_int_equal(g.code, EDDY_ENET);
    assert_int_equal(g.stage, EDDY_HTTP1_RECV);
    assert_non_null(strstr(g.msg, "without an answer"));
    assert_int_equal(__atomic_load_n(&S.requests, __ATOMIC_SEQ_CST), 1);
    eddy_buf_free(&g.body);
    end_loop(&loop, c);
}

static void test_connection_header(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    (void)state;
    server_start(a_close_then_keep);
    setup_loop(&loop, &c);
    for (int i = 0; i < 2; i++) {
        one(&loop, c, &g, "/", "x");
        assert_int_equal(g.code, 0);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 2); /* not reused */
    end_loop(&loop, c);

    server_start(a_http10_keep_alive);
    setup_loop(&loop, &c);
    for (int i = 0; i < 3; i++) {
        one(&loop, c, &g, "/", "x");
        assert_int_equal(g.code, 0);
        assert_int_equal(g.body.len, 2);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 1); /* kept */
    end_loop(&loop, c);
}

static void test_answer_before_the_body_is_sent(void **state)
{
    enum { BIG = 8 << 20 };
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    char *big = malloc(BIG + 1);
    (void)state;
    memset(big, 'x', BIG);
    big[BIG] = '\0';
    for (int wait = 0; wait < 2; wait++) {
        g_early_wait_ms = wait ? 300 : 0;
        server_start(a_early_answer);
        setup_loop(&loop, &c);
        for (int i = 0; i < 3; i++) {
            one(&loop, c, &g, "/", big);
            if (g.code)
                fail_msg("wait %d, request %d: %s", wait, i, g.msg);
            assert_int_equal(g.status, 413);
            assert_int_equal(g.body.len, 4);
            eddy_buf_free(&g.body);
        }
        end_loop(&loop, c);
    }
    free(big);
}

/* A write that fails with no answer to come (the server reset the
 * connection mid-body): the read side ends the request with a network
 * failure, in its time, once, and a new request opens a new connection. */
static void test_reset_while_the_body_is_sent(void **state)
{
    enum { BIG = 8 << 20 };
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    char *big = malloc(BIG + 1);
    (void)state;
    memset(big, 'x', BIG);
    big[BIG] = '\0';
    server_start(a_reset_unanswered);
    setup_loop(&loop, &c);
    for (int i = 0; i < 3; i++) {
        uint64_t t0 = uv_hrtime();
        one(&loop, c, &g, "/", big);
        assert_true(g.done);
        if (g.code != EDDY_ENET)
            fail_msg("request %d: code %d, %s", i, g.code, g.msg);
        assert_true(uv_hrtime() - t0 < 4000000000ull); /* not the 5 s deadline */
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 3);
    end_loop(&loop, c);
    free(big);
}

static void test_head(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    char url[64];
    (void)state;
    server_start(a_head);
    setup_loop(&loop, &c);
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", S.port);
    for (int i = 0; i < 4; i++) {
        eddy_http1_spec spec = {.method = "HEAD", .url = url, .timeout_ms = 5000};
        start_spec(c, &g, &spec);
        run_until(&loop, &g, 1);
        if (g.code)
            fail_msg("%s", g.msg);
        assert_int_equal(g.body.len, 0);
        pthread_mutex_lock(&S.mu);
        /* no content, none expected: no Content-Length (RFC 9110 8.6) */
        assert_null(strcasestr(S.last, "content-length"));
        pthread_mutex_unlock(&S.mu);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 1);
    end_loop(&loop, c);
}

static void test_lf_and_large_answers(void **state)
{
    static const size_t want[] = {2, (1 << 20) - 1, 900000};
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    (void)state;
    server_start(a_lf_and_large);
    setup_loop(&loop, &c);
    for (int i = 0; i < 6; i++) {
        one(&loop, c, &g, "/", "x");
        if (g.code)
            fail_msg("answer %d: %s", i, g.msg);
        assert_int_equal(g.body.len, want[i % 3]);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 1);
    end_loop(&loop, c);
}

static void on_wait(uv_timer_t *t)
{
    (void)t;
}

/* An idle connection is closed when its time is up, even when no other
 * request comes to take its place (a server such as Go's keeps it open for
 * good otherwise). */
static void test_idle_connection_closed_in_time(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    uv_timer_t t;
    got g;
    (void)state;
    server_start(a_length);
    setup_loop(&loop, &c);
    eddy_http1_set_idle_ms(c, 100);
    one(&loop, c, &g, "/", "x");
    assert_int_equal(g.code, 0);
    eddy_buf_free(&g.body);
    uv_timer_init(&loop, &t);
    uv_timer_start(&t, on_wait, 400, 0);
    while (uv_is_active((uv_handle_t *)&t))
        uv_run(&loop, UV_RUN_ONCE);
    for (int i = 0; i < 100 && !__atomic_load_n(&S.closed, __ATOMIC_SEQ_CST); i++)
        usleep(10000); /* the server sees the end */
    assert_int_equal(S.closed, 1);
    one(&loop, c, &g, "/", "x"); /* on a new connection */
    assert_int_equal(g.code, 0);
    eddy_buf_free(&g.body);
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 2);
    uv_close((uv_handle_t *)&t, NULL);
    end_loop(&loop, c);
}

static void test_cut_and_extra_bytes(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    (void)state;
    server_start(a_cut_body);
    setup_loop(&loop, &c);
    one(&loop, c, &g, "/", "x");
    assert_int_equal(g.code, EDDY_ENET);
    assert_non_null(strstr(g.msg, "before the answer ended"));
    assert_int_equal(g.status, 200);
    eddy_buf_free(&g.body);
    end_loop(&loop, c);

    /* the body comes after the answer was taken: the connection is not
     * reused, or the next request would read it as its answer */
    server_start(a_204_with_body);
    setup_loop(&loop, &c);
    for (int i = 0; i < 2; i++) {
        one(&loop, c, &g, "/", "x");
        if (g.code)
            fail_msg("request %d: %s", i, g.msg);
        assert_int_equal(g.status, 204);
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST), 2);
    end_loop(&loop, c);

    server_start(a_extra_bytes);
    setup_loop(&loop, &c);
    for (int i = 0; i < 3; i++) {
        one(&loop, c, &g, "/", "x");
        assert_int_equal(g.code, 0);
        assert_int_equal(g.body.len, 2); /* not the garbage */
        eddy_buf_free(&g.body);
    }
    assert_int_equal(__atomic_load_n(&S.accepted, __ATOMIC_SEQ_CST),
                     3); /* a connection with bytes nobody asked for is not reused */
    end_loop(&loop, c);
}

static void test_malformed_answers(void **state)
{
    static const char *const bad[] = {
        "HTTP/2 200 OK\r\n\r\n",
        "ICY 200 OK\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\n folded: header\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\n\r\n",
    };
    (void)state;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uv_loop_t loop;
        eddy_http1 *c;
        got g;
        g_bad = bad[i];
        server_start(a_bad);
        setup_loop(&loop, &c);
        one(&loop, c, &g, "/", "x");
        if (g.code != EDDY_EPARSE)
            fail_msg("answer %zu: code %d (%s), not EDDY_EPARSE", i, g.code, g.msg);
        assert_int_equal(g.stage, EDDY_HTTP1_RECV);
        assert_true(g.msg[0]);
        eddy_buf_free(&g.body);
        end_loop(&loop, c);
    }
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    server_start(a_huge_head);
    setup_loop(&loop, &c);
    one(&loop, c, &g, "/", "x");
    assert_int_equal(g.code, EDDY_EPARSE);
    assert_non_null(strstr(g.msg, "64 KB"));
    eddy_buf_free(&g.body);
    end_loop(&loop, c);
}

static void test_refused_timeout_and_stop(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    (void)state;
    server_start(a_silent);
    setup_loop(&loop, &c);
    uint64_t t0 = uv_now(&loop);
    start(c, &g, "/", "x", 300);
    run_until(&loop, &g, 1);
    assert_int_equal(g.code, EDDY_ETIMEDOUT);
    assert_int_equal(g.stage, EDDY_HTTP1_RECV);
    assert_true(uv_now(&loop) - t0 >= 290);
    eddy_buf_free(&g.body);
    int port = S.port;
    end_loop(&loop, c);

    /* the server is gone: refused */
    setup_loop(&loop, &c);
    S.port = port;
    one(&loop, c, &g, "/", "x");
    assert_int_equal(g.code, EDDY_ENET);
    assert_int_equal(g.stage, EDDY_HTTP1_CONNECT);
    assert_non_null(strstr(g.msg, "cannot connect to 127.0.0.1:"));
    eddy_buf_free(&g.body);
    close_client(&loop, c);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* an address no connection can be made to at all: the failure is found
     * inside the start and reported on a later turn */
    setup_loop(&loop, &c);
    {
        eddy_http1_spec spec = {.method = "GET", .url = "http://255.255.255.255:80/"};
        start_spec(c, &g, &spec);
        assert_int_equal(g.done, 0);
        run_until(&loop, &g, 1);
        assert_int_equal(g.code, EDDY_ENET);
        assert_int_equal(g.stage, EDDY_HTTP1_CONNECT);
        if (!strstr(g.msg, "cannot connect to 255.255.255.255:80: "))
            fail_msg("%s", g.msg);
        eddy_buf_free(&g.body);
    }
    close_client(&loop, c);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* a data callback that says stop; one that frees its request */
    server_start(a_length);
    setup_loop(&loop, &c);
    start(c, &g, "/", "x", 5000);
    g.stop_after = 1;
    run_until(&loop, &g, 1);
    assert_int_equal(g.code, EDDY_ECANCELED);
    eddy_buf_free(&g.body);
    start(c, &g, "/", "x", 5000);
    g.free_in_data = 1;
    run_until(&loop, &g, 1);
    assert_int_equal(g.done, -1);
    eddy_buf_free(&g.body);
    /* freed before its connection is made, and while waiting for an answer */
    start(c, &g, "/", "x", 5000);
    eddy_http1_free(g.req);
    uv_run(&loop, UV_RUN_NOWAIT);
    assert_int_equal(g.done, 0);
    one(&loop, c, &g, "/", "x"); /* the client goes on */
    assert_int_equal(g.code, 0);
    eddy_buf_free(&g.body);
    end_loop(&loop, c);

    /* closing the client with requests in flight: no callback */
    server_start(a_silent);
    setup_loop(&loop, &c);
    got many[8];
    for (int i = 0; i < 8; i++)
        start(c, &many[i], "/", "x", 5000);
    for (int i = 0; i < 20; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    close_client(&loop, c);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(many[i].done, 0);
        eddy_buf_free(&many[i].body);
    }
    server_stop();
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_many_at_once(void **state)
{
    enum { N = 300 };
    uv_loop_t loop;
    eddy_http1 *c;
    static got g[N];
    (void)state;
    server_start(a_close_each);
    setup_loop(&loop, &c);
    for (int i = 0; i < N; i++)
        start(c, &g[i], "/", "x", 20000);
    run_until(&loop, g, N);
    for (int i = 0; i < N; i++) {
        if (g[i].code)
            fail_msg("request %d: %s", i, g[i].msg);
        assert_int_equal(g[i].body.len, 3);
        eddy_buf_free(&g[i].body);
    }
    assert_int_equal(__atomic_load_n(&S.requests, __ATOMIC_SEQ_CST), N);
    end_loop(&loop, c);
}

static void test_refused_input(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    eddy_http1_req *r = (eddy_http1_req *)1;
    eddy_err e;
    got g;
    (void)state;
    setup_loop(&loop, &c);
    const char *urls[] = {"https://127.0.0.1/",   "http://user:pw@127.0.0.1/",  "http:///x",
                          "http://127.0.0.1:0/",  "http://127.0.0.1:99999/",    "http://a b/",
                          "http://127.0.0.1/a b", "http://127.0.0.1/a\r\nX: y", "ftp://x/",
                          "http://[::1/",         "http://[::1\r\nX: y]/",      "http://[a b]:80/",
                          "http://[::1]x/"};
    for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
        eddy_http1_spec spec = {.method = "GET", .url = urls[i]};
        assert_int_equal(eddy_http1_takes(urls[i]), 0);
        assert_int_equal(eddy_http1_start(c, &spec, &CBS, &g, &r, &e), EDDY_EINVAL);
        assert_null(r);
    }
    const char *headers[] = {"X: a\nY: b\r\n", "X: a\r\n\r\nGET / HTTP/1.1\r\n", "no colon\r\n",
                             "X: a", ": empty name\r\n", "Bad Name: v\r\n",
                             /* the framing and the host are the client's own */
                             "X: a\r\nContent-Length: 0\r\n", "transfer-encoding: chunked\r\n",
                             "HOST: elsewhere\r\n"};
    for (size_t i = 0; i < sizeof(headers) / sizeof(headers[0]); i++) {
        eddy_http1_spec spec = {.method = "GET",
                                .url = "http://127.0.0.1:1/",
                                .headers = headers[i],
                                .headers_len = strlen(headers[i])};
        assert_int_equal(eddy_http1_start(c, &spec, &CBS, &g, &r, &e), EDDY_EINVAL);
    }
    /* a body longer than one write can say (libuv's lengths are 32-bit): it
     * would go out cut, under a Content-Length of the whole */
    if (sizeof(size_t) > 4) {
        eddy_http1_spec spec = {.method = "POST",
                                .url = "http://127.0.0.1:1/",
                                .body = "x",
                                .body_len = (size_t)UINT32_MAX + 2};
        r = (eddy_http1_req *)1;
        assert_int_equal(eddy_http1_start(c, &spec, &CBS, &g, &r, &e), EDDY_EINVAL);
        assert_null(r);
    }
    /* the method goes into the request line as it is: nothing but a token */
    const char *methods[] = {"GET / HTTP/1.1\r\nX: y\r\n\r\nPOST", "", "GE T", "POST\n"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        eddy_http1_spec spec = {.method = methods[i], .url = "http://127.0.0.1:1/"};
        r = (eddy_http1_req *)1;
        assert_int_equal(eddy_http1_start(c, &spec, &CBS, &g, &r, &e), EDDY_EINVAL);
        assert_null(r);
    }
    close_client(&loop, c);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static void test_takes(void **state)
{
    (void)state;
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    unsetenv("EDDY_HTTP1");
    assert_int_equal(eddy_http1_takes("http://127.0.0.1:8080/v1"), 1);
    assert_int_equal(eddy_http1_takes("HTTP://localhost/v1"), 1);
    assert_int_equal(eddy_http1_takes("http://[::1]:8080/v1"), 1);
    assert_int_equal(eddy_http1_takes("https://api.openai.com/v1"), 0);
    setenv("http_proxy", "http://proxy:3128", 1);
    assert_int_equal(eddy_http1_takes("http://llm.corp.example/v1"), 0);
    setenv("no_proxy", "localhost,.corp.example", 1);
    assert_int_equal(eddy_http1_takes("http://llm.corp.example/v1"), 1);
    assert_int_equal(eddy_http1_takes("http://localhost:11434/"), 1);
    assert_int_equal(eddy_http1_takes("http://evilcorp.example/"), 0);
    setenv("no_proxy", "*", 1);
    assert_int_equal(eddy_http1_takes("http://anything/"), 1);
    unsetenv("no_proxy");
    unsetenv("http_proxy");
    setenv("EDDY_HTTP1", "0", 1);
    assert_int_equal(eddy_http1_takes("http://127.0.0.1/"), 0);
    unsetenv("EDDY_HTTP1");
}

static void test_localhost_by_name(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    got g;
    char url[64];
    (void)state;
    server_start(a_length);
    setup_loop(&loop, &c);
    snprintf(url, sizeof(url), "http://localhost:%d/", S.port);
    for (int i = 0; i < 2; i++) {
        eddy_http1_spec spec = {.method = "GET", .url = url, .timeout_ms = 5000};
        start_spec(c, &g, &spec);
        run_until(&loop, &g, 1);
        /* localhost may resolve to ::1 first, where nobody listens: the next address */
        if (g.code)
            fail_msg("%s", g.msg);
        assert_int_equal(g.status, 200);
        eddy_buf_free(&g.body);
    }
    end_loop(&loop, c);
}

static int g_turns; /* turns of the loop (a check handle counts them) */
static int g_restarts, g_turn_of[8];
static eddy_http1 *g_client;
static got g_chain;

static void count_turn(uv_check_t *h)
{
    (void)h;
    g_turns++;
}

/* The done callback of a request that starts the next one from inside. */
static void on_done_restart(void *ud, const eddy_http1_result *res)
{
    static const eddy_http1_cbs cbs = {NULL, NULL, on_done_restart};
    eddy_http1_spec spec = {.method = "GET", .url = "http://nonexistent.invalid:1/"};
    eddy_err e;
    (void)ud;
    assert_int_equal(res->code, EDDY_ENET);
    assert_int_equal(res->stage, EDDY_HTTP1_RESOLVE);
    eddy_http1_free(g_chain.req);
    g_chain.req = NULL;
    g_turn_of[g_restarts] = g_turns;
    if (++g_restarts == 4) {
        g_chain.done = 1;
        return;
    }
    assert_int_equal(eddy_http1_start(g_client, &spec, &cbs, NULL, &g_chain.req, &e), 0);
}

/* A request started inside the done callback of one whose name did not
 * resolve asks again: it does not take the old answer (and a callback that
 * starts one each time does not spin inside the lookup's callback). */
static void test_restart_after_failed_lookup(void **state)
{
    static const eddy_http1_cbs cbs = {NULL, NULL, on_done_restart};
    eddy_http1_spec spec = {.method = "GET", .url = "http://nonexistent.invalid:1/"};
    uv_loop_t loop;
    uv_check_t check;
    eddy_err e;
    (void)state;
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(eddy_http1_new(&loop, &g_client, NULL), 0);
    uv_check_init(&loop, &check);
    uv_check_start(&check, count_turn);
    memset(&g_chain, 0, sizeof(g_chain));
    g_restarts = g_turns = 0;
    assert_int_equal(eddy_http1_start(g_client, &spec, &cbs, NULL, &g_chain.req, &e), 0);
    run_until(&loop, &g_chain, 1);
    for (int i = 1; i < 4; i++)
        if (g_turn_of[i] == g_turn_of[i - 1])
            fail_msg("request %d ended on the turn of the loop of request %d", i, i - 1);
    uv_close((uv_handle_t *)&check, NULL);
    close_client(&loop, g_client);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* Callbacks that close the whole client (at the Nth call of the kind KIND:
 * 0 header, 1 data, 2 done) or start one more request from the done
 * callback: nothing may run after the close, nothing be left open. */
static struct {
    int kind, at, calls, after_close;
    eddy_http1 *c;
    int closed, more;
    got extra;
} g_cl;

static void cl_maybe_close(int kind)
{
    if (g_cl.closed) {
        g_cl.after_close++;
        return;
    }
    if (kind == g_cl.kind && ++g_cl.calls == g_cl.at) {
        g_cl.closed = 1;
        eddy_http1_close(g_cl.c);
    }
}

static int cl_header(void *ud, const char *line, size_t n)
{
    (void)ud, (void)line, (void)n;
    cl_maybe_close(0);
    return 0;
}

static int cl_data(void *ud, long status, const char *p, size_t n)
{
    (void)ud, (void)status, (void)p, (void)n;
    cl_maybe_close(1);
    return 0;
}

static void cl_done(void *ud, const eddy_http1_result *res)
{
    static const eddy_http1_cbs cbs = {cl_header, cl_data, cl_done};
    got *g = ud;
    char url[64];
    eddy_err e;
    (void)res;
    g->done = 1;
    eddy_http1_free(g->req);
    g->req = NULL;
    cl_maybe_close(2);
    if (g_cl.closed || g_cl.more <= 0)
        return;
    g_cl.more--;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", S.port);
    eddy_http1_spec spec = {.method = "POST", .url = url, .body = "x", .body_len = 1};
    memset(&g_cl.extra, 0, sizeof(g_cl.extra));
    int rc = eddy_http1_start(g_cl.c, &spec, &cbs, &g_cl.extra, &g_cl.extra.req, &e);
    assert_int_equal(rc, 0);
}

static void test_close_inside_callbacks(void **state)
{
    static const eddy_http1_cbs cbs = {cl_header, cl_data, cl_done};
    static const answer_fn answers[] = {a_length, a_chunked_trickle, a_interim, a_until_close};
    (void)state;
    for (size_t a = 0; a < sizeof(answers) / sizeof(answers[0]); a++) {
        for (int kind = 0; kind < 3; kind++) {
            for (int at = 1; at <= 4; at++) {
                uv_loop_t loop;
                got g[4];
                char url[64];
                eddy_err e;
                server_start(answers[a]);
                memset(&g_cl, 0, sizeof(g_cl));
                setup_loop(&loop, &g_cl.c);
                g_cl.kind = kind;
                g_cl.at = at;
                g_cl.more = 3;
                snprintf(url, sizeof(url), "http://127.0.0.1:%d/", S.port);
                for (int i = 0; i < 4; i++) {
                    eddy_http1_spec spec = {
                        .method = "POST", .url = url, .body = "x", .body_len = 1};
                    memset(&g[i], 0, sizeof(g[i]));
                    assert_int_equal(eddy_http1_start(g_cl.c, &spec, &cbs, &g[i], &g[i].req, &e),
                                     0);
                }
                for (int spins = 0; spins < 100000 && !g_cl.closed; spins++) {
                    int all = 1;
                    for (int i = 0; i < 4; i++)
                        all &= g[i].done;
                    if (all && !g_cl.extra.req)
                        break;
                    uv_run(&loop, UV_RUN_ONCE);
                }
                if (!g_cl.closed)
                    eddy_http1_close(g_cl.c);
                uv_run(&loop, UV_RUN_DEFAULT);
                assert_int_equal(g_cl.after_close, 0);
                server_stop();
                assert_int_equal(uv_loop_close(&loop), 0);
            }
        }
    }
}

/* -- many requests, each doing something else to its client ----------------- */

static int a_mixed(int fd, int n, int on_conn)
{
    static const answer_fn answers[] = {a_length,         a_chunked_trickle, a_interim,
                                        a_close_silently, a_until_close,     a_extra_bytes,
                                        a_cut_body,       a_no_content,      a_head};
    (void)on_conn;
    if (n % 11 == 10) { /* silence for a while, then the end */
        usleep(100 * 1000);
        return 0;
    }
    return answers[(unsigned)n * 7 % (sizeof(answers) / sizeof(answers[0]))](fd, n, on_conn);
}

enum { TN = 120 };

typedef struct tslot {
    eddy_http1_req *req;
    int action, at, calls, freed, done, started;
    int64_t timeout;
} tslot;

static struct {
    eddy_http1 *c;
    tslot s[TN * 3];
    int n, after_free;
} T;

static void t_start(int i);

static void t_free(tslot *t)
{
    eddy_http1_free(t->req);
    t->req = NULL;
    t->freed = 1;
}

static int t_header(void *ud, const char *line, size_t n)
{
    tslot *t = ud;
    (void)line, (void)n;
    T.after_free += t->freed || t->done;
    if (t->action == 1 && ++t->calls == t->at)
        t_free(t);
    return t->action == 2 && t->calls++ == t->at;
}

static int t_data(void *ud, long status, const char *p, size_t n)
{
    tslot *t = ud;
    (void)status, (void)p, (void)n;
    T.after_free += t->freed || t->done;
    if (t->action == 3) {
        t_free(t);
        if (T.n < TN * 3)
            t_start(T.n++);
        return 0;
    }
    return t->action == 4;
}

static void t_done(void *ud, const eddy_http1_result *res)
{
    tslot *t = ud;
    (void)res;
    T.after_free += t->freed || t->done;
    t->done = 1;
    t_free(t);
    if (t->action == 5 && T.n < TN * 3)
        t_start(T.n++);
}

static void t_start(int i)
{
    static const eddy_http1_cbs cbs = {t_header, t_data, t_done};
    static const char *const methods[] = {"POST", "GET", "HEAD"};
    tslot *t = &T.s[i];
    char url[64];
    eddy_err e;
    memset(t, 0, sizeof(*t));
    t->action = rand() % 7;
    t->at = 1 + rand() % 3;
    t->timeout = rand() % 4 ? 50 + rand() % 400 : 0;
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/%d", S.port, i);
    eddy_http1_spec spec = {.method = methods[rand() % 3],
                            .url = url,
                            .body = "x",
                            .body_len = rand() % 2,
                            .timeout_ms = t->timeout ? t->timeout : 2000,
                            .connect_timeout_ms = rand() % 2 ? 100 : 0};
    assert_int_equal(eddy_http1_start(T.c, &spec, &cbs, t, &t->req, &e), 0);
    t->started = 1;
}

static void test_torture(void **state)
{
    (void)state;
    for (unsigned seed = 1; seed <= 3; seed++) {
        uv_loop_t loop;
        srand(seed);
        server_start(a_mixed);
        S.threaded = 1;
        memset(&T, 0, sizeof(T));
        setup_loop(&loop, &T.c);
        for (T.n = 0; T.n < TN; T.n++)
            t_start(T.n);
        for (int turn = 0; turn < 4000; turn++) {
            int left = 0;
            uv_run(&loop, UV_RUN_NOWAIT);
            for (int i = 0; i < T.n; i++) {
                tslot *t = &T.s[i];
                if (t->started && !t->freed) {
                    left++;
                    if (t->action == 6 && rand() % 50 == 0) /* from outside, at any time */
                        t_free(t);
                }
            }
            if (!left)
                break;
            if (seed == 3 && turn == 200)
                break; /* the close below ends what is left */
            usleep(1000);
        }
        close_client(&loop, T.c); /* frees what is left, without a callback */
        assert_int_equal(T.after_free, 0);
        server_stop();
        assert_int_equal(uv_loop_close(&loop), 0);
    }
}

static void slow_work(uv_work_t *w)
{
    (void)w;
    usleep(1500 * 1000);
}

static void slow_work_done(uv_work_t *w, int status)
{
    (void)w, (void)status;
}

/* A numeric address needs no lookup: a request to one does not wait for a
 * thread of the pool that some file work keeps busy (there is one: main). */
static void test_numeric_host_without_lookup(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    uv_work_t w;
    got g;
    (void)state;
    server_start(a_length);
    setup_loop(&loop, &c);
    assert_int_equal(uv_queue_work(&loop, &w, slow_work, slow_work_done), 0);
    for (int i = 0; i < 2; i++) {
        start(c, &g, "/", NULL, 1000);
        run_until(&loop, &g, 1);
        if (g.code)
            fail_msg("%s", g.msg);
        eddy_buf_free(&g.body);
    }
    end_loop(&loop, c);
}

/* Every allocation of a request failing in turn (the n-th from its start):
 * the start says EDDY_ENOMEM, or the request ends once with a code (0 when
 * the failure hit nothing it needed); nothing hangs, every handle closes. */
static void test_out_of_memory(void **state)
{
    uv_loop_t loop;
    eddy_http1 *c;
    int ok = 0, refused = 0, failed = 0;
    (void)state;
    server_start(a_length);
    for (long n = 0; n < 60; n++) {
        got g;
        char url[64];
        eddy_err e;
        setup_loop(&loop, &c);
        snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", S.port);
        eddy_http1_spec spec = {.method = "POST",
                                .url = url,
                                .headers = "X-A: b\r\n",
                                .headers_len = 8,
                                .body = "{}",
                                .body_len = 2,
                                .timeout_ms = 5000};
        memset(&g, 0, sizeof(g));
        eddy_buf_init(&g.body);
        eddy_alloc_fail_after(n);
        int rc = eddy_http1_start(c, &spec, &CBS, &g, &g.req, &e);
        if (rc) {
            eddy_alloc_fail_after(-1);
            assert_int_equal(rc, EDDY_ENOMEM);
            assert_null(g.req);
            refused++;
        } else {
            for (int spins = 0; !g.done && spins < 100000; spins++)
                uv_run(&loop, UV_RUN_ONCE);
            eddy_alloc_fail_after(-1);
            assert_int_equal(g.done, 1);
            if (g.code)
                failed++;
            else
                ok++;
        }
        eddy_buf_free(&g.body);
        close_client(&loop, c);
        assert_int_equal(uv_loop_close(&loop), 0);
    }
    server_stop();
    assert_true(refused > 0); /* the first allocations are the start's */
    assert_true(ok > 0);      /* and past the last one, it works */
    printf("out of memory: %d starts refused, %d requests failed, %d went through\n", refused,
           failed, ok);
}

int main(void)
{
    setenv("UV_THREADPOOL_SIZE", "1", 1); /* before the pool starts */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_and_reuse),
        cmocka_unit_test(test_chunked_one_byte_at_a_time),
        cmocka_unit_test(test_until_close_interim_and_bodyless),
        cmocka_unit_test(test_server_closes_kept_connection),
        cmocka_unit_test(test_connection_header),
        cmocka_unit_test(test_answer_before_the_body_is_sent),
        cmocka_unit_test(test_reset_while_the_body_is_sent),
        cmocka_unit_test(test_head),
        cmocka_unit_test(test_lf_and_large_answers),
        cmocka_unit_test(test_idle_connection_closed_in_time),
        cmocka_unit_test(test_cut_and_extra_bytes),
        cmocka_unit_test(test_malformed_answers),
        cmocka_unit_test(test_refused_timeout_and_stop),
        cmocka_unit_test(test_many_at_once),
        cmocka_unit_test(test_refused_input),
        cmocka_unit_test(test_takes),
        cmocka_unit_test(test_localhost_by_name),
        cmocka_unit_test(test_out_of_memory),
        cmocka_unit_test(test_numeric_host_without_lookup),
        cmocka_unit_test(test_restart_after_failed_lookup),
        cmocka_unit_test(test_close_inside_callbacks),
        cmocka_unit_test(test_torture),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
