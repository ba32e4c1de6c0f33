/*
 * tests/unit/test_store.c - a conformance suite for the job's store
 * (memory/store.c), in the spirit of LangGraph's checkpointer tests: what
 * is written through the API is what a new session (reading SQLite, not a
 * cache) and a reopened store find; keys and agents are isolated; large
 * values round-trip byte-exactly; the session cache evicts within its
 * budget but never a key with a write in flight; acknowledgements come in
 * posting order, once each, and a job that fails rolls back alone; and a
 * crash before any SQL write statement (EDDY_STORE_CRASH_AT, in a forked
 * child) leaves a store that equals the effect of a prefix of the posted
 * jobs, and that opens the same way twice.
 *
 * Two test-side tools reach under the API, through a connection of the
 * test's own: a trigger that makes chosen writes fail (the API accepts no
 * input that SQLite rejects), and a write lock held on the file, which
 * keeps the persistence thread's next commit waiting (a write "in flight"
 * for as long as the test needs). Row counts of the journal are read the
 * same way: the replay table ignores the steps of finished runs, so only
 * SQLite shows that a run's end deleted them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "eddy/buf.h"
#include "eddy/memory.h"
#include "testutil.h"

/* -- fixture: a loop, a store, a session ------------------------------------ */

/* The loop is on the heap: after a failed assertion the store's threads of
 * that test live on (cmocka jumps out), and they must not reach into a
 * stack frame that the next test reuses. */
typedef struct fx {
    uv_loop_t *loop;
    eddy_store *s;
    eddy_store_session *ss;
    eddy_store_opts opts;
    char path[600];
} fx;

static void on_flag(void *ud)
{
    *(int *)ud = 1;
}

static void fx_session(fx *f)
{
    eddy_err e;
    assert_int_equal(eddy_store_session_new(f->s, f->loop, &f->ss, &e), 0);
}

static void fx_session_close(fx *f)
{
    int closed = 0;
    eddy_store_session_close(f->ss, on_flag, &closed);
    while (!closed)
        uv_run(f->loop, UV_RUN_ONCE);
    f->ss = NULL;
}

static void fx_open_path(fx *f, const char *path, const eddy_store_opts *o)
{
    eddy_err e;
    memset(f, 0, sizeof(*f));
    if (o)
        f->opts = *o;
    snprintf(f->path, sizeof(f->path), "%s", path);
    f->loop = malloc(sizeof(*f->loop));
    assert_non_null(f->loop);
    assert_int_equal(uv_loop_init(f->loop), 0);
    int rc = eddy_store_open(f->path, &f->opts, &f->s, &e);
    if (rc)
        fail_msg("open %s: %s", f->path, e.msg);
    fx_session(f);
}

static void remove_store(const char *path);

/* A fresh store NAME in the temp folder. */
static void fx_open(fx *f, const char *name, const eddy_store_opts *o)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/%s.db", g_dir, name);
    remove_store(path);
    fx_open_path(f, path, o);
}

static void fx_close(fx *f)
{
    if (f->ss)
        fx_session_close(f);
    eddy_store_close(f->s);
    f->s = NULL;
    assert_int_equal(uv_loop_close(f->loop), 0);
    free(f->loop);
    f->loop = NULL;
}

/* Close everything and open the same file again (with the same options). */
static void fx_reopen(fx *f)
{
    char path[600];
    eddy_store_opts o = f->opts;
    snprintf(path, sizeof(path), "%s", f->path);
    fx_close(f);
    fx_open_path(f, path, &o);
}

/* A new session: its cache is empty, its loads read SQLite. */
static void fx_new_session(fx *f)
{
    fx_session_close(f);
    fx_session(f);
}

static void fx_drain(fx *f)
{
    while (eddy_store_session_pending(f->ss))
        uv_run(f->loop, UV_RUN_ONCE);
}

/* -- acknowledgements ---------------------------------------------------------- */

typedef struct ack {
    int n, status;
    char msg[256];
} ack;

static void on_ack(int status, const char *errmsg, void *ud)
{
    ack *a = ud;
    a->n++;
    a->status = status;
    snprintf(a->msg, sizeof(a->msg), "%s", errmsg ? errmsg : "");
    if (status == 0)
        assert_null(errmsg);
    else
        assert_non_null(errmsg);
}

static void wait_ack(fx *f, ack *a)
{
    while (!a->n)
        uv_run(f->loop, UV_RUN_ONCE);
    assert_int_equal(a->n, 1);
}

static json_t *js(const char *text)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &je);
    if (!v)
        fail_msg("bad JSON in the test: %s: %s", text, je.text);
    return v;
}

/* Fail at the caller's line unless GOT equals the JSON text WANT. */
#define assert_json_eq(got, want) assert_json_eq_at(got, want, __FILE__, __LINE__)
static void assert_json_eq_at(json_t *got, const char *want, const char *file, int line)
{
    json_t *w = js(want);
    if (!json_equal(got, w)) {
        char *g = got ? json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
        print_error("got %s, want %s\n", g ? g : "NULL", want);
        free(g);
        json_decref(w);
        _fail(file, line);
    }
    json_decref(w);
}

static const int64_t P0 = 1001, P1 = 1002;

/* Post the end of a run (DOC, MESSAGES: JSON texts or NULL) and return at once. */
static void post_done(fx *f, const char *agent, const char *key, int64_t part, int64_t pos, int ok,
                      const char *doc, const char *msgs, int keep, ack *a)
{
    eddy_err e;
    json_t *d = doc ? js(doc) : NULL, *m = msgs ? js(msgs) : NULL;
    json_t *oc = ok ? json_pack("{s:I}", "pos", (json_int_t)pos) /* keys need not be UTF-8 */
                    : json_pack("{s:s}", "dead", "yes");
    eddy_run_end end = {{agent, key, part, pos, pos * 7}, ok, d, m, keep, oc};
    int rc = eddy_store_run_done(f->ss, &end, on_ack, a, &e);
    if (rc)
        fail_msg("run_done %s/%s: %s", agent, key, e.msg);
    json_decref(d);
    json_decref(m);
    json_decref(oc);
}

static void run_done(fx *f, const char *agent, const char *key, int64_t part, int64_t pos, int ok,
                     const char *doc, const char *msgs, int keep)
{
    ack a = {0};
    post_done(f, agent, key, part, pos, ok, doc, msgs, keep, &a);
    wait_ack(f, &a);
    if (a.status)
        fail_msg("run_done %s/%s: %s", agent, key, a.msg);
}

static void put_step(fx *f, const char *agent, const char *key, int64_t part, int64_t pos, int step,
                     int state, const char *kind, const char *data, ack *a)
{
    eddy_err e;
    json_t *d = js(data);
    eddy_run_ref ref = {agent, key, part, pos, pos * 7};
    assert_int_equal(
        eddy_store_put_step(f->ss, &ref, step, state, kind, d, a ? on_ack : NULL, a, &e), 0);
    json_decref(d);
}

typedef struct loaded {
    int n, status;
    json_t *doc, *hist;
} loaded;

static void on_load(int status, const char *errmsg, json_t *doc, json_t *history, void *ud)
{
    loaded *l = ud;
    (void)errmsg;
    l->n++;
    l->status = status;
    l->doc = doc ? json_deep_copy(doc) : NULL;
    l->hist = history ? json_deep_copy(history) : NULL;
}

/* Load (AGENT, KEY) and release it; *DOC and *HIST new (HIST may be NULL). */
static void load(fx *f, const char *agent, const char *key, int hist_runs, json_t **doc,
                 json_t **hist)
{
    loaded l = {0};
    eddy_err e;
    int rc = eddy_store_load(f->ss, agent, key, hist_runs, on_load, &l, &e);
    if (rc)
        fail_msg("load %s/%s: %s", agent, key, e.msg);
    assert_int_equal(l.n, 0); /* never inside the call */
    while (!l.n)
        uv_run(f->loop, UV_RUN_ONCE);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.status, 0);
    eddy_store_release(f->ss, agent, key);
    *doc = l.doc;
    if (hist)
        *hist = l.hist;
    else
        json_decref(l.hist);
}

#define assert_doc(f, agent, key, want) assert_doc_at(f, agent, key, want, __FILE__, __LINE__)
static void assert_doc_at(fx *f, const char *agent, const char *key, const char *want,
                          const char *file, int line)
{
    json_t *d;
    load(f, agent, key, 0, &d, NULL);
    assert_json_eq_at(d, want, file, line);
    json_decref(d);
}

