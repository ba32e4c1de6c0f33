/* tests/unit/test_mcp.c - the pure parts of the MCP client (configuration, line
 * framing, server-sent events, result conversion) and the manager's lifecycle
 * without a live server. Real servers are in tests/integration/mcp_test.py. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"
#include "eddy/mcp.h"
#include "../../mcp/mcp_int.h"

static json_t *J(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, 0, &je);
    if (!v)
        fail_msg("bad JSON in test: %s: %s", text, je.text);
    return v;
}

/* -- configuration ------------------------------------------------------------ */

typedef struct problems {
    char text[4096];
    int n;
} problems;

static void collect(void *ud, const char *path, int key, const char *msg)
{
    problems *p = ud;
    size_t l = strlen(p->text);
    snprintf(p->text + l, sizeof(p->text) - l, "%s%s|%s\n", path, key ? "(key)" : "", msg);
    p->n++;
}

/* The problems of config TEXT ("" when it is accepted). */
static const char *problems_of(const char *text)
{
    static problems p;
    json_t *v = J(text);
    eddy_mcp_config *cfg = NULL;
    eddy_err err = {0};
    int rc;
    memset(&p, 0, sizeof(p));
    rc = eddy_mcp_config_new(v, collect, &p, &cfg, &err);
    json_decref(v);
    if (rc == 0) {
        assert_non_null(cfg);
        assert_int_equal(p.n, 0);
    } else {
        assert_int_equal(rc, EDDY_ESCHEMA);
        assert_null(cfg);
        assert_true(p.n > 0);
        /* ERR carries the first problem */
        assert_non_null(strstr(p.text, err.msg));
    }
    eddy_mcp_config_free(cfg);
    return p.text;
}

static void test_config_valid(void **state)
{
    json_t *v = J("{\"ev\": {\"command\": [\"node\", \"x.js\", \"stdio\"], \"env\": {\"A\": \"1\"},"
                  " \"cwd\": \"/tmp\", \"timeout\": \"5s\"},"
                  " \"web\": {\"url\": \"http://127.0.0.1:1/mcp\", \"headers\": {\"X-A\": \"b\"},"
                  " \"timeout\": 2.5, \"startup_timeout\": \"250ms\"}}");
    eddy_mcp_config *cfg = NULL;
    eddy_err err = {0};
    (void)state;
    assert_int_equal(eddy_mcp_config_new(v, NULL, NULL, &cfg, &err), 0);
    assert_int_equal(eddy_mcp_config_count(cfg), 2);
    assert_string_equal(eddy_mcp_config_name(cfg, 0), "ev");
    assert_string_equal(eddy_mcp_config_name(cfg, 1), "web");
    assert_int_equal(cfg->servers[0].kind, MCP_STDIO);
    assert_string_equal(cfg->servers[0].argv[2], "stdio");
    assert_null(cfg->servers[0].argv[3]);
    assert_string_equal(cfg->servers[0].env[0], "A=1");
    assert_int_equal(cfg->servers[0].timeout_ms, 5000);
    assert_int_equal(cfg->servers[0].startup_timeout_ms, EDDY_MCP_DEFAULT_STARTUP_TIMEOUT_MS);
    assert_int_equal(cfg->servers[1].kind, MCP_HTTP);
    assert_string_equal(cfg->servers[1].headers[0], "X-A: b");
    assert_int_equal(cfg->servers[1].timeout_ms, 2500);
    assert_int_equal(cfg->servers[1].startup_timeout_ms, 250);
    eddy_mcp_config_free(cfg);
    json_decref(v);
    /* no section, an empty one */
    assert_int_equal(eddy_mcp_config_new(NULL, NULL, NULL, &cfg, &err), 0);
    assert_int_equal(eddy_mcp_config_count(cfg), 0);
    eddy_mcp_config_free(cfg);
    assert_string_equal(problems_of("{}"), "");
}

