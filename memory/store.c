/*
 * memory/store.c - the job's store on SQLite (WAL): one writer thread,
 * sessions with a memory cache and a reader thread each.
 *
 * Writes: a session posts jobs (a step, the end of a run, a checkpoint) to
 * the persistence thread (an eddy_bgq with bounded batches). A job only
 * joins the batch when it arrives; the batch runs at its flush, inside one
 * transaction (no savepoints; if a job fails, the batch is rolled back and
 * run again with a savepoint per job, so that the failing job fails alone),
 * and is committed; then every job goes back to its session's list and the
 * session's uv_async_t wakes its loop, where the callbacks run. Steps whose
 * run ends in the same batch are not written at all (the end deletes them).
 *
 * Reads: a session's loads hit its cache (answered from a uv_idle_t on the
 * next loop iteration) or go to its reader thread, which reads with its own
 * read-only connection and parses there; the entry joins the cache on the
 * loop. An entry is pinned from its load to its run's end and held while a
 * write of it is not committed, so the reader never reads a key whose last
 * write is still in flight; the least recently used unpinned, committed
 * entries are evicted beyond the byte budget.
 */
#include "eddy/memory.h"
#include "eddy/bgq.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/llm.h"
#include "eddy/log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* 1: history rows are OpenAI chat messages (eddy before the neutral LLM
 * layer); 2: neutral messages (llm.h, format 2); 3: the journal, runs,
 * positions with lines and fingerprints, sink commits; 4: the tables of large
 * rows are rowid tables (below), and a sink commit has a state (JSON: a Fluss
 * log sink's offsets per bucket). */
#define STR_(x) #x
#define STR(x) STR_(x)
#define SCHEMA_VERSION STR(EDDY_STORE_SCHEMA_VERSION)

/* The tables whose rows are large (memory documents, history entries, run
 * outcomes, step results) are rowid tables with their key as an index (schema
 * 4): in a WITHOUT ROWID table a row over ~1/20 of a page spills to an
 * overflow page of its own, mostly empty (bench/state: 4.7 KB of file per 1 KB
 * document; 1.4 KB as a rowid table, and twice the run_done rate). */
#define KEY_MEMORY_DEF                                                                             \
    "(agent TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL, updated_ns INTEGER NOT NULL,"     \
    " PRIMARY KEY(agent, key))"
#define HISTORY_DEF                                                                                \
    "(agent TEXT NOT NULL, key TEXT NOT NULL, seq INTEGER NOT NULL, messages TEXT NOT NULL,"       \
    " created_ns INTEGER NOT NULL, PRIMARY KEY(agent, key, seq))"
#define RUNS_DEF                                                                                   \
    "(part INTEGER NOT NULL, pos INTEGER NOT NULL, agent TEXT NOT NULL, key TEXT NOT NULL,"        \
    " input_hash INTEGER NOT NULL, ok INTEGER NOT NULL, delivered INTEGER NOT NULL,"               \
    " outcome TEXT NOT NULL, created_ns INTEGER NOT NULL, PRIMARY KEY(part, pos, agent))"
#define JOURNAL_DEF                                                                                \
    "(part INTEGER NOT NULL, pos INTEGER NOT NULL, agent TEXT NOT NULL, step INTEGER NOT NULL,"    \
    " key TEXT NOT NULL, input_hash INTEGER NOT NULL, state INTEGER NOT NULL,"                     \
    " kind TEXT NOT NULL, data TEXT NOT NULL, created_ns INTEGER NOT NULL,"                        \
    " PRIMARY KEY(part, pos, agent, step))"

static const char *const kSchema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    /* the writer's page cache: 64 MiB instead of 2 (bench/state: with a million keys the
     * writer spent its time re-reading the b-tree pages of each key it updated) */
    "PRAGMA cache_size=-65536;"
    /* a WAL that grew in a burst is cut back to 64 MiB when it starts over */
    "PRAGMA journal_size_limit=67108864;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('schema_version','" SCHEMA_VERSION "');"
    "CREATE TABLE IF NOT EXISTS key_memory" KEY_MEMORY_DEF ";"
    "CREATE TABLE IF NOT EXISTS history" HISTORY_DEF ";"
    "CREATE TABLE IF NOT EXISTS positions(source TEXT NOT NULL, part TEXT NOT NULL,"
    "  position INTEGER NOT NULL, line INTEGER NOT NULL, fp INTEGER NOT NULL,"
    "  updated_ns INTEGER NOT NULL, PRIMARY KEY(source, part)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS runs" RUNS_DEF ";"
    "CREATE TABLE IF NOT EXISTS journal" JOURNAL_DEF ";"
    "CREATE TABLE IF NOT EXISTS sinks(sink TEXT PRIMARY KEY, length INTEGER NOT NULL,"
    "  count INTEGER NOT NULL, updated_ns INTEGER NOT NULL, state TEXT) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS shared_state(agent TEXT NOT NULL, key TEXT NOT NULL,"
    "  value TEXT NOT NULL, updated_ns INTEGER NOT NULL, PRIMARY KEY(agent, key)) WITHOUT ROWID;";

enum { J_STEP, J_DONE, J_CKPT, J_STATE };

typedef struct ckpt {
    eddy_position *pos;
    size_t npos;
    eddy_delivered *del;
    size_t ndel;
    eddy_sink_commit *sinks;
    size_t nsinks;
} ckpt;

typedef struct centry centry;

typedef struct sjob {
    int kind;
    eddy_store_session *ss;
    char *agent, *key;
    int64_t part, pos, input_hash;
    int step, state, ok, keep;
    char *skind, *data; /* J_STEP; J_STATE: the journal entry (with KEY = the run's key) */
    char *skey, *value; /* J_STATE: the shared key and its new value (NULL: deleted) */
    int journaled;      /* J_STATE: write the journal entry too */
    int changed;        /* J_STATE: the shared key changed */
    char *doc, *messages, *outcome; /* J_DONE */
    ckpt *ck;
    centry *ce; /* J_DONE: the cache entry it holds */
    eddy_store_cb cb;
    void *ud;
    int status, skipped;
    char errmsg[256];
    struct sjob *next;
} sjob;

enum {
    W_DOC,
    W_HIST,
    W_TRIM,
    W_RUN,
    W_JDEL,
    W_STEP,
    W_POS,
    W_DELIV,
    W_GC_RUNS,
    W_GC_JOURNAL,
    W_SINK,
    W_STATE_SET,
    W_STATE_DEL,
    W_BEGIN,
    W_COMMIT,
    W_SAVEPOINT,
    W_RELEASE,
    W_ROLLBACK_TO,
    W_N
};

static const char *const kWriteSql[W_N] = {
    "INSERT INTO key_memory(agent,key,doc,updated_ns) VALUES(?1,?2,?3,?4) "
    "ON CONFLICT(agent,key) DO UPDATE SET doc=excluded.doc, updated_ns=excluded.updated_ns",
    "INSERT INTO history(agent,key,seq,messages,created_ns) VALUES(?1,?2,"
    "(SELECT coalesce(max(seq),0)+1 FROM history WHERE agent=?1 AND key=?2),?3,?4)",
    "DELETE FROM history WHERE agent=?1 AND key=?2 AND seq <= "
    "(SELECT max(seq) FROM history WHERE agent=?1 AND key=?2) - ?3",
    "INSERT OR REPLACE INTO runs(part,pos,agent,key,input_hash,ok,delivered,outcome,created_ns) "
    "VALUES(?1,?2,?3,?4,?5,?6,0,?7,?8)",
    "DELETE FROM journal WHERE part=?1 AND pos=?2 AND agent=?3",
    "INSERT OR REPLACE INTO journal(part,pos,agent,step,key,input_hash,state,kind,data,"
    "created_ns) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)",
    "INSERT INTO positions(source,part,position,line,fp,updated_ns) VALUES(?1,?2,?3,?4,?5,?6) "
    "ON CONFLICT(source,part) DO UPDATE SET position=excluded.position, line=excluded.line, "
    "fp=excluded.fp, updated_ns=excluded.updated_ns",
    "UPDATE runs SET delivered=1 WHERE part=?1 AND pos=?2 AND agent=?3",
    "DELETE FROM runs WHERE part=?1 AND pos<?2", "DELETE FROM journal WHERE part=?1 AND pos<?2",
    "INSERT INTO sinks(sink,length,count,updated_ns,state) VALUES(?1,?2,?3,?4,?5) "
    "ON CONFLICT(sink) DO UPDATE SET length=excluded.length, count=excluded.count, "
    "updated_ns=excluded.updated_ns, state=excluded.state",
    "INSERT INTO shared_state(agent,key,value,updated_ns) VALUES(?1,?2,?3,?4) "
    "ON CONFLICT(agent,key) DO UPDATE SET value=excluded.value, updated_ns=excluded.updated_ns",
    "DELETE FROM shared_state WHERE agent=?1 AND key=?2",
    /* prepared once too: sqlite3_exec would parse them for every job */
    "BEGIN IMMEDIATE", "COMMIT", "SAVEPOINT job", "RELEASE job", "ROLLBACK TO job"};

enum { R_DOC, R_HIST, R_N };
static const char *const kReadSql[R_N] = {
    "SELECT doc FROM key_memory WHERE agent=?1 AND key=?2",
    "SELECT messages FROM (SELECT seq, messages FROM history WHERE agent=?1 AND key=?2 "
    "ORDER BY seq DESC LIMIT ?3) ORDER BY seq"};

typedef struct rentry {
    int64_t part, pos;
    char *agent;
    eddy_replay r;
} rentry;

/* WAL checkpoints on a thread of their own (with its own connection), so
 * that the writer does not copy pages back into the database and fsync it
 * between its batches (bench/state: a fifth of its time). A pass copies what
 * the WAL holds when it starts, without blocking the writer; passes follow
 * each other until one finds nothing appended meanwhile (the writer's idle
 * moments between batches): the WAL is then wholly checkpointed and starts
 * over at the next transaction. A writer that outruns the passes for
 * WAL_MAX_FRAMES finishes the copy itself (back pressure: the WAL's size
 * stays bounded). */
typedef struct walck {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    sqlite3 *db;
    int want, busy, stop;
} walck;

struct eddy_store {
    char *path;
    sqlite3 *wdb;
    walck *ck; /* NULL: SQLite's own automatic checkpoints */
    sqlite3_stmt *wst[W_N];
    eddy_bgq *q;
    sjob *batch, *batch_tail; /* writer thread only */
    size_t nbatch;
    long nwrites, crash_at;
    int keygroups;
    int64_t cache_bytes;
    rentry *replay;
    size_t nreplay, nfinished;
    json_t *positions, *sinks;
    /* shared state: {agent: {key: value}}, every thread's, under state_mu;
     * a change is posted to the writer under it too, so the writer stores
     * changes in the order they were made */
    pthread_mutex_t state_mu;
    json_t *state;
};

/* -- the cache ------------------------------------------------------------ */

struct centry {
    char *id; /* cache_id(agent, key) */
    uint64_t hash;
    json_t *doc;  /* object */
    json_t *runs; /* array of run entries (arrays of messages), oldest first */
    json_t *flat; /* their messages in one array, built on demand */
    size_t *run_bytes;
    int hist_runs; /* runs RUNS may hold */
    size_t bytes, doc_bytes;
    int pins, pending;
    int stale; /* a write of it failed: read it again once nothing holds it */
    /* the end of a run of a key that was not cached: a marker that a write
     * is in flight, with the new document but no history; loads that want
     * history wait in WAITERS until it committed, then read the store */
    int incomplete;
    struct load_req *waiters;
    centry *chain, *prev, *next; /* bucket; LRU (head = most recent) */
};

typedef struct load_req {
    eddy_store_session *ss;
    char *agent, *key, *id;
    int history_runs;
    eddy_store_load_cb cb;
    void *ud;
    int status;
    char errmsg[256];
    json_t *doc, *runs; /* read by the reader thread */
    size_t doc_bytes, *run_bytes;
    centry *hit;
    struct load_req *next;
} load_req;

struct eddy_store_session {
    eddy_store *s;
    uv_loop_t *loop;
    uv_async_t async;
    uv_idle_t idle;
    pthread_mutex_t mu;
    sjob *acked, *acked_tail;       /* from the writer (under mu) */
    load_req *loaded, *loaded_tail; /* from the reader (under mu) */
    load_req *hits, *hits_tail;     /* loop only */
    eddy_bgq *reader;
    sqlite3 *rdb;
    sqlite3_stmt *rst[R_N];
    size_t pending;
    centry **buckets;
    size_t nbuckets, nentries, bytes;
    centry *lru_head, *lru_tail;
    int closing, handles;
    void (*close_cb)(void *ud);
    void *close_ud;
};

int64_t eddy_store_hash(const void *p, size_t len, int64_t seed)
{
    const unsigned char *b = p;
    uint64_t h = 14695981039346656037ull ^ (uint64_t)seed;
    for (size_t i = 0; i < len; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return (int64_t)(h & 0x7fffffffffffffffull);
}

int64_t eddy_store_part_hash(const char *source, const char *part)
{
    char key[600];
    int n = snprintf(key, sizeof(key), "%s\x1f%s", source, part);
    return eddy_store_hash(key, (size_t)(n < (int)sizeof(key) ? n : (int)sizeof(key) - 1), 0);
}

/* -- small SQLite helpers --------------------------------------------------- */

static int open_db(const char *path, int flags, sqlite3 **db, eddy_err *err)
{
    int rc = sqlite3_open_v2(path, db, flags, NULL);
    if (rc != SQLITE_OK) {
        rc = eddy_err_setc(err, EDDY_ESQLITE, rc, "%s: cannot open: %s", path,
                           *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return rc;
    }
    sqlite3_busy_timeout(*db, 10000);
    return 0;
}

static void crash_point(eddy_store *s)
{
    if (s->crash_at > 0 && ++s->nwrites >= s->crash_at)
        _exit(86); /* fault injection: a torn write at this point */
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v ? v : "", -1, SQLITE_STATIC);
}

/* Step the write statement ST (bound by the caller) and reset it. */
static int wstep(eddy_store *s, sqlite3_stmt *st, sjob *j)
{
    int rc;
    crash_point(s);
    rc = sqlite3_step(st);
    if (rc != SQLITE_DONE && rc != SQLITE_ROW && j)
        snprintf(j->errmsg, sizeof(j->errmsg), "%s", sqlite3_errmsg(s->wdb));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : EDDY_ESQLITE;
}

static int prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **st, int n, eddy_err *err)
{
    for (int i = 0; i < n; i++)
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL))
            return eddy_err_set(err, EDDY_ESQLITE, "cannot prepare a store statement: %s",
                                sqlite3_errmsg(db));
    return 0;
}