/* A count from the test's own connection to the store's file. */
static long sql_count(const char *path, const char *sql)
{
    sqlite3 *db;
    sqlite3_stmt *st;
    long n = -1;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static sqlite3 *sql_rw(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

static void sql_exec(sqlite3 *db, const char *sql)
{
    char *e = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK)
        fail_msg("%s: %s", sql, e);
}

/* -- put / get / list / delete ----------------------------------------------------- */

/* The end of a run, read back through a new session (from SQLite): the doc
 * and the last N history entries in order; keep_runs trims what is stored;
 * the run rows are in the replay table after a reopen. */
static void test_run_done_then_load(void **state)
{
    fx f;
    json_t *doc, *hist;
    (void)state;
    fx_open(&f, "basic", NULL);
    assert_doc(&f, "ag", "k", "{}"); /* nothing yet */
    for (int i = 1; i <= 4; i++) {
        char d[64], m[128];
        snprintf(d, sizeof(d), "{\"v\": %d, \"nested\": {\"a\": [%d]}}", i, i);
        snprintf(m, sizeof(m),
                 "[{\"role\":\"user\",\"text\":\"q%d\"},{\"role\":\"assistant\","
                 "\"text\":\"a%d\"}]",
                 i, i);
        run_done(&f, "ag", "k", P0, i, 1, d, m, 3);
    }
    fx_new_session(&f);
    load(&f, "ag", "k", 10, &doc, &hist);
    assert_json_eq(doc, "{\"v\": 4, \"nested\": {\"a\": [4]}}");
    /* keep_runs 3: runs 2, 3, 4, oldest first, their messages in one array */
    assert_json_eq(hist, "[{\"role\":\"user\",\"text\":\"q2\"},{\"role\":\"assistant\",\"text\":"
                         "\"a2\"},{\"role\":\"user\",\"text\":\"q3\"},{\"role\":\"assistant\","
                         "\"text\":\"a3\"},{\"role\":\"user\",\"text\":\"q4\"},{\"role\":"
                         "\"assistant\",\"text\":\"a4\"}]");
    json_decref(doc);
    json_decref(hist);
    fx_new_session(&f);
    load(&f, "ag", "k", 1, &doc, &hist); /* the last one only */
    assert_json_eq(hist, "[{\"role\":\"user\",\"text\":\"q4\"},{\"role\":\"assistant\",\"text\":"
                         "\"a4\"}]");
    json_decref(doc);
    json_decref(hist);
    assert_int_equal(sql_count(f.path, "SELECT count(*) FROM history"), 3);
    /* keep_runs 1 trims the older ones at the next run */
    run_done(&f, "ag", "k", P0, 5, 1, "{\"v\":5}", "[{\"t\":5}]", 1);
    fx_new_session(&f);
    load(&f, "ag", "k", 10, &doc, &hist);
    assert_json_eq(hist, "[{\"t\":5}]");
    json_decref(doc);
    json_decref(hist);
    /* no messages: the doc changes, the history stays */
    run_done(&f, "ag", "k", P0, 6, 1, "{\"v\":6}", NULL, 1);
    fx_reopen(&f);
    load(&f, "ag", "k", 10, &doc, &hist);
    assert_json_eq(doc, "{\"v\":6}");
    assert_json_eq(hist, "[{\"t\":5}]");
    json_decref(doc);
    json_decref(hist);
    size_t fin;
    assert_int_equal(eddy_store_replay_count(f.s, &fin), 6);
    assert_int_equal(fin, 6);
    for (int i = 1; i <= 6; i++) {
        const eddy_replay *r = eddy_store_replay(f.s, "ag", P0, i);
        assert_non_null(r);
        assert_int_equal(r->done, 1);
        assert_int_equal(r->ok, 1);
        assert_int_equal(r->delivered, 0);
        assert_int_equal(r->input_hash, i * 7);
        assert_int_equal(r->nsteps, 0);
        assert_int_equal(json_integer_value(json_object_get(r->outcome, "pos")), i);
    }
    assert_null(eddy_store_replay(f.s, "ag", P0, 7));
    assert_null(eddy_store_replay(f.s, "other", P0, 1));
    fx_close(&f);
}

/* A failed run (ok = 0) changes no memory, in the cache or in SQLite; its
 * dead letter is kept. */
static void test_failed_run_changes_nothing(void **state)
{
    fx f;
    json_t *doc, *hist;
    loaded l = {0};
    eddy_err e;
    (void)state;
    fx_open(&f, "failed", NULL);
    run_done(&f, "ag", "k", P0, 1, 1, "{\"v\":1}", "[{\"t\":1}]", 5);
    /* in one session: the run loads the key (cached, pinned), then fails */
    assert_int_equal(eddy_store_load(f.ss, "ag", "k", 5, on_load, &l, &e), 0);
    while (!l.n)
        uv_run(f.loop, UV_RUN_ONCE);
    json_decref(l.doc);
    json_decref(l.hist);
    run_done(&f, "ag", "k", P0, 2, 0, "{\"v\":\"never\"}", "[{\"t\":\"never\"}]", 5);
    load(&f, "ag", "k", 5, &doc, &hist);
    assert_json_eq(doc, "{\"v\":1}");
    assert_json_eq(hist, "[{\"t\":1}]");
    json_decref(doc);
    json_decref(hist);
    fx_reopen(&f);
    load(&f, "ag", "k", 5, &doc, &hist);
    assert_json_eq(doc, "{\"v\":1}");
    assert_json_eq(hist, "[{\"t\":1}]");
    json_decref(doc);
    json_decref(hist);
    const eddy_replay *r = eddy_store_replay(f.s, "ag", P0, 2);
    assert_non_null(r);
    assert_int_equal(r->done, 1);
    assert_int_equal(r->ok, 0);
    assert_json_eq(r->outcome, "{\"dead\":\"yes\"}");
    fx_close(&f);
}

/* Steps journaled (out of order, one replaced) are in the replay table
 * after a reopen, ascending, with their kind, state and data; the run's
 * end deletes them (also when step and end share a batch). */
static void test_journal_steps(void **state)
{
    fx f;
    ack a = {0};
    (void)state;
    fx_open(&f, "journal", NULL);
    put_step(&f, "ag", "k", P0, 9, 3, EDDY_STEP_DONE, "llm", "{\"answer\":\"c\"}", NULL);
    put_step(&f, "ag", "k", P0, 9, 1, EDDY_STEP_DONE, "llm", "{\"answer\":\"a\"}", NULL);
    put_step(&f, "ag", "k", P0, 9, 2, EDDY_STEP_PENDING, "tool", "{\"call\":\"refund\"}", NULL);
    put_step(&f, "ag", "k", P0, 9, 4, EDDY_STEP_PENDING, "tool", "{\"call\":\"x\"}", NULL);
    put_step(&f, "ag", "k", P0, 9, 4, EDDY_STEP_DONE, "tool", "[1,\"two\",null]", NULL);
    put_step(&f, "other", "k", P0, 9, 1, EDDY_STEP_DONE, "tool", "\"scalar\"", NULL);
    put_step(&f, "ag", "k2", P1, 9, 1, EDDY_STEP_DONE, "llm", "{}", &a);
    wait_ack(&f, &a);
    assert_int_equal(a.status, 0);
    fx_reopen(&f);
    size_t fin;
    assert_int_equal(eddy_store_replay_count(f.s, &fin), 3);
    assert_int_equal(fin, 0);
    const eddy_replay *r = eddy_store_replay(f.s, "ag", P0, 9);
    assert_non_null(r);
    assert_int_equal(r->done, 0);
    assert_null(r->outcome);
    assert_int_equal(r->input_hash, 63);
    assert_int_equal(r->nsteps, 4);
    static const char *const want[] = {"{\"answer\":\"a\"}", "{\"call\":\"refund\"}",
                                       "{\"answer\":\"c\"}", "[1,\"two\",null]"};
    static const int wstate[] = {EDDY_STEP_DONE, EDDY_STEP_PENDING, EDDY_STEP_DONE, EDDY_STEP_DONE};
    static const char *const wkind[] = {"llm", "tool", "llm", "tool"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r->steps[i].step, i + 1);
        assert_int_equal(r->steps[i].state, wstate[i]);
        assert_string_equal(r->steps[i].kind, wkind[i]);
        assert_json_eq(r->steps[i].data, want[i]);
    }
    r = eddy_store_replay(f.s, "other", P0, 9);
    assert_non_null(r);
    assert_int_equal(r->nsteps, 1);
    assert_json_eq(r->steps[0].data, "\"scalar\"");
    /* the end of the run deletes its steps, not those of another agent */
    run_done(&f, "ag", "k", P0, 9, 1, "{}", NULL, 1);
    assert_int_equal(
        sql_count(f.path, "SELECT count(*) FROM journal WHERE agent='ag' AND part=1001"), 0);
    assert_int_equal(sql_count(f.path, "SELECT count(*) FROM journal"), 2);
    /* a step and its run's end in one batch: the step is never written */
    memset(&a, 0, sizeof(a));
    ack a2 = {0};
    put_step(&f, "ag", "k3", P1, 20, 1, EDDY_STEP_DONE, "llm", "{}", &a);
    post_done(&f, "ag", "k3", P1, 20, 1, "{}", NULL, 1, &a2);
    wait_ack(&f, &a2);
    wait_ack(&f, &a);
    assert_int_equal(a.status, 0);
    assert_int_equal(sql_count(f.path, "SELECT count(*) FROM journal WHERE pos=20"), 0);
    fx_reopen(&f);
    r = eddy_store_replay(f.s, "ag", P0, 9);
    assert_non_null(r);
    assert_int_equal(r->done, 1);
    assert_int_equal(r->nsteps, 0);
    r = eddy_store_replay(f.s, "ag", P1, 20);
    assert_non_null(r);
    assert_int_equal(r->done, 1);
    assert_int_equal(r->nsteps, 0);
    fx_close(&f);
}

/* A sink commit's state (a Fluss log sink's offsets) is kept as JSON and
 * replaced by the next commit; a commit without one clears it. A store of
 * schema 3 (sinks without a state) is migrated to 4 at open, its commits
 * kept. eddy_store_replay_at walks the replay table. */
static void test_sink_state_and_migration(void **state)
{
    fx f;
    ack a = {0};
    eddy_err e;
    (void)state;
    fx_open(&f, "sinkstate", NULL);
    eddy_sink_commit sk[] = {{"db.t", -1, 3, "{\"table_id\": 7, \"offsets\": [4, 0, 9]}"},
                             {"out.jsonl", 55, 3, NULL}};
    eddy_checkpoint c = {NULL, 0, NULL, 0, sk, 2};
    assert_int_equal(eddy_store_checkpoint(f.ss, &c, on_ack, &a, &e), 0);
    wait_ack(&f, &a);
    assert_int_equal(a.status, 0);
    run_done(&f, "ag", "k", P0, 1, 1, "{}", NULL, 1);
    run_done(&f, "ag", "k", P0, 2, 1, "{}", NULL, 1);
    fx_reopen(&f);
    assert_json_eq(eddy_store_sinks(f.s),
                   "{\"db.t\": {\"length\": -1, \"count\": 3, \"state\": {\"table_id\": 7,"
                   " \"offsets\": [4, 0, 9]}}, \"out.jsonl\": {\"length\": 55, \"count\": 3}}");
    const char *agent = NULL;
    int64_t part = 0, pos = 0, seen = 0;
    size_t n = eddy_store_replay_count(f.s, NULL);
    assert_int_equal(n, 2);
    for (size_t i = 0; i < n; i++) {
        const eddy_replay *r = eddy_store_replay_at(f.s, i, &agent, &part, &pos);
        assert_non_null(r);
        assert_string_equal(agent, "ag");
        assert_int_equal(part, P0);
        assert_ptr_equal(r, eddy_store_replay(f.s, "ag", P0, pos));
        seen |= 1 << pos;
    }
    assert_int_equal(seen, 6);
    assert_null(eddy_store_replay_at(f.s, n, &agent, &part, &pos));
    eddy_sink_commit sk2[] = {{"db.t", -1, 5, NULL}};
    eddy_checkpoint c2 = {NULL, 0, NULL, 0, sk2, 1};
    memset(&a, 0, sizeof(a));
    assert_int_equal(eddy_store_checkpoint(f.ss, &c2, on_ack, &a, &e), 0);
    wait_ack(&f, &a);
    fx_close(&f);
    /* back to schema 3 as an older eddy left it: no state column */
    sqlite3 *db = sql_rw(f.path);
    sql_exec(db, "ALTER TABLE sinks DROP COLUMN state;"
                 "UPDATE meta SET value='3' WHERE key='schema_version'");
    sqlite3_close(db);
    char path[600];
    snprintf(path, sizeof(path), "%s", f.path);
    fx_open_path(&f, path, NULL);
    assert_int_equal(sql_count(f.path, "SELECT value FROM meta WHERE key='schema_version'"), 4);
    assert_json_eq(eddy_store_sinks(f.s), "{\"db.t\": {\"length\": -1, \"count\": 5},"
                                          " \"out.jsonl\": {\"length\": 55, \"count\": 3}}");
    eddy_sink_commit sk3[] = {{"db.t", -1, 6, "{\"table_id\": 7, \"offsets\": [5, 1, 9]}"}};
    eddy_checkpoint c3 = {NULL, 0, NULL, 0, sk3, 1};
    memset(&a, 0, sizeof(a));
    assert_int_equal(eddy_store_checkpoint(f.ss, &c3, on_ack, &a, &e), 0);
    wait_ack(&f, &a);
    assert_int_equal(a.status, 0);
    fx_reopen(&f);
    assert_json_eq(json_object_get(json_object_get(eddy_store_sinks(f.s), "db.t"), "state"),
                   "{\"table_id\": 7, \"offsets\": [5, 1, 9]}");
    fx_close(&f);
    /* a state that is not JSON is a corrupt store, named */
    db = sql_rw(f.path);
    sql_exec(db, "UPDATE sinks SET state='{oops' WHERE sink='db.t'");
    sqlite3_close(db);
    eddy_store *s = NULL;
    assert_int_equal(eddy_store_open(f.path, NULL, &s, &e), EDDY_ECORRUPT);
    assert_non_null(strstr(e.msg, "the state of sink 'db.t' is not JSON"));
}

/* Checkpoints: positions and sink commits are stored (and replaced by the
 * next one), delivered marks set, and GC deletes the run and step rows
 * below the position of that part only. */