static void test_config_errors(void **state)
{
    (void)state;
    assert_non_null(strstr(problems_of("[1]"), "'mcp' must be a mapping"));
    assert_non_null(strstr(problems_of("{\"a\": 1}"), "/a|mcp server 'a' must be a mapping"));
    assert_non_null(
        strstr(problems_of("{\"a\": {}}"), "needs 'command' (a stdio server) or 'url'"));
    assert_non_null(strstr(problems_of("{\"a\": {\"command\": [\"x\"], \"url\": \"http://h/\"}}"),
                           "has both 'command' and 'url'"));
    assert_non_null(strstr(problems_of("{\"a\": {\"command\": []}}"),
                           "/a/command|mcp server 'a': 'command' must be a non-empty list"));
    assert_non_null(strstr(problems_of("{\"a\": {\"command\": \"node x\"}}"),
                           "'command' must be a non-empty list of strings"));
    assert_non_null(strstr(problems_of("{\"a\": {\"command\": [\"x\", 3]}}"),
                           "/a/command/1|mcp server 'a': command[1] must be a non-empty string"));
    assert_non_null(strstr(problems_of("{\"a\": {\"url\": \"ftp://h/\"}}"),
                           "/a/url|mcp server 'a': 'url' must be an http:// or https://"));
    assert_non_null(strstr(problems_of("{\"a\": {\"url\": \"http://h/\", \"timeout\": \"soon\"}}"),
                           "/a/timeout|mcp server 'a': 'timeout' must be a duration"));
    assert_non_null(strstr(problems_of("{\"a\": {\"url\": \"http://h/\", \"timeout\": -1}}"),
                           "'timeout' must be a duration"));
    assert_non_null(strstr(problems_of("{\"a\": {\"url\": \"http://h/\", \"tmeout\": 1}}"),
                           "/a/tmeout(key)|mcp server 'a': unknown key 'tmeout'"));
    assert_non_null(strstr(problems_of("{\"a\": {\"command\": [\"x\"], \"env\": {\"K\": 1}}}"),
                           "/a/env/K|mcp server 'a': env 'K' must be a string, not integer"));
    assert_non_null(strstr(problems_of("{\"a\": {\"command\": [\"x\"], \"env\": [1]}}"),
                           "'env' must be a mapping"));
    assert_non_null(strstr(problems_of("{\"a\": {\"url\": \"http://h/\", \"headers\": "
                                       "{\"X\": \"a\\nb\"}}}"),
                           "headers name 'X' is not allowed"));
    assert_non_null(strstr(problems_of("{\"a\": {\"url\": \"http://h/\", \"env\": {}}}"),
                           "'env' is for stdio servers"));
    assert_non_null(strstr(problems_of("{\"a\": {\"command\": [\"x\"], \"headers\": {}}}"),
                           "'headers' is for HTTP servers"));
    assert_non_null(strstr(problems_of("{\"a/b\": {\"command\": [\"x\"]}}"),
                           "/a/b(key)|mcp server name 'a/b' must be"));
    /* every problem is reported, not only the first */
    {
        const char *t = problems_of("{\"a\": {\"command\": [], \"timeout\": \"x\"}, "
                                    "\"b\": {\"url\": 5}}");
        assert_non_null(strstr(t, "/a/command|"));
        assert_non_null(strstr(t, "/a/timeout|"));
        assert_non_null(strstr(t, "/b/url|"));
    }
}

static void test_config_oom(void **state)
{
    json_t *v = J("{\"ev\": {\"command\": [\"node\", \"x.js\"], \"env\": {\"A\": \"1\", \"B\": "
                  "\"2\"}}, \"web\": {\"url\": \"http://h/\", \"headers\": {\"X\": \"y\"}}}");
    int ok = 0;
    (void)state;
    for (long n = 0; n < 200 && !ok; n++) {
        eddy_mcp_config *cfg = NULL, *copy = NULL;
        eddy_err e;
        int rc;
        eddy_alloc_fail_after(n);
        rc = eddy_mcp_config_new(v, NULL, NULL, &cfg, &e);
        if (rc == 0)
            rc = eddy__mcp_config_copy(cfg, &copy);
        eddy_alloc_fail_after(-1);
        if (rc == 0) {
            ok = 1;
            assert_string_equal(copy->servers[1].headers[0], "X: y");
        } else
            assert_int_equal(rc, EDDY_ENOMEM);
        eddy_mcp_config_free(cfg);
        eddy_mcp_config_free(copy);
    }
    assert_true(ok);
    json_decref(v);
}

/* -- lines ---------------------------------------------------------------------- */

typedef struct got {
    char text[8192];
    int n, oversized;
} got;

static void on_line(void *ud, const char *line, size_t len)
{
    got *g = ud;
    size_t l = strlen(g->text);
    if (!line) {
        g->oversized++;
        snprintf(g->text + l, sizeof(g->text) - l, "<too long %zu>", len);
        return;
    }
    snprintf(g->text + l, sizeof(g->text) - l, "[%.*s]", (int)len, line);
    g->n++;
}

