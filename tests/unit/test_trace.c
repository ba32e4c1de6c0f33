/* tests/unit/test_trace.c - span ids: unique, well formed, never zero, from any thread, and
 * without a getrandom per span (this binary interposes getrandom to count the calls); trace
 * ids in time order; the attributes column. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/trace.h"

static char g_dir[64];

static int tmpdir_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/eddy-unit-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int tmpdir_teardown(void **state)
{
    char cmd[100];
    (void)state;
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Every getrandom of the process (eddy's, and the libraries') lands here:
 * the definition in the executable wins over libc's. Counted per thread. */
static _Thread_local long tl_getrandom;
static atomic_long g_getrandom;

ssize_t getrandom(void *buf, size_t n, unsigned int flags)
{
    tl_getrandom++;
    atomic_fetch_add(&g_getrandom, 1);
    return syscall(SYS_getrandom, buf, n, flags);
}

enum { THREADS = 4, PER_THREAD = 25000, PER_TRACE = 10 };

typedef struct ids {
    eddy_trace_store *store;
    char (*span)[17];   /* PER_THREAD span ids */
    char (*trace)[33];  /* the trace id of each span */
    char (*parent)[17]; /* its parent's span id ("" for roots) */
    long getrandom_calls;
    int failed;
} ids;

/* Start PER_THREAD spans in traces of PER_TRACE (a root and its children),
 * keep their ids, end them all (the store writes them). */
