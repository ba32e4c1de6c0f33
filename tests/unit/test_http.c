/* tests/unit/test_http.c - eddy.http's policy (allow lists, address classes,
 * headers, URL templates) and requests on a loop against loopback listeners
 * that count what they accept: refused requests never connect. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "../../tools/http_int.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/tools.h"

static json_t *allow_list(const char *text)
{
    json_t *v = json_loads(text, 0, NULL);
    assert_non_null(v);
    return v;
}

static void test_host_matching(void **state)
{
    json_t *a = allow_list("[{\"host\":\"api.example.com\",\"port\":443},"
                           "{\"host\":\"*.corp.example\",\"port\":0},"
                           "{\"host\":\"::1\",\"port\":8080},{\"host\":\"10.0.0.5\",\"port\":0}]");
    (void)state;
    assert_int_equal(eddy__http_host_allowed(a, "api.example.com", 443), 1);
    assert_int_equal(eddy__http_host_allowed(a, "API.Example.COM", 443), 1);
    assert_int_equal(eddy__http_host_allowed(a, "api.example.com", 80), -1); /* listed, port not */
    assert_int_equal(eddy__http_host_allowed(a, "example.com", 443), 0);
    assert_int_equal(eddy__http_host_allowed(a, "xapi.example.com", 443), 0);
    assert_int_equal(eddy__http_host_allowed(a, "api.example.com.evil", 443), 0);
    assert_int_equal(eddy__http_host_allowed(a, "a.corp.example", 1), 1);
    assert_int_equal(eddy__http_host_allowed(a, "a.b.corp.example", 65535), 1);
    assert_int_equal(eddy__http_host_allowed(a, "corp.example", 443), 0); /* subdomains only */
    assert_int_equal(eddy__http_host_allowed(a, "evilcorp.example", 443), 0);
    assert_int_equal(eddy__http_host_allowed(a, "::1", 8080), 1);
    assert_int_equal(eddy__http_host_allowed(a, "::1", 80), -1);
    assert_int_equal(eddy__http_host_allowed(a, "10.0.0.5", 9), 1);
    assert_int_equal(eddy__http_host_allowed(NULL, "api.example.com", 443), 0);
    json_decref(a);
}

static const char *classify(const char *ip)
{
    struct sockaddr_in s4;
    struct sockaddr_in6 s6;
    memset(&s4, 0, sizeof(s4));
    memset(&s6, 0, sizeof(s6));
    if (inet_pton(AF_INET, ip, &s4.sin_addr) == 1) {
        s4.sin_family = AF_INET;
        return eddy__http_addr_class((struct sockaddr *)&s4);
    }
    assert_int_equal(inet_pton(AF_INET6, ip, &s6.sin6_addr), 1);
    s6.sin6_family = AF_INET6;
    return eddy__http_addr_class((struct sockaddr *)&s6);
}

static void test_address_classes(void **state)
{
    static const struct {
        const char *ip, *cls; /* NULL: public */
    } table[] = {
        {"127.0.0.1", "loopback"},
        {"127.255.1.2", "loopback"},
        {"10.1.2.3", "private"},
        {"172.16.0.1", "private"},
        {"172.31.255.255", "private"},
        {"172.32.0.1", NULL},
        {"172.15.0.1", NULL},
        {"192.168.1.1", "private"},
        {"169.254.169.254", "link-local"},
        {"0.0.0.0", "unspecified"},
        {"0.1.2.3", "unspecified"},
        {"100.64.0.1", "shared (CGNAT)"},
        {"100.127.255.255", "shared (CGNAT)"},
        {"100.128.0.1", NULL},
        {"224.0.0.1", "multicast"},
        {"239.255.255.250", "multicast"},
        {"240.0.0.1", "reserved"},
        {"255.255.255.255", "reserved"},
        {"8.8.8.8", NULL},
        {"93.184.216.34", NULL},
        {"::1", "loopback"},
        {"::", "unspecified"},
        {"fc00::1", "private"},
        {"fd12:3456::1", "private"},
        {"fe80::1", "link-local"},
        {"febf::1", "link-local"},
        {"ff02::1", "multicast"},
        {"::ffff:127.0.0.1", "loopback"},
        {"::ffff:10.0.0.1", "private"},
        {"::ffff:169.254.169.254", "link-local"},
        {"::ffff:8.8.8.8", NULL},
        {"64:ff9b::7f00:1", "loopback"},
        {"2002:c0a8:0101::1", "private"}, /* 6to4 of 192.168.1.1 */
        {"2001:4860:4860::8888", NULL},
        {"2606:4700::1111", NULL},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        const char *got = classify(table[i].ip);
        if (!table[i].cls != !got || (got && strcmp(got, table[i].cls))) {
            print_error("%s: expected %s, got %s\n", table[i].ip,
                        table[i].cls ? table[i].cls : "public", got ? got : "public");
            fail();
        }
    }
}