static void test_lines_partial_reads(void **state)
{
    const char *in = "{\"a\":1}\r\n{\"b\":\n2}\n\n{\"c\":3}\n{\"d\"";
    eddy__mcp_lines l;
    got g;
    (void)state;
    /* fed byte by byte, and in one piece: the same lines */
    for (int mode = 0; mode < 2; mode++) {
        memset(&g, 0, sizeof(g));
        eddy__mcp_lines_init(&l, 1024);
        if (mode == 0)
            for (size_t i = 0; i < strlen(in); i++)
                assert_int_equal(eddy__mcp_lines_feed(&l, in + i, 1, on_line, &g), 0);
        else
            assert_int_equal(eddy__mcp_lines_feed(&l, in, strlen(in), on_line, &g), 0);
        assert_string_equal(g.text, "[{\"a\":1}][{\"b\":][2}][][{\"c\":3}]");
        /* the unfinished line waits for its newline */
        assert_int_equal(eddy__mcp_lines_feed(&l, ":4}\n", 4, on_line, &g), 0);
        assert_string_equal(g.text, "[{\"a\":1}][{\"b\":][2}][][{\"c\":3}][{\"d\":4}]");
        eddy__mcp_lines_free(&l);
    }
}

static void test_lines_oversized(void **state)
{
    eddy__mcp_lines l;
    got g;
    char big[100];
    (void)state;
    memset(&g, 0, sizeof(g));
    memset(big, 'x', sizeof(big));
    eddy__mcp_lines_init(&l, 16);
    assert_int_equal(eddy__mcp_lines_feed(&l, "ok\n", 3, on_line, &g), 0);
    /* an oversized line, in pieces: reported once, skipped up to its newline */
    assert_int_equal(eddy__mcp_lines_feed(&l, big, 10, on_line, &g), 0);
    assert_int_equal(eddy__mcp_lines_feed(&l, big, 10, on_line, &g), 0);
    assert_int_equal(eddy__mcp_lines_feed(&l, big, 50, on_line, &g), 0);
    assert_int_equal(eddy__mcp_lines_feed(&l, "yy\nnext\n", 8, on_line, &g), 0);
    assert_int_equal(g.oversized, 1);
    assert_string_equal(g.text, "[ok]<too long 20>[next]");
    /* exactly the limit is fine */
    memset(&g, 0, sizeof(g));
    assert_int_equal(eddy__mcp_lines_feed(&l, big, 16, on_line, &g), 0);
    assert_int_equal(eddy__mcp_lines_feed(&l, "\n", 1, on_line, &g), 0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.oversized, 0);
    eddy__mcp_lines_free(&l);
}

/* -- server-sent events ----------------------------------------------------------- */

static void on_event(void *ud, const char *event, const char *data, size_t len, const char *id)
{
    got *g = ud;
    size_t l = strlen(g->text);
    if (!data) {
        g->oversized++;
        snprintf(g->text + l, sizeof(g->text) - l, "<%s too big>", event);
        return;
    }
    snprintf(g->text + l, sizeof(g->text) - l, "<%s|%s|%.*s>", event, id, (int)len, data);
    g->n++;
}

static void feed_sse(const char *in, size_t chunk, size_t max, got *g)
{
    eddy__mcp_sse s;
    size_t n = strlen(in);
    memset(g, 0, sizeof(*g));
    eddy__mcp_sse_init(&s, max);
    for (size_t i = 0; i < n; i += chunk)
        assert_int_equal(eddy__mcp_sse_feed(&s, in + i, i + chunk > n ? n - i : chunk, on_event, g),
                         0);
    eddy__mcp_sse_free(&s);
}

static void test_sse(void **state)
{
    const char *in = ": a comment\n"
                     "event: message\n"
                     "id: 7\n"
                     "data: {\"a\":\n"
                     "data:1}\n"
                     "\n"
                     "retry: 100\n"
                     "data: plain\r\n"
                     "\r\n"
                     "event: ping\r"
                     "data: x\r"
                     "\r"
                     "data: no blank line at the end";
    got g;
    (void)state;
    /* split every way: the same events */
    for (size_t chunk = 1; chunk <= strlen(in); chunk++) {
        feed_sse(in, chunk, 1024, &g);
        assert_string_equal(g.text, "<message|7|{\"a\":\n1}><message|7|plain><ping|7|x>");
    }
    /* an event without data is not dispatched; an empty data line is "" */
    feed_sse("event: x\n\ndata:\n\n", 3, 1024, &g);
    assert_string_equal(g.text, "<message||>");
}

