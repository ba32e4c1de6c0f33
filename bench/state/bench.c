/*
 * bench/state/bench.c - the job's store (memory/store.c) under a large state:
 * 1,000,000 keys with a 1 KB memory document each.
 *
 * Prints, for the goals (checkpoint <= 50 ms, no loop stall > 1 ms,
 * restart to first output <= 1 s):
 *  (a) a checkpoint with 10,000 dirty keys: 10,000 run_done jobs (a 1 KB doc
 *      and a ~150-byte history entry each) and then a checkpoint (one
 *      position, the 10,000 runs delivered, one sink) are posted; the time
 *      until the checkpoint's ack, and every job's ack latency (p50, p99,
 *      max). Two shapes: "burst" posts everything in one go from the loop;
 *      "spread" posts 100 jobs per 1 ms tick (100,000 runs/s) and then the
 *      checkpoint, whose own latency is then the commit of a checkpoint
 *      behind the group commits that were already under way; "steady"
 *      posts the jobs over 1 s (the default checkpoint interval: DIRTY/1000
 *      per tick), a rate the store keeps up with, so that the checkpoint's
 *      own latency is its commit;
 *  (b) the worker stall during it: a uv_timer ticks every 1 ms on the
 *      session's loop throughout, and the largest gap between two ticks is
 *      printed (and, for burst, the time the loop spent posting, which is
 *      the caller's own serialization, kept apart from the rest);
 *  (c) restart to first load: close the store, eddy_store_open of the 1M-key
 *      file, a new session, the first eddy_store_load answered; the open
 *      alone is printed too. Once after a checkpoint covered every run (an
 *      empty replay table), once with 10,000 finished runs not yet covered.
 *
 * The store is filled directly with SQLite into the store's own schema
 * (eddy_store_open creates it first): through the API the fill would take
 * minutes (see the run_done rate printed under (a)). The fill is kept
 * (PATH.filled names its size) and reused by the next run.
 *
 * CPU used by other processes during each measurement is printed (from
 * /proc/stat minus this process's getrusage): the machine may be shared.
 *
 *   bench_state [--path FILE] [--keys N] [--dirty N] [--rounds N] [--refill]
 */
#include <jansson.h>
#include <stddef.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "eddy/memory.h"

#define AGENT "bench"
#define DOC_PAD 990 /* a doc of 1,024 bytes: {"n":1234567,"round":12,"pad":"..."} */

static long g_keys = 1000000, g_dirty = 10000, g_rounds = 3;
static int64_t g_part, g_pos = 1;

/* -- small things ------------------------------------------------------------ */

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_state: %s: %s\n", what, msg);
    exit(1);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void key_name(char *buf, size_t n, long i)
{
    snprintf(buf, n, "user-%07ld", i);
}

static json_t *make_doc(long i, int round)
{
    char pad[DOC_PAD + 1];
    for (int k = 0; k < DOC_PAD; k++)
        pad[k] = (char)('a' + (i + k) % 26);
    pad[DOC_PAD] = 0;
    return json_pack("{s:I, s:i, s:s}", "n", (json_int_t)i, "round", round, "pad", pad);
}

/* Busy and stolen CPU of the whole machine (all CPUs), in seconds. */
static void machine_cpu_s(double *busy, double *steal)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    *busy = *steal = 0;
    if (!f)
        return;
    int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]);
    fclose(f);
    if (n != 8)
        return;
    /* user nice system [idle iowait] irq softirq | steal */
    double hz = (double)sysconf(_SC_CLK_TCK);
    *busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
    *steal = (double)v[7] / hz;
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

typedef struct others {
    double busy0, steal0, self0;
    uint64_t t0;
} others;

static void others_start(others *o)
{
    machine_cpu_s(&o->busy0, &o->steal0);
    o->self0 = self_cpu_s();
    o->t0 = uv_hrtime();
}

/* Shares of one core since others_start: used by other processes, and
 * stolen by the hypervisor (the vCPUs were not running at all). */
