/*
 * bench/traces/bench.c - the trace store (trace/store.c, trace/read.c) with
 * 1,000,000 spans: 250,000 runs of 4 spans each (a run, two LLM calls, a
 * tool call), over 7 days, 3 agents, 20,000 keys, 2 models, 3 tools, 5 %
 * failed, each run's event and output a dozen words from a 5,000-word
 * vocabulary (the search index).
 *
 * Prints, for the goals (the trace list with two filters, and a
 * full-text search, each <= 100 ms; the cost of writing a span on the
 * worker):
 *  (a) eddy_trace_query (what `eddy trace list` and /api/traces run), the
 *      newest 50 rows: agent + status; key + since; a word of the outputs;
 *      a word + an agent; model + min tokens; then eddy_trace_get_json of
 *      one run; each the median [min-max] of 7 calls (own connection each,
 *      as the CLI and the HTTP server do);
 *  (b) a span's cost on the thread that makes it: start, 14 attributes as
 *      a chat span has them (with a 1 KB message), end (the hand-over to
 *      the writer), per span, over 100,000 spans; and the writer's rate.
 *
 * The fill goes straight into the store's schema with SQLite (the store
 * creates it) and is kept (PATH.filled), reused by the next run.
 *
 *   bench_traces [--path FILE] [--runs N] [--refill]
 */
#include <jansson.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uv.h>

#include "eddy/buf.h"
#include "eddy/trace.h"

static long g_runs = 250000;

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_traces: %s: %s\n", what, msg);
    exit(1);
}

static uint64_t rnd_state = 88172645463325252ull;
static uint64_t rnd(void)
{
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static void word(char *out, size_t n, uint64_t i)
{
    static const char *const syl[] = {"ka", "lo", "mi", "nu", "ra", "se", "ti", "vo", "ze", "qu"};
    snprintf(out, n, "%s%s%s%s", syl[i % 10], syl[(i / 10) % 10], syl[(i / 100) % 10],
             syl[(i / 1000) % 10]);
}

static void sentence(eddy_buf *b, int words)
{
    char w[16];
    for (int i = 0; i < words; i++) {
        word(w, sizeof(w), rnd() % 5000);
        eddy_buf_printf(b, "%s%s", i ? " " : "", w);
    }
}

static void exec(sqlite3 *db, const char *sql)
{
    char *e = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK)
        die(sql, e);
}

