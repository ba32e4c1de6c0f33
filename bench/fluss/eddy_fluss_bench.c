/*
 * bench/fluss/eddy_fluss_bench.c - eddy's Fluss client under load, the
 * counterpart of pyfluss_bench.py (same rows, same table shape).
 *
 *   eddy_fluss_bench BOOTSTRAP DB.TABLE produce N
 *   eddy_fluss_bench BOOTSTRAP DB.TABLE scan N
 *   eddy_fluss_bench BOOTSTRAP DB.TABLE lookup N INFLIGHT
 *
 * Prints one JSON line: {"op", "rows", "seconds", "bytes"}. Rows are made
 * in the process (no JSON parsing): id BIGINT, user STRING, amount DOUBLE,
 * ts TIMESTAMP_LTZ(3), flag BOOLEAN, note STRING.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eddy/eddy.h"

typedef struct bench {
    uv_loop_t loop;
    eddy_fluss_client *c;
    const eddy_fluss_table *t;
    int done, status;
    long n, rows, inflight, issued, answered, found;
    int64_t *next, *hw;
    double checksum;
    size_t bytes;
} bench;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void wait_done(bench *b)
{
    while (!b->done)
        uv_run(&b->loop, UV_RUN_ONCE);
    b->done = 0;
}

static void on_table(int status, const eddy_err *err, const eddy_fluss_table *t, void *ud)
{
    bench *b = ud;
    if (status) {
        fprintf(stderr, "bench: %s\n", err->msg);
        exit(1);
    }
    b->t = t;
    b->done = 1;
}

static void on_done(int status, const eddy_err *err, void *ud)
{
    bench *b = ud;
    if (status) {
        fprintf(stderr, "bench: %s\n", err->msg);
        exit(1);
    }
    b->done = 1;
}

static char user[32], note[64];
static long id_base; /* $BENCH_ID_BASE: lookups use keys from here (see bench.py) */

static void make_row(long i, eddy_fluss_value *v)
{
    memset(v, 0, sizeof(*v) * 6);
    int ul = snprintf(user, sizeof(user), "user-%ld", i % 10007);
    int nl = snprintf(note, sizeof(note), "note for row %ld of the benchmark", i);
    v[0].v.i = id_base + i;
    v[1].v.s.p = user;
    v[1].v.s.n = (size_t)ul;
    v[2].v.d = (double)i * 0.25;
    v[3].v.ts.ms = 1795300000000LL + i;
    v[4].v.i = i & 1;
    v[5].v.s.p = note;
    v[5].v.s.n = (size_t)nl;
}

static size_t row_bytes(const eddy_fluss_value *v)
{
    return 8 + v[1].v.s.n + 8 + 8 + 1 + v[5].v.s.n;
}