static void others_pct(const others *o, double *other_pct, double *steal_pct)
{
    double busy, steal, wall = (double)(uv_hrtime() - o->t0) / 1e9;
    machine_cpu_s(&busy, &steal);
    double other = (busy - o->busy0) - (self_cpu_s() - o->self0);
    *other_pct = wall > 0 ? 100.0 * (other < 0 ? 0 : other) / wall : 0;
    *steal_pct = wall > 0 ? 100.0 * (steal - o->steal0) / wall : 0;
}

/* The loop thread's time on a CPU and waiting for one (ns), from
 * /proc/thread-self/schedstat: what a long gap between ticks was made of. */
static void sched_ns(uint64_t *run, uint64_t *wait)
{
    unsigned long long r = 0, w = 0;
    FILE *f = fopen("/proc/thread-self/schedstat", "r");
    if (f) {
        if (fscanf(f, "%llu %llu", &r, &w) != 2)
            r = w = 0;
        fclose(f);
    }
    *run = r;
    *wait = w;
}

/* -- the fill ---------------------------------------------------------------- */

static void fill(const char *path, int refill)
{
    char marker[1100], want[64], have[64] = "";
    snprintf(marker, sizeof(marker), "%s.filled", path);
    snprintf(want, sizeof(want), "%ld keys x 1024 B\n", g_keys);
    FILE *m = fopen(marker, "r");
    if (m) {
        if (!fgets(have, sizeof(have), m))
            have[0] = 0;
        fclose(m);
    }
    if (!refill && !strcmp(have, want)) {
        struct stat st;
        stat(path, &st);
        have[strcspn(have, "\n")] = 0;
        printf("fill: reusing %s (%s, %.0f MB)\n", path, have, (double)st.st_size / 1e6);
        return;
    }
    char cmd[2400];
    snprintf(cmd, sizeof(cmd), "rm -f '%s' '%s-wal' '%s-shm' '%s'", path, path, path, marker);
    if (system(cmd))
        die(path, "cannot remove the old store");
    eddy_store *s;
    eddy_err e;
    if (eddy_store_open(path, NULL, &s, &e)) /* the store's own schema */
        die(path, e.msg);
    eddy_store_close(s);
    sqlite3 *db;
    sqlite3_stmt *st;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        die(path, sqlite3_errmsg(db));
    sqlite3_exec(db, "PRAGMA synchronous=OFF", NULL, NULL, NULL);
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO key_memory(agent,key,doc,updated_ns) VALUES(?1,?2,?3,?4)",
                           -1, &st, NULL) != SQLITE_OK)
        die(path, sqlite3_errmsg(db));
    uint64_t t0 = uv_hrtime();
    for (long i = 0; i < g_keys; i++) {
        char key[32];
        if (i % 100000 == 0)
            sqlite3_exec(db, i ? "COMMIT; BEGIN" : "BEGIN", NULL, NULL, NULL);
        json_t *d = make_doc(i, 0);
        char *text = json_dumps(d, JSON_COMPACT);
        json_decref(d);
        key_name(key, sizeof(key), i);
        sqlite3_bind_text(st, 1, AGENT, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(st, 3, text, -1, free);
        sqlite3_bind_int64(st, 4, (sqlite3_int64)i);
        if (sqlite3_step(st) != SQLITE_DONE)
            die("fill", sqlite3_errmsg(db));
        sqlite3_reset(st);
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_finalize(st);
    sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
    sqlite3_close(db);
    struct stat sb;
    stat(path, &sb);
    printf("fill: %ld keys x 1024 B written with SQLite into the store's schema in %.1f s "
           "(%.0f MB)\n",
           g_keys, ms(uv_hrtime() - t0) / 1000, (double)sb.st_size / 1e6);
    m = fopen(marker, "w");
    if (m) {
        fputs(want, m);
        fclose(m);
    }
}

/* -- (a) and (b): commits with a ticking loop ------------------------------------ */

typedef struct jobt {
    uint64_t posted, acked;
} jobt;

typedef struct run {
    uv_loop_t *loop;
    eddy_store_session *ss;
    uv_timer_t tick;
    uint64_t last_tick, max_gap, max_gap_after, post_begin, post_end, max_post;
    /* schedstat at the last tick and in the largest gap; the longest time
     * in a gap the loop thread was neither on a CPU nor waiting for one */
    uint64_t last_run, last_wait, gap_run, gap_wait, max_sleep;
    long gaps_over_2ms, ticks;
    jobt *jobs;
    long njobs, posted, acked, per_tick;
    json_t **docs, *msgs, *outcome;
    jobt ck;
    int ck_posted, spread;
} run;

static void on_job_ack(int status, const char *errmsg, void *ud)
{
    jobt *j = ud;
    if (status)
        die("a job failed", errmsg);
    j->acked = uv_hrtime();
}

static void post_runs(run *r, long n)
{
    eddy_err e;
    for (long k = 0; k < n && r->posted < r->njobs; k++) {
        long i = r->posted++;
        long key = (i * 7919 + (g_pos % 1000) * 104729) % g_keys;
        char name[32];
        key_name(name, sizeof(name), key);
        eddy_run_end end = {
            {AGENT, name, g_part, g_pos + i, (int64_t)i}, 1, r->docs[i], r->msgs, 20, r->outcome};
        r->jobs[i].posted = uv_hrtime();
        if (eddy_store_run_done(r->ss, &end, on_job_ack, &r->jobs[i], &e))
            die("run_done", e.msg);
    }
}

static void post_checkpoint(run *r)
{
    eddy_err e;
    eddy_delivered *del = malloc((size_t)r->njobs * sizeof(*del));
    for (long i = 0; i < r->njobs; i++)
        del[i] = (eddy_delivered){AGENT, g_part, g_pos + i};
    eddy_position p = {"src", "p0", g_part, g_pos + r->njobs, g_pos + r->njobs, 0};
    eddy_sink_commit sk = {"out", (g_pos + r->njobs) * 100, g_pos + r->njobs, NULL};
    eddy_checkpoint c = {&p, 1, del, (size_t)r->njobs, &sk, 1};
    r->ck.posted = uv_hrtime();
    if (eddy_store_checkpoint(r->ss, &c, on_job_ack, &r->ck, &e))
        die("checkpoint", e.msg);
    r->ck_posted = 1;
    free(del);
}

static void on_tick(uv_timer_t *t)
{
    run *r = t->data;
    uint64_t now = uv_hrtime(), gap = now - r->last_tick, srun, swait;
    sched_ns(&srun, &swait);
    if (r->last_tick) {
        uint64_t on = (srun - r->last_run) + (swait - r->last_wait);
        if (gap > r->max_gap) {
            r->max_gap = gap;
            r->gap_run = srun - r->last_run;
            r->gap_wait = swait - r->last_wait;
        }
        if (gap > on && gap - on > r->max_sleep) /* off a CPU and not runnable */
            r->max_sleep = gap - on;
        if (r->last_tick >= r->post_end && r->post_end && gap > r->max_gap_after)
            r->max_gap_after = gap;
        if (gap > 2000000)
            r->gaps_over_2ms++;
    }
    r->ticks++;
    r->last_tick = now;
    if (r->spread && r->posted < r->njobs) {
        if (!r->post_begin)
            r->post_begin = now;
        post_runs(r, r->per_tick);
    } else if (r->spread && !r->ck_posted) {
        post_checkpoint(r);
        r->post_end = uv_hrtime();
    }
    r->last_tick = uv_hrtime(); /* our own posting is not the store's stall: kept apart */
    if (r->last_tick - now > r->max_post)
        r->max_post = r->last_tick - now;
    sched_ns(&r->last_run, &r->last_wait);
}

static void run_loop_for(uv_loop_t *loop, uint64_t ns)
{
    uint64_t end = uv_hrtime() + ns;
    while (uv_hrtime() < end)
        uv_run(loop, UV_RUN_ONCE);
}

static void pctl(jobt *jobs, long n, double *p50, double *p99, double *mx)
{
    uint64_t *v = malloc((size_t)n * sizeof(*v));
    for (long i = 0; i < n; i++)
        v[i] = jobs[i].acked - jobs[i].posted;
    qsort(v, (size_t)n, sizeof(*v), cmp_u64);
    *p50 = ms(v[n / 2]);
    *p99 = ms(v[(n * 99) / 100]);
    *mx = ms(v[n - 1]);
    free(v);
}

typedef struct result {
    double ck_total, ck_own, p50, p99, max, gap, gap_after, posting, others, steal;
    double gap_run, gap_wait, sleep;
    long over2;
} result;

/* One round: N dirty keys and a checkpoint, burst or spread. */
static result one_round(uv_loop_t *loop, eddy_store_session *ss, int per_tick, int round)
{
    run r;
    result res;
    others o;
    memset(&r, 0, sizeof(r));
    r.loop = loop;
    r.ss = ss;
    r.njobs = g_dirty;
    r.spread = per_tick > 0;
    r.per_tick = per_tick;
    r.jobs = calloc((size_t)r.njobs, sizeof(*r.jobs));
    r.docs = calloc((size_t)r.njobs, sizeof(*r.docs));
    for (long i = 0; i < r.njobs; i++)
        r.docs[i] = make_doc(i, round);
    r.msgs = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "user", "text",
                       "Where is my order 1234? It was due on Monday.", "role", "assistant", "text",
                       "Order 1234 shipped on Tuesday and arrives tomorrow.");
    r.outcome = json_pack("{s:s}", "answer", "Order 1234 shipped on Tuesday.");
    uv_timer_init(loop, &r.tick);
    r.tick.data = &r;
    uv_timer_start(&r.tick, on_tick, 1, 1);
    run_loop_for(loop, 20000000); /* the ticker settles */
    others_start(&o);
    uint64_t t0 = uv_hrtime();
    if (!r.spread) {
        r.post_begin = t0;
        post_runs(&r, r.njobs);
        post_checkpoint(&r);
        r.post_end = uv_hrtime();
    }
    while (!r.ck.acked)
        uv_run(loop, UV_RUN_ONCE);
    others_pct(&o, &res.others, &res.steal);
    run_loop_for(loop, 20000000);
    uv_timer_stop(&r.tick);
    uv_close((uv_handle_t *)&r.tick, NULL);
    uv_run(loop, UV_RUN_NOWAIT);
    for (long i = 0; i < r.njobs; i++)
        if (!r.jobs[i].acked || r.jobs[i].acked > r.ck.acked)
            die("order", "a job was acknowledged after the checkpoint posted after it");
    res.ck_total = ms(r.ck.acked - r.post_begin);
    res.ck_own = ms(r.ck.acked - r.ck.posted);
    pctl(r.jobs, r.njobs, &res.p50, &res.p99, &res.max);
    res.gap = ms(r.max_gap);
    res.gap_after = ms(r.max_gap_after);
    res.posting = r.spread ? ms(r.max_post) : ms(r.post_end - r.post_begin);
    res.over2 = r.gaps_over_2ms;
    res.gap_run = ms(r.gap_run);
    res.gap_wait = ms(r.gap_wait);
    res.sleep = ms(r.max_sleep);
    g_pos += r.njobs + 1;
    for (long i = 0; i < r.njobs; i++)
        json_decref(r.docs[i]);
    free(r.docs);
    free(r.jobs);
    json_decref(r.msgs);
    json_decref(r.outcome);
    return res;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(*v), cmp_d);
    return v[n / 2];
}