static void *start_spans(void *arg)
{
    ids *t = arg;
    eddy_span *root = NULL;
    long before = tl_getrandom;
    for (int i = 0; i < PER_THREAD; i++) {
        int is_root = i % PER_TRACE == 0;
        if (is_root) {
            eddy_span_end(root, NULL);
            root = NULL;
        }
        eddy_span *sp = eddy_span_start(t->store, root, is_root ? "run" : "step",
                                        is_root ? EDDY_SPAN_SERVER : EDDY_SPAN_CLIENT);
        if (!sp) {
            t->failed = 1;
            break;
        }
        snprintf(t->span[i], sizeof(t->span[i]), "%s", eddy_span_id(sp));
        snprintf(t->trace[i], sizeof(t->trace[i]), "%s", eddy_span_trace_id(sp));
        snprintf(t->parent[i], sizeof(t->parent[i]), "%s", root ? eddy_span_id(root) : "");
        if (is_root)
            root = sp;
        else
            eddy_span_end(sp, NULL);
    }
    eddy_span_end(root, NULL);
    t->getrandom_calls = tl_getrandom - before;
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void assert_id(const char *id, size_t len)
{
    int nonzero = 0;
    assert_int_equal(strlen(id), len);
    for (size_t i = 0; i < len; i++) {
        assert_true((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f'));
        nonzero |= id[i] != '0';
    }
    assert_true(nonzero);
}

/* Sorted copies of N ids of SIZE bytes: no two alike. */
static void assert_unique(const void *v, size_t n, size_t size)
{
    char *sorted = malloc(n * size);
    assert_non_null(sorted);
    memcpy(sorted, v, n * size);
    qsort(sorted, n, size, cmp_str);
    for (size_t i = 1; i < n; i++)
        assert_string_not_equal(sorted + (i - 1) * size, sorted + i * size);
    free(sorted);
}

static long long count(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long n;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

/* 100k spans from four threads at once: every id is lowercase hex of the
 * right length and not all zeros, span ids never repeat, each trace has its
 * own id and its children carry it; each thread asks the OS for randomness
 * at most once (the seed), not once per span as it used to. */
static void test_ids_from_threads(void **state)
{
    enum { N = THREADS * PER_THREAD };
    char path[512];
    eddy_trace_store *s;
    eddy_err e;
    pthread_t th[THREADS];
    ids t[THREADS];
    char(*span)[17] = calloc(N, 17), (*parent)[17] = calloc(N, 17);
    char(*trace)[33] = calloc(N, 33), (*roots)[33] = calloc(N / PER_TRACE, 33);
    (void)state;
    assert_true(span && parent && trace && roots);
    snprintf(path, sizeof(path), "%s/traces.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, NULL, &s, &e), 0);
    for (int i = 0; i < THREADS; i++) {
        t[i] = (ids){.store = s,
                     .span = span + i * PER_THREAD,
                     .trace = trace + i * PER_THREAD,
                     .parent = parent + i * PER_THREAD};
        assert_int_equal(pthread_create(&th[i], NULL, start_spans, &t[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    eddy_trace_store_close(s);
    for (int i = 0; i < THREADS; i++) {
        assert_false(t[i].failed);
        assert_in_range(t[i].getrandom_calls, 0, 1);
    }

    int nroots = 0;
    for (int i = 0; i < N; i++) {
        assert_id(span[i], 16);
        assert_id(trace[i], 32);
        if (!parent[i][0]) {
            memcpy(roots[nroots++], trace[i], 33);
        } else {
            assert_id(parent[i], 16);
            assert_string_equal(trace[i], trace[i - i % PER_TRACE]); /* the root's */
            assert_string_equal(parent[i], span[i - i % PER_TRACE]);
        }
    }
    assert_int_equal(nroots, N / PER_TRACE);
    assert_unique(span, N, 17);
    assert_unique(roots, (size_t)nroots, 33);

    /* and the store has every one of them */
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(count(db, "SELECT count(*) FROM spans"), N);
    assert_int_equal(count(db, "SELECT count(*) FROM traces"), 0); /* no summaries given */
    sqlite3_close(db);
    free(span);
    free(parent);
    free(trace);
    free(roots);
}

/* On a thread that has started spans before, more spans make no getrandom
 * at all (not a store: NULL, so nothing is written). */
static void test_no_getrandom_per_span(void **state)
{
    (void)state;
    eddy_span_end(eddy_span_start(NULL, NULL, "seed", EDDY_SPAN_INTERNAL), NULL);
    long before = atomic_load(&g_getrandom);
    for (int i = 0; i < 10000; i++) {
        eddy_span *root = eddy_span_start(NULL, NULL, "run", EDDY_SPAN_SERVER);
        eddy_span *child = eddy_span_start(NULL, root, "step", EDDY_SPAN_CLIENT);
        assert_non_null(root);
        assert_non_null(child);
        eddy_span_end(child, NULL);
        eddy_span_end(root, NULL);
    }
    assert_int_equal(atomic_load(&g_getrandom) - before, 0);
}

/* The attributes column: one JSON object with every attribute set, as
 * text; a key set again keeps its last value, once; a NULL value, a string
 * of invalid UTF-8 and a json_t that cannot be written are dropped; keys and
 * strings are escaped. Trace ids begin with the time in milliseconds. */
static void test_attributes_and_time_ordered_ids(void **state)
{
    char path[512];
    eddy_trace_store *s;
    eddy_err e;
    (void)state;
    snprintf(path, sizeof(path), "%s/attrs.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, NULL, &s, &e), 0);
    uint64_t before_ms = eddy_wall_ns() / 1000000u;
    eddy_span *sp = eddy_span_start(s, NULL, "chat m", EDDY_SPAN_CLIENT);
    assert_non_null(sp);
    eddy_span_set_str(sp, "a", "x");
    eddy_span_set_int(sp, "n", -42);
    eddy_span_set_str(sp, "a", "y \"quoted\"\n\x01"); /* again: the last value wins */
    eddy_span_set_str(sp, "bad", "\xff\xfe");         /* invalid UTF-8: dropped */
    eddy_span_set_str(sp, "null", NULL);              /* dropped */
    eddy_span_set(sp, "list", json_pack("[i, s, {s: b}]", 1, "two", "t", 1));
    eddy_span_set(sp, "n", json_real(1.5));             /* again, another type */
    eddy_span_set(sp, "k\"\\ey/\xc3\xa9", json_true()); /* an escaped key */
    eddy_span_set(sp, "none", NULL);                    /* dropped */
    char tid[33];
    memcpy(tid, eddy_span_trace_id(sp), 33);
    eddy_span *empty = eddy_span_start(s, sp, "no attributes", EDDY_SPAN_INTERNAL);
    eddy_span_end(empty, NULL);
    eddy_span_end(sp, NULL);
    uint64_t after_ms = eddy_wall_ns() / 1000000u;
    eddy_trace_store_close(s);

    unsigned long long ms = strtoull((char[13]){tid[0], tid[1], tid[2], tid[3], tid[4], tid[5],
                                                tid[6], tid[7], tid[8], tid[9], tid[10], tid[11]},
                                     NULL, 16);
    assert_in_range(ms, before_ms, after_ms);

    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(
        sqlite3_prepare_v2(db, "SELECT name, attributes FROM spans ORDER BY name", -1, &st, NULL),
        SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "chat m");
    json_error_t je;
    json_t *got = json_loads((const char *)sqlite3_column_text(st, 1), 0, &je);
    assert_non_null(got);
    json_t *want = json_pack("{s:s, s:[i, s, {s: b}], s:f, s:b}", "a", "y \"quoted\"\n\x01", "list",
                             1, "two", "t", 1, "n", 1.5, "k\"\\ey/\xc3\xa9", 1);
    assert_true(json_equal(got, want));
    assert_int_equal(json_object_size(got), 4);
    /* each key once in the text itself (a parser would hide a repeat) */
    const char *text = (const char *)sqlite3_column_text(st, 1);
    assert_null(strstr(strstr(text, "\"a\":") + 1, "\"a\":"));
    assert_null(strstr(strstr(text, "\"n\":") + 1, "\"n\":"));
    json_decref(got);
    json_decref(want);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 1), "{}");
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* -- the store: version 2 ------------------------------------------------------ */

static long long count_at(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    long long n = count(db, sql);
    sqlite3_close(db);
    return n;
}

static void exec_at(const char *path, const char *sql)
{
    sqlite3 *db;
    char *e = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK)
        fail_msg("%s: %s", sql, e);
    sqlite3_close(db);
}

/* One run: a root span with a summary (INPUT, OUTPUT as its texts), a child
 * with PAD bytes of attributes; the child or the root failed when asked. */
static void one_run(eddy_trace_store *s, const char *key, const char *input, const char *output,
                    int child_fails, int root_fails, size_t pad, char tid[33])
{
    eddy_span *root = eddy_span_start(s, NULL, "invoke_agent a", EDDY_SPAN_SERVER);
    eddy_span *c = eddy_span_start(s, root, "chat m", EDDY_SPAN_CLIENT);
    assert_non_null(root);
    assert_non_null(c);
    if (tid)
        memcpy(tid, eddy_span_trace_id(root), 33);
    if (pad) {
        char *big = malloc(pad + 1);
        memset(big, 'p', pad);
        big[pad] = 0;
        eddy_span_set_str(c, "eddy.llm.content", big);
        free(big);
    }
    if (child_fails)
        eddy_span_error(c, "tool_error", "the tool failed");
    eddy_span_end(c, NULL);
    if (root_fails)
        eddy_span_error(root, "EDDY_ELLM", "the run failed");
    json_t *sum = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s], s:[s,s], s:f}", "agent", "a", "key",
                            key, "event_id", key, "input", input, "output", output, "models", "m",
                            "tools", "t1", "t2", "cost", 0.25);
    eddy_span_end(root, sum);
    json_decref(sum);
}

/* The trace row carries what the list filters on, and the full-text index
 * finds a run by a word of its input or its output (any case, accents
 * folded), not by one it does not hold. */
static void test_trace_row_and_search(void **state)
{
    char path[512], tid[33], sql[256];
    eddy_trace_store *s;
    eddy_err e;
    (void)state;
    snprintf(path, sizeof(path), "%s/v2.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, NULL, &s, &e), 0);
    one_run(s, "k1", "{\"text\": \"Where is my Parcel?\"}", "It is in Zürich.", 0, 0, 0, tid);
    one_run(s, "k2", "{\"text\": \"hello\"}", "bonjour", 0, 1, 0, NULL);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces"), 2);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans"), 4);
    assert_int_equal(count_at(path, "SELECT value FROM meta WHERE key='schema_version'"), 2);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM traces WHERE trace_id='%s' AND key='k1' AND status='ok' AND "
             "models='m' AND tools='t1,t2' AND cost=0.25",
             tid);
    assert_int_equal(count_at(path, sql), 1);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces WHERE status='error' AND "
                                    "error='the run failed' AND key='k2'"),
                     1);
    snprintf(sql, sizeof(sql),
             "SELECT count(*) FROM traces WHERE trace_id='%s' AND id IN (SELECT rowid FROM "
             "trace_text WHERE trace_text MATCH 'parcel')",
             tid);
    assert_int_equal(count_at(path, sql), 1);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'zurich'"),
                     1);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'output:bonjour'"),
                     1);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'absent'"),
                     0);
}