static void test_checkpoint_positions_and_gc(void **state)
{
    fx f;
    ack a = {0};
    eddy_err e;
    (void)state;
    fx_open(&f, "ckpt", NULL);
    for (int i = 1; i <= 3; i++)
        run_done(&f, "ag", "k", P0, i, 1, "{}", NULL, 1);
    run_done(&f, "ag2", "k", P0, 1, 1, "{}", NULL, 1); /* another agent, same record */
    run_done(&f, "ag", "k", P1, 1, 1, "{}", NULL, 1);
    run_done(&f, "ag", "k", P1, 2, 0, "{}", NULL, 1);
    put_step(&f, "ag", "j", P0, 0, 1, EDDY_STEP_DONE, "llm", "{}", NULL); /* in flight, below */
    put_step(&f, "ag", "j", P0, 4, 1, EDDY_STEP_DONE, "llm", "{}", NULL); /* in flight, above */
    put_step(&f, "ag", "j", P1, 0, 1, EDDY_STEP_DONE, "llm", "{}", NULL); /* other part */
    eddy_position pos[] = {{"src", "p0", P0, 3, 30, 0x5eed}};
    eddy_delivered del[] = {{"ag", P0, 3}, {"ag", P1, 1}, {"ag", P0, 1}};
    eddy_sink_commit sk[] = {{"out", 123, 4, NULL}, {"dead", 9, 1, NULL}};
    eddy_checkpoint c = {pos, 1, del, 3, sk, 2};
    assert_int_equal(eddy_store_checkpoint(f.ss, &c, on_ack, &a, &e), 0);
    wait_ack(&f, &a);
    assert_int_equal(a.status, 0);
    fx_reopen(&f);
    assert_json_eq(eddy_store_positions(f.s),
                   "{\"src\": {\"p0\": {\"pos\": 3, \"line\": 30, \"fp\": 24301}}}");
    assert_json_eq(eddy_store_sinks(f.s), "{\"out\": {\"length\": 123, \"count\": 4},"
                                          " \"dead\": {\"length\": 9, \"count\": 1}}");
    assert_null(eddy_store_replay(f.s, "ag", P0, 1));
    assert_null(eddy_store_replay(f.s, "ag", P0, 2));
    assert_null(eddy_store_replay(f.s, "ag2", P0, 1)); /* positions are per part */
    assert_null(eddy_store_replay(f.s, "ag", P0, 0));
    const eddy_replay *r = eddy_store_replay(f.s, "ag", P0, 3);
    assert_non_null(r);
    assert_int_equal(r->delivered, 1);
    r = eddy_store_replay(f.s, "ag", P0, 4);
    assert_non_null(r);
    assert_int_equal(r->done, 0);
    assert_int_equal(r->nsteps, 1);
    r = eddy_store_replay(f.s, "ag", P1, 1);
    assert_non_null(r);
    assert_int_equal(r->delivered, 1);
    r = eddy_store_replay(f.s, "ag", P1, 2);
    assert_non_null(r);
    assert_int_equal(r->delivered, 0);
    assert_int_equal(r->ok, 0);
    assert_non_null(eddy_store_replay(f.s, "ag", P1, 0));
    size_t fin;
    assert_int_equal(eddy_store_replay_count(f.s, &fin), 5);
    assert_int_equal(fin, 3);
    /* the next checkpoint moves p0 on, adds p1, replaces a sink's commit */
    eddy_position pos2[] = {{"src", "p0", P0, 5, 50, 1}, {"src", "p1", P1, 1, 10, 2}};
    eddy_sink_commit sk2[] = {{"out", 200, 6, NULL}};
    eddy_checkpoint c2 = {pos2, 2, NULL, 0, sk2, 1};
    memset(&a, 0, sizeof(a));
    assert_int_equal(eddy_store_checkpoint(f.ss, &c2, on_ack, &a, &e), 0);
    wait_ack(&f, &a);
    fx_reopen(&f);
    assert_json_eq(eddy_store_positions(f.s),
                   "{\"src\": {\"p0\": {\"pos\": 5, \"line\": 50, \"fp\": 1},"
                   " \"p1\": {\"pos\": 1, \"line\": 10, \"fp\": 2}}}");
    assert_json_eq(eddy_store_sinks(f.s), "{\"out\": {\"length\": 200, \"count\": 6},"
                                          " \"dead\": {\"length\": 9, \"count\": 1}}");
    assert_null(eddy_store_replay(f.s, "ag", P0, 3));
    assert_null(eddy_store_replay(f.s, "ag", P0, 4));
    assert_null(eddy_store_replay(f.s, "ag", P1, 0));
    assert_non_null(eddy_store_replay(f.s, "ag", P1, 1));
    assert_int_equal(eddy_store_replay_count(f.s, &fin), 2);
    assert_int_equal(sql_count(f.path, "SELECT count(*) FROM journal"), 0);
    /* an empty checkpoint is a job like another */
    eddy_checkpoint c3 = {0};
    memset(&a, 0, sizeof(a));
    assert_int_equal(eddy_store_checkpoint(f.ss, &c3, on_ack, &a, &e), 0);
    wait_ack(&f, &a);
    assert_int_equal(a.status, 0);
    fx_close(&f);
}

/* Arguments the API cannot store are refused as such (EDDY_EINVAL), not
 * as an out-of-memory: a run's outcome that is missing, a doc that is not
 * an object, a step without a kind. Nothing is queued. */
static void test_bad_args_are_einval(void **state)
{
    fx f;
    eddy_err e = {0};
    json_t *str = json_string("not an object"), *obj = json_object();
    (void)state;
    fx_open(&f, "badargs", NULL);
    eddy_run_end no_outcome = {{"ag", "k", P0, 1, 0}, 1, obj, NULL, 1, NULL};
    eddy_run_end str_doc = {{"ag", "k", P0, 2, 0}, 1, str, NULL, 1, obj};
    eddy_run_ref ref = {"ag", "k", P0, 3, 0};
    int rc1 = eddy_store_run_done(f.ss, &no_outcome, NULL, NULL, &e);
    int rc2 = eddy_store_run_done(f.ss, &str_doc, NULL, NULL, &e);
    int rc3 = eddy_store_put_step(f.ss, &ref, 1, EDDY_STEP_DONE, NULL, obj, NULL, NULL, &e);
    assert_int_equal(eddy_store_session_pending(f.ss), 0);
    json_decref(str);
    json_decref(obj);
    fx_close(&f);
    if (rc1 != EDDY_EINVAL || rc2 != EDDY_EINVAL || rc3 != EDDY_EINVAL)
        fail_msg("no outcome: %s, a string doc: %s, no kind: %s (want EDDY_EINVAL each)",
                 eddy_err_name(rc1), eddy_err_name(rc2), eddy_err_name(rc3));
}

/* -- shared state ------------------------------------------------------------------ */

static json_t *op(fx *f, const char *agent, const char *o, const char *key, const char *a,
                  const char *b, const eddy_run_ref *ref, int step, eddy_err *e)
{
    json_t *ja = a ? js(a) : NULL, *jb = b ? js(b) : NULL;
    json_t *r = eddy_store_state_op(f->ss, agent, o, key, ja, jb, ref, step, e);
    json_decref(ja);
    json_decref(jb);
    return r;
}

static void op_ok(fx *f, const char *agent, const char *o, const char *key, const char *a,
                  const char *b, const char *want)
{
    eddy_err e;
    json_t *r = op(f, agent, o, key, a, b, NULL, 0, &e);
    if (!r)
        fail_msg("state %s %s: %s", o, key, e.msg);
    assert_json_eq(r, want);
    json_decref(r);
}

static void op_err(fx *f, const char *o, const char *key, const char *a, const char *b, int code)
{
    eddy_err e = {0};
    json_t *r = op(f, "ag", o, key, a, b, NULL, 0, &e);
    if (r)
        fail_msg("state %s %s: expected an error", o, key);
    assert_int_equal(e.code, code);
    assert_true(e.msg[0] != 0);
}

#define assert_state(f, agent, key, want) assert_state_at(f, agent, key, want, __FILE__, __LINE__)
static void assert_state_at(fx *f, const char *agent, const char *key, const char *want,
                            const char *file, int line)
{
    json_t *v = eddy_store_state_get(f->s, agent, key);
    if (!want) {
        if (v)
            _fail(file, line);
        return;
    }
    assert_json_eq_at(v, want, file, line);
    json_decref(v);
}

static void test_state_ops(void **state)
{
    fx f;
    (void)state;
    fx_open(&f, "state", NULL);
    op_ok(&f, "ag", "get", "c", NULL, NULL, "null");
    op_ok(&f, "ag", "incr", "c", NULL, NULL, "1");
    op_ok(&f, "ag", "incr", "c", "41", NULL, "42");
    op_ok(&f, "ag", "incr", "c", "-2", NULL, "40");
    op_ok(&f, "ag", "incr", "r", "0.5", NULL, "0.5");
    op_ok(&f, "ag", "incr", "r", "2", NULL, "2.5");
    op_ok(&f, "ag", "set", "o", "{\"a\":[1,2]}", NULL, "null");
    op_ok(&f, "ag", "get", "o", NULL, NULL, "{\"a\":[1,2]}");
    op_ok(&f, "ag", "set", "o", "\"replaced\"", NULL, "null");
    op_ok(&f, "ag", "compare_and_set", "o", "\"wrong\"", "1", "false");
    op_ok(&f, "ag", "get", "o", NULL, NULL, "\"replaced\"");
    op_ok(&f, "ag", "compare_and_set", "o", "\"replaced\"", "{\"n\":1}", "true");
    op_ok(&f, "ag", "compare_and_set", "new", "null", "7", "true"); /* absent -> set */
    op_ok(&f, "ag", "compare_and_set", "new", "null", "8", "false");
    op_ok(&f, "ag", "compare_and_set", "gone", NULL, "1", "true");
    op_ok(&f, "ag", "compare_and_set", "gone", "1", "null", "true"); /* null: delete */
    op_ok(&f, "ag", "delete", "gone", NULL, NULL, "false");
    op_ok(&f, "ag", "set", "del", "1", NULL, "null");
    op_ok(&f, "ag", "delete", "del", NULL, NULL, "true");
    op_ok(&f, "ag", "delete", "del", NULL, NULL, "false");
    op_ok(&f, "ag2", "set", "c", "\"ag2's\"", NULL, "null"); /* same key, another agent */
    op_ok(&f, "ag", "set", "C", "\"upper\"", NULL, "null");
    /* bad arguments: nothing changes */
    op_err(&f, "get", "", NULL, NULL, EDDY_EINVAL);
    op_err(&f, "set", "", "1", NULL, EDDY_EINVAL);
    char big[1026];
    memset(big, 'k', sizeof(big) - 1);
    big[1025] = 0;
    op_err(&f, "set", big, "1", NULL, EDDY_EINVAL);
    big[1024] = 0; /* 1024 bytes is allowed */
    op_ok(&f, "ag", "set", big, "\"long key\"", NULL, "null");
    op_err(&f, "set", "x", NULL, NULL, EDDY_EINVAL);
    op_err(&f, "set", "x", "null", NULL, EDDY_EINVAL);
    op_err(&f, "incr", "o", NULL, NULL, EDDY_EINVAL);    /* holds an object */
    op_err(&f, "incr", "c", "\"1\"", NULL, EDDY_EINVAL); /* not a number */
    op_err(&f, "frobnicate", "c", NULL, NULL, EDDY_EINVAL);
    op_ok(&f, "ag", "set", "max", "9223372036854775807", NULL, "null");
    op_err(&f, "incr", "max", NULL, NULL, EDDY_ERANGE);
    size_t n = (1u << 20) + 16;
    char *s = malloc(n + 3);
    memset(s + 1, 'v', n);
    s[0] = '"';
    s[n + 1] = '"';
    s[n + 2] = 0;
    op_err(&f, "set", "huge", s, NULL, EDDY_ERANGE);
    free(s);
    assert_state(&f, "ag", "c", "40");
    assert_state(&f, "ag", "x", NULL);
    assert_state(&f, "ag", "huge", NULL);
    fx_drain(&f);
    fx_reopen(&f);
    assert_state(&f, "ag", "c", "40");
    assert_state(&f, "ag", "r", "2.5");
    assert_state(&f, "ag", "o", "{\"n\":1}");
    assert_state(&f, "ag", "new", "7");
    assert_state(&f, "ag", "gone", NULL);
    assert_state(&f, "ag", "del", NULL);
    assert_state(&f, "ag2", "c", "\"ag2's\"");
    assert_state(&f, "ag", "C", "\"upper\"");
    assert_state(&f, "ag2", "C", NULL);
    assert_state(&f, "ag", big, "\"long key\"");
    assert_state(&f, "ag", "max", "9223372036854775807");
    assert_state(&f, "nobody", "c", NULL);
    assert_int_equal(sql_count(f.path, "SELECT count(*) FROM journal"), 0); /* no REF: no journal */
    fx_close(&f);
}