/* The median [min-max] of the double at OFF in each of the N results. */
static void field(const char *name, const void *rs, size_t size, size_t off, int n)
{
    double v[64] = {0}, lo, hi;
    for (int i = 0; i < n; i++)
        memcpy(&v[i], (const char *)rs + (size_t)i * size + off, sizeof(double));
    lo = hi = v[0];
    for (int i = 1; i < n; i++) {
        lo = v[i] < lo ? v[i] : lo;
        hi = v[i] > hi ? v[i] : hi;
    }
    printf("  %-12s %8.2f  [%.2f-%.2f]\n", name, median(v, n), lo, hi);
}

#define FIELD(name) field(#name, rs, sizeof(*rs), offsetof(result, name), n)

static void print_results(const char *title, result *rs, int n)
{
    printf("%s (median of %d [min-max], ms)\n", title, n);
    FIELD(ck_total);
    FIELD(ck_own);
    FIELD(p50);
    FIELD(p99);
    FIELD(max);
    FIELD(gap);
    FIELD(gap_after);
    FIELD(posting);
    FIELD(sleep);
    FIELD(others);
    FIELD(steal);
    for (int i = 0; i < n; i++)
        printf("  round %d: checkpoint acked %.1f ms after the first post (%.1f after its own), "
               "acks p50 %.1f p99 %.1f max %.1f; largest tick gap %.2f ms (%.2f after posting; "
               "in it the loop thread ran %.2f ms and waited %.2f ms for a CPU), %ld gaps > 2 ms; "
               "longest not runnable in a gap %.2f ms; posting %.1f ms; other processes %.0f %%, "
               "stolen %.0f %% of a core\n",
               i + 1, rs[i].ck_total, rs[i].ck_own, rs[i].p50, rs[i].p99, rs[i].max, rs[i].gap,
               rs[i].gap_after, rs[i].gap_run, rs[i].gap_wait, rs[i].over2, rs[i].sleep,
               rs[i].posting, rs[i].others, rs[i].steal);
}