/* A version-1 store (no meta table, spans WITHOUT ROWID) is migrated at
 * open: every trace and span is there after, the old tables are gone, and
 * new runs are found by the search. */
static void test_migrate_v1(void **state)
{
    char path[512];
    eddy_trace_store *s;
    eddy_err e;
    (void)state;
    snprintf(path, sizeof(path), "%s/v1.db", g_dir);
    exec_at(path,
            "PRAGMA journal_mode=WAL;"
            "CREATE TABLE traces(trace_id TEXT PRIMARY KEY, name TEXT, agent TEXT, key TEXT,"
            " event_id TEXT, status TEXT, error TEXT, start_ns INTEGER, end_ns INTEGER,"
            " input_tokens INTEGER, output_tokens INTEGER, llm_calls INTEGER, tool_calls INTEGER,"
            " turns INTEGER, summary TEXT);"
            "CREATE INDEX traces_by_start ON traces(start_ns);"
            "CREATE TABLE spans(trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT,"
            " name TEXT NOT NULL, kind INTEGER NOT NULL, start_ns INTEGER NOT NULL,"
            " end_ns INTEGER NOT NULL, status TEXT NOT NULL, error TEXT, attributes TEXT NOT NULL,"
            " PRIMARY KEY(trace_id, span_id)) WITHOUT ROWID;"
            "INSERT INTO traces VALUES('0123456789abcdef0123456789abcdef', 'invoke_agent a', 'a',"
            " 'k', 'e1', 'ok', NULL, 1, 2, 10, 5, 1, 0, 1, '{\"cost\": 0.5}');"
            "INSERT INTO spans VALUES('0123456789abcdef0123456789abcdef', '0123456789abcdef',"
            " NULL, 'invoke_agent a', 2, 1, 2, 'ok', NULL, '{}');"
            "INSERT INTO spans VALUES('0123456789abcdef0123456789abcdef', '1123456789abcdef',"
            " '0123456789abcdef', 'chat m', 3, 1, 2, 'ok', NULL, '{\"x\": 1}');");
    eddy_trace_opts keep_all = {.sample = 1}; /* the old rows are years old: no retention */
    assert_int_equal(eddy_trace_store_open(path, &keep_all, &s, &e), 0);
    one_run(s, "k9", "new question", "new answer", 0, 0, 0, NULL);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces"), 2);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans"), 4);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces WHERE event_id='e1' AND "
                                    "cost=0.5 AND input_tokens=10"),
                     1);
    assert_int_equal(count_at(path,
                              "SELECT count(*) FROM spans WHERE span_id='1123456789abcdef'"
                              " AND parent_id='0123456789abcdef' AND attributes='{\"x\": 1}'"),
                     1);
    assert_int_equal(count_at(path, "SELECT count(*) FROM sqlite_master WHERE name LIKE '%_v1'"),
                     0);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'question'"),
                     1);
    /* a store from a newer eddy is refused, not misread */
    exec_at(path, "UPDATE meta SET value='3' WHERE key='schema_version'");
    assert_int_equal(eddy_trace_store_open(path, NULL, &s, &e), EDDY_ECORRUPT);
    assert_non_null(strstr(e.msg, "version 3"));
}

/* sample 0: a successful run leaves nothing; a run whose child span failed
 * and a run that failed are kept whole (root and child). */
