/*
 * memory/inspect.c - `eddy state`: reading and maintaining a job's store
 * from another process, while the job may be writing it.
 *
 * Each eddy_state is one connection of its own, never the job's: read-only
 * (SQLITE_OPEN_READONLY; WAL gives it a snapshot while the writer commits)
 * or, for import, rm and vacuum, read-write after taking the store's lock,
 * the exclusive flock on "PATH.lock" that a running job holds for as long
 * as it runs. So nothing here ever writes a store a job has open, and
 * nothing waits on a writer longer than the busy timeout.
 *
 * The tables are memory/store.c's (schema version 3). This file reads them
 * with SQL of its own and writes only what a run's end writes (key_memory,
 * history) and what deleting a key needs (also journal); it never touches
 * positions, runs or sinks, which only a job's checkpoints may change.
 */
#include "eddy/state.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/llm.h"
#include "eddy/log.h"
#include "eddy/memory.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The version memory/store.c writes (its SCHEMA_VERSION): a store of any
 * other version has other tables, or tables that mean other things. */
#define STATE_SCHEMA_VERSION 4

struct eddy_state {
    char *path;
    sqlite3 *db;
    int lock_fd; /* -1: not locked */
    int write;
};

/* -- small helpers ---------------------------------------------------------- */

static const char *col(sqlite3_stmt *q, int i)
{
    const char *s = (const char *)sqlite3_column_text(q, i);
    return s ? s : "";
}

/* Append S with a backslash, a tab and control characters as C escapes, so
 * that a name is one field of one line. */
static void put_name(eddy_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '\\')
            eddy_buf_puts(b, "\\\\");
        else if (c == '\t')
            eddy_buf_puts(b, "\\t");
        else if (c == '\n')
            eddy_buf_puts(b, "\\n");
        else if (c == '\r')
            eddy_buf_puts(b, "\\r");
        else if (c < 0x20 || c == 0x7f)
            eddy_buf_printf(b, "\\x%02x", c);
        else
            eddy_buf_putc(b, (char)c);
    }
}

/* S escaped as put_name does, for a message: a new string, NULL on OOM
 * (SHOWN says "?" then). */
static char *shown(const char *s)
{
    eddy_buf b;
    eddy_buf_init(&b);
    put_name(&b, s);
    char *r = b.oom ? NULL : eddy_buf_take(&b);
    eddy_buf_free(&b);
    return r;
}

#define SHOWN(p) ((p) ? (p) : "?")

static int sql_fail(eddy_state *st, int rc, eddy_err *err)
{
    if (rc == SQLITE_BUSY || rc == SQLITE_LOCKED)
        return eddy_err_setc(err, EDDY_ESQLITE, rc,
                             "%s: the store stayed locked for more than %d ms: %s", st->path,
                             EDDY_STATE_BUSY_MS, sqlite3_errmsg(st->db));
    return eddy_err_setc(err, EDDY_ESQLITE, rc, "%s: %s", st->path, sqlite3_errmsg(st->db));
}

static int prep(eddy_state *st, const char *sql, sqlite3_stmt **q, eddy_err *err)
{
    int rc = sqlite3_prepare_v2(st->db, sql, -1, q, NULL);
    return rc == SQLITE_OK ? 0 : sql_fail(st, rc, err);
}

static void bind_str(sqlite3_stmt *q, int i, const char *s)
{
    sqlite3_bind_text(q, i, s, -1, SQLITE_STATIC);
}

