/*
 * memory/store.c - per-key memory and history on SQLite (WAL).
 *
 * Two connections: the writer belongs to the persistence thread (an
 * eddy_bgq), the reader to the loop thread. Commits are group commits: the
 * writer keeps one transaction open while more jobs are queued and commits
 * when the queue runs dry, then acknowledges every job of the batch through
 * a uv_async_t, so callbacks run on the loop that asked. A job that fails
 * rolls back only itself (a savepoint); the others of its batch commit.
 */
#include "eddy/memory.h"
#include "eddy/bgq.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/llm.h"
#include "eddy/log.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

/* 1: history rows are OpenAI chat messages (eddy before the neutral LLM
 * layer); 2: history rows are neutral messages (llm.h, format 2). */
#define SCHEMA_VERSION "2"

static const char *const kSchema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('schema_version','" SCHEMA_VERSION "');"
    "CREATE TABLE IF NOT EXISTS key_memory(agent TEXT NOT NULL, key TEXT NOT NULL,"
    "  doc TEXT NOT NULL, updated_ns INTEGER NOT NULL, PRIMARY KEY(agent, key)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS history(agent TEXT NOT NULL, key TEXT NOT NULL,"
    "  seq INTEGER NOT NULL, messages TEXT NOT NULL, created_ns INTEGER NOT NULL,"
    "  PRIMARY KEY(agent, key, seq)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS source_positions(source TEXT NOT NULL, part TEXT NOT NULL,"
    "  position INTEGER NOT NULL, updated_ns INTEGER NOT NULL,"
    "  PRIMARY KEY(source, part)) WITHOUT ROWID;";

typedef struct job {
    char *agent, *key, *doc, *messages;
    int keep;
    int is_pos; /* a source position: agent = source, key = part */
    int64_t pos;
    eddy_memory_cb cb;
    void *ud;
    int status;
    char errmsg[256];
    struct job *next;
} job;

enum { ST_DOC, ST_HIST, ST_TRIM, ST_POS, ST_NWRITE };
enum { ST_LOAD_DOC, ST_LOAD_HIST, ST_LOAD_POS, ST_NREAD };

static const char *const kWriteSql[ST_NWRITE] = {
    ("INSERT INTO key_memory(agent,key,doc,updated_ns) VALUES(?1,?2,?3,?4) "
     "ON CONFLICT(agent,key) DO UPDATE SET doc=excluded.doc, updated_ns=excluded.updated_ns"),
    ("INSERT INTO history(agent,key,seq,messages,created_ns) VALUES(?1,?2,"
     "(SELECT coalesce(max(seq),0)+1 FROM history WHERE agent=?1 AND key=?2),?3,?4)"),
    ("DELETE FROM history WHERE agent=?1 AND key=?2 AND seq <= "
     "(SELECT max(seq) FROM history WHERE agent=?1 AND key=?2) - ?3"),
    "INSERT INTO source_positions(source,part,position,updated_ns) VALUES(?1,?2,?3,?4) "
    "ON CONFLICT(source,part) DO UPDATE SET position=excluded.position, "
    "updated_ns=excluded.updated_ns"};
static const char *const kReadSql[ST_NREAD] = {
    "SELECT doc FROM key_memory WHERE agent=?1 AND key=?2",
    ("SELECT messages FROM (SELECT seq, messages FROM history WHERE agent=?1 AND key=?2 "
     "ORDER BY seq DESC LIMIT ?3) ORDER BY seq"),
    "SELECT part, position FROM source_positions WHERE source=?1"};

struct eddy_memory {
    sqlite3 *wdb, *rdb;
    /* prepared once, reused: the writer's belong to the persistence thread,
     * the reader's to the loop thread */
    sqlite3_stmt *wst[ST_NWRITE], *rst[ST_NREAD];
    eddy_bgq *q;
    uv_async_t async;
    pthread_mutex_t mu;
    job *batch;            /* written, not yet committed (writer thread only) */
    job *done, *done_tail; /* committed, waiting for the loop (under mu) */
    int in_txn;
    void (*close_cb)(void *ud);
    void *close_ud;
};

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

static void job_free(job *j)
{
    eddy_free(j->agent);
    eddy_free(j->key);
    eddy_free(j->doc);
    eddy_free(j->messages);
    eddy_free(j);
}