static void test_address_rules(void **state)
{
    json_t *a = allow_list("[{\"host\":\"127.0.0.1\",\"port\":8080},{\"host\":\"localhost\","
                           "\"port\":0},{\"host\":\"10.0.0.5\",\"port\":0},{\"host\":\"fd00::5\","
                           "\"port\":443}]");
    char why[160];
    (void)state;
    /* public: always */
    assert_true(eddy__http_addr_text_allowed(a, "x.example", "8.8.8.8", 443, why, sizeof(why)));
    /* listed literally, with its port */
    assert_true(eddy__http_addr_text_allowed(a, "127.0.0.1", "127.0.0.1", 8080, why, sizeof(why)));
    assert_false(eddy__http_addr_text_allowed(a, "127.0.0.1", "127.0.0.1", 9, why, sizeof(why)));
    assert_string_equal(why, "127.0.0.1, a loopback address");
    /* a listed name that resolves to loopback is refused, unless it is localhost itself */
    assert_false(
        eddy__http_addr_text_allowed(a, "foo.localhost", "127.0.0.2", 9, why, sizeof(why)));
    assert_true(eddy__http_addr_text_allowed(a, "localhost", "127.0.0.2", 9, why, sizeof(why)));
    assert_true(eddy__http_addr_text_allowed(a, "localhost", "::1", 9, why, sizeof(why)));
    assert_false(eddy__http_addr_text_allowed(a, "localhost", "10.0.0.9", 9, why, sizeof(why)));
    assert_string_equal(why, "10.0.0.9, a private address");
    /* a name resolving to a listed private address: the address is listed */
    assert_true(eddy__http_addr_text_allowed(a, "db.internal", "10.0.0.5", 1, why, sizeof(why)));
    assert_true(eddy__http_addr_text_allowed(a, "x", "::ffff:10.0.0.5", 1, why, sizeof(why)));
    assert_true(eddy__http_addr_text_allowed(a, "x", "fd00::5", 443, why, sizeof(why)));
    assert_false(eddy__http_addr_text_allowed(a, "x", "fd00::6", 443, why, sizeof(why)));
    assert_string_equal(why, "fd00::6, a private address");
    assert_false(eddy__http_addr_text_allowed(a, "x", "169.254.169.254", 80, why, sizeof(why)));
    assert_string_equal(why, "169.254.169.254, a link-local address");
    assert_false(eddy__http_addr_text_allowed(a, "x", "::ffff:127.0.0.1", 80, why, sizeof(why)));
    assert_string_equal(why, "127.0.0.1, a loopback address");
    assert_false(eddy__http_addr_text_allowed(a, "x", "not-an-ip", 80, why, sizeof(why)));
    assert_false(eddy__http_addr_text_allowed(NULL, "x", "10.0.0.5", 80, why, sizeof(why)));
    json_decref(a);
}