static int exec(eddy_state *st, const char *sql, eddy_err *err)
{
    int rc = sqlite3_exec(st->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sql_fail(st, rc, err);
}

/* Write B to OUT and empty it. */
static int emit(eddy_buf *b, FILE *out, eddy_err *err)
{
    if (b->oom) {
        eddy_buf_reset(b);
        b->oom = 0;
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    if (b->len && fwrite(b->data, 1, b->len, out) != b->len)
        return eddy_err_setc(err, EDDY_EIO, errno, "cannot write the output: %s", strerror(errno));
    eddy_buf_reset(b);
    return 0;
}

static int flush_out(FILE *out, eddy_err *err)
{
    if (fflush(out) || ferror(out))
        return eddy_err_setc(err, EDDY_EIO, errno, "cannot write the output: %s", strerror(errno));
    return 0;
}

/* Append the JSON text TEXT (a column of the store) to B as it is, when it
 * is one line of valid JSON; re-written compact when it spans lines; an
 * error naming THING of (AGENT, KEY) when it is not JSON. */
static int put_json(eddy_state *st, eddy_buf *b, const char *text, const char *thing,
                    const char *agent, const char *key, eddy_err *err)
{
    json_error_t je;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
    int rc = 0;
    if (v && strpbrk(text, "\r\n"))
        rc = eddy_json_dump_buf(b, v, JSON_COMPACT | JSON_ENCODE_ANY);
    else if (v)
        rc = eddy_buf_puts(b, text);
    json_decref(v);
    if (!v || rc) {
        char *a = shown(agent), *k = shown(key);
        rc = eddy_err_set(err, v ? rc : EDDY_ECORRUPT, "%s: %s of agent '%s' key '%s' %s: %s",
                          st->path, thing, SHOWN(a), SHOWN(k),
                          v ? "cannot be written" : "is not JSON", v ? eddy_strerror(rc) : je.text);
        eddy_free(a);
        eddy_free(k);
    }
    return rc;
}

static int put_string(eddy_state *st, eddy_buf *b, const char *s, eddy_err *err)
{
    int rc = eddy_json_put_string(b, s, strlen(s));
    if (rc == EDDY_EINVAL) {
        char *v = shown(s);
        rc = eddy_err_set(err, rc, "%s: '%s' is not valid UTF-8", st->path, SHOWN(v));
        eddy_free(v);
    } else if (rc) {
        rc = eddy_err_set(err, rc, "out of memory");
    }
    return rc;
}

/* -- open: is it an eddy store, of our schema; the lock ------------------------ */

static int check_store(eddy_state *st, eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    int rc, tables = 0, meta = 0, any = 0;
    int64_t version = 0;
    static const char *const kTables[] = {"key_memory", "history", "positions",
                                          "runs",       "journal", "sinks"};
    rc = sqlite3_prepare_v2(st->db, "SELECT name FROM sqlite_master WHERE type='table'", -1, &q,
                            NULL);
    while (rc == SQLITE_OK && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *name = col(q, 0);
        rc = SQLITE_OK;
        any = 1;
        meta |= !strcmp(name, "meta");
        for (size_t i = 0; i < sizeof(kTables) / sizeof(kTables[0]); i++)
            tables += !strcmp(name, kTables[i]);
    }
    sqlite3_finalize(q);
    q = NULL;
    if (rc == SQLITE_NOTADB)
        return eddy_err_set(err, EDDY_ECORRUPT, "%s: not an eddy store (not an SQLite database)",
                            st->path);
    if (rc != SQLITE_DONE)
        return sql_fail(st, rc, err);
    if (!meta)
        return eddy_err_set(err, EDDY_ECORRUPT, "%s: not an eddy store (%s)", st->path,
                            any ? "an SQLite database without eddy's tables"
                                : "an empty SQLite database");
    if ((rc = prep(st, "SELECT value FROM meta WHERE key='schema_version'", &q, err)))
        return rc;
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW && eddy_parse_i64(col(q, 0), &version))
        version = 0;
    sqlite3_finalize(q);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return sql_fail(st, rc, err);
    if (version <= 0)
        return eddy_err_set(err, EDDY_ECORRUPT, "%s: not an eddy store (no schema version)",
                            st->path);
    if (version < STATE_SCHEMA_VERSION)
        return eddy_err_set(err, EDDY_ECORRUPT,
                            "%s: store schema version %lld is older than this eddy's (%d): run a "
                            "job on it once to migrate it",
                            st->path, (long long)version, STATE_SCHEMA_VERSION);
    if (version > STATE_SCHEMA_VERSION)
        return eddy_err_set(err, EDDY_ECORRUPT,
                            "%s: store schema version %lld is newer than this eddy's (%d): it was "
                            "written by a later eddy",
                            st->path, (long long)version, STATE_SCHEMA_VERSION);
    if (tables != (int)(sizeof(kTables) / sizeof(kTables[0])))
        return eddy_err_set(err, EDDY_ECORRUPT,
                            "%s: not an eddy store (schema version %d without all its tables)",
                            st->path, STATE_SCHEMA_VERSION);
    return 0;
}

/* Take the store's lock, which a running job holds (eddy_store_lock). */
static int take_lock(eddy_state *st, eddy_err *err)
{
    long holder;
    st->lock_fd = eddy_store_lock(st->path, &holder, err);
    if (st->lock_fd >= 0)
        return 0;
    if (err->code != EDDY_EEXIST)
        return err->code;
    if (holder)
        return eddy_err_setc(err, EDDY_EEXIST, holder,
                             "%s is in use by a running eddy (pid %ld): stop it first", st->path,
                             holder);
    return eddy_err_set(err, EDDY_EEXIST, "%s is in use by a running eddy: stop it first",
                        st->path);
}

int eddy_state_open(const char *path, int flags, eddy_state **out, eddy_err *err)
{
    eddy_state *st;
    struct stat sb;
    int rc;
    *out = NULL;
    if (stat(path, &sb)) {
        if (errno == ENOENT)
            return eddy_err_setc(err, EDDY_ENOENT, errno, "%s: no such store", path);
        return eddy_err_setc(err, EDDY_EIO, errno, "%s: %s", path, strerror(errno));
    }
    if (!S_ISREG(sb.st_mode))
        return eddy_err_set(err, EDDY_ECORRUPT, "%s: not an eddy store (not a regular file)", path);
    if (!(st = eddy_calloc(1, sizeof(*st))) || !(st->path = eddy_strdup(path))) {
        eddy_free(st);
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    }
    st->lock_fd = -1;
    st->write = (flags & EDDY_STATE_WRITE) != 0;
    rc = sqlite3_open_v2(
        path, &st->db,
        (st->write ? SQLITE_OPEN_READWRITE : SQLITE_OPEN_READONLY) | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        rc = eddy_err_setc(err, EDDY_EIO, rc, "%s: cannot open: %s", path,
                           st->db ? sqlite3_errmsg(st->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(st->db, EDDY_STATE_BUSY_MS);
    /* checked before the lock is taken: no lock file beside what is not a store */
    if ((rc = check_store(st, err)) || (st->write && (rc = take_lock(st, err))))
        goto fail;
    *out = st;
    return 0;
fail:
    eddy_state_close(st);
    return rc;
}

void eddy_state_close(eddy_state *st)
{
    if (!st)
        return;
    sqlite3_close(st->db);
    if (st->lock_fd >= 0)
        close(st->lock_fd); /* releases the flock; the file stays, as a job leaves it */
    eddy_free(st->path);
    eddy_free(st);
}

const char *eddy_state_path(const eddy_state *st)
{
    return st->path;
}

static int need_write(eddy_state *st, eddy_err *err)
{
    if (st->write)
        return 0;
    return eddy_err_set(err, EDDY_EINVAL, "%s: opened read-only", st->path);
}

/* -- which agent's key ------------------------------------------------------------ */

enum { T_MEMORY = 1, T_HISTORY = 2, T_JOURNAL = 4, T_RUNS = 8, T_ALL = 15 };

/* "SELECT agent FROM t WHERE key=?1 UNION ..." over the tables in MASK. */
static char *agents_sql(int mask)
{
    static const char *const kTab[] = {"key_memory", "history", "journal", "runs"};
    eddy_buf b;
    eddy_buf_init(&b);
    for (int i = 0; i < 4; i++)
        if (mask & (1 << i))
            eddy_buf_printf(&b, "%sSELECT agent FROM %s WHERE key=?1", b.len ? " UNION " : "",
                            kTab[i]);
    eddy_buf_puts(&b, " ORDER BY 1");
    char *s = b.oom ? NULL : eddy_buf_take(&b);
    eddy_buf_free(&b);
    return s;
}

/* Append ", "-separated the agents that have memory or history (at most
 * 8, then "..."); returns how many there are (up to 9). */
static int store_agents(eddy_state *st, eddy_buf *b)
{
    sqlite3_stmt *q = NULL;
    int n = 0;
    if (sqlite3_prepare_v2(st->db,
                           "SELECT agent FROM key_memory UNION SELECT agent FROM history "
                           "ORDER BY 1 LIMIT 9",
                           -1, &q, NULL) != SQLITE_OK)
        return 0;
    while (sqlite3_step(q) == SQLITE_ROW) {
        if (n++ == 8) {
            eddy_buf_puts(b, ", ...");
            break;
        }
        if (n > 1)
            eddy_buf_puts(b, ", ");
        put_name(b, col(q, 0));
    }
    sqlite3_finalize(q);
    return n;
}

/* The agent meant for KEY, looking in the tables of MASK: AGENT when it has
 * the key there; else, AGENT being NULL, the one agent that has it. *OUT is
 * a new string. EDDY_ENOENT when the key is not there, EDDY_EINVAL when
 * several agents have it and AGENT is NULL (the message lists them). */
static int resolve(eddy_state *st, const char *agent, const char *key, int mask, char **out,
                   eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    char *sql = agents_sql(mask), *k = shown(key);
    eddy_buf list, b;
    int rc, n = 0, found = 0;
    *out = NULL;
    eddy_buf_init(&list);
    eddy_buf_init(&b);
    if (!sql) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = prep(st, sql, &q, err)))
        goto out;
    bind_str(q, 1, key);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *a = col(q, 0);
        if (n++)
            eddy_buf_puts(&list, ", ");
        put_name(&list, a);
        if (agent ? !strcmp(a, agent) : n == 1) {
            eddy_free(*out);
            *out = eddy_strdup(a);
            found = 1;
        }
    }
    if (rc != SQLITE_DONE) {
        rc = sql_fail(st, rc, err);
        goto out;
    }
    rc = 0;
    if (found && (agent || n == 1)) {
        if (!*out)
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    eddy_free(*out);
    *out = NULL;
    if (agent) {
        char *a = shown(agent);
        eddy_buf_printf(&b, "%s: no key '%s' (agent %s)", st->path, SHOWN(k), SHOWN(a));
        if (n)
            eddy_buf_printf(&b, "; agent%s with it: %s", n == 1 ? "" : "s", list.data);
        eddy_free(a);
        rc = EDDY_ENOENT;
    } else if (n == 0) {
        eddy_buf agents;
        int na;
        eddy_buf_init(&agents);
        na = store_agents(st, &agents);
        eddy_buf_printf(&b, "%s: no key '%s'", st->path, SHOWN(k));
        if (na)
            eddy_buf_printf(&b, " (agent%s %s)", na == 1 ? "" : "s", agents.data);
        else
            eddy_buf_puts(&b, " (the store holds no memory)");
        eddy_buf_free(&agents);
        rc = EDDY_ENOENT;
    } else {
        eddy_buf_printf(&b, "%s: key '%s' is there for %d agents (%s): name one with --agent",
                        st->path, SHOWN(k), n, list.data);
        rc = EDDY_EINVAL;
    }
    eddy_err_set(err, rc, "%s", b.oom ? "out of memory" : b.data);
out:
    sqlite3_finalize(q);
    eddy_free(sql);
    eddy_free(k);
    eddy_buf_free(&list);
    eddy_buf_free(&b);
    return rc;
}

/* -- keys, get, history, positions ------------------------------------------------ */

int eddy_state_keys(eddy_state *st, const char *agent, long limit, FILE *out, int *more,
                    eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    eddy_buf b;
    long n = 0;
    int rc;
    if (more)
        *more = 0;
    eddy_buf_init(&b);
    if ((rc = prep(st,
                   "SELECT k.agent, k.key, coalesce(length(CAST(m.doc AS BLOB)), 0),"
                   " (SELECT count(*) FROM history h WHERE h.agent=k.agent AND h.key=k.key)"
                   " FROM (SELECT agent, key FROM key_memory UNION SELECT agent, key FROM history"
                   " UNION SELECT agent, key FROM journal UNION SELECT agent, key FROM runs) k"
                   " LEFT JOIN key_memory m ON m.agent=k.agent AND m.key=k.key"
                   " WHERE ?1 IS NULL OR k.agent=?1 ORDER BY k.agent, k.key LIMIT ?2",
                   &q, err)))
        goto out;
    if (agent)
        bind_str(q, 1, agent);
    sqlite3_bind_int64(q, 2, limit > 0 ? limit + 1 : -1);
    eddy_buf_puts(&b, "agent\tkey\tmemory_bytes\thistory_runs\n");
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        if (limit > 0 && n == limit) {
            if (more)
                *more = 1;
            break;
        }
        put_name(&b, col(q, 0));
        eddy_buf_putc(&b, '\t');
        put_name(&b, col(q, 1));
        eddy_buf_printf(&b, "\t%lld\t%lld\n", (long long)sqlite3_column_int64(q, 2),
                        (long long)sqlite3_column_int64(q, 3));
        n++;
        if ((rc = emit(&b, out, err)))
            goto out;
    }
    if (rc != SQLITE_DONE && rc != SQLITE_ROW) {
        rc = sql_fail(st, rc, err);
        goto out;
    }
    if (!(rc = emit(&b, out, err)))
        rc = flush_out(out, err);
out:
    sqlite3_finalize(q);
    eddy_buf_free(&b);
    return rc;
}

int eddy_state_get(eddy_state *st, const char *agent, const char *key, FILE *out, eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    char *ag = NULL;
    eddy_buf b;
    int rc;
    eddy_buf_init(&b);
    if ((rc = resolve(st, agent, key, T_ALL, &ag, err)) ||
        (rc = prep(st, "SELECT doc FROM key_memory WHERE agent=?1 AND key=?2", &q, err)))
        goto out;
    bind_str(q, 1, ag);
    bind_str(q, 2, key);
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) {
        if ((rc = put_json(st, &b, col(q, 0), "the memory", ag, key, err)))
            goto out;
    } else if (rc == SQLITE_DONE) {
        eddy_buf_puts(&b, "{}"); /* what a run of the key starts from */
    } else {
        rc = sql_fail(st, rc, err);
        goto out;
    }
    eddy_buf_putc(&b, '\n');
    if (!(rc = emit(&b, out, err)))
        rc = flush_out(out, err);
out:
    sqlite3_finalize(q);
    eddy_free(ag);
    eddy_buf_free(&b);
    return rc;
}