/* -- (c) restart ------------------------------------------------------------------- */

typedef struct first {
    uint64_t at;
    int status;
} first;

static void on_first(int status, const char *errmsg, json_t *doc, json_t *history, void *ud)
{
    first *f = ud;
    (void)history;
    if (status)
        die("first load", errmsg);
    if (!json_object_get(doc, "pad"))
        die("first load", "the key has no 1 KB document");
    f->at = uv_hrtime();
}

static void on_closed(void *ud)
{
    *(int *)ud = 1;
}

static void close_session(uv_loop_t *loop, eddy_store_session *ss)
{
    int done = 0;
    eddy_store_session_close(ss, on_closed, &done);
    while (!done)
        uv_run(loop, UV_RUN_ONCE);
}

/* Close S (with SS), reopen, first load. Returns the new store and session. */
static void restart(const char *path, uv_loop_t *loop, eddy_store **s, eddy_store_session **ss,
                    const char *what)
{
    eddy_err e;
    first f = {0};
    uint64_t t0 = uv_hrtime();
    close_session(loop, *ss);
    eddy_store_close(*s);
    uint64_t t1 = uv_hrtime();
    if (eddy_store_open(path, NULL, s, &e))
        die(path, e.msg);
    uint64_t t2 = uv_hrtime();
    if (eddy_store_session_new(*s, loop, ss, &e))
        die("session", e.msg);
    char key[32];
    key_name(key, sizeof(key), (long)(t0 % (uint64_t)g_keys));
    if (eddy_store_load(*ss, AGENT, key, 20, on_first, &f, &e))
        die("load", e.msg);
    while (!f.at)
        uv_run(loop, UV_RUN_ONCE);
    eddy_store_release(*ss, AGENT, key);
    size_t fin, n = eddy_store_replay_count(*s, &fin);
    printf("(c) restart %s: close %.1f ms; open %.1f ms; open + session + first load answered "
           "%.1f ms; replay table %zu runs (%zu finished)\n",
           what, ms(t1 - t0), ms(t2 - t1), ms(f.at - t1), n, fin);
}