static void finalize_all(sqlite3_stmt **st, int n)
{
    for (int i = 0; i < n; i++) {
        sqlite3_finalize(st[i]);
        st[i] = NULL;
    }
}

/* -- jobs ----------------------------------------------------------------------- */

static void ckpt_free(ckpt *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->npos; i++) {
        eddy_free((char *)c->pos[i].source);
        eddy_free((char *)c->pos[i].part);
    }
    for (size_t i = 0; i < c->ndel; i++)
        eddy_free((char *)c->del[i].agent);
    for (size_t i = 0; i < c->nsinks; i++) {
        eddy_free((char *)c->sinks[i].sink);
        eddy_free((char *)c->sinks[i].state);
    }
    eddy_free(c->pos);
    eddy_free(c->del);
    eddy_free(c->sinks);
    eddy_free(c);
}

static void job_free(sjob *j)
{
    eddy_free(j->agent);
    eddy_free(j->key);
    eddy_free(j->skind);
    eddy_free(j->data);
    eddy_free(j->doc);
    eddy_free(j->messages);
    eddy_free(j->outcome);
    eddy_free(j->skey);
    eddy_free(j->value);
    ckpt_free(j->ck);
    eddy_free(j);
}

static int write_step(eddy_store *s, sjob *j)
{
    sqlite3_stmt *st = s->wst[W_STEP];
    sqlite3_bind_int64(st, 1, j->part);
    sqlite3_bind_int64(st, 2, j->pos);
    bind_text(st, 3, j->agent);
    sqlite3_bind_int(st, 4, j->step);
    bind_text(st, 5, j->key);
    sqlite3_bind_int64(st, 6, j->input_hash);
    sqlite3_bind_int(st, 7, j->state);
    bind_text(st, 8, j->skind);
    bind_text(st, 9, j->data);
    sqlite3_bind_int64(st, 10, (sqlite3_int64)eddy_wall_ns());
    return wstep(s, st, j);
}

static int write_done(eddy_store *s, sjob *j)
{
    sqlite3_int64 now = (sqlite3_int64)eddy_wall_ns();
    sqlite3_stmt *st;
    if (j->doc) {
        st = s->wst[W_DOC];
        bind_text(st, 1, j->agent);
        bind_text(st, 2, j->key);
        bind_text(st, 3, j->doc);
        sqlite3_bind_int64(st, 4, now);
        if (wstep(s, st, j))
            return EDDY_ESQLITE;
    }
    if (j->messages) {
        st = s->wst[W_HIST];
        bind_text(st, 1, j->agent);
        bind_text(st, 2, j->key);
        bind_text(st, 3, j->messages);
        sqlite3_bind_int64(st, 4, now);
        if (wstep(s, st, j))
            return EDDY_ESQLITE;
        st = s->wst[W_TRIM];
        bind_text(st, 1, j->agent);
        bind_text(st, 2, j->key);
        sqlite3_bind_int(st, 3, j->keep);
        if (wstep(s, st, j))
            return EDDY_ESQLITE;
    }
    st = s->wst[W_RUN];
    sqlite3_bind_int64(st, 1, j->part);
    sqlite3_bind_int64(st, 2, j->pos);
    bind_text(st, 3, j->agent);
    bind_text(st, 4, j->key);
    sqlite3_bind_int64(st, 5, j->input_hash);
    sqlite3_bind_int(st, 6, j->ok);
    bind_text(st, 7, j->outcome);
    sqlite3_bind_int64(st, 8, now);
    if (wstep(s, st, j))
        return EDDY_ESQLITE;
    st = s->wst[W_JDEL];
    sqlite3_bind_int64(st, 1, j->part);
    sqlite3_bind_int64(st, 2, j->pos);
    bind_text(st, 3, j->agent);
    return wstep(s, st, j);
}

/* Whether the checkpoint C moves PART's position past POS (GC deletes that run's row). */
static int below_position(const ckpt *c, int64_t part, int64_t pos)
{
    for (size_t i = 0; i < c->npos; i++)
        if (c->pos[i].part_hash == part && pos < c->pos[i].pos)
            return 1;
    return 0;
}

static int write_ckpt(eddy_store *s, sjob *j)
{
    const ckpt *c = j->ck;
    sqlite3_int64 now = (sqlite3_int64)eddy_wall_ns();
    sqlite3_stmt *st;
    for (size_t i = 0; i < c->ndel; i++) {
        if (below_position(c, c->del[i].part, c->del[i].pos))
            continue; /* its row is deleted below, with the others under the position */
        st = s->wst[W_DELIV];
        sqlite3_bind_int64(st, 1, c->del[i].part);
        sqlite3_bind_int64(st, 2, c->del[i].pos);
        bind_text(st, 3, c->del[i].agent);
        if (wstep(s, st, j))
            return EDDY_ESQLITE;
    }
    for (size_t i = 0; i < c->npos; i++) {
        const eddy_position *p = &c->pos[i];
        st = s->wst[W_POS];
        bind_text(st, 1, p->source);
        bind_text(st, 2, p->part);
        sqlite3_bind_int64(st, 3, p->pos);
        sqlite3_bind_int64(st, 4, p->line);
        sqlite3_bind_int64(st, 5, p->fp);
        sqlite3_bind_int64(st, 6, now);
        if (wstep(s, st, j))
            return EDDY_ESQLITE;
        for (int k = W_GC_RUNS; k <= W_GC_JOURNAL; k++) {
            st = s->wst[k];
            sqlite3_bind_int64(st, 1, p->part_hash);
            sqlite3_bind_int64(st, 2, p->pos);
            if (wstep(s, st, j))
                return EDDY_ESQLITE;
        }
    }
    for (size_t i = 0; i < c->nsinks; i++) {
        st = s->wst[W_SINK];
        bind_text(st, 1, c->sinks[i].sink);
        sqlite3_bind_int64(st, 2, c->sinks[i].length);
        sqlite3_bind_int64(st, 3, c->sinks[i].count);
        sqlite3_bind_int64(st, 4, now);
        if (c->sinks[i].state)
            bind_text(st, 5, c->sinks[i].state);
        else
            sqlite3_bind_null(st, 5);
        if (wstep(s, st, j))
            return EDDY_ESQLITE;
    }
    return 0;
}