int eddy_state_history(eddy_state *st, const char *agent, const char *key, long limit, FILE *out,
                       eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    char *ag = NULL;
    eddy_buf b;
    int rc;
    eddy_buf_init(&b);
    if ((rc = resolve(st, agent, key, T_ALL, &ag, err)) ||
        (rc = prep(st,
                   "SELECT seq, messages FROM (SELECT seq, messages FROM history"
                   " WHERE agent=?1 AND key=?2 ORDER BY seq DESC LIMIT ?3) ORDER BY seq",
                   &q, err)))
        goto out;
    bind_str(q, 1, ag);
    bind_str(q, 2, key);
    sqlite3_bind_int64(q, 3, limit > 0 ? limit : -1);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        long long seq = (long long)sqlite3_column_int64(q, 0);
        eddy_buf_printf(&b, "{\"seq\":%lld,\"messages\":", seq);
        if ((rc = put_json(st, &b, col(q, 1), "a history entry", ag, key, err)))
            goto out;
        eddy_buf_puts(&b, "}\n");
        if ((rc = emit(&b, out, err)))
            goto out;
    }
    if (rc != SQLITE_DONE) {
        rc = sql_fail(st, rc, err);
        goto out;
    }
    rc = flush_out(out, err);
out:
    sqlite3_finalize(q);
    eddy_free(ag);
    eddy_buf_free(&b);
    return rc;
}

