/*
 * tests/mcp/driver.c - drives the MCP manager for tests/integration/mcp_test.py
 * and bench/tools: `mcp_driver CONFIG.json` starts a manager for the `mcp:`
 * mapping in CONFIG.json, then reads one JSON command a line on stdin and
 * answers with JSON lines on stdout, from a uv loop with one port (as a worker
 * would):
 *
 *   {"op":"wait","timeout":MS}                     -> {"op":"wait","ready":true}
 *   {"op":"catalog"}                               ->
 * {"op":"catalog","version":N,"servers":[..],"tools":[..]}
 *   {"op":"call","id":K,"server":S,"tool":T,"args":{..},"timeout":MS}
 *                                                  -> later
 * {"op":"result","id":K,"status":..,"result":..,"error":..,"ms":..}
 *   {"op":"bench","server":S,"tool":T,"args":{..},"n":N}
 *                                                  ->
 * {"op":"bench","n":N,"median_us":..,"p90_us":..,"mean_us":..}
 *   {"op":"probe","timeout":MS}                    -> {"op":"probe","report":{..}}  (a second,
 * throwaway manager)
 *   {"op":"stop"}                                  -> {"op":"stopped"} and exit 0 (also at end of
 * input)
 */
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"
#include "eddy/mcp.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static uv_loop_t *g_loop;
static eddy_mcp *g_m;
static eddy_mcp_config *g_cfg;
static eddy_mcp_port *g_port;
static uv_pipe_t g_in;
static eddy_buf g_line;
static int g_stopping;

/* bench state */
static struct {
    char *server, *tool;
    json_t *args;
    int n, done;
    uint64_t t0;
    double *us;
} g_b;

static void emit(json_t *o)
{
    char *s = eddy_json_dumps(o);
    if (s) {
        fputs(s, stdout);
        fputc('\n', stdout);
        fflush(stdout);
    }
    eddy_free(s);
    json_decref(o);
}