static void test_sampling_keeps_failures(void **state)
{
    char path[512];
    eddy_trace_store *s;
    eddy_err e;
    eddy_trace_opts none = {.sample = 0};
    (void)state;
    snprintf(path, sizeof(path), "%s/sample.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, &none, &s, &e), 0);
    for (int i = 0; i < 50; i++)
        one_run(s, "ok", "in", "out", 0, 0, 0, NULL);
    one_run(s, "child-failed", "in", "out", 1, 0, 0, NULL);
    one_run(s, "run-failed", "in", "out", 0, 1, 0, NULL);
    /* a child whose root never ends (the process stopped): not written */
    eddy_span *orphan_root = eddy_span_start(s, NULL, "invoke_agent a", EDDY_SPAN_SERVER);
    eddy_span_end(eddy_span_start(s, orphan_root, "chat m", EDDY_SPAN_CLIENT), NULL);
    eddy_trace_store_close(s);
    eddy_span_discard(orphan_root); /* its store is closed: not to be ended */
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces"), 2);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans"), 4);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces WHERE key IN "
                                    "('child-failed', 'run-failed')"),
                     2);
    /* a half: about half of the successful runs */
    eddy_trace_opts half = {.sample = 0.5};
    snprintf(path, sizeof(path), "%s/half.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, &half, &s, &e), 0);
    for (int i = 0; i < 400; i++)
        one_run(s, "ok", "in", "out", 0, 0, 0, NULL);
    eddy_trace_store_close(s);
    long long kept = count_at(path, "SELECT count(*) FROM traces");
    assert_in_range(kept, 120, 280);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans"), 2 * kept);
}

/* Sampling, children that end after their root (a tool call still running
 * when its run failed or timed out, ended when the run is freed): the late
 * child of a failed run is written with it, the late child of a dropped run
 * is dropped, and neither stays held: after 100,000 of them a failed run
 * still keeps its children. */
static void test_sampling_late_children(void **state)
{
    char path[512];
    eddy_trace_store *s;
    eddy_err e;
    eddy_trace_opts none = {.sample = 0};
    (void)state;
    snprintf(path, sizeof(path), "%s/late.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, &none, &s, &e), 0);
    eddy_span *root = eddy_span_start(s, NULL, "invoke_agent a", EDDY_SPAN_SERVER);
    eddy_span *late = eddy_span_start(s, root, "execute_tool t", EDDY_SPAN_INTERNAL);
    eddy_span_error(root, "EDDY_ETIMEDOUT", "the run timed out");
    json_t *sum = json_pack("{s:s, s:s, s:s}", "agent", "a", "key", "failed", "event_id", "e");
    eddy_span_end(root, sum);
    json_decref(sum);
    eddy_span_end(late, NULL);
    for (int i = 0; i < 100001; i++) {
        eddy_span *r = eddy_span_start(s, NULL, "invoke_agent a", EDDY_SPAN_SERVER);
        eddy_span *c = eddy_span_start(s, r, "execute_tool t", EDDY_SPAN_INTERNAL);
        eddy_span_end(r, NULL);
        eddy_span_end(c, NULL);
    }
    one_run(s, "child-failed", "in", "out", 1, 0, 0, NULL);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces"), 2);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans WHERE trace_id IN (SELECT "
                                    "trace_id FROM traces WHERE key='failed')"),
                     2);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans WHERE trace_id IN (SELECT "
                                    "trace_id FROM traces WHERE key='child-failed')"),
                     2);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans"), 4);
}

/* Retention at open (and every 10 s while writing): traces and spans older
 * than max_age go, newer ones stay; beyond max_size the oldest go until the
 * store is under it, the newest stay, and the search index follows. */
static void test_retention(void **state)
{
    char path[512], sql[512];
    eddy_trace_store *s;
    eddy_err e;
    eddy_trace_opts keep_all = {.sample = 1};
    (void)state;
    snprintf(path, sizeof(path), "%s/keep.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, &keep_all, &s, &e), 0);
    for (int i = 0; i < 20; i++)
        one_run(s, "old", "old question", "old answer", 0, 0, 0, NULL);
    eddy_trace_store_close(s);
    /* make them two days old */
    long long two_days = 2ll * 86400 * 1000000000;
    snprintf(sql, sizeof(sql),
             "UPDATE traces SET start_ns = start_ns - %lld, end_ns = end_ns - %lld;"
             "UPDATE spans SET start_ns = start_ns - %lld, end_ns = end_ns - %lld;",
             two_days, two_days, two_days, two_days);
    exec_at(path, sql);
    assert_int_equal(eddy_trace_store_open(path, &keep_all, &s, &e), 0);
    for (int i = 0; i < 5; i++)
        one_run(s, "new", "new question", "new answer", 0, 0, 0, NULL);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces"), 25);
    eddy_trace_opts day = {.max_age_ms = 86400 * 1000ll, .sample = 1};
    assert_int_equal(eddy_trace_store_open(path, &day, &s, &e), 0);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces WHERE key='new'"), 5);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces WHERE key='old'"), 0);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans"), 10);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'old'"),
                     0);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'new'"),
                     5);

    /* size: 6,000 runs with 2 KB each (about 14 MB), then a bound of 4 MB */
    snprintf(path, sizeof(path), "%s/size.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, &keep_all, &s, &e), 0);
    char last[33];
    for (int i = 0; i < 6000; i++)
        one_run(s, i < 5999 ? "bulk" : "last", "question", "answer", 0, 0, 2000, last);
    eddy_trace_store_close(s);
    long long before = count_at(path, "SELECT count(*) FROM traces");
    assert_int_equal(before, 6000);
    eddy_trace_opts small = {.max_bytes = 4 << 20, .sample = 1};
    assert_int_equal(eddy_trace_store_open(path, &small, &s, &e), 0);
    eddy_trace_store_close(s);
    long long used = count_at(path, "SELECT (SELECT * FROM pragma_page_count) - "
                                    "(SELECT * FROM pragma_freelist_count)") *
                     count_at(path, "SELECT * FROM pragma_page_size");
    long long after = count_at(path, "SELECT count(*) FROM traces");
    print_message("size retention: %lld -> %lld traces, %lld bytes used\n", before, after, used);
    assert_true(used <= 4 << 20);
    assert_true(after > 0 && after < before);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM traces WHERE trace_id='%s'", last);
    assert_int_equal(count_at(path, sql), 1);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans WHERE trace_id NOT IN "
                                    "(SELECT trace_id FROM traces)"),
                     0);
    /* and the traces that stay keep all their spans (two a run) */
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces t WHERE (SELECT count(*) FROM "
                                    "spans WHERE trace_id = t.trace_id) != 2"),
                     0);
}