/* Print the rows of SQL: NAMES name columns, then two integer columns. */
static int print_rows(eddy_state *st, const char *sql, int names, eddy_buf *b, FILE *out,
                      eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    int rc = prep(st, sql, &q, err);
    while (!rc && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        for (int i = 0; i < names; i++) {
            if (i)
                eddy_buf_putc(b, '\t');
            put_name(b, col(q, i));
        }
        eddy_buf_printf(b, "\t%lld\t%lld\n", (long long)sqlite3_column_int64(q, names),
                        (long long)sqlite3_column_int64(q, names + 1));
        rc = emit(b, out, err);
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = sql_fail(st, rc, err);
    sqlite3_finalize(q);
    return rc;
}

int eddy_state_positions(eddy_state *st, FILE *out, eddy_err *err)
{
    eddy_buf b;
    int rc;
    eddy_buf_init(&b);
    /* one snapshot for both tables: a checkpoint writes them together */
    if ((rc = exec(st, "BEGIN", err)))
        goto out;
    eddy_buf_puts(&b, "source\tpart\tposition\tline\n");
    if (!(rc = print_rows(st,
                          "SELECT source, part, position, line FROM positions "
                          "ORDER BY source, part",
                          2, &b, out, err))) {
        eddy_buf_puts(&b, "\nsink\tlength\tcount\n");
        rc = print_rows(st, "SELECT sink, length, count FROM sinks ORDER BY sink", 1, &b, out, err);
    }
    sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    if (!rc && !(rc = emit(&b, out, err)))
        rc = flush_out(out, err);
out:
    eddy_buf_free(&b);
    return rc;
}

/* -- journal ---------------------------------------------------------------------- */

/* A source part named by its hash, as runs and journal rows name it. */
typedef struct partname {
    int64_t hash;
    char *source, *part;
} partname;

static void parts_free(partname *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        eddy_free(v[i].source);
        eddy_free(v[i].part);
    }
    eddy_free(v);
}