static int write_state(eddy_store *s, sjob *j)
{
    if (j->changed) {
        sqlite3_stmt *st = s->wst[j->value ? W_STATE_SET : W_STATE_DEL];
        bind_text(st, 1, j->agent);
        bind_text(st, 2, j->skey);
        if (j->value) {
            bind_text(st, 3, j->value);
            sqlite3_bind_int64(st, 4, (sqlite3_int64)eddy_wall_ns());
        }
        if (wstep(s, st, j))
            return EDDY_ESQLITE;
    }
    return j->journaled ? write_step(s, j) : 0;
}

static int write_job(eddy_store *s, sjob *j)
{
    return j->kind == J_STEP    ? write_step(s, j)
           : j->kind == J_DONE  ? write_done(s, j)
           : j->kind == J_STATE ? write_state(s, j)
                                : write_ckpt(s, j);
}

/* J inside its own savepoint: a failure rolls back J alone. */
static void run_job(eddy_store *s, sjob *j)
{
    int rc;
    if (wstep(s, s->wst[W_SAVEPOINT], j)) {
        j->status = EDDY_ESQLITE;
        return;
    }
    rc = write_job(s, j);
    if (rc) {
        j->status = rc;
        wstep(s, s->wst[W_ROLLBACK_TO], NULL);
        wstep(s, s->wst[W_RELEASE], NULL);
        return;
    }
    wstep(s, s->wst[W_RELEASE], j);
}

/* Persistence thread: the job joins the batch (it runs at the flush). */
static void on_job(void *p, void *ctx)
{
    eddy_store *s = ctx;
    sjob *j = p;
    j->next = NULL;
    if (s->batch_tail)
        s->batch_tail->next = j;
    else
        s->batch = j;
    s->batch_tail = j;
    s->nbatch++;
}

static uint64_t ref_hash(int64_t part, int64_t pos, const char *agent)
{
    return eddy_hash64(agent, strlen(agent)) ^ ((uint64_t)part * 0x9E3779B97F4A7C15ull) ^
           ((uint64_t)pos * 0xC2B2AE3D27D4EB4Full);
}

/* Mark the steps whose run ends in this batch: the end deletes their rows. */
static void coalesce(eddy_store *s)
{
    size_t cap = 16, nd = 0;
    while (cap < s->nbatch * 2)
        cap *= 2;
    sjob **set = eddy_calloc(cap, sizeof(*set));
    if (!set)
        return;
    for (sjob *j = s->batch; j; j = j->next)
        if (j->kind == J_DONE) {
            size_t i = ref_hash(j->part, j->pos, j->agent) & (cap - 1);
            while (set[i])
                i = (i + 1) & (cap - 1);
            set[i] = j;
            nd++;
        }
    for (sjob *j = s->batch; nd && j; j = j->next) {
        if (j->kind != J_STEP)
            continue;
        size_t i = ref_hash(j->part, j->pos, j->agent) & (cap - 1);
        for (; set[i]; i = (i + 1) & (cap - 1))
            if (set[i]->part == j->part && set[i]->pos == j->pos &&
                !strcmp(set[i]->agent, j->agent)) {
                j->skipped = 1;
                break;
            }
    }
    eddy_free(set);
}

/* Hand the jobs FIRST..LAST (linked, in order) back to their session and
 * wake the session's loop. The wake-up is sent under the session's mutex:
 * once it is released, the loop may take them, finish, and free the session. */
static void ack_session(eddy_store_session *ss, sjob *first, sjob *last)
{
    assert(!last->next);
    pthread_mutex_lock(&ss->mu);
    if (ss->acked_tail)
        ss->acked_tail->next = first;
    else
        ss->acked = first;
    ss->acked_tail = last;
    uv_async_send(&ss->async);
    pthread_mutex_unlock(&ss->mu);
}

/* Answer every job of LIST: one hand-over per session (a lock and a wake-up
 * for a batch, not for each job), each session's jobs in their order. */
static void ack_all(sjob *list)
{
    enum { NS = 16 };
    eddy_store_session *ss[NS];
    sjob *first[NS], *last[NS];
    while (list) {
        size_t n = 0;
        sjob *rest = NULL, *rest_tail = NULL;
        while (list) {
            sjob *j = list;
            size_t i = 0;
            list = j->next;
            j->next = NULL;
            while (i < n && ss[i] != j->ss)
                i++;
            if (i == n && n == NS) { /* more sessions than slots: the next round's */
                if (rest_tail)
                    rest_tail->next = j;
                else
                    rest = j;
                rest_tail = j;
                continue;
            }
            if (i == n) {
                ss[n] = j->ss;
                first[n] = last[n] = j;
                n++;
            } else {
                last[i]->next = j;
                last[i] = j;
            }
        }
        for (size_t i = 0; i < n; i++)
            ack_session(ss[i], first[i], last[i]); /* the jobs are the session's from here on */
        list = rest;
    }
}

/* Persistence thread: run the batch in one transaction, commit, answer. */
static void on_flush(void *ctx)
{
    eddy_store *s = ctx;
    sjob *list = s->batch;
    char msg[256] = "";
    int failed = 0;
    s->batch = s->batch_tail = NULL;
    s->nbatch = 0;
    if (!list)
        return;
    coalesce(s);
    if (wstep(s, s->wst[W_BEGIN], NULL)) {
        snprintf(msg, sizeof(msg), "cannot begin a transaction: %s", sqlite3_errmsg(s->wdb));
        failed = 1;
    }
    /* Optimistic: the batch without savepoints (a savepoint per job costs a
     * statement journal). When a job fails, the batch is rolled back and run
     * again with one savepoint per job, so that the failing job fails alone. */
    sjob *bad = NULL;
    for (sjob *j = list; !failed && !bad && j; j = j->next)
        if (!j->skipped && write_job(s, j))
            bad = j;
    if (bad) {
        sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        for (sjob *j = list; j; j = j->next)
            j->errmsg[0] = '\0';
        if (wstep(s, s->wst[W_BEGIN], NULL)) {
            snprintf(msg, sizeof(msg), "cannot begin a transaction: %s", sqlite3_errmsg(s->wdb));
            failed = 1;
        }
        for (sjob *j = list; !failed && j; j = j->next)
            if (!j->skipped)
                run_job(s, j);
    }
    if (!failed && wstep(s, s->wst[W_COMMIT], NULL)) {
        snprintf(msg, sizeof(msg), "commit failed: %s", sqlite3_errmsg(s->wdb));
        sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        failed = 1;
    }
    for (sjob *j = list; failed && j; j = j->next)
        if (!j->status) {
            j->status = EDDY_ESQLITE;
            snprintf(j->errmsg, sizeof(j->errmsg), "%s", msg);
        }
    ack_all(list);
}

/* -- WAL checkpoints ---------------------------------------------------------- */

#define WAL_PASS_FRAMES 4000 /* 16 MB of 4 KB pages: a pass is due */
#define WAL_MAX_FRAMES 65536 /* 256 MB: the writer checkpoints itself */

static void *walck_run(void *arg)
{
    walck *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        while (!w->want && !w->stop)
            pthread_cond_wait(&w->cv, &w->mu);
        if (w->stop)
            break;
        w->want = 0;
        w->busy = 1;
        pthread_mutex_unlock(&w->mu);
        int log = 0, done = 0;
        int rc = sqlite3_wal_checkpoint_v2(w->db, NULL, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY)
            EDDY_WARN("store", "a WAL checkpoint failed: %s", sqlite3_errmsg(w->db));
        pthread_mutex_lock(&w->mu);
        w->busy = 0;
        if (rc == SQLITE_OK && done < log)
            w->want = 1; /* frames came meanwhile: the next pass copies them */
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Writer thread, after each commit: FRAMES is the WAL's length. */
static int on_wal_commit(void *ud, sqlite3 *db, const char *name, int frames)
{
    walck *w = ud;
    int self = 0;
    if (frames < WAL_PASS_FRAMES)
        return SQLITE_OK;
    pthread_mutex_lock(&w->mu);
    if (!w->busy && frames >= WAL_MAX_FRAMES)
        self = 1;
    else if (!w->busy && !w->want) {
        w->want = 1;
        pthread_cond_signal(&w->cv);
    }
    pthread_mutex_unlock(&w->mu);
    if (self) {
        int log = 0, done = 0;
        sqlite3_wal_checkpoint_v2(db, name, SQLITE_CHECKPOINT_PASSIVE, &log, &done);
    }
    return SQLITE_OK;
}

static void walck_stop(eddy_store *s)
{
    walck *w = s->ck;
    if (!w)
        return;
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    sqlite3_close(w->db); /* before the writer's: its close checkpoints the rest */
    sqlite3_wal_hook(s->wdb, NULL, NULL);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
    eddy_free(w);
    s->ck = NULL;
}

/* Checkpoints off the writer thread. On any failure the store keeps
 * SQLite's automatic checkpoints on the writer (slower, as correct). */
static void walck_start(eddy_store *s)
{
    walck *w = eddy_calloc(1, sizeof(*w));
    eddy_err ignored;
    if (!w)
        return;
    /* a read makes the connection see the WAL (until then it would not checkpoint) */
    if (open_db(s->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, &w->db, &ignored) ||
        sqlite3_exec(w->db, "SELECT 1 FROM meta LIMIT 1", NULL, NULL, NULL) != SQLITE_OK) {
        sqlite3_close(w->db);
        eddy_free(w);
        return;
    }
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, walck_run, w)) {
        sqlite3_close(w->db);
        pthread_mutex_destroy(&w->mu);
        pthread_cond_destroy(&w->cv);
        eddy_free(w);
        return;
    }
    pthread_setname_np(w->thread, "eddy-wal"); /* named before anyone looks */
    s->ck = w;
    sqlite3_wal_hook(s->wdb, on_wal_commit, w); /* replaces the automatic checkpoints */
}

/* -- migration ------------------------------------------------------------------ */