static void test_headers_methods_urls(void **state)
{
    eddy_err e;
    char *s, out[256];
    json_t *args = json_loads("{\"id\":\"A 1/2?x#y\",\"n\":42,\"b\":true,\"u\":\"h\xc3\xa9\","
                              "\"o\":{}}",
                              0, NULL);
    (void)state;
    assert_int_equal(eddy__http_check_header("X-Api-Key", "abc", 3, &e), 0);
    assert_int_equal(eddy__http_check_header("X-A", "a\r\nX-B: 1", 9, &e), EDDY_EINVAL);
    assert_non_null(strstr(e.msg, "line break"));
    assert_int_equal(eddy__http_check_header("X-A", "a\nb", 3, &e), EDDY_EINVAL);
    assert_int_equal(eddy__http_check_header("X-A", "a\0b", 3, &e), EDDY_EINVAL);
    assert_int_equal(eddy__http_check_header("Bad Name", "v", 1, &e), EDDY_EINVAL);
    assert_int_equal(eddy__http_check_header("X:Y", "v", 1, &e), EDDY_EINVAL);
    assert_int_equal(eddy__http_check_header("", "v", 1, &e), EDDY_EINVAL);
    assert_int_equal(eddy__http_check_header("Host", "evil", 4, &e), EDDY_EINVAL);
    assert_int_equal(eddy__http_check_header("transfer-encoding", "chunked", 7, &e), EDDY_EINVAL);
    assert_string_equal(eddy__http_method("get"), "GET");
    assert_string_equal(eddy__http_method("PATCH"), "PATCH");
    assert_null(eddy__http_method("CONNECT"));
    assert_null(eddy__http_method("TRACE"));
    assert_null(eddy__http_method("GET / HTTP/1.1\r\n"));

    s = eddy__http_expand("https://x.example/o/{id}/{n}?b={b}&u={u}", args, &e);
    assert_non_null(s);
    assert_string_equal(s, "https://x.example/o/A%201%2F2%3Fx%23y/42?b=true&u=h%C3%A9");
    eddy_free(s);
    assert_null(eddy__http_expand("https://x/{missing}", args, &e));
    assert_non_null(strstr(e.msg, "parameter 'missing' is needed by the URL"));
    assert_null(eddy__http_expand("https://x/{o}", args, &e));
    assert_non_null(strstr(e.msg, "must be a string, number or boolean"));
    assert_null(eddy__http_expand("https://x/{unclosed", args, &e));

    assert_string_equal(
        eddy__http_safe_url("https://u:pw@h.example:8443/a/b?token=s#f", out, sizeof(out)),
        "https://h.example:8443/a/b?[query]");
    assert_string_equal(eddy__http_safe_url("http://h/p#frag", out, sizeof(out)), "http://h/p");
    assert_string_equal(eddy__http_safe_url("http://h", out, sizeof(out)), "http://h");
    json_decref(args);
}

/* -- requests on a loop ----------------------------------------------------------------- */

typedef struct listener {
    uv_tcp_t tcp;
    int port, accepts, answer, requests;
    uv_tcp_t *clients[16];
    int nclients;
} listener;

typedef struct client {
    uv_tcp_t tcp;
    listener *l;
    char buf[4096];
    size_t len;
    uv_write_t wr;
} client;

static void client_closed(uv_handle_t *h)
{
    eddy_free(h->data);
}

static void on_alloc(uv_handle_t *h, size_t want, uv_buf_t *b)
{
    client *c = h->data;
    (void)want;
    *b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len - 1));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    static char resp[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                         "9\r\nX-Seen: 1\r\n\r\n{\"ok\":42}";
    client *c = s->data;
    (void)b;
    if (n < 0)
        return;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    if (!strstr(c->buf, "\r\n\r\n"))
        return;
    c->l->requests++;
    c->len = 0;
    if (c->l->answer) {
        uv_buf_t out = uv_buf_init(resp, sizeof(resp) - 1);
        uv_write(&c->wr, s, &out, 1, NULL);
    }
}