/* State ops of a tool call (REF given) are journaled with their result in
 * the same job; a get is journaled too (a re-run must see the same answer);
 * a refused op journals nothing. */
static void test_state_journaled(void **state)
{
    fx f;
    eddy_err e;
    eddy_run_ref ref = {"ag", "runkey", P0, 5, 35};
    (void)state;
    fx_open(&f, "statej", NULL);
    json_t *r = op(&f, "ag", "incr", "n", "3", NULL, &ref, 1, &e);
    assert_json_eq(r, "3");
    json_decref(r);
    r = op(&f, "ag", "get", "n", NULL, NULL, &ref, 2, &e);
    assert_json_eq(r, "3");
    json_decref(r);
    r = op(&f, "ag", "compare_and_set", "n", "4", "5", &ref, 3, &e);
    assert_json_eq(r, "false");
    json_decref(r);
    assert_null(op(&f, "ag", "incr", "", NULL, NULL, &ref, 4, &e));
    r = op(&f, "ag", "delete", "n", NULL, NULL, &ref, 5, &e);
    assert_json_eq(r, "true");
    json_decref(r);
    r = op(&f, "ag", "get", "n", NULL, NULL, &ref, -2001, &e); /* agents/run.c's numbering */
    assert_json_eq(r, "null");
    json_decref(r);
    fx_drain(&f);
    fx_reopen(&f);
    assert_state(&f, "ag", "n", NULL);
    const eddy_replay *rp = eddy_store_replay(f.s, "ag", P0, 5);
    assert_non_null(rp);
    assert_int_equal(rp->done, 0);
    assert_int_equal(rp->input_hash, 35);
    assert_int_equal(rp->nsteps, 5);
    static const int wstep[] = {-2001, 1, 2, 3, 5};
    static const char *const wdata[] = {"{\"result\":null}", "{\"result\":3}", "{\"result\":3}",
                                        "{\"result\":false}", "{\"result\":true}"};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(rp->steps[i].step, wstep[i]);
        assert_int_equal(rp->steps[i].state, EDDY_STEP_DONE);
        assert_string_equal(rp->steps[i].kind, "state");
        assert_true(json_is_integer(json_object_get(rp->steps[i].data, "opkey")));
        json_t *d = json_deep_copy(rp->steps[i].data);
        json_object_del(d, "opkey");
        assert_json_eq(d, wdata[i]);
        json_decref(d);
    }
    assert_int_equal(sql_count(f.path, "SELECT count(*) FROM journal WHERE key='runkey'"), 5);
    fx_close(&f);
}

/* A shared key that is not valid UTF-8 (ctx.state keys are Lua strings:
 * any bytes). */
static void test_state_binary_key(void **state)
{
    fx f;
    (void)state;
    fx_open(&f, "statebin", NULL);
    op_ok(&f, "ag", "set", "\xff\xfe-bin", "1", NULL, "null");
    assert_state(&f, "ag", "\xff\xfe-bin", "1");
    fx_drain(&f);
    fx_reopen(&f);
    assert_state(&f, "ag", "\xff\xfe-bin", "1");
    fx_close(&f);
}

/* -- isolation --------------------------------------------------------------------- */

#define NKEYS 10

static void iso_keys(const char *keys[NKEYS], const char *agents[NKEYS], char *long1, char *long2)
{
    static const char *const k[] = {
        "key", "Key", "KEY", "key ", "caf\xc3\xa9", "cafe\xcc\x81", "\x01\x02\x7f\xff\xfe", "key"};
    static const char *const a[] = {"ag", "ag", "ag", "ag", "ag", "ag", "ag", "ag2"};
    memset(long1, 'x', 10240);
    long1[10240] = 0;
    memcpy(long2, long1, 10241);
    long2[10239] = 'y';
    for (int i = 0; i < 8; i++) {
        keys[i] = k[i];
        agents[i] = a[i];
    }
    keys[8] = long1;
    keys[9] = long2;
    agents[8] = agents[9] = "ag";
}

/* Same key under two agents; keys differing only by case, a trailing
 * space, Unicode normalization, non-UTF-8 bytes, or the last byte of 10 KB. */
static void test_isolation(void **state)
{
    fx f;
    const char *keys[NKEYS], *agents[NKEYS];
    char *long1 = malloc(10241), *long2 = malloc(10241);
    (void)state;
    iso_keys(keys, agents, long1, long2);
    fx_open(&f, "iso", NULL);
    for (int i = 0; i < NKEYS; i++) {
        char d[32];
        snprintf(d, sizeof(d), "{\"i\": %d}", i);
        run_done(&f, agents[i], keys[i], P0, i + 1, 1, d, "[{\"t\":1}]", 2);
    }
    for (int round = 0; round < 3; round++) {
        if (round == 1)
            fx_new_session(&f); /* from SQLite */
        if (round == 2)
            fx_reopen(&f);
        for (int i = 0; i < NKEYS; i++) { /* not cached yet: from SQLite */
            char d[32];
            snprintf(d, sizeof(d), "{\"i\": %d}", i);
            assert_doc(&f, agents[i], keys[i], d);
        }
        for (int i = 0; i < NKEYS; i++) { /* again: now from the cache */
            char d[32];
            snprintf(d, sizeof(d), "{\"i\": %d}", i);
            assert_doc(&f, agents[i], keys[i], d);
        }
    }
    assert_doc(&f, "ag", "kéy", "{}");
    assert_doc(&f, "ag3", "key", "{}");
    assert_int_equal(sql_count(f.path, "SELECT count(*) FROM key_memory"), NKEYS);
    fx_close(&f);
    free(long1);
    free(long2);
}

/* The cache names an entry "AGENT\x1fKEY": agent "a" with key "b\x1fc" and
 * agent "a\x1fb" with key "c" are different keys in SQLite. */
static void test_isolation_separator(void **state)
{
    fx f;
    (void)state;
    fx_open(&f, "isosep", NULL);
    run_done(&f, "a",
             "b\x1f"
             "c",
             P0, 1, 1, "{\"who\":\"a / b^c\"}", NULL, 1);
    run_done(&f,
             "a\x1f"
             "b",
             "c", P0, 2, 1, "{\"who\":\"a^b / c\"}", NULL, 1);
    fx_new_session(&f);
    assert_doc(&f, "a",
               "b\x1f"
               "c",
               "{\"who\":\"a / b^c\"}");
    assert_doc(&f,
               "a\x1f"
               "b",
               "c", "{\"who\":\"a^b / c\"}");
    fx_close(&f);
}

/* -- large values ------------------------------------------------------------------ */

static char *filler(size_t n, unsigned seed)
{
    /* ASCII, quotes, backslashes, control characters, 2- and 3-byte UTF-8 */
    static const char *const parts[] = {"abc",  "\"",   "\\",        "\n",
                                        "\t",   "\x01", "\xc3\xa9",  "\xe2\x82\xac",
                                        "{}[]", " ",    "0123456789"};
    char *s = malloc(n + 8);
    size_t i = 0;
    while (i < n) {
        seed = seed * 1103515245u + 12345u;
        const char *p = parts[(seed >> 16) % (sizeof(parts) / sizeof(parts[0]))];
        size_t l = strlen(p);
        if (i + l > n)
            p = "z", l = 1;
        memcpy(s + i, p, l);
        i += l;
    }
    s[n] = 0;
    return s;
}

static void test_large_values(void **state)
{
    fx f;
    json_t *doc, *hist;
    eddy_err e;
    ack a = {0};
    (void)state;
    fx_open(&f, "large", NULL);
    char *blob = filler(5u << 20, 1), *text = filler(1u << 20, 2);
    json_t *d = json_pack("{s:s, s:[i, s]}", "blob", blob, "tail", 1, "end");
    json_t *m = json_pack("[{s:s, s:s}]", "role", "assistant", "text", text);
    json_t *oc = json_object();
    assert_non_null(d);
    assert_non_null(m);
    eddy_run_end end = {{"ag", "big", P0, 1, 0}, 1, d, m, 3, oc};
    assert_int_equal(eddy_store_run_done(f.ss, &end, on_ack, &a, &e), 0);
    wait_ack(&f, &a);
    assert_int_equal(a.status, 0);
    {
        fx_new_session(&f); /* from SQLite */
        load(&f, "ag", "big", 3, &doc, &hist);
        const char *b = json_string_value(json_object_get(doc, "blob"));
        assert_non_null(b);
        assert_int_equal(json_string_length(json_object_get(doc, "blob")), 5u << 20);
        assert_memory_equal(b, blob, 5u << 20);
        assert_true(json_equal(doc, d));
        assert_int_equal(json_array_size(hist), 1);
        const char *t = json_string_value(json_object_get(json_array_get(hist, 0), "text"));
        assert_non_null(t);
        assert_int_equal(strlen(t), 1u << 20);
        assert_memory_equal(t, text, 1u << 20);
        json_decref(doc);
        json_decref(hist);
    }
    json_decref(d);
    json_decref(m);
    json_decref(oc);
    free(blob);
    free(text);
    fx_close(&f);
}

/* -- the session cache ------------------------------------------------------------- */

static void cache_evicts(int64_t budget, const char *want)
{
    fx f;
    eddy_store_opts o = {0};
    eddy_store_session *other;
    eddy_err e;
    char pad[1100];
    o.cache_bytes = budget;
    memset(pad, 'p', 1000);
    pad[1000] = 0;
    fx_open(&f, "cache", &o);
    for (int i = 0; i < 40; i++) {
        char key[16], d[1200];
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(d, sizeof(d), "{\"v\": 1, \"pad\": \"%s\"}", pad);
        run_done(&f, "ag", key, P0, i + 1, 1, d, NULL, 1);
    }
    fx_new_session(&f);
    json_t *v;
    load(&f, "ag", "k0", 0, &v, NULL); /* k0 cached with v = 1 */
    assert_int_equal(json_integer_value(json_object_get(v, "v")), 1);
    json_decref(v);
    for (int i = 1; i < 40; i++) { /* 39 more entries of ~3 KB each */
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        load(&f, "ag", key, 0, &v, NULL);
        json_decref(v);
    }
    /* another session (its own cache) commits k0 = 2 */
    eddy_store_session *mine = f.ss;
    assert_int_equal(eddy_store_session_new(f.s, f.loop, &other, &e), 0);
    f.ss = other;
    run_done(&f, "ag", "k0", P0, 100, 1, "{\"v\": 2}", NULL, 1);
    fx_session_close(&f);
    f.ss = mine;
    /* evicted: read from SQLite, the committed value; else the cached one */
    load(&f, "ag", "k0", 0, &v, NULL);
    assert_json_eq(json_object_get(v, "v"), want);
    json_decref(v);
    fx_close(&f);
}