/* Retention that empties the traces table: SQLite numbers the next row 1
 * again (rowid tables without AUTOINCREMENT), so the mark of what the search
 * index holds must come down with it. The new runs are found by the search,
 * and deleting them later leaves the index consistent (an FTS5 'delete' of a
 * row never indexed corrupts it). The same for an age cut that takes the
 * newest row only (a long run: an old start, the highest id). */
static void test_search_after_retention_emptied(void **state)
{
    char path[512], sql[512];
    eddy_trace_store *s;
    eddy_err e;
    eddy_trace_opts keep_all = {.sample = 1};
    eddy_trace_opts day = {.max_age_ms = 86400 * 1000ll, .sample = 1};
    long long two_days = 2ll * 86400 * 1000000000;
    (void)state;
    snprintf(path, sizeof(path), "%s/emptied.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, &keep_all, &s, &e), 0);
    for (int i = 0; i < 3; i++)
        one_run(s, "old", "old question", "old answer", 0, 0, 0, NULL);
    eddy_trace_store_close(s);
    snprintf(sql, sizeof(sql),
             "UPDATE traces SET start_ns = start_ns - %lld, end_ns = end_ns - %lld;"
             "UPDATE spans SET start_ns = start_ns - %lld, end_ns = end_ns - %lld;",
             two_days, two_days, two_days, two_days);
    exec_at(path, sql);
    assert_int_equal(eddy_trace_store_open(path, &day, &s, &e), 0); /* deletes all three */
    one_run(s, "fresh", "fresh question", "fresh answer", 0, 0, 0, NULL);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces"), 1);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'fresh'"),
                     1);
    exec_at(path, "INSERT INTO trace_text(trace_text, rank) VALUES('integrity-check', 1)");

    /* the newest row goes by age, older ids stay: the next id is its again */
    assert_int_equal(eddy_trace_store_open(path, &keep_all, &s, &e), 0);
    one_run(s, "long", "long question", "long answer", 0, 0, 0, NULL);
    eddy_trace_store_close(s);
    exec_at(path, "UPDATE traces SET start_ns = start_ns - 172800000000000 WHERE key='long';"
                  "UPDATE spans SET start_ns = start_ns - 172800000000000 WHERE trace_id IN "
                  "(SELECT trace_id FROM traces WHERE key='long')");
    assert_int_equal(eddy_trace_store_open(path, &day, &s, &e), 0);
    one_run(s, "after", "after question", "after answer", 0, 0, 0, NULL);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'after'"),
                     1);
    assert_int_equal(count_at(path, "SELECT count(*) FROM trace_text WHERE trace_text MATCH "
                                    "'long'"),
                     0);
    exec_at(path, "INSERT INTO trace_text(trace_text, rank) VALUES('integrity-check', 1)");

    /* and all of them go: the index is left empty and consistent */
    exec_at(path, sql);
    assert_int_equal(eddy_trace_store_open(path, &day, &s, &e), 0);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces"), 0);
    exec_at(path, "INSERT INTO trace_text(trace_text, rank) VALUES('integrity-check', 1)");
}

/* Text attributes: a secret and every match of a pattern become [REDACTED]
 * (several in one text, at its ends too); a text over max_payload is cut at
 * a character boundary with a note; a store without rules leaves text as it
 * is; an invalid pattern fails the open with its name. */
