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
    assert_int_equal(eddy_trace_store_open(path, &s, &e), 0);
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
    assert_int_equal(eddy_trace_store_open(path, &s, &e), 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ids_from_threads),
        cmocka_unit_test(test_no_getrandom_per_span),
        cmocka_unit_test(test_attributes_and_time_ordered_ids),
    };
    eddy_alloc_install();
    return cmocka_run_group_tests_name("trace", tests, tmpdir_setup, tmpdir_teardown);
}
