/*
 * bench/tools/bench.c - what a tool call costs the worker: a trivial Lua tool
 * call, and one loopback HTTP request from Lua (eddy.http.get inside a tool
 * call) against the same request from a bare curl-multi program
 * (bench/tools/floor_http.c).
 *
 * Everything runs in this process on one libuv loop, as on a worker: a tools
 * host, calls kept IN_FLIGHT at a time (each completion starts the next).
 * The HTTP server is a forked child (libuv, keep-alive, a fixed 2-byte answer),
 * so only the client's CPU is counted: the trivial call's by
 * CLOCK_THREAD_CPUTIME_ID of this thread, the HTTP runs' by getrusage (user +
 * sys of this process: curl's threads too, if it made any), the floor's by
 * wait4. Prints figures; decides nothing.
 *
 *   bench_tools [--calls N] [--requests N] [--in-flight C] [--floor PATH]
 */
#include "eddy/buf.h"
#include "eddy/tools.h"

#include <libgen.h>
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* -- the server (child process) ------------------------------------------------ */

typedef struct conn {
    uv_tcp_t tcp;
    char buf[8192];
    int match; /* bytes of "\r\n\r\n" matched at the end of the last read */
} conn;

static void conn_alloc(uv_handle_t *h, size_t want, uv_buf_t *b)
{
    conn *c = h->data;
    (void)want;
    *b = uv_buf_init(c->buf, sizeof(c->buf));
}

static void conn_closed(uv_handle_t *h)
{
    free(h->data);
}

static void wrote(uv_write_t *w, int status)
{
    (void)status;
    free(w);
}

static void conn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    static char resp[] =
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok";
    static const char end[] = "\r\n\r\n";
    conn *c = s->data;
    int reqs = 0;
    if (n < 0) {
        uv_close((uv_handle_t *)s, conn_closed);
        return;
    }
    for (ssize_t i = 0; i < n; i++) {
        c->match = b->base[i] == end[c->match] ? c->match + 1 : (b->base[i] == '\r');
        if (c->match == 4) {
            reqs++;
            c->match = 0;
        }
    }
    for (int i = 0; i < reqs; i++) {
        uv_write_t *w = malloc(sizeof(*w));
        uv_buf_t out = uv_buf_init(resp, sizeof(resp) - 1);
        uv_write(w, s, &out, 1, wrote);
    }
}

static void on_conn(uv_stream_t *srv, int status)
{
    conn *c = calloc(1, sizeof(*c));
    (void)status;
    uv_tcp_init(srv->loop, &c->tcp);
    c->tcp.data = c;
    if (uv_accept(srv, (uv_stream_t *)&c->tcp) == 0) {
        uv_tcp_nodelay(&c->tcp, 1);
        uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_read);
    } else {
        uv_close((uv_handle_t *)&c->tcp, conn_closed);
    }
}

/* Fork the server; its port is returned, its pid in *PID. */
static int serve(pid_t *pid)
{
    int fds[2], port = 0;
    if (pipe(fds))
        return -1;
    if ((*pid = fork()) == 0) {
        uv_loop_t loop;
        uv_tcp_t srv;
        struct sockaddr_in a;
        struct sockaddr_storage got;
        int len = sizeof(got);
        prctl(PR_SET_NAME, "bench_server"); /* told apart from the client in perf */
        uv_loop_init(&loop);
        uv_ip4_addr("127.0.0.1", 0, &a);
        uv_tcp_init(&loop, &srv);
        uv_tcp_bind(&srv, (struct sockaddr *)&a, 0);
        uv_listen((uv_stream_t *)&srv, 1024, on_conn);
        uv_tcp_getsockname(&srv, (struct sockaddr *)&got, &len);
        port = ntohs(((struct sockaddr_in *)&got)->sin_port);
        if (write(fds[1], &port, sizeof(port)) != sizeof(port))
            _exit(1);
        uv_run(&loop, UV_RUN_DEFAULT);
        _exit(0);
    }
    if (read(fds[0], &port, sizeof(port)) != sizeof(port))
        port = -1;
    close(fds[0]);
    close(fds[1]);
    return port;
}

/* -- the client ----------------------------------------------------------------- */