static void test_redaction_and_payload_bound(void **state)
{
    char path[512];
    eddy_trace_store *s;
    eddy_err e;
    const char *secrets[] = {"sk-live-123", ""};
    const char *pats[] = {"[0-9]{4}-[0-9]{4}", "pass(word)?=[^ ]+"};
    eddy_trace_opts o = {.sample = 1,
                         .max_payload = 300,
                         .secrets = secrets,
                         .nsecrets = 2,
                         .redact = pats,
                         .nredact = 2};
    eddy_buf b;
    (void)state;
    snprintf(path, sizeof(path), "%s/redact.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, &o, &s, &e), 0);
    eddy_buf_init(&b);
    const char *in = "sk-live-123 card 1234-5678, password=hunter2 and sk-live-123";
    assert_int_equal(eddy_trace_text(s, &b, in, strlen(in)), 0);
    assert_string_equal(b.data, "\"[REDACTED] card [REDACTED], [REDACTED] and [REDACTED]\"");
    eddy_buf_reset(&b);
    char big[1001];
    for (int i = 0; i < 500; i++)
        memcpy(big + 2 * i, "\xc3\xa9", 2); /* é */
    big[1000] = 0;
    assert_int_equal(eddy_trace_text(s, &b, big, 1000), 0);
    json_t *v = json_loadb(b.data, b.len, JSON_DECODE_ANY, NULL);
    assert_non_null(v);
    const char *t = json_string_value(v);
    assert_non_null(strstr(t, "\xe2\x80\xa6 [700 more bytes not kept]"));
    assert_int_equal(strstr(t, "\xe2\x80\xa6") - t, 300);
    json_decref(v);
    eddy_buf_reset(&b);
    assert_int_equal(eddy_trace_text(NULL, &b, in, strlen(in)), 0); /* no store: as it is */
    assert_non_null(strstr(b.data, "hunter2"));
    eddy_buf_free(&b);
    assert_true(eddy_trace_keeps_content(s));
    assert_false(eddy_trace_keeps_content(NULL));
    eddy_trace_store_close(s);
    const char *bad[] = {"("};
    eddy_trace_opts ob = {.sample = 1, .redact = bad, .nredact = 1};
    assert_int_equal(eddy_trace_store_open(path, &ob, &s, &e), EDDY_EINVAL);
    assert_non_null(strstr(e.msg, "trace.redact pattern '('"));
}

/* What a span's error says goes through the same redaction and payload
 * bound as its text attributes (a tool's failed result, an API's error
 * body): in spans.error, traces.error and the trace's summary. And a text
 * with a NUL before a secret is redacted too (secrets after it were kept). */
static void test_error_redacted(void **state)
{
    char path[512];
    eddy_trace_store *s;
    eddy_err e;
    const char *secrets[] = {"sk-live-123"};
    eddy_trace_opts o = {.sample = 1, .max_payload = 300, .secrets = secrets, .nsecrets = 1};
    eddy_buf b;
    (void)state;
    snprintf(path, sizeof(path), "%s/error-redact.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, &o, &s, &e), 0);
    eddy_buf_init(&b);
    static const char nul[] = "a\0b sk-live-123";
    assert_int_equal(eddy_trace_text(s, &b, nul, sizeof(nul) - 1), 0);
    assert_null(memmem(b.data, b.len, "sk-live", 7));
    eddy_buf_free(&b);
    eddy_trace_store_close(s);
    { /* a secret that starts another is no way to keep the longer one's end */
        const char *two[] = {"abc123", "abc123-admin-xyz"};
        eddy_trace_opts o2 = {.sample = 1, .secrets = two, .nsecrets = 2};
        assert_int_equal(eddy_trace_store_open(path, &o2, &s, &e), 0);
        eddy_buf_init(&b);
        assert_int_equal(eddy_trace_text(s, &b, "k=abc123-admin-xyz", 18), 0);
        assert_string_equal(b.data, "\"k=[REDACTED]\"");
        eddy_buf_free(&b);
        eddy_trace_store_close(s);
    }
    assert_int_equal(eddy_trace_store_open(path, &o, &s, &e), 0);
    char big[2001];
    memset(big, 'x', 2000);
    big[2000] = 0;
    memcpy(big, "tool failed: sk-live-123 ", 25);
    eddy_span *root = eddy_span_start(s, NULL, "invoke_agent a", EDDY_SPAN_SERVER);
    eddy_span *c = eddy_span_start(s, root, "execute_tool t", EDDY_SPAN_INTERNAL);
    eddy_span_error(c, "tool_error", big);
    eddy_span_end(c, NULL);
    eddy_span_error(root, "EDDY_ETOOL", "the run failed: sk-live-123");
    json_t *sum = json_pack("{s:s, s:s, s:s}", "agent", "a", "key", "k", "event_id", "e");
    eddy_span_end(root, sum);
    json_decref(sum);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans WHERE error LIKE '%[REDACTED]%'"),
                     2);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans WHERE error LIKE '%sk-live%'"), 0);
    assert_int_equal(count_at(path, "SELECT count(*) FROM traces WHERE error LIKE '%sk-live%' OR "
                                    "summary LIKE '%sk-live%'"),
                     0);
    assert_int_equal(count_at(path, "SELECT max(length(CAST(error AS BLOB))) < 400 FROM spans"), 1);
}

/* The search text as FTS5 reads it: quoted phrases, quotes doubled, parts
 * with no word dropped; nothing left is the empty phrase. */
static void test_fts_query(void **state)
{
    static const char *const cases[][2] = {
        {"hello world", "\"hello\" \"world\""},
        {"\"AND OR NEAR( *", "\"\"\"AND\" \"OR\" \"NEAR(\""},
        {"a\"b  \t c*", "\"a\"\"b\" \"c*\""},
        {"Zürich", "\"Zürich\""},
        {"   ", "\"\""},
        {"* ( ) :", "\"\""},
    };
    (void)state;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *q = eddy_trace_fts_query(cases[i][0]);
        assert_non_null(q);
        assert_string_equal(q, cases[i][1]);
        eddy_free(q);
    }
}

/* Keys of the rows F selects, joined by ','; the rows are checked to come
 * in the order asked. */
static char *query_keys(const char *path, const eddy_trace_filter *f, char *buf, size_t n)
{
    json_t *rows, *r;
    eddy_err e;
    size_t i, len = 0;
    int64_t last = 0;
    buf[0] = '\0';
    if (eddy_trace_query(path, f, &rows, &e))
        fail_msg("query: %s", e.msg);
    json_array_foreach(rows, i, r)
    {
        int64_t start = eddy_json_int(r, "start_ns", 0);
        if (i)
            assert_true(f && f->oldest_first ? start >= last : start <= last);
        last = start;
        len += (size_t)snprintf(buf + len, n - len, "%s%s", i ? "," : "",
                                eddy_json_str(r, "key", "?"));
    }
    json_decref(rows);
    return buf;
}

/* eddy_trace_query: each filter, their combinations (AND), the search,
 * pages by cursor, and bad values refused with EDDY_EINVAL. */