static void call_cb(eddy_mcp_result *r, void *ud)
{
    json_t *o = json_pack("{s:s, s:I, s:i, s:I}", "op", "result", "id", (json_int_t)(intptr_t)ud,
                          "status", r->status, "ms", (json_int_t)r->duration_ms);
    if (r->status)
        json_object_set_new(o, "error", json_string(r->err.msg));
    else
        json_object_set(o, "result", r->result);
    emit(o);
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench_next(void);

static void bench_end(void)
{
    eddy_free(g_b.us);
    eddy_free(g_b.server);
    eddy_free(g_b.tool);
    json_decref(g_b.args);
    memset(&g_b, 0, sizeof(g_b));
}

static void bench_report(void)
{
    double sum = 0;
    for (int i = 0; i < g_b.n; i++)
        sum += g_b.us[i];
    qsort(g_b.us, (size_t)g_b.n, sizeof(double), cmp_d);
    emit(json_pack("{s:s, s:i, s:f, s:f, s:f}", "op", "bench", "n", g_b.n, "median_us",
                   g_b.us[g_b.n / 2], "p90_us", g_b.us[g_b.n * 9 / 10], "mean_us", sum / g_b.n));
}

static void bench_cb(eddy_mcp_result *r, void *ud)
{
    uint64_t now = uv_hrtime();
    (void)ud;
    if (r->status) {
        emit(json_pack("{s:s, s:s}", "op", "bench", "error", r->err.msg));
        bench_end();
        return;
    }
    g_b.us[g_b.done++] = (double)(now - g_b.t0) / 1000.0;
    if (g_b.done < g_b.n) {
        bench_next();
        return;
    }
    bench_report();
    bench_end();
}

static void bench_next(void)
{
    eddy_err err = {0};
    g_b.t0 = uv_hrtime();
    if (eddy_mcp_call(g_port, g_b.server, g_b.tool, g_b.args, 0, bench_cb, NULL, &err)) {
        emit(json_pack("{s:s, s:s}", "op", "bench", "error", err.msg));
        bench_end();
    }
}

static void catalog(void)
{
    eddy_mcp_catalog *c = eddy_mcp_catalog_get(g_m);
    json_t *servers = json_array(), *tools = json_array();
    for (size_t i = 0; i < eddy_mcp_catalog_servers(c); i++) {
        eddy_mcp_server_info si;
        eddy_mcp_catalog_server(c, i, &si);
        json_array_append_new(servers,
                              json_pack("{s:s, s:s, s:b, s:b, s:s?, s:i}", "name", si.name,
                                        "transport", si.transport, "up", si.up, "ever_up",
                                        si.ever_up, "error", si.error, "ntools", (int)si.ntools));
    }
    for (size_t i = 0; i < eddy_mcp_catalog_count(c); i++) {
        const eddy_mcp_tool *t = eddy_mcp_catalog_tool(c, i);
        json_array_append_new(tools, json_pack("{s:s, s:s, s:s, s:O}", "server", t->server, "name",
                                               t->name, "description", t->description, "schema",
                                               t->input_schema));
    }
    emit(json_pack("{s:s, s:I, s:I, s:o, s:o}", "op", "catalog", "version",
                   (json_int_t)eddy_mcp_catalog_version(c), "live_version",
                   (json_int_t)eddy_mcp_version(g_m), "servers", servers, "tools", tools));
    eddy_mcp_catalog_release(c);
}

static void port_closed(void *ud)
{
    (void)ud;
    uv_close((uv_handle_t *)&g_in, NULL);
}

static void stop(void)
{
    if (g_stopping)
        return;
    g_stopping = 1;
    uv_read_stop((uv_stream_t *)&g_in);
    eddy_mcp_port_close(g_port, port_closed, NULL);
}

static void command(const char *line, size_t len)
{
    json_error_t je;
    json_t *c = json_loadb(line, len, 0, &je);
    const char *op = json_string_value(json_object_get(c, "op"));
    eddy_err err = {0};
    if (!op) {
        emit(json_pack("{s:s, s:s}", "op", "error", "error", "bad command"));
    } else if (!strcmp(op, "wait")) {
        int rc = eddy_mcp_wait_ready(g_m, eddy_json_int(c, "timeout", 10000));
        emit(json_pack("{s:s, s:b}", "op", "wait", "ready", rc == 0));
    } else if (!strcmp(op, "catalog")) {
        catalog();
    } else if (!strcmp(op, "call")) {
        json_int_t id = json_integer_value(json_object_get(c, "id"));
        if (eddy_mcp_call(g_port, eddy_json_str(c, "server", ""), eddy_json_str(c, "tool", ""),
                          json_object_get(c, "args"), eddy_json_int(c, "timeout", 0), call_cb,
                          (void *)(intptr_t)id, &err))
            emit(json_pack("{s:s, s:I, s:i, s:s, s:b}", "op", "result", "id", id, "status",
                           err.code, "error", err.msg, "sync", 1));
    } else if (!strcmp(op, "bench") && g_b.n) {
        emit(json_pack("{s:s, s:s}", "op", "bench", "error", "a bench is running already"));
    } else if (!strcmp(op, "bench")) {
        g_b.server = eddy_strdup(eddy_json_str(c, "server", ""));
        g_b.tool = eddy_strdup(eddy_json_str(c, "tool", ""));
        g_b.args = json_incref(json_object_get(c, "args"));
        g_b.n = (int)eddy_json_int(c, "n", 100);
        if (g_b.n < 1)
            g_b.n = 1;
        g_b.us = eddy_calloc((size_t)g_b.n, sizeof(double));
        bench_next();
    } else if (!strcmp(op, "probe")) {
        json_t *rep = NULL;
        if (eddy_mcp_probe(g_cfg, eddy_json_int(c, "timeout", 10000), &rep, &err))
            emit(json_pack("{s:s, s:s}", "op", "probe", "error", err.msg));
        else
            emit(json_pack("{s:s, s:o}", "op", "probe", "report", rep));
    } else if (!strcmp(op, "stop")) {
        stop();
    }
    json_decref(c);
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)h;
    (void)hint;
    b->base = eddy_malloc(65536);
    b->len = 65536;
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)s;
    for (ssize_t i = 0; i < n; i++) {
        if (b->base[i] == '\n') {
            if (g_line.len)
                command(g_line.data, g_line.len);
            eddy_buf_reset(&g_line);
        } else
            eddy_buf_putc(&g_line, b->base[i]);
    }
    eddy_free(b->base);
    if (n < 0)
        stop();
}

int main(int argc, char **argv)
{
    json_error_t je;
    json_t *root;
    eddy_err err = {0};
    uv_loop_t loop;
    if (argc != 2) {
        fprintf(stderr, "usage: mcp_driver CONFIG.json\n");
        return 2;
    }
    eddy_alloc_install();
    signal(SIGPIPE, SIG_IGN); /* as the eddy binary */
    eddy_log_set_level(-1);
    root = json_load_file(argv[1], 0, &je);
    if (!root) {
        fprintf(stderr, "%s: %s\n", argv[1], je.text);
        return 2;
    }
    if (eddy_mcp_config_new(json_object_get(root, "mcp"), NULL, NULL, &g_cfg, &err) ||
        eddy_mcp_new(g_cfg, &g_m, &err) || eddy_mcp_start(g_m, &err)) {
        fprintf(stderr, "mcp_driver: %s\n", err.msg);
        return 2;
    }
    json_decref(root);
    uv_loop_init(&loop);
    g_loop = &loop;
    eddy_buf_init(&g_line);
    eddy_mcp_port_new(g_m, &loop, &g_port, &err);
    uv_pipe_init(&loop, &g_in, 0);
    uv_pipe_open(&g_in, 0);
    uv_read_start((uv_stream_t *)&g_in, alloc_cb, read_cb);
    uv_run(&loop, UV_RUN_DEFAULT);
    eddy_mcp_free(g_m);
    eddy_mcp_config_free(g_cfg);
    eddy_buf_free(&g_line);
    if (uv_loop_close(&loop))
        fprintf(stderr, "mcp_driver: loop not closed\n");
    printf("{\"op\":\"stopped\"}\n");
    fflush(stdout);
    return 0;
}