static void drain(uv_loop_t *loop, eddy_store_session *ss)
{
    while (eddy_store_session_pending(ss))
        uv_run(loop, UV_RUN_ONCE);
}

int main(int argc, char **argv)
{
    const char *path = "/tmp/eddy-bench-state/store.db";
    int refill = 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--refill")) {
            refill = 1;
            continue;
        }
        if (i + 1 >= argc)
            die(argv[i], "needs a value");
        char *end;
        long v = strtol(argv[i + 1], &end, 10);
        if (!strcmp(argv[i], "--path"))
            path = argv[++i];
        else if (*end || v <= 0)
            die(argv[i], "a positive number is needed");
        else if (!strcmp(argv[i], "--keys"))
            g_keys = v, i++;
        else if (!strcmp(argv[i], "--dirty"))
            g_dirty = v, i++;
        else if (!strcmp(argv[i], "--rounds") && v <= 32)
            g_rounds = v, i++;
        else
            die(argv[i], "unknown option (--path, --keys, --dirty, --rounds <= 32, --refill)");
    }
    if (g_dirty > g_keys)
        die("--dirty", "more than --keys");
    char dir[1100];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        mkdir(dir, 0755);
    }
    printf("bench/state: %ld keys x 1 KB, %ld dirty keys per checkpoint, %ld rounds, %ld CPUs\n",
           g_keys, g_dirty, g_rounds, sysconf(_SC_NPROCESSORS_ONLN));
    fill(path, refill);
    g_part = eddy_store_hash("src\x1fp0", 6, 0);
    uv_loop_t loop;
    eddy_store *s;
    eddy_store_session *ss;
    eddy_err e;
    uv_loop_init(&loop);
    if (eddy_store_open(path, NULL, &s, &e))
        die(path, e.msg);
    if (eddy_store_session_new(s, &loop, &ss, &e))
        die("session", e.msg);
    /* start from a store where every earlier run is covered */
    json_t *pos = json_object_get(json_object_get(eddy_store_positions(s), "src"), "p0");
    if (pos)
        g_pos = json_integer_value(json_object_get(pos, "pos")) + 1;
    result burst[32], spread[32], steady[32];
    for (int i = 0; i < g_rounds; i++) {
        burst[i] = one_round(&loop, ss, 0, i + 1);
        spread[i] = one_round(&loop, ss, 100, i + 1);
        steady[i] = one_round(&loop, ss, (int)(g_dirty / 1000 ? g_dirty / 1000 : 1), i + 1);
    }
    printf("(a)+(b) burst: %ld run_done + 1 checkpoint posted at once\n", g_dirty);
    print_results("burst", burst, (int)g_rounds);
    printf("(a)+(b) spread: 100 run_done per 1 ms tick, then the checkpoint\n");
    print_results("spread", spread, (int)g_rounds);
    printf("(a)+(b) steady: the %ld run_done spread over 1 s (the default checkpoint interval), "
           "then the checkpoint\n",
           g_dirty);
    print_results("steady", steady, (int)g_rounds);
    double v[32];
    for (int i = 0; i < g_rounds; i++)
        v[i] = g_dirty / burst[i].ck_total * 1000;
    printf("run_done through the API (burst): %.0f jobs/s median\n", median(v, (int)g_rounds));
    for (int i = 0; i < g_rounds; i++)
        restart(path, &loop, &s, &ss, "(replay table empty)");
    /* --dirty finished runs not covered by a checkpoint */
    json_t *msgs = json_array(), *oc = json_object();
    for (long i = 0; i < g_dirty; i++) {
        char name[32];
        key_name(name, sizeof(name), (i * 7919 + 17) % g_keys);
        json_t *d = make_doc(i, 99);
        eddy_run_end end = {{AGENT, name, g_part, g_pos + i, 0}, 1, d, msgs, 20, oc};
        if (eddy_store_run_done(ss, &end, NULL, NULL, &e))
            die("run_done", e.msg);
        json_decref(d);
    }
    drain(&loop, ss);
    for (int i = 0; i < g_rounds; i++)
        restart(path, &loop, &s, &ss, "(finished runs no checkpoint covers)");
    /* cover them, so that the next run of the bench starts clean */
    g_pos += g_dirty;
    eddy_position p = {"src", "p0", g_part, g_pos, g_pos, 0};
    eddy_checkpoint c = {&p, 1, NULL, 0, NULL, 0};
    if (eddy_store_checkpoint(ss, &c, NULL, NULL, &e))
        die("checkpoint", e.msg);
    drain(&loop, ss);
    json_decref(msgs);
    json_decref(oc);
    close_session(&loop, ss);
    eddy_store_close(s);
    if (uv_loop_close(&loop))
        die("loop", "handles left open");
    return 0;
}