static void test_query_filters(void **state)
{
    char path[512], k[256];
    eddy_trace_store *s;
    eddy_trace_filter f;
    json_t *rows = NULL;
    eddy_err e;
    const int64_t S = 1000000000;
    (void)state;
    snprintf(path, sizeof(path), "%s/q.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, NULL, &s, &e), 0);
    one_run(s, "k1", "{\"text\": \"Where is my Parcel?\"}", "It is in Zürich.", 0, 0, 0, NULL);
    one_run(s, "k2", "{\"text\": \"hello\"}", "bonjour NEAR you", 0, 1, 0, NULL);
    one_run(s, "k3", "{\"text\": \"parcel lost\"}", "sorry", 0, 0, 0, NULL);
    one_run(s, "k4", "{\"text\": \"refund\"}", "no", 0, 1, 0, NULL);
    eddy_trace_store_close(s);
    /* times 1000 s .. 4000 s, k_i lasting i seconds with 100*i tokens; k3
     * and k4 by agent b with model m2 and tool t3 */
    exec_at(path, "UPDATE traces SET start_ns = CAST(substr(key, 2) AS INTEGER) * 1000000000000,"
                  " end_ns = CAST(substr(key, 2) AS INTEGER) * 1001000000000,"
                  " input_tokens = CAST(substr(key, 2) AS INTEGER) * 100, output_tokens = 0;"
                  "UPDATE traces SET agent = 'b', models = 'm2', tools = 't3' WHERE key >= 'k3'");
    assert_string_equal(query_keys(path, NULL, k, sizeof(k)), "k4,k3,k2,k1");
#define Q(...) (f = (eddy_trace_filter){__VA_ARGS__}, query_keys(path, &f, k, sizeof(k)))
    assert_string_equal(Q(.agent = "b"), "k4,k3");
    assert_string_equal(Q(.agent = "b", .status = "error"), "k4");
    assert_string_equal(Q(.status = "ok"), "k3,k1");
    assert_string_equal(Q(.key = "k2"), "k2");
    assert_string_equal(Q(.event_id = "k3"), "k3");
    assert_string_equal(Q(.event_id = "k%"), "");
    assert_string_equal(Q(.model = "m"), "k2,k1");
    assert_string_equal(Q(.model = "m2", .status = "ok"), "k3");
    assert_string_equal(Q(.model = "%"), "");
    assert_string_equal(Q(.tool = "t2"), "k2,k1");
    assert_string_equal(Q(.tool = "t"), "");
    assert_string_equal(Q(.since_ns = 2000 * S, .until_ns = 4000 * S), "k3,k2");
    assert_string_equal(Q(.min_duration_ns = 2 * S, .max_duration_ns = 3 * S), "k3,k2");
    assert_string_equal(Q(.min_tokens = 300), "k4,k3");
    assert_string_equal(Q(.search = "parcel"), "k3,k1");
    assert_string_equal(Q(.search = "PARCEL zurich"), "k1");
    assert_string_equal(Q(.search = "parcel", .agent = "b"), "k3");
    assert_string_equal(Q(.search = "zurich absent"), "");
    assert_string_equal(Q(.search = "\"AND OR NEAR( *"), "");
    assert_string_equal(Q(.search = "NEAR("), "k2");
    assert_string_equal(Q(.search = "output:bonjour"), "");
    assert_string_equal(Q(.search = "* ("), "");
    assert_string_equal(Q(.limit = 2), "k4,k3");
    assert_string_equal(Q(.limit = 2, .oldest_first = 1), "k1,k2");
    /* pages: the cursor is the last row's start_ns and id */
    {
        char seen[64] = "";
        eddy_trace_filter p = {.limit = 1};
        for (int page = 0; page < 5; page++) {
            assert_int_equal(eddy_trace_query(path, &p, &rows, &e), 0);
            if (!json_array_size(rows)) {
                json_decref(rows);
                break;
            }
            json_t *r = json_array_get(rows, 0);
            strncat(seen, eddy_json_str(r, "key", "?"), sizeof(seen) - strlen(seen) - 1);
            p.after_start_ns = eddy_json_int(r, "start_ns", 0);
            p.after_id = eddy_json_int(r, "id", 0);
            json_decref(rows);
        }
        assert_string_equal(seen, "k4k3k2k1");
    }
#undef Q
    f = (eddy_trace_filter){.status = "bogus"};
    assert_int_equal(eddy_trace_query(path, &f, &rows, &e), EDDY_EINVAL);
    assert_null(rows);
    assert_non_null(strstr(e.msg, "'bogus'"));
    f = (eddy_trace_filter){.tool = "t1,t2"}; /* the column's separator is not in a name */
    assert_int_equal(eddy_trace_query(path, &f, &rows, &e), EDDY_EINVAL);
    f = (eddy_trace_filter){.limit = -3};
    assert_int_equal(eddy_trace_query(path, &f, &rows, &e), EDDY_EINVAL);
    snprintf(k, sizeof(k), "%s/absent/none.db", g_dir);
    assert_int_not_equal(eddy_trace_query(k, NULL, &rows, &e), 0);
    assert_null(rows);
}

/* The store hands kept spans to its OTLP exporter, whose counters a caller
 * can read while the store is open. No network: the queue holds one span and
 * the batch waits an hour, so the first span stays queued, the next two are
 * dropped; at close the one POST fails at once (curl cannot parse the URL). */
static void test_otlp_counters(void **state)
{
    char path[512];
    eddy_trace_store *s;
    eddy_err e;
    eddy_otlp_stats st;
    (void)state;
    snprintf(path, sizeof(path), "%s/otlp.db", g_dir);
    assert_int_equal(eddy_trace_store_open(path, NULL, &s, &e), 0);
    eddy_trace_otlp_stats(s, &st); /* no endpoint anywhere: no export */
    assert_true(!st.exported && !st.dropped && !st.failed_batches && !st.queued);
    eddy_trace_store_close(s);

    setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://[not-a-host/v1/traces", 1);
    setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1", 1);
    setenv("OTEL_BSP_SCHEDULE_DELAY", "3600000", 1);
    assert_int_equal(eddy_trace_store_open(path, NULL, &s, &e), 0);
    for (int i = 0; i < 3; i++)
        eddy_span_end(eddy_span_start(s, NULL, "invoke_agent a", EDDY_SPAN_INTERNAL), NULL);
    for (int i = 0; i < 500; i++) { /* the writer thread gets to them */
        eddy_trace_otlp_stats(s, &st);
        if (st.dropped == 2)
            break;
        usleep(10000);
    }
    assert_int_equal(st.dropped, 2);
    assert_int_equal(st.queued, 1);
    assert_int_equal(st.exported, 0);
    assert_int_equal(st.failed_batches, 0);
    eddy_trace_store_close(s);
    assert_int_equal(count_at(path, "SELECT count(*) FROM spans"), 3); /* all stored */
    unsetenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    unsetenv("OTEL_BSP_MAX_QUEUE_SIZE");
    unsetenv("OTEL_BSP_SCHEDULE_DELAY");
}

/* /metrics text: label values escaped as the format wants; histogram
 * buckets cumulative with +Inf = _count and _sum in seconds; a tool is
 * added as first seen, a name not known counts as "(other)". */
static void test_metrics_render(void **state)
{
    const char *agents[] = {"a\"b\\c\nd"};
    const char *models[] = {"m1"};
    eddy_metrics_names n = {agents, models, 1, 1};
    eddy_metrics *m = eddy_metrics_new(&n, 2);
    eddy_buf b;
    (void)state;
    assert_non_null(m);
    int a = eddy_metrics_agent_id(m, agents[0]);
    eddy_metrics_run(m, a, 1, 0.003);
    eddy_metrics_run(m, a, 1, 0.3);
    eddy_metrics_run(m, a, 0, 200);
    eddy_metrics_run(m, eddy_metrics_agent_id(m, "nobody"), 1, 1);
    int t = eddy_metrics_tool_id(m, "lookup");
    assert_int_equal(eddy_metrics_tool_id(m, "lookup"), t);
    eddy_metrics_tool(m, t, 0, 0, 0.01);
    eddy_metrics_llm_call c = {.ok = 1,
                               .input_tokens = 7,
                               .output_tokens = 3,
                               .cost = 0.25,
                               .seconds = 0.2,
                               .wait_seconds = 1.5};
    eddy_metrics_llm(m, eddy_metrics_model_id(m, "m1"), &c);
    eddy_metrics_worker(m, 1, 42);
    eddy_buf_init(&b);
    assert_int_equal(eddy_metrics_render(m, &b), 0);
    const char *want[] = {
        "eddy_runs_total{agent=\"a\\\"b\\\\c\\nd\",status=\"ok\"} 2\n",
        "eddy_runs_total{agent=\"a\\\"b\\\\c\\nd\",status=\"error\"} 1\n",
        "eddy_runs_total{agent=\"(other)\",status=\"ok\"} 1\n",
        "eddy_run_duration_seconds_bucket{agent=\"a\\\"b\\\\c\\nd\",le=\"0.005\"} 1\n",
        "eddy_run_duration_seconds_bucket{agent=\"a\\\"b\\\\c\\nd\",le=\"0.5\"} 2\n",
        "eddy_run_duration_seconds_bucket{agent=\"a\\\"b\\\\c\\nd\",le=\"120\"} 2\n",
        "eddy_run_duration_seconds_bucket{agent=\"a\\\"b\\\\c\\nd\",le=\"+Inf\"} 3\n",
        "eddy_run_duration_seconds_sum{agent=\"a\\\"b\\\\c\\nd\"} 200.303000\n",
        "eddy_run_duration_seconds_count{agent=\"a\\\"b\\\\c\\nd\"} 3\n",
        "eddy_tool_calls_total{tool=\"lookup\",status=\"error\"} 1\n",
        "eddy_llm_tokens_total{model=\"m1\",type=\"input\"} 7\n",
        "eddy_llm_cost_total{model=\"m1\"} 0.250000000\n",
        "eddy_llm_wait_seconds_count{model=\"m1\"} 1\n",
        "eddy_worker_queued{worker=\"1\"} 42\n",
        "# TYPE eddy_llm_duration_seconds histogram\n",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        if (!strstr(b.data, want[i]))
            fail_msg("missing: %s", want[i]);
    eddy_buf_free(&b);
    eddy_metrics_free(m);
    eddy_metrics_run(NULL, 0, 1, 1); /* no registry: nothing, no crash */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_from_threads),
        cmocka_unit_test(test_no_getrandom_per_span),
        cmocka_unit_test(test_attributes_and_time_ordered_ids),
        cmocka_unit_test(test_trace_row_and_search),
        cmocka_unit_test(test_migrate_v1),
        cmocka_unit_test(test_sampling_keeps_failures),
        cmocka_unit_test(test_sampling_late_children),
        cmocka_unit_test(test_retention),
        cmocka_unit_test(test_search_after_retention_emptied),
        cmocka_unit_test(test_redaction_and_payload_bound),
        cmocka_unit_test(test_error_redacted),
        cmocka_unit_test(test_fts_query),
        cmocka_unit_test(test_query_filters),
        cmocka_unit_test(test_otlp_counters),
        cmocka_unit_test(test_metrics_render),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests_name("trace", tests, tmpdir_setup, tmpdir_teardown);
}