static void produce(bench *b)
{
    eddy_fluss_writer *w;
    eddy_fluss_value v[6];
    eddy_err e;
    if (eddy_fluss_writer_new(b->c, b->t, NULL, &w, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        exit(1);
    }
    for (long i = 0; i < b->n; i++) {
        make_row(i, v);
        b->bytes += row_bytes(v);
        if (eddy_fluss_writer_write(w, v, 0, NULL, NULL, &e)) {
            fprintf(stderr, "bench: %s\n", e.msg);
            exit(1);
        }
        while (eddy_fluss_writer_pending(w) > (32u << 20))
            uv_run(&b->loop, UV_RUN_ONCE);
        if ((i & 1023) == 0)
            uv_run(&b->loop, UV_RUN_NOWAIT);
    }
    eddy_fluss_writer_flush(w, on_done, b);
    wait_done(b);
    b->rows = b->n;
    eddy_fluss_writer_free(w);
}

static int on_record(int bucket, int64_t off, int64_t ts, int change, const eddy_fluss_value *v,
                     void *ud)
{
    bench *b = ud;
    (void)bucket, (void)off, (void)ts, (void)change;
    b->rows++;
    b->checksum += v[2].v.d;
    b->bytes += row_bytes(v);
    return 0;
}

static void on_progress(int status, const eddy_err *err, int bucket, int64_t next, int64_t hw,
                        void *ud)
{
    bench *b = ud;
    if (status) {
        fprintf(stderr, "bench: %s\n", err->msg);
        exit(1);
    }
    b->next[bucket] = next;
    if (hw >= 0)
        b->hw[bucket] = hw;
    if (b->rows >= b->n)
        b->done = 1;
}

static void scan(bench *b)
{
    eddy_fluss_scanner *s;
    eddy_err e;
    b->next = calloc((size_t)b->t->nbuckets, sizeof(int64_t));
    b->hw = calloc((size_t)b->t->nbuckets, sizeof(int64_t));
    if (eddy_fluss_scanner_new(b->c, b->t, NULL, 0, on_record, on_progress, b, &s, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        exit(1);
    }
    for (int i = 0; i < b->t->nbuckets; i++)
        eddy_fluss_scanner_subscribe(s, i, EDDY_FLUSS_EARLIEST);
    wait_done(b);
    eddy_fluss_scanner_free(s);
}

static void issue(bench *b);

static void on_lookup(int status, const eddy_err *err, const eddy_fluss_value *v, void *ud)
{
    bench *b = ud;
    if (status) {
        fprintf(stderr, "bench: %s\n", err->msg);
        exit(1);
    }
    b->answered++;
    b->rows++;
    if (v) {
        b->found++;
        b->bytes += row_bytes(v);
    }
    if (b->answered >= b->n)
        b->done = 1;
    else
        issue(b);
}

static void issue(bench *b)
{
    eddy_fluss_value v[6];
    eddy_err e;
    if (b->issued >= b->n)
        return;
    memset(v, 0, sizeof(v));
    v[0].v.i = id_base + (b->issued * 7919) % b->n; /* spread over the table */
    b->issued++;
    if (eddy_fluss_lookup(b->c, b->t, v, on_lookup, b, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        exit(1);
    }
}

int main(int argc, char **argv)
{
    bench b;
    eddy_err e;
    char db[128], tb[128];
    if (argc < 5) {
        fprintf(stderr, "usage: %s BOOTSTRAP DB.TABLE produce|scan|lookup N [INFLIGHT]\n", argv[0]);
        return 2;
    }
    memset(&b, 0, sizeof(b));
    eddy_alloc_install();
    id_base = getenv("BENCH_ID_BASE") ? strtol(getenv("BENCH_ID_BASE"), NULL, 10) : 0;
    const char *dot = strchr(argv[2], '.');
    snprintf(db, sizeof(db), "%.*s", (int)(dot - argv[2]), argv[2]);
    snprintf(tb, sizeof(tb), "%s", dot + 1);
    b.n = strtol(argv[4], NULL, 10);
    b.inflight = argc > 5 ? strtol(argv[5], NULL, 10) : 64;
    uv_loop_init(&b.loop);
    eddy_fluss_client_opts o = {argv[1], NULL, NULL, 0};
    if (eddy_fluss_client_new(&b.loop, &o, &b.c, &e)) {
        fprintf(stderr, "bench: %s\n", e.msg);
        return 1;
    }
    eddy_fluss_get_table(b.c, db, tb, on_table, &b);
    wait_done(&b);
    double t0 = now_s();
    if (!strcmp(argv[3], "produce")) {
        produce(&b);
    } else if (!strcmp(argv[3], "scan")) {
        scan(&b);
    } else {
        for (long i = 0; i < b.inflight; i++)
            issue(&b);
        wait_done(&b);
    }
    double secs = now_s() - t0;
    printf("{\"op\":\"%s\",\"rows\":%ld,\"seconds\":%.4f,\"bytes\":%zu,\"found\":%ld}\n", argv[3],
           b.rows, secs, b.bytes, b.found);
    eddy_fluss_client_close(b.c);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    return 0;
}