static void on_conn(uv_stream_t *srv, int status)
{
    listener *l = srv->data;
    client *c = eddy_calloc(1, sizeof(*c));
    assert_int_equal(status, 0);
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    c->l = l;
    assert_int_equal(uv_accept(srv, (uv_stream_t *)&c->tcp), 0);
    l->accepts++;
    l->clients[l->nclients++] = &c->tcp;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

static void listen_on(uv_loop_t *loop, listener *l, int answer)
{
    struct sockaddr_in a;
    struct sockaddr_storage got;
    int len = sizeof(got);
    memset(l, 0, sizeof(*l));
    l->answer = answer;
    uv_ip4_addr("127.0.0.1", 0, &a);
    uv_tcp_init(loop, &l->tcp);
    l->tcp.data = l;
    assert_int_equal(uv_tcp_bind(&l->tcp, (struct sockaddr *)&a, 0), 0);
    assert_int_equal(uv_listen((uv_stream_t *)&l->tcp, 128, on_conn), 0);
    uv_tcp_getsockname(&l->tcp, (struct sockaddr *)&got, &len);
    l->port = ntohs(((struct sockaddr_in *)&got)->sin_port);
}

static void listener_close(listener *l)
{
    for (int i = 0; i < l->nclients; i++)
        uv_close((uv_handle_t *)l->clients[i], client_closed);
    uv_close((uv_handle_t *)&l->tcp, NULL);
}

typedef struct done {
    int n;
    int status[16];
    char *out[16];
} done_t;

static void on_done(eddy_tool_result *r, void *ud)
{
    done_t *d = ud;
    d->status[d->n] = r->status;
    d->out[d->n] = r->status ? eddy_strdup(r->err.msg) : eddy_json_dumps(r->result);
    d->n++;
}

/* Whether one of D's outputs contains S (the order of refusals is not fixed:
 * some are refused before the request starts, some where curl connects). */
static int has(const done_t *d, const char *s)
{
    for (int i = 0; i < d->n; i++)
        if (strstr(d->out[i], s))
            return 1;
    return 0;
}

static const char kTool[] =
    "return eddy.tool { name = 'web', description = 'd', params = { url = 'string' },\n"
    "  run = function(args)\n"
    "    local ok, r = pcall(eddy.http.get, args.url)\n"
    "    if not ok then return 'ERR ' .. r end\n"
    "    return 'OK ' .. r.status .. ' ' .. r.json.ok .. ' ' .. r.headers['x-seen']\n"
    "  end }\n";

static void call_url(eddy_tools *h, eddy_tool *t, const char *fmt, int port, done_t *d)
{
    char url[256];
    eddy_err e;
    json_t *args;
    snprintf(url, sizeof(url), fmt, port);
    args = json_pack("{s:s}", "url", url);
    assert_int_equal(eddy_tool_call(h, t, args, NULL, on_done, d, &e), 0);
    json_decref(args);
}

static void test_requests_and_refusals_on_a_loop(void **state)
{
    uv_loop_t loop;
    listener ok, victim;
    eddy_tools *h;
    eddy_tool *t, *nohttp;
    eddy_tool_opts o;
    eddy_err e;
    done_t d;
    char allow[512];
    json_t *http;
    (void)state;
    memset(&d, 0, sizeof(d));
    uv_loop_init(&loop);
    listen_on(&loop, &ok, 1);
    listen_on(&loop, &victim, 0);
    snprintf(allow, sizeof(allow),
             "{\"allow\":[{\"host\":\"127.0.0.1\",\"port\":%d},{\"host\":\"foo.localhost\","
             "\"port\":%d}],\"max_redirects\":5,\"max_response\":1000,\"timeout_ms\":5000}",
             ok.port, victim.port);
    http = allow_list(allow);
    assert_int_equal(eddy_tools_new(&loop, g_dir, &h, NULL), 0);
    memset(&o, 0, sizeof(o));
    o.http = http;
    assert_int_equal(eddy_tools_load_opts(h, write_file("web.lua", kTool), &o, &t, &e), 0);
    assert_int_equal(eddy_tools_load(h, write_file("nohttp.lua", kTool), NULL, &nohttp, &e), 0);

    call_url(h, t, "http://127.0.0.1:%d/x?secret=1", ok.port, &d);
    while (d.n < 1)
        uv_run(&loop, UV_RUN_ONCE);
    call_url(h, t, "http://127.0.0.1:%d/x", victim.port, &d);     /* port not listed */
    call_url(h, t, "http://localhost:%d/x", victim.port, &d);     /* host not listed */
    call_url(h, t, "http://foo.localhost:%d/x", victim.port, &d); /* listed, but loopback */
    call_url(h, t, "http://[::1]:%d/x", victim.port, &d);
    call_url(h, t, "ftp://127.0.0.1:%d/x", victim.port, &d);
    call_url(h, nohttp, "http://127.0.0.1:%d/x", victim.port, &d);
    while (d.n < 7) /* (the listeners keep the loop alive) */
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(d.n, 7);
    for (int i = 0; i < d.n; i++)
        assert_int_equal(d.status[i], 0);
    assert_string_equal(d.out[0], "\"OK 200 42 1\"");
    assert_true(has(&d, "port"));
    assert_true(has(&d, "of host '127.0.0.1' is not in tool 'web''s http.allow"));
    assert_true(has(&d, "host 'localhost' is not in tool 'web''s http.allow"));
    assert_true(has(&d, "host 'foo.localhost' resolves to "));
    assert_true(has(&d, "a loopback address, which tool 'web''s http.allow does not list"));
    assert_true(has(&d, "host '::1' is not in"));
    assert_true(has(&d, "only http:// and https://"));
    assert_true(has(&d, "tool 'web' has no http.allow in the job"));
    assert_int_equal(ok.accepts, 1);
    assert_int_equal(victim.accepts, 0); /* nothing refused ever connected */
    for (int i = 0; i < d.n; i++) {
        assert_null(strstr(d.out[i], "secret"));
        eddy_free(d.out[i]);
    }

    /* A kept-alive connection is checked again before another tool reuses it:
     * LISTS lists foo.localhost and 127.0.0.1 (so it may connect), NAME_ONLY
     * only the name; curl reuses LISTS' connection to foo.localhost for
     * NAME_ONLY, and CURLOPT_PREREQFUNCTION refuses it before anything is sent. */
    {
        char a2[512];
        eddy_tool *lists, *name_only;
        json_t *h1, *h2;
        int before;
        snprintf(a2, sizeof(a2),
                 "{\"allow\":[{\"host\":\"foo.localhost\",\"port\":%d},{\"host\":"
                 "\"127.0.0.1\",\"port\":%d}],\"max_redirects\":5,\"max_response\":1000,"
                 "\"timeout_ms\":5000}",
                 ok.port, ok.port);
        h1 = allow_list(a2);
        snprintf(a2, sizeof(a2),
                 "{\"allow\":[{\"host\":\"foo.localhost\",\"port\":%d}],\"max_redirects\":5,"
                 "\"max_response\":1000,\"timeout_ms\":5000}",
                 ok.port);
        h2 = allow_list(a2);
        o.http = h1;
        assert_int_equal(eddy_tools_load_opts(h, write_file("lists.lua", kTool), &o, &lists, &e),
                         0);
        o.http = h2;
        assert_int_equal(
            eddy_tools_load_opts(h, write_file("name_only.lua", kTool), &o, &name_only, &e), 0);
        memset(&d, 0, sizeof(d));
        call_url(h, lists, "http://foo.localhost:%d/x", ok.port, &d);
        while (d.n < 1)
            uv_run(&loop, UV_RUN_ONCE);
        assert_string_equal(d.out[0], "\"OK 200 42 1\"");
        before = ok.requests;
        call_url(h, name_only, "http://foo.localhost:%d/x", ok.port, &d);
        while (d.n < 2)
            uv_run(&loop, UV_RUN_ONCE);
        assert_non_null(strstr(d.out[1], "host 'foo.localhost' resolves to 127.0.0.1, a loopback "
                                         "address, which tool 'web''s http.allow does not list"));
        assert_int_equal(ok.requests, before); /* nothing was sent on it */
        eddy_free(d.out[0]);
        eddy_free(d.out[1]);
        json_decref(h1);
        json_decref(h2);
    }

    /* a request in flight when the call is abandoned: the callback runs once */
    memset(&d, 0, sizeof(d));
    ok.answer = 0;
    call_url(h, t, "http://127.0.0.1:%d/hang", ok.port, &d);
    while (ok.requests < 2) /* (on the kept-alive connection of the first) */
        uv_run(&loop, UV_RUN_ONCE);
    eddy_tools_cancel_all(h);
    while (d.n < 1)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(d.status[0], EDDY_ECANCELED);
    eddy_free(d.out[0]);
    eddy_tools_close(h);
    listener_close(&ok);
    listener_close(&victim);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(eddy_tools_active(h), 0);
    eddy_tools_free(h);
    assert_int_equal(uv_loop_close(&loop), 0);
    json_decref(http);
}

static void test_http_request_tool_settings(void **state)
{
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    json_t *cfg;
    char *s;
    (void)state;
    assert_int_equal(eddy_tools_new(NULL, g_dir, &h, NULL), 0);
    cfg = json_loads("{\"name\":\"get_order\",\"url\":\"https://api.example.com/o/{id}\","
                     "\"params\":{\"id\":{\"type\":\"string\",\"required\":true,"
                     "\"description\":\"the id\"},\"v\":\"boolean\"},\"query\":[\"v\"],"
                     "\"headers\":{\"Authorization\":\"Bearer x\"}}",
                     0, NULL);
    assert_int_equal(eddy_tools_load_native(h, "http_request", cfg, &t, &e), 0);
    assert_string_equal(eddy_tool_name(t), "get_order");
    s = eddy_json_dumps(eddy_tool_schema(t));
    assert_string_equal(s, "{\"type\":\"object\",\"properties\":{\"id\":{\"type\":\"string\","
                           "\"description\":\"the id\"},\"v\":{\"type\":\"boolean\"}},"
                           "\"required\":[\"id\"],\"additionalProperties\":false}");
    eddy_free(s);
    json_decref(cfg);
    static const struct {
        const char *cfg, *msg;
    } bad[] = {
        {"{\"url\":\"https://{h}.example/x\",\"params\":{\"h\":\"string\"}}", "fixed host"},
        {"{\"url\":\"https://a.example/{x}\"}", "names 'x', which is not in params"},
        {"{\"url\":\"https://a.example/\",\"params\":{\"x\":\"string\"}}", "used nowhere"},
        {"{\"url\":\"ftp://a.example/\"}", "not an http:// or https:// URL"},
        {"{\"url\":\"https://a.example/\",\"method\":\"TRACE\"}", "'method' must be"},
        {"{\"url\":\"https://a.example/\",\"headers\":{\"X\":\"a\\nb\"}}", "line break"},
        {"{\"url\":\"https://a.example/\",\"body\":[\"x\"],\"params\":{\"x\":\"string\"}}",
         "a GET request has no body"},
        {"{\"url\":\"https://a.example/\",\"allow\":[\"a b\"]}", "cannot be in a host name"},
        {"{\"url\":\"https://a.example/\",\"hedaers\":{}}", "unknown key 'hedaers'"},
        {"{\"url\":\"https://a.example/{o}\",\"params\":{\"o\":\"object\"}}", "must then be a "
                                                                              "scalar"},
        {"{\"name\":\"t\"}", "'url' is required"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cfg = json_loads(bad[i].cfg, 0, NULL);
        assert_non_null(cfg);
        assert_int_equal(eddy_tools_load_native(h, "http_request", cfg, &t, &e), EDDY_EINVAL);
        if (!strstr(e.msg, bad[i].msg)) {
            print_error("%s: got '%s', expected '%s'\n", bad[i].cfg, e.msg, bad[i].msg);
            fail();
        }
        json_decref(cfg);
    }
    cfg = json_loads("{}", 0, NULL);
    assert_int_equal(eddy_tools_load_native(h, "current_time", cfg, &t, &e), 0);
    assert_string_equal(eddy_tool_name(t), "current_time");
    json_decref(cfg);
    eddy_tools_free(h);
}

/* Fail allocation n = 0, 1, 2, ... while an http_request tool loads and a URL
 * expands: each ends with EDDY_ENOMEM (or succeeds), nothing crashes (and under
 * valgrind nothing leaks). */
static void test_out_of_memory(void **state)
{
    eddy_tools *h;
    eddy_tool *t;
    eddy_err e;
    json_t *cfg = json_loads("{\"name\":\"t\",\"url\":\"https://a.example/o/{id}\","
                             "\"method\":\"POST\",\"params\":{\"id\":{\"type\":\"string\","
                             "\"required\":true},\"v\":\"boolean\",\"b\":\"string\"},"
                             "\"query\":[\"v\"],\"body\":{\"x\":\"{b}\"},\"allow\":[\"c."
                             "example\"],\"headers\":{\"X-K\":\"v\"}}",
                             0, NULL);
    json_t *args = json_loads("{\"id\":\"a b\",\"n\":1}", 0, NULL);
    int ok = 0;
    (void)state;
    assert_int_equal(eddy_tools_new(NULL, g_dir, &h, NULL), 0);
    for (long n = 0; n < 400 && !ok; n++) {
        char name[16];
        int rc;
        snprintf(name, sizeof(name), "t%ld", n);
        json_object_set_new(cfg, "name", json_string(name));
        memset(&e, 0, sizeof(e));
        eddy_alloc_fail_after(n);
        rc = eddy_tools_load_native(h, "http_request", cfg, &t, &e);
        eddy_alloc_fail_after(-1);
        if (rc == 0)
            ok = 1;
        else if (rc != EDDY_ENOMEM || !strstr(e.msg, "out of memory")) {
            print_error("allocation %ld: %d %s\n", n, rc, e.msg);
            fail();
        }
    }
    assert_true(ok);
    ok = 0;
    for (long n = 0; n < 100 && !ok; n++) {
        char *s;
        eddy_alloc_fail_after(n);
        s = eddy__http_expand("https://a.example/o/{id}/{n}", args, &e);
        eddy_alloc_fail_after(-1);
        if (s)
            ok = 1;
        else
            assert_int_equal(e.code, EDDY_ENOMEM);
        eddy_free(s);
    }
    assert_true(ok);
    eddy_tools_free(h);
    json_decref(cfg);
    json_decref(args);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_matching),
        cmocka_unit_test(test_address_classes),
        cmocka_unit_test(test_address_rules),
        cmocka_unit_test(test_headers_methods_urls),
        cmocka_unit_test(test_requests_and_refusals_on_a_loop),
        cmocka_unit_test(test_http_request_tool_settings),
        cmocka_unit_test(test_out_of_memory),
    };
    eddy_alloc_install();
    assert_int_equal(eddy_tools_register_builtins(), 0);
    return cmocka_run_group_tests_name("http", tests, tmpdir_setup, tmpdir_teardown);
}