static int exec1(sqlite3 *db, const char *sql, job *j)
{
    char *e = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK) {
        if (j)
            snprintf(j->errmsg, sizeof(j->errmsg), "%s", e ? e : "sqlite error");
        sqlite3_free(e);
        return EDDY_ESQLITE;
    }
    return 0;
}

static int prepare_all(sqlite3 *db, const char *const *sql, sqlite3_stmt **st, int n, eddy_err *err)
{
    for (int i = 0; i < n; i++)
        if (sqlite3_prepare_v3(db, sql[i], -1, SQLITE_PREPARE_PERSISTENT, &st[i], NULL))
            return eddy_err_set(err, EDDY_ESQLITE, "cannot prepare a memory statement: %s",
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

/* Bind agent and key as ?1 ?2, TEXT as ?3 (or NUM when TEXT is NULL) and the
 * time as ?4 when the statement has them, step it, and reset it. */
static int run_stmt(sqlite3_stmt *st, job *j, const char *text, int64_t num)
{
    int rc, np = sqlite3_bind_parameter_count(st);
    sqlite3_bind_text(st, 1, j->agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, j->key, -1, SQLITE_STATIC);
    if (np >= 3 && text)
        sqlite3_bind_text(st, 3, text, -1, SQLITE_STATIC);
    else if (np >= 3)
        sqlite3_bind_int64(st, 3, num);
    if (np >= 4)
        sqlite3_bind_int64(st, 4, (sqlite3_int64)eddy_wall_ns());
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        snprintf(j->errmsg, sizeof(j->errmsg), "%s", sqlite3_errmsg(sqlite3_db_handle(st)));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : EDDY_ESQLITE;
}

static void write_job(eddy_memory *m, job *j)
{
    sqlite3 *db = m->wdb;
    if (exec1(db, "SAVEPOINT job", j)) {
        j->status = EDDY_ESQLITE;
        return;
    }
    if ((j->is_pos && run_stmt(m->wst[ST_POS], j, NULL, j->pos)) ||
        (j->doc && run_stmt(m->wst[ST_DOC], j, j->doc, 0)) ||
        (j->messages && run_stmt(m->wst[ST_HIST], j, j->messages, 0)) ||
        (j->messages && run_stmt(m->wst[ST_TRIM], j, NULL, j->keep))) {
        j->status = EDDY_ESQLITE;
        exec1(db, "ROLLBACK TO job; RELEASE job", NULL);
        return;
    }
    exec1(db, "RELEASE job", j);
}

static void ack(eddy_memory *m, job *list)
{
    job *tail = list;
    if (!list)
        return;
    while (tail->next)
        tail = tail->next;
    pthread_mutex_lock(&m->mu);
    if (m->done_tail)
        m->done_tail->next = list;
    else
        m->done = list;
    m->done_tail = tail;
    pthread_mutex_unlock(&m->mu);
    uv_async_send(&m->async);
}

/* Persistence thread: write J inside the open batch transaction. */
static void on_job(void *p, int more, void *ctx)
{
    eddy_memory *m = ctx;
    job *j = p;
    if (!m->in_txn && exec1(m->wdb, "BEGIN IMMEDIATE", j) == 0)
        m->in_txn = 1;
    if (m->in_txn)
        write_job(m, j);
    else
        j->status = EDDY_ESQLITE;
    j->next = m->batch;
    m->batch = j;
    (void)more;
}

/* Persistence thread, queue empty: commit the batch and acknowledge it. */
static void on_idle(void *ctx)
{
    eddy_memory *m = ctx;
    job *list = NULL;
    if (m->in_txn) {
        char msg[256] = "";
        int failed = 0;
        if (sqlite3_exec(m->wdb, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            snprintf(msg, sizeof(msg), "commit failed: %s", sqlite3_errmsg(m->wdb));
            sqlite3_exec(m->wdb, "ROLLBACK", NULL, NULL, NULL);
            failed = 1;
        }
        m->in_txn = 0;
        for (job *j = m->batch; j; j = j->next)
            if (failed && !j->status) {
                j->status = EDDY_ESQLITE;
                snprintf(j->errmsg, sizeof(j->errmsg), "%s", msg);
            }
    }
    while (m->batch) { /* reverse into posting order */
        job *j = m->batch;
        m->batch = j->next;
        j->next = list;
        list = j;
    }
    ack(m, list);
}

static void on_async(uv_async_t *a)
{
    eddy_memory *m = a->data;
    job *list;
    pthread_mutex_lock(&m->mu);
    list = m->done;
    m->done = m->done_tail = NULL;
    pthread_mutex_unlock(&m->mu);
    while (list) {
        job *j = list;
        list = j->next;
        if (j->cb)
            j->cb(j->status, j->status ? j->errmsg : NULL, j->ud);
        job_free(j);
    }
}

/* Bring a store written by an older eddy up to SCHEMA_VERSION, in one
 * transaction: nothing changes unless everything does. */
static int migrate(sqlite3 *db, const char *path, eddy_err *err)
{
    sqlite3_stmt *st = NULL, *up = NULL;
    int rc = 0, version = 0;
    long rows = 0;
    if (sqlite3_prepare_v2(db, "SELECT value FROM meta WHERE key='schema_version'", -1, &st,
                           NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        version = atoi((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    st = NULL;
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
    if (sqlite3_prepare_v2(db, "SELECT agent, key, seq, messages FROM history", -1, &st, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, "UPDATE history SET messages=?4 WHERE agent=?1 AND key=?2 AND seq=?3",
                           -1, &up, NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    /* read every row first: updating a table while a SELECT walks it may
     * visit rows twice */
    json_t *all = json_array();
    while (all && sqlite3_step(st) == SQLITE_ROW)
        json_array_append_new(all, json_pack("[s, s, I, s]", sqlite3_column_text(st, 0),
                                             sqlite3_column_text(st, 1),
                                             (json_int_t)sqlite3_column_int64(st, 2),
                                             sqlite3_column_text(st, 3)));
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
        json_t *v1 = msgs ? json_loads(msgs, 0, NULL) : NULL, *v2;
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
            json_decref(all);
            goto out;
        }
        sqlite3_bind_text(up, 1, agent, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(up, 2, key, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(up, 3, seq);
        sqlite3_bind_text(up, 4, text, -1, eddy_free);
        if (sqlite3_step(up) != SQLITE_DONE) {
            rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
            json_decref(all);
            goto out;
        }
        sqlite3_reset(up);
        rows++;
    }
    json_decref(all);
    if (sqlite3_exec(db,
                     "UPDATE meta SET value='" SCHEMA_VERSION "' WHERE key='schema_version'",
                     NULL, NULL, NULL) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: migration: %s", path, sqlite3_errmsg(db));
        goto out;
    }
out:
    sqlite3_finalize(st);
    sqlite3_finalize(up);
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
    EDDY_INFO("memory", "%s: migrated from schema version %d to " SCHEMA_VERSION
                        " (%ld history entries in the neutral format)",
              path, version, rows);
    return 0;
}

int eddy_memory_open(const char *path, uv_loop_t *loop, eddy_memory **out, eddy_err *err)
{
    eddy_memory *m = eddy_calloc(1, sizeof(*m));
    char *e = NULL;
    int rc;
    *out = NULL;
    if (!m)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    pthread_mutex_init(&m->mu, NULL);
    if ((rc = eddy_mkdirs_for(path, err)))
        goto fail;
    if ((rc = open_db(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                      &m->wdb, err)))
        goto fail;
    if (sqlite3_exec(m->wdb, kSchema, NULL, NULL, &e) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot create the schema: %s", path, e);
        sqlite3_free(e);
        goto fail;
    }
    if ((rc = migrate(m->wdb, path, err)))
        goto fail;
    if ((rc = open_db(path, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, &m->rdb, err)) ||
        (rc = prepare_all(m->wdb, kWriteSql, m->wst, ST_NWRITE, err)) ||
        (rc = prepare_all(m->rdb, kReadSql, m->rst, ST_NREAD, err)))
        goto fail;
    if (uv_async_init(loop, &m->async, on_async)) {
        rc = eddy_err_set(err, EDDY_EUV, "cannot create an async handle");
        goto fail;
    }
    m->async.data = m;
    if ((rc = eddy_bgq_new(on_job, on_idle, m, &m->q, err))) {
        uv_close((uv_handle_t *)&m->async, NULL);
        goto fail;
    }
    *out = m;
    return 0;
fail:
    finalize_all(m->wst, ST_NWRITE);
    finalize_all(m->rst, ST_NREAD);
    sqlite3_close(m->rdb);
    sqlite3_close(m->wdb);
    pthread_mutex_destroy(&m->mu);
    eddy_free(m);
    return rc;
}

static void async_closed(uv_handle_t *h)
{
    eddy_memory *m = h->data;
    void (*cb)(void *) = m->close_cb;
    void *ud = m->close_ud;
    pthread_mutex_destroy(&m->mu);
    eddy_free(m);
    if (cb)
        cb(ud);
}

void eddy_memory_close(eddy_memory *m, void (*cb)(void *ud), void *ud)
{
    if (!m) {
        if (cb)
            cb(ud);
        return;
    }
    eddy_bgq_free(m->q); /* runs and commits everything queued */
    on_async(&m->async); /* deliver the last acknowledgements */
    finalize_all(m->wst, ST_NWRITE);
    finalize_all(m->rst, ST_NREAD);
    sqlite3_close(m->rdb);
    sqlite3_close(m->wdb);
    m->close_cb = cb;
    m->close_ud = ud;
    uv_close((uv_handle_t *)&m->async, async_closed);
}

int eddy_memory_load(eddy_memory *m, const char *agent, const char *key, int history_runs,
                     json_t **doc, json_t **history, eddy_err *err)
{
    sqlite3_stmt *st = m->rst[ST_LOAD_DOC];
    int rc;
    *doc = NULL;
    *history = json_array();
    sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        *doc = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
    sqlite3_reset(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        goto sqlerr;
    if (!*doc)
        *doc = json_object();
    if (history_runs > 0) {
        st = m->rst[ST_LOAD_HIST];
        sqlite3_bind_text(st, 1, agent, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, key, -1, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, history_runs);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            json_t *msgs = json_loads((const char *)sqlite3_column_text(st, 0), 0, NULL);
            if (json_is_array(msgs))
                json_array_extend(*history, msgs);
            json_decref(msgs);
        }
        sqlite3_reset(st);
        if (rc != SQLITE_DONE)
            goto sqlerr;
    }
    if (!*doc || !*history) {
        json_decref(*doc);
        json_decref(*history);
        *doc = *history = NULL;
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    return 0;
sqlerr:
    json_decref(*doc);
    json_decref(*history);
    *doc = *history = NULL;
    return eddy_err_setc(err, EDDY_ESQLITE, rc, "memory of %s/%s: %s", agent, key,
                         sqlite3_errmsg(m->rdb));
}

int eddy_memory_commit(eddy_memory *m, const char *agent, const char *key, json_t *doc,
                       json_t *messages, int keep_runs, eddy_memory_cb cb, void *ud, eddy_err *err)
{
    job *j = eddy_calloc(1, sizeof(*j));
    if (!j)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    j->agent = eddy_strdup(agent);
    j->key = eddy_strdup(key);
    j->doc = doc ? eddy_json_dumps_flags(doc, JSON_COMPACT) : NULL;
    j->messages = messages && keep_runs > 0 ? eddy_json_dumps_flags(messages, JSON_COMPACT) : NULL;
    j->keep = keep_runs;
    j->cb = cb;
    j->ud = ud;
    if (!j->agent || !j->key || (doc && !j->doc) || (messages && keep_runs > 0 && !j->messages) ||
        eddy_bgq_post(m->q, j)) {
        job_free(j);
        return eddy_err_set(err, EDDY_ENOMEM, "cannot queue the memory commit of %s/%s", agent,
                            key);
    }
    return 0;
}

int eddy_memory_positions(eddy_memory *m, const char *source,
                          void (*fn)(const char *part, int64_t pos, void *ud), void *ud,
                          eddy_err *err)
{
    sqlite3_stmt *st = m->rst[ST_LOAD_POS];
    int rc;
    sqlite3_bind_text(st, 1, source, -1, SQLITE_STATIC);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        fn((const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1), ud);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE)
        return eddy_err_setc(err, EDDY_ESQLITE, rc, "positions of %s: %s", source,
                             sqlite3_errmsg(m->rdb));
    return 0;
}

int eddy_memory_save_position(eddy_memory *m, const char *source, const char *part, int64_t pos,
                              eddy_memory_cb cb, void *ud, eddy_err *err)
{
    job *j = eddy_calloc(1, sizeof(*j));
    if (!j)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    j->agent = eddy_strdup(source);
    j->key = eddy_strdup(part);
    j->is_pos = 1;
    j->pos = pos;
    j->cb = cb;
    j->ud = ud;
    if (!j->agent || !j->key || eddy_bgq_post(m->q, j)) {
        job_free(j);
        return eddy_err_set(err, EDDY_ENOMEM, "cannot queue the position of %s", source);
    }
    return 0;
}