static int meta_int(sqlite3 *db, const char *key, int dflt)
{
    sqlite3_stmt *st = NULL;
    int v = dflt;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key=?1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW)
            v = atoi((const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return v;
}

/* Schema 1 -> 2: history rows from OpenAI messages to neutral ones. */
static int migrate_history(sqlite3 *db, const char *path, long *rows, eddy_err *err)
{
    sqlite3_stmt *st = NULL, *up = NULL;
    int rc = 0;
    json_t *all = NULL;
    if (sqlite3_prepare_v2(db, "SELECT agent, key, seq, messages FROM history", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "UPDATE history SET messages=?4 WHERE agent=?1 AND key=?2 AND seq=?3",
                           -1, &up, NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    /* read every row first: updating a table while a SELECT walks it may
     * visit rows twice */
    all = json_array();
    while (all && sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(
            all, json_pack("[s, s, I, s]", sqlite3_column_text(st, 0), sqlite3_column_text(st, 1),
                           (json_int_t)sqlite3_column_int64(st, 2), sqlite3_column_text(st, 3)));
    if (!all) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    size_t i;
    json_t *row;
    json_array_foreach(all, i, row)
    {
        const char *agent = json_string_value(json_array_get(row, 0));
        const char *key = json_string_value(json_array_get(row, 1));
        json_int_t seq = json_integer_value(json_array_get(row, 2));
        const char *msgs = json_string_value(json_array_get(row, 3));
        json_t *v1 = msgs ? eddy_json_loads(msgs, 0, NULL) : NULL, *v2;
        eddy_err e;
        char *text;
        v2 = v1 ? eddy_llm_history_upgrade(v1, &e) : NULL;
        if (!v1)
            eddy_err_set(&e, EDDY_ECORRUPT, "not JSON");
        json_decref(v1);
        text = v2 ? eddy_json_dumps_flags(v2, JSON_COMPACT) : NULL;
        json_decref(v2);
        if (!agent || !key || !text) {
            rc = eddy_err_set(err, EDDY_ECORRUPT,
                              "%s: cannot migrate the history of agent '%s' key '%s' (run %lld): "
                              "%s",
                              path, agent ? agent : "?", key ? key : "?", (long long)seq,
                              text ? "unreadable row" : e.msg);
            eddy_free(text);
            goto out;
        }
        sqlite3_bind_text(up, 1, agent, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(up, 2, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(up, 3, seq);
        sqlite3_bind_text(up, 4, text, -1, eddy_free);
        if (sqlite3_step(up) != SQLITE_DONE) {
            rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
            goto out;
        }
        sqlite3_reset(up);
        (*rows)++;
    }
out:
    json_decref(all);
    sqlite3_finalize(st);
    sqlite3_finalize(up);
    return rc;
}

/* Bring a store written by an older eddy up to SCHEMA_VERSION, in one
 * transaction: nothing changes unless everything does. */
/* Schema 3 -> 4: the tables of large rows become rowid tables, same columns. */
#define REBUILD(t, def)                                                                            \
    "CREATE TABLE " t "_v4" def ";"                                                                \
    "INSERT INTO " t "_v4 SELECT * FROM " t ";"                                                    \
    "DROP TABLE " t ";"                                                                            \
    "ALTER TABLE " t "_v4 RENAME TO " t ";"
static const char *const kRowidTables = REBUILD("key_memory", KEY_MEMORY_DEF)
    REBUILD("history", HISTORY_DEF) REBUILD("runs", RUNS_DEF) REBUILD("journal", JOURNAL_DEF);
#undef REBUILD

/* Whether TABLE has COLUMN. */
static int has_column(sqlite3 *db, const char *table, const char *column)
{
    char sql[128];
    sqlite3_stmt *st = NULL;
    int found = 0;
    snprintf(sql, sizeof(sql), "PRAGMA table_info(%s)", table);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK)
        while (!found && sqlite3_step(st) == SQLITE_ROW)
            found = !strcmp((const char *)sqlite3_column_text(st, 1), column);
    sqlite3_finalize(st);
    return found;
}

static int migrate(sqlite3 *db, const char *path, eddy_err *err)
{
    int rc = 0, version = meta_int(db, "schema_version", 0);
    long rows = 0;
    /* a schema 4 written by eddy between two of its commits, before sink
     * commits had a state: add it */
    if (version == 4 && !has_column(db, "sinks", "state") &&
        sqlite3_exec(db, "ALTER TABLE sinks ADD COLUMN state TEXT", NULL, NULL, NULL) != SQLITE_OK)
        return eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
    if (version == atoi(SCHEMA_VERSION))
        return 0;
    if (version > atoi(SCHEMA_VERSION) || version < 1)
        return eddy_err_set(err, EDDY_ECORRUPT,
                            "%s: store schema version %d is not one this eddy reads (it reads "
                            "1 to " SCHEMA_VERSION "); it was written by another eddy version",
                            path, version);
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return eddy_err_set(err, EDDY_ESQLITE, "%s: cannot start the migration: %s", path,
                            sqlite3_errmsg(db));
    if (version < 2 && (rc = migrate_history(db, path, &rows, err)))
        goto out;
    /* 3 -> 4: sink commits gain a state (a store older than 3 got the
     * sinks table, with it, from kSchema) */
    if (version == 3 && sqlite3_exec(db, "ALTER TABLE sinks ADD COLUMN state TEXT", NULL, NULL,
                                     NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    /* 2 -> 3: positions gain a line and a fingerprint (0: none) */
    if (sqlite3_exec(db,
                     "CREATE TABLE IF NOT EXISTS source_positions(source TEXT, part TEXT,"
                     " position INTEGER, updated_ns INTEGER);"
                     "INSERT OR REPLACE INTO positions SELECT source, part, position, 0, 0,"
                     " updated_ns FROM source_positions;"
                     "DROP TABLE source_positions;",
                     NULL, NULL, NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    /* 3 -> 4: the tables of large rows become rowid tables (same columns) */
    if (version < 4)
        EDDY_INFO("memory",
                  "%s: migrating to schema 4: memory, history, runs and journal are "
                  "copied into rowid tables (once; a large store takes a while)",
                  path);
    if (version < 4 && sqlite3_exec(db, kRowidTables, NULL, NULL, NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    if (sqlite3_exec(db, "UPDATE meta SET value='" SCHEMA_VERSION "' WHERE key='schema_version'",
                     NULL, NULL, NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
        goto out;
    }
out:
    if (rc) {
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot commit the migration: %s", path,
                          sqlite3_errmsg(db));
        sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    if (version < 2)
        EDDY_INFO("memory",
                  "%s: migrated from schema version %d to " SCHEMA_VERSION
                  " (%ld history entries in the neutral format)",
                  path, version, rows);
    else
        EDDY_INFO("memory", "%s: migrated from schema version %d to " SCHEMA_VERSION, path,
                  version);
    return 0;
}

/* -- open: key groups, replay table, positions ------------------------------------ */

static int has_rows(sqlite3 *db, const char *table)
{
    char sql[128];
    sqlite3_stmt *st = NULL;
    int any = 0;
    snprintf(sql, sizeof(sql), "SELECT 1 FROM %s LIMIT 1", table);
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK)
        any = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return any;
}

static int check_keygroups(eddy_store *s, int want, eddy_err *err)
{
    int have = meta_int(s->wdb, "max_keygroups", 0);
    char sql[160];
    if (have == want) {
        s->keygroups = want;
        return 0;
    }
    if (have && (has_rows(s->wdb, "key_memory") || has_rows(s->wdb, "history") ||
                 has_rows(s->wdb, "runs") || has_rows(s->wdb, "journal")))
        return eddy_err_set(err, EDDY_EINVAL,
                            "%s holds memory for %d key groups and the job asks for %d "
                            "(max_keygroups): a key's group cannot change under its memory; "
                            "keep max_keygroups: %d, or start from an empty store (another "
                            "checkpoint.path, or remove this one)",
                            s->path, have, want, have);
    snprintf(sql, sizeof(sql), "INSERT OR REPLACE INTO meta VALUES('max_keygroups','%d')", want);
    if (sqlite3_exec(s->wdb, sql, NULL, NULL, NULL) != SQLITE_OK)
        return eddy_err_set(err, EDDY_ESQLITE, "%s: %s", s->path, sqlite3_errmsg(s->wdb));
    s->keygroups = want;
    return 0;
}

static int forget_runs(eddy_store *s, eddy_err *err)
{
    if (sqlite3_exec(s->wdb, "BEGIN IMMEDIATE; DELETE FROM runs; DELETE FROM journal; COMMIT", NULL,
                     NULL, NULL) != SQLITE_OK) {
        int rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot forget the earlier runs: %s", s->path,
                              sqlite3_errmsg(s->wdb));
        sqlite3_exec(s->wdb, "ROLLBACK", NULL, NULL, NULL);
        return rc;
    }
    return 0;
}

static int rentry_cmp(const void *a, const void *b)
{
    const rentry *x = a, *y = b;
    if (x->part != y->part)
        return x->part < y->part ? -1 : 1;
    if (x->pos != y->pos)
        return x->pos < y->pos ? -1 : 1;
    return strcmp(x->agent, y->agent);
}

static rentry *replay_find(rentry *v, size_t n, int64_t part, int64_t pos, const char *agent)
{
    rentry k = {part, pos, (char *)agent, {0}};
    return n ? bsearch(&k, v, n, sizeof(*v), rentry_cmp) : NULL; /* bsearch wants a base */
}

static void replay_free(eddy_store *s)
{
    for (size_t i = 0; i < s->nreplay; i++) {
        rentry *e = &s->replay[i];
        eddy_free(e->agent);
        json_decref(e->r.outcome);
        for (size_t k = 0; k < e->r.nsteps; k++) {
            eddy_free((char *)e->r.steps[k].kind);
            json_decref(e->r.steps[k].data);
        }
        eddy_free(e->r.steps);
    }
    eddy_free(s->replay);
    s->replay = NULL;
    s->nreplay = 0;
}

static int load_replay(eddy_store *s, eddy_err *err)
{
    sqlite3_stmt *st = NULL;
    size_t cap = 0, nruns;
    int rc = 0;
    if (sqlite3_prepare_v2(s->wdb,
                           "SELECT part, pos, agent, input_hash, ok, delivered, outcome FROM runs "
                           "ORDER BY part, pos, agent",
                           -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (s->nreplay == cap) {
            size_t nc = cap ? cap * 2 : 64;
            rentry *v = eddy_realloc(s->replay, nc * sizeof(*v));
            if (!v)
                goto oom;
            s->replay = v;
            cap = nc;
        }
        rentry *e = &s->replay[s->nreplay];
        memset(e, 0, sizeof(*e));
        e->part = sqlite3_column_int64(st, 0);
        e->pos = sqlite3_column_int64(st, 1);
        e->agent = eddy_strdup((const char *)sqlite3_column_text(st, 2));
        s->nreplay++;
        e->r.done = 1;
        e->r.input_hash = sqlite3_column_int64(st, 3);
        e->r.ok = sqlite3_column_int(st, 4);
        e->r.delivered = sqlite3_column_int(st, 5);
        e->r.outcome = eddy_json_loads((const char *)sqlite3_column_text(st, 6), 0, NULL);
        if (!e->agent || !e->r.outcome) {
            rc =
                eddy_err_set(err, EDDY_ECORRUPT, "%s: a finished run's row is unreadable", s->path);
            goto out;
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    nruns = s->nreplay; /* sorted: ORDER BY the key, as rentry_cmp compares (strcmp and
                         * SQLite's BINARY collation agree on UTF-8) */
    if (sqlite3_prepare_v2(s->wdb,
                           "SELECT part, pos, agent, step, input_hash, state, kind, data "
                           "FROM journal ORDER BY part, pos, agent, step",
                           -1, &st, NULL) != SQLITE_OK)
        goto sqlerr;
    rentry *cur = NULL;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t part = sqlite3_column_int64(st, 0), pos = sqlite3_column_int64(st, 1);
        const char *agent = (const char *)sqlite3_column_text(st, 2);
        if (!cur || cur->part != part || cur->pos != pos || strcmp(cur->agent, agent)) {
            cur = replay_find(s->replay, nruns, part, pos, agent);
            if (cur && cur->r.done) {
                cur = NULL; /* the run finished: its steps do not matter */
                continue;
            }
            if (s->nreplay == cap) {
                size_t nc = cap ? cap * 2 : 64;
                rentry *v = eddy_realloc(s->replay, nc * sizeof(*v));
                if (!v)
                    goto oom;
                s->replay = v;
                cap = nc;
            }
            cur = &s->replay[s->nreplay++];
            memset(cur, 0, sizeof(*cur));
            cur->part = part;
            cur->pos = pos;
            if (!(cur->agent = eddy_strdup(agent)))
                goto oom;
            cur->r.input_hash = sqlite3_column_int64(st, 4);
        }
        eddy_replay_step *v = eddy_realloc(cur->r.steps, (cur->r.nsteps + 1) * sizeof(*v));
        if (!v)
            goto oom;
        cur->r.steps = v;
        eddy_replay_step *sp = &v[cur->r.nsteps];
        sp->step = sqlite3_column_int(st, 3);
        sp->state = sqlite3_column_int(st, 5);
        sp->kind = eddy_strdup((const char *)sqlite3_column_text(st, 6));
        sp->data = eddy_json_loads((const char *)sqlite3_column_text(st, 7), JSON_DECODE_ANY, NULL);
        cur->r.nsteps++;
        if (!sp->kind || !sp->data) {
            rc = eddy_err_set(err, EDDY_ECORRUPT, "%s: journal step %d of agent '%s' is unreadable",
                              s->path, sp->step, agent);
            goto out;
        }
    }
    s->nfinished = nruns;
    if (s->nreplay)
        qsort(s->replay, s->nreplay, sizeof(rentry), rentry_cmp);
    goto out;
sqlerr:
    rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot read the journal: %s", s->path,
                      sqlite3_errmsg(s->wdb));
    goto out;
oom:
    rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
out:
    sqlite3_finalize(st);
    return rc;
}

static int load_state(eddy_store *s, eddy_err *err)
{
    sqlite3_stmt *st = NULL;
    if (!(s->state = json_object()))
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (sqlite3_prepare_v2(s->wdb, "SELECT agent, key, value FROM shared_state", -1, &st, NULL) !=
        SQLITE_OK)
        return eddy_err_set(err, EDDY_ESQLITE, "%s: cannot read the shared state: %s", s->path,
                            sqlite3_errmsg(s->wdb));
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *agent = (const char *)sqlite3_column_text(st, 0);
        json_t *m = json_object_get(s->state, agent);
        json_t *v =
            eddy_json_loads((const char *)sqlite3_column_text(st, 2), JSON_DECODE_ANY, NULL);
        if (!m)
            json_object_set_new_nocheck(s->state, agent, m = json_object());
        if (!v) {
            sqlite3_finalize(st);
            return eddy_err_set(err, EDDY_ECORRUPT,
                                "%s: shared state '%s' of agent '%s' is not JSON", s->path,
                                (const char *)sqlite3_column_text(st, 1), agent);
        }
        /* keys are bytes (a Lua string), not always UTF-8 */
        json_object_set_new_nocheck(m, (const char *)sqlite3_column_text(st, 1), v);
    }
    sqlite3_finalize(st);
    EDDY_DEBUG("memory", "%s: shared state of %zu agent(s) loaded", s->path,
               json_object_size(s->state));
    return 0;
}

static int load_positions(eddy_store *s, eddy_err *err)
{
    sqlite3_stmt *st = NULL;
    s->positions = json_object();
    s->sinks = json_object();
    if (!s->positions || !s->sinks)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if (sqlite3_prepare_v2(s->wdb, "SELECT source, part, position, line, fp FROM positions", -1,
                           &st, NULL) != SQLITE_OK)
        goto sqlerr;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *src = (const char *)sqlite3_column_text(st, 0);
        json_t *o = json_object_get(s->positions, src);
        if (!o)
            json_object_set_new(s->positions, src, o = json_object());
        json_object_set_new(o, (const char *)sqlite3_column_text(st, 1),
                            json_pack("{s:I, s:I, s:I}", "pos",
                                      (json_int_t)sqlite3_column_int64(st, 2), "line",
                                      (json_int_t)sqlite3_column_int64(st, 3), "fp",
                                      (json_int_t)sqlite3_column_int64(st, 4)));
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->wdb, "SELECT sink, length, count, state FROM sinks", -1, &st, NULL) !=
        SQLITE_OK)
        goto sqlerr;
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *state = (const char *)sqlite3_column_text(st, 3);
        json_t *o = json_pack("{s:I, s:I}", "length", (json_int_t)sqlite3_column_int64(st, 1),
                              "count", (json_int_t)sqlite3_column_int64(st, 2));
        if (o && state) {
            json_t *v = eddy_json_loads(state, 0, NULL);
            if (!v) {
                int rc = eddy_err_set(err, EDDY_ECORRUPT, "%s: the state of sink '%s' is not JSON",
                                      s->path, (const char *)sqlite3_column_text(st, 0));
                json_decref(o);
                sqlite3_finalize(st);
                return rc;
            }
            json_object_set_new(o, "state", v);
        }
        json_object_set_new(s->sinks, (const char *)sqlite3_column_text(st, 0), o);
    }
    sqlite3_finalize(st);
    return 0;
sqlerr:
    sqlite3_finalize(st);
    return eddy_err_set(err, EDDY_ESQLITE, "%s: cannot read the positions: %s", s->path,
                        sqlite3_errmsg(s->wdb));
}

int eddy_store_open(const char *path, const eddy_store_opts *opts, eddy_store **out, eddy_err *err)
{
    eddy_store *s = eddy_calloc(1, sizeof(*s));
    eddy_store_opts o = opts ? *opts : (eddy_store_opts){0};
    char *e = NULL;
    int rc;
    *out = NULL;
    if (!s || !(s->path = eddy_strdup(path))) {
        eddy_free(s);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if (o.max_keygroups <= 0)
        o.max_keygroups = EDDY_STORE_DEFAULT_KEYGROUPS;
    s->cache_bytes = o.cache_bytes > 0 ? o.cache_bytes : 64ll << 20;
    const char *crash = getenv("EDDY_STORE_CRASH_AT");
    if (crash)
        s->crash_at = atol(crash);
    pthread_mutex_init(&s->state_mu, NULL);
    if ((rc = eddy_mkdirs_for(path, err)))
        goto fail;
    if ((rc = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      &s->wdb, err)))
        goto fail;
    if (sqlite3_exec(s->wdb, kSchema, NULL, NULL, &e) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot create the schema: %s", path, e);
        sqlite3_free(e);
        goto fail;
    }
    if ((rc = migrate(s->wdb, path, err)) || (rc = check_keygroups(s, o.max_keygroups, err)) ||
        (o.forget_runs && (rc = forget_runs(s, err))) || (rc = load_replay(s, err)) ||
        (rc = load_positions(s, err)) || (rc = load_state(s, err)) ||
        (rc = prepare_all(s->wdb, kWriteSql, s->wst, W_N, err)))
        goto fail;
    eddy_bgq_limits lim = {o.commit_max > 0 ? o.commit_max : 1024,
                           o.commit_ms > 0 ? o.commit_ms : 5, 1, "eddy-store"};
    if (lim.linger_ms > lim.max_age_ms)
        lim.linger_ms = lim.max_age_ms;
    walck_start(s);
    if ((rc = eddy_bgq_new(on_job, on_flush, s, &lim, &s->q, err)))
        goto fail;
    *out = s;
    return 0;
fail:
    walck_stop(s);
    finalize_all(s->wst, W_N);
    sqlite3_close(s->wdb);
    replay_free(s);
    json_decref(s->positions);
    json_decref(s->sinks);
    json_decref(s->state);
    pthread_mutex_destroy(&s->state_mu);
    eddy_free(s->path);
    eddy_free(s);
    return rc;
}

void eddy_store_close(eddy_store *s)
{
    if (!s)
        return;
    eddy_bgq_free(s->q); /* runs and commits everything queued */
    walck_stop(s);
    finalize_all(s->wst, W_N);
    sqlite3_close(s->wdb);
    replay_free(s);
    json_decref(s->positions);
    json_decref(s->sinks);
    json_decref(s->state);
    pthread_mutex_destroy(&s->state_mu);
    eddy_free(s->path);
    eddy_free(s);
}

const char *eddy_store_path(const eddy_store *s)
{
    return s->path;
}

int eddy_store_keygroups(const eddy_store *s)
{
    return s->keygroups;
}

void eddy_store_crash_at(eddy_store *s, long n)
{
    s->crash_at = n;
}

const eddy_replay *eddy_store_replay(const eddy_store *s, const char *agent, int64_t part,
                                     int64_t pos)
{
    if (!s->nreplay)
        return NULL;
    rentry *e = replay_find(s->replay, s->nreplay, part, pos, agent);
    return e ? &e->r : NULL;
}

const eddy_replay *eddy_store_replay_at(const eddy_store *s, size_t i, const char **agent,
                                        int64_t *part, int64_t *pos)
{
    if (i >= s->nreplay)
        return NULL;
    *agent = s->replay[i].agent;
    *part = s->replay[i].part;
    *pos = s->replay[i].pos;
    return &s->replay[i].r;
}

size_t eddy_store_replay_count(const eddy_store *s, size_t *finished)
{
    if (finished)
        *finished = s->nfinished;
    return s->nreplay;
}

json_t *eddy_store_positions(const eddy_store *s)
{
    return s->positions;
}

json_t *eddy_store_sinks(const eddy_store *s)
{
    return s->sinks;
}

/* The cache's name of (AGENT, KEY): the agent's length first, so that no
 * byte in either can make two pairs one. New string, NULL on OOM. */
static char *cache_id(const char *agent, const char *key)
{
    return eddy_aprintf("%zu:%s%s", strlen(agent), agent, key);
}

/* -- sessions: the cache ---------------------------------------------------------- */

static centry **cache_slot(eddy_store_session *ss, const char *id, uint64_t h)
{
    centry **p = &ss->buckets[h & (ss->nbuckets - 1)];
    while (*p && ((*p)->hash != h || strcmp((*p)->id, id)))
        p = &(*p)->chain;
    return p;
}

static void lru_unlink(eddy_store_session *ss, centry *e)
{
    if (e->prev)
        e->prev->next = e->next;
    else
        ss->lru_head = e->next;
    if (e->next)
        e->next->prev = e->prev;
    else
        ss->lru_tail = e->prev;
    e->prev = e->next = NULL;
}

static void lru_front(eddy_store_session *ss, centry *e)
{
    if (ss->lru_head == e)
        return;
    if (e->prev || e->next || ss->lru_tail == e)
        lru_unlink(ss, e);
    e->next = ss->lru_head;
    if (ss->lru_head)
        ss->lru_head->prev = e;
    ss->lru_head = e;
    if (!ss->lru_tail)
        ss->lru_tail = e;
}

static void centry_free(centry *e)
{
    eddy_free(e->id);
    json_decref(e->doc);
    json_decref(e->runs);
    json_decref(e->flat);
    eddy_free(e->run_bytes);
    eddy_free(e);
}

static void cache_remove(eddy_store_session *ss, centry *e)
{
    centry **p = cache_slot(ss, e->id, e->hash);
    assert(*p == e);
    *p = e->chain;
    lru_unlink(ss, e);
    ss->bytes -= e->bytes;
    ss->nentries--;
    centry_free(e);
}

/* Evict least recently used entries that no run holds and that have no
 * write in flight, until the cache fits its budget. */
static void cache_trim(eddy_store_session *ss)
{
    centry *e = ss->lru_tail;
    while (e && ss->bytes > (size_t)ss->s->cache_bytes) {
        centry *prev = e->prev;
        if (!e->pins && !e->pending)
            cache_remove(ss, e);
        e = prev;
    }
}

static void cache_grow(eddy_store_session *ss)
{
    size_t nb = ss->nbuckets * 2;
    centry **b = eddy_calloc(nb, sizeof(*b));
    if (!b)
        return;
    for (size_t i = 0; i < ss->nbuckets; i++)
        for (centry *e = ss->buckets[i], *nx; e; e = nx) {
            nx = e->chain;
            e->chain = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    eddy_free(ss->buckets);
    ss->buckets = b;
    ss->nbuckets = nb;
}

static void centry_bytes(eddy_store_session *ss, centry *e)
{
    size_t b = sizeof(*e) + strlen(e->id) + e->doc_bytes;
    for (size_t i = 0; e->runs && i < json_array_size(e->runs); i++)
        b += e->run_bytes[i];
    ss->bytes += b;
    ss->bytes -= e->bytes;
    e->bytes = b;
}

/* The messages of ENTRY's last N runs in one array (borrowed). */
static json_t *centry_history(centry *e)
{
    if (!e->flat) {
        size_t i;
        json_t *run;
        e->flat = json_array();
        json_array_foreach(e->runs, i, run) json_array_extend(e->flat, run);
    }
    return e->flat;
}

/* -- sessions: loading ------------------------------------------------------------ */

/* A session's reader: each load is its own batch. */
static const eddy_bgq_limits kReaderLimits = {0, 0, 0, "eddy-reader"};

static void load_free(load_req *r)
{
    eddy_free(r->agent);
    eddy_free(r->key);
    eddy_free(r->id);
    json_decref(r->doc);
    json_decref(r->runs);
    eddy_free(r->run_bytes);
    eddy_free(r);
}

/* Reader thread: read and parse the memory of one key. */
static void on_read(void *p, void *ctx)
{
    load_req *r = p;
    eddy_store_session *ss = ctx;
    sqlite3_stmt *st = ss->rst[R_DOC];
    int rc;
    sqlite3_bind_text(st, 1, r->agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, r->key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *t = (const char *)sqlite3_column_text(st, 0);
        r->doc_bytes = (size_t)sqlite3_column_bytes(st, 0) * 3;
        r->doc = eddy_json_loads(t, 0, NULL);
        if (!json_is_object(r->doc)) {
            json_decref(r->doc);
            r->doc = NULL;
            EDDY_WARN("memory", "memory of %s/%s is not a JSON object: starting from {}", r->agent,
                      r->key);
        }
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto sqlerr;
    if (!r->doc && !(r->doc = json_object()))
        goto oom;
    r->runs = json_array();
    r->run_bytes =
        eddy_calloc((size_t)(r->history_runs > 0 ? r->history_runs : 0) + 1, sizeof(size_t));
    if (!r->runs || !r->run_bytes)
        goto oom;
    if (r->history_runs > 0) {
        st = ss->rst[R_HIST];
        sqlite3_bind_text(st, 1, r->agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, r->key, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, r->history_runs);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            json_t *msgs = eddy_json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
            if (json_is_array(msgs) && json_array_size(r->runs) < (size_t)r->history_runs) {
                r->run_bytes[json_array_size(r->runs)] = (size_t)sqlite3_column_bytes(st, 0) * 3;
                json_array_append(r->runs, msgs);
            }
            json_decref(msgs);
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            goto sqlerr;
    }
    goto answer;
sqlerr:
    r->status = EDDY_ESQLITE;
    snprintf(r->errmsg, sizeof(r->errmsg), "memory of %s/%s: %s", r->agent, r->key,
             sqlite3_errmsg(ss->rdb));
    goto answer;
oom:
    r->status = EDDY_ENOMEM;
    snprintf(r->errmsg, sizeof(r->errmsg), "out of memory");
answer:
    pthread_mutex_lock(&ss->mu); /* woken under the mutex: see ack_session */
    if (ss->loaded_tail)
        ss->loaded_tail->next = r;
    else
        ss->loaded = r;
    ss->loaded_tail = r;
    uv_async_send(&ss->async);
    pthread_mutex_unlock(&ss->mu);
}

static void maybe_finish_close(eddy_store_session *ss);

static void answer_load(eddy_store_session *ss, load_req *r, centry *e)
{
    if (e) {
        e->pins++;
        lru_front(ss, e);
        r->cb(0, NULL, e->doc, centry_history(e), r->ud);
    } else {
        r->cb(r->status ? r->status : EDDY_ENOMEM, r->status ? r->errmsg : "out of memory", NULL,
              NULL, r->ud);
    }
    ss->pending--;
    load_free(r);
}

/* Loop: a read came back: the entry joins the cache (unless a fresher one
 * got there first), then the caller is answered. */
static void loaded(eddy_store_session *ss, load_req *r)
{
    uint64_t h = eddy_hash64(r->id, strlen(r->id));
    centry **slot = cache_slot(ss, r->id, h), *e = *slot;
    if (r->status) {
        answer_load(ss, r, NULL);
        return;
    }
    if (!e) {
        e = eddy_calloc(1, sizeof(*e));
        if (!e) {
            answer_load(ss, r, NULL);
            return;
        }
        e->id = r->id;
        r->id = NULL;
        e->hash = h;
        e->doc = r->doc;
        e->runs = r->runs;
        e->run_bytes = r->run_bytes;
        e->doc_bytes = r->doc_bytes;
        e->hist_runs = r->history_runs;
        r->doc = r->runs = NULL;
        r->run_bytes = NULL;
        e->chain = *slot;
        *slot = e;
        ss->nentries++;
        centry_bytes(ss, e);
        if (ss->nentries > ss->nbuckets)
            cache_grow(ss);
    }
    answer_load(ss, r, e);
    cache_trim(ss);
}

static void on_hits(uv_idle_t *h)
{
    eddy_store_session *ss = h->data;
    load_req *list = ss->hits;
    ss->hits = ss->hits_tail = NULL;
    uv_idle_stop(h);
    while (list) {
        load_req *r = list;
        list = r->next;
        uint64_t hh = eddy_hash64(r->id, strlen(r->id));
        centry *e = *cache_slot(ss, r->id, hh);
        if (e && e->incomplete && e->hist_runs < r->history_runs) {
            r->next = e->waiters;
            e->waiters = r;
        } else if (e && e->hist_runs >= r->history_runs) {
            answer_load(ss, r, e);
        } else if (eddy_bgq_post(ss->reader, r)) { /* evicted meanwhile: read it */
            r->status = EDDY_ECLOSING;
            snprintf(r->errmsg, sizeof(r->errmsg), "the store is closing");
            answer_load(ss, r, NULL);
        }
    }
    maybe_finish_close(ss);
}

int eddy_store_load(eddy_store_session *ss, const char *agent, const char *key, int history_runs,
                    eddy_store_load_cb cb, void *ud, eddy_err *err)
{
    load_req *r = eddy_calloc(1, sizeof(*r));
    if (!r)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    assert(!ss->closing);
    r->ss = ss;
    r->agent = eddy_strdup(agent);
    r->key = eddy_strdup(key);
    r->id = cache_id(agent, key);
    r->history_runs = history_runs > 0 ? history_runs : 0;
    r->cb = cb;
    r->ud = ud;
    if (!r->agent || !r->key || !r->id) {
        load_free(r);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    uint64_t h = eddy_hash64(r->id, strlen(r->id));
    centry *e = *cache_slot(ss, r->id, h);
    if (e && e->incomplete && e->hist_runs < r->history_runs) {
        r->next = e->waiters; /* read once the write in flight committed */
        e->waiters = r;
    } else if (e && e->hist_runs >= r->history_runs) {
        if (ss->hits_tail)
            ss->hits_tail->next = r;
        else
            ss->hits = r;
        ss->hits_tail = r;
        uv_idle_start(&ss->idle, on_hits);
    } else if (e) {
        /* cached with less history than asked: read it again (only when the
         * key has nothing in flight, else the read could be stale) */
        if (e->pins || e->pending) {
            load_free(r);
            return eddy_err_set(err, EDDY_EINVAL,
                                "memory of %s/%s is in use with a shorter history", agent, key);
        }
        cache_remove(ss, e);
        if (eddy_bgq_post(ss->reader, r)) {
            load_free(r);
            return eddy_err_set(err, EDDY_ECLOSING, "the store is closing");
        }
    } else if (eddy_bgq_post(ss->reader, r)) {
        load_free(r);
        return eddy_err_set(err, EDDY_ECLOSING, "the store is closing");
    }
    ss->pending++;
    return 0;
}

/* A marker whose writes all committed goes; the loads that waited for it
 * read the store now. */
static void release_marker(eddy_store_session *ss, centry *e)
{
    load_req *w = e->waiters;
    if (e->pending)
        return;
    e->waiters = NULL;
    cache_remove(ss, e);
    while (w) {
        load_req *r = w;
        w = r->next;
        r->next = NULL;
        if (eddy_bgq_post(ss->reader, r)) {
            r->status = EDDY_ECLOSING;
            snprintf(r->errmsg, sizeof(r->errmsg), "the store is closing");
            answer_load(ss, r, NULL);
        }
    }
}

void eddy_store_release(eddy_store_session *ss, const char *agent, const char *key)
{
    char *id = cache_id(agent, key);
    centry *e = id ? *cache_slot(ss, id, eddy_hash64(id, strlen(id))) : NULL;
    eddy_free(id);
    if (e && e->pins > 0)
        e->pins--;
}

/* -- sessions: writing -------------------------------------------------------------- */

static int post(eddy_store_session *ss, sjob *j, eddy_err *err)
{
    assert(!ss->closing);
    j->ss = ss;
    if (eddy_bgq_post(ss->s->q, j)) {
        job_free(j);
        return eddy_err_set(err, EDDY_ECLOSING, "the store is closing");
    }
    ss->pending++;
    return 0;
}

/* J as step STEP of the run REF (its key, place, state, kind and data: DATA's
 * JSON text). EDDY_ENOMEM when a copy failed (J is then the caller's to free). */
/* J's step fields; TEXT (the data's JSON text, or NULL: out of memory) is
 * taken. */
static int set_step_take(sjob *j, const eddy_run_ref *ref, int step, int state, const char *kind,
                         char *text)
{
    j->key = eddy_strdup(ref->key);
    j->part = ref->part;
    j->pos = ref->pos;
    j->input_hash = ref->input_hash;
    j->step = step;
    j->state = state;
    j->skind = eddy_strdup(kind);
    j->data = text;
    return j->key && j->skind && j->data ? 0 : EDDY_ENOMEM;
}

static int set_step(sjob *j, const eddy_run_ref *ref, int step, int state, const char *kind,
                    const json_t *data)
{
    return set_step_take(j, ref, step, state, kind,
                         data ? eddy_json_dumps_flags(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL);
}

int eddy_store_put_step_take(eddy_store_session *ss, const eddy_run_ref *ref, int step, int state,
                             const char *kind, char *text, eddy_store_cb cb, void *ud,
                             eddy_err *err)
{
    if (!text) /* the caller's writer ran out of memory */
        return eddy_err_set(err, EDDY_ENOMEM, "cannot journal step %d: out of memory", step);
    if (!ref->agent || !ref->key || !kind || !*kind) {
        eddy_free(text);
        return eddy_err_set(err, EDDY_EINVAL, "a step needs an agent, a key, a kind and data");
    }
    sjob *j = eddy_calloc(1, sizeof(*j));
    if (!j) {
        eddy_free(text);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    j->kind = J_STEP;
    j->agent = eddy_strdup(ref->agent);
    j->cb = cb;
    j->ud = ud;
    if (set_step_take(j, ref, step, state, kind, text) || !j->agent) {
        job_free(j);
        return eddy_err_set(err, EDDY_ENOMEM, "cannot journal step %d of %s/%s", step, ref->agent,
                            ref->key);
    }
    return post(ss, j, err);
}

int eddy_store_put_step(eddy_store_session *ss, const eddy_run_ref *ref, int step, int state,
                        const char *kind, json_t *data, eddy_store_cb cb, void *ud, eddy_err *err)
{
    if (!ref->agent || !ref->key || !kind || !*kind || !data)
        return eddy_err_set(err, EDDY_EINVAL, "a step needs an agent, a key, a kind and data");
    return eddy_store_put_step_take(ss, ref, step, state, kind,
                                    eddy_json_dumps_flags(data, JSON_COMPACT | JSON_ENCODE_ANY), cb,
                                    ud, err);
}

int eddy_store_run_done(eddy_store_session *ss, const eddy_run_end *end, eddy_store_cb cb, void *ud,
                        eddy_err *err)
{
    const eddy_run_ref *ref = &end->ref;
    if (!ref->agent || !ref->key || !end->outcome || (end->doc && !json_is_object(end->doc)) ||
        (end->messages && !json_is_array(end->messages)))
        return eddy_err_set(err, EDDY_EINVAL,
                            "the end of a run needs an agent, a key, an outcome, and a memory "
                            "document that is an object and messages that are an array");
    sjob *j = eddy_calloc(1, sizeof(*j));
    if (!j)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    j->kind = J_DONE;
    j->agent = eddy_strdup(ref->agent);
    j->key = eddy_strdup(ref->key);
    j->part = ref->part;
    j->pos = ref->pos;
    j->input_hash = ref->input_hash;
    j->ok = end->ok;
    j->keep = end->keep_runs;
    int with_hist = end->ok && end->messages && end->keep_runs > 0;
    j->doc = end->ok && end->doc ? eddy_json_dumps_flags(end->doc, JSON_COMPACT) : NULL;
    j->messages = with_hist ? eddy_json_dumps_flags(end->messages, JSON_COMPACT) : NULL;
    j->outcome = eddy_json_dumps_flags(end->outcome, JSON_COMPACT);
    j->cb = cb;
    j->ud = ud;
    if (!j->agent || !j->key || !j->outcome || (end->ok && end->doc && !j->doc) ||
        (with_hist && !j->messages)) {
        job_free(j);
        return eddy_err_set(err, EDDY_ENOMEM, "cannot queue the end of the run of %s/%s",
                            ref->agent, ref->key);
    }
    /* the cache sees the run's memory at once */
    char *id = cache_id(ref->agent, ref->key);
    centry *e = id ? *cache_slot(ss, id, eddy_hash64(id, strlen(id))) : NULL;
    eddy_free(id);
    if (e && e->pins > 0)
        e->pins--;
    if (e && e->incomplete && end->ok && end->doc) {
        json_decref(e->doc); /* a second end before the first committed */
        e->doc = json_incref(end->doc);
        e->hist_runs = 0;
    }
    if (e && end->ok && !e->incomplete) {
        if (end->doc) {
            json_decref(e->doc);
            e->doc = json_incref(end->doc);
            e->doc_bytes = strlen(j->doc) * 3;
        }
        if (with_hist && e->hist_runs > 0) {
            size_t n = json_array_size(e->runs);
            int keep = end->keep_runs < e->hist_runs ? end->keep_runs : e->hist_runs;
            json_array_append(e->runs, end->messages);
            e->run_bytes[n] = strlen(j->messages) * 3;
            n++;
            while (n > (size_t)keep) {
                json_array_remove(e->runs, 0);
                memmove(e->run_bytes, e->run_bytes + 1, (n - 1) * sizeof(size_t));
                n--;
            }
            json_decref(e->flat);
            e->flat = NULL;
        }
        centry_bytes(ss, e);
    }
    if (!e && (e = eddy_calloc(1, sizeof(*e)))) { /* not cached: a marker of the write */
        if (!(e->id = cache_id(ref->agent, ref->key))) {
            eddy_free(e);
            e = NULL;
        } else {
            centry **slot;
            e->hash = eddy_hash64(e->id, strlen(e->id));
            e->incomplete = 1;
            /* the new document is known (loads without history are served), the
             * history is not (those loads wait for the commit) */
            e->hist_runs = end->ok && end->doc ? 0 : -1;
            e->doc = end->ok && end->doc ? json_incref(end->doc) : NULL;
            e->runs = json_array();
            slot = cache_slot(ss, e->id, e->hash);
            e->chain = *slot;
            *slot = e;
            ss->nentries++;
            lru_front(ss, e);
            centry_bytes(ss, e);
        }
    }
    if (e) {
        e->pending++;
        j->ce = e;
    }
    int rc = post(ss, j, err);
    if (rc && e) {
        e->pending--;
        release_marker(ss, e);
    }
    return rc;
}

int eddy_store_checkpoint(eddy_store_session *ss, const eddy_checkpoint *c, eddy_store_cb cb,
                          void *ud, eddy_err *err)
{
    sjob *j = eddy_calloc(1, sizeof(*j));
    ckpt *k = eddy_calloc(1, sizeof(*k));
    int oom = !j || !k;
    if (!oom) {
        k->pos = eddy_calloc(c->npositions + 1, sizeof(*k->pos));
        k->del = eddy_calloc(c->ndelivered + 1, sizeof(*k->del));
        k->sinks = eddy_calloc(c->nsinks + 1, sizeof(*k->sinks));
        oom = !k->pos || !k->del || !k->sinks;
    }
    for (size_t i = 0; !oom && i < c->npositions; i++) {
        k->pos[i] = c->positions[i];
        k->pos[i].source = eddy_strdup(c->positions[i].source);
        k->pos[i].part = eddy_strdup(c->positions[i].part);
        k->npos++;
        oom = !k->pos[i].source || !k->pos[i].part;
    }
    for (size_t i = 0; !oom && i < c->ndelivered; i++) {
        k->del[i] = c->delivered[i];
        k->del[i].agent = eddy_strdup(c->delivered[i].agent);
        k->ndel++;
        oom = !k->del[i].agent;
    }
    for (size_t i = 0; !oom && i < c->nsinks; i++) {
        k->sinks[i] = c->sinks[i];
        k->sinks[i].sink = eddy_strdup(c->sinks[i].sink);
        k->sinks[i].state = c->sinks[i].state ? eddy_strdup(c->sinks[i].state) : NULL;
        k->nsinks++;
        oom = !k->sinks[i].sink || (c->sinks[i].state && !k->sinks[i].state);
    }
    if (oom) {
        ckpt_free(k);
        eddy_free(j);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    j->kind = J_CKPT;
    j->ck = k;
    j->cb = cb;
    j->ud = ud;
    return post(ss, j, err);
}

/* -- shared state ------------------------------------------------------------ */

#define STATE_KEY_MAX 1024
#define STATE_VALUE_MAX (1 << 20)

/* The result of OP on CUR (borrowed, NULL: absent) into *RES (new), and the
 * new value into *NEWV (new; NULL: absent). Returns 1 when the key
 * changes, 0 when not, -1 with ERR on a bad argument. */
static int state_apply(const char *op, json_t *cur, json_t *a, json_t *b, json_t **res,
                       json_t **newv, eddy_err *err)
{
    *res = *newv = NULL;
    if (!strcmp(op, "get")) {
        *res = cur ? json_deep_copy(cur) : json_null();
        return 0;
    }
    if (!strcmp(op, "set")) {
        if (!a || json_is_null(a)) {
            eddy_err_set(err, EDDY_EINVAL,
                         "ctx.state.set: a value is required (delete removes "
                         "a key)");
            return -1;
        }
        *newv = json_deep_copy(a);
        *res = json_null();
        return 1;
    }
    if (!strcmp(op, "incr")) {
        json_t *by = a ? a : NULL;
        if (by && !json_is_number(by)) {
            eddy_err_set(err, EDDY_EINVAL, "ctx.state.incr: the amount must be a number, not %s",
                         eddy_json_type_name(by));
            return -1;
        }
        if (cur && !json_is_number(cur)) {
            eddy_err_set(err, EDDY_EINVAL, "ctx.state.incr: the key holds %s, not a number",
                         eddy_json_type_name(cur));
            return -1;
        }
        if ((!cur || json_is_integer(cur)) && (!by || json_is_integer(by))) {
            json_int_t x = cur ? json_integer_value(cur) : 0, d = by ? json_integer_value(by) : 1;
            if ((d > 0 && x > INT64_MAX - d) || (d < 0 && x < INT64_MIN - d)) {
                eddy_err_set(err, EDDY_ERANGE, "ctx.state.incr: the counter would overflow");
                return -1;
            }
            *newv = json_integer(x + d);
        } else {
            *newv =
                json_real((cur ? json_number_value(cur) : 0) + (by ? json_number_value(by) : 1));
        }
        *res = json_deep_copy(*newv);
        return 1;
    }
    if (!strcmp(op, "compare_and_set")) {
        int absent = !a || json_is_null(a);
        int equal = cur ? !absent && json_equal(cur, a) : absent;
        *res = json_boolean(equal);
        if (!equal)
            return 0;
        *newv = b && !json_is_null(b) ? json_deep_copy(b) : NULL;
        return 1;
    }
    if (!strcmp(op, "delete")) {
        *res = json_boolean(cur != NULL);
        return cur != NULL;
    }
    eddy_err_set(err, EDDY_EINVAL, "ctx.state has no operation '%s'", op);
    return -1;
}

json_t *eddy_store_state_op(eddy_store_session *ss, const char *agent, const char *op,
                            const char *key, json_t *a, json_t *b, const eddy_run_ref *ref,
                            int step, eddy_err *err)
{
    eddy_store *s = ss->s;
    json_t *res = NULL, *newv = NULL, *m, *cur;
    sjob *j = NULL;
    int changed;
    size_t klen = key ? strlen(key) : 0;
    if (!klen || klen > STATE_KEY_MAX) {
        eddy_err_set(err, EDDY_EINVAL, "ctx.state.%s: the key must be a string of 1 to %d bytes",
                     op, STATE_KEY_MAX);
        return NULL;
    }
    for (int i = 0; i < 2; i++) { /* measured before the lock: nobody waits on a big value */
        json_t *v = i ? b : a;
        char *t = v && !json_is_number(v) ? eddy_json_dumps_flags(v, JSON_COMPACT | JSON_ENCODE_ANY)
                                          : NULL;
        size_t n = t ? strlen(t) : 0;
        eddy_free(t);
        if (n > STATE_VALUE_MAX) {
            eddy_err_set(err, EDDY_ERANGE, "ctx.state.%s: the value of '%s' is over %d bytes", op,
                         key, STATE_VALUE_MAX);
            return NULL;
        }
    }
    pthread_mutex_lock(&s->state_mu);
    m = json_object_get(s->state, agent);
    cur = m ? json_object_get(m, key) : NULL;
    if ((changed = state_apply(op, cur, a, b, &res, &newv, err)) < 0)
        goto out;
    if (!res || (changed && newv == NULL && strcmp(op, "delete") && strcmp(op, "compare_and_set")))
        goto oom;
    if (changed || ref) {
        j = eddy_calloc(1, sizeof(*j));
        if (!j)
            goto oom;
        j->kind = J_STATE;
        j->agent = eddy_strdup(agent);
        j->skey = eddy_strdup(key);
        j->changed = changed;
        j->value = newv ? eddy_json_dumps_flags(newv, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
        if (!j->agent || !j->skey || (newv && !j->value))
            goto oom;
        if (j->value && strlen(j->value) > STATE_VALUE_MAX) {
            eddy_err_set(err, EDDY_ERANGE, "ctx.state.%s: the value of '%s' is over %d bytes", op,
                         key, STATE_VALUE_MAX);
            goto fail;
        }
        if (ref) { /* journaled with the change: a re-run gets the same answer */
            json_t *d = json_pack("{s:O, s:I}", "result", res, "opkey",
                                  (json_int_t)eddy_store_state_opkey(op, key));
            j->journaled = 1;
            int bad = set_step(j, ref, step, EDDY_STEP_DONE, "state", d);
            json_decref(d);
            if (bad)
                goto oom;
        }
        if (post(ss, j, err)) { /* under state_mu: the writer stores changes in order */
            j = NULL;
            goto fail;
        }
        j = NULL;
    }
    if (changed && newv) {
        if (!m && (json_object_set_new_nocheck(s->state, agent, m = json_object()) || !m))
            goto oom;
        if (json_object_set_new_nocheck(m, key, newv)) { /* bytes, not always UTF-8 */
            newv = NULL;
            goto oom;
        }
        newv = NULL;
    } else if (changed) {
        json_object_del(m, key);
    }
    goto out;
oom:
    eddy_err_set(err, EDDY_ENOMEM, "out of memory");
fail:
    json_decref(res);
    res = NULL;
out:
    pthread_mutex_unlock(&s->state_mu);
    if (j)
        job_free(j);
    json_decref(newv);
    return res;
}

int64_t eddy_store_state_opkey(const char *op, const char *key)
{
    return eddy_store_hash(key, strlen(key), eddy_store_hash(op, strlen(op), 0));
}

json_t *eddy_store_state_get(eddy_store *s, const char *agent, const char *key)
{
    pthread_mutex_lock(&s->state_mu);
    json_t *v = json_object_get(json_object_get(s->state, agent), key);
    v = v ? json_deep_copy(v) : NULL;
    pthread_mutex_unlock(&s->state_mu);
    return v;
}

/* -- sessions: the loop side ------------------------------------------------------ */

static void on_async(uv_async_t *a)
{
    eddy_store_session *ss = a->data;
    sjob *jobs;
    load_req *loads;
    pthread_mutex_lock(&ss->mu);
    jobs = ss->acked;
    loads = ss->loaded;
    ss->acked = ss->acked_tail = NULL;
    ss->loaded = ss->loaded_tail = NULL;
    pthread_mutex_unlock(&ss->mu);
    while (jobs) {
        sjob *j = jobs;
        jobs = j->next;
        if (j->ce) {
            centry *e = j->ce;
            e->pending--;
            if (j->status) /* the write is lost: the cached memory is not the store's */
                e->stale = 1;
            if (e->incomplete)
                release_marker(ss, e);
            else if (e->stale && !e->pending && !e->pins)
                cache_remove(ss, e);
        }
        ss->pending--;
        if (j->cb)
            j->cb(j->status, j->status ? j->errmsg : NULL, j->ud);
        job_free(j);
    }
    while (loads) {
        load_req *r = loads;
        loads = r->next;
        loaded(ss, r);
    }
    cache_trim(ss);
    maybe_finish_close(ss);
}

int eddy_store_session_new(eddy_store *s, uv_loop_t *loop, eddy_store_session **out, eddy_err *err)
{
    eddy_store_session *ss = eddy_calloc(1, sizeof(*ss));
    int rc;
    *out = NULL;
    if (!ss || !(ss->buckets = eddy_calloc(1024, sizeof(centry *)))) {
        eddy_free(ss);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    ss->nbuckets = 1024;
    ss->s = s;
    ss->loop = loop;
    pthread_mutex_init(&ss->mu, NULL);
    if ((rc = open_db(s->path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, &ss->rdb, err)) ||
        (rc = prepare_all(ss->rdb, kReadSql, ss->rst, R_N, err)) ||
        (rc = eddy_bgq_new(on_read, NULL, ss, &kReaderLimits, &ss->reader, err)))
        goto fail;
    uv_async_init(loop, &ss->async, on_async);
    uv_idle_init(loop, &ss->idle);
    ss->async.data = ss->idle.data = ss;
    ss->handles = 2;
    *out = ss;
    return 0;
fail:
    finalize_all(ss->rst, R_N);
    sqlite3_close(ss->rdb);
    pthread_mutex_destroy(&ss->mu);
    eddy_free(ss->buckets);
    eddy_free(ss);
    return rc;
}

size_t eddy_store_session_pending(const eddy_store_session *ss)
{
    return ss->pending;
}

static void handle_closed(uv_handle_t *h)
{
    eddy_store_session *ss = h->data;
    if (--ss->handles > 0)
        return;
    void (*cb)(void *) = ss->close_cb;
    void *ud = ss->close_ud;
    while (ss->lru_head)
        cache_remove(ss, ss->lru_head);
    eddy_free(ss->buckets);
    pthread_mutex_destroy(&ss->mu);
    eddy_free(ss);
    if (cb)
        cb(ud);
}

static void maybe_finish_close(eddy_store_session *ss)
{
    if (!ss->closing || ss->pending || ss->closing > 1)
        return;
    ss->closing = 2;
    eddy_bgq_free(ss->reader);
    ss->reader = NULL;
    finalize_all(ss->rst, R_N);
    sqlite3_close(ss->rdb);
    ss->rdb = NULL;
    uv_close((uv_handle_t *)&ss->async, handle_closed);
    uv_close((uv_handle_t *)&ss->idle, handle_closed);
}

void eddy_store_session_close(eddy_store_session *ss, void (*cb)(void *ud), void *ud)
{
    if (!ss) {
        if (cb)
            cb(ud);
        return;
    }
    assert(!ss->closing);
    ss->closing = 1;
    ss->close_cb = cb;
    ss->close_ud = ud;
    maybe_finish_close(ss);
}
