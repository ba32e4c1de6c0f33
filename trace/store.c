/*
 * trace/store.c - spans and their SQLite store.
 *
 * A span lives on one thread while open; eddy_span_end hands it to the
 * store's writer thread (an eddy_bgq), which inserts spans in batches inside
 * one transaction and commits at the batch's bounds (see eddy_trace_store_open). A root span may
 * carry a summary that becomes the trace's row in `traces` (what `eddy trace list` reads without
 * touching spans). Ids are lowercase hex, 32 and 16 characters as OpenTelemetry wants them, never
 * all zeros, drawn from a per-thread generator (no lock, no syscall per span); a trace id starts
 * with the time in milliseconds (see trace_id).
 */
#include "eddy/trace.h"
#include "eddy/bgq.h"
#include "eddy/buf.h"
#include "eddy/json.h"
#include "eddy/log.h"

#include <sqlite3.h>
#include <string.h>

static const char *const kSchema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS traces(trace_id TEXT PRIMARY KEY, name TEXT, agent TEXT,"
    "  key TEXT, event_id TEXT, status TEXT, error TEXT, start_ns INTEGER, end_ns INTEGER,"
    "  input_tokens INTEGER, output_tokens INTEGER, llm_calls INTEGER, tool_calls INTEGER,"
    "  turns INTEGER, summary TEXT);"
    "CREATE INDEX IF NOT EXISTS traces_by_start ON traces(start_ns);"
    "CREATE TABLE IF NOT EXISTS spans(trace_id TEXT NOT NULL, span_id TEXT NOT NULL,"
    "  parent_id TEXT, name TEXT NOT NULL, kind INTEGER NOT NULL, start_ns INTEGER NOT NULL,"
    "  end_ns INTEGER NOT NULL, status TEXT NOT NULL, error TEXT, attributes TEXT NOT NULL,"
    "  PRIMARY KEY(trace_id, span_id)) WITHOUT ROWID;";

/* One attribute: its `"key":value` text in the span's buffer. A later set of
 * the same key makes the earlier one dead (len 0). */
typedef struct attr {
    size_t off, len, klen; /* klen: the quoted key's length */
} attr;

/* Attributes are written as JSON text when they are set (no jansson tree to
 * build on the worker, to dump and free on the writer). */
struct eddy_span {
    eddy_trace_store *store;
    char trace_id[33], span_id[17], parent_id[17];
    char *name, *error;
    int kind;
    uint64_t start_ns, end_ns;
    eddy_buf text; /* the attributes' pairs, one after the other, no separators */
    attr *attrs;
    size_t nattrs, cap;
    json_t *summary; /* root spans: the trace row */
};

struct eddy_trace_store {
    sqlite3 *db;
    sqlite3_stmt *ins_span, *ins_trace; /* prepared once; writer thread only */
    eddy_bgq *q;
    int in_txn;
};

/*
 * Ids come from a per-thread xoshiro256** generator, seeded once per thread
 * with 256 bits from the OS (eddy_random_bytes: one getrandom). Spans are
 * started on worker loops and on any other thread; a thread-local state
 * needs no lock, and after the seed no id costs a syscall. Not fork-safe: a
 * child that starts spans without exec repeats its parent's ids (eddy does
 * not fork workers).
 */
typedef struct id_rng {
    uint64_t s[4];
    int seeded;
} id_rng;

static _Thread_local id_rng tl_rng;

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(void)
{
    id_rng *r = &tl_rng;
    if (!r->seeded) {
        eddy_random_bytes(r->s, sizeof(r->s));
        if (!(r->s[0] | r->s[1] | r->s[2] | r->s[3]))
            r->s[0] = 1; /* all zeros is the one state xoshiro never leaves */
        r->seeded = 1;
    }
    uint64_t *s = r->s, out = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

/* WORDS random 64-bit words as 16*WORDS lowercase hex digits into OUT,
 * NUL-terminated; never all zeros (OpenTelemetry reads them as "no id"). */
static void random_id(char *out, int words)
{
    static const char digits[] = "0123456789abcdef";
    uint64_t w[2], any;
    do {
        any = 0;
        for (int i = 0; i < words; i++)
            any |= w[i] = rng_next();
    } while (!any);
    for (int i = 0; i < words; i++)
        for (int d = 0; d < 16; d++)
            out[16 * i + d] = digits[(w[i] >> (60 - 4 * d)) & 15];
    out[16 * words] = '\0';
}

/* A trace id: the wall clock in milliseconds (48 bits) then 80 random bits,
 * as 32 hex digits. Ids that grow with time are inserted at the right edge of
 * the store's b-trees (traces, spans) instead of at random pages: a batch
 * dirties a few pages, not one per span (bench/runtime's workload: the
 * process's pwrite64 per event 21 -> 12). W3C Trace Context asks only the right-most 7 bytes
 * to be random; these are 10. */
static void trace_id(char *out)
{
    static const char digits[] = "0123456789abcdef";
    uint64_t ms = eddy_wall_ns() / 1000000u, r = rng_next(), r2 = rng_next();
    uint64_t hi = (ms << 16) | (r >> 48), lo = r2;
    for (int d = 0; d < 16; d++) {
        out[d] = digits[(hi >> (60 - 4 * d)) & 15];
        out[16 + d] = digits[(lo >> (60 - 4 * d)) & 15];
    }
    out[32] = '\0';
}

static void span_free(eddy_span *sp)
{
    if (!sp)
        return;
    eddy_free(sp->name);
    eddy_free(sp->error);
    eddy_buf_free(&sp->text);
    eddy_free(sp->attrs);
    json_decref(sp->summary);
    eddy_free(sp);
}

static void step_reset(eddy_trace_store *s, sqlite3_stmt *st, const char *what, const char *id)
{
    if (sqlite3_step(st) != SQLITE_DONE)
        EDDY_WARN("trace", "cannot store %s %s: %s", what, id, sqlite3_errmsg(s->db));
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* The attributes as one JSON object into OUT, in the order they were set (a
 * key set again: its last value, at the place of its last set); NULL when
 * out of memory. */
static const char *attrs_text(eddy_span *sp, eddy_buf *out)
{
    eddy_buf_putc(out, '{');
    for (size_t i = 0, n = 0; i < sp->nattrs; i++) {
        if (!sp->attrs[i].len)
            continue;
        if (n++)
            eddy_buf_putc(out, ',');
        eddy_buf_append(out, sp->text.data + sp->attrs[i].off, sp->attrs[i].len);
    }
    eddy_buf_putc(out, '}');
    return out->oom ? NULL : out->data;
}

static void write_span(eddy_trace_store *s, eddy_span *sp)
{
    sqlite3_stmt *st = s->ins_span;
    eddy_buf ab;
    eddy_buf_init(&ab);
    const char *attrs = attrs_text(sp, &ab);
    char *sum;
    json_t *m = sp->summary;
    sqlite3_bind_text(st, 1, sp->trace_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sp->span_id, -1, SQLITE_STATIC);
    if (sp->parent_id[0])
        sqlite3_bind_text(st, 3, sp->parent_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, sp->name, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 5, sp->kind);
    sqlite3_bind_int64(st, 6, (sqlite3_int64)sp->start_ns);
    sqlite3_bind_int64(st, 7, (sqlite3_int64)sp->end_ns);
    sqlite3_bind_text(st, 8, sp->error ? "error" : "ok", -1, SQLITE_STATIC);
    if (sp->error)
        sqlite3_bind_text(st, 9, sp->error, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, attrs ? attrs : "{}", -1, SQLITE_STATIC);
    step_reset(s, st, "span", sp->span_id);
    eddy_buf_free(&ab);
    if (!m)
        return;
    st = s->ins_trace;
    sum = eddy_json_dumps_flags(m, JSON_COMPACT);
    sqlite3_bind_text(st, 1, sp->trace_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, sp->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, eddy_json_str(m, "agent", ""), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, eddy_json_str(m, "key", ""), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, eddy_json_str(m, "event_id", ""), -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, sp->error ? "error" : "ok", -1, SQLITE_STATIC);
    if (sp->error)
        sqlite3_bind_text(st, 7, sp->error, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 8, (sqlite3_int64)sp->start_ns);
    sqlite3_bind_int64(st, 9, (sqlite3_int64)sp->end_ns);
    sqlite3_bind_int64(st, 10, eddy_json_int(m, "input_tokens", 0));
    sqlite3_bind_int64(st, 11, eddy_json_int(m, "output_tokens", 0));
    sqlite3_bind_int64(st, 12, eddy_json_int(m, "llm_calls", 0));
    sqlite3_bind_int64(st, 13, eddy_json_int(m, "tool_calls", 0));
    sqlite3_bind_int64(st, 14, eddy_json_int(m, "turns", 0));
    sqlite3_bind_text(st, 15, sum ? sum : "{}", -1, SQLITE_STATIC);
    step_reset(s, st, "trace", sp->trace_id);
    eddy_free(sum);
}

static void on_span(void *job, void *ctx)
{
    eddy_trace_store *s = ctx;
    if (!s->in_txn && sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK)
        s->in_txn = 1;
    write_span(s, job);
    span_free(job);
}

static void on_idle(void *ctx)
{
    eddy_trace_store *s = ctx;
    if (s->in_txn && sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
        EDDY_WARN("trace", "cannot commit spans: %s", sqlite3_errmsg(s->db));
    s->in_txn = 0;
}

static int open_store_db(const char *path, int rw, sqlite3 **db, eddy_err *err)
{
    int rc = sqlite3_open_v2(
        path, db, rw ? SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE : SQLITE_OPEN_READONLY, NULL);
    if (rc != SQLITE_OK) {
        rc = eddy_err_setc(err, rw ? EDDY_ESQLITE : EDDY_ENOENT, rc,
                           "%s: cannot open the trace store: %s", path,
                           *db ? sqlite3_errmsg(*db) : sqlite3_errstr(rc));
        sqlite3_close(*db);
        *db = NULL;
        return rc;
    }
    sqlite3_busy_timeout(*db, 10000);
    return 0;
}

int eddy_trace_store_open(const char *path, eddy_trace_store **out, eddy_err *err)
{
    eddy_trace_store *s = eddy_calloc(1, sizeof(*s));
    char *e = NULL;
    int rc;
    *out = NULL;
    if (!s)
        return eddy_err_set(err, EDDY_ENOMEM, "out of memory");
    if ((rc = eddy_mkdirs_for(path, err)))
        goto fail;
    if ((rc = open_store_db(path, 1, &s->db, err)))
        goto fail;
    if (sqlite3_exec(s->db, kSchema, NULL, NULL, &e) != SQLITE_OK) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot create the trace schema: %s", path, e);
        sqlite3_free(e);
        goto fail;
    }
    if (sqlite3_prepare_v3(s->db, "INSERT OR REPLACE INTO spans VALUES(?,?,?,?,?,?,?,?,?,?)", -1,
                           SQLITE_PREPARE_PERSISTENT, &s->ins_span, NULL) ||
        sqlite3_prepare_v3(s->db,
                           "INSERT OR REPLACE INTO traces VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           -1, SQLITE_PREPARE_PERSISTENT, &s->ins_trace, NULL)) {
        rc = eddy_err_set(err, EDDY_ESQLITE, "%s: cannot prepare: %s", path, sqlite3_errmsg(s->db));
        goto fail;
    }
    /* bounded batches: a commit every 200 ms or 4096 spans under load, 100 ms
     * after the first span of a quiet moment. Nothing waits for a trace's
     * commit, and each commit rewrites the pages at the b-trees' right edge:
     * fewer, larger commits write fewer pages (bench/runtime). */
    eddy_bgq_limits lim = {4096, 200, 100, "eddy-traces"};
    if ((rc = eddy_bgq_new(on_span, on_idle, s, &lim, &s->q, err)))
        goto fail;
    *out = s;
    return 0;
fail:
    sqlite3_finalize(s->ins_span);
    sqlite3_finalize(s->ins_trace);
    sqlite3_close(s->db);
    eddy_free(s);
    return rc;
}

void eddy_trace_store_close(eddy_trace_store *s)
{
    if (!s)
        return;
    eddy_bgq_free(s->q);
    sqlite3_finalize(s->ins_span);
    sqlite3_finalize(s->ins_trace);
    sqlite3_close(s->db);
    eddy_free(s);
}

eddy_span *eddy_span_start(eddy_trace_store *s, eddy_span *parent, const char *name, int kind)
{
    eddy_span *sp = eddy_calloc(1, sizeof(*sp));
    if (!sp)
        return NULL;
    sp->store = s;
    if (!(sp->name = eddy_strdup(name))) {
        span_free(sp);
        return NULL;
    }
    if (parent) {
        memcpy(sp->trace_id, parent->trace_id, sizeof(sp->trace_id));
        memcpy(sp->parent_id, parent->span_id, sizeof(sp->parent_id));
    } else {
        trace_id(sp->trace_id);
    }
    random_id(sp->span_id, 1);
    sp->kind = kind;
    sp->start_ns = eddy_wall_ns();
    return sp;
}

/* Start the pair of KEY: its quoted key and ':' at the end of the text.
 * Returns the pair's offset, or (size_t)-1 (nothing appended). */
static size_t pair_begin(eddy_span *sp, const char *key)
{
    size_t off = sp->text.len;
    if (sp->nattrs == sp->cap) {
        size_t cap = sp->cap ? sp->cap * 2 : 16;
        attr *a = eddy_realloc(sp->attrs, cap * sizeof(*a));
        if (!a)
            return (size_t)-1;
        sp->attrs = a;
        sp->cap = cap;
    }
    if (eddy_json_put_string(&sp->text, key, strlen(key)) || eddy_buf_putc(&sp->text, ':')) {
        sp->text.len = off;
        return (size_t)-1;
    }
    return off;
}

/* End the pair begun at OFF (RC: how writing its value went): record it, and
 * make an earlier pair of the same key dead. */
static void pair_end(eddy_span *sp, size_t off, size_t klen, int rc)
{
    if (rc || sp->text.oom) {
        sp->text.len = off; /* the attribute is dropped, as a NULL value is */
        sp->text.oom = 0;
        if (sp->text.data)
            sp->text.data[off] = '\0';
        return;
    }
    const char *k = sp->text.data + off;
    for (size_t i = 0; i < sp->nattrs; i++)
        if (sp->attrs[i].len && sp->attrs[i].klen == klen &&
            !memcmp(sp->text.data + sp->attrs[i].off, k, klen)) {
            sp->attrs[i].len = 0;
        }
    sp->attrs[sp->nattrs++] = (attr){off, sp->text.len - off, klen};
}

void eddy_span_set(eddy_span *sp, const char *key, json_t *v)
{
    size_t off;
    if (!sp || !v || (off = pair_begin(sp, key)) == (size_t)-1) {
        json_decref(v);
        return;
    }
    size_t klen = sp->text.len - off - 1;
    pair_end(sp, off, klen, eddy_json_dump_buf(&sp->text, v, JSON_COMPACT | JSON_ENCODE_ANY));
    json_decref(v);
}

void eddy_span_set_str(eddy_span *sp, const char *key, const char *v)
{
    size_t off;
    if (!sp || !v || (off = pair_begin(sp, key)) == (size_t)-1)
        return;
    size_t klen = sp->text.len - off - 1;
    pair_end(sp, off, klen, eddy_json_put_string(&sp->text, v, strlen(v)));
}

void eddy_span_set_int(eddy_span *sp, const char *key, long long v)
{
    char num[EDDY_JSON_NUMBER_MAX];
    size_t off;
    if (!sp || (off = pair_begin(sp, key)) == (size_t)-1)
        return;
    size_t klen = sp->text.len - off - 1;
    pair_end(sp, off, klen, eddy_buf_append(&sp->text, num, eddy_json_integer_text(v, num)));
}

void eddy_span_error(eddy_span *sp, const char *type, const char *msg)
{
    if (!sp)
        return;
    eddy_free(sp->error);
    sp->error = eddy_strdup(msg ? msg : "error");
    eddy_span_set_str(sp, "error.type", type ? type : "error");
}

const char *eddy_span_trace_id(const eddy_span *sp)
{
    return sp ? sp->trace_id : "";
}

const char *eddy_span_id(const eddy_span *sp)
{
    return sp ? sp->span_id : "";
}

void eddy_span_end(eddy_span *sp, json_t *summary)
{
    if (!sp)
        return;
    sp->end_ns = eddy_wall_ns();
    if (summary)
        sp->summary = json_deep_copy(summary);
    if (!sp->store || eddy_bgq_post(sp->store->q, sp))
        span_free(sp);
}