/* The parts the positions table knows, with their hashes
 * (eddy_store_part_hash, as the runtime names runs). */
static int load_parts(eddy_state *st, partname **out, size_t *nout, eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    partname *v = NULL;
    size_t n = 0;
    int rc = prep(st, "SELECT source, part FROM positions", &q, err);
    while (!rc && (rc = sqlite3_step(q)) == SQLITE_ROW) {
        partname *nv = eddy_realloc(v, (n + 1) * sizeof(*v));
        if (!nv) {
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            break;
        }
        v = nv;
        v[n].hash = eddy_store_part_hash(col(q, 0), col(q, 1));
        v[n].source = eddy_strdup(col(q, 0));
        v[n].part = eddy_strdup(col(q, 1));
        n++;
        if (!v[n - 1].source || !v[n - 1].part)
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        else
            rc = 0;
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = sql_fail(st, rc, err);
    sqlite3_finalize(q);
    if (rc) {
        parts_free(v, n);
        v = NULL;
        n = 0;
    }
    *out = v;
    *nout = n;
    return rc;
}

/* Append "source":S,"part":P,"part_hash":H for the part hash H. */
static int put_part(eddy_state *st, eddy_buf *b, const partname *v, size_t n, int64_t h,
                    eddy_err *err)
{
    int rc = 0;
    for (size_t i = 0; i < n; i++)
        if (v[i].hash == h) {
            eddy_buf_puts(b, "\"source\":");
            if (!(rc = put_string(st, b, v[i].source, err))) {
                eddy_buf_puts(b, ",\"part\":");
                rc = put_string(st, b, v[i].part, err);
            }
            eddy_buf_printf(b, ",\"part_hash\":%lld", (long long)h);
            return rc;
        }
    eddy_buf_printf(b, "\"source\":null,\"part\":null,\"part_hash\":%lld", (long long)h);
    return 0;
}

int eddy_state_journal(eddy_state *st, const char *agent, const char *key, FILE *out, eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    char *ag = NULL;
    partname *parts = NULL;
    size_t nparts = 0;
    eddy_buf b;
    int rc;
    eddy_buf_init(&b);
    if ((rc = exec(st, "BEGIN", err)))
        goto out;
    if ((rc = resolve(st, agent, key, T_ALL, &ag, err)) ||
        (rc = load_parts(st, &parts, &nparts, err)) ||
        (rc = prep(st,
                   "SELECT 0, part, pos, input_hash, 0, ok, delivered, '', outcome FROM runs"
                   " WHERE agent=?1 AND key=?2 UNION ALL"
                   " SELECT 1, part, pos, input_hash, step, state, 0, kind, data FROM journal"
                   " WHERE agent=?1 AND key=?2 ORDER BY 2, 3, 1, 5",
                   &q, err)))
        goto out;
    bind_str(q, 1, ag);
    bind_str(q, 2, key);
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        int step = sqlite3_column_int(q, 0);
        eddy_buf_printf(&b, "{\"row\":\"%s\",", step ? "step" : "run");
        rc = put_part(st, &b, parts, nparts, sqlite3_column_int64(q, 1), err);
        eddy_buf_printf(&b, ",\"pos\":%lld,\"input_hash\":%lld",
                        (long long)sqlite3_column_int64(q, 2),
                        (long long)sqlite3_column_int64(q, 3));
        if (!rc && step) {
            eddy_buf_printf(&b, ",\"step\":%d,\"state\":\"%s\",\"kind\":", sqlite3_column_int(q, 4),
                            sqlite3_column_int(q, 5) == EDDY_STEP_PENDING ? "pending" : "done");
            if (!(rc = put_string(st, &b, col(q, 7), err))) {
                eddy_buf_puts(&b, ",\"data\":");
                rc = put_json(st, &b, col(q, 8), "a journaled step", ag, key, err);
            }
        } else if (!rc) {
            eddy_buf_printf(&b, ",\"ok\":%s,\"delivered\":%s,\"outcome\":",
                            sqlite3_column_int(q, 5) ? "true" : "false",
                            sqlite3_column_int(q, 6) ? "true" : "false");
            rc = put_json(st, &b, col(q, 8), "a run's outcome", ag, key, err);
        }
        eddy_buf_puts(&b, "}\n");
        if (rc || (rc = emit(&b, out, err)))
            goto out;
    }
    rc = rc == SQLITE_DONE ? flush_out(out, err) : sql_fail(st, rc, err);
out:
    sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    sqlite3_finalize(q);
    parts_free(parts, nparts);
    eddy_free(ag);
    eddy_buf_free(&b);
    return rc;
}