/* A small budget evicts (the next load reads the committed value); the
 * default one keeps the entry (the same test sees the cached value: the
 * check can fail). */
static void test_cache_budget_evicts(void **state)
{
    (void)state;
    cache_evicts(16 << 10, "2");
    cache_evicts(0, "1");
}

/* Hold the store's write lock from a connection of the test's own: the
 * persistence thread's next BEGIN IMMEDIATE waits (busy timeout 10 s). */
static sqlite3 *hold_writer(const char *path)
{
    sqlite3 *db = sql_rw(path);
    sql_exec(db, "BEGIN IMMEDIATE");
    return db;
}

static void release_writer(sqlite3 *db)
{
    sql_exec(db, "COMMIT");
    sqlite3_close(db);
}

/* A key whose write is in flight is never evicted: a load right after
 * run_done, before the ack, sees the new doc, even after loads of other
 * keys pushed the cache far past its budget. */
static void test_cache_keeps_inflight(void **state)
{
    fx f;
    eddy_store_opts o = {0};
    json_t *v;
    ack a = {0};
    char d[1200], pad[1001];
    (void)state;
    o.cache_bytes = 4096;
    memset(pad, 'p', 1000);
    pad[1000] = 0;
    fx_open(&f, "inflight", &o);
    for (int i = 0; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        snprintf(d, sizeof(d), "{\"v\": 1, \"pad\": \"%s\"}", pad);
        run_done(&f, "ag", key, P0, i + 1, 1, d, NULL, 1);
    }
    fx_new_session(&f);
    loaded l = {0};
    eddy_err e;
    assert_int_equal(eddy_store_load(f.ss, "ag", "k0", 0, on_load, &l, &e), 0); /* the run's load */
    while (!l.n)
        uv_run(f.loop, UV_RUN_ONCE);
    json_decref(l.doc);
    json_decref(l.hist);
    sqlite3 *lock = hold_writer(f.path);
    post_done(&f, "ag", "k0", P0, 100, 1, "{\"v\": 2}", NULL, 1, &a);
    for (int i = 1; i < 20; i++) {
        char key[16];
        snprintf(key, sizeof(key), "k%d", i);
        load(&f, "ag", key, 0, &v, NULL);
        json_decref(v);
    }
    load(&f, "ag", "k0", 0, &v, NULL);
    assert_int_equal(a.n, 0); /* not committed yet */
    assert_json_eq(v, "{\"v\": 2}");
    json_decref(v);
    assert_int_equal(
        sql_count(f.path, "SELECT count(*) FROM key_memory WHERE doc LIKE '%\"v\":2%'"), 0);
    release_writer(lock);
    wait_ack(&f, &a);
    assert_int_equal(a.status, 0);
    fx_new_session(&f);
    assert_doc(&f, "ag", "k0", "{\"v\": 2}");
    fx_close(&f);
}

/* memory.h, eddy_store_run_done: "The session's cache is updated at once
 * (the next load of the key sees it)". Here the key was not in the
 * session's cache when the run ended (not loaded by this session, or
 * evicted): the next load, before the commit, must still see the new doc. */
static void test_load_after_run_done_uncached(void **state)
{
    fx f;
    json_t *v;
    ack a = {0};
    (void)state;
    fx_open(&f, "uncached", NULL);
    run_done(&f, "ag", "k", P0, 1, 1, "{\"v\": 1}", NULL, 1);
    fx_new_session(&f);
    sqlite3 *lock = hold_writer(f.path);
    post_done(&f, "ag", "k", P0, 2, 1, "{\"v\": 2}", NULL, 1, &a);
    loaded l = {0};
    eddy_err e;
    assert_int_equal(eddy_store_load(f.ss, "ag", "k", 0, on_load, &l, &e), 0);
    while (!l.n)
        uv_run(f.loop, UV_RUN_ONCE);
    eddy_store_release(f.ss, "ag", "k");
    v = l.doc;
    json_decref(l.hist);
    release_writer(lock); /* before any assert: never leave the writer waiting */
    wait_ack(&f, &a);
    assert_json_eq(v, "{\"v\": 2}");
    json_decref(v);
    fx_close(&f);
}

/* -- group commits ----------------------------------------------------------------- */

typedef struct order {
    int seen[512], n, calls, fails;
    int status[512];
    char msg[512][64];
} order;

typedef struct tag {
    order *o;
    int i;
} tag;

static void on_order(int status, const char *errmsg, void *ud)
{
    tag *t = ud;
    order *o = t->o;
    o->calls++;
    o->seen[o->n] = t->i;
    o->status[t->i] = status;
    snprintf(o->msg[t->i], sizeof(o->msg[0]), "%s", errmsg ? errmsg : "");
    o->n++;
    if (status)
        o->fails++;
}

/* commit_max 4: 300 jobs of every kind posted at once are acknowledged in
 * posting order, each exactly once, all committed. */
static void test_group_commit_order(void **state)
{
    fx f;
    eddy_store_opts opts = {.commit_max = 4, .commit_ms = 2};
    static order o;
    static tag tags[300];
    eddy_err e;
    (void)state;
    memset(&o, 0, sizeof(o));
    fx_open(&f, "order", &opts);
    for (int i = 0; i < 300; i++) {
        char key[16];
        tags[i] = (tag){&o, i};
        snprintf(key, sizeof(key), "k%d", i % 17);
        eddy_run_ref ref = {"ag", key, P0, i, 0};
        json_t *d = json_pack("{s:i}", "i", i);
        if (i % 3 == 0) {
            assert_int_equal(eddy_store_put_step(f.ss, &ref, 1, EDDY_STEP_DONE, "llm", d, on_order,
                                                 &tags[i], &e),
                             0);
        } else if (i % 3 == 1 || i % 30 != 29) {
            eddy_run_end end = {ref, 1, d, NULL, 1, d};
            assert_int_equal(eddy_store_run_done(f.ss, &end, on_order, &tags[i], &e), 0);
        } else {
            eddy_sink_commit sk = {"out", i, i, NULL};
            eddy_checkpoint c = {NULL, 0, NULL, 0, &sk, 1};
            assert_int_equal(eddy_store_checkpoint(f.ss, &c, on_order, &tags[i], &e), 0);
        }
        json_decref(d);
    }
    assert_int_equal(o.calls, 0);
    assert_int_equal(eddy_store_session_pending(f.ss), 300);
    fx_drain(&f);
    assert_int_equal(o.calls, 300);
    assert_int_equal(o.fails, 0);
    for (int i = 0; i < 300; i++)
        assert_int_equal(o.seen[i], i);
    fx_new_session(&f);
    for (int k = 0; k < 17; k++) { /* each key's doc is its last run's */
        char key[16], want[32];
        int last = -1;
        for (int i = 0; i < 300; i++)
            if (i % 17 == k && i % 3 != 0 && !(i % 3 == 2 && i % 30 == 29))
                last = i;
        snprintf(key, sizeof(key), "k%d", k);
        snprintf(want, sizeof(want), "{\"i\": %d}", last);
        assert_doc(&f, "ag", key, want);
    }
    fx_close(&f);
}

/* A job that SQLite refuses (a trigger of the test's raises on the run row
 * of key "bad", after the doc and history were written) rolls back alone:
 * the other jobs of its batch commit, its callback has the error, the
 * cached memory of the key is dropped and read again (the committed one). */
static void test_failed_job_alone(void **state)
{
    fx f;
    eddy_store_opts opts = {.commit_max = 4, .commit_ms = 50};
    static order o;
    static tag tags[12];
    json_t *v, *h;
    (void)state;
    memset(&o, 0, sizeof(o));
    fx_open(&f, "failjob", &opts);
    run_done(&f, "ag", "bad", P0, 100, 1, "{\"v\":\"old\"}", "[{\"t\":\"old\"}]", 5);
    sqlite3 *db = sql_rw(f.path);
    sql_exec(db, "CREATE TRIGGER inject BEFORE INSERT ON runs WHEN NEW.key='bad' "
                 "BEGIN SELECT RAISE(ABORT, 'injected failure'); END");
    sqlite3_close(db);
    load(&f, "ag", "bad", 5, &v, &h); /* cached */
    json_decref(v);
    json_decref(h);
    loaded l = {0};
    eddy_err e;
    assert_int_equal(eddy_store_load(f.ss, "ag", "bad", 5, on_load, &l, &e), 0); /* the run's */
    while (!l.n)
        uv_run(f.loop, UV_RUN_ONCE);
    json_decref(l.doc);
    json_decref(l.hist);
    /* hold the writer so that all 12 jobs are queued together: batches of 4 */
    sqlite3 *lock = hold_writer(f.path);
    for (int i = 0; i < 12; i++) {
        char key[16];
        tags[i] = (tag){&o, i};
        snprintf(key, sizeof(key), i == 5 ? "bad" : "g%d", i);
        json_t *d = json_pack("{s:i}", "v", i), *m = json_pack("[{s:i}]", "t", i);
        eddy_run_end end = {{"ag", key, P0, i, 0}, 1, d, m, 5, d};
        assert_int_equal(eddy_store_run_done(f.ss, &end, on_order, &tags[i], &e), 0);
        json_decref(d);
        json_decref(m);
    }
    load(&f, "ag", "bad", 5, &v, NULL); /* before the commit: the run's doc */
    assert_json_eq(v, "{\"v\":5}");
    json_decref(v);
    release_writer(lock);
    fx_drain(&f);
    assert_int_equal(o.calls, 12);
    assert_int_equal(o.fails, 1);
    for (int i = 0; i < 12; i++) {
        assert_int_equal(o.seen[i], i);
        assert_int_equal(o.status[i] != 0, i == 5);
    }
    assert_int_equal(o.status[5], EDDY_ESQLITE);
    assert_non_null(strstr(o.msg[5], "injected failure"));
    /* the same session: the stale entry went, the load reads SQLite */
    load(&f, "ag", "bad", 5, &v, &h);
    assert_json_eq(v, "{\"v\":\"old\"}");
    assert_json_eq(h, "[{\"t\":\"old\"}]");
    json_decref(v);
    json_decref(h);
    fx_reopen(&f);
    assert_null(eddy_store_replay(f.s, "ag", P0, 5));
    for (int i = 0; i < 12; i++) {
        char key[16], want[32];
        if (i == 5)
            continue;
        snprintf(key, sizeof(key), "g%d", i);
        snprintf(want, sizeof(want), "{\"v\": %d}", i);
        assert_doc(&f, "ag", key, want);
        assert_non_null(eddy_store_replay(f.s, "ag", P0, i));
    }
    load(&f, "ag", "bad", 5, &v, &h);
    assert_json_eq(v, "{\"v\":\"old\"}");
    assert_json_eq(h, "[{\"t\":\"old\"}]");
    json_decref(v);
    json_decref(h);
    fx_close(&f);
}

/* -- torn writes ------------------------------------------------------------------- */

enum { OP_STEP, OP_DONE, OP_CKPT, OP_STATE };

/* One posted job of the crash script. Runs are named "PART/POS" (PART 0 or 1). */
typedef struct sop {
    int kind, phase, part;
    int64_t pos;
    int step, state;              /* STEP; STATE: the journal step when REF */
    const char *skind, *data;     /* STEP */
    const char *key, *doc, *msgs; /* DONE */
    int ok, keep;
    int ck;                              /* CKPT: which one */
    const char *sop, *skey, *a, *result; /* STATE: op, key, argument, expected result */
    const char *newv;                    /* STATE: the key's new value; NULL: deleted; "": same */
    int ref;                             /* STATE: journaled as step STEP of run PART/POS */
} sop;