static void test_sse_oversized(void **state)
{
    char in[400];
    got g;
    (void)state;
    snprintf(in, sizeof(in), "data: %0200d\n\ndata: small\n\ndata: %050d\ndata: %050d\n\n", 1, 2,
             3);
    feed_sse(in, 7, 80, &g);
    assert_int_equal(g.oversized, 2);
    assert_int_equal(g.n, 1);
    assert_string_equal(g.text, "<message too big><message||small><message too big>");
}

/* -- results ------------------------------------------------------------------------ */

static void result_is(const char *result, int want_rc, const char *want)
{
    json_t *r = J(result), *out = NULL;
    eddy_err err = {0};
    int rc = eddy__mcp_result_json(r, "srv/tool", &out, &err);
    assert_int_equal(rc, want_rc);
    if (rc == 0) {
        char *text = eddy_json_dumps(out);
        assert_string_equal(text, want);
        eddy_free(text);
    } else {
        assert_null(out);
        assert_string_equal(err.msg, want);
    }
    json_decref(out);
    json_decref(r);
}

static void test_results(void **state)
{
    (void)state;
    result_is("{\"content\": [{\"type\": \"text\", \"text\": \"a\"}, {\"type\": \"text\", "
              "\"text\": \"b\"}]}",
              0, "\"a\\nb\"");
    result_is("{\"content\": []}", 0, "\"\"");
    result_is("{\"content\": [{\"type\": \"text\", \"text\": \"{}\"}], \"structuredContent\": "
              "{\"t\": 1}}",
              0, "{\"t\":1}");
    result_is("{\"content\": [{\"type\": \"image\", \"data\": \"AA\", \"mimeType\": "
              "\"image/png\"}, {\"type\": \"text\", \"text\": \"t\"}]}",
              0,
              "[{\"type\":\"image\",\"data\":\"AA\",\"mimeType\":\"image/png\"},{\"type\":"
              "\"text\",\"text\":\"t\"}]");
    result_is("{\"content\": [{\"type\": \"text\", \"text\": \"no such order\"}], \"isError\": "
              "true}",
              EDDY_ETOOL, "mcp tool 'srv/tool': no such order");
    result_is("{\"isError\": true, \"content\": []}", EDDY_ETOOL,
              "mcp tool 'srv/tool': the tool failed (no text given)");
    result_is("[1]", EDDY_EPARSE, "mcp tool 'srv/tool': the answer is not an object");
    result_is("{\"content\": 3}", EDDY_EPARSE, "mcp tool 'srv/tool': 'content' is not a list");
}

static void test_line_framing(void **state)
{
    json_t *m = J("{\"jsonrpc\": \"2.0\", \"id\": 1, \"method\": \"x\", \"params\": {\"s\": "
                  "\"a\\nb\"}}");
    size_t len;
    char *line = eddy__mcp_line(m, &len);
    (void)state;
    assert_non_null(line);
    assert_int_equal(len, strlen(line));
    /* one line: the newline inside the string is escaped */
    assert_string_equal(
        line, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"s\":\"a\\nb\"}}\n");
    eddy_free(line);
    json_decref(m);
}

/* -- the manager without live servers -------------------------------------------------- */

static int g_calls;
static int g_status;
static char g_msg[1024];

static void call_cb(eddy_mcp_result *r, void *ud)
{
    (void)ud;
    g_calls++;
    g_status = r->status;
    snprintf(g_msg, sizeof(g_msg), "%s", r->err.msg);
}

static int g_closed;
static void port_closed(void *ud)
{
    (void)ud;
    g_closed++;
}