typedef struct run {
    eddy_tools *h;
    eddy_tool *t;
    json_t *args;
    long total, started, done, failed;
    char first_error[256];
} run;

static void on_done(eddy_tool_result *r, void *ud);

static void start_one(run *b)
{
    eddy_err e;
    b->started++;
    if (eddy_tool_call(b->h, b->t, b->args, NULL, on_done, b, &e)) {
        b->failed++;
        b->done++;
        snprintf(b->first_error, sizeof(b->first_error), "%s", e.msg);
    }
}

static void on_done(eddy_tool_result *r, void *ud)
{
    run *b = ud;
    b->done++;
    if (r->status && !b->failed++)
        snprintf(b->first_error, sizeof(b->first_error), "%s", r->err.msg);
    if (b->started < b->total)
        start_one(b);
}

static double thread_cpu_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static double proc_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 + ru.ru_utime.tv_usec +
           ru.ru_stime.tv_usec;
}

static double wall_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Run B->total calls of T with ARGS, IN_FLIGHT at a time; CPU per call in
 * microseconds (THREAD: this thread's clock, else the process's). */
static double measure(uv_loop_t *loop, run *b, long in_flight, int thread, double *rate)
{
    double c0 = thread ? thread_cpu_us() : proc_cpu_us(), t0 = wall_s();
    for (long i = 0; i < in_flight && b->started < b->total; i++)
        start_one(b);
    while (b->done < b->total)
        uv_run(loop, UV_RUN_ONCE);
    *rate = (double)b->total / (wall_s() - t0);
    return ((thread ? thread_cpu_us() : proc_cpu_us()) - c0) / (double)b->total;
}

#define ROUNDS 3

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v)
{
    double s[ROUNDS];
    memcpy(s, v, sizeof(s));
    qsort(s, ROUNDS, sizeof(double), cmp_double);
    return s[ROUNDS / 2];
}

static double lo(const double *v)
{
    double m = v[0];
    for (int i = 1; i < ROUNDS; i++)
        m = v[i] < m ? v[i] : m;
    return m;
}

static double hi(const double *v)
{
    double m = v[0];
    for (int i = 1; i < ROUNDS; i++)
        m = v[i] > m ? v[i] : m;
    return m;
}

/* Run the floor program once; its CPU per request (from its output line), or -1. */
static double run_floor(const char *path, const char *url, long n, long c, double *rate)
{
    char cmd[1400], line[512];
    double us = -1;
    FILE *p;
    *rate = 0;
    snprintf(cmd, sizeof(cmd), "'%s' '%s' %ld %ld", path, url, n, c);
    if (!(p = popen(cmd, "r")))
        return -1;
    while (fgets(line, sizeof(line), p)) {
        const char *x = strstr(line, " in flight, ");
        if (x && sscanf(x, " in flight, %lf us CPU per request (user+sys), %lf", &us, rate) != 2)
            us = -1;
    }
    if (pclose(p) != 0)
        us = -1;
    return us;
}

static const char *write_tool(const char *dir, const char *name, const char *src)
{
    static char path[2][512];
    static int which;
    char *p = path[which++ % 2];
    FILE *f;
    snprintf(p, sizeof(path[0]), "%s/%s", dir, name);
    if (!(f = fopen(p, "w")))
        return NULL;
    fputs(src, f);
    fclose(f);
    return p;
}