static void fill(const char *path, int refill)
{
    char marker[1100], want[64], have[64] = "";
    snprintf(marker, sizeof(marker), "%s.filled", path);
    snprintf(want, sizeof(want), "%ld runs x 4 spans\n", g_runs);
    FILE *m = fopen(marker, "r");
    if (m) {
        if (!fgets(have, sizeof(have), m))
            have[0] = 0;
        fclose(m);
    }
    if (!refill && !strcmp(have, want)) {
        struct stat st;
        stat(path, &st);
        printf("fill: reusing %s (%ld runs, %.0f MB)\n", path, g_runs, (double)st.st_size / 1e6);
        return;
    }
    char cmd[2400];
    snprintf(cmd, sizeof(cmd), "rm -f '%s' '%s-wal' '%s-shm' '%s'", path, path, path, marker);
    if (system(cmd))
        die(path, "cannot remove the old store");
    eddy_trace_store *s;
    eddy_err e;
    eddy_trace_opts keep = {.sample = 1}; /* no retention while filling */
    if (eddy_trace_store_open(path, &keep, &s, &e))
        die(path, e.msg);
    eddy_trace_store_close(s);
    sqlite3 *db;
    sqlite3_stmt *tr, *sp;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die(path, sqlite3_errmsg(db));
    exec(db, "PRAGMA synchronous=OFF");
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO traces(trace_id, name, agent, key, event_id, status, error,"
                           " start_ns, end_ns, input_tokens, output_tokens, cost, llm_calls,"
                           " tool_calls, turns, models, tools, input, output, summary)"
                           " VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,2,1,2,?13,?14,?15,?16,"
                           "'{}')",
                           -1, &tr, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "INSERT INTO spans(trace_id, span_id, parent_id, name, kind, start_ns,"
                           " end_ns, status, error, attributes) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,"
                           "?10)",
                           -1, &sp, NULL) != SQLITE_OK)
        die("prepare", sqlite3_errmsg(db));
    static const char *const agents[] = {"support", "triage", "billing"};
    static const char *const models[] = {"gpt-4o-mini", "claude-haiku"};
    static const char *const tools[] = {"lookup_order", "refund", "search_kb"};
    uint64_t now = (uint64_t)time(NULL) * 1000000000ull, span7d = 7ull * 86400 * 1000000000ull;
    uint64_t t0 = uv_hrtime();
    exec(db, "BEGIN");
    for (long i = 0; i < g_runs; i++) {
        char tid[33], sid[17], key[32], ev[32];
        uint64_t start = now - span7d + (uint64_t)i * (span7d / (uint64_t)g_runs);
        uint64_t dur = 200000000 + rnd() % 3000000000ull;
        int failed = rnd() % 20 == 0;
        const char *agent = agents[i % 3], *model = models[rnd() % 2], *tool = tools[rnd() % 3];
        eddy_buf in, out;
        eddy_buf_init(&in);
        eddy_buf_init(&out);
        sentence(&in, 12);
        sentence(&out, 12);
        snprintf(tid, sizeof(tid), "%012llx%020llx", (unsigned long long)(start / 1000000),
                 (unsigned long long)(rnd() & 0xffffffffffffull));
        snprintf(key, sizeof(key), "user-%05llu", (unsigned long long)(rnd() % 20000));
        snprintf(ev, sizeof(ev), "ev-%ld", i);
        long itok = 200 + (long)(rnd() % 3000), otok = 20 + (long)(rnd() % 400);
        sqlite3_bind_text(tr, 1, tid, -1, SQLITE_TRANSIENT);
        char name[64];
        snprintf(name, sizeof(name), "invoke_agent %s", agent);
        sqlite3_bind_text(tr, 2, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(tr, 3, agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(tr, 4, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(tr, 5, ev, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(tr, 6, failed ? "error" : "ok", -1, SQLITE_STATIC);
        if (failed)
            sqlite3_bind_text(tr, 7, "LLM call failed: 503", -1, SQLITE_STATIC);
        else
            sqlite3_bind_null(tr, 7);
        sqlite3_bind_int64(tr, 8, (sqlite3_int64)start);
        sqlite3_bind_int64(tr, 9, (sqlite3_int64)(start + dur));
        sqlite3_bind_int64(tr, 10, itok);
        sqlite3_bind_int64(tr, 11, otok);
        sqlite3_bind_double(tr, 12, (double)itok * 1.5e-7 + (double)otok * 6e-7);
        sqlite3_bind_text(tr, 13, model, -1, SQLITE_STATIC);
        sqlite3_bind_text(tr, 14, tool, -1, SQLITE_STATIC);
        sqlite3_bind_text(tr, 15, in.data, (int)in.len, SQLITE_TRANSIENT);
        sqlite3_bind_text(tr, 16, out.data, (int)out.len, SQLITE_TRANSIENT);
        if (sqlite3_step(tr) != SQLITE_DONE)
            die("fill", sqlite3_errmsg(db));
        sqlite3_reset(tr);
        char root[17] = "";
        for (int k = 0; k < 4; k++) {
            char sname[80], attrs[600];
            snprintf(sid, sizeof(sid), "%016llx", (unsigned long long)rnd());
            snprintf(sname, sizeof(sname), "%s",
                     k == 0   ? name
                     : k == 2 ? "execute_tool t"
                              : "chat m");
            snprintf(attrs, sizeof(attrs),
                     "{\"gen_ai.operation.name\":\"%s\",\"gen_ai.request.model\":\"%s\","
                     "\"gen_ai.usage.input_tokens\":%ld,\"gen_ai.usage.output_tokens\":%ld,"
                     "\"gen_ai.input.messages\":[{\"role\":\"user\",\"parts\":[{\"type\":\"text\","
                     "\"content\":\"%.200s\"}]}]}",
                     k == 2 ? "execute_tool" : "chat", model, itok / 2, otok / 2, in.data);
            sqlite3_bind_text(sp, 1, tid, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(sp, 2, sid, -1, SQLITE_TRANSIENT);
            if (k)
                sqlite3_bind_text(sp, 3, root, -1, SQLITE_TRANSIENT);
            else
                sqlite3_bind_null(sp, 3);
            sqlite3_bind_text(sp, 4, sname, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(sp, 5, k == 1 || k == 3 ? 3 : 1);
            sqlite3_bind_int64(sp, 6, (sqlite3_int64)(start + (uint64_t)k * dur / 5));
            sqlite3_bind_int64(sp, 7, (sqlite3_int64)(start + (uint64_t)(k + 1) * dur / 5));
            sqlite3_bind_text(sp, 8, "ok", -1, SQLITE_STATIC);
            sqlite3_bind_null(sp, 9);
            sqlite3_bind_text(sp, 10, attrs, -1, SQLITE_TRANSIENT);
            if (sqlite3_step(sp) != SQLITE_DONE)
                die("fill", sqlite3_errmsg(db));
            sqlite3_reset(sp);
            if (!k)
                memcpy(root, sid, 17);
        }
        eddy_buf_free(&in);
        eddy_buf_free(&out);
        if (i % 50000 == 49999)
            exec(db, "COMMIT; BEGIN");
    }
    exec(db, "COMMIT");
    sqlite3_finalize(tr);
    sqlite3_finalize(sp);
    /* the search index, as the writer builds it (once per commit there) */
    exec(db, "INSERT INTO trace_text(rowid, input, output) SELECT id, input, output FROM traces;"
             "INSERT OR REPLACE INTO meta SELECT 'search_indexed', max(id) FROM traces;"
             "PRAGMA wal_checkpoint(TRUNCATE)");
    sqlite3_close(db);
    struct stat st;
    stat(path, &st);
    printf("fill: %ld runs, %ld spans in %.1f s (%.0f MB)\n", g_runs, g_runs * 4,
           (double)(uv_hrtime() - t0) / 1e9, (double)st.st_size / 1e6);
    if ((m = fopen(marker, "w"))) {
        fputs(want, m);
        fclose(m);
    }
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void timed(const char *what, const char *path, const eddy_trace_filter *f)
{
    double v[7];
    size_t rows = 0;
    for (int i = 0; i < 7; i++) {
        json_t *r;
        eddy_err e;
        uint64_t t0 = uv_hrtime();
        if (eddy_trace_query(path, f, &r, &e))
            die(what, e.msg);
        v[i] = (double)(uv_hrtime() - t0) / 1e6;
        rows = json_array_size(r);
        json_decref(r);
    }
    qsort(v, 7, sizeof(double), cmp_d);
    printf("  %-34s %7.2f ms  [%.2f-%.2f]  (%zu rows)\n", what, v[3], v[0], v[6], rows);
}

static void queries(const char *path)
{
    char w[16];
    word(w, sizeof(w), 1234);
    int64_t day = (int64_t)time(NULL) * 1000000000 - 86400ll * 1000000000;
    printf("(a) eddy_trace_query, the newest 50 (median [min-max] of 7, own connection each)\n");
    eddy_trace_filter f1 = {.agent = "billing", .status = "error", .limit = 50};
    timed("agent + status", path, &f1);
    eddy_trace_filter f2 = {.key = "user-01234", .since_ns = day, .limit = 50};
    timed("key + since (1 day)", path, &f2);
    eddy_trace_filter f3 = {.search = w, .limit = 50};
    timed("search (one word)", path, &f3);
    eddy_trace_filter f4 = {.search = w, .agent = "triage", .limit = 50};
    timed("search + agent", path, &f4);
    eddy_trace_filter f5 = {.model = "claude-haiku", .min_tokens = 3000, .limit = 50};
    timed("model + min tokens", path, &f5);
    eddy_trace_filter f6 = {.status = "error", .tool = "refund", .search = w, .limit = 50};
    timed("status + tool + search", path, &f6);
    json_t *r, *t;
    eddy_err e;
    eddy_trace_filter one = {.limit = 1};
    if (eddy_trace_query(path, &one, &r, &e) || !json_array_size(r))
        die("query", "no run");
    const char *id = json_string_value(json_object_get(json_array_get(r, 0), "trace_id"));
    double v[7];
    for (int i = 0; i < 7; i++) {
        uint64_t t0 = uv_hrtime();
        if (eddy_trace_get_json(path, id, &t, &e))
            die("get", e.msg);
        v[i] = (double)(uv_hrtime() - t0) / 1e6;
        json_decref(t);
    }
    qsort(v, 7, sizeof(double), cmp_d);
    printf("  %-34s %7.2f ms  [%.2f-%.2f]\n", "one run with its spans (by id)", v[3], v[0], v[6]);
    for (int i = 0; i < 7; i++) {
        uint64_t t0 = uv_hrtime();
        if (eddy_trace_get_json(path, id + 22, &t, &e)) /* its last 10 digits */
            die("get by suffix", e.msg);
        v[i] = (double)(uv_hrtime() - t0) / 1e6;
        json_decref(t);
    }
    qsort(v, 7, sizeof(double), cmp_d);
    printf("  %-34s %7.2f ms  [%.2f-%.2f]\n", "the same by its last 10 digits", v[3], v[0], v[6]);
    json_decref(r);
}

/* (b): spans made on this thread into a fresh store. */
static void span_cost(const char *dir)
{
    char path[1200];
    enum { N = 100000 };
    snprintf(path, sizeof(path), "%s/spans.db", dir);
    char cmd[2600];
    snprintf(cmd, sizeof(cmd), "rm -f '%s' '%s-wal' '%s-shm'", path, path, path);
    if (system(cmd))
        die(path, "cannot remove");
    eddy_trace_store *s;
    eddy_err e;
    if (eddy_trace_store_open(path, NULL, &s, &e))
        die(path, e.msg);
    char msg[1100];
    memset(msg, 'x', 1024);
    memcpy(msg, "[{\"role\":\"user\",\"parts\":[{\"type\":\"text\",\"content\":\"", 52);
    memcpy(msg + 1024 - 6, "\"}]}]", 6);
    uint64_t own = 0, t0 = uv_hrtime();
    eddy_span *root = NULL;
    for (int i = 0; i < N; i++) {
        uint64_t a = uv_hrtime();
        if (i % 4 == 0)
            root = eddy_span_start(s, NULL, "invoke_agent support", EDDY_SPAN_INTERNAL);
        eddy_span *sp = eddy_span_start(s, root, "chat gpt-4o-mini", EDDY_SPAN_CLIENT);
        eddy_span_set_str(sp, "gen_ai.operation.name", "chat");
        eddy_span_set_str(sp, "gen_ai.provider.name", "openai");
        eddy_span_set_str(sp, "gen_ai.request.model", "gpt-4o-mini");
        eddy_span_set_str(sp, "gen_ai.conversation.id", "user-01234");
        eddy_span_set_str(sp, "openinference.span.kind", "LLM");
        eddy_span_set_int(sp, "eddy.turn", 1);
        eddy_span_set_raw(sp, "gen_ai.input.messages", msg, 1024);
        eddy_span_set_int(sp, "eddy.llm.attempts", 1);
        eddy_span_set_str(sp, "gen_ai.response.id", "chatcmpl-123");
        eddy_span_set_int(sp, "gen_ai.usage.input_tokens", 1234);
        eddy_span_set_int(sp, "gen_ai.usage.output_tokens", 56);
        eddy_span_set_int(sp, "llm.token_count.prompt", 1234);
        eddy_span_set_int(sp, "llm.token_count.completion", 56);
        eddy_span_set_str(sp, "eddy.llm.content", "Your order shipped on Tuesday.");
        eddy_span_end(sp, NULL);
        if (i % 4 == 3)
            eddy_span_end(root, NULL);
        own += uv_hrtime() - a;
    }
    uint64_t made = uv_hrtime() - t0;
    eddy_trace_store_close(s); /* waits for the writer */
    uint64_t all = uv_hrtime() - t0;
    printf("(b) spans on the caller's thread: %.2f us a span (start, 14 attributes with a 1 KB "
           "message, end)\n    the writer stored %d spans in %.2f s after the first (%.0f spans/s; "
           "the caller was done after %.2f s)\n",
           (double)own / N / 1e3, N + N / 4, (double)all / 1e9, (N + N / 4) / ((double)all / 1e9),
           (double)made / 1e9);
}

int main(int argc, char **argv)
{
    const char *path = "/tmp/eddy-bench-traces/traces.db";
    int refill = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    eddy_alloc_install();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--refill"))
            refill = 1;
        else if (!strcmp(argv[i], "--path") && i + 1 < argc)
            path = argv[++i];
        else if (!strcmp(argv[i], "--runs") && i + 1 < argc && atol(argv[i + 1]) > 0)
            g_runs = atol(argv[++i]);
        else
            die(argv[i], "unknown option (--path FILE, --runs N, --refill)");
    }
    char dir[1100];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        mkdir(dir, 0755);
    } else {
        snprintf(dir, sizeof(dir), ".");
    }
    printf("bench/traces: %ld runs x 4 spans\n", g_runs);
    fill(path, refill);
    queries(path);
    span_cost(dir);
    return 0;
}