static void test_manager_unreachable(void **state)
{
    json_t *v = J("{\"nope\": {\"command\": [\"/nonexistent/mcp-server\"], \"timeout\": "
                  "\"300ms\"}}");
    eddy_mcp_config *cfg = NULL;
    eddy_mcp *m = NULL;
    eddy_mcp_port *p = NULL;
    eddy_mcp_catalog *c;
    eddy_mcp_server_info si;
    eddy_err err = {0};
    uv_loop_t loop;
    (void)state;
    assert_int_equal(eddy_mcp_config_new(v, NULL, NULL, &cfg, &err), 0);
    assert_int_equal(eddy_mcp_new(cfg, &m, &err), 0);
    eddy_mcp_config_free(cfg); /* copied */
    assert_int_equal(eddy_mcp_start(m, &err), 0);
    assert_int_equal(eddy_mcp_wait_ready(m, 5000), 0);
    c = eddy_mcp_catalog_get(m);
    assert_int_equal(eddy_mcp_catalog_servers(c), 1);
    assert_int_equal(eddy_mcp_catalog_server(c, 0, &si), 0);
    assert_string_equal(si.name, "nope");
    assert_string_equal(si.transport, "stdio");
    assert_false(si.up);
    assert_non_null(strstr(si.error, "cannot start '/nonexistent/mcp-server'"));
    assert_int_equal(eddy_mcp_catalog_count(c), 0);
    assert_null(eddy_mcp_catalog_find(c, "nope", "x"));
    assert_int_equal(eddy_mcp_catalog_server(c, 1, &si), EDDY_ERANGE);
    eddy_mcp_catalog_release(c);

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(eddy_mcp_port_new(m, &loop, &p, &err), 0);
    assert_int_equal(eddy_mcp_call(p, "other", "x", NULL, 0, call_cb, NULL, &err), EDDY_ENOENT);
    assert_non_null(strstr(err.msg, "no mcp server 'other'"));
    g_calls = 0;
    assert_int_equal(eddy_mcp_call(p, "nope", "x", NULL, 0, call_cb, NULL, &err), 0);
    assert_int_equal(g_calls, 0); /* never inside the call */
    assert_int_equal(eddy_mcp_port_active(p), 1);
    while (g_calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(g_calls, 1);
    assert_true(g_status == EDDY_ENET || g_status == EDDY_ETIMEDOUT);
    assert_non_null(strstr(g_msg, "nope"));
    assert_int_equal(eddy_mcp_port_active(p), 0);

    /* a call in flight when the port closes: cancelled, exactly once */
    g_calls = 0;
    g_closed = 0;
    assert_int_equal(eddy_mcp_call(p, "nope", "x", NULL, 10000, call_cb, NULL, &err), 0);
    eddy_mcp_port_close(p, port_closed, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(g_calls, 1);
    assert_int_equal(g_closed, 1);
    assert_int_equal(g_status, EDDY_ECANCELED);
    assert_int_equal(uv_loop_close(&loop), 0);
    eddy_mcp_stop(m);
    eddy_mcp_free(m);
    json_decref(v);
}

static void test_manager_stop_cancels(void **state)
{
    json_t *v = J("{\"nope\": {\"command\": [\"/nonexistent/x\"]}}");
    eddy_mcp_config *cfg = NULL;
    eddy_mcp *m = NULL;
    eddy_mcp_port *p = NULL;
    eddy_err err = {0};
    uv_loop_t loop;
    (void)state;
    assert_int_equal(eddy_mcp_config_new(v, NULL, NULL, &cfg, &err), 0);
    assert_int_equal(eddy_mcp_new(cfg, &m, &err), 0);
    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(eddy_mcp_port_new(m, &loop, &p, &err), 0);
    /* before start: refused */
    assert_int_equal(eddy_mcp_call(p, "nope", "x", NULL, 0, call_cb, NULL, &err), EDDY_ECLOSING);
    assert_int_equal(eddy_mcp_start(m, &err), 0);
    g_calls = 0;
    assert_int_equal(eddy_mcp_call(p, "nope", "x", NULL, 60000, call_cb, NULL, &err), 0);
    eddy_mcp_stop(m); /* the parked call is cancelled */
    while (g_calls == 0)
        uv_run(&loop, UV_RUN_ONCE);
    assert_int_equal(g_calls, 1);
    assert_int_equal(g_status, EDDY_ECANCELED);
    assert_int_equal(eddy_mcp_call(p, "nope", "x", NULL, 0, call_cb, NULL, &err), EDDY_ECLOSING);
    eddy_mcp_port_close(p, NULL, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    eddy_mcp_free(m);
    eddy_mcp_config_free(cfg);
    json_decref(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_valid),         cmocka_unit_test(test_config_errors),
        cmocka_unit_test(test_config_oom),           cmocka_unit_test(test_lines_partial_reads),
        cmocka_unit_test(test_lines_oversized),      cmocka_unit_test(test_sse),
        cmocka_unit_test(test_sse_oversized),        cmocka_unit_test(test_results),
        cmocka_unit_test(test_line_framing),         cmocka_unit_test(test_manager_unreachable),
        cmocka_unit_test(test_manager_stop_cancels),
    };
    eddy_alloc_install();
    eddy_log_set_level(EDDY_LOG_ERROR);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