static const eddy_position kCkPos0[] = {{"src", "p0", 1001, 2, 20, 7}};
static const eddy_delivered kCkDel0[] = {{"ag", 1001, 1}, {"ag", 1002, 1}};
static const eddy_sink_commit kCkSink0[] = {{"out", 10, 2, NULL}, {"err", 3, 1, NULL}};
static const eddy_position kCkPos1[] = {{"src", "p0", 1001, 3, 30, 8},
                                        {"src", "p1", 1002, 4, 40, 9}};
static const eddy_delivered kCkDel1[] = {{"ag", 1001, 2}};
static const eddy_sink_commit kCkSink1[] = {{"out", 20, 3, NULL}};
static const eddy_checkpoint kCk[] = {{kCkPos0, 1, kCkDel0, 2, kCkSink0, 2},
                                      {kCkPos1, 2, kCkDel1, 1, kCkSink1, 1}};

#define STEP(ph, pa, po, st, sta, k, d)                                                            \
    {                                                                                              \
        OP_STEP, ph, pa, po, st, sta, k, d, .key = "j"                                             \
    }
#define DONE(ph, pa, po, k, o, d, m, kp)                                                           \
    {                                                                                              \
        OP_DONE, ph, pa, po, .key = k, .ok = o, .doc = d, .msgs = m, .keep = kp                    \
    }
#define CKPT(ph, c)                                                                                \
    {                                                                                              \
        OP_CKPT, ph, .ck = c                                                                       \
    }
#define STATE(ph, o, k, a_, res, nv)                                                               \
    {                                                                                              \
        OP_STATE, ph, .sop = o, .skey = k, .a = a_, .result = res, .newv = nv                      \
    }
#define STATER(ph, o, k, a_, res, nv, pa, po, st)                                                  \
    {                                                                                              \
        OP_STATE, ph, pa, po, st, .sop = o, .skey = k, .a = a_, .result = res, .newv = nv,         \
                                  .ref = 1                                                         \
    }

/* Phase 0 builds the store every child starts from; phases 1-4 are posted
 * by the child, each at once, the next one after every ack of the last. */
static const sop kScript[] = {
    DONE(0, 0, 0, "k1", 1, "{\"v\":0}", "[{\"m\":\"base\"}]", 2),
    STATE(0, "set", "s", "0", "null", "0"),
    STEP(1, 0, 1, 1, EDDY_STEP_DONE, "llm", "{\"a\":1}"),
    STEP(1, 0, 1, 2, EDDY_STEP_PENDING, "tool", "{\"a\":2}"),
    STATE(1, "set", "s1", "\"x\"", "null", "\"x\""),
    STATER(1, "incr", "ctr", NULL, "1", "1", 0, 2, 1),
    STEP(1, 1, 1, 1, EDDY_STEP_DONE, "llm", "{\"b\":1}"),
    DONE(2, 0, 1, "k1", 1, "{\"v\":1}", "[{\"m\":\"r1\"},{\"m\":\"r1b\"}]", 2),
    DONE(2, 1, 1, "k2", 1, "{\"w\":1}", "[{\"m\":\"r2\"}]", 2),
    DONE(2, 1, 3, "k3", 0, "{\"never\":1}", "[{\"m\":\"never\"}]", 2),
    STATER(2, "incr", "ctr", NULL, "2", "2", 0, 2, 2),
    CKPT(3, 0),
    STEP(3, 0, 2, 3, EDDY_STEP_DONE, "llm", "{\"c\":3}"),
    STATER(3, "get", "ctr", NULL, "2", "", 0, 2, 4),
    DONE(4, 0, 2, "k1", 1, "{\"v\":2}", "[{\"m\":\"r3\"}]", 2),
    STATER(4, "delete", "s1", NULL, "true", NULL, 1, 4, 1),
    STATE(4, "incr", "s", "5", "5", "5"),
    CKPT(4, 1),
};
#define NSCRIPT ((int)(sizeof(kScript) / sizeof(kScript[0])))
static const char *const kRunNames[] = {"0/0", "0/1", "0/2", "1/1", "1/3", "1/4"};
static const char *const kMemKeys[] = {"k1", "k2", "k3"};
static const char *const kStateKeys[] = {"s", "s1", "ctr"};

static int64_t part_of(int i)
{
    return i ? 1002 : 1001;
}

static json_t *outcome_of(const char *key, int ok, int64_t pos)
{
    return ok ? json_pack("{s:s, s:I}", "out", key, "pos", (json_int_t)pos)
              : json_pack("{s:s}", "dead", key);
}

static int g_child_fails;

static void on_child_ack(int status, const char *errmsg, void *ud)
{
    (void)errmsg;
    (void)ud;
    if (status)
        g_child_fails++;
}

/* Post one op of the script (no cmocka here: the child runs it too).
 * Returns 0, or 2 when the API refused it, 3 when a state op answered
 * something else than the script says. */
static int post_op(eddy_store_session *ss, const sop *o)
{
    eddy_err e;
    eddy_run_ref ref = {"ag", o->key ? o->key : "j", part_of(o->part), o->pos, o->pos * 7};
    int rc = 0;
    json_t *d = NULL, *m = NULL, *oc = NULL, *a = NULL, *res, *want;
    switch (o->kind) {
    case OP_STEP:
        d = json_loads(o->data, JSON_DECODE_ANY, NULL);
        rc = eddy_store_put_step(ss, &ref, o->step, o->state, o->skind, d, on_child_ack, NULL, &e);
        break;
    case OP_DONE: {
        d = json_loads(o->doc, 0, NULL);
        m = json_loads(o->msgs, 0, NULL);
        oc = outcome_of(o->key, o->ok, o->pos);
        eddy_run_end end = {ref, o->ok, d, m, o->keep, oc};
        rc = eddy_store_run_done(ss, &end, on_child_ack, NULL, &e);
        break;
    }
    case OP_CKPT:
        rc = eddy_store_checkpoint(ss, &kCk[o->ck], on_child_ack, NULL, &e);
        break;
    default:
        ref.key = "tool";
        a = o->a ? json_loads(o->a, JSON_DECODE_ANY, NULL) : NULL;
        res = eddy_store_state_op(ss, "ag", o->sop, o->skey, a, NULL, o->ref ? &ref : NULL, o->step,
                                  &e);
        want = json_loads(o->result, JSON_DECODE_ANY, NULL);
        if (!res)
            rc = 2;
        else if (!json_equal(res, want))
            rc = 3;
        json_decref(res);
        json_decref(want);
    }
    json_decref(d);
    json_decref(m);
    json_decref(oc);
    json_decref(a);
    return rc ? (rc == 3 ? 3 : 2) : 0;
}

static void on_child_closed(void *ud)
{
    *(int *)ud = 1;
}

/* The child: phases FROM..TO with a crash before the Nth write (0: none).
 * Returns its exit status; a crash exits 86 from the persistence thread. */