/* -- export ---------------------------------------------------------------------- */

/* Append ,"history":[...]} for (AGENT, KEY) with the prepared query HIST. */
static int put_history(eddy_state *st, sqlite3_stmt *hist, const char *agent, const char *key,
                       eddy_buf *b, eddy_err *err)
{
    int rc = 0, n = 0;
    bind_str(hist, 1, agent);
    bind_str(hist, 2, key);
    eddy_buf_puts(b, ",\"history\":[");
    while (!rc && (rc = sqlite3_step(hist)) == SQLITE_ROW) {
        eddy_buf_printf(b, "%s{\"seq\":%lld,\"messages\":", n++ ? "," : "",
                        (long long)sqlite3_column_int64(hist, 0));
        rc = put_json(st, b, col(hist, 1), "a history entry", agent, key, err);
        eddy_buf_putc(b, '}');
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = sql_fail(st, rc, err);
    sqlite3_reset(hist);
    sqlite3_clear_bindings(hist);
    eddy_buf_puts(b, "]}\n");
    return rc;
}

int eddy_state_export(eddy_state *st, FILE *out, long *nkeys, eddy_err *err)
{
    sqlite3_stmt *keys = NULL, *hist = NULL;
    eddy_buf b;
    long n = 0;
    int rc;
    eddy_buf_init(&b);
    /* one read transaction: the file is one snapshot of the store */
    if ((rc = exec(st, "BEGIN", err)) ||
        (rc = prep(st,
                   "SELECT k.agent, k.key, m.doc FROM (SELECT agent, key FROM key_memory UNION"
                   " SELECT agent, key FROM history) k LEFT JOIN key_memory m"
                   " ON m.agent=k.agent AND m.key=k.key ORDER BY k.agent, k.key",
                   &keys, err)) ||
        (rc = prep(st, "SELECT seq, messages FROM history WHERE agent=?1 AND key=?2 ORDER BY seq",
                   &hist, err)))
        goto out;
    while ((rc = sqlite3_step(keys)) == SQLITE_ROW) {
        const char *agent = col(keys, 0), *key = col(keys, 1);
        eddy_buf_puts(&b, "{\"agent\":");
        if ((rc = put_string(st, &b, agent, err)))
            goto out;
        eddy_buf_puts(&b, ",\"key\":");
        if ((rc = put_string(st, &b, key, err)))
            goto out;
        eddy_buf_puts(&b, ",\"memory\":");
        if (sqlite3_column_type(keys, 2) == SQLITE_NULL) {
            eddy_buf_puts(&b, "null");
        } else {
            if ((rc = put_json(st, &b, col(keys, 2), "the memory", agent, key, err)))
                goto out;
        }
        if ((rc = put_history(st, hist, agent, key, &b, err)) || (rc = emit(&b, out, err)))
            goto out;
        n++;
    }
    rc = rc == SQLITE_DONE ? flush_out(out, err) : sql_fail(st, rc, err);
out:
    sqlite3_finalize(keys);
    sqlite3_finalize(hist);
    sqlite3_exec(st->db, "COMMIT", NULL, NULL, NULL);
    eddy_buf_free(&b);
    if (nkeys)
        *nkeys = n;
    return rc;
}

/* -- import ---------------------------------------------------------------------- */

enum { I_DEL_DOC, I_DEL_HIST, I_DOC, I_HIST, I_N };

static const char *const kImportSql[I_N] = {
    "DELETE FROM key_memory WHERE agent=?1 AND key=?2",
    "DELETE FROM history WHERE agent=?1 AND key=?2",
    "INSERT INTO key_memory(agent,key,doc,updated_ns) VALUES(?1,?2,?3,?4)",
    "INSERT INTO history(agent,key,seq,messages,created_ns) VALUES(?1,?2,?3,?4,?5)"};

/* Step the bound write statement Q and reset it. */
static int wstep(eddy_state *st, sqlite3_stmt *q, eddy_err *err)
{
    int rc = sqlite3_step(q);
    rc = rc == SQLITE_DONE ? 0 : sql_fail(st, rc, err);
    sqlite3_reset(q);
    sqlite3_clear_bindings(q);
    return rc;
}

/* One line of IN into B, without its end of line: 1, 0 at the end of IN,
 * or a negative code. *NUL is set when the line holds a NUL byte. */
static int read_line(FILE *in, eddy_buf *b, int *nul)
{
    int c, got = 0;
    eddy_buf_reset(b);
    *nul = 0;
    while ((c = getc(in)) != EOF) {
        got = 1;
        if (c == '\n')
            break;
        *nul |= c == 0;
        if (eddy_buf_putc(b, (char)c))
            return EDDY_ENOMEM;
    }
    if (ferror(in))
        return EDDY_EIO;
    if (b->len && b->data[b->len - 1] == '\r')
        b->data[--b->len] = '\0';
    return got;
}

/* Check the history array H of an import line: entries {"seq", "messages"}
 * with seq increasing, messages in eddy's history format. */
static int check_history(json_t *h, eddy_err *err)
{
    size_t i;
    json_t *e;
    json_int_t last = 0;
    json_array_foreach(h, i, e)
    {
        const char *k;
        json_t *v, *seq = json_object_get(e, "seq"), *msgs = json_object_get(e, "messages");
        eddy_llm_conv c = {0};
        eddy_err ce;
        int rc;
        if (!json_is_object(e))
            return eddy_err_set(err, EDDY_EPARSE,
                                "history[%zu] must be an object {\"seq\", \"messages\"}", i);
        json_object_foreach(e, k, v)
        {
            if (strcmp(k, "seq") && strcmp(k, "messages"))
                return eddy_err_set(err, EDDY_EPARSE,
                                    "history[%zu]: unknown member (seq, messages)", i);
        }
        if (!json_is_integer(seq) || json_integer_value(seq) <= last)
            return eddy_err_set(err, EDDY_EPARSE,
                                "history[%zu].seq must be an integer above %lld (the one before)",
                                i, (long long)last);
        last = json_integer_value(seq);
        if (!json_is_array(msgs))
            return eddy_err_set(err, EDDY_EPARSE, "history[%zu].messages must be an array", i);
        rc = eddy_llm_conv_from_json(&c, msgs, &ce);
        eddy_llm_conv_clear(&c);
        if (rc)
            return eddy_err_set(err, rc, "history[%zu].messages: %s", i, ce.msg);
    }
    return 0;
}

/* Check the import line O; set *AGENT, *KEY, *MEM (NULL for null), *HIST. */
static int check_line(json_t *o, const char **agent, const char **key, json_t **mem, json_t **hist,
                      eddy_err *err)
{
    const char *k;
    json_t *v, *a = json_object_get(o, "agent"), *kk = json_object_get(o, "key");
    if (!json_is_object(o))
        return eddy_err_set(err, EDDY_EPARSE, "not a JSON object");
    json_object_foreach(o, k, v)
    {
        if (strcmp(k, "agent") && strcmp(k, "key") && strcmp(k, "memory") && strcmp(k, "history"))
            return eddy_err_set(err, EDDY_EPARSE,
                                "unknown member (an export line has agent, key, memory, history)");
    }
    if (!json_is_string(a) || !json_string_length(a))
        return eddy_err_set(err, EDDY_EPARSE, "'agent' must be a non-empty string");
    if (!json_is_string(kk) || !json_string_length(kk))
        return eddy_err_set(err, EDDY_EPARSE, "'key' must be a non-empty string");
    *agent = json_string_value(a);
    *key = json_string_value(kk);
    *mem = json_object_get(o, "memory");
    *hist = json_object_get(o, "history");
    if (!*mem || !(json_is_object(*mem) || json_is_null(*mem)))
        return eddy_err_set(err, EDDY_EPARSE, "'memory' must be an object or null");
    if (json_is_null(*mem))
        *mem = NULL;
    if (!json_is_array(*hist))
        return eddy_err_set(err, EDDY_EPARSE, "'history' must be an array");
    return check_history(*hist, err);
}

/* Replace the memory and history of the key of the line TEXT with what it
 * says. SEEN maps the keys of the lines before to their line numbers. */
static int import_line(eddy_state *st, sqlite3_stmt **q, const eddy_buf *line, long lineno,
                       json_t *seen, eddy_err *err)
{
    json_error_t je;
    json_t *o = json_loadb(line->data, line->len, JSON_REJECT_DUPLICATES, &je), *e;
    json_t *mem = NULL, *hist = NULL, *pair = NULL;
    const char *agent = NULL, *key = NULL;
    char *id = NULL, *text = NULL;
    int64_t now = (int64_t)eddy_wall_ns();
    size_t i;
    int rc;
    if (!o)
        return eddy_err_set(err, EDDY_EPARSE, "not JSON: %s", je.text);
    if ((rc = check_line(o, &agent, &key, &mem, &hist, err)))
        goto out;
    pair = json_pack("[s, s]", agent, key);
    if (!pair || !(id = eddy_json_dumps(pair))) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if ((e = json_object_get(seen, id))) {
        char *a = shown(agent), *k = shown(key);
        rc = eddy_err_set(err, EDDY_EEXIST, "agent '%s' key '%s' again (first on line %lld)",
                          SHOWN(a), SHOWN(k), (long long)json_integer_value(e));
        eddy_free(a);
        eddy_free(k);
        goto out;
    }
    json_object_set_new(seen, id, json_integer(lineno));
    for (int d = I_DEL_DOC; d <= I_DEL_HIST; d++) {
        bind_str(q[d], 1, agent);
        bind_str(q[d], 2, key);
        if ((rc = wstep(st, q[d], err)))
            goto out;
    }
    if (mem) {
        if (!(text = eddy_json_dumps_flags(mem, JSON_COMPACT))) {
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            goto out;
        }
        bind_str(q[I_DOC], 1, agent);
        bind_str(q[I_DOC], 2, key);
        bind_str(q[I_DOC], 3, text);
        sqlite3_bind_int64(q[I_DOC], 4, now);
        if ((rc = wstep(st, q[I_DOC], err)))
            goto out;
    }
    json_array_foreach(hist, i, e)
    {
        eddy_free(text);
        if (!(text = eddy_json_dumps_flags(json_object_get(e, "messages"), JSON_COMPACT))) {
            rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
            goto out;
        }
        bind_str(q[I_HIST], 1, agent);
        bind_str(q[I_HIST], 2, key);
        sqlite3_bind_int64(q[I_HIST], 3, json_integer_value(json_object_get(e, "seq")));
        bind_str(q[I_HIST], 4, text);
        sqlite3_bind_int64(q[I_HIST], 5, now);
        if ((rc = wstep(st, q[I_HIST], err)))
            goto out;
    }
out:
    eddy_free(id);
    eddy_free(text);
    json_decref(pair);
    json_decref(o);
    return rc;
}

int eddy_state_import(eddy_state *st, FILE *in, const char *name, long *nkeys, eddy_err *err)
{
    sqlite3_stmt *q[I_N] = {0};
    json_t *seen = json_object();
    eddy_buf line;
    long lineno = 0, n = 0;
    int rc, nul, began = 0;
    eddy_buf_init(&line);
    if (!seen) {
        rc = eddy_err_set(err, EDDY_ENOMEM, "out of memory");
        goto out;
    }
    if ((rc = need_write(st, err)))
        goto out;
    for (int i = 0; i < I_N; i++)
        if ((rc = prep(st, kImportSql[i], &q[i], err)))
            goto out;
    if ((rc = exec(st, "BEGIN IMMEDIATE", err)))
        goto out;
    began = 1;
    while ((rc = read_line(in, &line, &nul)) == 1) {
        char msg[EDDY_ERR_MSG_MAX];
        lineno++;
        if (line.len == strspn(line.len ? line.data : "", " \t"))
            continue; /* blank */
        if (nul)
            rc = eddy_err_set(err, EDDY_EPARSE, "a NUL byte in the line");
        else
            rc = import_line(st, q, &line, lineno, seen, err);
        if (rc) {
            snprintf(msg, sizeof(msg), "%s", err ? err->msg : "");
            eddy_err_set(err, rc, "%s:%ld: %s; nothing was imported", name, lineno, msg);
            goto out;
        }
        n++;
    }
    if (rc < 0) {
        rc = eddy_err_set(err, rc, "%s:%ld: cannot read: %s; nothing was imported", name,
                          lineno + 1, rc == EDDY_EIO ? strerror(errno) : eddy_strerror(rc));
        goto out;
    }
    rc = exec(st, "COMMIT", err);
out:
    if (rc && began)
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    for (int i = 0; i < I_N; i++)
        sqlite3_finalize(q[i]);
    json_decref(seen);
    eddy_buf_free(&line);
    if (nkeys)
        *nkeys = rc ? 0 : n;
    return rc;
}

/* -- rm, vacuum ------------------------------------------------------------------- */

int eddy_state_rm(eddy_state *st, const char *agent, const char *key, eddy_state_removed *rm,
                  eddy_err *err)
{
    static const char *const kSql[4] = {
        "SELECT length(CAST(doc AS BLOB)) FROM key_memory WHERE agent=?1 AND key=?2",
        "DELETE FROM key_memory WHERE agent=?1 AND key=?2",
        "DELETE FROM history WHERE agent=?1 AND key=?2",
        "DELETE FROM journal WHERE agent=?1 AND key=?2"};
    eddy_state_removed r = {-1, 0, 0};
    char *ag = NULL;
    int rc, began = 0;
    if ((rc = need_write(st, err)) || (rc = exec(st, "BEGIN IMMEDIATE", err)))
        goto out;
    began = 1;
    if ((rc = resolve(st, agent, key, T_MEMORY | T_HISTORY | T_JOURNAL, &ag, err)))
        goto out;
    for (int i = 0; i < 4 && !rc; i++) {
        sqlite3_stmt *q = NULL;
        if ((rc = prep(st, kSql[i], &q, err)))
            break;
        bind_str(q, 1, ag);
        bind_str(q, 2, key);
        rc = sqlite3_step(q);
        if (i == 0 && rc == SQLITE_ROW)
            r.memory_bytes = sqlite3_column_int64(q, 0);
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_fail(st, rc, err);
        if (i == 2)
            r.history = sqlite3_changes(st->db);
        else if (i == 3)
            r.steps = sqlite3_changes(st->db);
        sqlite3_finalize(q);
    }
    if (!rc)
        rc = exec(st, "COMMIT", err);
out:
    if (rc && began)
        sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
    eddy_free(ag);
    if (rm)
        *rm = r;
    return rc;
}

static int64_t store_bytes(const char *path)
{
    struct stat sb;
    char *wal = eddy_aprintf("%s-wal", path);
    int64_t n = stat(path, &sb) ? 0 : (int64_t)sb.st_size;
    if (wal && !stat(wal, &sb))
        n += (int64_t)sb.st_size;
    eddy_free(wal);
    return n;
}

int eddy_state_vacuum(eddy_state *st, int64_t *before, int64_t *after, eddy_err *err)
{
    sqlite3_stmt *q = NULL;
    int rc;
    if (before)
        *before = store_bytes(st->path);
    if ((rc = need_write(st, err)) || (rc = exec(st, "VACUUM", err)) ||
        (rc = prep(st, "PRAGMA wal_checkpoint(TRUNCATE)", &q, err)))
        goto out;
    rc = sqlite3_step(q);
    if (rc == SQLITE_ROW && sqlite3_column_int(q, 0))
        EDDY_WARN("state",
                  "%s: a reader kept the WAL from being truncated; it is after the "
                  "next checkpoint",
                  st->path);
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : sql_fail(st, rc, err);
out:
    sqlite3_finalize(q);
    if (after)
        *after = store_bytes(st->path);
    return rc;
}