int main(int argc, char **argv)
{
    long calls = 200000, requests = 20000, in_flight = 50;
    char floor_path[1024], dir[] = "/tmp/eddy-bench-tools-XXXXXX", url[128], allow[256];
    uv_loop_t loop;
    eddy_tools *h;
    eddy_tool *trivial, *web;
    eddy_tool_opts o;
    eddy_err e;
    pid_t server;
    int port;
    double rate, t_us[ROUNDS], t_rate[ROUNDS], h_us[ROUNDS], h_rate[ROUNDS], f_us[ROUNDS],
        f_rate[ROUNDS];
    long failed = 0;
    snprintf(floor_path, sizeof(floor_path), "%s/bench_tools_floor", dirname(strdup(argv[0])));
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--calls"))
            calls = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--requests"))
            requests = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--in-flight"))
            in_flight = strtol(argv[i + 1], NULL, 10);
        else if (!strcmp(argv[i], "--floor"))
            snprintf(floor_path, sizeof(floor_path), "%s", argv[i + 1]);
    }
    eddy_alloc_install();
    if (eddy_tools_register_builtins() || !mkdtemp(dir))
        return 1;
    if ((port = serve(&server)) <= 0)
        return 1;
    uv_loop_init(&loop);
    if (eddy_tools_new(&loop, dir, &h, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    if (eddy_tools_load(h,
                        write_tool(dir, "trivial.lua",
                                   "return eddy.tool { name = 'trivial', description = 'x',\n"
                                   "  params = { x = 'integer' },\n"
                                   "  run = function(a) return a.x end }\n"),
                        NULL, &trivial, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    snprintf(allow, sizeof(allow),
             "{\"allow\":[{\"host\":\"127.0.0.1\",\"port\":%d}],\"max_redirects\":5,"
             "\"max_response\":1048576,\"timeout_ms\":10000}",
             port);
    memset(&o, 0, sizeof(o));
    o.http = json_loads(allow, 0, NULL);
    if (eddy_tools_load_opts(h,
                             write_tool(dir, "web.lua",
                                        "return eddy.tool { name = 'web', description = 'x',\n"
                                        "  params = { url = 'string' },\n"
                                        "  run = function(a) return eddy.http.get(a.url).status "
                                        "end }\n"),
                             &o, &web, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/x", port);

    printf("bench/tools: one worker loop, %ld calls in flight, medians of %d rounds [min-max]\n",
           in_flight, ROUNDS);
    run warm = {h, trivial, json_pack("{s:i}", "x", 1), 2000, 0, 0, 0, ""};
    measure(&loop, &warm, in_flight, 1, &rate);
    for (int r = 0; r < ROUNDS; r++) {
        run tb = {h, trivial, warm.args, calls, 0, 0, 0, ""};
        t_us[r] = measure(&loop, &tb, in_flight, 1, &t_rate[r]);
        failed += tb.failed;
        if (tb.failed)
            fprintf(stderr, "bench: trivial call failed: %s\n", tb.first_error);
    }
    run hw = {h, web, json_pack("{s:s}", "url", url), 500, 0, 0, 0, ""};
    measure(&loop, &hw, in_flight, 0, &rate);
    for (int r = 0; r < ROUNDS; r++) {
        run hb = {h, web, hw.args, requests, 0, 0, 0, ""};
        h_us[r] = measure(&loop, &hb, in_flight, 0, &h_rate[r]);
        failed += hb.failed;
        if (hb.failed)
            fprintf(stderr, "bench: HTTP call failed: %s\n", hb.first_error);
        f_us[r] = run_floor(floor_path, url, requests, in_flight, &f_rate[r]);
    }
    printf("  trivial Lua tool call:   %6.2f us [%.2f-%.2f] worker CPU per call (goal <= 5 us), "
           "%.0f calls/s\n",
           median(t_us), lo(t_us), hi(t_us), median(t_rate));
    printf("  HTTP GET from Lua:       %6.1f us [%.1f-%.1f] CPU per request (one tool call with "
           "one eddy.http.get), %.0f requests/s\n",
           median(h_us), lo(h_us), hi(h_us), median(h_rate));
    printf("  bare curl multi (floor): %6.1f us [%.1f-%.1f] CPU per request (%s), %.0f "
           "requests/s\n",
           median(f_us), lo(f_us), hi(f_us), floor_path, median(f_rate));
    printf("  MCP tool over stdio:     measured by the MCP bench (not here)\n");

    eddy_tools_close(h);
    uv_run(&loop, UV_RUN_DEFAULT);
    eddy_tools_free(h);
    uv_loop_close(&loop);
    kill(server, SIGTERM);
    waitpid(server, NULL, 0);
    json_decref(o.http);
    json_decref(warm.args);
    json_decref(hw.args);
    unlink(write_tool(dir, "trivial.lua", ""));
    unlink(write_tool(dir, "web.lua", ""));
    rmdir(dir);
    return failed != 0;
}