static int run_script(const char *path, long n, int from, int to, int use_env)
{
    uv_loop_t loop;
    eddy_store *s;
    eddy_store_session *ss;
    eddy_err e;
    int closed = 0, rc = 0;
    if (use_env) {
        char v[32];
        snprintf(v, sizeof(v), "%ld", n);
        setenv("EDDY_STORE_CRASH_AT", v, 1);
    }
    if (uv_loop_init(&loop) || eddy_store_open(path, NULL, &s, &e))
        return 10;
    if (n && !use_env)
        eddy_store_crash_at(s, n);
    if (eddy_store_session_new(s, &loop, &ss, &e))
        return 11;
    for (int ph = from; !rc && ph <= to; ph++) {
        for (int i = 0; !rc && i < NSCRIPT; i++)
            if (kScript[i].phase == ph)
                rc = post_op(ss, &kScript[i]);
        while (eddy_store_session_pending(ss))
            uv_run(&loop, UV_RUN_ONCE);
        if (g_child_fails)
            rc = 4;
    }
    eddy_store_session_close(ss, on_child_closed, &closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
    eddy_store_close(s);
    if (uv_loop_close(&loop))
        return 12;
    return rc;
}

/* -- the model: what the store holds after the first K ops ---------------------- */

static json_t *model_run(json_t *runs, const sop *o, int part, int64_t pos)
{
    char name[32];
    snprintf(name, sizeof(name), "%d/%lld", part, (long long)pos);
    json_t *r = json_object_get(runs, name);
    (void)o;
    if (!r) {
        r = json_pack("{s:b, s:b, s:b, s:n, s:[]}", "done", 0, "ok", 0, "delivered", 0, "outcome",
                      "steps");
        json_object_set_new(runs, name, r);
    }
    return r;
}

static void model_step(json_t *runs, int part, int64_t pos, int step, int state, const char *kind,
                       json_t *data)
{
    json_t *r = model_run(runs, NULL, part, pos), *steps = json_object_get(r, "steps"), *st;
    size_t i;
    if (json_is_true(json_object_get(r, "done"))) { /* the replay table ignores them */
        json_decref(data);
        return;
    }
    json_t *row = json_pack("[i, i, s, o]", step, state, kind, data);
    json_array_foreach(steps, i, st)
    {
        int s = (int)json_integer_value(json_array_get(st, 0));
        if (s == step) {
            json_array_set_new(steps, i, row);
            return;
        }
        if (s > step) {
            json_array_insert_new(steps, i, row);
            return;
        }
    }
    json_array_append_new(steps, row);
}

static void model_apply(json_t *m, const sop *o)
{
    json_t *runs = json_object_get(m, "runs"), *mem = json_object_get(m, "mem");
    if (o->kind == OP_STEP) {
        model_step(runs, o->part, o->pos, o->step, o->state, o->skind, js(o->data));
    } else if (o->kind == OP_DONE) {
        char name[32];
        snprintf(name, sizeof(name), "%d/%lld", o->part, (long long)o->pos);
        if (o->ok) {
            json_t *k = json_object_get(mem, o->key);
            if (!k)
                json_object_set_new(mem, o->key, k = json_pack("{s:{}, s:[]}", "doc", "runs"));
            json_object_set_new(k, "doc", js(o->doc));
            json_t *hr = json_object_get(k, "runs");
            json_array_append_new(hr, js(o->msgs));
            while (json_array_size(hr) > (size_t)o->keep)
                json_array_remove(hr, 0);
        }
        json_object_set_new(runs, name,
                            json_pack("{s:b, s:b, s:b, s:o, s:[]}", "done", 1, "ok", o->ok,
                                      "delivered", 0, "outcome", outcome_of(o->key, o->ok, o->pos),
                                      "steps"));
    } else if (o->kind == OP_CKPT) {
        const eddy_checkpoint *c = &kCk[o->ck];
        for (size_t i = 0; i < c->ndelivered; i++) {
            char name[32];
            snprintf(name, sizeof(name), "%d/%lld", c->delivered[i].part == 1002,
                     (long long)c->delivered[i].pos);
            json_t *r = json_object_get(runs, name);
            if (r && json_is_true(json_object_get(r, "done")))
                json_object_set_new(r, "delivered", json_true());
        }
        for (size_t i = 0; i < c->npositions; i++) {
            const eddy_position *p = &c->positions[i];
            json_t *src = json_object_get(json_object_get(m, "pos"), p->source);
            if (!src)
                json_object_set_new(json_object_get(m, "pos"), p->source, src = json_object());
            json_object_set_new(src, p->part,
                                json_pack("{s:I, s:I, s:I}", "pos", (json_int_t)p->pos, "line",
                                          (json_int_t)p->line, "fp", (json_int_t)p->fp));
            const char *name;
            json_t *r;
            void *tmp;
            json_object_foreach_safe(runs, tmp, name, r)
            {
                int part = name[0] - '0';
                long long pos = strtoll(name + 2, NULL, 10);
                if (part_of(part) == p->part_hash && pos < p->pos)
                    json_object_del(runs, name);
            }
        }
        for (size_t i = 0; i < c->nsinks; i++)
            json_object_set_new(json_object_get(m, "sinks"), c->sinks[i].sink,
                                json_pack("{s:I, s:I}", "length", (json_int_t)c->sinks[i].length,
                                          "count", (json_int_t)c->sinks[i].count));
    } else {
        json_t *st = json_object_get(m, "state");
        if (!o->newv)
            json_object_del(st, o->skey);
        else if (o->newv[0])
            json_object_set_new(st, o->skey, js(o->newv));
        if (o->ref)
            model_step(runs, o->part, o->pos, o->step, EDDY_STEP_DONE, "state",
                       json_pack("{s:o}", "result", js(o->result)));
    }
}

/* The model as observed: each key's doc and its history's messages in one
 * array, the replay table's size. */
static json_t *model_view(json_t *m)
{
    json_t *v = json_deep_copy(m), *mem = json_object();
    for (size_t i = 0; i < 3; i++) {
        json_t *k = json_object_get(json_object_get(m, "mem"), kMemKeys[i]);
        json_t *flat = json_array(), *run;
        size_t j;
        json_array_foreach(json_object_get(k, "runs"), j, run) json_array_extend(flat, run);
        json_object_set_new(mem, kMemKeys[i],
                            json_pack("{s:O, s:o}", "doc",
                                      k ? json_object_get(k, "doc") : json_object(), "hist", flat));
        if (!k)
            json_decref(json_object_get(json_object_get(mem, kMemKeys[i]), "doc"));
    }
    json_object_set_new(v, "mem", mem);
    json_object_set_new(v, "nreplay",
                        json_integer((json_int_t)json_object_size(json_object_get(m, "runs"))));
    return v;
}

/* What a reopened store at PATH holds, in the model's shape. */
static json_t *observe(const char *path)
{
    fx f;
    json_t *o = json_pack("{s:{}, s:{}, s:{}}", "mem", "runs", "state");
    fx_open_path(&f, path, NULL);
    for (size_t i = 0; i < 3; i++) {
        json_t *doc, *hist;
        load(&f, "ag", kMemKeys[i], 10, &doc, &hist);
        json_object_set_new(json_object_get(o, "mem"), kMemKeys[i],
                            json_pack("{s:o, s:o}", "doc", doc, "hist", hist));
    }
    for (size_t i = 0; i < sizeof(kRunNames) / sizeof(kRunNames[0]); i++) {
        const char *n = kRunNames[i];
        const eddy_replay *r = eddy_store_replay(f.s, "ag", part_of(n[0] - '0'), atoi(n + 2));
        if (!r)
            continue;
        json_t *steps = json_array();
        for (size_t k = 0; k < r->nsteps; k++) {
            json_t *d = json_deep_copy(r->steps[k].data);
            if (json_is_object(d)) /* a state op's check of what it was, not in the model */
                json_object_del(d, "opkey");
            json_array_append_new(steps, json_pack("[i, i, s, o]", r->steps[k].step,
                                                   r->steps[k].state, r->steps[k].kind, d));
        }
        json_object_set_new(json_object_get(o, "runs"), n,
                            json_pack("{s:b, s:b, s:b, s:O?, s:o}", "done", r->done, "ok", r->ok,
                                      "delivered", r->delivered, "outcome",
                                      r->outcome ? r->outcome : json_null(), "steps", steps));
    }
    json_object_set_new(o, "nreplay", json_integer((json_int_t)eddy_store_replay_count(f.s, NULL)));
    json_object_set_new(o, "pos", json_deep_copy(eddy_store_positions(f.s)));
    json_object_set_new(o, "sinks", json_deep_copy(eddy_store_sinks(f.s)));
    for (size_t i = 0; i < 3; i++) {
        json_t *v = eddy_store_state_get(f.s, "ag", kStateKeys[i]);
        if (v)
            json_object_set_new(json_object_get(o, "state"), kStateKeys[i], v);
    }
    fx_close(&f);
    return o;
}

static void remove_store(const char *path)
{
    char p[700];
    static const char *const ext[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s%s", path, ext[i]);
        unlink(p);
    }
}

/* Copy the closed store FROM (no -wal left: the last close checkpoints) to TO. */
static void copy_file(const char *from, const char *to)
{
    char buf[65536], wal[700];
    size_t n;
    snprintf(wal, sizeof(wal), "%s-wal", from);
    assert_int_equal(access(wal, F_OK), -1);
    remove_store(to);
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    assert_non_null(in);
    assert_non_null(out);
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
        assert_int_equal(fwrite(buf, 1, n, out), n);
    fclose(in);
    assert_int_equal(fclose(out), 0);
}

static int fork_script(const char *path, long n, int use_env)
{
    int st;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(run_script(path, n, 1, 4, use_env));
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* The child of test_group_commit_bound: with the writer held at the BEGIN
 * of a first batch of one job, 12 more jobs queue up; released, they are
 * taken in batches of at most COMMIT_MAX. Job BAD (if >= 0) has the key
 * "bad", whose run row a trigger refuses. Exits 86 when the persistence
 * thread reaches write CRASH_AT, 0 when all were committed (and only BAD
 * failed). */
static int bound_child(const char *path, int commit_max, long crash_at, int bad)
{
    uv_loop_t loop;
    eddy_store *s;
    eddy_store_session *ss;
    eddy_store_opts o = {.commit_max = commit_max, .commit_ms = 10000};
    eddy_err e;
    sqlite3 *db;
    int closed = 0, fails = 0;
    remove_store(path);
    if (uv_loop_init(&loop) || eddy_store_open(path, &o, &s, &e) ||
        eddy_store_session_new(s, &loop, &ss, &e))
        return 10;
    eddy_store_crash_at(s, crash_at);
    if (sqlite3_open(path, &db) != SQLITE_OK ||
        sqlite3_exec(db,
                     "CREATE TRIGGER inject BEFORE INSERT ON runs WHEN NEW.key='bad' "
                     "BEGIN SELECT RAISE(ABORT, 'injected failure'); END",
                     NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return 11;
    json_t *d = json_object(), *m = json_pack("[{s:s}]", "t", "x");
    for (int i = 0; i <= 12; i++) {
        char key[16];
        snprintf(key, sizeof(key), i == bad ? "bad" : "k%d", i);
        eddy_run_end end = {{"ag", key, P0, i, 0}, 1, d, m, 5, d};
        if (eddy_store_run_done(ss, &end, on_child_ack, &fails, &e))
            return 12;
        if (i == 0)
            usleep(50000); /* the writer took job 0 alone and waits at BEGIN */
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(db);
    while (eddy_store_session_pending(ss))
        uv_run(&loop, UV_RUN_ONCE);
    eddy_store_session_close(ss, on_child_closed, &closed);
    while (!closed)
        uv_run(&loop, UV_RUN_ONCE);
    eddy_store_close(s);
    json_decref(d);
    json_decref(m);
    return g_child_fails != (bad >= 0) ? 13 : uv_loop_close(&loop) ? 14 : 0;
}

static int fork_bound(const char *path, int commit_max, long crash_at, int bad)
{
    int st;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(bound_child(path, commit_max, crash_at, bad));
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

/* The batches' size, seen through the count of write statements (the fault
 * injection's counter: BEGIN and COMMIT once per batch, 5 statements per
 * run, no savepoint while no job fails): job 0 alone is 7 writes, each other
 * job 5, each further batch 2. commit_max 4: 7 + 12 * 5 + 3 * 2 = 73 writes
 * (the 73rd is the last COMMIT); commit_max 1024: one batch, 7 + 60 + 2 = 69. */
static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) ? 0 : (long)st.st_size;
}

static int thread_named(const char *name)
{
    char path[128], comm[64];
    int found = 0;
    DIR *d = opendir("/proc/self/task");
    struct dirent *de;
    while (d && !found && (de = readdir(d))) {
        snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
        FILE *fp = fopen(path, "r");
        if (fp && fgets(comm, sizeof(comm), fp))
            found = !strncmp(comm, name, strlen(name));
        if (fp)
            fclose(fp);
    }
    if (d)
        closedir(d);
    return found;
}

/* WAL checkpoints run on their own thread (eddy-wal), and they keep the WAL
 * bounded: 286 MB of documents go through the store (50 keys rewritten 150
 * times: the WAL sees about 75 MB of it, more than four times the 16 MB at
 * which a pass starts) while the WAL never passes 48 MB (without the passes
 * it reached 77 MB); everything written reads back after a reopen. */
static void test_wal_checkpoints_keep_up(void **state)
{
    fx f;
    char wal[640], key[32];
    long most = 0;
    (void)state;
    fx_open(&f, "walck", NULL);
    snprintf(wal, sizeof(wal), "%s-wal", f.path);
    assert_true(thread_named("eddy-wal"));
    enum { DOC = 40000, BATCH = 50, ROUNDS = 150 };
    char *pad = malloc(DOC + 1);
    memset(pad, 'x', DOC);
    pad[DOC] = 0;
    json_t *oc = json_object();
    for (int r = 0; r < ROUNDS; r++) {
        ack a[BATCH];
        memset(a, 0, sizeof(a));
        for (int i = 0; i < BATCH; i++) {
            eddy_err e;
            snprintf(key, sizeof(key), "k%d", i);
            json_t *d = json_pack("{s:i, s:s}", "round", r, "pad", pad);
            eddy_run_end end = {{"ag", key, P0, r * BATCH + i + 1, 0}, 1, d, NULL, 1, oc};
            assert_int_equal(eddy_store_run_done(f.ss, &end, on_ack, &a[i], &e), 0);
            json_decref(d);
        }
        for (int i = 0; i < BATCH; i++) {
            wait_ack(&f, &a[i]);
            assert_int_equal(a[i].status, 0);
        }
        long n = file_size(wal);
        most = n > most ? n : most;
    }
    print_message("largest WAL: %ld bytes for %d MB written\n", most,
                  (int)((long)DOC * BATCH * ROUNDS >> 20));
    assert_true(most > 0);
    assert_true(most < 48l << 20);
    fx_reopen(&f);
    json_t *d;
    load(&f, "ag", "k7", 0, &d, NULL);
    assert_int_equal(json_integer_value(json_object_get(d, "round")), ROUNDS - 1);
    assert_int_equal(strlen(json_string_value(json_object_get(d, "pad"))), DOC);
    json_decref(d);
    json_decref(oc);
    free(pad);
    fx_close(&f);
}

static void test_group_commit_bound(void **state)
{
    char path[600];
    (void)state;
    snprintf(path, sizeof(path), "%s/bound.db", g_dir);
    assert_int_equal(fork_bound(path, 4, 73, -1), 86);
    assert_int_equal(fork_bound(path, 4, 74, -1), 0);
    assert_int_equal(fork_bound(path, 1024, 69, -1), 86);
    assert_int_equal(fork_bound(path, 1024, 70, -1), 0);
}

/* The retry path under crashes: job 6 of 13 (batches of at most 4) fails,
 * so its batch is rolled back and run again with a savepoint per job. A
 * crash before each write statement in turn: the store then holds the runs
 * of a prefix of the jobs in posting order (whole batches: nothing of a
 * batch that did not commit, nothing after a missing one), never the failing
 * job, and all of them once the child completes. */
static void test_failing_batch_torn_writes(void **state)
{
    char path[600];
    int done = 0, crashes = 0, seen[14] = {0};
    (void)state;
    snprintf(path, sizeof(path), "%s/failbatch.db", g_dir);
    for (long n = 1; !done; n++) {
        assert_true(n < 500);
        int rc = fork_bound(path, 4, n, 6);
        if (rc != 86 && rc != 0)
            fail_msg("crash at %ld: the child exited %d", n, rc);
        done = rc == 0;
        crashes += !done;
        int prefix = 0, holes = 0;
        for (int i = 0; i <= 12; i++) {
            char sql[120];
            if (i == 6)
                continue;
            snprintf(sql, sizeof(sql), "SELECT count(*) FROM runs WHERE key='k%d'", i);
            if (sql_count(path, sql) == 1)
                holes += prefix++ != i - (i > 6);
        }
        if (holes)
            fail_msg("crash at write %ld: runs in the store are no prefix of the jobs", n);
        assert_int_equal(sql_count(path, "SELECT count(*) FROM runs WHERE key='bad'"), 0);
        assert_int_equal(sql_count(path, "SELECT count(*) FROM key_memory WHERE key='bad'"), 0);
        if (done)
            assert_int_equal(prefix, 12);
        seen[prefix]++;
    }
    print_message("failing batch: %d crash points; runs found after them: 0:%d 1:%d 5:%d 8:%d "
                  "12:%d\n",
                  crashes, seen[0], seen[1], seen[5], seen[8], seen[12]);
    assert_true(crashes > 40);
}

/* EDDY_STORE_CRASH_AT=1: the child dies at its first write; nothing of it
 * is in the store. */
static void test_crash_env(void **state)
{
    char path[600];
    (void)state;
    snprintf(path, sizeof(path), "%s/crashenv.db", g_dir);
    assert_int_equal(fork_script(path, 1, 1), 86);
    json_t *o = observe(path);
    assert_json_eq(json_object_get(o, "runs"), "{}");
    assert_json_eq(json_object_get(o, "state"), "{}");
    json_decref(o);
}

/* A store of schema 3 (its large-row tables WITHOUT ROWID) is migrated to 4
 * at open: the same memory, history, runs, steps, positions, sinks and shared
 * state, in rowid tables; a second open changes nothing. */
static void test_migrate_3_to_4(void **state)
{
    char path[600];
    (void)state;
    snprintf(path, sizeof(path), "%s/v3.db", g_dir);
    remove_store(path);
    assert_int_equal(run_script(path, 0, 0, 4, 0), 0);
    json_t *want = observe(path);
    /* back to schema 3, as eddy 0.1 before schema 4 wrote it */
    static const char *const v3[][2] = {
        {"key_memory", "(agent TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL,"
                       " updated_ns INTEGER NOT NULL, PRIMARY KEY(agent, key)) WITHOUT ROWID"},
        {"history", "(agent TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL,"
                    " messages TEXT NOT NULL, created_ns INTEGER NOT NULL,"
                    " PRIMARY KEY(agent, key, seq)) WITHOUT ROWID"},
        {"runs", "(part INTEGER NOT NULL, pos INTEGER NOT NULL, agent TEXT NOT NULL,"
                 " key TEXT NOT NULL, input_hash INTEGER NOT NULL, ok INTEGER NOT NULL,"
                 " delivered INTEGER NOT NULL, outcome TEXT NOT NULL, created_ns INTEGER NOT NULL,"
                 " PRIMARY KEY(part, pos, agent)) WITHOUT ROWID"},
        {"journal", "(part INTEGER NOT NULL, pos INTEGER NOT NULL, agent TEXT NOT NULL,"
                    " step INTEGER NOT NULL, key TEXT NOT NULL, input_hash INTEGER NOT NULL,"
                    " state INTEGER NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL,"
                    " created_ns INTEGER NOT NULL, PRIMARY KEY(part, pos, agent, step))"
                    " WITHOUT ROWID"},
    };
    sqlite3 *db = sql_rw(path);
    sql_exec(db, "BEGIN");
    for (size_t i = 0; i < 4; i++) {
        char sql[1024];
        snprintf(sql, sizeof(sql),
                 "CREATE TABLE %s_v3%s; INSERT INTO %s_v3 SELECT * FROM %s; DROP TABLE %s;"
                 " ALTER TABLE %s_v3 RENAME TO %s",
                 v3[i][0], v3[i][1], v3[i][0], v3[i][0], v3[i][0], v3[i][0], v3[i][0]);
        sql_exec(db, sql);
    }
    /* and sink commits without a state */
    sql_exec(db, "CREATE TABLE sinks_v3(sink TEXT PRIMARY KEY, length INTEGER NOT NULL,"
                 " count INTEGER NOT NULL, updated_ns INTEGER NOT NULL) WITHOUT ROWID;"
                 " INSERT INTO sinks_v3 SELECT sink, length, count, updated_ns FROM sinks;"
                 " DROP TABLE sinks; ALTER TABLE sinks_v3 RENAME TO sinks");
    sql_exec(db, "UPDATE meta SET value='3' WHERE key='schema_version'");
    sql_exec(db, "COMMIT");
    sqlite3_close(db);
    assert_int_equal(sql_count(path, "SELECT count(*) FROM sqlite_master WHERE type='table' AND"
                                     " sql LIKE '%WITHOUT ROWID%' AND name IN ('key_memory',"
                                     " 'history', 'runs', 'journal')"),
                     4);
    assert_true(sql_count(path, "SELECT count(*) FROM journal") > 0);
    assert_true(sql_count(path, "SELECT count(*) FROM history") > 0);

    json_t *got = observe(path); /* opens, migrates */
    assert_true(json_equal(got, want));
    assert_int_equal(sql_count(path, "SELECT count(*) FROM sqlite_master WHERE type='table' AND"
                                     " sql LIKE '%WITHOUT ROWID%' AND name IN ('key_memory',"
                                     " 'history', 'runs', 'journal')"),
                     0);
    assert_int_equal(sql_count(path, "SELECT value FROM meta WHERE key='schema_version'"), 4);
    json_t *again = observe(path);
    assert_true(json_equal(again, want));
    /* a schema 4 without the sinks' state column (written between two commits of eddy's
     * own): the column is added at open */
    db = sql_rw(path);
    sql_exec(db, "CREATE TABLE sinks_old(sink TEXT PRIMARY KEY, length INTEGER NOT NULL,"
                 " count INTEGER NOT NULL, updated_ns INTEGER NOT NULL) WITHOUT ROWID;"
                 " INSERT INTO sinks_old SELECT sink, length, count, updated_ns FROM sinks;"
                 " DROP TABLE sinks; ALTER TABLE sinks_old RENAME TO sinks");
    sqlite3_close(db);
    json_t *fixed = observe(path);
    assert_true(json_equal(fixed, want));
    assert_int_equal(sql_count(path, "SELECT count(*) FROM pragma_table_info('sinks') WHERE"
                                     " name='state'"),
                     1);
    json_decref(fixed);
    json_decref(want);
    json_decref(got);
    json_decref(again);
}

/* A crash before each write statement in turn, N = 1, 2, ... until the
 * script completes: after each, the reopened store equals the model after
 * some prefix of the script's jobs (a run, a checkpoint, a state change and
 * its journal entry are all there or all absent, and nothing committed
 * after something that is missing), and a second open finds the same. */
static void test_torn_writes(void **state)
{
    char base[600], path[600];
    json_t *models[NSCRIPT + 1], *m;
    int nbase = 0, seen[NSCRIPT + 1] = {0}, crashes = 0, done = 0;
    (void)state;
    m = json_pack("{s:{}, s:{}, s:{}, s:{}, s:{}}", "mem", "runs", "pos", "sinks", "state");
    for (int k = 0; k <= NSCRIPT; k++) {
        if (k)
            model_apply(m, &kScript[k - 1]);
        models[k] = model_view(m);
        if (k < NSCRIPT && kScript[k].phase == 0)
            nbase = k + 1;
    }
    json_decref(m);
    snprintf(base, sizeof(base), "%s/torn-base.db", g_dir);
    snprintf(path, sizeof(path), "%s/torn.db", g_dir);
    assert_int_equal(run_script(base, 0, 0, 0, 0), 0);
    json_t *o = observe(base);
    assert_true(json_equal(o, models[nbase]));
    json_decref(o);
    for (long n = 1; !done; n++) {
        assert_true(n < 1000);
        copy_file(base, path);
        int rc = fork_script(path, n, n % 7 == 0);
        if (rc != 86 && rc != 0)
            fail_msg("crash at %ld: the child exited %d", n, rc);
        done = rc == 0;
        crashes += !done;
        json_t *o1 = observe(path), *o2 = observe(path);
        int k = -1;
        for (int i = nbase; i <= NSCRIPT && k < 0; i++)
            if (json_equal(o1, models[i]))
                k = i;
        if (k < 0 || (done && k != NSCRIPT)) {
            char *got = json_dumps(o1, JSON_COMPACT | JSON_SORT_KEYS);
            fail_msg("crash at write %ld: the store is no prefix of the script%s: %s", n,
                     done ? " (it completed)" : "", got);
        }
        if (!json_equal(o1, o2))
            fail_msg("crash at write %ld: a second open found another store", n);
        seen[k]++;
        json_decref(o1);
        json_decref(o2);
    }
    int distinct = 0;
    for (int k = 0; k <= NSCRIPT; k++) {
        distinct += seen[k] > 0;
        json_decref(models[k]);
    }
    print_message("torn writes: %d crash points, %d distinct prefixes of %d jobs found\n", crashes,
                  distinct, NSCRIPT - nbase);
    assert_true(crashes > 40);
    assert_true(distinct >= 5); /* every phase boundary at least */
}

/* The temp folder in /dev/shm when there is one: every close of a WAL
 * store checkpoints and fsyncs, and the torn-write test opens ~250 stores. */
static int shm_setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/dev/shm/eddy-unit-XXXXXX");
    if (access("/dev/shm", W_OK) == 0 && mkdtemp(g_dir))
        return 0;
    return tmpdir_setup(state);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_run_done_then_load),
        cmocka_unit_test(test_migrate_3_to_4),
        cmocka_unit_test(test_failed_run_changes_nothing),
        cmocka_unit_test(test_journal_steps),
        cmocka_unit_test(test_checkpoint_positions_and_gc),
        cmocka_unit_test(test_sink_state_and_migration),
        cmocka_unit_test(test_bad_args_are_einval),
        cmocka_unit_test(test_state_ops),
        cmocka_unit_test(test_state_journaled),
        cmocka_unit_test(test_state_binary_key),
        cmocka_unit_test(test_isolation),
        cmocka_unit_test(test_isolation_separator),
        cmocka_unit_test(test_large_values),
        cmocka_unit_test(test_cache_budget_evicts),
        cmocka_unit_test(test_cache_keeps_inflight),
        cmocka_unit_test(test_load_after_run_done_uncached),
        cmocka_unit_test(test_group_commit_order),
        cmocka_unit_test(test_failed_job_alone),
        cmocka_unit_test(test_group_commit_bound),
        cmocka_unit_test(test_wal_checkpoints_keep_up),
        cmocka_unit_test(test_failing_batch_torn_writes),
        cmocka_unit_test(test_crash_env),
        cmocka_unit_test(test_torn_writes),
    };
    (void)write_file;
    if (getenv("TEST_FILTER")) /* e.g. TEST_FILTER='test_torn*' */
        cmocka_set_test_filter(getenv("TEST_FILTER"));
    return cmocka_run_group_tests(tests, shm_setup, tmpdir_teardown);
}
